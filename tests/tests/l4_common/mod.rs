//! What the L4 lab tests share: the lab set up for an L4 service with direct server return,
//! and a node's data plane run in-process in the node's namespace (the "daemon" of the test),
//! driven through the `Dataplane` trait exactly as the node supervisor drives it.
#![allow(dead_code)] // each test file uses its own part

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tandem::config::{self, Config};
use tandem::dataplane::{self, Dataplane, Plan};
use tandem_lab::l4::{make_dsr_backend, Answer, Conversation, NetnsRuntime, WhoServer};
use tandem_lab::{Host, Lab, CLIENT, HTTP1, HTTP2, LB1, LB2, VIP};

/// The L4 TCP service's port, and the UDP one's.
pub const TCP_PORT: u16 = 7000;
pub const UDP_PORT: u16 = 7001;

/// A node's configuration: one L4 TCP and one L4 UDP service on the VIP, both backends.
pub fn node_config(lab: &Lab, node: &str, dataplane: &str) -> String {
    let pin_dir = lab.pin_dir(node);
    let socket = lab.work_dir().join(format!("{node}.sock"));
    let backends = |port: u16| {
        [HTTP1, HTTP2]
            .iter()
            .map(|h| format!("\"{}:{port}\"", lab.host(h).ip))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[node]
name = "{node}"
interface = "eth0"
dataplane = "{dataplane}"
bpf_pin_dir = "{pin_dir}"
control_socket = "{socket}"

[[vrrp]]
name = "VI_1"
virtual_router_id = 51
virtual_ipaddress = ["{VIP}"]

[[service]]
name = "who"
listen = "{VIP}:{TCP_PORT}"
mode = "tcp"
backends = [{tcp}]

[[service]]
name = "who-udp"
listen = "{VIP}:{UDP_PORT}"
mode = "udp"
backends = [{udp}]
"#,
        pin_dir = pin_dir.display(),
        socket = socket.display(),
        tcp = backends(TCP_PORT),
        udp = backends(UDP_PORT),
    )
}

pub fn parse(text: &str) -> Config {
    config::parse(text, std::path::Path::new("l4-test.toml"))
        .unwrap_or_else(|e| panic!("test config does not parse: {e}"))
        .config
}

/// The lab with both backends serving the L4 ports by direct server return.
pub struct L4Lab {
    pub lab: Lab,
    _servers: Vec<WhoServer>,
    pub client: NetnsRuntime,
}

impl L4Lab {
    pub fn new() -> L4Lab {
        let lab = Lab::new().expect("lab");
        let mut servers = Vec::new();
        for name in [HTTP1, HTTP2] {
            let host = lab.host(name);
            make_dsr_backend(host, VIP).expect("DSR backend");
            servers.push(WhoServer::start(host, TCP_PORT, Some(VIP), name).expect("who server"));
            servers.push(WhoServer::start(host, UDP_PORT, Some(VIP), name).expect("who server"));
        }
        // The tests pick fixed client ports from 42000 up (so that Maglev's choice for them
        // is known); the kernel's own ephemeral ports stay below, else a kept-open connection
        // may hold a port a test then binds (connect fails with EADDRNOTAVAIL).
        lab.host(CLIENT)
            .run(
                "sysctl",
                &["-q", "-w", "net.ipv4.ip_local_port_range=32768 41999"],
            )
            .expect("the client's ephemeral port range");
        let client = NetnsRuntime::new(lab.host(CLIENT)).expect("client runtime");
        L4Lab {
            lab,
            _servers: servers,
            client,
        }
    }

    pub fn host(&self, name: &str) -> &Host {
        self.lab.host(name)
    }

    /// Opens a conversation with the TCP service from the client (from `port` if given).
    pub fn converse(&self, port: Option<u16>) -> std::io::Result<Conversation> {
        let server = SocketAddrV4::new(VIP, TCP_PORT);
        self.client
            .block_on(async move { Conversation::open(server, port).await })
    }

    /// One question on `conversation` (which lives on the client's runtime).
    pub fn ask(&self, conversation: &mut Conversation) -> std::io::Result<Answer> {
        let handle = self.client.handle();
        // Conversation is not 'static-borrowable into a spawned task: drive it here, its
        // socket is already the client's.
        handle.block_on(conversation.ask())
    }

    /// A fresh connection from `port`, one question, closed.
    pub fn ask_once(&self, port: Option<u16>) -> std::io::Result<(u16, Answer)> {
        let server = SocketAddrV4::new(VIP, TCP_PORT);
        self.client.block_on(async move {
            let mut c = Conversation::open(server, port).await?;
            let answer = c.ask().await?;
            Ok((c.local.port(), answer))
        })
    }

    /// One UDP question from `port`.
    pub fn ask_udp(&self, port: u16) -> std::io::Result<Answer> {
        let server = SocketAddrV4::new(VIP, UDP_PORT).into();
        self.client
            .block_on(async move { tandem_lab::l4::ask_udp(server, port).await })
    }

    /// The backend host name for an address of the lab.
    pub fn name_of(&self, address: Ipv4Addr) -> &'static str {
        if address == self.host(HTTP1).ip {
            HTTP1
        } else if address == self.host(HTTP2).ip {
            HTTP2
        } else {
            panic!("{address} is no backend")
        }
    }

    /// Which backend the Maglev choice gives a flow from the client's `port` to `service`,
    /// with the backends in `down` excluded: computed in the test, from the config, by the
    /// same library the XDP program's tables and the relay come from.
    pub fn expected(
        &self,
        config: &Config,
        service: &str,
        port: u16,
        down: &[Ipv4Addr],
    ) -> &'static str {
        let plan = Plan::new(config).expect("plan");
        let service = plan.service(service).expect("service");
        let maglev = service.maglev(|a| !down.iter().any(|d| IpAddr::V4(*d) == a.ip()));
        let client = SocketAddr::from((self.host(CLIENT).ip, port));
        match service.choose(&maglev, client).expect("a backend").address {
            SocketAddr::V4(backend) => self.name_of(*backend.ip()),
            SocketAddr::V6(backend) => panic!("{backend} is no backend of this IPv4 lab"),
        }
    }
}

/// A node's data plane, opened in-process in the node's namespace: what `tandem run` does with
/// it, driven by the test instead of VRRP.
pub struct Node {
    pub runtime: NetnsRuntime,
    pub dataplane: Arc<Box<dyn Dataplane>>,
    pub config: Config,
    pub pin_dir: std::path::PathBuf,
}

impl Node {
    pub fn open(l4: &L4Lab, name: &str, dataplane_mode: &str) -> Node {
        let text = node_config(&l4.lab, name, dataplane_mode);
        let config = parse(&text);
        let runtime = NetnsRuntime::new(l4.host(name)).expect("node runtime");
        let opened = config.clone();
        let dataplane = runtime
            .block_on(async move { dataplane::open(&opened).await })
            .expect("open the data plane");
        Node {
            runtime,
            dataplane: Arc::new(dataplane),
            pin_dir: l4.lab.pin_dir(name),
            config,
        }
    }

    pub fn activate(&self) {
        let dp = self.dataplane.clone();
        self.runtime
            .block_on(async move { dp.activate().await })
            .expect("activate");
    }

    pub fn deactivate(&self) {
        let dp = self.dataplane.clone();
        self.runtime
            .block_on(async move { dp.deactivate().await })
            .expect("deactivate");
    }

    pub fn set_backend_up(&self, service: &str, backend: impl Into<SocketAddr>, up: bool) {
        let dp = self.dataplane.clone();
        let backend = backend.into();
        let service = service.to_owned();
        self.runtime
            .block_on(async move { dp.set_backend_up(&service, backend, up).await })
            .expect("set_backend_up");
    }

    pub fn shutdown(self) {
        let dp = self.dataplane.clone();
        self.runtime.block_on(async move { dp.shutdown().await });
    }

    pub fn status(&self) -> dataplane::DataplaneStatus {
        self.dataplane.status()
    }

    /// `tandem maps --json` of this node, read from its pins by the CLI.
    pub fn maps_json(&self, host: &Host) -> serde_json::Value {
        let output = host
            .command(tandem_lab::tandem_binary().expect("tandem binary"))
            .args(["maps", "--json", "--pin-dir"])
            .arg(&self.pin_dir)
            .output()
            .expect("run tandem maps");
        assert!(
            output.status.success(),
            "tandem maps: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON")
    }

    pub fn counter(&self, host: &Host, name: &str) -> u64 {
        self.maps_json(host)["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("counter {name}"))
    }
}

/// The lab's two load balancers.
pub const NODES: [&str; 2] = [LB1, LB2];

/// Polls `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
