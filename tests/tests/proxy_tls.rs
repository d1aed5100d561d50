//! HTTPS in front of plain HTTP backends: two certificates on one listener chosen by the name
//! the client asks for (SNI), the first one for clients that ask for no known name, and
//! HTTP/2 or HTTP/1.1 as ALPN negotiates. The client is curl, which verifies the certificate
//! against the one the test made, so a wrong choice fails the handshake.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::{wait_for_tcp, EchoBackend, Host, Lab, CLIENT, HTTP1, HTTP2, LB1};

const PORT: u16 = 443;

/// A self-signed certificate for `name` made with openssl: (cert.pem, key.pem).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        status.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    (cert, key)
}

fn node_config(lab: &Lab, node: &Host, certs: &[(PathBuf, PathBuf)]) -> String {
    let certificates: Vec<String> = certs
        .iter()
        .map(|(cert, key)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                cert.display(),
                key.display()
            )
        })
        .collect();
    format!(
        r#"{node}
[[service]]
name = "secure"
listen = "{ip}:{PORT}"
backends = ["{http1}:80", "{http2}:80"]
tls = {{ certificates = [{certificates}] }}
"#,
        node = TandemNode::node_section(lab, node),
        ip = node.ip,
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
        certificates = certificates.join(", "),
    )
}

/// curl from the client host to `name` (resolved to lb1), trusting only `ca`; returns
/// (HTTP version, body).
fn curl(
    client: &Host,
    lb1: &Host,
    name: &str,
    ca: &Path,
    http2: bool,
) -> anyhow::Result<(String, String)> {
    let output = client.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            if http2 { "--http2" } else { "--http1.1" },
            "--cacert",
            &ca.display().to_string(),
            "--resolve",
            &format!("{name}:{PORT}:{}", lb1.ip),
            "-w",
            "\n%{http_version}",
            &format!("https://{name}:{PORT}/"),
        ],
    )?;
    let (body, version) = output.rsplit_once('\n').unwrap_or((&output, ""));
    Ok((version.to_owned(), body.to_owned()))
}

#[test]
fn sni_chooses_the_certificate_and_alpn_the_protocol() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let _http2 = EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2");
    let alpha = certificate(lab.work_dir(), "alpha.test");
    let beta = certificate(lab.work_dir(), "beta.test");
    let lb1 = lab.host(LB1);
    let config = node_config(&lab, lb1, &[alpha.clone(), beta.clone()]);
    let node = TandemNode::start(&lab, lb1, &config).expect("tandem run");
    let client = lab.host(CLIENT);
    let addr = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, addr, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }

    for (name, cert) in [("alpha.test", &alpha.0), ("beta.test", &beta.0)] {
        for http2 in [true, false] {
            let (version, body) = curl(client, lb1, name, cert, http2).unwrap_or_else(|e| {
                panic!(
                    "{name} (h2: {http2}) with its own certificate: {e:#}\n{}",
                    node.log_text()
                )
            });
            assert_eq!(version, if http2 { "2" } else { "1.1" }, "{name}");
            assert!(body.starts_with("backend http"), "{body}");
            assert!(body.contains("x-forwarded-proto: https"), "{body}");
            assert!(
                body.contains(&format!("x-forwarded-port: {PORT}")),
                "{body}"
            );
            assert!(body.contains(&format!("host: {name}")), "{body}");
        }
    }
    // The other name's certificate does not verify: the choice really follows SNI.
    assert!(
        curl(client, lb1, "beta.test", &alpha.0, true).is_err(),
        "beta.test is not served with alpha's certificate"
    );
    // A name no certificate has gets the first one.
    let unknown = client
        .run(
            "sh",
            &[
                "-c",
                &format!(
                    "echo | openssl s_client -connect {}:{PORT} -servername other.test 2>/dev/null | openssl x509 -noout -subject",
                    lb1.ip
                ),
            ],
        )
        .expect("openssl s_client");
    assert!(
        unknown.contains("alpha.test"),
        "the default certificate: {unknown}"
    );
}
