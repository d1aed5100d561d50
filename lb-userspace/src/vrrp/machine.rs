//! The per-instance VRRP state machine (RFC 5798 §6.4 and RFC 9568 §6.4 for version 3, RFC 3768
//! §6.4 for version 2), with keepalived's additions that a mixed pair needs to agree on. RFC 9568
//! says Active where the others say Master; the names here are RFC 5798's and keepalived's.
//!
//! What lives here: the states (Initialize, Backup, Master, plus keepalived's Fault), the two
//! timers of the RFC (Master_Down_Timer in Backup, Adver_Timer in Master, never both, so the shell
//! keeps one timer), the parameters derived from the priority (Skew_Time and Master_Down_Interval,
//! RFC 5798 §6.1), preemption and keepalived's `preempt_delay`. What does not: sockets, timers,
//! the advert codec (`wire`), the announcement frames (`crate::wire::arp`, `crate::wire::ndisc`)
//! and the tracker arithmetic (`priority`). The family does not matter here: addresses are
//! `IpAddr`s, compared as RFC 5798 says (one family per instance).
//!
//! The machine is sans-I/O: [`Machine::handle`] takes an [`Event`] and the current [`Instant`]
//! and returns the [`Action`]s the shell carries out in order. It never reads the clock, so every
//! timing rule is a unit test with injected time. The shell may deliver a timer late or after it
//! was replaced; the machine remembers the deadline it armed and ignores a [`Event::TimerFired`]
//! that comes before it.
//!
//! Interpretation choices, each with its source:
//! - **Timer arithmetic** is exact (nanoseconds), as keepalived computes it (microseconds), not in
//!   the RFC's whole centiseconds: priority 100 at 1 s adverts gives a Skew_Time of 609.375 ms
//!   and a Master_Down_Interval of 3.609375 s. Skew_Time uses the effective priority, as
//!   keepalived's `VRRP_TIMER_SKEW` does.
//! - **Version 2** (RFC 3768 §6.1): Skew_Time is `(256 - priority) / 256` seconds whatever the
//!   interval, and the interval in a received advert is not learned (RFC 3768 §5.3.7 says it is
//!   for troubleshooting; keepalived also keeps its own).
//! - **Ties in Backup**: an advert with a priority equal to ours is treated as "greater or equal"
//!   (RFC 5798 §6.4.2), i.e. we stay backup whatever the addresses. Addresses only break ties
//!   between two masters (§6.4.3): the higher primary address, compared as a `u32`, wins.
//! - **Lower-priority advert in Master** (RFC 9568 §6.4.3, new against RFC 5798, which only
//!   discarded it): discard it and "send an ADVERTISEMENT immediately to assert the Active state
//!   to the sending VRRP Router and to update any learning bridges". The Adver_Timer is left
//!   alone (the RFC resets it only for a priority-0 advert). We also emit
//!   [`Action::SendGratuitousArp`], as keepalived does in `vrrp_state_master_rx` (its
//!   `garp_lower_prio_rep`), because after a split brain heals the clients' ARP caches may point
//!   at the other node. Like keepalived's `garp_lower_prio_repeat`, a lower-priority advert is
//!   answered at most once per advert interval: a flood of them (forged, or a confused peer)
//!   is not turned into a flood of adverts and ARPs.
//! - **`preempt_delay`** follows keepalived's `vrrp_state_backup` (keepalived/vrrp/vrrp.c) and its
//!   documentation ("seconds after startup or seeing a lower priority master until preemption"):
//!   when a backup with preemption on first hears a lower-priority master, it starts the delay and
//!   keeps accepting that master's adverts (each resets the Master_Down_Timer) until the delay has
//!   passed; from then on it discards them as the RFC says, so it takes over when the
//!   Master_Down_Timer armed by the last accepted advert runs out. Takeover therefore happens
//!   between `preempt_delay` and `preempt_delay + Master_Down_Interval` after the first lower
//!   advert. An advert of equal or higher priority stops a running delay; so does leaving Backup.
//!   The delay never holds back a takeover when the master falls silent or sends priority 0.
//!   keepalived's older releases armed the delay at start-up and on leaving Fault instead; a
//!   backup hears a running master within one advert interval, so the readings differ by at most
//!   that much (the delay here restarts after start-up and after Fault too, since entering Backup
//!   clears it).
//! - **Adverts from our own primary address** are ignored in every state: they can only be our own
//!   packets looped back (keepalived logs the equal-priority case as a warning and ignores it).
//! - **Fault** (keepalived's state, not in the RFCs): entered when a weight-0 tracker or the
//!   built-in proxy check fails. A master leaves with a priority-0 advert so the backup takes over
//!   after its Skew_Time alone (RFC 5798 §6.4.3's shutdown rule). In Fault no timer runs and adverts
//!   are ignored, except that their source is remembered as the master. On recovery the instance
//!   goes to Backup with a fresh Master_Down_Timer, or straight to Master if it owns the addresses,
//!   as at start-up. A fault reported before [`Event::Startup`] makes start-up go to Fault.
//! - **Effective priority** changes (trackers) take effect in the next advert and the next timer
//!   computation. A master whose priority drops below a backup's does nothing by itself: the backup
//!   preempts when it hears the lower advert (so the handover takes up to one Master_Down_Interval;
//!   use Fault for a fast one). The owner's priority (255) never changes (keepalived ignores
//!   weights for it).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use super::wire::Version;

/// Where an instance stands in the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started yet, or shut down.
    Initialize,
    Backup,
    Master,
    /// A weight-0 tracker (or the built-in proxy check) failed: not taking part in the election.
    Fault,
}

/// One instance's election parameters, fixed for the life of the [`Machine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub version: Version,
    /// Configured priority 1..=255 (255 = address owner).
    pub priority: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// This node's address on the interface (the advert's source: over IPv6 its link-local
    /// address), used to break priority ties.
    pub primary_address: IpAddr,
}

impl Settings {
    /// The election parameters of a validated `[[vrrp]]` section; `primary_address` is this
    /// node's address on the instance's interface in the instance's family (IPv6: link-local).
    pub fn from_config(
        instance: &crate::config::VrrpInstance,
        primary_address: IpAddr,
    ) -> Settings {
        Settings {
            // Validation allows only 2 and 3.
            version: if instance.version == 2 {
                Version::V2
            } else {
                Version::V3
            },
            priority: instance.priority,
            advert_interval: instance.advert_interval,
            preempt: instance.preempt,
            preempt_delay: instance.preempt_delay,
            primary_address,
        }
    }
}

/// Something that happened to the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    /// SIGTERM: a master sends priority 0 so the backup takes over after its skew time alone.
    Shutdown,
    /// A valid advert for our VRID (the shell has validated version/interval/TTL already).
    AdvertReceived {
        source: IpAddr,
        priority: u8,
        interval: Duration,
    },
    /// The timer last armed has expired (the shell may deliver late or stale: check `now`).
    TimerFired,
    /// Trackers changed the effective priority (already clamped by priority.rs).
    PriorityChanged {
        effective: u8,
    },
    /// A tracker with weight 0, the built-in proxy check, or a tracked interface without weight
    /// failed (true) or recovered (false).
    FaultChanged {
        faulty: bool,
    },
}

/// What the shell must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 when resigning) and our configured interval.
    SendAdvert {
        priority: u8,
    },
    /// Add the VIPs and announce them (gratuitous ARP).
    BecomeMaster,
    /// Remove the VIPs (if held) and listen.
    BecomeBackup,
    /// Remove the VIPs (if held); the instance stays out of the election until it recovers.
    BecomeFault,
    /// Leave Master/Backup for Initialize (after Shutdown): the shell removes the VIPs.
    BecomeInitialize,
    /// Replaces any previously armed timer.
    ArmTimer(Instant),
    CancelTimer,
    /// Re-announce the VIPs (gratuitous ARP; for an IPv6 instance unsolicited neighbour
    /// advertisements, under the same name): a master that hears a lower-priority master after
    /// a split brain heals.
    SendGratuitousArp,
}

/// One VRRP instance's election state. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub struct Machine {
    settings: Settings,
    state: State,
    /// Priority in adverts and comparisons: the configured one moved by the trackers.
    effective: u8,
    /// The last [`Event::FaultChanged`], kept in every state so start-up knows it.
    faulty: bool,
    /// RFC 5798's Master_Adver_Interval: learned from the master's adverts in version 3.
    master_adver_interval: Duration,
    /// The deadline of the timer last armed (Adver_Timer in Master, Master_Down_Timer in Backup).
    timer: Option<Instant>,
    master: Option<IpAddr>,
    /// keepalived's `preempt_time`: until then a lower-priority master is still accepted.
    preempt_deadline: Option<Instant>,
    /// When a lower-priority advert was last answered (keepalived's `garp_lower_prio_repeat`
    /// limit): at most once per advert interval, so a flood of them is not amplified.
    lower_answered: Option<Instant>,
    last_transition: Option<Instant>,
}

impl Machine {
    pub fn new(settings: Settings) -> Machine {
        // Priority 0 is not a configurable value (it means "resigning" on the wire).
        let effective = settings.priority.max(1);
        Machine {
            master_adver_interval: settings.advert_interval,
            settings,
            state: State::Initialize,
            effective,
            faulty: false,
            timer: None,
            master: None,
            preempt_deadline: None,
            lower_answered: None,
            last_transition: None,
        }
    }

    /// Feeds one event at time `now`; returns what the shell must do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Startup => self.on_startup(now),
            Event::Shutdown => self.on_shutdown(now),
            Event::AdvertReceived {
                source,
                priority,
                interval,
            } => self.on_advert(source, priority, interval, now),
            Event::TimerFired => self.on_timer(now),
            Event::PriorityChanged { effective } => {
                self.on_priority_changed(effective);
                Vec::new()
            }
            Event::FaultChanged { faulty } => self.on_fault_changed(faulty, now),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The priority this node advertises (255 for the owner, whatever the trackers say).
    pub fn effective_priority(&self) -> u8 {
        self.effective
    }

    /// The current master as this node knows it: itself when Master, the last advert's source
    /// when Backup (or Fault); `None` before an advert is heard and in Initialize.
    pub fn master_address(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.settings.primary_address),
            State::Backup | State::Fault => self.master,
            State::Initialize => None,
        }
    }

    /// RFC 5798 §6.1: `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// v3 (RFC 5798 §6.1): `((256 - priority) * Master_Adver_Interval) / 256`;
    /// v2 (RFC 3768 §6.1): `(256 - priority) / 256` seconds.
    pub fn skew_time(&self) -> Duration {
        let share = 256 - u32::from(self.effective);
        match self.settings.version {
            Version::V3 => self.master_adver_interval * share / 256,
            Version::V2 => Duration::from_secs(1) * share / 256,
        }
    }

    /// When the state last changed (start-up included).
    pub fn last_transition(&self) -> Option<Instant> {
        self.last_transition
    }

    /// The deadline of the timer the machine last armed, if any.
    pub fn timer_deadline(&self) -> Option<Instant> {
        self.timer
    }

    fn is_owner(&self) -> bool {
        self.settings.priority == 255
    }

    fn transition(&mut self, state: State, now: Instant) {
        if self.state != state {
            self.state = state;
            self.last_transition = Some(now);
        }
    }

    fn arm(&mut self, deadline: Instant) -> Action {
        self.timer = Some(deadline);
        Action::ArmTimer(deadline)
    }

    /// RFC 5798 §6.4.1 (and §6.4.2's expiry): advertise, take the addresses, arm the Adver_Timer.
    fn become_master(&mut self, now: Instant) -> Vec<Action> {
        self.transition(State::Master, now);
        self.preempt_deadline = None;
        let arm = self.arm(now + self.settings.advert_interval);
        vec![
            Action::SendAdvert {
                priority: self.effective,
            },
            Action::BecomeMaster,
            arm,
        ]
    }

    /// RFC 5798 §6.4.1: Master_Adver_Interval := Advertisement_Interval, arm Master_Down_Timer.
    fn become_backup_afresh(&mut self, now: Instant) -> Vec<Action> {
        self.transition(State::Backup, now);
        self.master_adver_interval = self.settings.advert_interval;
        self.preempt_deadline = None;
        let arm = self.arm(now + self.master_down_interval());
        vec![Action::BecomeBackup, arm]
    }

    fn on_startup(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Initialize {
            return Vec::new();
        }
        if self.faulty {
            self.transition(State::Fault, now);
            self.master_adver_interval = self.settings.advert_interval;
            return vec![Action::BecomeFault];
        }
        if self.is_owner() {
            self.become_master(now)
        } else {
            self.become_backup_afresh(now)
        }
    }

    fn on_shutdown(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.state {
            State::Initialize => return actions,
            // RFC 5798 §6.4.3: cancel the Adver_Timer, send priority 0, go to Initialize.
            State::Master => actions.push(Action::SendAdvert { priority: 0 }),
            State::Backup | State::Fault => {}
        }
        actions.extend([Action::BecomeInitialize, Action::CancelTimer]);
        self.transition(State::Initialize, now);
        self.timer = None;
        self.master = None;
        self.preempt_deadline = None;
        actions
    }

    fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        match self.timer {
            Some(deadline) if now >= deadline => {}
            // Stale (replaced, or delivered early) or nothing armed.
            _ => return Vec::new(),
        }
        match self.state {
            // RFC 5798 §6.4.3: Adver_Timer fired.
            State::Master => {
                let arm = self.arm(now + self.settings.advert_interval);
                vec![
                    Action::SendAdvert {
                        priority: self.effective,
                    },
                    arm,
                ]
            }
            // RFC 5798 §6.4.2: Master_Down_Timer fired.
            State::Backup => self.become_master(now),
            State::Initialize | State::Fault => {
                self.timer = None;
                Vec::new()
            }
        }
    }

    fn on_advert(
        &mut self,
        source: IpAddr,
        priority: u8,
        interval: Duration,
        now: Instant,
    ) -> Vec<Action> {
        if source == self.settings.primary_address {
            return Vec::new();
        }
        match self.state {
            State::Initialize => Vec::new(),
            State::Fault => {
                if priority != 0 {
                    self.master = Some(source);
                } else if self.master == Some(source) {
                    self.master = None;
                }
                Vec::new()
            }
            State::Backup => self.backup_advert(source, priority, interval, now),
            State::Master => self.master_advert(source, priority, interval, now),
        }
    }

    /// RFC 5798 §6.4.2 (RFC 9568 §6.4.2), with keepalived's preempt_delay.
    fn backup_advert(
        &mut self,
        source: IpAddr,
        priority: u8,
        interval: Duration,
        now: Instant,
    ) -> Vec<Action> {
        if priority == 0 {
            // The master resigns: take over after Skew_Time unless a better backup speaks first.
            let arm = self.arm(now + self.skew_time());
            return vec![arm];
        }
        // The sender is the master even when we are about to preempt it.
        self.master = Some(source);
        let accept = if !self.settings.preempt {
            true
        } else if priority >= self.effective {
            // keepalived: an equal or better master stops a running preempt delay.
            self.preempt_deadline = None;
            true
        } else if self.settings.preempt_delay.is_zero() {
            false
        } else {
            match self.preempt_deadline {
                None => {
                    self.preempt_deadline = Some(now + self.settings.preempt_delay);
                    true
                }
                Some(deadline) => now < deadline,
            }
        };
        if !accept {
            // Discard: the Master_Down_Timer keeps running and we take over when it fires.
            return Vec::new();
        }
        self.learn_interval(interval);
        let arm = self.arm(now + self.master_down_interval());
        vec![arm]
    }

    /// RFC 5798 §6.4.3 with RFC 9568 §6.4.3's lower-priority rule.
    fn master_advert(
        &mut self,
        source: IpAddr,
        priority: u8,
        interval: Duration,
        now: Instant,
    ) -> Vec<Action> {
        if priority == 0 {
            // Another master resigns: tell the backups at once that we are here.
            let arm = self.arm(now + self.settings.advert_interval);
            return vec![
                Action::SendAdvert {
                    priority: self.effective,
                },
                arm,
            ];
        }
        // RFC 5798 §6.4.3: equal priorities are broken by the primary addresses compared as
        // unsigned integers in network byte order, which is how IpAddr orders two addresses of
        // one family (an instance hears only its own family).
        let higher = priority > self.effective
            || (priority == self.effective && source > self.settings.primary_address);
        if higher {
            self.learn_interval(interval);
            self.master = Some(source);
            self.transition(State::Backup, now);
            self.preempt_deadline = None;
            let arm = self.arm(now + self.master_down_interval());
            return vec![Action::BecomeBackup, arm];
        }
        // A lower-priority master (split brain healing, or a backup that preempted wrongly):
        // answered at most once per advert interval; the others are discarded.
        if self
            .lower_answered
            .is_some_and(|at| now < at + self.settings.advert_interval)
        {
            return Vec::new();
        }
        self.lower_answered = Some(now);
        vec![
            Action::SendAdvert {
                priority: self.effective,
            },
            Action::SendGratuitousArp,
        ]
    }

    /// RFC 5798 §6.4.2/§6.4.3: Master_Adver_Interval := the advert's interval (version 3 only).
    fn learn_interval(&mut self, interval: Duration) {
        if self.settings.version == Version::V3 && !interval.is_zero() {
            self.master_adver_interval = interval;
        }
    }

    fn on_priority_changed(&mut self, effective: u8) {
        if self.is_owner() {
            return;
        }
        self.effective = effective.clamp(1, 254);
    }

    fn on_fault_changed(&mut self, faulty: bool, now: Instant) -> Vec<Action> {
        self.faulty = faulty;
        match (self.state, faulty) {
            (State::Master, true) => {
                self.enter_fault(now);
                vec![
                    Action::SendAdvert { priority: 0 },
                    Action::BecomeFault,
                    Action::CancelTimer,
                ]
            }
            (State::Backup, true) => {
                self.enter_fault(now);
                vec![Action::BecomeFault, Action::CancelTimer]
            }
            (State::Fault, false) => {
                if self.is_owner() {
                    self.become_master(now)
                } else {
                    self.become_backup_afresh(now)
                }
            }
            _ => Vec::new(),
        }
    }

    fn enter_fault(&mut self, now: Instant) {
        if self.state == State::Master {
            self.master = None;
        }
        self.transition(State::Fault, now);
        self.timer = None;
        self.preempt_deadline = None;
        self.master_adver_interval = self.settings.advert_interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const PEER_LOW: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const PEER_HIGH: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    const SECOND: Duration = Duration::from_secs(1);

    fn settings(priority: u8) -> Settings {
        Settings {
            version: Version::V3,
            priority,
            advert_interval: SECOND,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_address: ME,
        }
    }

    fn at_ms(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn at_us(base: Instant, us: u64) -> Instant {
        base + Duration::from_micros(us)
    }

    fn at_s(base: Instant, s: u64) -> Instant {
        base + Duration::from_secs(s)
    }

    fn advert(source: IpAddr, priority: u8) -> Event {
        Event::AdvertReceived {
            source,
            priority,
            interval: SECOND,
        }
    }

    /// A machine after `Startup` at the returned instant.
    fn started(settings: Settings) -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut machine = Machine::new(settings);
        machine.handle(Event::Startup, t0);
        (machine, t0)
    }

    /// A non-owner that became master when its Master_Down_Timer ran out, and that instant.
    fn master(settings: Settings) -> (Machine, Instant, Instant) {
        let (mut machine, t0) = started(settings);
        let deadline = machine
            .timer_deadline()
            .expect("backup arms its Master_Down_Timer");
        machine.handle(Event::TimerFired, deadline);
        assert_eq!(machine.state(), State::Master);
        (machine, t0, deadline)
    }

    #[test]
    fn owner_with_priority_255_becomes_master_at_startup_and_advertises_at_once() {
        let t0 = Instant::now();
        let mut machine = Machine::new(settings(255));
        let actions = machine.handle(Event::Startup, t0);
        assert_eq!(
            actions,
            vec![
                Action::SendAdvert { priority: 255 },
                Action::BecomeMaster,
                Action::ArmTimer(at_s(t0, 1)),
            ]
        );
        assert_eq!(machine.state(), State::Master);
        assert_eq!(machine.master_address(), Some(ME));
        assert_eq!(machine.last_transition(), Some(t0));
    }

    #[test]
    fn non_owner_starts_as_backup_with_its_master_down_timer_armed() {
        let t0 = Instant::now();
        let mut machine = Machine::new(settings(100));
        assert_eq!(machine.state(), State::Initialize);
        assert_eq!(machine.last_transition(), None);
        let actions = machine.handle(Event::Startup, t0);
        assert_eq!(
            actions,
            vec![Action::BecomeBackup, Action::ArmTimer(at_us(t0, 3_609_375))]
        );
        assert_eq!(machine.state(), State::Backup);
        assert_eq!(machine.master_address(), None);
        assert_eq!(machine.last_transition(), Some(t0));
    }

    #[test]
    fn backup_with_priority_100_and_1s_adverts_takes_over_at_3_609375s_not_before() {
        let (mut machine, t0) = started(settings(100));
        assert_eq!(machine.handle(Event::TimerFired, at_ms(t0, 3_609)), vec![]);
        assert_eq!(machine.state(), State::Backup);
        let takeover = at_us(t0, 3_609_375);
        assert_eq!(
            machine.handle(Event::TimerFired, takeover),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::BecomeMaster,
                Action::ArmTimer(takeover + SECOND),
            ]
        );
        assert_eq!(machine.state(), State::Master);
        assert_eq!(machine.master_address(), Some(ME));
        assert_eq!(machine.last_transition(), Some(takeover));
    }

    #[test]
    fn skew_time_and_master_down_interval_follow_rfc_5798_in_version_3() {
        let machine = Machine::new(settings(100));
        assert_eq!(machine.skew_time(), Duration::from_micros(609_375));
        assert_eq!(
            machine.master_down_interval(),
            Duration::from_micros(3_609_375)
        );

        let fast = Machine::new(Settings {
            advert_interval: Duration::from_millis(100),
            ..settings(254)
        });
        assert_eq!(fast.skew_time(), Duration::from_nanos(781_250));
        assert_eq!(
            fast.master_down_interval(),
            Duration::from_nanos(300_781_250)
        );

        let lowest = Machine::new(settings(1));
        assert_eq!(lowest.skew_time(), Duration::from_nanos(996_093_750));
    }

    #[test]
    fn version_2_skew_time_is_in_seconds_whatever_the_advert_interval() {
        let machine = Machine::new(Settings {
            version: Version::V2,
            advert_interval: Duration::from_secs(3),
            ..settings(100)
        });
        assert_eq!(machine.skew_time(), Duration::from_micros(609_375));
        assert_eq!(
            machine.master_down_interval(),
            Duration::from_micros(9_609_375)
        );
    }

    #[test]
    fn backup_receiving_priority_0_takes_over_after_skew_time_alone() {
        let (mut machine, t0) = started(settings(100));
        machine.handle(advert(PEER_HIGH, 200), at_ms(t0, 500));
        let resign = at_s(t0, 1);
        assert_eq!(
            machine.handle(advert(PEER_HIGH, 0), resign),
            vec![Action::ArmTimer(resign + Duration::from_micros(609_375))]
        );
        assert_eq!(
            machine.handle(Event::TimerFired, at_us(t0, 1_609_374)),
            vec![]
        );
        assert_eq!(machine.state(), State::Backup);
        let actions = machine.handle(Event::TimerFired, at_us(t0, 1_609_375));
        assert_eq!(
            actions[..2],
            [Action::SendAdvert { priority: 100 }, Action::BecomeMaster]
        );
        assert_eq!(machine.state(), State::Master);
    }

    #[test]
    fn backup_hearing_its_master_pushes_the_takeover_back_and_the_old_deadline_is_stale() {
        let (mut machine, t0) = started(settings(100));
        for s in 1..=3 {
            let now = at_s(t0, s);
            assert_eq!(
                machine.handle(advert(PEER_HIGH, 200), now),
                vec![Action::ArmTimer(now + Duration::from_micros(3_609_375))]
            );
        }
        assert_eq!(machine.master_address(), Some(PEER_HIGH));
        // The shell's timer from start-up fires late: it has been replaced.
        assert_eq!(
            machine.handle(Event::TimerFired, at_us(t0, 3_609_375)),
            vec![]
        );
        assert_eq!(machine.state(), State::Backup);
        assert_eq!(machine.timer_deadline(), Some(at_us(t0, 6_609_375)));
    }

    #[test]
    fn backup_in_version_3_learns_the_masters_advert_interval() {
        let (mut machine, t0) = started(settings(100));
        let now = at_ms(t0, 500);
        let actions = machine.handle(
            Event::AdvertReceived {
                source: PEER_HIGH,
                priority: 200,
                interval: Duration::from_millis(100),
            },
            now,
        );
        // 3 * 100 ms + 156/256 * 100 ms
        let down = Duration::from_nanos(360_937_500);
        assert_eq!(machine.master_down_interval(), down);
        assert_eq!(actions, vec![Action::ArmTimer(now + down)]);
    }

    #[test]
    fn backup_in_version_2_keeps_its_own_advert_interval() {
        let (mut machine, t0) = started(Settings {
            version: Version::V2,
            ..settings(100)
        });
        let now = at_ms(t0, 500);
        let actions = machine.handle(
            Event::AdvertReceived {
                source: PEER_HIGH,
                priority: 200,
                interval: Duration::from_millis(100),
            },
            now,
        );
        assert_eq!(
            machine.master_down_interval(),
            Duration::from_micros(3_609_375)
        );
        assert_eq!(
            actions,
            vec![Action::ArmTimer(now + Duration::from_micros(3_609_375))]
        );
    }

    #[test]
    fn backup_with_preempt_discards_a_lower_priority_master_and_takes_over_when_its_timer_runs_out()
    {
        let (mut machine, t0) = started(settings(150));
        for ms in [500, 1_500, 2_500] {
            assert_eq!(
                machine.handle(advert(PEER_HIGH, 100), at_ms(t0, ms)),
                vec![]
            );
        }
        assert_eq!(machine.master_address(), Some(PEER_HIGH));
        // Down interval at priority 150: 3 s + 106/256 s.
        let takeover = at_us(t0, 3_414_062) + Duration::from_nanos(500);
        assert_eq!(machine.timer_deadline(), Some(takeover));
        assert_eq!(machine.handle(Event::TimerFired, at_ms(t0, 3_414)), vec![]);
        assert_eq!(
            machine.handle(Event::TimerFired, takeover)[1],
            Action::BecomeMaster
        );
    }

    #[test]
    fn backup_without_preempt_follows_a_lower_priority_master() {
        let (mut machine, t0) = started(Settings {
            preempt: false,
            ..settings(150)
        });
        for s in 1..=10 {
            let now = at_s(t0, s);
            assert_eq!(
                machine.handle(advert(PEER_HIGH, 100), now).len(),
                1,
                "accepted at {s}s"
            );
            assert_eq!(machine.handle(Event::TimerFired, now), vec![]);
        }
        assert_eq!(machine.state(), State::Backup);
        assert_eq!(machine.master_address(), Some(PEER_HIGH));
    }

    #[test]
    fn backup_stays_backup_for_an_equal_priority_advert_even_from_a_lower_address() {
        let (mut machine, t0) = started(settings(100));
        let now = at_s(t0, 1);
        assert_eq!(
            machine.handle(advert(PEER_LOW, 100), now),
            vec![Action::ArmTimer(now + Duration::from_micros(3_609_375))]
        );
        assert_eq!(machine.master_address(), Some(PEER_LOW));
    }

    #[test]
    fn preempt_delay_keeps_a_lower_priority_master_for_the_delay_then_preempts() {
        let (mut machine, t0) = started(Settings {
            preempt_delay: Duration::from_secs(10),
            ..settings(150)
        });
        // The first lower advert (1 s) starts the delay; adverts before 11 s still count.
        for s in 1..=10 {
            let now = at_s(t0, s);
            assert_eq!(
                machine.handle(advert(PEER_HIGH, 100), now).len(),
                1,
                "accepted at {s}s"
            );
            assert_eq!(machine.handle(Event::TimerFired, now), vec![]);
        }
        for s in 11..=13 {
            assert_eq!(
                machine.handle(advert(PEER_HIGH, 100), at_s(t0, s)),
                vec![],
                "discarded at {s}s"
            );
        }
        assert_eq!(machine.state(), State::Backup);
        // Master_Down_Timer from the last accepted advert (10 s): 10 s + 3.4140625 s.
        let takeover = at_s(t0, 13) + Duration::from_nanos(414_062_500);
        assert_eq!(machine.timer_deadline(), Some(takeover));
        assert_eq!(
            machine.handle(Event::TimerFired, takeover)[1],
            Action::BecomeMaster
        );
    }

    #[test]
    fn preempt_delay_starts_again_after_an_equal_or_higher_priority_master() {
        let (mut machine, t0) = started(Settings {
            preempt_delay: Duration::from_secs(10),
            ..settings(150)
        });
        machine.handle(advert(PEER_HIGH, 100), at_s(t0, 1));
        machine.handle(advert(PEER_HIGH, 150), at_s(t0, 5));
        // A new delay starts at 6 s and ends at 16 s.
        for s in 6..=15 {
            assert_eq!(
                machine.handle(advert(PEER_HIGH, 100), at_s(t0, s)).len(),
                1,
                "accepted at {s}s"
            );
        }
        assert_eq!(machine.handle(advert(PEER_HIGH, 100), at_s(t0, 16)), vec![]);
    }

    #[test]
    fn preempt_delay_does_not_hold_back_a_takeover_when_the_master_falls_silent() {
        let (mut machine, t0) = started(Settings {
            preempt_delay: Duration::from_secs(10),
            ..settings(150)
        });
        machine.handle(advert(PEER_HIGH, 100), at_s(t0, 1));
        let takeover = at_s(t0, 4) + Duration::from_nanos(414_062_500);
        assert_eq!(
            machine.handle(Event::TimerFired, takeover)[1],
            Action::BecomeMaster
        );
    }

    #[test]
    fn master_advertises_every_advert_interval_from_when_the_timer_was_delivered() {
        let (mut machine, t0) = started(settings(255));
        assert_eq!(
            machine.handle(Event::TimerFired, at_s(t0, 1)),
            vec![
                Action::SendAdvert { priority: 255 },
                Action::ArmTimer(at_s(t0, 2))
            ]
        );
        // Delivered 50 ms late: the next advert is one interval after this one.
        assert_eq!(
            machine.handle(Event::TimerFired, at_ms(t0, 2_050)),
            vec![
                Action::SendAdvert { priority: 255 },
                Action::ArmTimer(at_ms(t0, 3_050))
            ]
        );
    }

    #[test]
    fn master_answers_a_priority_0_advert_at_once_and_resets_its_advert_timer() {
        let (mut machine, t0) = started(settings(255));
        let now = at_ms(t0, 300);
        assert_eq!(
            machine.handle(advert(PEER_HIGH, 0), now),
            vec![
                Action::SendAdvert { priority: 255 },
                Action::ArmTimer(now + SECOND)
            ]
        );
        assert_eq!(machine.handle(Event::TimerFired, at_s(t0, 1)), vec![]);
        assert_eq!(machine.state(), State::Master);
    }

    #[test]
    fn master_yields_to_a_higher_priority_advert_and_learns_its_interval() {
        let (mut machine, _, became) = master(settings(100));
        let now = became + Duration::from_millis(400);
        let actions = machine.handle(
            Event::AdvertReceived {
                source: PEER_LOW,
                priority: 200,
                interval: Duration::from_millis(500),
            },
            now,
        );
        // 3 * 500 ms + 156/256 * 500 ms
        let down = Duration::from_nanos(1_804_687_500);
        assert_eq!(
            actions,
            vec![Action::BecomeBackup, Action::ArmTimer(now + down)]
        );
        assert_eq!(machine.state(), State::Backup);
        assert_eq!(machine.master_address(), Some(PEER_LOW));
        assert_eq!(machine.last_transition(), Some(now));
    }

    #[test]
    fn master_yields_to_an_equal_priority_advert_from_a_higher_address() {
        let (mut machine, _, became) = master(settings(100));
        let actions = machine.handle(advert(PEER_HIGH, 100), became + SECOND / 2);
        assert_eq!(actions[0], Action::BecomeBackup);
        assert_eq!(machine.master_address(), Some(PEER_HIGH));
    }

    #[test]
    fn master_reasserts_against_an_equal_priority_advert_from_a_lower_address() {
        let (mut machine, _, became) = master(settings(100));
        assert_eq!(
            machine.handle(advert(PEER_LOW, 100), became + SECOND / 2),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::SendGratuitousArp
            ]
        );
        assert_eq!(machine.state(), State::Master);
    }

    #[test]
    fn ipv6_ties_are_broken_by_the_link_local_sources_as_128_bit_numbers() {
        // fe80::1:0 is above fe80::ffff: the whole address counts, not its last bytes.
        let me = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xffff));
        let above = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, 0));
        let below = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xfffe));
        let ipv6 = Settings {
            primary_address: me,
            ..settings(100)
        };
        let (mut machine, _, became) = master(ipv6.clone());
        let actions = machine.handle(advert(below, 100), became + SECOND / 2);
        assert_eq!(actions[0], Action::SendAdvert { priority: 100 });
        assert_eq!(machine.state(), State::Master);
        let (mut machine, _, became) = master(ipv6);
        let actions = machine.handle(advert(above, 100), became + SECOND / 2);
        assert_eq!(actions[0], Action::BecomeBackup);
        assert_eq!(machine.master_address(), Some(above));
    }

    #[test]
    fn lower_priority_adverts_are_answered_at_most_once_per_interval() {
        let (mut machine, _, became) = master(settings(150));
        let first = became + SECOND / 10;
        let answer = vec![
            Action::SendAdvert { priority: 150 },
            Action::SendGratuitousArp,
        ];
        assert_eq!(machine.handle(advert(PEER_HIGH, 100), first), answer);
        for ms in [1, 200, 999] {
            assert_eq!(
                machine.handle(advert(PEER_HIGH, 100), first + Duration::from_millis(ms)),
                Vec::new(),
                "{ms} ms after the last answer"
            );
        }
        assert_eq!(
            machine.handle(advert(PEER_HIGH, 100), first + SECOND),
            answer
        );
        assert_eq!(machine.state(), State::Master);
    }

    #[test]
    fn master_hearing_a_lower_priority_master_advertises_at_once_and_reannounces_the_addresses() {
        let (mut machine, _, became) = master(settings(150));
        let armed = machine.timer_deadline();
        assert_eq!(
            machine.handle(advert(PEER_HIGH, 100), became + SECOND / 2),
            vec![
                Action::SendAdvert { priority: 150 },
                Action::SendGratuitousArp
            ]
        );
        assert_eq!(machine.state(), State::Master);
        assert_eq!(
            machine.timer_deadline(),
            armed,
            "RFC 9568 resets the Adver_Timer only for priority 0"
        );
    }

    #[test]
    fn shutdown_of_a_master_sends_priority_0_and_returns_to_initialize() {
        let (mut machine, t0) = started(settings(255));
        let now = at_ms(t0, 2_500);
        assert_eq!(
            machine.handle(Event::Shutdown, now),
            vec![
                Action::SendAdvert { priority: 0 },
                Action::BecomeInitialize,
                Action::CancelTimer,
            ]
        );
        assert_eq!(machine.state(), State::Initialize);
        assert_eq!(machine.master_address(), None);
        assert_eq!(machine.last_transition(), Some(now));
        assert_eq!(machine.handle(Event::TimerFired, at_s(t0, 3)), vec![]);
    }

    #[test]
    fn shutdown_of_a_backup_returns_to_initialize_without_an_advert() {
        let (mut machine, t0) = started(settings(100));
        assert_eq!(
            machine.handle(Event::Shutdown, at_s(t0, 1)),
            vec![Action::BecomeInitialize, Action::CancelTimer]
        );
        assert_eq!(machine.state(), State::Initialize);
        assert_eq!(machine.handle(Event::TimerFired, at_s(t0, 4)), vec![]);
        assert_eq!(machine.handle(advert(PEER_HIGH, 200), at_s(t0, 5)), vec![]);
        assert_eq!(machine.handle(Event::Shutdown, at_s(t0, 6)), vec![]);
    }

    #[test]
    fn fault_on_a_master_sends_priority_0_and_stops_advertising() {
        let (mut machine, t0) = started(settings(255));
        let now = at_ms(t0, 500);
        assert_eq!(
            machine.handle(Event::FaultChanged { faulty: true }, now),
            vec![
                Action::SendAdvert { priority: 0 },
                Action::BecomeFault,
                Action::CancelTimer,
            ]
        );
        assert_eq!(machine.state(), State::Fault);
        assert_eq!(machine.master_address(), None);
        assert_eq!(machine.last_transition(), Some(now));
        assert_eq!(machine.handle(Event::TimerFired, at_s(t0, 1)), vec![]);
    }

    #[test]
    fn fault_on_a_backup_cancels_its_timer_and_ignores_adverts_but_remembers_the_master() {
        let (mut machine, t0) = started(settings(100));
        assert_eq!(
            machine.handle(Event::FaultChanged { faulty: true }, at_ms(t0, 500)),
            vec![Action::BecomeFault, Action::CancelTimer]
        );
        assert_eq!(machine.handle(advert(PEER_LOW, 50), at_s(t0, 1)), vec![]);
        assert_eq!(machine.master_address(), Some(PEER_LOW));
        assert_eq!(machine.handle(advert(PEER_LOW, 0), at_s(t0, 2)), vec![]);
        assert_eq!(machine.master_address(), None);
        assert_eq!(machine.handle(Event::TimerFired, at_s(t0, 4)), vec![]);
        assert_eq!(machine.state(), State::Fault);
        // A second failure report changes nothing.
        assert_eq!(
            machine.handle(Event::FaultChanged { faulty: true }, at_s(t0, 5)),
            vec![]
        );
    }

    #[test]
    fn recovery_from_fault_returns_to_backup_with_a_fresh_master_down_timer() {
        let (mut machine, t0) = started(settings(100));
        machine.handle(
            Event::AdvertReceived {
                source: PEER_HIGH,
                priority: 200,
                interval: Duration::from_millis(100),
            },
            at_ms(t0, 100),
        );
        machine.handle(Event::FaultChanged { faulty: true }, at_ms(t0, 200));
        let now = at_s(t0, 7);
        assert_eq!(
            machine.handle(Event::FaultChanged { faulty: false }, now),
            vec![
                Action::BecomeBackup,
                Action::ArmTimer(now + Duration::from_micros(3_609_375))
            ]
        );
        assert_eq!(machine.state(), State::Backup);
        assert_eq!(machine.last_transition(), Some(now));
    }

    #[test]
    fn owner_recovering_from_fault_becomes_master_at_once() {
        let (mut machine, t0) = started(settings(255));
        machine.handle(Event::FaultChanged { faulty: true }, at_s(t0, 1));
        let now = at_s(t0, 2);
        assert_eq!(
            machine.handle(Event::FaultChanged { faulty: false }, now),
            vec![
                Action::SendAdvert { priority: 255 },
                Action::BecomeMaster,
                Action::ArmTimer(now + SECOND),
            ]
        );
    }

    #[test]
    fn fault_reported_before_startup_starts_in_fault() {
        let t0 = Instant::now();
        let mut machine = Machine::new(settings(255));
        assert_eq!(
            machine.handle(Event::FaultChanged { faulty: true }, t0),
            vec![]
        );
        assert_eq!(machine.state(), State::Initialize);
        assert_eq!(
            machine.handle(Event::Startup, at_ms(t0, 10)),
            vec![Action::BecomeFault]
        );
        assert_eq!(machine.state(), State::Fault);
        assert_eq!(
            machine.handle(Event::Startup, at_ms(t0, 20)),
            vec![],
            "start-up happens once"
        );
    }

    #[test]
    fn master_whose_priority_drops_below_a_backups_only_advertises_the_lower_priority() {
        let (mut machine, _, became) = master(settings(150));
        assert_eq!(
            machine.handle(
                Event::PriorityChanged { effective: 90 },
                became + SECOND / 2
            ),
            vec![]
        );
        assert_eq!(machine.state(), State::Master);
        assert_eq!(machine.effective_priority(), 90);
        assert_eq!(
            machine.handle(Event::TimerFired, became + SECOND)[0],
            Action::SendAdvert { priority: 90 }
        );
    }

    #[test]
    fn backup_whose_priority_rises_above_the_masters_preempts_after_the_next_advert() {
        let (mut machine, t0) = started(settings(90));
        machine.handle(advert(PEER_HIGH, 100), at_ms(t0, 500));
        // Armed at 0.5 s with priority 90: 3 s + 166/256 s.
        let armed = at_ms(t0, 500) + Duration::from_nanos(3_648_437_500);
        assert_eq!(machine.timer_deadline(), Some(armed));
        assert_eq!(
            machine.handle(Event::PriorityChanged { effective: 110 }, at_s(t0, 1)),
            vec![]
        );
        assert_eq!(machine.effective_priority(), 110);
        assert_eq!(machine.skew_time(), Duration::from_nanos(570_312_500));
        // The master's next adverts are now lower: discarded, the timer keeps running.
        for ms in [1_500, 2_500, 3_500] {
            assert_eq!(
                machine.handle(advert(PEER_HIGH, 100), at_ms(t0, ms)),
                vec![]
            );
        }
        assert_eq!(machine.timer_deadline(), Some(armed));
        assert_eq!(
            machine.handle(Event::TimerFired, armed)[..2],
            [Action::SendAdvert { priority: 110 }, Action::BecomeMaster]
        );
    }

    #[test]
    fn owner_priority_255_ignores_priority_changes() {
        let (mut machine, t0) = started(settings(255));
        machine.handle(Event::PriorityChanged { effective: 200 }, at_ms(t0, 100));
        assert_eq!(machine.effective_priority(), 255);
        assert_eq!(
            machine.handle(Event::TimerFired, at_s(t0, 1))[0],
            Action::SendAdvert { priority: 255 }
        );
    }

    #[test]
    fn priority_changes_stay_within_1_and_254() {
        let (mut machine, t0) = started(settings(100));
        machine.handle(Event::PriorityChanged { effective: 0 }, t0);
        assert_eq!(machine.effective_priority(), 1);
        machine.handle(Event::PriorityChanged { effective: 255 }, t0);
        assert_eq!(machine.effective_priority(), 254);
    }

    #[test]
    fn timer_fired_with_nothing_armed_is_ignored() {
        let t0 = Instant::now();
        let mut machine = Machine::new(settings(100));
        assert_eq!(machine.handle(Event::TimerFired, at_s(t0, 100)), vec![]);
        assert_eq!(machine.state(), State::Initialize);
    }

    #[test]
    fn adverts_from_our_own_address_are_ignored() {
        let (mut machine, t0) = started(settings(100));
        assert_eq!(machine.handle(advert(ME, 200), at_s(t0, 1)), vec![]);
        assert_eq!(machine.master_address(), None);
        let (mut owner, t0) = started(settings(255));
        assert_eq!(owner.handle(advert(ME, 255), at_ms(t0, 1)), vec![]);
        assert_eq!(owner.state(), State::Master);
    }

    #[test]
    fn settings_from_config_take_the_instance_fields() {
        let text = r#"
[node]
name = "lb2"
interface = "eth0"

[[vrrp]]
name = "VI_1"
virtual_router_id = 51
priority = 150
version = 2
advert_interval = "2s"
preempt = false
preempt_delay = "30s"
virtual_ipaddress = ["192.0.2.10"]
"#;
        let loaded = crate::config::parse(text, std::path::Path::new("test.toml"))
            .expect("the test configuration is valid");
        let instance = &loaded.config.vrrp[0];
        assert_eq!(
            Settings::from_config(instance, ME),
            Settings {
                version: Version::V2,
                priority: 150,
                advert_interval: Duration::from_secs(2),
                preempt: false,
                preempt_delay: Duration::from_secs(30),
                primary_address: ME,
            }
        );
        let v3 = crate::config::VrrpInstance {
            version: 3,
            ..instance.clone()
        };
        assert_eq!(Settings::from_config(&v3, ME).version, Version::V3);
    }

    /// Two machines on one link with no latency; adverts can be dropped (a partition).
    struct Link {
        nodes: [Machine; 2],
        addresses: [IpAddr; 2],
        timers: [Option<Instant>; 2],
        in_flight: VecDeque<(Instant, usize, Event)>,
        partitioned: bool,
        /// Every action with when and by whom.
        log: Vec<(Instant, usize, Action)>,
    }

    impl Link {
        fn new(a: Settings, b: Settings) -> Link {
            let addresses = [a.primary_address, b.primary_address];
            Link {
                nodes: [Machine::new(a), Machine::new(b)],
                addresses,
                timers: [None, None],
                in_flight: VecDeque::new(),
                partitioned: false,
                log: Vec::new(),
            }
        }

        fn deliver(&mut self, node: usize, event: Event, now: Instant) {
            for action in self.nodes[node].handle(event, now) {
                match action {
                    Action::SendAdvert { priority } if !self.partitioned => {
                        let interval = self.nodes[node].settings().advert_interval;
                        let source = self.addresses[node];
                        let advert = Event::AdvertReceived {
                            source,
                            priority,
                            interval,
                        };
                        self.in_flight.push_back((now, 1 - node, advert));
                    }
                    Action::ArmTimer(deadline) => self.timers[node] = Some(deadline),
                    Action::CancelTimer => self.timers[node] = None,
                    _ => {}
                }
                self.log.push((now, node, action));
            }
        }

        /// Runs every advert and timer due up to `end`, in time order.
        fn run_until(&mut self, end: Instant) {
            loop {
                if let Some((now, to, event)) = self.in_flight.pop_front() {
                    self.deliver(to, event, now);
                    continue;
                }
                let next = (0..2).filter_map(|i| self.timers[i].map(|d| (d, i))).min();
                match next {
                    Some((deadline, node)) if deadline <= end => {
                        self.timers[node] = None;
                        self.deliver(node, Event::TimerFired, deadline);
                    }
                    _ => break,
                }
            }
        }

        fn states(&self) -> [State; 2] {
            [self.nodes[0].state(), self.nodes[1].state()]
        }
    }

    fn pair(interval: Duration) -> Link {
        Link::new(
            Settings {
                advert_interval: interval,
                primary_address: PEER_LOW,
                ..settings(101)
            },
            Settings {
                advert_interval: interval,
                primary_address: PEER_HIGH,
                ..settings(100)
            },
        )
    }

    #[test]
    fn a_pair_elects_the_higher_priority_and_the_backup_takes_over_a_skew_time_after_shutdown() {
        let t0 = Instant::now();
        let mut link = pair(SECOND);
        link.deliver(0, Event::Startup, t0);
        link.deliver(1, Event::Startup, t0);
        link.run_until(at_s(t0, 10));
        assert_eq!(link.states(), [State::Master, State::Backup]);
        // Priority 101 waited 3 s + 155/256 s.
        assert_eq!(
            link.nodes[0].last_transition(),
            Some(at_us(t0, 3_605_468) + Duration::from_nanos(750))
        );
        assert_eq!(link.nodes[1].master_address(), Some(PEER_LOW));

        let stop = at_s(t0, 10);
        link.deliver(0, Event::Shutdown, stop);
        link.run_until(at_us(t0, 10_609_374));
        assert_eq!(link.states(), [State::Initialize, State::Backup]);
        link.run_until(at_s(t0, 11));
        assert_eq!(link.states(), [State::Initialize, State::Master]);
        assert_eq!(
            link.nodes[1].last_transition(),
            Some(stop + Duration::from_micros(609_375))
        );
    }

    #[test]
    fn a_master_whose_proxy_fails_hands_over_after_the_backups_skew_time_alone() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(100);
        let mut link = pair(interval);
        link.deliver(0, Event::Startup, t0);
        link.deliver(1, Event::Startup, t0);
        link.run_until(at_s(t0, 2));
        assert_eq!(link.states(), [State::Master, State::Backup]);

        let failed = at_s(t0, 2);
        link.deliver(0, Event::FaultChanged { faulty: true }, failed);
        link.run_until(at_s(t0, 3));
        assert_eq!(link.states(), [State::Fault, State::Master]);
        // 156/256 * 100 ms, against 3 * 100 ms + skew had the master merely gone quiet.
        assert_eq!(
            link.nodes[1].last_transition(),
            Some(failed + Duration::from_nanos(60_937_500))
        );

        // Recovered, the higher priority takes the VIP back when it hears the lower master.
        link.deliver(0, Event::FaultChanged { faulty: false }, at_s(t0, 3));
        link.run_until(at_s(t0, 5));
        assert_eq!(link.states(), [State::Master, State::Backup]);
    }

    #[test]
    fn after_a_split_brain_heals_the_higher_priority_keeps_the_vip_and_reannounces_it() {
        let t0 = Instant::now();
        let mut link = pair(SECOND);
        link.partitioned = true;
        link.deliver(0, Event::Startup, t0);
        link.deliver(1, Event::Startup, t0);
        // A advertises at 10.605 s (lost), B at 10.609 s: heal in between so A hears B first.
        let healed = at_ms(t0, 10_607);
        link.run_until(healed);
        assert_eq!(link.states(), [State::Master, State::Master]);

        link.partitioned = false;
        link.log.clear();
        link.run_until(at_s(t0, 12));
        assert_eq!(link.states(), [State::Master, State::Backup]);
        assert!(link.log.iter().any(|(when, node, action)| *node == 0
            && *action == Action::SendGratuitousArp
            && *when >= healed));
    }
}
