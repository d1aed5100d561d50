//! [`EchoBackend`]: runs the project's `tandem-echo` server on a lab host, and
//! [`echo_binary`], which finds the built binary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;

use super::wait_until_serving;
use crate::lab::Host;
use crate::process::Process;

/// The echo server's binary name (a `[[bin]]` of this package).
const ECHO_BIN: &str = "tandem-echo";
/// Environment variable that overrides where the echo binary is.
const ECHO_BIN_ENV: &str = "TANDEM_ECHO_BIN";
/// How long the echo server gets for SIGTERM in [`EchoBackend::stop`].
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Finds the built `tandem-echo` (see [`crate::built_binary`]; `$TANDEM_ECHO_BIN` overrides).
pub fn echo_binary() -> anyhow::Result<PathBuf> {
    crate::built_binary(ECHO_BIN, ECHO_BIN_ENV, "cargo build -p tandem-tests --bins")
}

/// A running `tandem-echo` on a lab host: answers every HTTP request with `X-Backend: NAME`
/// and a body that starts `backend NAME` and echoes the request line and headers.
#[derive(Debug)]
pub struct EchoBackend {
    name: String,
    addr: SocketAddrV4,
    process: Option<Process>,
}

impl EchoBackend {
    /// Starts the echo server on `host`, listening on the host's address and `port`, and waits
    /// until it accepts connections.
    pub fn start(host: &Host, port: u16, name: &str) -> anyhow::Result<EchoBackend> {
        EchoBackend::start_with_binary(&echo_binary()?, host, port, name)
    }

    /// [`EchoBackend::start`] with the binary given, e.g.
    /// `env!("CARGO_BIN_EXE_tandem-echo")` in this package's integration tests.
    pub fn start_with_binary(
        binary: &Path,
        host: &Host,
        port: u16,
        name: &str,
    ) -> anyhow::Result<EchoBackend> {
        EchoBackend::start_listening(binary, host, SocketAddrV4::new(host.ip, port).into(), name)
    }

    /// Starts the echo server on all of `host`'s addresses (0.0.0.0:`port`; on a host of a
    /// dual-stack lab `[::]:port`, which Linux makes dual-stack, so IPv4 too), so it also
    /// answers on a VIP that VRRP adds later: the "plain web server on each node" of a classic
    /// pair.
    pub fn start_on_all_addresses(
        host: &Host,
        port: u16,
        name: &str,
    ) -> anyhow::Result<EchoBackend> {
        let any: IpAddr = if host.ip6.is_some() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        EchoBackend::start_listening(&echo_binary()?, host, SocketAddr::new(any, port), name)
    }

    fn start_listening(
        binary: &Path,
        host: &Host,
        listen: SocketAddr,
        name: &str,
    ) -> anyhow::Result<EchoBackend> {
        let addr = SocketAddrV4::new(host.ip, listen.port());
        let mut command = host.command(binary);
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--name")
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut process = host.spawn(command)?;
        wait_until_serving(host, &mut process, addr, String::new)
            .with_context(|| format!("starting echo backend {name} on host {}", host.name))?;
        Ok(EchoBackend {
            name: name.to_owned(),
            addr,
            process: Some(process),
        })
    }

    /// Stops the server (SIGTERM, SIGKILL if needed): from now on its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            if let Err(error) = process.terminate(STOP_GRACE) {
                eprintln!("tandem-lab: stopping echo backend {}: {error:#}", self.name);
            }
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill(libc::SIGKILL);
            let _ = process.wait_exit(STOP_GRACE);
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }
}
