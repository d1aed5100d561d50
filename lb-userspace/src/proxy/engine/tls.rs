//! HTTPS listeners: certificates loaded from PEM files, chosen by the name the client asks for
//! (SNI), and ALPN offering h2 and http/1.1.
//!
//! Each certificate answers for the DNS names in its subjectAltName (wildcards included); a
//! client that sends no name, or a name no certificate has, gets the first certificate listed,
//! as Pound does with its first `Cert`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::CertificateFiles;

/// A certificate and the names it answers for.
#[derive(Debug)]
struct Entry {
    /// Lower case; a wildcard is kept as "*.example.com".
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Picks the certificate for a handshake by SNI; the first one is the default.
#[derive(Debug)]
pub struct SniResolver {
    entries: Vec<Entry>,
}

impl SniResolver {
    fn choose(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            if let Some(index) = best_match(self.entries.iter().map(|e| &e.names[..]), &name) {
                return Some(&self.entries[index].key);
            }
        }
        self.entries.first().map(|entry| &entry.key)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(client_hello.server_name()).cloned()
    }
}

/// The first certificate with an exact name match, else the first with a wildcard match.
fn best_match<'a>(
    certificates: impl Iterator<Item = &'a [String]> + Clone,
    name: &str,
) -> Option<usize> {
    let exact = certificates
        .clone()
        .position(|names| names.iter().any(|n| n == name));
    exact.or_else(|| {
        certificates.clone().position(|names| {
            names.iter().any(|n| {
                n.strip_prefix("*.").is_some_and(|domain| {
                    name.strip_suffix(domain)
                        .and_then(|sub| sub.strip_suffix('.'))
                        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
                })
            })
        })
    })
}

/// Loads every certificate and key and builds the acceptor of one HTTPS listener.
pub fn acceptor(certificates: &[CertificateFiles]) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut entries = Vec::with_capacity(certificates.len());
    for files in certificates {
        let chain = read_chain(&files.cert)?;
        let key = read_key(&files.key)?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .with_context(|| format!("{}: unsupported private key", files.key.display()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().with_context(|| {
            format!(
                "{} is not the key of {}",
                files.key.display(),
                files.cert.display()
            )
        })?;
        let names = dns_names(&certified.cert[0])
            .with_context(|| format!("{}: reading the certificate", files.cert.display()))?;
        entries.push(Entry {
            names,
            key: Arc::new(certified),
        });
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { entries }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let file =
        File::open(path).with_context(|| format!("opening certificate {}", path.display()))?;
    let chain = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading certificate {}", path.display()))?;
    if chain.is_empty() {
        bail!(
            "{}: no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        );
    }
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let file = File::open(path).with_context(|| format!("opening key {}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .with_context(|| format!("reading key {}", path.display()))?
        .with_context(|| format!("{}: no private key found (expected PEM)", path.display()))
}

fn dns_names(certificate: &CertificateDer<'_>) -> anyhow::Result<Vec<String>> {
    let parsed = webpki::EndEntityCert::try_from(certificate)
        .map_err(|error| anyhow::anyhow!("not a valid X.509 certificate: {error:?}"))?;
    Ok(parsed
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_beat_wildcards_and_wildcards_cover_one_label() {
        let certs = [
            vec!["*.example.com".to_owned()],
            vec!["www.example.com".to_owned(), "example.com".to_owned()],
            vec!["other.test".to_owned()],
        ];
        let pick = |name| best_match(certs.iter().map(|c| &c[..]), name);
        assert_eq!(pick("www.example.com"), Some(1));
        assert_eq!(pick("api.example.com"), Some(0));
        assert_eq!(pick("a.b.example.com"), None);
        assert_eq!(pick("other.test"), Some(2));
        assert_eq!(pick("unknown.test"), None);
    }
}
