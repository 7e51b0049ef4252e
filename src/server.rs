//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN under TLS) through hyper-util's
//! auto builder, with limits against slow or oversized request heads, and graceful shutdown.
//!
//! Shutdown: when the shutdown future completes, the listener is closed (new connections are refused),
//! idle keep-alive connections are closed, in-flight requests run to completion, and after
//! `server.grace_period` whatever is left is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::ConnInfo;
use crate::runtime::Runtime;

/// Largest request head accepted, in bytes; a larger one gets `431` (HTTP/1.1) or a stream reset (HTTP/2).
/// Room for a session chunked over several cookies.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serve `listener` until `shutdown` completes, then drain for at most the grace period.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    // Listener-level settings are read once: a reload does not rebuild the listener.
    let (header_read_timeout, grace_period) = {
        let snap = rt.snapshot();
        (
            snap.config.server.header_read_timeout,
            snap.config.server.grace_period,
        )
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let rt = rt.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let tls_used = tls.is_some();
            let conn = ConnInfo::new(peer, tls_used);
            let service = service_fn(move |req| {
                let rt = rt.clone();
                let conn = conn.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(crate::phases::handle(rt, conn, req).await)
                }
            });
            let result = match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let io = TokioIo::new(stream);
                            watcher
                                .watch(
                                    builder
                                        .serve_connection_with_upgrades(io, service)
                                        .into_owned(),
                                )
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    let io = TokioIo::new(stream);
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(io, service)
                                .into_owned(),
                        )
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended with an error: {e}");
            }
        });
    }

    drop(listener);
    tracing::info!(
        "shutting down: no new connections; waiting up to {:?} for in-flight requests",
        grace_period
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace_period) => {
            tracing::warn!("grace period over; dropping the remaining connections");
        }
    }
}

/// A rustls acceptor for the configured certificate chain and key, offering h2 and http/1.1 by ALPN.
pub fn tls_acceptor(files: &crate::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
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
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        format!(
            "server.tls_key_file: cannot read a private key from {}: {e}",
            files.key_file.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls_key_file: the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
