//! [`Process`]: a child process that the lab owns. Dropping it stops the child (SIGTERM, then
//! SIGKILL if it has not exited within two seconds) and reaps it, so a failing test leaves no
//! daemon or web server behind. Starting processes lives in [`crate::Host::spawn`].

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a child gets to exit on SIGTERM before it is killed when a [`Process`] is dropped.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How often an exit is polled for: short, because tests wait on it.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// A running child, stopped and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// The command line, for error messages.
    description: String,
    /// Set once the child has been reaped: its pid may then belong to someone else, so no
    /// signal may be sent to it any more.
    exit_status: Option<ExitStatus>,
}

impl Process {
    pub(crate) fn new(child: Child, description: String) -> Process {
        Process {
            child,
            description,
            exit_status: None,
        }
    }

    /// The child's pid (for `nsenter`-started commands, the program's own pid: nsenter execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line this process was started with.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child. Does nothing once it has been reaped.
    pub fn kill(&mut self, signal: i32) {
        if self.try_reap().is_some() {
            return;
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) with a pid we own and have not reaped yet (so it cannot be reused).
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            eprintln!(
                "tandem-lab: kill({pid}, {signal}) for `{}` failed: {}",
                self.description,
                std::io::Error::last_os_error()
            );
        }
    }

    /// Waits up to `timeout` for the child to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_reap() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "`{}` (pid {}) still running after {timeout:?}",
                    self.description,
                    self.pid()
                );
            }
            thread::sleep(EXIT_POLL);
        }
    }

    /// Whether the child is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.try_reap().is_none()
    }

    /// The exit status if the child has exited; reaps it.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.try_reap()
    }

    /// Stops the child: SIGTERM, SIGKILL after `grace`, then reaps it.
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_reap() {
            return Ok(status);
        }
        self.kill(libc::SIGTERM);
        if let Ok(status) = self.wait_exit(grace) {
            return Ok(status);
        }
        self.kill(libc::SIGKILL);
        self.wait_exit(TERM_GRACE)
            .with_context(|| format!("`{}` survived SIGKILL", self.description))
    }

    fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            match self.child.try_wait() {
                Ok(status) => self.exit_status = status,
                Err(error) => {
                    eprintln!(
                        "tandem-lab: waiting for `{}` failed: {error}",
                        self.description
                    );
                }
            }
        }
        self.exit_status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(error) = self.terminate(TERM_GRACE) {
            eprintln!("tandem-lab: stopping a process on drop: {error:#}");
        }
    }
}
