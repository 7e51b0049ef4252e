//! The listener's certificate: served from a swappable value, re-read when its files change.
//!
//! rustls asks [`Certificates`] (a `ResolvesServerCert`) for the certificate of every handshake, and
//! gets the pair in force at that moment; a connection keeps the one it was made with. A small task
//! reads `server.tls_cert_file` and `server.tls_key_file` every [`POLL`] and, when their contents
//! changed, loads the new pair: a certificate chain and a key that belong together replace the old pair
//! for the next handshake; anything else (a key that does not fit the certificate, a file half
//! written, a file missing) is logged once and the previous pair keeps serving until a usable pair
//! appears. Polling the contents rather than watching for events needs no platform code and sees every
//! way a file can be replaced, including the symlink swap of a Kubernetes secret volume; two small
//! files read each second cost nothing.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;

/// How often the files are read: a change is served within about this long.
pub const POLL: Duration = Duration::from_secs(1);

/// The listener's certificate and key, and where they come from.
pub struct Certificates {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    /// The digest of the contents last looked at, usable or not: each change is handled (and logged)
    /// once.
    seen: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert_file", &self.files.cert_file)
            .field("key_file", &self.files.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The two files' contents.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Result<Contents, String> {
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| format!("server.{key}: cannot read {}: {e}", path.display()))
        };
        Ok(Contents {
            cert: read("tls_cert_file", &files.cert_file)?,
            key: read("tls_key_file", &files.key_file)?,
        })
    }

    fn digest(&self) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&(self.cert.len() as u64).to_be_bytes());
        ctx.update(&self.cert);
        ctx.update(&self.key);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The chain and key, checked to belong together.
    fn certified_key(&self, files: &TlsFiles) -> Result<CertifiedKey, String> {
        let certs = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                format!(
                    "server.tls_cert_file: cannot read certificates from {}: {e}",
                    files.cert_file.display()
                )
            })?;
        if certs.is_empty() {
            return Err(format!(
                "server.tls_cert_file: no certificate in {}",
                files.cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| {
            format!(
                "server.tls_key_file: cannot read a private key from {}: {e}",
                files.key_file.display()
            )
        })?;
        CertifiedKey::from_der(certs, key, &rustls::crypto::aws_lc_rs::default_provider()).map_err(
            |e| {
                format!(
                    "server.tls_key_file: the key in {} does not fit the certificate in {}: {e}",
                    files.key_file.display(),
                    files.cert_file.display()
                )
            },
        )
    }
}

impl Certificates {
    /// Read the pair now; an unusable pair is an error (start-up stops on it).
    pub fn load(files: &TlsFiles) -> Result<Arc<Certificates>, String> {
        let contents = Contents::read(files)?;
        let key = contents.certified_key(files)?;
        Ok(Arc::new(Certificates {
            files: files.clone(),
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(contents.digest()),
        }))
    }

    /// A rustls acceptor serving the pair in force, offering h2 and http/1.1 by ALPN.
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// Re-read the files now; a new usable pair is served from the next handshake on. Returns whether
    /// the pair was replaced.
    pub fn refresh(&self) -> bool {
        let contents = match Contents::read(&self.files) {
            Ok(c) => c,
            Err(e) => {
                // A file being replaced can be missing for a moment; say so once per state.
                let digest = [0u8; 32];
                if self.note(digest) {
                    tracing::warn!("{e}; the previous certificate keeps serving");
                }
                return false;
            }
        };
        if !self.note(contents.digest()) {
            return false;
        }
        match contents.certified_key(&self.files) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(
                    cert_file = %self.files.cert_file.display(),
                    "TLS certificate reloaded: new connections get the new certificate"
                );
                true
            }
            Err(e) => {
                tracing::warn!("{e}; the previous certificate keeps serving");
                false
            }
        }
    }

    /// Record `digest` as seen; whether it is new.
    fn note(&self, digest: [u8; 32]) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == digest {
            return false;
        }
        *seen = digest;
        true
    }

    /// Re-read the files every [`POLL`] for as long as the certificates are in use.
    pub fn watch(self: &Arc<Self>) {
        let this: Weak<Certificates> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(certs) = this.upgrade() else {
                    return;
                };
                // File reads block: off the request threads.
                let _ = tokio::task::spawn_blocking(move || certs.refresh()).await;
            }
        });
    }

    /// The end-entity certificate in force (DER).
    pub fn current(&self) -> CertificateDer<'static> {
        self.current.load().cert[0].clone()
    }
}
