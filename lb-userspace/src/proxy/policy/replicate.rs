//! Replication of learned sessions to the peer node, so a session keeps its backend after the
//! VIP moves.
//!
//! Pound keeps its session table in one process: after a failover every user loses their
//! backend. Here each node sends the entries it learns (key, backend, per service) to its peers
//! over TCP, and inserts what it receives into its own tables. Only learned tables travel;
//! hashed placement needs no transfer (both nodes compute the same Maglev table) and the
//! insert-mode cookie carries its backend itself.
//!
//! The same link carries the XDP data plane's L4 flows (see `dataplane::flowshare`), so that
//! a flow the router moves to another node (active-active, ECMP) reaches the backend the
//! first node chose even while the nodes' backend sets differ: one link per peer, one
//! listener, one list of peers for both kinds of entry.
//!
//! Wire format: one JSON object per line (see [`Message`]). A learned session is
//! `{"service":"web","key":"abc","backend":"198.18.0.102:80"}` ([`Entry`]); a flow is
//! `{"service":"db","flow":{"proto":"tcp","client":"198.18.0.10:42000","vip":"198.18.0.99:5432"},"backend":"198.18.0.102:5432"}`
//! ([`FlowEntry`]), told apart by its `flow` member. A node from before flows existed refuses
//! flow lines as malformed and counts them, and goes on with the next line, so mixed versions
//! keep replicating sessions. Lines longer than [`MAX_LINE`] end the connection. The receiver
//! accepts connections only from the configured peers' addresses and ignores entries for
//! services or backends it does not have.
//!
//! Sending never blocks a request: entries go to a bounded queue per peer, which drops its
//! oldest entry when full (and counts it). Each peer has a task that connects (reconnecting
//! with exponential backoff), sends a snapshot of every table first (which heals whatever was
//! dropped or lost while the link was down), then streams the queue. Flows have no snapshot
//! (the connection table may hold a quarter of a million of them): the flows queued while the
//! link was down stay queued and follow the snapshot.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config;

/// Longest line accepted, in bytes: a key is at most `affinity::MAX_KEY_BYTES`, so real
/// entries are far shorter.
pub const MAX_LINE: usize = 4096;
/// Entries waiting per peer before the oldest are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Reconnect backoff: first wait, and the most it grows to.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a bind failure waits before the listener tries again.
const REBIND_DELAY: Duration = Duration::from_secs(2);

/// One learned session as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The `[[service]] name` whose table it belongs to.
    pub service: String,
    /// The session key (cookie value, client IP, header value, ...).
    pub key: String,
    pub backend: SocketAddr,
}

/// The IP protocol of a shared flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowProto {
    Tcp,
    Udp,
}

impl FlowProto {
    /// The protocol of IP protocol number `proto`, if a flow can have it.
    pub fn from_number(proto: u8) -> Option<FlowProto> {
        match proto {
            lb_common::IPPROTO_TCP => Some(FlowProto::Tcp),
            lb_common::IPPROTO_UDP => Some(FlowProto::Udp),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        match self {
            FlowProto::Tcp => lb_common::IPPROTO_TCP,
            FlowProto::Udp => lb_common::IPPROTO_UDP,
        }
    }
}

/// An L4 flow as the client sent it (the XDP connection table's key, in addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowTuple {
    pub proto: FlowProto,
    pub client: SocketAddr,
    /// The virtual IP and port the client sent to.
    pub vip: SocketAddr,
}

/// One L4 flow and the backend a node sends it to. Backends travel as addresses because
/// backend ids are numbered by each node for its own maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    /// The `[[service]] name` (mode tcp or udp) the flow belongs to.
    pub service: String,
    pub flow: FlowTuple,
    pub backend: SocketAddr,
}

/// One line of the link: a learned session or an L4 flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Session(Entry),
    Flow(FlowEntry),
}

/// Why a received line was not an entry.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a replication entry: {0}")]
    Json(#[from] serde_json::Error),
}

impl Message {
    /// The message as one line, newline included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Session(entry) => entry.encode(),
            Message::Flow(flow) => {
                // Plain fields: serializing cannot fail (an empty line would be skipped).
                let mut line = serde_json::to_vec(flow).unwrap_or_default();
                line.push(b'\n');
                line
            }
        }
    }

    /// Parses one line (with or without its newline): a flow if it has a `flow` member, a
    /// session otherwise (the only kind older nodes send).
    pub fn decode(line: &[u8]) -> Result<Message, DecodeError> {
        let value: serde_json::Value = serde_json::from_slice(line.trim_ascii())?;
        if value.get("flow").is_some() {
            Ok(Message::Flow(serde_json::from_value(value)?))
        } else {
            Ok(Message::Session(serde_json::from_value(value)?))
        }
    }
}

impl Entry {
    /// The entry as one line, newline included.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing three plain fields cannot fail; an empty line would be skipped anyway.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Parses one line (with or without its newline).
    pub fn decode(line: &[u8]) -> Result<Entry, DecodeError> {
        Ok(serde_json::from_slice(line.trim_ascii())?)
    }
}

/// Where received entries go: a service's session table. Implemented by
/// [`super::upstream::Upstream`].
pub trait SessionSink: Send + Sync {
    /// Inserts an entry received from a peer; `false` if it does not fit (unknown backend,
    /// no learned sessions in this service).
    fn apply_replicated(&self, key: &str, backend: SocketAddr, now: Instant) -> bool;
    /// Every live entry, to send to a peer that (re)connects.
    fn replication_snapshot(&self, now: Instant) -> Vec<(String, SocketAddr)>;
}

/// Where received flows go: the XDP data plane's connection tables. It counts what it does
/// with them itself (its status shows them).
pub trait FlowSink: Send + Sync {
    fn apply_flows(&self, flows: &[FlowEntry]);
}

/// The node's replication: one listener, one outgoing link per peer, and the services whose
/// tables take part.
pub struct Replicator {
    listen: SocketAddr,
    peers: Vec<Arc<Peer>>,
    sinks: RwLock<HashMap<String, Weak<dyn SessionSink>>>,
    flows: RwLock<Option<Weak<dyn FlowSink>>>,
    received: AtomicU64,
    rejected: AtomicU64,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// One peer's outgoing link and queue.
#[derive(Debug)]
struct Peer {
    address: SocketAddr,
    capacity: usize,
    queue: Mutex<VecDeque<Message>>,
    wake: Notify,
    connected: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
}

/// Replication as `tandem status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationStatus {
    pub listen: SocketAddr,
    pub peers: Vec<PeerStatus>,
    /// Entries received and inserted.
    pub received: u64,
    /// Entries received but refused (unknown service or backend, malformed; flows while no
    /// data plane takes them). Flows have their own counters in the data plane's status.
    pub rejected: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub address: SocketAddr,
    pub connected: bool,
    pub queued: usize,
    pub sent: u64,
    /// Entries dropped because the queue was full (the oldest go first).
    pub dropped: u64,
}

impl Replicator {
    /// Replication as configured, with the default queue size. Nothing runs until
    /// [`Replicator::spawn`].
    pub fn new(config: &config::Replication) -> Arc<Replicator> {
        Replicator::with_queue_capacity(config, DEFAULT_QUEUE_CAPACITY)
    }

    /// [`Replicator::new`] with `capacity` entries queued per peer at most (at least 1).
    pub fn with_queue_capacity(config: &config::Replication, capacity: usize) -> Arc<Replicator> {
        let peers = config
            .peers
            .iter()
            .map(|&address| {
                Arc::new(Peer {
                    address,
                    capacity: capacity.max(1),
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                    connected: AtomicBool::new(false),
                    sent: AtomicU64::new(0),
                    dropped: AtomicU64::new(0),
                })
            })
            .collect();
        Arc::new(Replicator {
            listen: config.listen,
            peers,
            sinks: RwLock::new(HashMap::new()),
            flows: RwLock::new(None),
            received: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// Lets `service`'s table send and receive entries. The replicator holds it weakly, so a
    /// dropped upstream simply stops taking part.
    pub fn register(&self, service: &str, sink: Weak<dyn SessionSink>) {
        self.sinks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(service.to_owned(), sink);
    }

    /// Lets the data plane receive flows (held weakly, as the session tables are).
    pub fn register_flows(&self, sink: Weak<dyn FlowSink>) {
        *self
            .flows
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sink);
    }

    /// Queues `entry` for every peer; never blocks.
    pub fn publish(&self, entry: Entry) {
        for peer in &self.peers {
            peer.push(Message::Session(entry.clone()));
        }
    }

    /// Queues `flows` for every peer, one lock and one wake-up per peer; never blocks.
    pub fn publish_flows(&self, flows: &[FlowEntry]) {
        if flows.is_empty() {
            return;
        }
        for peer in &self.peers {
            peer.push_all(flows.iter().cloned().map(Message::Flow));
        }
    }

    /// Hands received flows to the data plane; counted as refused when none takes them.
    fn apply_flows(&self, flows: &[FlowEntry]) {
        let sink = self
            .flows
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        match sink {
            Some(sink) => sink.apply_flows(flows),
            None => {
                self.rejected
                    .fetch_add(flows.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Starts the listener and one sender per peer; they stop when `shutdown` is cancelled.
    /// Must be called inside a tokio runtime.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(self.clone().listen_loop(shutdown.clone()));
        for peer in &self.peers {
            tokio::spawn(self.clone().send_loop(peer.clone(), shutdown.clone()));
        }
    }

    pub fn status(&self) -> ReplicationStatus {
        ReplicationStatus {
            listen: self.listen,
            peers: self
                .peers
                .iter()
                .map(|peer| PeerStatus {
                    address: peer.address,
                    connected: peer.connected.load(Ordering::Relaxed),
                    queued: peer.lock().len(),
                    sent: peer.sent.load(Ordering::Relaxed),
                    dropped: peer.dropped.load(Ordering::Relaxed),
                })
                .collect(),
            received: self.received.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// Inserts a received entry into its service's table; `false` if refused.
    pub fn apply(&self, entry: &Entry, now: Instant) -> bool {
        let sink = self
            .sinks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&entry.service)
            .and_then(Weak::upgrade);
        let applied =
            sink.is_some_and(|sink| sink.apply_replicated(&entry.key, entry.backend, now));
        let counter = if applied {
            &self.received
        } else {
            &self.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        applied
    }

    /// Every registered table's entries, as lines.
    fn snapshot(&self, now: Instant) -> Vec<u8> {
        let sinks: Vec<(String, Arc<dyn SessionSink>)> = self
            .sinks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter_map(|(service, sink)| Some((service.clone(), sink.upgrade()?)))
            .collect();
        let mut lines = Vec::new();
        for (service, sink) in sinks {
            for (key, backend) in sink.replication_snapshot(now) {
                let entry = Entry {
                    service: service.clone(),
                    key,
                    backend,
                };
                lines.extend_from_slice(&entry.encode());
            }
        }
        lines
    }

    async fn listen_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let listener = loop {
            match TcpListener::bind(self.listen).await {
                Ok(listener) => break listener,
                Err(error) => {
                    warn!(
                        listen = %self.listen,
                        "replication cannot listen on {}: {error}; retrying in {}",
                        self.listen,
                        humantime::format_duration(REBIND_DELAY)
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(REBIND_DELAY) => {}
                    }
                }
            }
        };
        info!(listen = %self.listen, "replication listening on {}", self.listen);
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, from) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!("replication accept failed: {error}");
                    continue;
                }
            };
            let known = self
                .peers
                .iter()
                .any(|peer| same_host(peer.address.ip(), from.ip()));
            if !known {
                warn!(
                    from = %from,
                    "replication connection from {from} refused: not a configured peer"
                );
                continue;
            }
            tokio::spawn(self.clone().receive(stream, from, shutdown.clone()));
        }
    }

    async fn receive(
        self: Arc<Self>,
        stream: TcpStream,
        from: SocketAddr,
        shutdown: CancellationToken,
    ) {
        debug!(from = %from, "replication connection from {from}");
        let mut reader = BufReader::new(stream);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
            let read = tokio::select! {
                () = shutdown.cancelled() => return,
                read = limited.read_until(b'\n', &mut line) => read,
            };
            match read {
                Ok(0) => return,
                Ok(_) if !line.ends_with(b"\n") && line.len() > MAX_LINE => {
                    warn!(from = %from, "replication from {from}: line longer than {MAX_LINE} bytes; closing");
                    return;
                }
                Ok(_) => {}
                Err(error) => {
                    debug!(from = %from, "replication from {from} ended: {error}");
                    return;
                }
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            match Message::decode(&line) {
                Ok(Message::Flow(flow)) => {
                    self.apply_flows(std::slice::from_ref(&flow));
                }
                Ok(Message::Session(entry)) => {
                    // The key stays out of the log: it is often a login session id.
                    if self.apply(&entry, Instant::now()) {
                        debug!(from = %from, service = %entry.service, backend = %entry.backend, "replicated session received");
                    } else {
                        debug!(from = %from, service = %entry.service, backend = %entry.backend, "replicated session refused: no such service, backend or session table here");
                    }
                }
                Err(error) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    debug!(from = %from, "replication from {from}: {error}");
                }
            }
        }
    }

    async fn send_loop(self: Arc<Self>, peer: Arc<Peer>, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_START;
        // Logged once per outage, not once per attempt.
        let mut reported_down = false;
        loop {
            let connected = tokio::select! {
                () = shutdown.cancelled() => return,
                connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer.address)) => connected,
            };
            let stream = match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    if !reported_down {
                        warn!(peer = %peer.address, "replication to {} not connected: {error}; retrying with backoff up to {}", peer.address, humantime::format_duration(BACKOFF_MAX));
                        reported_down = true;
                    }
                    if sleep_or_shutdown(backoff, &shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                Err(_) => {
                    if !reported_down {
                        warn!(peer = %peer.address, "replication to {} not connected: connect timed out; retrying with backoff up to {}", peer.address, humantime::format_duration(BACKOFF_MAX));
                        reported_down = true;
                    }
                    if sleep_or_shutdown(backoff, &shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_START;
            let _ = stream.set_nodelay(true);
            peer.connected.store(true, Ordering::Relaxed);
            info!(peer = %peer.address, "replication to {} connected", peer.address);
            let ended = self.stream_to(&peer, stream, &shutdown).await;
            peer.connected.store(false, Ordering::Relaxed);
            match ended {
                None => return,
                Some(reason) => {
                    warn!(peer = %peer.address, "replication to {} lost: {reason}; reconnecting", peer.address);
                    reported_down = true;
                }
            }
        }
    }

    /// Sends the snapshot, then the queue as it fills, until the link fails (`Some(reason)`)
    /// or shutdown (`None`).
    async fn stream_to(
        &self,
        peer: &Peer,
        stream: TcpStream,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let (mut read_half, mut write_half) = stream.into_split();
        // Whatever sessions were queued are in the tables too, so the snapshot replaces them;
        // entries queued from now on are newer than the snapshot and follow it. Flows have no
        // snapshot: the queued ones stay.
        peer.lock()
            .retain(|message| matches!(message, Message::Flow(_)));
        let snapshot = self.snapshot(Instant::now());
        if let Err(error) = write_half.write_all(&snapshot).await {
            return Some(error.to_string());
        }
        let mut probe = [0u8; 64];
        loop {
            let batch: Vec<Message> = peer.lock().drain(..).collect();
            if !batch.is_empty() {
                let mut lines = Vec::with_capacity(batch.len() * 64);
                for entry in &batch {
                    lines.extend_from_slice(&entry.encode());
                }
                if let Err(error) = write_half.write_all(&lines).await {
                    return Some(error.to_string());
                }
                peer.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                continue;
            }
            // The peer never writes: a read that ends means it closed or restarted, which a
            // write to an idle link would only notice after losing an entry.
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = peer.wake.notified() => {}
                read = read_half.read(&mut probe) => match read {
                    Ok(0) => return Some("the peer closed the connection".to_owned()),
                    Ok(_) => {}
                    Err(error) => return Some(error.to_string()),
                },
            }
        }
    }
}

impl Peer {
    fn push(&self, message: Message) {
        self.push_all(std::iter::once(message));
    }

    fn push_all(&self, messages: impl Iterator<Item = Message>) {
        {
            let mut queue = self.lock();
            for message in messages {
                if queue.len() >= self.capacity {
                    queue.pop_front();
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                queue.push_back(message);
            }
        }
        self.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sleeps `delay`; `true` if shutdown came first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// Whether two addresses are one host, an IPv4 peer seen by a dual-stack socket as
/// `::ffff:a.b.c.d` included.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn entries_round_trip_through_one_line() {
        let entry = Entry {
            service: "web".into(),
            key: "a \"quoted\" key\nwith a newline; and ünïcode".into(),
            backend: addr("198.18.0.102:80"),
        };
        let line = entry.encode();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        assert!(line.ends_with(b"\n"));
        assert_eq!(Entry::decode(&line).expect("decodes"), entry);
        let plain = br#"{"service":"web","key":"abc","backend":"198.18.0.103:80"}"#;
        assert_eq!(
            Entry::decode(plain).expect("decodes"),
            Entry {
                service: "web".into(),
                key: "abc".into(),
                backend: addr("198.18.0.103:80")
            }
        );
        assert!(Entry::decode(b"{\"service\":\"web\"}").is_err());
        assert!(
            Entry::decode(b"{\"service\":\"web\",\"key\":\"k\",\"backend\":\"nope\"}").is_err()
        );
    }

    fn flow_entry(port: u16) -> FlowEntry {
        FlowEntry {
            service: "db".into(),
            flow: FlowTuple {
                proto: FlowProto::Tcp,
                client: addr(&format!("198.18.0.10:{port}")),
                vip: addr("198.18.0.99:5432"),
            },
            backend: addr("198.18.0.102:5432"),
        }
    }

    #[test]
    fn flows_travel_as_tagged_lines_and_session_lines_keep_their_format() {
        let flow = Message::Flow(flow_entry(42000));
        let line = flow.encode();
        assert!(line.ends_with(b"\n"));
        assert_eq!(
            std::str::from_utf8(&line).expect("text"),
            "{\"service\":\"db\",\"flow\":{\"proto\":\"tcp\",\"client\":\"198.18.0.10:42000\",\
             \"vip\":\"198.18.0.99:5432\"},\"backend\":\"198.18.0.102:5432\"}\n"
        );
        assert_eq!(Message::decode(&line).expect("decodes"), flow);
        let v6 = br#"{"service":"db6","flow":{"proto":"udp","client":"[2001:2::10]:5353","vip":"[2001:2::99]:53"},"backend":"[2001:2::102]:53"}"#;
        let Message::Flow(decoded) = Message::decode(v6).expect("decodes") else {
            panic!("a flow");
        };
        assert_eq!(decoded.flow.proto, FlowProto::Udp);
        assert_eq!(decoded.backend, addr("[2001:2::102]:53"));

        // A line from a node that knows only sessions is still a session.
        let old = br#"{"service":"web","key":"abc","backend":"198.18.0.103:80"}"#;
        assert_eq!(
            Message::decode(old).expect("decodes"),
            Message::Session(Entry {
                service: "web".into(),
                key: "abc".into(),
                backend: addr("198.18.0.103:80")
            })
        );
        // A session's encoding did not change: such a node reads ours, and refuses (and counts)
        // the flow lines without ending the link.
        let session = Entry::decode(old).expect("decodes");
        assert_eq!(Message::Session(session.clone()).encode(), session.encode());
        assert!(Entry::decode(&line).is_err());
        // A flow line with a bad member is refused, not taken for a session.
        assert!(Message::decode(br#"{"service":"db","flow":{"proto":"sctp","client":"198.18.0.10:1","vip":"198.18.0.99:2"},"backend":"198.18.0.102:2","key":"k"}"#).is_err());
    }

    #[derive(Default)]
    struct FlowRecorder {
        flows: Mutex<Vec<FlowEntry>>,
    }

    impl FlowSink for FlowRecorder {
        fn apply_flows(&self, flows: &[FlowEntry]) {
            self.flows.lock().expect("lock").extend_from_slice(flows);
        }
    }

    #[tokio::test]
    async fn flows_queued_before_the_link_is_up_reach_the_peers_data_plane() {
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let b_addr = probe.local_addr().expect("addr");
        drop(probe);
        let a = Replicator::new(&config::Replication {
            listen: addr("127.0.0.1:1"),
            peers: vec![b_addr],
        });
        let b = Replicator::new(&config::Replication {
            listen: b_addr,
            peers: vec![addr("127.0.0.1:1")],
        });
        // B refuses flows while no data plane takes them.
        b.apply_flows(&[flow_entry(41999)]);
        assert_eq!(b.status().rejected, 1);
        let b_flows = Arc::new(FlowRecorder::default());
        let sink: Arc<dyn FlowSink> = b_flows.clone();
        b.register_flows(Arc::downgrade(&sink));

        // Published while B is not listening yet: they wait in A's queue, and the session
        // snapshot sent on connecting does not replace them.
        a.publish_flows(&[flow_entry(42000), flow_entry(42001)]);
        a.publish(Entry {
            service: "web".into(),
            key: "k".into(),
            backend: addr("198.18.0.102:80"),
        });
        assert_eq!(a.status().peers[0].queued, 3);
        let shutdown = CancellationToken::new();
        tokio::spawn(a.clone().send_loop(a.peers[0].clone(), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::spawn(b.clone().listen_loop(shutdown.clone()));
        for _ in 0..500 {
            if b_flows.flows.lock().expect("lock").len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            *b_flows.flows.lock().expect("lock"),
            [flow_entry(42000), flow_entry(42001)]
        );
        shutdown.cancel();
    }

    fn replication(peers: &[&str]) -> config::Replication {
        config::Replication {
            listen: addr("127.0.0.1:0"),
            peers: peers.iter().map(|p| addr(p)).collect(),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts() {
        let replicator = Replicator::with_queue_capacity(&replication(&["127.0.0.2:7946"]), 3);
        for i in 0..5 {
            replicator.publish(Entry {
                service: "web".into(),
                key: format!("k{i}"),
                backend: addr("198.18.0.102:80"),
            });
        }
        let status = replicator.status();
        assert_eq!(status.peers[0].queued, 3);
        assert_eq!(status.peers[0].dropped, 2);
        let keys: Vec<String> = replicator.peers[0]
            .lock()
            .iter()
            .map(|message| match message {
                Message::Session(e) => e.key.clone(),
                Message::Flow(f) => panic!("no flow was published: {f:?}"),
            })
            .collect();
        assert_eq!(keys, ["k2", "k3", "k4"]);
    }

    #[derive(Default)]
    struct Recorder {
        entries: Mutex<Vec<(String, SocketAddr)>>,
    }

    impl SessionSink for Recorder {
        fn apply_replicated(&self, key: &str, backend: SocketAddr, _now: Instant) -> bool {
            self.entries
                .lock()
                .expect("lock")
                .push((key.to_owned(), backend));
            true
        }
        fn replication_snapshot(&self, _now: Instant) -> Vec<(String, SocketAddr)> {
            self.entries.lock().expect("lock").clone()
        }
    }

    #[test]
    fn entries_for_unknown_services_are_refused() {
        let replicator = Replicator::new(&replication(&["127.0.0.2:7946"]));
        let web = Arc::new(Recorder::default());
        let sink: Arc<dyn SessionSink> = web.clone();
        replicator.register("web", Arc::downgrade(&sink));
        let entry = |service: &str| Entry {
            service: service.into(),
            key: "k".into(),
            backend: addr("198.18.0.102:80"),
        };
        assert!(replicator.apply(&entry("web"), Instant::now()));
        assert!(!replicator.apply(&entry("api"), Instant::now()));
        drop(sink);
        drop(web);
        assert!(
            !replicator.apply(&entry("web"), Instant::now()),
            "dropped upstream"
        );
        let status = replicator.status();
        assert_eq!((status.received, status.rejected), (1, 2));
    }

    #[tokio::test]
    async fn a_peer_receives_the_snapshot_then_new_entries_and_gets_them_after_reconnecting() {
        // Node B listens; node A sends to it. Both on loopback, B's port picked by the OS.
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let b_addr = probe.local_addr().expect("addr");
        drop(probe);
        let a_config = config::Replication {
            listen: addr("127.0.0.1:1"),
            peers: vec![b_addr],
        };
        let b_config = config::Replication {
            listen: b_addr,
            peers: vec![addr("127.0.0.1:1")],
        };
        let a = Replicator::new(&a_config);
        let b = Replicator::new(&b_config);
        let a_table = Arc::new(Recorder::default());
        a_table
            .entries
            .lock()
            .expect("lock")
            .push(("early".into(), addr("198.18.0.103:80")));
        let b_table = Arc::new(Recorder::default());
        let a_sink: Arc<dyn SessionSink> = a_table.clone();
        let b_sink: Arc<dyn SessionSink> = b_table.clone();
        a.register("web", Arc::downgrade(&a_sink));
        b.register("web", Arc::downgrade(&b_sink));

        let shutdown = CancellationToken::new();
        let b_shutdown = shutdown.child_token();
        // Only B's listener and A's sender matter here.
        tokio::spawn(b.clone().listen_loop(b_shutdown.clone()));
        tokio::spawn(a.clone().send_loop(a.peers[0].clone(), shutdown.clone()));

        let wait_for = |table: Arc<Recorder>, n: usize| async move {
            for _ in 0..500 {
                if table.entries.lock().expect("lock").len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "B has {:?}, expected {n} entries",
                table.entries.lock().expect("lock")
            );
        };
        wait_for(b_table.clone(), 1).await;
        a.publish(Entry {
            service: "web".into(),
            key: "late".into(),
            backend: addr("198.18.0.102:80"),
        });
        wait_for(b_table.clone(), 2).await;
        let got = b_table.entries.lock().expect("lock").clone();
        assert_eq!(
            got,
            [
                ("early".to_owned(), addr("198.18.0.103:80")),
                ("late".to_owned(), addr("198.18.0.102:80"))
            ]
        );
        assert!(a.status().peers[0].connected);

        // B restarts with an empty table: A notices, reconnects and sends its table again.
        b_shutdown.cancel();
        let b2 = Replicator::new(&b_config);
        let b2_table = Arc::new(Recorder::default());
        let b2_sink: Arc<dyn SessionSink> = b2_table.clone();
        b2.register("web", Arc::downgrade(&b2_sink));
        tokio::spawn(b2.clone().listen_loop(shutdown.clone()));
        wait_for(b2_table.clone(), 1).await;
        assert_eq!(
            b2_table.entries.lock().expect("lock").clone(),
            [("early".to_owned(), addr("198.18.0.103:80"))]
        );
        shutdown.cancel();
    }
}
