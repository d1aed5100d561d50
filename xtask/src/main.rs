//! `cargo xtask`: the project's own driver for set-up, builds, loading, tests and the lab.
//!
//! Every command that needs a tool first runs `setup`, which installs only what is missing, so
//! a fresh Debian 12 machine needs nothing by hand: `cargo xtask lab` and `cargo xtask test` are
//! the two commands of the README. The eBPF crate is built here, not by a build script, because
//! it needs Debian's rustc and bpf-linker (see ../shared/TOOLCHAIN.md and `build_ebpf`).

mod bench;
mod fuzz;
mod lab;
mod package;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Tandem's build, set-up, lab and test driver"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what builds and tests need (apt packages, bpf-linker); a no-op when all is there.
    Setup,
    /// Build the XDP object (lb-ebpf) with Debian's rustc and bpf-linker.
    BuildEbpf,
    /// Build the XDP object, then the `tandem` binary that embeds it (and the lab's echo server).
    Build {
        /// Build with optimisations (target/release).
        #[arg(long)]
        release: bool,
    },
    /// Build everything, load the XDP program on an interface and pin it; returns at once.
    BuildAndLoad {
        /// The interface to attach to.
        #[arg(long)]
        iface: String,
        /// native, generic, or auto (native when the driver supports it, else generic).
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// The bpffs directory for the program's pins (the daemon's node.bpf_pin_dir).
        #[arg(long, default_value = "/sys/fs/bpf/tandem")]
        pin_dir: PathBuf,
    },
    /// Detach the XDP program from an interface and remove its pins.
    Unload {
        /// The interface to detach from.
        #[arg(long)]
        iface: String,
        /// The bpffs directory the program was pinned in.
        #[arg(long, default_value = "/sys/fs/bpf/tandem")]
        pin_dir: PathBuf,
    },
    /// Build the Debian package target/debian/tandem_VERSION_ARCH.deb from a release build
    ///
    /// /usr/sbin/tandem, the systemd unit and sysusers file, tandem-release-vips, the
    /// reference pair's lb1 config as the conffile /etc/tandem/tandem.toml, the man page
    /// tandem(8), bash/zsh/fish completions and the operator's guide. Installing it creates
    /// the `tandem` user but neither enables nor starts the service.
    Package,
    /// Everything CI checks: set-up, build, fmt, clippy, unit tests, the lab tests (root), the
    /// Debian package (lintian, install, purge), then every fuzz target for a minute.
    Test,
    /// The main job: an HA pair of Tandem nodes, two Apache backends, a tour and a prompt
    ///
    /// lb1 (priority 101) and lb2 (100) in network namespaces serve an L7 service with
    /// JSESSIONID affinity and an L4 TCP service on the VIP 198.18.0.99. The prompt replays the
    /// classic test: `stop http1`, `stop lb1`, `start lb1`, `status`. `quit` or Ctrl-C tears
    /// everything down.
    Lab {
        /// Instead of the classic pair: three active nodes announcing an anycast VIP over BGP to
        /// a router namespace running BIRD, which spreads the client's connections over them by
        /// ECMP. The prompt kills, freezes, drains and restarts nodes and shows the routes.
        #[arg(long)]
        active_active: bool,
    },
    /// Fuzz the parsers of untrusted input for N seconds each: VRRP and ARP packets, HTTP/1
    /// request heads, the config file, both importers, session-affinity keys; installs
    /// cargo-fuzz if missing.
    Fuzz {
        /// Seconds per fuzz target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Benchmarks against real peers on the lab topology; each prints a table of ratios and
    /// writes it to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Time without service when the master stops (SIGKILL and SIGTERM), at 1 s and 100 ms
    /// adverts, for a Tandem pair and a keepalived pair; and the loss of one of three
    /// active-active nodes (SIGKILL, SIGTERM, SIGSTOP) under load.
    Failover {
        /// Repetitions of each case.
        #[arg(long, default_value_t = 3)]
        repetitions: usize,
        /// Only this pair: tandem, keepalived or active-active (the table is then not written
        /// to the docs).
        #[arg(long)]
        pair: Option<String>,
        /// Only this advert interval in ms: 1000 or 100 (the table is then not written).
        #[arg(long)]
        interval_ms: Option<u64>,
        /// Only this VIP family: ipv4 or ipv6 (the table is then not written).
        #[arg(long)]
        family: Option<String>,
        /// Only this way of stopping: crash, graceful or frozen (frozen: active-active only;
        /// the table is then not written).
        #[arg(long)]
        stop: Option<String>,
    },
    /// Tandem's L7 proxy against HAProxy and nginx: requests/s, p50/p99 latency and peak RSS
    /// with 1 KiB and 100 KiB bodies at 64 and 256 connections.
    Proxy {
        /// Seconds of load per proxy in each cell (6 cells, 3 proxies, each repetition).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rounds over every cell and proxy (median and min-max are reported).
        #[arg(long, default_value_t = 3)]
        repetitions: u32,
        /// Only the cells whose label contains this, e.g. "HTTP/2" or "1 KiB x 64"; the
        /// idle-connection row is skipped and the table is not written to the docs.
        #[arg(long)]
        only: Option<String>,
    },
    /// L4 balancing: Tandem XDP (native, generic), nftables DNAT, HAProxy mode tcp and
    /// Tandem's userspace relay, then XDP and nftables over IPv6; packets/s (trafgen UDP
    /// flood), requests/s (wrk) and the balancer's CPU time per packet.
    L4 {
        /// Seconds of each load per peer (5 IPv4 peers and 3 IPv6 ones, 2 loads each).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Repetitions, the peers' order rotated each time; the table shows the median and
        /// the min-max.
        #[arg(long, default_value_t = 3)]
        repetitions: usize,
    },
    /// Config reload under load: Tandem's `tandem reload` against HAProxy's and nginx's
    /// graceful reloads, every second between two and three backends, with 32 kept-alive
    /// connections; failed requests, connections closed by the proxy, time to effect, peak RSS.
    Reload {
        /// Seconds of load per proxy (one reload per second).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

impl Mode {
    fn as_arg(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => setup::run().and_then(|_| build_ebpf()),
        Cmd::Build { release } => setup::run().and_then(|_| build(release)),
        Cmd::BuildAndLoad {
            iface,
            mode,
            pin_dir,
        } => build_and_load(&iface, mode, &pin_dir),
        Cmd::Unload { iface, pin_dir } => unload(&iface, &pin_dir),
        Cmd::Package => setup::run()
            .and_then(|_| build(true))
            .and_then(|_| package::build(true))
            .map(|_| ()),
        Cmd::Test => test(),
        Cmd::Lab { active_active } => setup::run().and_then(|_| build(false)).and_then(|_| {
            if active_active {
                lab::active_active::run(&workspace_root())
            } else {
                lab::run(&workspace_root())
            }
        }),
        Cmd::Fuzz { seconds } => fuzz::run(seconds),
        Cmd::Bench { which } => setup::run()
            .and_then(|_| build(true))
            .and_then(|_| match which {
                BenchCmd::Failover {
                    repetitions,
                    pair,
                    interval_ms,
                    family,
                    stop,
                } => bench::failover::run(
                    &workspace_root(),
                    repetitions,
                    bench::failover::Filter {
                        pair,
                        interval_ms,
                        family,
                        stop,
                    },
                ),
                BenchCmd::Proxy {
                    seconds,
                    repetitions,
                    only,
                } => bench::proxy::run(&workspace_root(), seconds, repetitions, only.as_deref()),
                BenchCmd::L4 {
                    seconds,
                    repetitions,
                } => bench::l4::run(&workspace_root(), seconds, repetitions),
                BenchCmd::Reload { seconds } => bench::reload::run(&workspace_root(), seconds),
            }),
    };
    if let Err(error) = result {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// The cargo that runs us (rustup's), for every nested build.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs a command to completion, failing with its command line when it fails.
pub fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn ebpf_object() -> PathBuf {
    workspace_root().join("target/ebpf/bpfel-unknown-none/release/lb-ebpf")
}

/// Builds lb-ebpf as its own cargo invocation with Debian's rustc (which ships a prebuilt
/// `core` for bpfel-unknown-none) and bpf-linker; settings are passed explicitly rather than
/// read from lb-ebpf/.cargo/config.toml so the build does not depend on the working directory.
fn build_ebpf() -> anyhow::Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let linker = setup::bpf_linker_path()?;
    let mut cmd = cargo();
    cmd.current_dir(root.join("lb-ebpf"))
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(root.join("target/ebpf"))
        .env("RUSTC", setup::DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    run_checked(&mut cmd).context("building the XDP program (lb-ebpf)")?;
    println!(
        "xtask: built {} in {:.1}s",
        ebpf_object().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn build(release: bool) -> anyhow::Result<()> {
    build_ebpf()?;
    let mut cmd = cargo();
    // lb-userspace's build script finds the object at its default path and embeds it.
    cmd.args(["build", "--workspace", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run_checked(&mut cmd).context("building tandem")
}

fn tandem_binary(release: bool) -> PathBuf {
    workspace_root().join(if release {
        "target/release/tandem"
    } else {
        "target/debug/tandem"
    })
}

fn build_and_load(iface: &str, mode: Mode, pin_dir: &Path) -> anyhow::Result<()> {
    setup::run()?;
    build(true)?;
    run_checked(
        Command::new(tandem_binary(true))
            .args([
                "xdp",
                "attach",
                "--iface",
                iface,
                "--mode",
                mode.as_arg(),
                "--pin-dir",
            ])
            .arg(pin_dir),
    )
}

fn unload(iface: &str, pin_dir: &Path) -> anyhow::Result<()> {
    let binary = tandem_binary(true);
    if !binary.exists() {
        setup::run()?;
        build(true)?;
    }
    run_checked(
        Command::new(binary)
            .args(["xdp", "detach", "--iface", iface, "--pin-dir"])
            .arg(pin_dir),
    )
}

/// Seconds each fuzz target runs in `cargo xtask test`, as the hardening issue asks. From a
/// clean state on 2 cores the fuzz step took 13 minutes (cargo-fuzz installed in under one,
/// the sanitizer build of every target 6, then 7 targets one after another): CI's run grows
/// from about 6 minutes to 19, well inside its 90.
const TEST_FUZZ_SECONDS: u64 = 60;

fn test() -> anyhow::Result<()> {
    let started = Instant::now();
    let step = |name: &str| {
        println!(
            "\n== xtask test: {name} ({:.0}s so far)",
            started.elapsed().as_secs_f64()
        )
    };
    step("setup");
    setup::run()?;
    step("build the XDP program");
    build_ebpf()?;
    step("cargo fmt --check");
    run_checked(cargo().args(["fmt", "--all", "--check"]))?;
    run_checked(cargo().args(["fmt", "--check", "--manifest-path", "lb-ebpf/Cargo.toml"]))?;
    run_checked(cargo().args([
        "fmt",
        "--check",
        "--manifest-path",
        "lb-userspace/fuzz/Cargo.toml",
    ]))?;
    step("clippy -D warnings");
    run_checked(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("build binaries");
    run_checked(cargo().args(["build", "--workspace", "--bins"]))?;
    step("unit and lab tests");
    run_checked(cargo().args(["test", "--workspace"]))?;
    // From the debug binary built above: the package's tree, scripts and checks are the same
    // as `cargo xtask package` makes from a release build, without its minutes of compiling
    // (3.5 for lb-userspace alone on 2 cores). The step takes about 35 s: 23 to write and pack
    // the tree (xz), 10 for lintian, the install, the checks and the purge.
    step("Debian package: lintian, install, check, purge");
    let deb = package::build(false)?;
    run_checked(
        cargo()
            .args([
                "test",
                "-p",
                "tandem-tests",
                "--test",
                "package",
                "--",
                "--ignored",
            ])
            .env("TANDEM_DEB", &deb),
    )?;
    step(&format!("fuzz targets, {TEST_FUZZ_SECONDS} s each"));
    fuzz::run(TEST_FUZZ_SECONDS)?;
    println!(
        "\nxtask test: all green in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
