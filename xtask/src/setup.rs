//! `cargo xtask setup`: installs, only where missing, what building and testing Tandem needs.
//!
//! Two kinds of things: Debian packages (the eBPF toolchain of ../shared/TOOLCHAIN.md and the
//! real peers the tests and benchmarks run against), and bpf-linker built against Debian's LLVM
//! 22. Each is checked first, so a second run takes well under a second.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::run_checked;

/// Debian's rustc-web: a stable compiler whose prebuilt `core` for bpfel-unknown-none comes
/// from libstd-rust-web-dev-bpf (rustup's toolchains here cannot build `core` for BPF).
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Packages for the eBPF build.
const TOOLCHAIN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "bpftool",
];
/// Real peers, backends, load generators and network tools used by tests, the lab and benchmarks.
const PEER_PACKAGES: &[&str] = &[
    "apache2",
    "nginx-light",
    "haproxy",
    "keepalived",
    "nftables",
    "wrk",
    "nghttp2-client",
    "netsniff-ng",
    "xdp-tools",
    "iputils-arping",
    "iputils-ping",
    "tcpdump",
    // systemd-analyze, which checks dist/tandem.service (the machines have no systemd as PID 1).
    "systemd",
    "ethtool",
    "iproute2",
    "curl",
    // The WebSocket server behind the proxy in the tunnel tests.
    "python3-websockets",
    // The gRPC server and client through the proxy's h2c and h2 backends.
    "python3-grpcio",
    // The BGP speaker Tandem runs for [bgp], and the lab's router.
    "bird2",
];
/// `cargo xtask package`: dpkg-shlibdeps (the .deb's Depends on shared libraries); lintian,
/// which the package's test runs on it, and man-db, whose `man -w` finds the installed page.
const PACKAGING_PACKAGES: &[&str] = &["dpkg-dev", "lintian", "man-db"];

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("setup installs Debian packages and needs root: run as root (CI does)");
    }
    let wanted: Vec<&str> = TOOLCHAIN_PACKAGES
        .iter()
        .chain(PEER_PACKAGES)
        .chain(PACKAGING_PACKAGES)
        .copied()
        .collect();
    let missing = missing_packages(&wanted)?;
    if !missing.is_empty() {
        println!("xtask setup: installing {}", missing.join(" "));
        run_checked(Command::new("apt-get").args(["update", "-q"]))?;
        run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "-q"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("installing Debian packages")?;
        // Debian starts the web servers it installs; the lab runs its own instances and the
        // machine's own must not hold port 80 on the host.
        for service in ["apache2", "nginx", "haproxy", "keepalived", "bird"] {
            let _ = Command::new("service").args([service, "stop"]).output();
        }
    }
    if !bpf_linker_ok() {
        println!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against {LLVM_PREFIX} (about a minute)");
        run_checked(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "--locked",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )
        .context("building bpf-linker")?;
    }
    println!(
        "xtask setup: {} packages and bpf-linker {BPF_LINKER_VERSION} present ({:.1}s)",
        wanted.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Packages of `wanted` that dpkg does not list as installed.
fn missing_packages(wanted: &[&str]) -> anyhow::Result<Vec<String>> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev}\n"])
        .args(wanted)
        .output()
        .context("running dpkg-query (is this a Debian machine?)")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| {
            let (name, status) = line.split_once(' ')?;
            status.starts_with("ii").then_some(name)
        })
        .collect();
    Ok(wanted
        .iter()
        .filter(|p| !installed.contains(p))
        .map(|p| p.to_string())
        .collect())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Where bpf-linker is: cargo's bin directory (where setup installs it), else PATH.
pub fn bpf_linker_path() -> anyhow::Result<PathBuf> {
    let in_cargo_home = cargo_bin_dir().join("bpf-linker");
    if in_cargo_home.is_file() {
        return Ok(in_cargo_home);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
        .context("bpf-linker not found: run `cargo xtask setup`")
}

fn bpf_linker_ok() -> bool {
    let Ok(path) = bpf_linker_path() else {
        return false;
    };
    Command::new(path)
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false)
}
