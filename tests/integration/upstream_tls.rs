//! `https://` upstreams: real TLS servers (tokio-rustls, certificates from a test CA) behind the
//! gateway. Trusted through `upstream.ca_file`; an unknown issuer, a certificate for another name and
//! a missing client certificate each end in a 502 whose log line says why; the configured client
//! certificate is the one the upstream sees; HTTP/2 is spoken where the upstream offers it by ALPN.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::browser::{log_text, logs};
use crate::servers::TestCa;
use crate::support::*;

const PUBLIC: &str = "[[routes]]\npath = \"^/\"\npolicy = \"public\"\n";

/// What the TLS upstream saw of one request.
#[derive(Debug, Clone)]
struct SeenTls {
    version: http::Version,
    path: String,
    host: Option<String>,
    /// The client certificate presented in the handshake (DER), if any.
    client_cert: Option<Vec<u8>>,
}

/// An HTTPS upstream on loopback; records what it saw and answers `tls <version> <path>`.
struct TlsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenTls>>>,
}

impl TlsUpstream {
    async fn start(config: rustls::ServerConfig) -> TlsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    // A refused handshake (no client certificate, say) just ends the connection.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let client_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.as_ref().to_vec());
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (log, client_cert) = (log.clone(), client_cert.clone());
                        async move {
                            let host = req.uri().authority().map(|a| a.to_string()).or_else(|| {
                                req.headers()
                                    .get("host")
                                    .map(|h| h.to_str().unwrap().to_string())
                            });
                            let seen = SeenTls {
                                version: req.version(),
                                path: req.uri().path().to_string(),
                                host,
                                client_cert,
                            };
                            let body = format!("tls {:?} {}", seen.version, seen.path);
                            log.lock().unwrap().push(seen);
                            // The request body, if any, is read to the end first.
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, seen }
    }

    fn seen(&self) -> Vec<SeenTls> {
        self.seen.lock().unwrap().clone()
    }
}

/// A server configuration for the PEM pair, offering `alpn`, asking for a client certificate from
/// `client_ca` when given.
fn server_config(
    cert_pem: &str,
    key_pem: &str,
    alpn: &[&[u8]],
    client_ca: Option<&str>,
) -> rustls::ServerConfig {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap(),
            )
        }
    };
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `[upstream]` lines that name files.
fn upstream_files(pairs: &[(&str, &Path)]) -> String {
    pairs
        .iter()
        .map(|(key, path)| format!("{key} = {:?}\n", path.display().to_string()))
        .collect()
}

/// A gateway in this process in front of `upstream`, with these extra `[upstream]` lines.
async fn gateway_for(upstream: &str, upstream_lines: &str) -> portcullis::RunningGateway {
    logs();
    let text = gateway_toml(upstream, PUBLIC).replace(
        "connect_timeout = \"2s\"",
        &format!("connect_timeout = \"2s\"\n{upstream_lines}"),
    );
    gateway(&text).await
}

async fn get(gw: &portcullis::RunningGateway, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://{}{path}", gw.addr()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Wait (bounded) until the captured log holds `needle`.
async fn logged(needle: &str) -> bool {
    eventually(Duration::from_secs(10), || log_text().contains(needle)).await
}

#[tokio::test]
async fn an_upstream_trusted_through_ca_file_is_served() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue_pem(&["localhost"]);
    let up = TlsUpstream::start(server_config(&cert, &key, &[b"http/1.1"], None)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let gw = gateway_for(
        &format!("https://localhost:{}", up.addr.port()),
        &upstream_files(&[("ca_file", &ca_file)]),
    )
    .await;
    for i in 0..3 {
        let (status, body) = get(&gw, &format!("/over/tls/{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("tls HTTP/1.1 /over/tls/{i}"));
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.client_cert.is_none()));
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_offering_h2_is_spoken_to_in_http2() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue_pem(&["localhost"]);
    let up = TlsUpstream::start(server_config(&cert, &key, &[b"h2", b"http/1.1"], None)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let gw = gateway_for(
        &format!("https://localhost:{}/base", up.addr.port()),
        &upstream_files(&[("ca_file", &ca_file)]),
    )
    .await;
    // Several at once share the one HTTP/2 connection; a body goes up as well.
    let c = client();
    let requests = (0..8).map(|i| {
        let c = c.clone();
        let url = format!("http://{}/h2/{i}", gw.addr());
        async move {
            let r = c.post(url).body(pattern(0, 100_000)).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    for (i, (status, body)) in futures_util::future::join_all(requests)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("tls HTTP/2.0 /base/h2/{i}"));
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 8);
    for s in &seen {
        assert_eq!(s.version, http::Version::HTTP_2, "{s:?}");
        // preserve_host: the client's host travels as :authority.
        assert_eq!(
            s.host.as_deref(),
            Some(gw.addr().to_string().as_str()),
            "{s:?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_a_502_with_the_reason_logged() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue_pem(&["localhost"]);
    let up = TlsUpstream::start(server_config(&cert, &key, &[b"http/1.1"], None)).await;
    // No ca_file: the system roots do not know the test CA.
    let gw = gateway_for(&format!("https://localhost:{}", up.addr.port()), "").await;
    let (status, body) = get(&gw, "/untrusted").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        logged("is not issued by a trusted authority").await,
        "{}",
        log_text()
    );
    assert!(log_text().contains("UnknownIssuer"), "{}", log_text());
    assert!(up.seen().is_empty(), "nothing reached the upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_502_with_the_reason_logged() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue_pem(&["other.example"]);
    let up = TlsUpstream::start(server_config(&cert, &key, &[b"http/1.1"], None)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let files = upstream_files(&[("ca_file", &ca_file)]);
    for host in ["localhost", "127.0.0.1"] {
        let gw = gateway_for(&format!("https://{host}:{}", up.addr.port()), &files).await;
        let (status, body) = get(&gw, "/wrong-name").await;
        assert_eq!(status, 502, "{host}: {body}");
        gw.shutdown().await;
    }
    assert!(
        logged("does not name the host of the upstream URL").await,
        "{}",
        log_text()
    );
    assert!(up.seen().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn an_upstream_requiring_a_client_certificate_refuses_a_gateway_without_one() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue_pem(&["localhost"]);
    let up = TlsUpstream::start(server_config(&cert, &key, &[b"http/1.1"], Some(&ca.pem))).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let gw = gateway_for(
        &format!("https://localhost:{}", up.addr.port()),
        &upstream_files(&[("ca_file", &ca_file)]),
    )
    .await;
    let (status, body) = get(&gw, "/needs-client-cert").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        logged("the upstream requires a client certificate (upstream.client_cert_file)").await,
        "{}",
        log_text()
    );
    assert!(up.seen().is_empty(), "nothing reached the upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue_pem(&["localhost"]);
    let up = TlsUpstream::start(server_config(
        &cert,
        &key,
        &[b"h2", b"http/1.1"],
        Some(&ca.pem),
    ))
    .await;
    let (client_cert, client_key) = ca.issue_pem(&["portcullis.client.test"]);
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("ca_file", write(dir.path(), "ca.pem", &ca.pem)),
        (
            "client_cert_file",
            write(dir.path(), "client.pem", &client_cert),
        ),
        (
            "client_key_file",
            write(dir.path(), "client-key.pem", &client_key),
        ),
    ];
    let lines = upstream_files(
        &files
            .iter()
            .map(|(k, p)| (*k, p.as_path()))
            .collect::<Vec<_>>(),
    );
    let gw = gateway_for(&format!("https://localhost:{}", up.addr.port()), &lines).await;
    let (status, body) = get(&gw, "/mtls").await;
    assert_eq!(status, 200, "{body}");
    let presented = up.seen()[0]
        .client_cert
        .clone()
        .expect("a client certificate");
    let expected = CertificateDer::pem_slice_iter(client_cert.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(presented, expected.as_ref(), "the configured certificate");
    gw.shutdown().await;

    // A client certificate the upstream's CA did not issue is refused, and said so.
    let other = TestCa::new();
    let (stranger_cert, stranger_key) = other.issue_pem(&["stranger.test"]);
    std::fs::write(&files[1].1, stranger_cert).unwrap();
    std::fs::write(&files[2].1, stranger_key).unwrap();
    let gw = gateway_for(&format!("https://localhost:{}", up.addr.port()), &lines).await;
    let (status, body) = get(&gw, "/mtls").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        logged("the upstream refused the client certificate").await,
        "{}",
        log_text()
    );
    gw.shutdown().await;
}

/// A WebSocket cannot travel over HTTP/2 as an `Upgrade`: to an upstream that offers h2, the upgrade
/// goes on a connection that offered HTTP/1.1 only, while other requests use HTTP/2.
#[tokio::test]
async fn an_upgrade_to_an_h2_upstream_goes_over_http1() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let ca = TestCa::new();
    let (cert, key) = ca.issue_pem(&["localhost"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
        &cert,
        &key,
        &[b"h2", b"http/1.1"],
        None,
    )));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let negotiated = Arc::new(Mutex::new(Vec::<Option<Vec<u8>>>::new()));
    let log = negotiated.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                log.lock().unwrap().push(alpn.clone());
                if alpn.as_deref() == Some(b"h2") {
                    let service = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("h2 here"))))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                    return;
                }
                let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let gw = gateway_for(
        &format!("https://localhost:{port}"),
        &upstream_files(&[("ca_file", &ca_file)]),
    )
    .await;
    assert_eq!(get(&gw, "/plain").await, (200, "h2 here".to_string()));
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/socket", gw.addr()))
        .await
        .expect("the upgrade passes through the gateway");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("over http/1.1")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "over http/1.1");
    ws.close(None).await.unwrap();
    assert_eq!(
        *negotiated.lock().unwrap(),
        vec![Some(b"h2".to_vec()), Some(b"http/1.1".to_vec())]
    );
    gw.shutdown().await;
}

#[test]
fn tls_settings_are_checked_at_load() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue_pem(&["client.test"]);
    let (_, other_key) = ca.issue_pem(&["other.test"]);
    let cert_file = write(dir.path(), "client.pem", &cert);
    let key_file = write(dir.path(), "client-key.pem", &key);
    let other_key_file = write(dir.path(), "other-key.pem", &other_key);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let text = |url: &str, lines: &str| {
        gateway_toml(url, PUBLIC).replace(
            "connect_timeout = \"2s\"",
            &format!("connect_timeout = \"2s\"\n{lines}"),
        )
    };
    let refused = |url: &str, lines: &str| {
        portcullis::config::Config::from_toml_str(&text(url, lines), &Default::default())
            .expect_err("refused")
            .to_string()
    };
    let https = "https://app.internal";
    let e = refused(
        https,
        &upstream_files(&[
            ("client_cert_file", &cert_file),
            ("client_key_file", &other_key_file),
        ]),
    );
    assert!(
        e.starts_with("upstream.client_key_file:") && e.contains("does not fit"),
        "{e}"
    );
    let e = refused(https, &upstream_files(&[("client_cert_file", &cert_file)]));
    assert!(
        e.starts_with("upstream.client_key_file: is required"),
        "{e}"
    );
    let e = refused(https, &upstream_files(&[("ca_file", &key_file)]));
    assert!(e.starts_with("upstream.ca_file:"), "{e}");
    let e = refused(
        "http://127.0.0.1:8080",
        &upstream_files(&[("ca_file", &ca_file)]),
    );
    assert!(e.contains("no upstream is https://"), "{e}");
    let ok = portcullis::config::Config::from_toml_str(
        &text(
            https,
            &upstream_files(&[
                ("ca_file", &ca_file),
                ("client_cert_file", &cert_file),
                ("client_key_file", &key_file),
            ]),
        ),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(ok.upstream.tls.ca_certs.len(), 1);
    // The key never shows in the configuration's debug output.
    let debug = format!("{:?}", ok.upstream.tls);
    assert!(
        debug.contains("[redacted]") && !debug.contains("PRIVATE"),
        "{debug}"
    );
}
