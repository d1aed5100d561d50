//! `cargo xtask lab`: the reference topology for a person to try, until Ctrl-C.
//!
//! Builds the lab of the tests (tandem_lab) with echo backends on http1 and http2, prints how to
//! reach each host, and tears everything down on Ctrl-C or SIGTERM (the lab's Drop does it).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tandem_lab::{EchoBackend, Lab, CLIENT, HTTP1, HTTP2, LB1, LB2};

pub fn run(root: &Path) -> anyhow::Result<()> {
    std::env::set_var("TANDEM_ECHO_BIN", root.join("target/debug/tandem-echo"));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let lab = Lab::new()?;
    let backends = [
        EchoBackend::start(lab.host(HTTP1), 80, HTTP1)?,
        EchoBackend::start(lab.host(HTTP2), 80, HTTP2)?,
    ];
    println!(
        "\nThe lab {} is up: one L2 segment 198.18.0.0/24 on a bridge.\n",
        lab.id()
    );
    for host in lab.hosts() {
        println!(
            "  {:<7} {:<14} netns {}",
            host.name,
            host.ip.to_string(),
            host.netns
        );
    }
    let client = lab.host(CLIENT);
    println!("\nTry, from another terminal (nsenter keeps /sys/fs/bpf visible; `ip netns exec` hides it):");
    for backend in &backends {
        println!(
            "  nsenter --net={} curl -s http://{}/",
            client.netns_path().display(),
            backend.addr()
        );
    }
    println!(
        "  nsenter --net={} ip -br addr        # lb1; later issues run Tandem here",
        lab.host(LB1).netns_path().display()
    );
    println!(
        "  nsenter --net={} ip -br addr        # lb2",
        lab.host(LB2).netns_path().display()
    );
    println!("\nCtrl-C tears the lab down.");
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\ntearing down the lab {}", lab.id());
    drop(backends);
    drop(lab);
    Ok(())
}
