//! Web servers for the lab's `http1`/`http2` hosts. Each backend owns its [`crate::Process`]
//! (stopped when the backend is dropped) and does not borrow the lab, so declare it after the
//! lab: it is then dropped first.
//!
//! - [`EchoBackend`]: the project's own `tandem-echo` (src/bin/tandem-echo.rs), fast to start,
//!   answers with its name and everything it received: what proxy tests assert on.
//! - [`Apache`]: Debian's Apache 2.4, the backend of the classic setup, with its own generated
//!   configuration and an access log that shows X-Forwarded-For.

mod apache;
mod echo;

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::bail;

pub use apache::Apache;
pub use echo::{echo_binary, EchoBackend};

use crate::client::wait_for_tcp;
use crate::lab::Host;
use crate::process::Process;

/// How long a backend gets from start to accepting connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Slice of [`START_TIMEOUT`] between checks that the server has not died.
const START_POLL: Duration = Duration::from_millis(250);

/// Waits until `process` accepts connections on `addr` (tried from `host` itself), failing
/// early if it exits. `diagnostics` adds the server's own logs to the error.
fn wait_until_serving(
    host: &Host,
    process: &mut Process,
    addr: SocketAddrV4,
    diagnostics: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = process.exit_status() {
            bail!(
                "`{}` exited ({status}) before accepting on {addr}{}",
                process.description(),
                diagnostics()
            );
        }
        match wait_for_tcp(host, SocketAddr::V4(addr), START_POLL) {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                bail!(
                    "`{}` did not accept on {addr} within {START_TIMEOUT:?}: {error:#}{}",
                    process.description(),
                    diagnostics()
                );
            }
            Err(_) => {}
        }
    }
}
