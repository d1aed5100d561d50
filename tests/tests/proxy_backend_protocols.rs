//! Backends that speak something other than plain HTTP/1.1 (`backend_protocol`), with real
//! servers on a backend host: nginx serving HTTP/2 cleartext (h2c), HTTP/1.1 over TLS (https)
//! and HTTP/2 over TLS (h2), and a gRPC server (Debian's python3-grpcio) over h2c and h2.
//! Clients are curl and a python3-grpcio client on the client host. The backends' certificate
//! is signed by a CA the test makes; Tandem checks it against that CA.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::{wait_for_tcp, Host, Lab, Process, CLIENT, HTTP1, LB1};

/// Debian's interpreter (the one python3-grpcio is installed for).
const PYTHON: &str = "/usr/bin/python3";
const LISTEN_PORT: u16 = 8080;
const H2C_PORT: u16 = 8081;
const H2_PORT: u16 = 8443;
const HTTPS_PORT: u16 = 8444;
const GRPC_PORT: u16 = 50051;
const GRPCS_PORT: u16 = 50052;
const GRPC_LISTEN: u16 = 9090;
const GRPCS_LISTEN: u16 = 9091;

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Certificates the test makes.
struct Pki {
    /// The authority Tandem trusts.
    ca: PathBuf,
    /// The backend's certificate (names "backend.test" and the backend's address) and key,
    /// signed by `ca`.
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, backend: Ipv4Addr) -> Pki {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (ca, ca_key, cert, key, csr, ext) = (
        path("ca.pem"),
        path("ca.key"),
        path("backend.pem"),
        path("backend.key"),
        path("backend.csr"),
        path("backend.ext"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "2", "-subj", "/CN=tandem-test-ca"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", &ca_key, "-out", &ca])
        .collect::<Vec<_>>(),
    );
    openssl(
        &[&["req"], &ec[..], &["-subj", "/CN=backend.test"]]
            .concat()
            .into_iter()
            .chain(["-keyout", &key, "-out", &csr])
            .collect::<Vec<_>>(),
    );
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:backend.test,IP:{backend}\n"),
    )
    .expect("write the extension file");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    Pki {
        ca: ca.into(),
        cert: cert.into(),
        key: key.into(),
    }
}

/// nginx on the backend host: h2c, h2 and https servers that answer with the protocol they
/// saw, the client address they were given and the Host; its access log records each request
/// with its protocol and user agent.
fn start_nginx(lab: &Lab, host: &Host, pki: &Pki) -> (Process, PathBuf) {
    let dir = lab.work_dir().join("nginx");
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let log = dir.join("access.log");
    let answer = "\"$server_protocol https=$https xff=$http_x_forwarded_for host=$host\\n\"";
    let tls = format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        pki.cert.display(),
        pki.key.display()
    );
    let ip = host.ip;
    let config = format!(
        "daemon off; master_process off; pid {dir}/nginx.pid; error_log {dir}/error.log;\n\
         events {{}}\n\
         http {{\n\
           log_format protocol '$request $server_protocol $http_user_agent';\n\
           access_log {log} protocol;\n\
           server {{ listen {ip}:{H2C_PORT} http2; location / {{ return 200 {answer}; }} }}\n\
           server {{ listen {ip}:{H2_PORT} ssl http2; {tls} location / {{ return 200 {answer}; }} }}\n\
           server {{ listen {ip}:{HTTPS_PORT} ssl; {tls} location / {{ return 200 {answer}; }} }}\n\
         }}\n",
        dir = dir.display(),
        log = log.display(),
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).expect("write nginx.conf");
    let mut command = host.command("nginx");
    command
        .arg("-c")
        .arg(&config_path)
        .arg("-p")
        .arg(&dir)
        .stdin(Stdio::null());
    let nginx = host.spawn(command).expect("nginx starts");
    for port in [H2C_PORT, H2_PORT, HTTPS_PORT] {
        wait_for_tcp(
            lab.host(LB1),
            SocketAddr::V4(SocketAddrV4::new(ip, port)),
            Duration::from_secs(10),
        )
        .expect("nginx listens");
    }
    (nginx, log)
}

fn start_node(lab: &Lab, services: &str) -> TandemNode {
    let lb1 = lab.host(LB1);
    let config = format!(
        "{node}\n[proxy]\naccess_log = {{ level = 0 }}\n\n{services}",
        node = TandemNode::node_section(lab, lb1),
    );
    let node = TandemNode::start(lab, lb1, &config).expect("tandem run");
    let listen = SocketAddr::V4(SocketAddrV4::new(lb1.ip, LISTEN_PORT));
    if let Err(error) = wait_for_tcp(lab.host(CLIENT), listen, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    node
}

/// curl on the client host; `args` come before the URL.
fn curl(lab: &Lab, args: &[&str], path: &str) -> String {
    let url = format!("http://{}:{LISTEN_PORT}{path}", lab.host(LB1).ip);
    let mut all = vec!["-sS", "--max-time", "5", "-H", "Host: shop.test"];
    all.extend_from_slice(args);
    all.push(&url);
    lab.host(CLIENT)
        .run("curl", &all)
        .unwrap_or_else(|error| panic!("curl {path}: {error:#}"))
}

/// The state of `backend` of `service` in `tandem status`.
fn backend_status(node: &TandemNode, service: &str) -> serde_json::Value {
    let status = node.status().expect("tandem status");
    status["services"]
        .as_array()
        .and_then(|services| services.iter().find(|s| s["name"] == service))
        .map(|s| s["backends"][0].clone())
        .unwrap_or_else(|| panic!("service {service} in status: {status}"))
}

#[test]
fn h2c_https_and_h2_backends_serve_http1_and_http2_clients_with_the_client_address() {
    let lab = Lab::new().expect("lab");
    let backend = lab.host(HTTP1);
    let pki = pki(lab.work_dir(), backend.ip);
    let (_nginx, nginx_log) = start_nginx(&lab, backend, &pki);
    let ip = backend.ip;
    let ca = pki.ca.display();
    let services = format!(
        "[[service]]\nname = \"h2c\"\nlisten = \"{lb}:{LISTEN_PORT}\"\npath_prefix = \"/c\"\n\
         backend_protocol = \"h2c\"\nbackends = [\"{ip}:{H2C_PORT}\"]\n\
         health = {{ type = \"http\", path = \"/health\", interval = \"300ms\" }}\n\n\
         [[service]]\nname = \"h2\"\nlisten = \"{lb}:{LISTEN_PORT}\"\npath_prefix = \"/t\"\n\
         backend_protocol = \"h2\"\nbackend_tls = {{ ca = \"{ca}\" }}\nbackends = [\"{ip}:{H2_PORT}\"]\n\n\
         [[service]]\nname = \"https\"\nlisten = \"{lb}:{LISTEN_PORT}\"\npath_prefix = \"/s\"\n\
         backend_protocol = \"https\"\nbackend_tls = {{ ca = \"{ca}\", server_name = \"backend.test\" }}\n\
         backends = [\"{ip}:{HTTPS_PORT}\"]\n",
        lb = lab.host(LB1).ip,
    );
    let node = start_node(&lab, &services);
    let client = lab.host(CLIENT).ip;
    for client_protocol in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
        let h2c = curl(&lab, client_protocol, "/c/x");
        assert_eq!(
            h2c.trim(),
            format!("HTTP/2.0 https= xff={client} host=shop.test"),
            "{client_protocol:?}"
        );
        let h2 = curl(&lab, client_protocol, "/t/x");
        assert_eq!(
            h2.trim(),
            format!("HTTP/2.0 https=on xff={client} host=shop.test"),
            "{client_protocol:?}"
        );
        let https = curl(&lab, client_protocol, "/s/x");
        assert_eq!(
            https.trim(),
            format!("HTTP/1.1 https=on xff={client} host=shop.test"),
            "{client_protocol:?}"
        );
    }
    // The h2c port speaks nothing but HTTP/2: the checks reach it only by speaking HTTP/2,
    // and the backend stays up through many of them.
    std::thread::sleep(Duration::from_millis(1500));
    let checks = std::fs::read_to_string(&nginx_log).expect("nginx access log");
    assert!(
        checks.contains("GET /health HTTP/2.0 HTTP/2.0 tandem-health-check"),
        "the health check speaks HTTP/2:\n{checks}"
    );
    let state = backend_status(&node, "h2c");
    assert_eq!(state["up"], true, "{state}");
}

#[test]
fn a_backend_certificate_that_does_not_verify_is_refused_unless_verify_is_off() {
    let lab = Lab::new().expect("lab");
    let backend = lab.host(HTTP1);
    let pki = pki(lab.work_dir(), backend.ip);
    let (_nginx, _log) = start_nginx(&lab, backend, &pki);
    let ip = backend.ip;
    let services = format!(
        "[[service]]\nname = \"wrong-name\"\nlisten = \"{lb}:{LISTEN_PORT}\"\npath_prefix = \"/w\"\n\
         backend_protocol = \"https\"\n\
         backend_tls = {{ ca = \"{ca}\", server_name = \"other.test\" }}\n\
         backends = [\"{ip}:{HTTPS_PORT}\"]\n\n\
         [[service]]\nname = \"unverified\"\nlisten = \"{lb}:{LISTEN_PORT}\"\npath_prefix = \"/u\"\n\
         backend_protocol = \"h2\"\nbackend_tls = {{ verify = false }}\n\
         backends = [\"{ip}:{H2_PORT}\"]\n",
        lb = lab.host(LB1).ip,
        ca = pki.ca.display(),
    );
    let node = start_node(&lab, &services);
    let refused = curl(&lab, &[], "/w/x");
    assert!(
        refused.starts_with("503 Service Unavailable"),
        "a backend whose certificate names another host gets no request: {refused}"
    );
    let state = backend_status(&node, "wrong-name");
    assert_eq!(state["up"], false, "{state}");
    assert!(
        state["reason"]
            .as_str()
            .is_some_and(|r| r.contains("certificate")),
        "status says why: {state}"
    );
    let accepted = curl(&lab, &[], "/u/x");
    assert!(
        accepted.starts_with("HTTP/2.0 https=on"),
        "verify = false takes any certificate: {accepted}"
    );
}

/// A gRPC server with generic handlers (no generated code): unary with a trailer and the
/// client's X-Forwarded-For, server streaming, client streaming, bidirectional, and a call
/// that fails with a status. With a certificate and key it serves over TLS.
const GRPC_SERVER: &str = r#"
import sys, grpc
from concurrent import futures
def unary(request, context):
    forwarded = dict(context.invocation_metadata()).get("x-forwarded-for", "-")
    context.set_trailing_metadata((("x-trailer", "unary-done"),))
    return b"echo:" + request + b" xff=" + forwarded.encode()
def server_stream(request, context):
    for i in range(int(request)):
        yield b"item%d" % i
def client_stream(requests, context):
    return b"+".join(requests)
def bidi(requests, context):
    for r in requests:
        yield r.upper()
def fail(request, context):
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "no entry")
handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tandem.Test", handlers),))
if len(sys.argv) > 2:
    chain, key = open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
    server.add_secure_port(sys.argv[1], grpc.ssl_server_credentials(((key, chain),)))
else:
    server.add_insecure_port(sys.argv[1])
server.start()
server.wait_for_termination()
"#;

/// A gRPC client over cleartext HTTP/2 to the proxy: prints one line per call.
const GRPC_CLIENT: &str = r#"
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(channel).result(timeout=5)
call = lambda kind, name: getattr(channel, kind)("/tandem.Test/" + name)
response, unary = call("unary_unary", "Unary").with_call(b"hi", timeout=5)
print("unary", response.decode(), "trailer", dict(unary.trailing_metadata()).get("x-trailer"))
print("server-stream", ",".join(r.decode() for r in call("unary_stream", "ServerStream")(b"3", timeout=5)))
print("client-stream", call("stream_unary", "ClientStream")(iter([b"a", b"b", b"c"]), timeout=5).decode())
print("bidi", ",".join(r.decode() for r in call("stream_stream", "Bidi")(iter([b"x", b"y"]), timeout=5)))
try:
    call("unary_unary", "Fail")(b"", timeout=5)
except grpc.RpcError as error:
    print("fail", error.code().name, error.details())
"#;

#[test]
fn grpc_calls_cross_h2c_and_h2_backends_with_trailers_and_streams_both_ways() {
    let lab = Lab::new().expect("lab");
    let backend = lab.host(HTTP1);
    let pki = pki(lab.work_dir(), backend.ip);
    let ip = backend.ip;
    let mut plain = backend.command(PYTHON);
    plain
        .args(["-c", GRPC_SERVER, &format!("{ip}:{GRPC_PORT}")])
        .stdin(Stdio::null());
    let _plain = backend.spawn(plain).expect("the gRPC server starts");
    let mut secure = backend.command(PYTHON);
    secure
        .args(["-c", GRPC_SERVER, &format!("{ip}:{GRPCS_PORT}")])
        .arg(&pki.cert)
        .arg(&pki.key)
        .stdin(Stdio::null());
    let _secure = backend.spawn(secure).expect("the gRPC TLS server starts");
    let lb = lab.host(LB1).ip;
    let services = format!(
        "[[service]]\nname = \"plain\"\nlisten = \"{lb}:{LISTEN_PORT}\"\nbackends = [\"{ip}:1\"]\n\n\
         [[service]]\nname = \"grpc\"\nlisten = \"{lb}:{GRPC_LISTEN}\"\nbackend_protocol = \"h2c\"\n\
         backends = [\"{ip}:{GRPC_PORT}\"]\n\n\
         [[service]]\nname = \"grpcs\"\nlisten = \"{lb}:{GRPCS_LISTEN}\"\nbackend_protocol = \"h2\"\n\
         backend_tls = {{ ca = \"{ca}\" }}\nbackends = [\"{ip}:{GRPCS_PORT}\"]\n",
        ca = pki.ca.display(),
    );
    let node = start_node(&lab, &services);
    for port in [GRPC_PORT, GRPCS_PORT] {
        wait_for_tcp(
            lab.host(LB1),
            SocketAddr::V4(SocketAddrV4::new(ip, port)),
            Duration::from_secs(10),
        )
        .expect("the gRPC server listens");
    }
    let client = lab.host(CLIENT);
    for (service, port) in [("grpc", GRPC_LISTEN), ("grpcs", GRPCS_LISTEN)] {
        let output = client
            .run(PYTHON, &["-c", GRPC_CLIENT, &format!("{lb}:{port}")])
            .unwrap_or_else(|error| {
                panic!("gRPC client via {service}: {error:#}\n{}", node.log_text())
            });
        let expected = format!(
            "unary echo:hi xff={client_ip} trailer unary-done\n\
             server-stream item0,item1,item2\n\
             client-stream a+b+c\n\
             bidi X,Y\n\
             fail PERMISSION_DENIED no entry\n",
            client_ip = client.ip
        );
        assert_eq!(output, expected, "through {service}");
    }
}
