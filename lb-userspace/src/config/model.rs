//! The validated configuration: the types the rest of Tandem reads.
//!
//! Everything here has passed validation (see the parent module), so users of these types can
//! rely on the documented ranges without checking again: a [`VrrpInstance`]'s advert interval
//! fits its protocol version, every [`Service`] has at least one backend, and so on. Defaults
//! are filled in; nothing is optional unless absence means something (a [`Service`] without a
//! [`Session`] has no affinity).
//!
//! The types derive `Serialize` so `tandem status --json` can show the configuration it runs
//! with, under the file's key names; durations serialize in the same human form the file uses
//! ("1s", "300ms").

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::proxy::{
    AccessLog, AccessLogLevel, BackendProtocol, BackendTls, CertificateFiles, LogTarget,
    ProxySettings, ServiceHttp, Tls,
};

/// Where `tandem run` and `tandem check` look for the configuration when not told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tandem/tandem.toml";
/// Where the daemon listens for `tandem status` and friends unless `[node] control_socket` says.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/tandem/tandem.sock";

/// One node's configuration: the file's `[node]`, `[[vrrp]]` and `[[service]]` sections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub node: Node,
    /// Empty means no failover: the node serves wherever its listen addresses exist.
    pub vrrp: Vec<VrrpInstance>,
    pub services: Vec<Service>,
    /// `[proxy]`: the HTTP engine's timeouts, limits, headers and access log.
    pub proxy: ProxySettings,
    /// `[replication]`: where learned sessions go to and come from; `None` keeps them local.
    pub replication: Option<Replication>,
    /// `[bgp]`: the VIPs this node announces to its routers (active-active); `None`: no BGP.
    pub bgp: Option<Bgp>,
}

/// `[bgp]`: the node announces `vips` to `peers` over BGP (through a BIRD 2 it runs), each as
/// a host route, while it can serve them. Every node of an active-active group announces the
/// same VIPs, and the routers spread the flows over the nodes by ECMP.
///
/// Serialized without the peers' passwords (see [`BgpPeer`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bgp {
    /// This node's AS number (1..=4294967294; private ASes are 64512..=65534 and
    /// 4200000000..=4294967294).
    pub local_as: u32,
    /// The BGP identifier: an IPv4 address unique among the routers, usually the node's own.
    pub router_id: std::net::Ipv4Addr,
    /// Never empty; unique addresses.
    pub peers: Vec<BgpPeer>,
    /// Never empty; each is served by at least one `[[service]]` and is in no `[[vrrp]]`
    /// instance. Announced as /32 (IPv4) or /128 (IPv6).
    pub vips: Vec<IpAddr>,
    /// The hold time offered to peers that set none of their own: 3 s..=65535 s in whole
    /// seconds (RFC 4271's minimum is 3 s). The router withdraws a silent node's routes after
    /// it. Default 9 s (BIRD's own default is 240 s, far too long for failover).
    #[serde(with = "duration_text")]
    pub hold_time: Duration,
}

impl Bgp {
    pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(9);
    pub const DEFAULT_PORT: u16 = 179;
}

/// One `[bgp] peers` entry: a router this node announces its VIPs to.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct BgpPeer {
    pub address: IpAddr,
    pub remote_as: u32,
    /// Default 179.
    pub port: u16,
    /// TCP MD5 signature (RFC 2385) password, as BIRD's `password`. Serialized as whether
    /// there is one (`"password": true`), never its text.
    #[serde(serialize_with = "serialize_is_set")]
    pub password: Option<String>,
    /// Overrides `[bgp] hold_time` for this peer.
    #[serde(with = "duration_text")]
    pub hold_time: Duration,
}

fn serialize_is_set<S: serde::Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(value.is_some())
}

impl std::fmt::Debug for BgpPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpPeer")
            .field("address", &self.address)
            .field("remote_as", &self.remote_as)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("hold_time", &self.hold_time)
            .finish()
    }
}

/// `[replication]`: the TCP link over which nodes share learned session entries, so a
/// session keeps its backend after a failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replication {
    /// Where this node accepts entries from its peers (a real address of the node, not a VIP).
    pub listen: SocketAddr,
    /// The other nodes' `listen` addresses; never empty. Entries are accepted only from these
    /// hosts.
    pub peers: Vec<SocketAddr>,
}

/// `[node]`: who this node is and how it drives the data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    /// The interface XDP attaches to, and the default for every `[[vrrp]]` instance.
    pub interface: String,
    pub dataplane: DataplaneMode,
    /// bpffs directory where the program and maps are pinned.
    pub bpf_pin_dir: PathBuf,
    pub control_socket: PathBuf,
    /// `metrics`: where `GET /metrics` serves the Prometheus text format; `None` means off.
    pub metrics: Option<SocketAddr>,
}

/// How the node forwards L4 services (`[node] dataplane`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataplaneMode {
    /// XDP in the driver ("native"): the fast path.
    #[default]
    Xdp,
    /// XDP in the generic (SKB) hook: works on any interface, e.g. veth in the lab, but slower.
    XdpGeneric,
    /// No XDP program: L4 services go through the userspace relay.
    None,
}

impl DataplaneMode {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            DataplaneMode::Xdp => "xdp",
            DataplaneMode::XdpGeneric => "xdp-generic",
            DataplaneMode::None => "none",
        }
    }
}

/// `[[vrrp]]`: one virtual router, i.e. a set of virtual addresses that float between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpInstance {
    pub name: String,
    /// Defaults to `[node] interface`.
    pub interface: String,
    /// 1..=255, unique per interface (it is the last byte of the virtual MAC).
    pub virtual_router_id: u8,
    /// 1..=255; the highest priority becomes master. 255 means "owns the addresses" (RFC 5798).
    pub priority: u8,
    /// 2 or 3. Version 3 (RFC 5798) is the default; 2 is what keepalived speaks by default.
    pub version: u8,
    /// v3: a multiple of 10 ms in 10 ms..=40.95 s; v2: whole seconds 1..=255.
    #[serde(with = "duration_text")]
    pub advert_interval: Duration,
    pub preempt: bool,
    #[serde(with = "duration_text")]
    pub preempt_delay: Duration,
    /// Never empty; no address appears in two instances.
    pub virtual_ipaddress: Vec<IpAddr>,
    /// Empty means multicast adverts (224.0.0.18).
    pub unicast_peer: Vec<IpAddr>,
    /// Multicast only: the only sources adverts are taken from (empty: any). With unicast
    /// peers, adverts are taken from the peers only.
    pub allowed_sources: Vec<IpAddr>,
    pub track: Vec<Track>,
    /// Gratuitous ARPs per address on becoming master, sent at once and again after
    /// `garp_master_delay` (keepalived's `garp_master_repeat`; 0 sends none).
    pub garp_master_repeat: u32,
    /// Delay before the second burst of gratuitous ARPs (keepalived's `garp_master_delay`;
    /// zero means no second burst).
    #[serde(with = "duration_text")]
    pub garp_master_delay: Duration,
    /// Run on every transition as `SCRIPT INSTANCE name state priority`, like keepalived's
    /// `notify`.
    pub notify: Option<String>,
    /// Version 3 only: whether the checksum covers the IPv4 pseudo-header (keepalived and
    /// RFC 5798 do; RFC 9568 and some vendors do not).
    pub checksum_pseudo_header: bool,
    /// Version 2 only: the password this instance's adverts carry and the peer's must carry;
    /// `None`: no authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<VrrpAuthentication>,
}

impl VrrpInstance {
    /// keepalived's defaults.
    pub const DEFAULT_GARP_REPEAT: u32 = 5;
    pub const DEFAULT_GARP_DELAY: Duration = Duration::from_secs(5);
    /// keepalived's default, so a migrated config elects the same way.
    pub const DEFAULT_PRIORITY: u8 = 100;
    pub const DEFAULT_VERSION: u8 = 3;
    pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
}

/// `[[vrrp]] authentication`: VRRPv2's simple text password (RFC 2338 Auth Type 1),
/// keepalived's `authentication { auth_type PASS  auth_pass ... }`, so that a pair using it
/// can run Tandem on one side. Not security: every advert carries the password in clear. It
/// keeps a neighbour configured for another pair from joining this one.
///
/// Serialized (`tandem status --json`, reload messages) and debug-printed without the
/// password, which says only that there is one.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum VrrpAuthentication {
    /// `{ type = "PASS", password = "..." }`: 1 to 8 bytes, no NUL byte.
    #[serde(rename = "PASS")]
    Pass {
        #[serde(skip_serializing)]
        password: String,
    },
}

impl VrrpAuthentication {
    /// keepalived's `auth_data` is 8 bytes; RFC 2338 §5.3.10 likewise.
    pub const MAX_PASSWORD_BYTES: usize = 8;
}

impl std::fmt::Debug for VrrpAuthentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VrrpAuthentication::Pass { .. } => f.write_str("Pass { password: .. }"),
        }
    }
}

/// Something whose failure lowers an instance's priority by `weight`, or, with weight 0, puts
/// the instance in the Fault state (keepalived's semantics). Weights are in -254..=254.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Track {
    /// A check Tandem runs from inside the daemon (`{ builtin = "proxy" }`).
    Builtin { check: BuiltinCheck, weight: i32 },
    /// A command run through the shell on an interval, like keepalived's `vrrp_script`.
    Script {
        script: String,
        #[serde(with = "duration_text")]
        interval: Duration,
        #[serde(with = "duration_text")]
        timeout: Duration,
        /// Successes in a row before a failed script counts as up again.
        rise: u32,
        /// Failures in a row before a script counts as down.
        fall: u32,
        weight: i32,
    },
    /// An interface whose link going down counts as a failure.
    Interface { interface: String, weight: i32 },
}

impl Track {
    /// keepalived's `vrrp_script` default interval.
    pub const DEFAULT_SCRIPT_INTERVAL: Duration = Duration::from_secs(1);

    /// The priority change on failure (0: go to Fault instead).
    pub fn weight(&self) -> i32 {
        match self {
            Track::Builtin { weight, .. }
            | Track::Script { weight, .. }
            | Track::Interface { weight, .. } => *weight,
        }
    }
}

/// Checks built into the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinCheck {
    /// The local proxy accepts and answers (replaces the classic `killall -0 pound`).
    Proxy,
}

/// `[[service]]`: an address clients connect to and the backends that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    /// Unique per (address, port, transport protocol) across services.
    pub listen: SocketAddr,
    pub mode: ServiceMode,
    /// No address twice. Empty only while every backend is written by name and the names are
    /// not resolved yet: a running node's config has the names' addresses here
    /// ([`crate::names`]).
    pub backends: Vec<Backend>,
    /// Backends written by host name; each address a name resolves to is one more backend.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backend_names: Vec<NamedBackend>,
    /// How often the names in `backend_names` are resolved again.
    #[serde(with = "duration_text")]
    pub resolve_interval: Duration,
    /// Of the `backends` that came from a name, which name (filled by the resolver).
    #[serde(skip)]
    pub backend_hosts: std::collections::BTreeMap<SocketAddr, String>,
    pub health: HealthCheck,
    /// Only for `mode = "http"`.
    pub session: Option<Session>,
    /// How the proxy spreads requests without a session (`mode = "http"` only; L4 services
    /// are placed by Maglev).
    pub balance: Balance,
    /// `host`, `path_prefix`, `tls`: only for `mode = "http"` (empty otherwise).
    #[serde(flatten)]
    pub http: ServiceHttp,
}

/// `balance`: how an HTTP service picks a backend for a request without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Smooth weighted round robin (nginx's): weights 3:1 give A A B A, not A A A B.
    #[default]
    RoundRobin,
    /// A weighted random choice per request.
    Random,
}

impl Balance {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::Random => "random",
        }
    }
}

/// How a service is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// L7: the kernel passes the traffic up to the proxy.
    #[default]
    Http,
    /// L4 TCP: forwarded in XDP by direct server return (or the userspace relay).
    Tcp,
    /// L4 UDP: as `Tcp`.
    Udp,
}

impl ServiceMode {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Http => "http",
            ServiceMode::Tcp => "tcp",
            ServiceMode::Udp => "udp",
        }
    }

    /// The IP protocol number clients use ([`lb_common::IPPROTO_TCP`] or `IPPROTO_UDP`).
    pub fn ip_protocol(self) -> u8 {
        match self {
            ServiceMode::Http | ServiceMode::Tcp => lb_common::IPPROTO_TCP,
            ServiceMode::Udp => lb_common::IPPROTO_UDP,
        }
    }

    /// Whether the service is forwarded at L4 (XDP or the relay) rather than by the proxy.
    pub fn is_l4(self) -> bool {
        !matches!(self, ServiceMode::Http)
    }
}

/// One backend of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Backend {
    pub address: SocketAddr,
    /// 1..=1000; the share of new flows and sessions relative to the other backends.
    pub weight: u32,
    /// Used only while every regular (non-emergency) backend is down (Pound's `Emergency`);
    /// `mode = "http"` only.
    pub emergency: bool,
}

/// A backend written by host name (`"http1.example.com:80"`): every address of one family the
/// name resolves to (through the system resolver, so /etc/hosts counts; the family is chosen
/// by `names::one_family`) is a backend with this weight, as HAProxy's `server-template` and
/// nginx's `resolve` do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NamedBackend {
    /// Lower case.
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub emergency: bool,
}

impl NamedBackend {
    /// "host:port", as written.
    pub fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// How a backend's address is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddress {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl Service {
    /// Re-resolution every 30 s, as HAProxy's resolvers hold valid names and nginx's
    /// `resolver valid=30s` is commonly set.
    pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
}

impl Backend {
    pub const DEFAULT_WEIGHT: u32 = 1;
    pub const MAX_WEIGHT: u32 = 1000;
}

/// How backends are probed (`health = { ... }`). Pound's defaults: a connect check every 2 s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// Greater than zero and at most `interval`.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Successful probes in a row before a down backend is up again.
    pub rise: u32,
    /// Failed probes in a row before an up backend is down.
    pub fall: u32,
    #[serde(flatten)]
    pub kind: HealthKind,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    /// Used when it fits in the interval; a shorter interval is the timeout too.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_RISE: u32 = 2;
    pub const DEFAULT_FALL: u32 = 3;
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
            kind: HealthKind::Tcp,
        }
    }
}

/// What a health probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HealthKind {
    /// A TCP connect to the backend's address (Pound's check).
    Tcp,
    /// `GET path` over HTTP/1.1; healthy when the status equals `expect_status`.
    Http {
        path: String,
        #[serde(rename = "expect")]
        expect_status: u16,
    },
}

impl HealthKind {
    pub const DEFAULT_HTTP_PATH: &'static str = "/";
    pub const DEFAULT_HTTP_STATUS: u16 = 200;
}

/// Session affinity of an L7 service (Pound's `Session` block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    #[serde(rename = "type")]
    pub kind: SessionKind,
    /// The cookie, header or query parameter name; `None` exactly for `Ip` and `Basic`.
    pub id: Option<String>,
    /// Idle time after which an entry is forgotten (greater than zero).
    #[serde(with = "duration_text")]
    pub ttl: Duration,
    /// Bound on the session table (at least 1); the oldest entries go first.
    pub max_entries: usize,
    /// Whether the proxy learns sessions into a table, or (cookie only) inserts a cookie of
    /// its own that names the backend.
    pub mode: SessionMode,
}

/// `session.mode`: where a session's backend is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    /// Pound's way: a table of keys seen (and, for cookies, set by the backend), each with
    /// the backend that served it; replicated to the peer when `[replication]` is set.
    #[default]
    Learn,
    /// The proxy sets the cookie `id` to an opaque backend id and reads it back: no table,
    /// nothing to replicate. Only for `type = "cookie"`.
    Insert,
}

impl SessionMode {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionMode::Learn => "learn",
            SessionMode::Insert => "insert",
        }
    }
}

impl Session {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
}

/// What identifies a client's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// A cookie named `id`, learned from the backend's Set-Cookie.
    Cookie,
    /// The client's IP address.
    Ip,
    /// A request header named `id`.
    Header,
    /// A query parameter named `id`.
    Url,
    /// The user name of HTTP basic authentication.
    Basic,
}

impl SessionKind {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Cookie => "cookie",
            SessionKind::Ip => "ip",
            SessionKind::Header => "header",
            SessionKind::Url => "url",
            SessionKind::Basic => "basic",
        }
    }

    /// What `id` names for this kind, or `None` when the kind takes no `id`.
    pub fn id_meaning(self) -> Option<&'static str> {
        match self {
            SessionKind::Cookie => Some("the cookie name"),
            SessionKind::Header => Some("the header name"),
            SessionKind::Url => Some("the query parameter name"),
            SessionKind::Ip | SessionKind::Basic => None,
        }
    }
}

/// Serializes durations as the config file writes them ("1s", "1m 30s"), not as
/// `{ secs, nanos }`, so JSON status output reads like the configuration.
pub(super) mod duration_text {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }
}

/// What a command about a backend (`tandem drain`, `tandem enable`) answers when service
/// `service` has no backend `backend`: the backends it does have, to pick from.
pub fn no_such_backend(
    service: &str,
    backend: SocketAddr,
    known: impl IntoIterator<Item = SocketAddr>,
) -> String {
    let known: Vec<String> = known.into_iter().map(|b| b.to_string()).collect();
    format!(
        "service {service} has no backend {backend}; its backends: {}",
        known.join(", ")
    )
}
