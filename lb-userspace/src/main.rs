//! The `tandem` command: runs a node (`run`), validates its config (`check`), talks to the
//! running daemon (`status`, `reload`), and inspects the kernel data plane (`maps`, `trace`,
//! `xdp attach|detach`). Each subcommand is a thin shell over the
//! library modules; errors reach the user as one line that says what to do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use tandem::config;
use tandem::dataplane::xdp::trace::{TraceFilter, TraceSwitch, Tracer, MAX_TRACE_SECONDS};
use tandem::dataplane::xdp::{loader, pinned};
use tandem::dataplane::AttachMode;
use tandem::import;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "High-availability load balancer: L7 proxy, VRRP failover and an XDP fast path in one daemon",
    long_about = "High-availability load balancer: L7 proxy, VRRP failover and an XDP fast path in one \
daemon.

One `tandem run` per node does what the classic pair of Pound and keepalived did: it proxies \
HTTP to the backends with health checks and session affinity, and holds the virtual addresses \
while VRRP elects it master. L4 services are forwarded by an XDP program in the kernel, or by \
a userspace relay where XDP cannot be loaded. Under systemd, tandem.service runs it as the \
user tandem. The other commands validate a configuration, talk to the running daemon over \
its control socket, read the XDP program's pinned maps, and translate the classic pair's \
files."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    Run {
        /// The node's configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a configuration file; errors are printed as FILE:LINE:COL: message (exit 1).
    Check {
        /// The configuration file to validate.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Show the eBPF maps read directly from the pin directory (works with no daemon running).
    Maps {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The bpffs directory holding Tandem's pins [default: the config's node.bpf_pin_dir, else /sys/fs/bpf/tandem].
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Read the pin directory from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// List every connection-table entry, not only how many there are.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show the XDP program's decision for each packet for a virtual IP, as it happens
    ///
    /// One line per TCP/UDP packet for a virtual IP (or only --vip, only --port): time (UTC),
    /// client -> service/proto, verdict (tx, pass, drop), reason (the counter it was counted
    /// under: flow_hit, flow_new, flow_moved, pass_l7, drop_no_service, drop_no_backend,
    /// drop_no_mac), backend (address and id), connection table (hit, new, moved, or -).
    /// Reads the pinned program directly (works with no daemon running); the program logs
    /// only while a trace runs. One trace at a time: a second one is refused.
    Trace {
        /// Only packets for this virtual IP.
        #[arg(long)]
        vip: Option<std::net::IpAddr>,
        /// Only packets for this service port.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// How long to trace, in seconds (at most 3600); Ctrl-C ends it sooner.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_TRACE_SECONDS))]
        seconds: u64,
        /// The bpffs directory holding Tandem's pins [default: the config's node.bpf_pin_dir, else /sys/fs/bpf/tandem].
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Read the pin directory from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show the running daemon's live state: VRRP instances, services, backends, data plane.
    Status {
        /// Print JSON instead of the screen for people.
        #[arg(long)]
        json: bool,
        /// Redraw every second until interrupted.
        #[arg(long)]
        watch: bool,
        /// The daemon's control socket [default: the config's node.control_socket, else /run/tandem/tandem.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Read the control socket path from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Reload the running daemon's services and backends from its config file (as SIGHUP does)
    ///
    /// Prints what changed. The daemon validates the file first: on an error it keeps
    /// running the previous config, and this command prints the error (FILE:LINE:COL) and
    /// exits 1. Services, backends and VRRP priorities change live; other settings ([node],
    /// the rest of [[vrrp]], [proxy], [replication]) need a restart, and a reload that changes
    /// them is refused. Open connections are not dropped.
    Reload {
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
        /// The daemon's control socket [default: the config's node.control_socket, else /run/tandem/tandem.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Read the control socket path from this config file (the daemon reloads the file it
        /// was started with).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Take a backend, or the whole node, out of rotation; its connections go on
    ///
    /// With SERVICE BACKEND: no new sessions, requests (HTTP) or flows (L4) go to that backend;
    /// requests of sessions already on it, and its established L4 flows, go on. Kept across
    /// `tandem reload`, not across a restart.
    ///
    /// Without arguments: the node withdraws its [bgp] VIPs, so the routers send new flows to
    /// the other nodes while open connections finish here.
    ///
    /// Undo with `tandem enable` (with the same arguments).
    Drain {
        /// The service's name, as in the config.
        #[arg(requires = "backend")]
        service: Option<String>,
        /// The backend's address, as in the config (e.g. 198.18.0.102:80).
        backend: Option<String>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Put a drained backend back in rotation, or (without arguments) announce a drained
    /// node's [bgp] VIPs again.
    Enable {
        /// The service's name, as in the config.
        #[arg(requires = "backend")]
        service: Option<String>,
        /// The drained backend's address, as in the config (e.g. 198.18.0.102:80).
        backend: Option<String>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Attach or detach the XDP program by hand (what `cargo xtask build-and-load` uses).
    Xdp {
        #[command(subcommand)]
        action: XdpAction,
    },
    /// Translate a classic pound.cfg and keepalived.conf into tandem.toml.
    #[command(after_help = IMPORT_HELP)]
    Import(ImportArgs),
    /// Print a shell's completion script for tandem (the Debian package installs them)
    ///
    /// bash: `tandem completions bash > /etc/bash_completion.d/tandem`; zsh: into a directory
    /// of $fpath as `_tandem`; fish: `~/.config/fish/completions/tandem.fish`.
    Completions {
        /// The shell to write the script for.
        shell: clap_complete::Shell,
    },
    /// Print the man page tandem(8) as roff (the package installs it; `man tandem`).
    #[command(hide = true)]
    Man,
}

/// How to reach the running daemon.
#[derive(clap::Args)]
struct DaemonArgs {
    /// The daemon's control socket [default: the config's node.control_socket, else /run/tandem/tandem.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Read the control socket path from this config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum XdpAction {
    /// Load the embedded XDP program, attach it to an interface and pin it; returns at once.
    Attach {
        /// The interface to attach to.
        #[arg(long)]
        iface: String,
        /// native, generic, or auto (native when the driver supports it, else generic).
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        mode: AttachMode,
        /// The bpffs directory to pin the program, its link and its maps in (the daemon's
        /// node.bpf_pin_dir, so that `tandem run` finds and reuses them).
        #[arg(long, default_value = lb_common::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Print the attachment as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Detach the program from an interface and remove its pins (the maps too, when no
    /// interface is left attached).
    Detach {
        /// The interface to detach from.
        #[arg(long)]
        iface: String,
        /// The bpffs directory the program was pinned in.
        #[arg(long, default_value = lb_common::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config } => check(&config),
        Command::Maps {
            json,
            pin_dir,
            config,
            verbose,
        } => maps(json, pin_dir, config, verbose),
        Command::Trace {
            vip,
            port,
            seconds,
            pin_dir,
            config,
        } => trace(TraceFilter { vip, port }, seconds, pin_dir, config),
        Command::Xdp { action } => xdp_command(action),
        Command::Import(args) => import(args),
        Command::Status {
            json,
            watch,
            socket,
            config,
        } => status(json, watch, socket, config),
        Command::Reload {
            json,
            socket,
            config,
        } => reload(json, socket, config),
        Command::Drain {
            service,
            backend,
            daemon,
        } => drain("drain", service.zip(backend), daemon),
        Command::Enable {
            service,
            backend,
            daemon,
        } => drain("enable", service.zip(backend), daemon),
        Command::Completions { shell } => completions(shell),
        Command::Man => print_bytes(&tandem::manual::render(Cli::command())),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The completion script, generated from `Cli` itself, so it knows every subcommand and option.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tandem", &mut script);
    print_bytes(&script)
}

fn print_bytes(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd: native journal entries, each event's fields as journal fields
    // (`journalctl -u tandem INSTANCE=VI_1`, `SERVICE=web`, `BACKEND=...`) and its level as
    // the priority.
    if tandem::systemd::stderr_is_journal() {
        if let Ok(journal) = tracing_journald::layer() {
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    journal
                        .with_field_prefix(None)
                        .with_syslog_identifier("tandem".to_owned()),
                )
                .init();
            return;
        }
    }
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Loads and validates a config, printing warnings; on errors prints every diagnostic.
fn load_config(path: &Path) -> Result<config::Config, ExitCode> {
    match config::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning} (warning)");
            }
            Ok(loaded.config)
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    match load_config(path) {
        Ok(config) => {
            println!(
                "{}: ok (node {}, {} VRRP instance(s), {} service(s))",
                path.display(),
                config.node.name,
                config.vrrp.len(),
                config.services.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

fn maps(
    json: bool,
    pin_dir: Option<PathBuf>,
    config_path: Option<PathBuf>,
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    let pin_dir = match pin_dir_of(pin_dir, config_path) {
        Ok(dir) => dir,
        Err(code) => return Ok(code),
    };
    let snapshot = pinned::read(&pin_dir, verbose)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", snapshot.render_text());
    }
    Ok(ExitCode::SUCCESS)
}

/// The pin directory to read: `--pin-dir`, else the one `--config` names, else the default.
fn pin_dir_of(pin_dir: Option<PathBuf>, config_path: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    match (pin_dir, config_path) {
        (Some(dir), _) => Ok(dir),
        (None, Some(path)) => load_config(&path).map(|config| config.node.bpf_pin_dir),
        (None, None) => Ok(PathBuf::from(lb_common::DEFAULT_PIN_DIR)),
    }
}

fn trace(
    filter: TraceFilter,
    seconds: u64,
    pin_dir: Option<PathBuf>,
    config_path: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let pin_dir = match pin_dir_of(pin_dir, config_path) {
        Ok(dir) => dir,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(trace_for(
        &pin_dir,
        filter,
        std::time::Duration::from_secs(seconds),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Turns tracing on, prints each decision until `duration` passes, Ctrl-C or SIGTERM, then
/// turns it off (the guard does, on every way out of here).
async fn trace_for(
    pin_dir: &Path,
    filter: TraceFilter,
    duration: std::time::Duration,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let switch = TraceSwitch::open(pin_dir)?;
    // The reader first, so that the first records after the switch are not missed.
    let mut tracer = Tracer::attach(pin_dir)?;
    let guard = switch.start(&filter)?;
    eprintln!(
        "tracing the decisions of XDP program {} ({}) in {} for {} s; Ctrl-C stops",
        tracer.program_id(),
        filter.describe(),
        pin_dir.display(),
        duration.as_secs()
    );
    let deadline = tokio::time::Instant::now() + duration;
    let mut stdout = std::io::stdout().lock();
    let mut traced = 0u64;
    let result: anyhow::Result<()> = loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break Ok(());
        }
        // Wake at least twice a second to notice a new program or another trace.
        let wait = (deadline - now).min(std::time::Duration::from_millis(500));
        let decisions = tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            decisions = tracer.next(wait) => decisions,
        };
        let decisions = match decisions {
            Ok(decisions) => decisions,
            Err(e) => break Err(e.into()),
        };
        let mut written = Ok(());
        for decision in &decisions {
            let line = decision.render(decision.wall_time(), tracer.backend_address(decision));
            written = writeln!(stdout, "{line}");
            if written.is_err() {
                break;
            }
            traced += 1;
        }
        if let Err(e) = written {
            // The reader went away (`tandem trace | head`): stop quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break Ok(());
            }
            break Err(anyhow::Error::new(e).context("writing to stdout"));
        }
        if let Err(e) = guard.check_owner() {
            break Err(e.into());
        }
        match tracer.follow_reload() {
            Ok(true) => eprintln!(
                "the daemon loaded a new XDP program (id {}): tracing that one",
                tracer.program_id()
            ),
            Ok(false) => {}
            Err(e) => break Err(e.into()),
        }
    };
    if result.is_ok() {
        // What the program logged since the last wake-up, before the switch goes off.
        for decision in tracer.read_now() {
            let line = decision.render(decision.wall_time(), tracer.backend_address(&decision));
            if writeln!(stdout, "{line}").is_err() {
                break;
            }
            traced += 1;
        }
    }
    drop(guard);
    eprintln!("{traced} decision(s) traced; tracing is off");
    result
}

fn xdp_command(action: XdpAction) -> anyhow::Result<ExitCode> {
    match action {
        XdpAction::Attach {
            iface,
            mode,
            pin_dir,
            json,
        } => {
            let attachment = loader::attach(&iface, mode, &pin_dir)?;
            if json {
                println!("{}", serde_json::to_string(&attachment)?);
            } else {
                println!(
                    "attached XDP program {} to {} in {} mode; pinned in {}{}",
                    attachment.program_id,
                    attachment.interface,
                    attachment.mode,
                    attachment.pin_dir.display(),
                    if attachment.reused_maps {
                        " (reused the pinned maps)"
                    } else {
                        ""
                    }
                );
            }
        }
        XdpAction::Detach { iface, pin_dir } => {
            let removed_dir = loader::detach(&iface, &pin_dir)?;
            println!(
                "detached the XDP program from {iface}{}",
                if removed_dir {
                    format!("; removed {}", pin_dir.display())
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run(path: &Path) -> anyhow::Result<ExitCode> {
    abort_on_panic();
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(tandem::node::run(path, config))?;
    Ok(ExitCode::SUCCESS)
}

/// A panic anywhere in the daemon ends the process. tokio would otherwise catch a task's panic
/// and run on without that task (a proxy worker that serves nothing, a VRRP instance that no
/// longer adverts while its VIP stays up); a dead process is what systemd restarts, and its
/// `ExecStopPost=` releases the VIPs. The message goes to the journal first.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("tandem: a task panicked; aborting so that the node is restarted clean");
        std::process::abort();
    }));
}

/// The control socket to talk to: `--socket`, else the one `--config` names, else the default.
fn control_socket(
    socket: Option<PathBuf>,
    config_path: Option<PathBuf>,
) -> Result<PathBuf, ExitCode> {
    match (socket, config_path) {
        (Some(socket), _) => Ok(socket),
        (None, Some(path)) => load_config(&path).map(|config| config.node.control_socket),
        (None, None) => Ok(PathBuf::from(config::DEFAULT_CONTROL_SOCKET)),
    }
}

fn drain(
    verb: &str,
    backend: Option<(String, String)>,
    daemon: DaemonArgs,
) -> anyhow::Result<ExitCode> {
    let socket = match control_socket(daemon.socket, daemon.config) {
        Ok(socket) => socket,
        Err(code) => return Ok(code),
    };
    let command = match backend {
        Some((service, backend)) => format!("{verb} {service} {backend}"),
        None => verb.to_owned(),
    };
    let body = tandem::control::client::request(&socket, &command)?;
    println!(
        "{}",
        body.get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("done")
    );
    Ok(ExitCode::SUCCESS)
}

fn reload(
    json: bool,
    socket: Option<PathBuf>,
    config_path: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let socket = match control_socket(socket, config_path) {
        Ok(socket) => socket,
        Err(code) => return Ok(code),
    };
    let body = tandem::control::client::request(&socket, "reload")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let report: tandem::node::reload::ReloadReport = serde_json::from_value(body)
        .context("the daemon's answer has an unexpected shape (a different tandem version?)")?;
    for warning in &report.warnings {
        eprintln!("{warning} (warning)");
    }
    if report.changes.is_empty() {
        println!(
            "reloaded {}: no change to the services",
            report.config.display()
        );
    } else {
        println!(
            "reloaded {}: {} change{}",
            report.config.display(),
            report.changes.len(),
            if report.changes.len() == 1 { "" } else { "s" }
        );
        for change in &report.changes {
            println!("  {change}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(
    json: bool,
    watch: bool,
    socket: Option<PathBuf>,
    config_path: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    use tandem::control::{client, render, NodeStatus};

    let socket = match control_socket(socket, config_path) {
        Ok(socket) => socket,
        Err(code) => return Ok(code),
    };
    let colour = if std::io::stdout().is_terminal() {
        render::Colour::On
    } else {
        render::Colour::Off
    };
    loop {
        let body = client::request(&socket, "status")?;
        if json {
            println!("{}", serde_json::to_string_pretty(&body)?);
        } else {
            let status: NodeStatus = serde_json::from_value(body).context(
                "the daemon's status has an unexpected shape (a different tandem version?)",
            )?;
            if watch && colour == render::Colour::On {
                // Clear the screen and go home, so the screen redraws in place.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render::render(&status, colour));
        }
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

const IMPORT_HELP: &str = "\
Writes one node's tandem.toml: give the pound.cfg and that node's keepalived.conf (import lb1's
and lb2's keepalived files one at a time). Every directive that cannot be translated is listed
with FILE:LINE and what to do about it, on stderr and in a comment block at the top of the
output; nothing is dropped silently.

Host names (e.g. `Address http1.example.com` in a BackEnd) are written as names, which the
node resolves when it runs (at start and every resolve_interval); the import itself does no
lookup. --map NAME=ADDR or --hosts FILE write an address instead.

Exit status:
  0  everything was translated, and the output passes `tandem check`
  1  a file cannot be read, or is not valid Pound or keepalived syntax (FILE:LINE: message)
  2  something was listed as not translated, or the output does not pass `tandem check` yet
     (the output is written all the same); also a command-line usage error

Example:
  tandem import --pound /etc/pound/pound.cfg --keepalived /etc/keepalived/keepalived.conf \\
      --node lb1 --map http1.example.com=198.18.0.102 --output /etc/tandem/tandem.toml";

#[derive(clap::Args)]
struct ImportArgs {
    /// Pound's configuration file.
    #[arg(long, value_name = "FILE", required_unless_present = "keepalived")]
    pound: Option<PathBuf>,
    /// This node's keepalived configuration file.
    #[arg(long, value_name = "FILE")]
    keepalived: Option<PathBuf>,
    /// The node's name [default: keepalived's router_id, else the VRRP interface].
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Write this address for a host name the files use, instead of the name (repeatable).
    #[arg(long = "map", value_name = "NAME=ADDR", value_parser = import::parse_map)]
    maps: Vec<(String, std::net::Ipv4Addr)>,
    /// A hosts file (/etc/hosts format) with addresses to write for host names; --map wins.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// Write tandem.toml here instead of to standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `tandem import`: see [`IMPORT_HELP`] for what it does and its exit status.
fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    use tandem::import::{Options, Source};

    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut hosts = match &args.hosts {
        Some(path) => import::parse_hosts(&read(path)?),
        None => Default::default(),
    };
    hosts.extend(args.maps);
    let load = |path: &Option<PathBuf>| -> anyhow::Result<Option<(String, String)>> {
        path.as_ref()
            .map(|path| Ok((path.display().to_string(), read(path)?)))
            .transpose()
    };
    let pound = load(&args.pound)?;
    let keepalived = load(&args.keepalived)?;
    fn source(file: &Option<(String, String)>) -> Option<Source<'_>> {
        file.as_ref().map(|(label, text)| Source { label, text })
    }
    let options = Options {
        node: args.node,
        hosts,
    };
    let imported = match import::import(source(&pound), source(&keepalived), &options) {
        Ok(imported) => imported,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for finding in &imported.untranslated {
        eprintln!("{}", finding.labelled("not translated"));
    }
    for finding in &imported.notes {
        eprintln!("{}", finding.labelled("note"));
    }
    let written_to = match &args.output {
        Some(path) => {
            std::fs::write(path, &imported.toml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            path.clone()
        }
        None => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(imported.toml.as_bytes())
                .and_then(|()| stdout.flush())
                .context("cannot write to standard output")?;
            PathBuf::from("<stdout>")
        }
    };
    // The output is checked like any config, so what still needs a hand shows up here too.
    let loads = match config::parse(&imported.toml, &written_to) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            true
        }
        Err(diagnostics) => {
            eprintln!(
                "tandem import: the output does not pass `tandem check` yet (see the list \
                 above):\n{diagnostics}"
            );
            false
        }
    };
    if imported.is_complete() && loads {
        return Ok(ExitCode::SUCCESS);
    }
    if !imported.is_complete() {
        eprintln!(
            "tandem import: {} directive(s) not translated; the list is also at the top of the \
             output",
            imported.untranslated.len()
        );
    }
    Ok(ExitCode::from(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, at any depth, says what it does, and so does each of its arguments:
    /// `--help` is the first documentation an operator reads.
    #[test]
    fn every_subcommand_and_argument_has_help_text() {
        fn visit(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if command.get_about().is_none() {
                missing.push(format!("`{path}` has no description"));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("`{path}` argument `{id}` has no help"));
                }
            }
            for sub in command.get_subcommands() {
                visit(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let command = Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        visit(&command, "tandem", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
        assert!(
            command.get_subcommands().count() >= 9,
            "run, check, maps, status, reload, drain, enable, xdp, import"
        );
    }

    /// tandem(8) has a subsection for every visible command at any depth, and each lists
    /// that command's options: a subcommand or option added to the CLI reaches the man page
    /// without anyone writing it there.
    #[test]
    fn the_man_page_documents_every_subcommand_and_its_options() {
        let page = String::from_utf8(tandem::manual::render(Cli::command())).expect("UTF-8");
        assert!(page.contains(".TH tandem 8 "), "section 8: {page}");
        // `help` is clap's own subcommand, which the page leaves out.
        let mut command = Cli::command().disable_help_subcommand(true);
        command.build();
        fn check(command: &clap::Command, page: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
                if sub.has_subcommands() {
                    check(sub, page, missing);
                    continue;
                }
                let name = sub.get_bin_name().expect("built");
                let Some((_, section)) = page.split_once(&format!(".SS \"{name}\"\n")) else {
                    missing.push(format!("no subsection for `{name}`"));
                    continue;
                };
                let section = section.split(".SS ").next().unwrap_or_default();
                for arg in sub.get_arguments().filter(|arg| !arg.is_hide_set()) {
                    let shown = match arg.get_long() {
                        Some(long) => format!("\\-\\-{}", long.replace('-', "\\-")),
                        // Positional: shown by its value name, as in `--help`.
                        None => arg
                            .get_value_names()
                            .and_then(|names| names.first())
                            .map(|name| name.to_string())
                            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase()),
                    };
                    if !section.contains(&shown) {
                        missing.push(format!("`{name}` without {shown}"));
                    }
                }
            }
        }
        let mut missing = Vec::new();
        check(&command, &page, &mut missing);
        assert!(missing.is_empty(), "{}\n\n{page}", missing.join("\n"));
        assert!(
            page.contains(".SS \"tandem xdp attach\""),
            "nested commands too"
        );
        assert!(
            !page.contains(".SS \"tandem man\""),
            "hidden commands stay out"
        );
    }
}

/// mimalloc instead of glibc's malloc: on loopback (interleaved A/B, 64 connections) about 8%
/// less CPU per request for HTTP/1.1 and HTTP/2 and 5-9% more requests/s. Built with `no_thp`:
/// with transparent huge pages on (as on these machines), its arenas took 2 MiB pages and its
/// RSS at start doubled (20 MiB against glibc's 10); without them it uses what glibc does
/// (docs/benchmarks.md, Proxy profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
