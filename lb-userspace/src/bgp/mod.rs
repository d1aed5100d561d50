//! Active-active: the node announces its `[bgp] vips` to routers over BGP, through a BIRD 2
//! that it runs as a child, while it can serve them.
//!
//! - `bird`: the config Tandem writes for BIRD and the client of BIRD's control socket.
//! - `readiness`: whether a VIP may be announced (the rule, from the node's status).
//! - this file: BIRD's keeper (a thread that starts BIRD, restarts it if it dies, and makes
//!   sure it dies with Tandem), the VIPs on the loopback interface, and the announcer (a task
//!   that compares what should be announced with what is, every half second and at once on
//!   `tandem drain`, and enables or disables the VIPs' static protocols to match).
//!
//! BIRD cannot outlive Tandem: it is started with PR_SET_PDEATHSIG from a thread that lives
//! as long as BIRD does, so when Tandem is killed BIRD gets SIGTERM, its sessions close, and
//! the routers withdraw this node's routes at once. (keepalived's VIP, by contrast, stays on
//! the interface of a killed daemon.) The death signal follows the thread that forked, not the
//! process, which is why the fork happens on a thread of its own and not on a tokio worker.

pub mod bird;
pub mod readiness;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Bgp;
use crate::dataplane::Dataplane;
use crate::proxy::ProxyHandle;
use crate::vrrp::link::Netlink;
use bird::Control;

/// How often the announcer checks readiness and reads the sessions.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(500);
/// How long BIRD waits before it is started again after it exited.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// On a graceful stop, how long the withdrawal may take before the stop goes on anyway.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(3);
/// On a graceful stop, how long the node goes on accepting after BIRD sent the withdrawals:
/// the routers must apply them (a FIB update, a route reflector in between) before the
/// listeners close, or the connections they still send here are refused. Measured in the
/// lab: without it, one new connection in three graceful stops was refused 4 ms after the
/// SIGTERM.
const WITHDRAW_GRACE: Duration = Duration::from_secs(2);

/// `tandem status`'s BGP section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpStatus {
    pub local_as: u32,
    pub router_id: std::net::Ipv4Addr,
    /// "running" (with BIRD's pid), or why BIRD does not run.
    pub bird: String,
    /// `tandem drain` of the node: every VIP withdrawn until `tandem enable`.
    pub drained: bool,
    pub sessions: Vec<SessionStatus>,
    pub vips: Vec<VipStatus>,
}

/// One BGP session, as BIRD reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub peer: IpAddr,
    pub remote_as: u32,
    /// BGP's state: "Established", "Active", "Connect", "Idle", ... ("unknown" before BIRD
    /// answers).
    pub state: String,
    /// What BIRD adds: the last error, if any.
    pub info: String,
}

impl SessionStatus {
    pub fn established(&self) -> bool {
        self.state == "Established"
    }
}

/// One VIP: whether it is announced, and why not when it is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub vip: IpAddr,
    pub announced: bool,
    /// Empty while announced.
    pub reason: String,
}

/// Where the announcer reads whether the node can serve.
pub struct Sources {
    pub proxy: Weak<ProxyHandle>,
    pub dataplane: Arc<dyn Dataplane>,
    /// The built-in proxy check; `None` when the node has no HTTP service.
    pub proxy_up: Option<watch::Receiver<bool>>,
}

/// The running BGP side of the node.
pub struct BgpSpeaker {
    shared: Arc<Shared>,
    keeper: Mutex<Option<std::thread::JoinHandle<()>>>,
    announcer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop_announcer: CancellationToken,
    netlink: Netlink,
    loopback: u32,
}

struct Shared {
    config: Bgp,
    socket: PathBuf,
    status: Mutex<BgpStatus>,
    /// Set by `tandem drain` and by the stop: announce nothing.
    withdraw_all: AtomicBool,
    /// Wakes the announcer before its next tick.
    wake: Notify,
    /// Set once everything is withdrawn after `withdraw_all` was set.
    withdrawn: Notify,
    /// BIRD's pid while it runs, else 0.
    bird_pid: AtomicI32,
    /// Tells the keeper not to start BIRD again.
    stopping: AtomicBool,
}

impl BgpSpeaker {
    /// Puts the VIPs on the loopback interface (so the proxy accepts on them and the kernel
    /// takes their packets), writes BIRD's config under `run_dir`, starts BIRD and the
    /// announcer. Nothing is announced until a VIP is ready.
    pub async fn start(
        config: &Bgp,
        run_dir: &Path,
        sources: Sources,
        netlink: Netlink,
    ) -> anyhow::Result<BgpSpeaker> {
        let loopback = loopback_index()?;
        for &vip in &config.vips {
            netlink
                .add_vip(loopback, vip)
                .await
                .with_context(|| format!("putting BGP VIP {vip} on the loopback interface"))?;
        }
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating BIRD's directory {}", run_dir.display()))?;
        let config_path = run_dir.join("bird.conf");
        let socket = run_dir.join("bird.ctl");
        std::fs::write(&config_path, bird::render_config(config))
            .with_context(|| format!("writing BIRD's config {}", config_path.display()))?;
        let bird = bird_binary()?;
        check_bird_config(&bird, &config_path)?;

        let shared = Arc::new(Shared {
            status: Mutex::new(BgpStatus {
                local_as: config.local_as,
                router_id: config.router_id,
                bird: "starting".to_owned(),
                drained: false,
                sessions: config
                    .peers
                    .iter()
                    .map(|peer| SessionStatus {
                        peer: peer.address,
                        remote_as: peer.remote_as,
                        state: "unknown".to_owned(),
                        info: String::new(),
                    })
                    .collect(),
                vips: config
                    .vips
                    .iter()
                    .map(|&vip| VipStatus {
                        vip,
                        announced: false,
                        reason: "BIRD is starting".to_owned(),
                    })
                    .collect(),
            }),
            config: config.clone(),
            socket,
            withdraw_all: AtomicBool::new(false),
            wake: Notify::new(),
            withdrawn: Notify::new(),
            bird_pid: AtomicI32::new(0),
            stopping: AtomicBool::new(false),
        });
        let keeper = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("bird-keeper".to_owned())
                .spawn(move || keep_bird_running(&shared, &bird, &config_path))
                .context("starting the thread that runs BIRD")?
        };
        let stop_announcer = CancellationToken::new();
        let announcer = tokio::spawn(announce(
            Arc::clone(&shared),
            sources,
            stop_announcer.clone(),
        ));
        info!(vips = ?config.vips, peers = config.peers.len(), local_as = config.local_as, "BGP: BIRD started; VIPs are announced once they can be served");
        Ok(BgpSpeaker {
            shared,
            keeper: Mutex::new(Some(keeper)),
            announcer: Mutex::new(Some(announcer)),
            stop_announcer,
            netlink,
            loopback,
        })
    }

    pub fn status(&self) -> BgpStatus {
        lock(&self.shared.status).clone()
    }

    /// `tandem drain` (true) and `tandem enable` (false) of the node: withdraw every VIP, or
    /// announce again those that are ready. Returns once the announcer has acted on it.
    pub async fn set_drained(&self, drained: bool) -> anyhow::Result<()> {
        self.shared.withdraw_all.store(drained, Ordering::SeqCst);
        lock(&self.shared.status).drained = drained;
        if drained {
            self.wait_withdrawn().await
        } else {
            self.shared.wake.notify_one();
            Ok(())
        }
    }

    /// The first step of a graceful stop: withdraw every VIP and wait (a bounded time) until
    /// BIRD has sent the withdrawals. The proxy and the data plane go on serving what arrives.
    pub async fn withdraw_for_stop(&self) {
        let announced = !self.all_withdrawn();
        self.shared.withdraw_all.store(true, Ordering::SeqCst);
        match self.wait_withdrawn().await {
            Ok(()) if announced => {
                info!(grace = ?WITHDRAW_GRACE, "BGP: every VIP withdrawn; accepting a little longer while the routers apply it, then open connections finish");
                tokio::time::sleep(WITHDRAW_GRACE).await;
            }
            Ok(()) => info!("BGP: every VIP withdrawn; open connections finish"),
            Err(err) => warn!("BGP: {err:#}; stopping anyway (BIRD's exit closes the sessions)"),
        }
    }

    async fn wait_withdrawn(&self) -> anyhow::Result<()> {
        let withdrawn = self.shared.withdrawn.notified();
        tokio::pin!(withdrawn);
        withdrawn.as_mut().enable();
        if self.all_withdrawn() {
            return Ok(());
        }
        self.shared.wake.notify_one();
        tokio::time::timeout(WITHDRAW_TIMEOUT, withdrawn)
            .await
            .map_err(|_| anyhow!("the VIPs were not withdrawn within {WITHDRAW_TIMEOUT:?}"))
    }

    fn all_withdrawn(&self) -> bool {
        lock(&self.shared.status)
            .vips
            .iter()
            .all(|vip| !vip.announced)
    }

    /// The end of the stop: BIRD is told to stop (its sessions close with a Cease), and the
    /// VIPs leave the loopback interface.
    pub async fn stop(&self) {
        self.shared.withdraw_all.store(true, Ordering::SeqCst);
        self.stop_announcer.cancel();
        let announcer = lock(&self.announcer).take();
        if let Some(task) = announcer {
            let _ = task.await;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        let pid = self.shared.bird_pid.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) with a pid this process started and has not reaped (the keeper
            // reaps it only after it exits, and stores 0 first).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let keeper = lock(&self.keeper).take();
        if let Some(keeper) = keeper {
            let _ = tokio::task::spawn_blocking(move || keeper.join()).await;
        }
        for &vip in &self.shared.config.vips {
            if let Err(err) = self.netlink.remove_vip(self.loopback, vip).await {
                warn!("removing BGP VIP {vip} from the loopback interface: {err:#}");
            }
        }
        let _ = std::fs::remove_file(&self.shared.socket);
        info!("BGP: BIRD stopped, VIPs removed from the loopback interface");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn loopback_index() -> anyhow::Result<u32> {
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        return Err(anyhow!(
            "the loopback interface lo is missing; BGP VIPs are put on it"
        ));
    }
    Ok(index)
}

/// BIRD 2's daemon: on PATH, or where Debian's bird2 puts it (sbin may be off a user's PATH).
fn bird_binary() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("bird"))
        .find(|candidate| candidate.is_file());
    on_path.ok_or_else(|| {
        anyhow!(
            "[bgp] needs BIRD 2, which is not installed: `apt install bird2` (or `cargo xtask \
             setup`), then start tandem again"
        )
    })
}

/// `bird -p`: parses the config and exits, so a mistake is an error at start, not a BIRD that
/// exits over and over.
fn check_bird_config(bird: &Path, config: &Path) -> anyhow::Result<()> {
    let output = Command::new(bird)
        .arg("-p")
        .arg("-c")
        .arg(config)
        .output()
        .with_context(|| format!("running {}", bird.display()))?;
    if !output.status.success() {
        return Err(anyhow!(
            "BIRD refused the config Tandem wrote ({}): {}",
            config.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// The keeper thread: runs BIRD in the foreground until `stopping`, starting it again a
/// second after it exits. BIRD's log (on its stderr) goes to Tandem's log.
fn keep_bird_running(shared: &Shared, bird: &Path, config: &Path) {
    let parent = std::process::id();
    while !shared.stopping.load(Ordering::SeqCst) {
        // Read before each fork: the daemon gives up capabilities after start-up.
        let gained = crate::capabilities::gained_by_exec();
        let mut command = Command::new(bird);
        command
            .arg("-f")
            .arg("-c")
            .arg(config)
            .arg("-s")
            .arg(&shared.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for variable in crate::systemd::CHILD_ENV_REMOVE {
            command.env_remove(variable);
        }
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(move || {
                // Exec as root grants the bounding set; had BIRD gained a capability that
                // Tandem gave up (CAP_BPF), Linux would clear the death signal set below.
                for &capability in &gained {
                    libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0);
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Tandem died between fork and prctl: the signal will never come.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                lock(&shared.status).bird = format!("not running: cannot start it: {err}");
                warn!("BGP: cannot start BIRD ({}): {err}", bird.display());
                std::thread::sleep(RESTART_DELAY);
                continue;
            }
        };
        let pid = child.id() as i32;
        shared.bird_pid.store(pid, Ordering::SeqCst);
        lock(&shared.status).bird = format!("running (pid {pid})");
        if let Some(stderr) = child.stderr.take() {
            let _ = std::thread::Builder::new()
                .name("bird-log".to_owned())
                .spawn(move || forward_log(stderr));
        }
        let exit = child.wait();
        shared.bird_pid.store(0, Ordering::SeqCst);
        if shared.stopping.load(Ordering::SeqCst) {
            lock(&shared.status).bird = "stopped".to_owned();
            break;
        }
        let exit = match exit {
            Ok(status) => status.to_string(),
            Err(err) => err.to_string(),
        };
        warn!("BGP: BIRD exited ({exit}); starting it again in {RESTART_DELAY:?}");
        lock(&shared.status).bird = format!("not running: exited ({exit}), restarting");
        std::thread::sleep(RESTART_DELAY);
    }
}

/// BIRD's log lines ("2026-12-07 22:33:07.912 <INFO> Enabling protocol vip_0") as Tandem's.
fn forward_log(stderr: std::process::ChildStderr) {
    use std::io::BufRead as _;
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let message = line
            .split_once(" <")
            .map_or(line.as_str(), |(_, rest)| rest);
        if message.starts_with("ERR")
            || message.starts_with("WARN")
            || message.starts_with("BUG")
            || message.starts_with("FATAL")
        {
            warn!(target: "bird", "<{message}");
        } else {
            info!(target: "bird", "<{message}");
        }
    }
}

/// The announcer: every tick (or when woken), makes BIRD announce exactly the VIPs that are
/// ready, and reads the sessions' states for status.
async fn announce(shared: Arc<Shared>, sources: Sources, stop: CancellationToken) {
    let mut control: Option<Control> = None;
    let vips = shared.config.vips.clone();
    loop {
        // What should be announced, and why not.
        let reasons: Vec<Option<String>> = if shared.withdraw_all.load(Ordering::SeqCst) {
            let why = if lock(&shared.status).drained {
                "the node is drained (`tandem enable` to announce again)"
            } else {
                "the node is stopping"
            };
            vips.iter().map(|_| Some(why.to_owned())).collect()
        } else {
            let http = sources
                .proxy
                .upgrade()
                .map(|proxy| proxy.service_status())
                .unwrap_or_default();
            let dataplane = sources.dataplane.status();
            let proxy_up = sources.proxy_up.as_ref().is_none_or(|up| *up.borrow());
            let inputs = readiness::Inputs {
                http: &http,
                dataplane: &dataplane,
                proxy_up,
            };
            vips.iter()
                .map(|&vip| readiness::why_not(vip, &inputs))
                .collect()
        };

        if control.is_none() {
            control = connect(&shared).await;
        }
        if let Some(connection) = control.as_mut() {
            if let Err(err) = sync_with_bird(&shared, connection, &reasons).await {
                warn!("BGP: {err:#}; reconnecting to BIRD");
                control = None;
            }
        } else {
            let mut status = lock(&shared.status);
            for vip in &mut status.vips {
                vip.announced = false;
                vip.reason = "BIRD does not answer on its control socket".to_owned();
            }
        }
        if shared.withdraw_all.load(Ordering::SeqCst)
            && lock(&shared.status).vips.iter().all(|vip| !vip.announced)
        {
            shared.withdrawn.notify_waiters();
        }

        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(ANNOUNCE_INTERVAL) => {}
        }
    }
}

async fn connect(shared: &Shared) -> Option<Control> {
    if shared.bird_pid.load(Ordering::SeqCst) == 0 {
        return None;
    }
    // BIRD creates its socket a moment after it starts: no answer yet is not an error.
    Control::connect(&shared.socket).await.ok()
}

/// Reads which VIP protocols BIRD has up, enables or disables those that differ from
/// `reasons` (`None`: announce), and records the sessions and the VIPs in status.
async fn sync_with_bird(
    shared: &Shared,
    control: &mut Control,
    reasons: &[Option<String>],
) -> anyhow::Result<()> {
    let protocols = bird::parse_protocols(&control.command("show protocols").await?);
    let is_up = |name: &str| {
        protocols
            .iter()
            .any(|protocol| protocol.name == name && protocol.state == "up")
    };
    let mut announced = Vec::with_capacity(reasons.len());
    for (index, reason) in reasons.iter().enumerate() {
        let name = bird::vip_protocol(index);
        let vip = shared.config.vips[index];
        let up = is_up(&name);
        match (reason, up) {
            (None, false) => {
                control.command(&format!("enable {name}")).await?;
                info!(%vip, "BGP: announcing");
                announced.push(true);
            }
            (Some(reason), true) => {
                control.command(&format!("disable {name}")).await?;
                info!(%vip, reason = reason.as_str(), "BGP: withdrawing");
                announced.push(false);
            }
            (None, true) => announced.push(true),
            (Some(_), false) => announced.push(false),
        }
    }
    let mut status = lock(&shared.status);
    for (index, session) in status.sessions.iter_mut().enumerate() {
        if let Some(line) = protocols
            .iter()
            .find(|protocol| protocol.name == bird::peer_protocol(index))
        {
            let mut words = line.info.splitn(2, ' ');
            session.state = words.next().unwrap_or("").to_owned();
            session.info = words.next().unwrap_or("").trim().to_owned();
            if session.state.is_empty() {
                session.state = line.state.clone();
            }
        }
    }
    for ((vip, announced), reason) in status.vips.iter_mut().zip(announced).zip(reasons) {
        vip.announced = announced;
        vip.reason = reason.clone().unwrap_or_default();
    }
    Ok(())
}
