//! WebSocket through the proxy, with a real server (Debian's python3-websockets) on a backend
//! host and a real client on the client host: the handshake reaches the backend with its
//! Upgrade and the client's address in X-Forwarded-For, messages go both ways after the 101,
//! an open tunnel outlives the client `idle_timeout`, and a tunnel in which nothing moves is
//! closed after `tunnel_timeout`.

use std::net::{SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::{wait_for_tcp, Host, Lab, Process, CLIENT, HTTP1, LB1};

/// Debian's interpreter (the one python3-websockets is installed for).
const PYTHON: &str = "/usr/bin/python3";

/// A WebSocket server: its first message says what the handshake carried, then it echoes.
const SERVER: &str = r#"
import asyncio, sys, websockets
async def handler(ws, path):
    forwarded = ws.request_headers.get("X-Forwarded-For", "-")
    await ws.send(f"path={path} x-forwarded-for={forwarded}")
    async for message in ws:
        await ws.send(message)
async def main():
    async with websockets.serve(handler, sys.argv[1], int(sys.argv[2]), max_size=None):
        await asyncio.Future()
asyncio.run(main())
"#;

/// A client: prints the server's first message, echoes of a small and a large message, then
/// (after idling argv[2] seconds) whether the tunnel still carries a message.
const CLIENT_SCRIPT: &str = r#"
import asyncio, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1], open_timeout=5, ping_interval=None,
                                  close_timeout=1, max_size=None) as ws:
        print(await asyncio.wait_for(ws.recv(), 5))
        for text in ["hello", "x" * 200000]:
            await ws.send(text)
            echo = await asyncio.wait_for(ws.recv(), 5)
            print("echo", len(echo), echo == text)
        await asyncio.sleep(float(sys.argv[2]))
        try:
            await ws.send("after idle")
            print("after idle:", await asyncio.wait_for(ws.recv(), 5))
        except (websockets.ConnectionClosed, asyncio.TimeoutError) as closed:
            print("after idle: closed", type(closed).__name__)
asyncio.run(main())
"#;

fn start_server(host: &Host, port: u16) -> Process {
    let mut command = host.command(PYTHON);
    command
        .args(["-c", SERVER, &host.ip.to_string(), &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    host.spawn(command).expect("the websocket server starts")
}

/// A node proxying to the WebSocket server, with `proxy` settings.
fn start_node(lab: &Lab, listen: SocketAddrV4, proxy: &str) -> TandemNode {
    let lb1 = lab.host(LB1);
    let config = format!(
        "{node}\n[proxy]\naccess_log = {{ level = 0 }}\n{proxy}\n\n[[service]]\nname = \"ws\"\n\
         listen = \"{listen}\"\nbackends = [\"{backend}:8765\"]\n\
         session = {{ type = \"ip\", ttl = \"300s\" }}\n",
        node = TandemNode::node_section(lab, lb1),
        backend = lab.host(HTTP1).ip,
    );
    TandemNode::start(lab, lb1, &config).expect("tandem run")
}

/// Runs the client against `listen` and returns what it printed.
fn run_client(lab: &Lab, node: &TandemNode, listen: SocketAddrV4, idle_seconds: f64) -> String {
    let client = lab.host(CLIENT);
    let backend = SocketAddr::V4(SocketAddrV4::new(lab.host(HTTP1).ip, 8765));
    wait_for_tcp(lab.host(LB1), backend, Duration::from_secs(10)).expect("the server listens");
    if let Err(error) = wait_for_tcp(client, SocketAddr::V4(listen), Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    let url = format!("ws://{listen}/chat");
    match client.run(
        PYTHON,
        &["-c", CLIENT_SCRIPT, &url, &idle_seconds.to_string()],
    ) {
        Ok(output) => output,
        Err(error) => panic!(
            "the websocket client failed: {error:#}\n{}",
            node.log_text()
        ),
    }
}

/// Whether `tandem status` shows `count` open tunnels within 3 s.
fn wait_for_tunnels(node: &TandemNode, count: u64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let open = node.status().ok().and_then(|status| {
            status["services"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "ws")?["tunnels"]
                .as_u64()
        });
        if open == Some(count) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn websocket_messages_cross_the_proxy_both_ways_and_outlive_the_idle_timeout() {
    let lab = Lab::new().expect("lab");
    let _server = start_server(lab.host(HTTP1), 8765);
    let listen = SocketAddrV4::new(lab.host(LB1).ip, 8080);
    // The client's idle timeout is shorter than the client's pause: a tunnel is not idle.
    let node = start_node(&lab, listen, "idle_timeout = \"1s\"");
    let (output, open_while_idle) = std::thread::scope(|scope| {
        let client = scope.spawn(|| run_client(&lab, &node, listen, 2.5));
        // While the client pauses, status counts its tunnel.
        let open = wait_for_tunnels(&node, 1);
        (client.join().expect("client thread"), open)
    });
    assert!(open_while_idle, "status shows the open tunnel");
    assert!(wait_for_tunnels(&node, 0), "status shows the tunnel closed");
    let client_ip = lab.host(CLIENT).ip;
    assert!(
        output.contains(&format!("path=/chat x-forwarded-for={client_ip}")),
        "the handshake reaches the backend with the client's address:\n{output}"
    );
    assert!(output.contains("echo 5 True"), "{output}");
    assert!(output.contains("echo 200000 True"), "{output}");
    assert!(
        output.contains("after idle: after idle"),
        "the tunnel outlives idle_timeout:\n{output}"
    );
}

#[test]
fn a_tunnel_in_which_nothing_moves_is_closed_after_the_tunnel_timeout() {
    let lab = Lab::new().expect("lab");
    let _server = start_server(lab.host(HTTP1), 8765);
    let listen = SocketAddrV4::new(lab.host(LB1).ip, 8080);
    let node = start_node(&lab, listen, "tunnel_timeout = \"1s\"");
    let output = run_client(&lab, &node, listen, 3.0);
    assert!(output.contains("echo 5 True"), "{output}");
    assert!(
        output.contains("after idle: closed"),
        "an idle tunnel is closed after tunnel_timeout:\n{output}"
    );
}
