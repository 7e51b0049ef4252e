//! TLS to `https://` upstreams: whom to trust, what to present, and why a handshake failed.
//!
//! One rustls client configuration is built from `[upstream]` (the system roots, read once per process
//! through `rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`, plus
//! `upstream.ca_file`; the client certificate when one is configured) and shared by the pools of every
//! `https://` upstream. Host names are verified by rustls's WebPKI verifier, as for any client: nothing
//! here weakens it. ALPN offers `h2` and `http/1.1`, so an upstream that speaks HTTP/2 is spoken to in
//! HTTP/2; a request that asks to switch protocols (a WebSocket upgrade) goes on a connection that
//! offered `http/1.1` only, since HTTP/2 carries no `Upgrade`.
//!
//! A failure says why in words an operator can act on ([`explain`]): an unknown issuer, a name the
//! certificate does not carry, an expired certificate, an upstream that wants a client certificate.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use url::{Host, Url};

use crate::config::UpstreamTls;

/// The connectors of every `https://` upstream, built from one `[upstream]`.
pub struct Connectors {
    /// ALPN `h2`, `http/1.1`.
    pub(super) negotiating: TlsConnector,
    /// ALPN `http/1.1` only, for requests that upgrade.
    pub(super) http1: TlsConnector,
    /// Whether a client certificate is configured (a refusal then means something else).
    pub(super) client_certificate: bool,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors")
            .field("client_certificate", &self.client_certificate)
            .finish_non_exhaustive()
    }
}

impl Connectors {
    pub fn new(settings: &UpstreamTls) -> Result<Connectors, String> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        for cert in &settings.ca_certs {
            roots
                .add(cert.clone())
                .map_err(|e| format!("upstream.ca_file: unusable certificate: {e}"))?;
        }
        if roots.is_empty() {
            tracing::warn!(
                "no trusted certificate authority for https:// upstreams: the system has none \
                 and upstream.ca_file is not set; every upstream certificate will be refused"
            );
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("upstream TLS: {e}"))?
        .with_root_certificates(roots);
        let mut config = match &settings.client_identity {
            Some(id) => builder
                .with_client_auth_cert(id.cert_chain.clone(), id.key.clone_key())
                .map_err(|e| format!("upstream.client_key_file: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut http1 = config.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connectors {
            negotiating: TlsConnector::from(Arc::new(config)),
            http1: TlsConnector::from(Arc::new(http1)),
            client_certificate: settings.client_identity.is_some(),
        })
    }
}

/// The name an upstream's certificate must carry: the URL's host (a DNS name or an IP address).
pub fn server_name(url: &Url) -> Option<ServerName<'static>> {
    match url.host()? {
        Host::Domain(name) => ServerName::try_from(name.to_string()).ok(),
        Host::Ipv4(ip) => Some(ServerName::IpAddress(std::net::IpAddr::V4(ip).into())),
        Host::Ipv6(ip) => Some(ServerName::IpAddress(std::net::IpAddr::V6(ip).into())),
    }
}

/// What identifies the trust settings: pools made under other settings are not reused.
pub fn fingerprint(settings: &UpstreamTls) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    for cert in &settings.ca_certs {
        part(b"ca");
        part(cert.as_ref());
    }
    if let Some(id) = &settings.client_identity {
        for cert in &id.cert_chain {
            part(b"cert");
            part(cert.as_ref());
        }
        part(b"key");
        part(id.key.secret_der());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The system's trusted roots, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("reading the system's trusted certificates: {e}");
        }
        tracing::debug!(
            count = found.certs.len(),
            "system roots loaded for https:// upstreams"
        );
        found.certs
    })
}

/// The rustls error somewhere in `e`'s chain, also inside an `io::Error` (whose `source` skips the
/// error it wraps).
pub fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// Why a TLS exchange with the upstream failed, for the log: the cause in plain words, then rustls's
/// own text.
pub fn explain(e: &rustls::Error, client_certificate: bool) -> String {
    use rustls::Error as E;
    let why = match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "the upstream's certificate is not issued by a trusted authority (the system \
                 roots, upstream.ca_file)"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the upstream's certificate does not name the host of the upstream URL"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the upstream's certificate has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the upstream's certificate is not valid yet"
            }
            CertificateError::Revoked => "the upstream's certificate is revoked",
            _ => "the upstream's certificate is not acceptable",
        },
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            if client_certificate {
                "the upstream asked for a client certificate and did not get one it accepts"
            } else {
                "the upstream requires a client certificate (upstream.client_cert_file)"
            }
        }
        // DecryptError: a signature that does not check out, the client certificate's among them.
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError
            | AlertDescription::AccessDenied,
        ) if client_certificate => "the upstream refused the client certificate",
        E::AlertReceived(AlertDescription::HandshakeFailure) if !client_certificate => {
            "the upstream refused the handshake (does it require a client certificate? \
             upstream.client_cert_file)"
        }
        E::AlertReceived(_) => "the upstream refused the handshake",
        E::NoApplicationProtocol => "the upstream speaks neither HTTP/2 nor HTTP/1.1 over TLS",
        _ => "the TLS handshake failed",
    };
    format!("{why}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_what_to_fix() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(explain(&unknown, false).contains("upstream.ca_file"));
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(explain(&name, false).contains("does not name the host"));
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(explain(&required, false).contains("upstream.client_cert_file"));
        assert!(explain(&required, true).contains("did not get one it accepts"));
    }

    #[test]
    fn the_rustls_error_is_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner.clone());
        assert_eq!(rustls_error(&io), Some(&inner));
        let plain = std::io::Error::other("refused");
        assert_eq!(rustls_error(&plain), None);
    }

    #[test]
    fn names_come_from_the_url_host() {
        let name = |u: &str| server_name(&Url::parse(u).unwrap()).map(|n| n.to_str().into_owned());
        assert_eq!(
            name("https://app.internal:8443/x").as_deref(),
            Some("app.internal")
        );
        assert_eq!(name("https://127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("https://[::1]:9443").as_deref(), Some("::1"));
    }

    #[test]
    fn the_fingerprint_changes_with_the_trust() {
        let none = UpstreamTls::default();
        let one = UpstreamTls {
            ca_certs: vec![CertificateDer::from(vec![1, 2, 3])],
            client_identity: None,
        };
        assert_ne!(fingerprint(&none), fingerprint(&one));
        assert_eq!(fingerprint(&one), fingerprint(&one));
    }
}
