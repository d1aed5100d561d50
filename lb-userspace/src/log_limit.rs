//! Log lines that peers can cause, limited per cause: a flood of bad connections, refused
//! commands or failing accepts must not flood the journal (or the disk) with the same line. A
//! cause is a fixed name in the code; each may log once per [`INTERVAL`], and the next line it
//! logs says how many were held back meanwhile.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// At most one line per cause in this time.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Per cause: when it last logged, and how many lines were held back since.
fn causes() -> &'static Mutex<HashMap<&'static str, (Instant, u64)>> {
    static CAUSES: OnceLock<Mutex<HashMap<&'static str, (Instant, u64)>>> = OnceLock::new();
    CAUSES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Whether a line for `cause` may be logged now; `Some(n)`: yes, and `n` lines of this cause
/// were held back since the last one.
pub fn allow(cause: &'static str) -> Option<u64> {
    allow_at(cause, Instant::now())
}

fn allow_at(cause: &'static str, now: Instant) -> Option<u64> {
    let mut causes = causes().lock().unwrap_or_else(|p| p.into_inner());
    match causes.get_mut(cause) {
        Some((last, held)) if now.saturating_duration_since(*last) < INTERVAL => {
            *held += 1;
            None
        }
        Some((last, held)) => {
            *last = now;
            Some(std::mem::take(held))
        }
        None => {
            causes.insert(cause, (now, 0));
            Some(0)
        }
    }
}

/// `"; 12 more like it held back"`, or nothing: the tail of a limited line.
pub fn held_back(count: u64) -> String {
    if count == 0 {
        String::new()
    } else {
        format!(
            " ({count} more like it in the last {}s not logged)",
            INTERVAL.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_logs_once_per_interval_and_then_says_how_many_it_held_back() {
        let start = Instant::now();
        assert_eq!(allow_at("test-cause", start), Some(0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(
                allow_at("test-cause", start + Duration::from_millis(ms)),
                None
            );
        }
        assert_eq!(
            allow_at("other-test-cause", start),
            Some(0),
            "causes are apart"
        );
        assert_eq!(allow_at("test-cause", start + INTERVAL), Some(4));
        assert_eq!(allow_at("test-cause", start + INTERVAL * 3), Some(0));
    }
}
