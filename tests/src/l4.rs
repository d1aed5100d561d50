//! Lab pieces for the L4 tests and the L4 benchmark: backends set up for direct server return,
//! a "who answered" TCP/UDP server, clients that keep one connection open, and a tokio runtime
//! whose threads live in a host's network namespace (so code under test, e.g. the data plane,
//! can run in-process as if it were that host's daemon).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, UdpSocket};

use crate::lab::Host;

/// A multi-threaded tokio runtime whose worker (and blocking) threads all entered `host`'s
/// network namespace: sockets and netlink connections made by its tasks are the host's.
pub struct NetnsRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    pub host: String,
}

impl NetnsRuntime {
    pub fn new(host: &Host) -> anyhow::Result<NetnsRuntime> {
        let path: PathBuf = host.netns_path();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name(format!("netns-{}", host.name))
            .on_thread_start(move || {
                if let Err(err) = crate::netns::enter(&path) {
                    // Nothing sensible runs outside the namespace; make it loud.
                    panic!("entering {}: {err:#}", path.display());
                }
            })
            .build()
            .with_context(|| format!("runtime for host {}", host.name))?;
        Ok(NetnsRuntime {
            runtime: Some(runtime),
            host: host.name.clone(),
        })
    }

    /// Runs `future` to completion on the runtime (its tasks run in the namespace; the future
    /// itself is polled on a worker so that it does too).
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("runtime present until drop");
        let handle = runtime.spawn(future);
        match runtime.block_on(handle) {
            Ok(output) => output,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => panic!("task on host {} cancelled: {err}", self.host),
        }
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("runtime present until drop")
            .handle()
            .clone()
    }
}

impl Drop for NetnsRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Prepares `host` to be a direct-server-return backend for `vip`: the VIP on its loopback
/// (so it accepts and answers from it), and for IPv4 ARP settings that keep it from answering
/// or announcing the VIP on the segment (`arp_ignore=1`, `arp_announce=2`), as LVS-DR backends
/// do. An IPv6 VIP needs no settings: neighbour solicitations are answered only for the
/// receiving interface's own addresses, and the VIP is on lo.
pub fn make_dsr_backend(host: &Host, vip: impl Into<IpAddr>) -> anyhow::Result<()> {
    let vip = match vip.into() {
        IpAddr::V4(vip) => vip,
        IpAddr::V6(vip) => {
            host.run(
                "ip",
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{vip}/128"),
                    "dev",
                    "lo",
                    "nodad",
                ],
            )?;
            return Ok(());
        }
    };
    for (key, value) in [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.eth0.arp_ignore", "1"),
        ("net.ipv4.conf.eth0.arp_announce", "2"),
    ] {
        host.run("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
    }
    host.run("ip", &["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
    Ok(())
}

/// Adds `vip` to `host`'s eth0 and announces it with gratuitous ARPs: what a VRRP master does.
pub fn take_vip(host: &Host, vip: Ipv4Addr) -> anyhow::Result<()> {
    host.run(
        "ip",
        &["addr", "add", &format!("{vip}/32"), "dev", &host.iface],
    )?;
    host.run(
        "arping",
        &[
            "-q",
            "-U",
            "-c",
            "2",
            "-w",
            "1",
            "-I",
            &host.iface,
            &vip.to_string(),
        ],
    )
    .or_else(|_| Ok::<_, anyhow::Error>(String::new()))?;
    Ok(())
}

/// Removes `vip` from `host`'s eth0: what a VRRP master does when it steps down.
pub fn drop_vip(host: &Host, vip: Ipv4Addr) -> anyhow::Result<()> {
    host.run(
        "ip",
        &["addr", "del", &format!("{vip}/32"), "dev", &host.iface],
    )?;
    Ok(())
}

/// A server on a backend that answers every line with `NAME PEER_IP` (TCP on all addresses,
/// of both families on a host of a dual-stack lab; UDP on the host's own addresses and on
/// `vip`, so answers leave from the address asked). It says which backend served a flow and
/// whether the client's address arrived unchanged.
pub struct WhoServer {
    _runtime: NetnsRuntime,
    pub name: String,
}

impl WhoServer {
    pub fn start(
        host: &Host,
        port: u16,
        vip: Option<impl Into<IpAddr>>,
        name: &str,
    ) -> anyhow::Result<WhoServer> {
        let runtime = NetnsRuntime::new(host)?;
        let name = name.to_owned();
        // "[::]" is dual-stack on Linux: IPv4 clients too.
        let any: IpAddr = if host.ip6.is_some() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let listener = runtime
            .block_on(async move { TcpListener::bind((any, port)).await })
            .with_context(|| format!("binding TCP port {port} on {}", host.name))?;
        let who = name.clone();
        runtime.handle().spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let who = who.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(_)) = lines.next_line().await {
                        let answer = format!("{who} {}\n", peer.ip());
                        if write.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut udp_addresses = vec![IpAddr::V4(host.ip)];
        udp_addresses.extend(host.ip6.map(IpAddr::V6));
        udp_addresses.extend(vip.map(Into::into));
        for address in udp_addresses {
            let socket = runtime
                .block_on(async move { UdpSocket::bind((address, port)).await })
                .with_context(|| {
                    format!(
                        "binding UDP {} on {}",
                        SocketAddr::new(address, port),
                        host.name
                    )
                })?;
            let who = name.clone();
            runtime.handle().spawn(async move {
                let mut buffer = [0u8; 2048];
                loop {
                    let Ok((_, peer)) = socket.recv_from(&mut buffer).await else {
                        continue;
                    };
                    let answer = format!("{who} {}\n", peer.ip());
                    let _ = socket.send_to(answer.as_bytes(), peer).await;
                }
            });
        }
        Ok(WhoServer {
            _runtime: runtime,
            name,
        })
    }
}

/// What a [`WhoServer`] said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub backend: String,
    /// The client address the backend saw.
    pub peer: IpAddr,
}

pub fn parse_answer(line: &str) -> io::Result<Answer> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next().and_then(|w| w.parse().ok())) {
        (Some(backend), Some(peer)) => Ok(Answer {
            backend: backend.to_owned(),
            peer,
        }),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer {line:?}"),
        )),
    }
}

/// One TCP connection kept open to a [`WhoServer`] (through the load balancer), asking
/// "who are you" as often as a test likes.
pub struct Conversation {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
    pub local: SocketAddrV4,
}

/// How long a question may wait for its answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

impl Conversation {
    /// Connects to `server`, from `source_port` when given. The socket closes with a reset
    /// (linger 0), so the same source port can be used again at once.
    pub async fn open(server: SocketAddrV4, source_port: Option<u16>) -> io::Result<Conversation> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_zero_linger()?;
        if let Some(port) = source_port {
            socket.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
        }
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, socket.connect(server.into()))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, format!("connect to {server}"))
            })??;
        let local = match stream.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("an IPv4 socket"),
        };
        let (read, write) = stream.into_split();
        Ok(Conversation {
            lines: BufReader::new(read).lines(),
            write,
            local,
        })
    }

    /// Asks once and returns the answer.
    pub async fn ask(&mut self) -> io::Result<Answer> {
        self.write.write_all(b"who\n").await?;
        match tokio::time::timeout(ANSWER_TIMEOUT, self.lines.next_line()).await {
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
            Ok(Ok(Some(line))) => parse_answer(&line),
            Ok(Ok(None)) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(Err(err)) => Err(err),
        }
    }
}

/// One question over UDP from `source_port` (asked up to three times).
pub async fn ask_udp(server: SocketAddr, source_port: u16) -> io::Result<Answer> {
    let any: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, source_port)).await?;
    socket.connect(server).await?;
    let mut buffer = [0u8; 256];
    for _ in 0..3 {
        socket.send(b"who\n").await?;
        if let Ok(received) =
            tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buffer)).await
        {
            let len = received?;
            return parse_answer(&String::from_utf8_lossy(&buffer[..len]));
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no UDP answer"))
}

/// Shared handle to a [`Conversation`] for tests that talk from several places.
pub type SharedConversation = Arc<tokio::sync::Mutex<Conversation>>;

/// Makes native-mode XDP_TX work on `host`'s eth0 in the lab: a veth delivers the frames an
/// XDP program sends back out only when its peer (the bridge port) runs XDP itself. Tandem's
/// own program serves (with empty maps it passes everything), pinned under the host's pin
/// directory so the lab removes it.
pub fn prepare_native_xdp_tx(lab: &crate::Lab, host: &str) -> anyhow::Result<()> {
    let port = lab.bridge_port(host);
    let pin_dir = lab.pin_dir(host).join("peer");
    let mut command = std::process::Command::new("nsenter");
    command
        .arg(format!("--net={}", lab.bridge_netns_path().display()))
        .arg("--")
        .arg(crate::tandem_binary()?)
        .args([
            "xdp",
            "attach",
            "--mode",
            "native",
            "--iface",
            &port,
            "--pin-dir",
        ])
        .arg(&pin_dir);
    let output = command
        .output()
        .context("attaching XDP to the bridge port")?;
    if !output.status.success() {
        anyhow::bail!(
            "tandem xdp attach on {port}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
