//! The `tandem` command: runs a node (`run`), validates its config (`check`), and inspects the
//! kernel data plane (`maps`, `xdp attach|detach`). Each subcommand is a thin shell over the
//! library modules; errors reach the user as one line that says what to do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tandem::config::{self, DataplaneMode};
use tandem::dataplane::{pinned, xdp, AttachMode};
use tracing::{info, warn};

const DEFAULT_CONFIG: &str = "/etc/tandem/tandem.toml";

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "High-availability load balancer: L7 proxy, VRRP failover and an XDP fast path in one daemon"
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
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file; errors are printed as FILE:LINE:COL: message (exit 1).
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
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
    },
    /// Attach or detach the XDP program by hand (what `cargo xtask build-and-load` uses).
    Xdp {
        #[command(subcommand)]
        action: XdpAction,
    },
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
        #[arg(long, default_value = lb_common::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Print the attachment as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Detach the program from an interface and remove its pins (the maps too, when no
    /// interface is left attached).
    Detach {
        #[arg(long)]
        iface: String,
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
        } => maps(json, pin_dir, config),
        Command::Xdp { action } => xdp_command(action),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
) -> anyhow::Result<ExitCode> {
    let pin_dir = match (pin_dir, config_path) {
        (Some(dir), _) => dir,
        (None, Some(path)) => match load_config(&path) {
            Ok(config) => config.node.bpf_pin_dir,
            Err(code) => return Ok(code),
        },
        (None, None) => PathBuf::from(lb_common::DEFAULT_PIN_DIR),
    };
    let snapshot = pinned::read(&pin_dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", snapshot.render_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn xdp_command(action: XdpAction) -> anyhow::Result<ExitCode> {
    match action {
        XdpAction::Attach {
            iface,
            mode,
            pin_dir,
            json,
        } => {
            let attachment = xdp::attach(&iface, mode, &pin_dir)?;
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
            let removed_dir = xdp::detach(&iface, &pin_dir)?;
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
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_node(path, config))?;
    Ok(ExitCode::SUCCESS)
}

async fn run_node(path: &Path, config: config::Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let node = &config.node;
    info!(config = %path.display(), node = %node.name, interface = %node.interface, dataplane = node.dataplane.as_str(), "loaded configuration");
    for instance in &config.vrrp {
        info!(instance = %instance.name, vrid = instance.virtual_router_id, priority = instance.priority, version = instance.version, vips = ?instance.virtual_ipaddress, "VRRP instance");
    }
    for service in &config.services {
        info!(service = %service.name, listen = %service.listen, mode = service.mode.as_str(), backends = service.backends.len(), "service");
    }

    // Signals are hooked before the data plane is touched, so a SIGTERM during start-up still
    // goes through the clean stop below.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let attach_mode = match node.dataplane {
        DataplaneMode::Xdp => Some(AttachMode::Auto),
        DataplaneMode::XdpGeneric => Some(AttachMode::Generic),
        DataplaneMode::None => None,
    };
    let attachment = match attach_mode {
        Some(mode) => match xdp::attach(&node.interface, mode, &node.bpf_pin_dir) {
            Ok(a) => {
                info!(interface = %a.interface, mode = %a.mode, program_id = a.program_id, pin_dir = %a.pin_dir.display(), "XDP data plane attached");
                Some(a)
            }
            Err(error) => {
                warn!(%error, "XDP data plane unavailable; the node runs without the kernel fast path");
                None
            }
        },
        None => {
            info!("dataplane = \"none\": the node runs without the kernel fast path");
            None
        }
    };

    info!("running; stop with SIGINT or SIGTERM");
    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(signal = signal_name, "stopping");
    if let Some(a) = attachment {
        match xdp::detach(&a.interface, &a.pin_dir) {
            Ok(_) => info!(interface = %a.interface, "XDP data plane detached"),
            Err(error) => warn!(%error, "detaching the XDP data plane"),
        }
    }
    info!("stopped");
    Ok(())
}
