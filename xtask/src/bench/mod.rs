//! `cargo xtask bench ...`: each bench runs Tandem and its real peers on the lab, interleaved,
//! and writes its table into docs/benchmarks.md.
//!
//! - `proxy`: the L7 proxy against HAProxy and nginx (wrk, h2load; req/s, p99, CPU, RSS);
//! - `l4`: the XDP path against nftables, HAProxy mode tcp and the userspace relay;
//! - `reload`: reloads under load against HAProxy's and nginx's;
//! - `failover`: time without service when the master stops, Tandem pair against keepalived,
//!   and the loss of one of three active-active nodes (`node_loss`).
//!
//! The kit they share: [`Setup`] (the release binaries, the peers' tools, the lab), the
//! tandem-echo backends, `report` (docs/benchmarks.md's sections), `process_tree` (CPU time
//! and memory of a process and its children); wrk's summary and HTTP/1.x answers are read by
//! the lab library (`tandem_lab::wrk`, `tandem_lab::client::read_response`), as in the tests.

pub mod chart;
pub mod failover;
pub mod l4;
pub mod node_loss;
pub mod process_tree;
pub mod proxy;
pub mod reload;
pub mod report;

use std::path::{Path, PathBuf};

use tandem_lab::{EchoBackend, Lab, HTTP1, HTTP2};

/// What every bench starts from: the release binaries (Tandem and the echo backend), the
/// peers' tools checked, and a fresh lab.
pub struct Setup {
    pub tandem: PathBuf,
    pub echo: PathBuf,
    pub lab: Lab,
}

impl Setup {
    /// Checks that `tools` exist (else says to install `installs`), points the lab library
    /// at the release binaries and builds the lab.
    pub fn new(root: &Path, tools: &[&str], installs: &str) -> anyhow::Result<Setup> {
        report::require_tools(tools, installs)?;
        let (tandem, echo) = use_release_binaries(root);
        Ok(Setup {
            tandem,
            echo,
            lab: Lab::new()?,
        })
    }

    /// [`Setup::new`] with a dual-stack lab (every host also on 2001:2::/64), for benches with
    /// IPv6 rows.
    pub fn dual_stack(root: &Path, tools: &[&str], installs: &str) -> anyhow::Result<Setup> {
        report::require_tools(tools, installs)?;
        let (tandem, echo) = use_release_binaries(root);
        Ok(Setup {
            tandem,
            echo,
            lab: Lab::dual_stack()?,
        })
    }

    /// tandem-echo on http1 and http2, port 80: the backends of the HTTP benches.
    pub fn echo_backends(&self) -> anyhow::Result<[EchoBackend; 2]> {
        Ok([
            EchoBackend::start_with_binary(&self.echo, self.lab.host(HTTP1), 80, HTTP1)?,
            EchoBackend::start_with_binary(&self.echo, self.lab.host(HTTP2), 80, HTTP2)?,
        ])
    }
}

/// Points the lab library at the release binaries (what the benches measure, not the debug
/// build the tests use); returns Tandem's and the echo backend's paths.
pub fn use_release_binaries(root: &Path) -> (PathBuf, PathBuf) {
    let target = report::release_dir(root);
    let (tandem, echo) = (target.join("tandem"), target.join("tandem-echo"));
    std::env::set_var("TANDEM_BIN", &tandem);
    std::env::set_var("TANDEM_ECHO_BIN", &echo);
    (tandem, echo)
}
