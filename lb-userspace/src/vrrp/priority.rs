//! Effective priority and Fault from the trackers' results, with keepalived's weight rules, and
//! the warnings for configurations whose weights cannot do what they look like they do.
//!
//! What lives here: pure arithmetic over [`TrackerState`]s. What does not: running the checks
//! (`track.rs`), and acting on the result (the shell feeds [`super::machine::Event::PriorityChanged`]
//! and [`super::machine::Event::FaultChanged`] to the machine).
//!
//! The rules are keepalived's (`vrrp_script` / `track_script` / `track_interface` weights), so a
//! pair of Tandem and keepalived nodes configured alike elects alike:
//! - weight > 0: the weight is added while the check is up;
//! - weight < 0: |weight| is subtracted while the check is down;
//! - weight 0: the check being down puts the instance in Fault (no priority change);
//! - the result is clamped to 1..=254, so trackers can neither resign (0) nor claim ownership
//!   (255); a configured 255 (the address owner, RFC 5798 §5.2.4) is never changed.
//!
//! ## When a weight can move the addresses
//!
//! Only the master advertises, so a backup compares its own effective priority with the
//! master's, and takes over (with preemption on) once the master's is lower; an equal priority
//! does not make a backup take over (RFC 5798 §6.4.2). Take the classic pair, master A with
//! priority `a` and backup B with `b < a`, both tracking the same service with the same weight
//! `w > 0`. Their effective priorities are `a + w·upA` and `b + w·upB`, and B takes over exactly
//! when `b + w·upB > a + w·upA`:
//! - with A's check up this needs `w·upB > a - b + w`, impossible;
//! - with A's check down it needs B's check up and `w > a - b`.
//!
//! So with A = 101 (+2) and B = 100 (+2) the VIP moves only if A's check fails **and** B's check
//! is up (102 > 101); if the service fails on both nodes A keeps the VIP (101 > 100). With a
//! negative weight the arithmetic is the same: a failure on A moves the VIP iff `|w| > a - b`
//! (and B's own check is up if B tracks it too). In general, one failing tracker moves the VIP
//! iff its `|weight|` is larger than the gap between the two nodes' priorities with every
//! tracker up; equal to the gap only makes a tie (kept by the master in Backup's rules, or won by
//! the higher primary address between two masters). [`weight_warnings`] checks exactly that,
//! with the peer's advertised priority standing for the peer's all-up priority, and assuming
//! the peer tracks the same checks with the same weights, as a keepalived pair usually does.
//!
//! Even when the weight is large enough, a weight-only handover waits for the backup's
//! Master_Down_Timer (3 adverts plus skew). A weight-0 tracker (Fault) makes the master resign
//! with a priority-0 advert, and the backup takes over after its skew time alone.

/// One tracker's current result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerState {
    pub weight: i32,
    pub up: bool,
}

/// The priority a non-owner's trackers can never leave (RFC 5798 §5.2.4: 1..=254 for backups).
const LOWEST: i32 = 1;
const HIGHEST: i32 = 254;
const OWNER: u8 = 255;

/// keepalived's rules: weight > 0 adds weight while up; weight < 0 subtracts |weight| while down;
/// weight 0 => down means Fault. Result clamped to 1..=254 unless configured is 255 (unchanged).
/// Returns `(effective priority, faulty)`.
pub fn effective_priority(configured: u8, trackers: &[TrackerState]) -> (u8, bool) {
    let faulty = trackers
        .iter()
        .any(|tracker| tracker.weight == 0 && !tracker.up);
    if configured == OWNER {
        return (OWNER, faulty);
    }
    let moved: i64 = trackers
        .iter()
        .map(|tracker| match (tracker.weight.signum(), tracker.up) {
            (1, true) | (-1, false) => i64::from(tracker.weight),
            _ => 0,
        })
        .sum();
    let effective = (i64::from(configured) + moved).clamp(i64::from(LOWEST), i64::from(HIGHEST));
    // Clamped into 1..=254 just above.
    (effective as u8, faulty)
}

/// Start-up and runtime warnings for the known traps, as plain sentences naming the instance:
/// - the owner (255) with non-zero weights: keepalived ignores them, and so does Tandem;
/// - `preempt = false` with non-zero weights: this node never takes the addresses from a running
///   master, so its weights cannot bring them here (only Fault and a silent master do);
/// - positive weights that add up past 254: the excess is cut off;
/// - given the peer's priority (from its adverts), each weight whose magnitude is not larger than
///   the gap between the peer's priority and this node's priority with every tracker up: that
///   tracker failing never moves the addresses (see the module documentation for the condition);
/// - a peer that owns the addresses (255): no weight here can take them from it.
pub fn weight_warnings(
    instance_name: &str,
    configured: u8,
    preempt: bool,
    weights: &[i32],
    peer_priority: Option<u8>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let weighted: Vec<i32> = weights
        .iter()
        .copied()
        .filter(|&weight| weight != 0)
        .collect();
    if weighted.is_empty() {
        return warnings;
    }
    let name = instance_name;
    if configured == OWNER {
        warnings.push(format!(
            "vrrp instance {name:?}: priority 255 (address owner) is never changed by tracker \
             weights {weighted:?}; use weight 0 to give up the addresses when a check fails, or a \
             priority below 255"
        ));
        return warnings;
    }
    if !preempt {
        warnings.push(format!(
            "vrrp instance {name:?}: preempt = false, so this node never takes the virtual \
             addresses from a running master whatever its priority; the tracker weights \
             {weighted:?} only matter when both nodes start or the master stops advertising. Use \
             weight 0 (Fault) to hand over when a check fails, or set preempt = true"
        ));
    }
    let bonus: i32 = weighted.iter().filter(|&&weight| weight > 0).sum();
    let all_up = i32::from(configured) + bonus;
    if all_up > HIGHEST {
        warnings.push(format!(
            "vrrp instance {name:?}: priority {configured} plus the positive weights ({bonus}) \
             is {all_up}, above 254; the effective priority stops at 254, so part of the weights \
             never counts"
        ));
    }
    match peer_priority {
        None | Some(0) => {}
        Some(OWNER) => warnings.push(format!(
            "vrrp instance {name:?}: the peer advertises priority 255 (it owns the addresses); \
             no tracker weight moves them off it, only its own Fault or shutdown does"
        )),
        Some(peer) => {
            let all_up = all_up.min(HIGHEST);
            let gap = (all_up - i32::from(peer)).abs();
            for &weight in &weighted {
                let magnitude = weight.abs();
                if magnitude > gap {
                    continue;
                }
                let outcome = if magnitude == gap {
                    "only ties the two nodes, and a tie never makes a backup take over"
                } else {
                    "leaves the node that holds them above the other"
                };
                warnings.push(format!(
                    "vrrp instance {name:?}: the peer advertises priority {peer} and this node has \
                     {all_up} with every tracker up, a gap of {gap}; a tracker with weight \
                     {weight} moves a node's priority by {magnitude}, which {outcome}, so its \
                     failure alone never moves the virtual addresses (assuming the peer tracks \
                     the same check). Use a weight above {gap} in magnitude, or weight 0 to enter \
                     Fault and hand over at once"
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(weight: i32) -> TrackerState {
        TrackerState { weight, up: true }
    }

    fn down(weight: i32) -> TrackerState {
        TrackerState { weight, up: false }
    }

    #[test]
    fn no_trackers_leave_the_configured_priority() {
        assert_eq!(effective_priority(100, &[]), (100, false));
    }

    #[test]
    fn positive_weight_adds_while_the_check_is_up_and_nothing_while_down() {
        assert_eq!(effective_priority(100, &[up(20)]), (120, false));
        assert_eq!(effective_priority(100, &[down(20)]), (100, false));
    }

    #[test]
    fn negative_weight_subtracts_while_the_check_is_down_and_nothing_while_up() {
        assert_eq!(effective_priority(100, &[up(-30)]), (100, false));
        assert_eq!(effective_priority(100, &[down(-30)]), (70, false));
    }

    #[test]
    fn weights_of_several_trackers_add_up() {
        assert_eq!(
            effective_priority(100, &[up(5), down(-10), down(7), up(-3)]),
            (95, false)
        );
    }

    #[test]
    fn weight_0_down_means_fault_and_up_means_nothing() {
        assert_eq!(effective_priority(100, &[down(0), up(10)]), (110, true));
        assert_eq!(effective_priority(100, &[up(0)]), (100, false));
    }

    #[test]
    fn result_is_clamped_to_1_through_254() {
        assert_eq!(effective_priority(250, &[up(10)]), (254, false));
        assert_eq!(effective_priority(254, &[up(254), up(254)]), (254, false));
        assert_eq!(effective_priority(10, &[down(-50)]), (1, false));
        assert_eq!(effective_priority(1, &[down(-254), down(-254)]), (1, false));
    }

    #[test]
    fn owner_priority_255_is_never_changed_but_can_still_fault() {
        assert_eq!(effective_priority(255, &[up(10), down(-50)]), (255, false));
        assert_eq!(effective_priority(255, &[down(0)]), (255, true));
    }

    #[test]
    fn classic_pair_101_and_100_with_plus_2_moves_only_if_the_masters_check_fails_and_the_backups_is_up(
    ) {
        let master = |up_a: bool| {
            effective_priority(
                101,
                &[TrackerState {
                    weight: 2,
                    up: up_a,
                }],
            )
            .0
        };
        let backup = |up_b: bool| {
            effective_priority(
                100,
                &[TrackerState {
                    weight: 2,
                    up: up_b,
                }],
            )
            .0
        };
        assert!(backup(true) < master(true));
        assert!(backup(true) > master(false));
        assert!(backup(false) < master(false));
        assert!(backup(false) < master(true));
    }

    #[test]
    fn no_weights_no_warnings() {
        assert!(weight_warnings("vi", 100, false, &[], Some(150)).is_empty());
        assert!(weight_warnings("vi", 100, false, &[0, 0], Some(150)).is_empty());
    }

    #[test]
    fn nopreempt_with_a_weight_warns_that_weights_cannot_move_the_vip_here() {
        let warnings = weight_warnings("vi1", 100, false, &[-20], None);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("\"vi1\""));
        assert!(warnings[0].contains("preempt = false"));
        assert!(weight_warnings("vi1", 100, true, &[-20], None).is_empty());
    }

    #[test]
    fn owner_with_weights_warns_that_they_are_ignored() {
        let warnings = weight_warnings("vi", 255, true, &[10], Some(100));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("255"));
        assert!(weight_warnings("vi", 255, true, &[0], Some(100)).is_empty());
    }

    #[test]
    fn weight_not_larger_than_the_gap_to_the_peer_warns() {
        // Backup 100 hears master 150; a -20 failure on the master leaves it at 130.
        let warnings = weight_warnings("vi", 100, true, &[-20], Some(150));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("gap of 50"));
        assert!(warnings[0].contains("weight -20"));
        // Seen from the master in a split brain: the same gap.
        assert_eq!(weight_warnings("vi", 150, true, &[-20], Some(100)).len(), 1);
    }

    #[test]
    fn weight_equal_to_the_gap_warns_that_it_only_ties() {
        let warnings = weight_warnings("vi", 100, true, &[-10], Some(110));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("only ties"));
    }

    #[test]
    fn weight_larger_than_the_gap_is_fine() {
        assert!(weight_warnings("vi", 100, true, &[-60], Some(150)).is_empty());
        // The classic pair from both sides: backup 100+2 = 102 hears 103; master 103 hears 102.
        assert!(weight_warnings("vi", 100, true, &[2], Some(103)).is_empty());
        assert!(weight_warnings("vi", 101, true, &[2], Some(102)).is_empty());
    }

    #[test]
    fn gap_uses_this_nodes_priority_with_every_tracker_up() {
        // 100 + 30 = 130 against 150: a gap of 20, so weight 30 is fine, weight 15 is not.
        assert!(weight_warnings("vi", 100, true, &[30], Some(150)).is_empty());
        let warnings = weight_warnings("vi", 100, true, &[30, -15], Some(150));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("weight -15"));
    }

    #[test]
    fn positive_weights_past_254_warn_that_the_excess_never_counts() {
        let warnings = weight_warnings("vi", 250, true, &[10], None);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("260"));
    }

    #[test]
    fn a_peer_that_owns_the_addresses_warns_once() {
        let warnings = weight_warnings("vi", 100, true, &[10, -20], Some(255));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("255"));
    }

    #[test]
    fn a_resigning_peer_is_not_compared() {
        assert!(weight_warnings("vi", 100, true, &[-1], Some(0)).is_empty());
    }
}
