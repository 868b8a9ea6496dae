//! TLS: the client listener's certificate (`wss://`), mutual TLS between nodes, and the
//! certificates `switchyard cert` makes.
//!
//! Configurations are held behind locks and taken per connection, so a reload (SIGHUP)
//! applies to the next handshake while established connections keep theirs. Protocol
//! versions are rustls's safe defaults: TLS 1.3 and 1.2, nothing older. The crypto provider
//! is *ring*, named explicitly (no process-wide default is relied on).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::Config;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading a PEM private key from {}", path.display()))
}

fn roots(ca: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for c in read_certs(ca)? {
        store
            .add(c)
            .with_context(|| format!("using {} as a CA certificate", ca.display()))?;
    }
    Ok(Arc::new(store))
}

/// Where Debian (and most Linux distributions) keep the system's trusted CA certificates.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Client config for `https://` proxy endpoints: trusting `ca` (a PEM bundle), or the
/// system's CA bundle when `None`; HTTP/1.1 only. `None` when no endpoint is `https://`.
pub fn backend_client_config(cfg: &Config) -> anyhow::Result<Option<Arc<ClientConfig>>> {
    if !cfg.proxy.uses_https() {
        return Ok(None);
    }
    let ca = cfg
        .proxy
        .tls_ca
        .clone()
        .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&ca).context("proxy.tls_ca (https proxy endpoints)")?)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(c)))
}

/// Server config for the client listener: one certificate chain, ALPN `h2` then `http/1.1`
/// (a client offering both gets HTTP/2; WebSocket clients offer only `http/1.1`).
fn client_listener_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let mut c = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(c)
}

/// The client listener's TLS (when `client.tls_cert` is set).
pub struct ClientTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl ClientTls {
    /// Loads `client.tls_cert` / `client.tls_key`; `None` when TLS is off.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<ClientTls>> {
        let (Some(cert), Some(key)) = (&cfg.client.tls_cert, &cfg.client.tls_key) else {
            return Ok(None);
        };
        let c = client_listener_config(cert, key).context("client TLS")?;
        Ok(Some(ClientTls {
            cert: cert.clone(),
            key: key.clone(),
            current: RwLock::new(Arc::new(c)),
        }))
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Re-reads the certificate and key files; on error the current ones stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let c = client_listener_config(&self.cert, &self.key).context("client TLS")?;
        *self.current.write() = Arc::new(c);
        Ok(())
    }
}

/// Mutual TLS between nodes (when `cluster.tls_ca` is set): the listener requires a client
/// certificate signed by the cluster CA, and outgoing connections present this node's.
pub struct ClusterTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    server: RwLock<Arc<ServerConfig>>,
    client: RwLock<Arc<ClientConfig>>,
}

fn cluster_configs(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(ServerConfig, ClientConfig)> {
    let roots = roots(ca)?;
    let chain = read_certs(cert)?;
    let k = read_key(key)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .context("building the cluster client-certificate verifier")?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), k.clone_key())
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, k)
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    Ok((server, client))
}

impl ClusterTls {
    /// Loads `cluster.tls_*`; `None` when cluster TLS is off.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Arc<ClusterTls>>> {
        let c = &cfg.cluster;
        let (Some(ca), Some(cert), Some(key)) = (&c.tls_ca, &c.tls_cert, &c.tls_key) else {
            return Ok(None);
        };
        let (s, cl) = cluster_configs(ca, cert, key).context("cluster TLS")?;
        Ok(Some(Arc::new(ClusterTls {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            server: RwLock::new(Arc::new(s)),
            client: RwLock::new(Arc::new(cl)),
        })))
    }

    /// An acceptor for the cluster listener (client certificates required).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.read().clone())
    }

    /// A connector for outgoing cluster connections (presents this node's certificate).
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.client.read().clone())
    }

    /// Re-reads the CA, certificate and key; on error the current ones stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let (s, c) = cluster_configs(&self.ca, &self.cert, &self.key).context("cluster TLS")?;
        *self.server.write() = Arc::new(s);
        *self.client.write() = Arc::new(c);
        Ok(())
    }
}

/// The name a peer's certificate must carry: the host part of `host:port` (an IP address or
/// a DNS name).
pub fn server_name(addr: &str) -> anyhow::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string()).with_context(|| format!("{host:?} is not a host name"))
}

/// Certificate generation for `switchyard cert`.
pub mod certs {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    /// A PEM certificate and its PEM private key.
    pub struct Pair {
        /// The certificate.
        pub cert_pem: String,
        /// Its private key (PKCS#8).
        pub key_pem: String,
    }

    fn validity(params: &mut CertificateParams, days: u32) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0) as i64;
        // A day of slack for clocks slightly behind the issuer's.
        let (y, m, d) = civil_from_days(now - 1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil_from_days(now + days as i64);
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }

    /// A self-signed CA for a cluster.
    pub fn ca(name: &str, days: u32) -> anyhow::Result<Pair> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut p, days);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A node (or client-listener) certificate signed by the CA in `ca_cert_pem` /
    /// `ca_key_pem`, valid for server and client authentication, naming `sans` (IP addresses
    /// or DNS names).
    pub fn node(
        name: &str,
        sans: &[String],
        ca_cert_pem: &str,
        ca_key_pem: &str,
        days: u32,
    ) -> anyhow::Result<Pair> {
        if sans.is_empty() {
            bail!("a node certificate needs at least one --san (the address peers dial)");
        }
        let ca_key = KeyPair::from_pem(ca_key_pem).context("parsing the CA key")?;
        let issuer =
            Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).context("parsing the CA certificate")?;
        let mut p = CertificateParams::new(sans.to_vec()).context("subject alternative names")?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        validity(&mut p, days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
    /// `civil_from_days`).
    fn civil_from_days(z: i64) -> (i32, u8, u8) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y as i32, m, d)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn civil_dates() {
            assert_eq!(civil_from_days(0), (1970, 1, 1));
            assert_eq!(civil_from_days(59), (1970, 3, 1));
            assert_eq!(civil_from_days(11_016), (2000, 2, 29));
            assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        }

        #[test]
        fn node_certificates_chain_to_their_ca() {
            let ca = ca("test CA", 30).unwrap();
            let n = node(
                "n1",
                &["127.0.0.1".into(), "localhost".into()],
                &ca.cert_pem,
                &ca.key_pem,
                30,
            )
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let w = |name: &str, s: &str| {
                let p = dir.path().join(name);
                std::fs::write(&p, s).unwrap();
                p
            };
            let (ca_p, cert_p, key_p) = (
                w("ca.pem", &ca.cert_pem),
                w("n1.pem", &n.cert_pem),
                w("n1.key", &n.key_pem),
            );
            cluster_configs(&ca_p, &cert_p, &key_p).unwrap();
            client_listener_config(&cert_p, &key_p).unwrap();
            let other = super::ca("other CA", 30).unwrap();
            assert!(
                node("x", &[], &other.cert_pem, &other.key_pem, 1).is_err(),
                "a SAN is required"
            );
            let wrong_key = w("other.key", &other.key_pem);
            assert!(cluster_configs(&ca_p, &cert_p, &wrong_key).is_err());
        }
    }
}
