//! The async shell around one instance's [`Machine`]: it feeds the machine received adverts,
//! expired timers and tracker changes, and carries out what the machine returns (send an
//! advert, take or give up the virtual addresses, announce them, run the notify script).
//!
//! Order on a transition (DESIGN.md): to Master, the node's [`Mastership`] hook runs first (the
//! data plane is filled), then the VIPs are added, then gratuitous ARPs go out; leaving Master,
//! the VIPs go first and the hook runs after. Every received packet is either handled or
//! counted under a drop reason shown by `tandem status`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::accept::{self, Verdict};
use super::held::HeldVips;
use super::link::{self, ArpSender, InterfaceInfo, Netlink};
use super::machine::{Action, Event, Machine, Settings, State};
use super::priority::{self, TrackerState};
use super::socket::VrrpSocket;
use super::wire::{self, Advert, ChecksumMode, DropReason, Password, Version};
use crate::config::{VrrpAuthentication, VrrpInstance};

/// How long an instance whose VIP could not be added stays in Fault before it tries again.
const VIP_RETRY: Duration = Duration::from_secs(5);
/// Distinct warnings an instance remembers having logged.
const MAX_WARNINGS: usize = 64;
/// How long a notify script may run before it is killed (keepalived's scripts have
/// `script_timeout`; a notify script that hangs must not pile up a process per transition).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the node does around a change of mastership; the instance awaits each call.
pub trait Mastership: Send + Sync {
    /// Before the VIPs are added: make the node ready to serve them (fill the data plane).
    fn becoming_master(&self, instance: &str) -> BoxFuture<'_, ()>;
    /// After the VIPs are removed: stop serving them (empty the data plane).
    fn left_master(&self, instance: &str) -> BoxFuture<'_, ()>;
}

/// One instance as `tandem status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    pub version: u8,
    pub state: String,
    pub configured_priority: u8,
    pub effective_priority: u8,
    /// The current master's address as this node knows it.
    pub master: Option<Ipv4Addr>,
    pub virtual_ipaddress: Vec<Ipv4Addr>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Received packets dropped, by reason (only reasons seen at least once).
    pub drops: BTreeMap<String, u64>,
    /// Seconds since the Unix epoch of the last transition.
    pub last_transition_unix: Option<f64>,
    pub transitions: u64,
    /// Why the instance is in Fault when it is not a tracker's doing (a VIP that could not be
    /// added), until the next try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// A running instance: its status, readable at any time.
#[derive(Clone)]
pub struct InstanceHandle {
    name: String,
    status: Arc<Mutex<InstanceStatus>>,
    state: watch::Receiver<State>,
    /// The configured priority, which a reload may change.
    priority: Arc<watch::Sender<u8>>,
}

impl InstanceHandle {
    pub fn status(&self) -> InstanceStatus {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Follows the instance's state (tests and the metrics use it).
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A reload changed the configured priority (1..=254; the owner's 255 needs a restart):
    /// the effective priority follows at once (trackers' weights applied), and the next
    /// adverts carry it, so lowering the master's priority below its peer's hands the VIP
    /// over as keepalived's reload does.
    pub fn set_priority(&self, priority: u8) {
        self.priority.send_replace(priority);
    }
}

/// Everything an instance needs from the node.
pub struct Resources {
    pub netlink: Netlink,
    pub mastership: Arc<dyn Mastership>,
    /// The built-in proxy check, if the node runs a proxy.
    pub proxy_up: Option<watch::Receiver<bool>>,
    /// Where the VIPs about to be added are written down, for the release step.
    pub held: HeldVips,
}

/// Prepares the instance (removes VIPs a crashed run left, sets arp_announce, opens sockets)
/// and spawns its task. The task ends after `shutdown` is cancelled and the instance has sent
/// its priority-0 advert and removed its VIPs; await the returned join handle for that.
pub async fn start(
    config: VrrpInstance,
    resources: Resources,
    shutdown: CancellationToken,
) -> anyhow::Result<(InstanceHandle, tokio::task::JoinHandle<()>)> {
    // Without it the instance would become master and fail to add its VIP: a master that
    // holds nothing, which is worse than a node that refuses to start.
    let net_admin = crate::capabilities::Capability::NetAdmin;
    if !crate::capabilities::has(net_admin) {
        anyhow::bail!(
            "adding and removing the virtual addresses on {} needs {}; run tandem as root or \
             with the capabilities of dist/tandem.service",
            config.interface,
            net_admin.name()
        );
    }
    let password = match &config.authentication {
        None => None,
        Some(VrrpAuthentication::Pass { password }) => {
            Some(Password::new(password.as_bytes()).ok_or_else(|| {
                anyhow::anyhow!(
                    "[[vrrp]] {}: the PASS password must be 1 to {} bytes",
                    config.name,
                    Password::MAX_LEN
                )
            })?)
        }
    };
    let v4 = Ipv4Addresses::of(&config)?;
    let netlink = resources.netlink.clone();
    let interface = netlink.interface(&config.interface, &v4.vips).await?;
    // A node killed with SIGKILL could not remove its VIPs; holding them while not master
    // would answer ARP for them and steal clients from the real master.
    for &vip in &v4.vips {
        if netlink.remove_vip(interface.index, vip).await? {
            warn!(
                instance = config.name,
                "removed virtual address {vip} left on {} by an earlier run", interface.name
            );
        }
    }
    if let Err(err) = link::prefer_own_address_in_arp(&interface.name) {
        warn!(
            instance = config.name,
            "cannot set arp_announce=2 on {}: {err}; the node may announce a VIP it does not hold",
            interface.name
        );
    }
    let socket = VrrpSocket::open(&interface, &v4.unicast_peer).map_err(|err| {
        anyhow::anyhow!(
            "cannot open the VRRP socket on {}: {err} (it needs CAP_NET_RAW)",
            interface.name
        )
    })?;
    let arp = ArpSender::open(&interface).map_err(|err| {
        anyhow::anyhow!(
            "cannot open a packet socket on {} for gratuitous ARP: {err} (it needs CAP_NET_RAW)",
            interface.name
        )
    })?;
    let trackers = super::track::spawn(
        &config.name,
        &config.track,
        resources.proxy_up.clone(),
        shutdown.clone(),
    );
    let settings = Settings::from_config(&config, interface.primary_address);
    let machine = Machine::new(settings);
    let status = Arc::new(Mutex::new(InstanceStatus {
        name: config.name.clone(),
        interface: interface.name.clone(),
        virtual_router_id: config.virtual_router_id,
        version: config.version,
        state: state_name(machine.state()).to_owned(),
        configured_priority: config.priority,
        effective_priority: machine.effective_priority(),
        master: None,
        virtual_ipaddress: v4.vips.clone(),
        adverts_sent: 0,
        adverts_received: 0,
        drops: BTreeMap::new(),
        last_transition_unix: None,
        transitions: 0,
        fault: None,
    }));
    let (state_tx, state_rx) = watch::channel(machine.state());
    let (priority_tx, priority_rx) = watch::channel(config.priority);
    let weights: Vec<i32> = config.track.iter().map(|track| track.weight()).collect();
    for warning in priority::weight_warnings(
        &config.name,
        config.priority,
        config.preempt,
        &weights,
        None,
    ) {
        warn!(instance = config.name, "{warning}");
    }
    let shell = Shell {
        v4,
        checksum: if config.checksum_pseudo_header {
            ChecksumMode::WithPseudoHeader
        } else {
            ChecksumMode::WithoutPseudoHeader
        },
        version: if config.version == 2 {
            Version::V2
        } else {
            Version::V3
        },
        password,
        config,
        interface,
        socket,
        arp,
        netlink,
        mastership: resources.mastership,
        machine,
        status: status.clone(),
        state_tx,
        timer: None,
        garp_second_burst: None,
        holds_vips: false,
        held: resources.held,
        vip_retry: None,
        vip_failed: false,
        warned: BTreeSet::new(),
        weights,
        peer_priority: None,
        trackers,
        trackers_open: true,
        configured: priority_rx,
        configured_open: true,
    };
    let shell_name = shell.config.name.clone();
    let task = tokio::spawn(shell.run(shutdown));
    Ok((
        InstanceHandle {
            name: shell_name,
            status,
            state: state_rx,
            priority: Arc::new(priority_tx),
        },
        task,
    ))
}

/// The instance's addresses as the IPv4 protocol machinery takes them. The config refuses
/// IPv6 instances for now (`config::cross_check`), so nothing is dropped here; [`Self::of`]
/// says so if that ever changes without this.
struct Ipv4Addresses {
    vips: Vec<Ipv4Addr>,
    unicast_peer: Vec<Ipv4Addr>,
    allowed_sources: Vec<Ipv4Addr>,
}

impl Ipv4Addresses {
    fn of(config: &VrrpInstance) -> anyhow::Result<Ipv4Addresses> {
        let v4 = |addresses: &[IpAddr]| -> anyhow::Result<Vec<Ipv4Addr>> {
            addresses
                .iter()
                .map(|address| match address {
                    IpAddr::V4(v4) => Ok(*v4),
                    IpAddr::V6(v6) => Err(anyhow::anyhow!(
                        "[[vrrp]] {}: {v6} is IPv6, and this build runs VRRP over IPv4 only",
                        config.name
                    )),
                })
                .collect()
        };
        Ok(Ipv4Addresses {
            vips: v4(&config.virtual_ipaddress)?,
            unicast_peer: v4(&config.unicast_peer)?,
            allowed_sources: v4(&config.allowed_sources)?,
        })
    }
}

struct Shell {
    config: VrrpInstance,
    v4: Ipv4Addresses,
    version: Version,
    checksum: ChecksumMode,
    /// VRRPv2 PASS: sent in every advert, and required in every advert received.
    password: Option<Password>,
    interface: InterfaceInfo,
    socket: VrrpSocket,
    arp: ArpSender,
    netlink: Netlink,
    mastership: Arc<dyn Mastership>,
    machine: Machine,
    status: Arc<Mutex<InstanceStatus>>,
    state_tx: watch::Sender<State>,
    timer: Option<Instant>,
    garp_second_burst: Option<Instant>,
    holds_vips: bool,
    held: HeldVips,
    /// A VIP could not be added: the instance is in Fault until then, and tries again.
    vip_retry: Option<Instant>,
    /// Set by a failed VIP addition while the machine's actions are carried out; the Fault it
    /// calls for is entered once they are done.
    vip_failed: bool,
    /// Warnings already logged, so each is said once (at most [`MAX_WARNINGS`] remembered:
    /// adverts from a peer can vary them without end).
    warned: BTreeSet<String>,
    /// The trackers' weights, in config order.
    weights: Vec<i32>,
    /// The last non-zero priority heard from a peer.
    peer_priority: Option<u8>,
    trackers: watch::Receiver<Vec<TrackerState>>,
    trackers_open: bool,
    /// The configured priority as the last reload set it.
    configured: watch::Receiver<u8>,
    configured_open: bool,
}

impl Shell {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 2048];
        self.apply_trackers(Instant::now()).await;
        self.handle(Event::Startup).await;
        loop {
            let timer = self.timer;
            let garp = self.garp_second_burst;
            let vip_retry = self.vip_retry;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                received = self.socket.recv(&mut buf) => match received {
                    Ok(len) => self.on_datagram(&buf[..len]).await,
                    Err(err) => {
                        if let Some(held) = crate::log_limit::allow("vrrp-receive") {
                            let held = crate::log_limit::held_back(held);
                            error!(instance = self.config.name, "receiving VRRP: {err}{held}");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = sleep_until(timer), if timer.is_some() => {
                    self.timer = None;
                    self.handle(Event::TimerFired).await;
                }
                _ = sleep_until(vip_retry), if vip_retry.is_some() => {
                    self.vip_retry = None;
                    self.lock_status().fault = None;
                    info!(instance = self.config.name, "trying the virtual addresses again");
                    self.apply_trackers(Instant::now()).await;
                }
                _ = sleep_until(garp), if garp.is_some() => {
                    self.garp_second_burst = None;
                    if self.holds_vips {
                        self.announce("second burst after garp_master_delay");
                    }
                }
                // With no tracker (or once every tracker task ended) the channel is closed and
                // `changed` would be ready at once, every time: a busy loop that also starves
                // the branches below it. Stop polling it then.
                changed = self.trackers.changed(), if self.trackers_open => {
                    self.trackers_open = changed.is_ok();
                    if changed.is_ok() {
                        self.apply_trackers(Instant::now()).await;
                    }
                }
                changed = self.configured.changed(), if self.configured_open => {
                    // Every handle gone (a test that keeps none): nothing will change it.
                    self.configured_open = changed.is_ok();
                    if changed.is_ok() {
                        let priority = *self.configured.borrow_and_update();
                        info!(
                            instance = self.config.name,
                            "configured priority {} -> {priority} (reload)",
                            self.config.priority
                        );
                        self.config.priority = priority;
                        self.lock_status().configured_priority = priority;
                        self.apply_trackers(Instant::now()).await;
                    }
                }
            }
        }
        self.handle(Event::Shutdown).await;
        // Whatever the machine did, a stopping node must not keep the VIPs.
        self.release_vips().await;
        info!(instance = self.config.name, "stopped");
    }

    async fn apply_trackers(&mut self, now: Instant) {
        let states = self.trackers.borrow_and_update().clone();
        let (effective, trackers_faulty) =
            priority::effective_priority(self.config.priority, &states);
        let faulty = trackers_faulty || self.vip_retry.is_some();
        if effective != self.machine.effective_priority() {
            info!(
                instance = self.config.name,
                "effective priority {} -> {effective}",
                self.machine.effective_priority()
            );
            self.handle_at(Event::PriorityChanged { effective }, now)
                .await;
        }
        let is_fault = self.machine.state() == State::Fault;
        if faulty != is_fault {
            self.handle_at(Event::FaultChanged { faulty }, now).await;
        }
    }

    async fn on_datagram(&mut self, datagram: &[u8]) {
        let received = match wire::parse_ipv4(datagram, self.checksum) {
            Ok(received) => received,
            Err(reason) => return self.drop_packet(reason),
        };
        let expected = accept::Expected {
            own_address: self.interface.primary_address,
            vrid: self.config.virtual_router_id,
            version: self.version,
            advert_interval: self.config.advert_interval,
            password: self.password,
            sources: if self.v4.unicast_peer.is_empty() {
                &self.v4.allowed_sources
            } else {
                &self.v4.unicast_peer
            },
        };
        match accept::judge(&received, &expected) {
            Verdict::Accept => {}
            Verdict::Ignore => return,
            Verdict::Drop(reason) => return self.drop_packet(reason),
        }
        let advert = &received.advert;
        {
            let mut status = self.lock_status();
            status.adverts_received += 1;
        }
        let vips = &self.v4.vips;
        let same_addresses = advert.addresses.len() == vips.len()
            && advert
                .addresses
                .iter()
                .all(|address| vips.contains(address));
        if !same_addresses {
            self.warn_once(format!(
                "adverts from {} list addresses {:?}, this node is configured with {:?}; \
                 check virtual_ipaddress on both nodes",
                received.source, advert.addresses, vips
            ));
        }
        // The weight warnings depend only on the peer's priority: judge each value once.
        if advert.priority != 0 && self.peer_priority != Some(advert.priority) {
            self.peer_priority = Some(advert.priority);
            for warning in priority::weight_warnings(
                &self.config.name,
                self.config.priority,
                self.config.preempt,
                &self.weights,
                Some(advert.priority),
            ) {
                self.warn_once(warning);
            }
        }
        debug!(
            instance = self.config.name,
            source = %received.source,
            priority = advert.priority,
            "advert received"
        );
        self.handle(Event::AdvertReceived {
            source: received.source,
            priority: advert.priority,
            interval: advert.interval,
        })
        .await;
    }

    fn warn_once(&mut self, warning: String) {
        if self.warned.len() >= MAX_WARNINGS {
            if self.warned.len() == MAX_WARNINGS {
                warn!(
                    instance = self.config.name,
                    "{MAX_WARNINGS} different warnings logged; further ones are not"
                );
                self.warned.insert(String::new());
            }
            return;
        }
        if self.warned.insert(warning.clone()) {
            warn!(instance = self.config.name, "{warning}");
        }
    }

    fn drop_packet(&mut self, reason: DropReason) {
        debug!(
            instance = self.config.name,
            "dropped a VRRP packet: {reason}"
        );
        let mut status = self.lock_status();
        *status.drops.entry(reason.name().to_owned()).or_default() += 1;
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, InstanceStatus> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn handle(&mut self, event: Event) {
        self.handle_at(event, Instant::now()).await;
    }

    async fn handle_at(&mut self, event: Event, now: Instant) {
        let before = self.machine.state();
        let actions = self.machine.handle(event, now);
        for action in actions {
            self.perform(action, before).await;
        }
        if std::mem::take(&mut self.vip_failed) {
            // A master without its VIP serves nothing: Fault sends the priority-0 advert that
            // hands the address to the backup now rather than after its master-down time.
            let before = self.machine.state();
            let actions = self
                .machine
                .handle(Event::FaultChanged { faulty: true }, now);
            for action in actions {
                self.perform(action, before).await;
            }
        }
        let after = self.machine.state();
        let mut status = self.lock_status();
        status.effective_priority = self.machine.effective_priority();
        status.master = self.machine.master_address();
        status.state = state_name(after).to_owned();
    }

    async fn perform(&mut self, action: Action, before: State) {
        match action {
            Action::SendAdvert { priority } => self.send_advert(priority).await,
            Action::ArmTimer(at) => self.timer = Some(at),
            Action::CancelTimer => self.timer = None,
            Action::SendGratuitousArp => {
                if self.holds_vips {
                    self.announce("a lower-priority master was heard (split brain healed)");
                }
            }
            Action::BecomeMaster => {
                self.transition(before, State::Master);
                self.mastership.becoming_master(&self.config.name).await;
                self.holds_vips = true;
                for &vip in &self.v4.vips {
                    self.held.adding(&self.interface.name, vip);
                    if let Err(err) = self.netlink.add_vip(self.interface.index, vip).await {
                        let reason = format!("{err:#}");
                        error!(
                            instance = self.config.name,
                            "{reason}; going to Fault, next try in {}",
                            humantime::format_duration(VIP_RETRY)
                        );
                        self.lock_status().fault = Some(reason);
                        self.vip_retry = Some(Instant::now() + VIP_RETRY);
                        self.vip_failed = true;
                        return;
                    }
                }
                self.announce("became master");
                if !self.config.garp_master_delay.is_zero() {
                    self.garp_second_burst = Some(Instant::now() + self.config.garp_master_delay);
                }
                self.notify(State::Master);
            }
            Action::BecomeBackup => self.leave(before, State::Backup).await,
            Action::BecomeFault => self.leave(before, State::Fault).await,
            Action::BecomeInitialize => self.leave(before, State::Initialize).await,
        }
    }

    async fn leave(&mut self, before: State, to: State) {
        self.transition(before, to);
        self.garp_second_burst = None;
        self.release_vips().await;
        self.notify(to);
    }

    async fn release_vips(&mut self) {
        let held = self.holds_vips;
        for &vip in &self.v4.vips {
            match self.netlink.remove_vip(self.interface.index, vip).await {
                Ok(_) => self.held.removed(&self.interface.name, vip),
                Err(err) => error!(instance = self.config.name, "{err:#}"),
            }
        }
        self.holds_vips = false;
        if held {
            self.mastership.left_master(&self.config.name).await;
        }
    }

    fn transition(&mut self, from: State, to: State) {
        let priority = self.machine.effective_priority();
        info!(
            instance = self.config.name,
            "{} -> {} (priority {priority}{})",
            state_name(from),
            state_name(to),
            match self.machine.master_address() {
                Some(master) if to != State::Master => format!(", master {master}"),
                _ => String::new(),
            }
        );
        self.state_tx.send_replace(to);
        let mut status = self.lock_status();
        status.transitions += 1;
        status.last_transition_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|elapsed| elapsed.as_secs_f64());
    }

    async fn send_advert(&mut self, priority: u8) {
        let advert = Advert {
            version: self.version,
            vrid: self.config.virtual_router_id,
            priority,
            interval: self.config.advert_interval,
            addresses: self.v4.vips.clone(),
            password: self.password,
        };
        let mut sent = 0;
        for destination in self.socket.destinations().to_vec() {
            let payload = advert.emit(self.interface.primary_address, destination, self.checksum);
            match self.socket.send(&payload, destination).await {
                Ok(()) => sent += 1,
                Err(err) => warn!(
                    instance = self.config.name,
                    "sending an advert to {destination}: {err}"
                ),
            }
        }
        self.lock_status().adverts_sent += sent;
    }

    /// Gratuitous ARPs for every VIP, `garp_master_repeat` times.
    fn announce(&self, why: &str) {
        let repeat = self.config.garp_master_repeat;
        if repeat == 0 {
            return;
        }
        for _ in 0..repeat {
            for &vip in &self.v4.vips {
                if let Err(err) = self.arp.announce(vip) {
                    warn!(
                        instance = self.config.name,
                        "gratuitous ARP for {vip}: {err}"
                    );
                }
            }
        }
        debug!(
            instance = self.config.name,
            repeat, "gratuitous ARPs sent: {why}"
        );
    }

    fn notify(&self, state: State) {
        let Some(script) = self.config.notify.clone() else {
            return;
        };
        let name = self.config.name.clone();
        let priority = self.machine.effective_priority().to_string();
        let state = state_name(state).to_uppercase();
        // keepalived's notify arguments: TYPE NAME STATE PRIORITY.
        tokio::spawn(async move {
            let child = super::track::script_command(&format!("{script} \"$@\""))
                .arg("tandem-notify")
                .args(["INSTANCE", &name, &state, &priority])
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(err) => return warn!(instance = name, "notify script {script}: {err}"),
            };
            match tokio::time::timeout(NOTIFY_TIMEOUT, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => warn!(
                    instance = name,
                    "notify script {script} exited with {status}"
                ),
                Ok(Err(err)) => warn!(instance = name, "notify script {script}: {err}"),
                // Dropping the child kills it.
                Err(_) => warn!(
                    instance = name,
                    "notify script {script} still running after {}; killed",
                    humantime::format_duration(NOTIFY_TIMEOUT)
                ),
            }
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The state as status and logs spell it.
pub fn state_name(state: State) -> &'static str {
    match state {
        State::Initialize => "initialize",
        State::Backup => "backup",
        State::Master => "master",
        State::Fault => "fault",
    }
}
