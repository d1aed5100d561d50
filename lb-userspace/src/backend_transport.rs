//! How the proxy and the health checks reach a backend that speaks something other than plain
//! HTTP/1.1 (`backend_protocol = "h2c" | "https" | "h2"`): a TCP connection, TLS on it when the
//! protocol says so (rustls, as the service's `backend_tls` says), and hyper's client
//! connection on top: HTTP/1.1, or HTTP/2 (ALPN "h2" over TLS, prior knowledge for h2c).
//!
//! Plain HTTP/1.1 backends are reached by the proxy's own engine instead
//! (`proxy::engine::h1`): there a request's backend connection is driven in the client's task.
//! Here hyper drives each connection in a task of its own, which HTTP/2's multiplexing needs
//! anyway (one connection carries the streams of many clients).

use std::fs::File;
use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::config::{BackendProtocol, BackendTls};

/// A backend connection before HTTP: plain TCP or TLS over it.
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// Errors a body may carry into hyper's client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a service's backends are reached: the protocol and, for TLS, how they are checked.
pub struct Transport {
    /// Tells this transport's pooled connections from another's to the same backend (a
    /// reloaded service with other TLS settings gets a new one).
    pub id: u64,
    pub protocol: BackendProtocol,
    tls: Option<TlsClient>,
}

struct TlsClient {
    connector: TlsConnector,
    /// `server_name` from the config: the same name for every backend.
    fixed_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Transport {
    /// The transport for a service; reads the CA file now, so a bad one fails the start or
    /// the reload rather than every request.
    pub fn new(protocol: BackendProtocol, tls: Option<&BackendTls>) -> anyhow::Result<Transport> {
        let tls = match (protocol.uses_tls(), tls) {
            (false, _) => None,
            (true, settings) => {
                let default = BackendTls {
                    verify: true,
                    ..BackendTls::default()
                };
                Some(tls_client(protocol, settings.unwrap_or(&default))?)
            }
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Transport { id, protocol, tls })
    }

    /// Opens a connection to `backend` and, for TLS, completes the handshake. `host` is the
    /// backend's host name when it was configured by name: the name TLS asks for and checks
    /// (unless `server_name` says otherwise), else the address.
    pub async fn connect(&self, backend: SocketAddr, host: Option<&str>) -> io::Result<Stream> {
        let tcp = TcpStream::connect(backend).await?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Either::Left(tcp));
        };
        let name = match (&tls.fixed_name, host) {
            (Some(name), _) => name.clone(),
            (None, Some(host)) => ServerName::try_from(host.to_owned())
                .unwrap_or(ServerName::IpAddress(backend.ip().into())),
            (None, None) => ServerName::IpAddress(backend.ip().into()),
        };
        let stream = tls.connector.connect(name, tcp).await?;
        if self.protocol.is_http2() && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the backend did not agree to HTTP/2 (ALPN h2) in the TLS handshake",
            ));
        }
        Ok(Either::Right(stream))
    }

    /// Starts an HTTP connection on `stream` in a task of its own and returns its sender.
    pub async fn handshake<B>(&self, stream: Stream) -> Result<Sender<B>, hyper::Error>
    where
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let io = TokioIo::new(stream);
        if self.protocol.is_http2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "HTTP/2 backend connection ended");
                }
            });
            Ok(Sender::Http2(sender))
        } else {
            let (sender, connection) = http1::Builder::new().handshake(io).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "HTTP/1.1 backend connection ended");
                }
            });
            Ok(Sender::Http1(sender))
        }
    }
}

/// The sending half of a backend connection.
pub enum Sender<B> {
    Http1(http1::SendRequest<B>),
    Http2(http2::SendRequest<B>),
}

impl<B> Sender<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Whether a request can be sent now.
    pub fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_ready(),
            Sender::Http2(sender) => sender.is_ready(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    /// Whether the connection carries several requests at once (HTTP/2).
    pub fn is_multiplexed(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }

    /// Another handle on the same connection (HTTP/2 multiplexes; HTTP/1.1 does not).
    pub fn share(&self) -> Option<Sender<B>> {
        match self {
            Sender::Http1(_) => None,
            Sender::Http2(sender) => Some(Sender::Http2(sender.clone())),
        }
    }

    /// Sends `request` and waits for the response head.
    pub async fn send(&mut self, request: Request<B>) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }
}

fn tls_client(protocol: BackendProtocol, settings: &BackendTls) -> anyhow::Result<TlsClient> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = if settings.verify {
        let roots = match &settings.ca {
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = if protocol.is_http2() {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let fixed_name = match &settings.server_name {
        Some(name) => Some(
            ServerName::try_from(name.clone())
                .with_context(|| format!("server_name {name:?} is not a DNS name or address"))?,
        ),
        None => None,
    };
    Ok(TlsClient {
        connector: TlsConnector::from(Arc::new(config)),
        fixed_name,
    })
}

fn roots_from_file(path: &Path) -> anyhow::Result<RootCertStore> {
    let file = File::open(path).with_context(|| {
        format!(
            "cannot open backend_tls ca {}: name a readable PEM file of the authorities that \
             sign the backends' certificates",
            path.display()
        )
    })?;
    let certificates: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(file))
            .collect::<Result<_, _>>()
            .with_context(|| format!("backend_tls ca {}: not PEM", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "backend_tls ca {} holds no certificate: it must be PEM (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).with_context(|| {
            format!(
                "backend_tls ca {}: a certificate is invalid",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        bail!(
            "backend_tls has no ca and the system has no certificate authorities (install \
             ca-certificates, or name the backends' authority with backend_tls = {{ ca = \
             \"FILE\" }})"
        );
    }
    Ok(roots)
}

/// `verify = false`: any certificate is taken; signatures are still checked so the handshake
/// is sound, only who signed the certificate is not.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
