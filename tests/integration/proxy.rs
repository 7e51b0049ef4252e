//! The streaming reverse proxy: bodies, headers, upgrades, upstream failures.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const PUBLIC: &str = "[[routes]]\npath = \"^/\"\npolicy = \"public\"\n";
const TEN_MIB: usize = 10 * 1024 * 1024;

#[tokio::test]
async fn ten_mib_bodies_pass_byte_exact_both_ways() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(&up.url(), PUBLIC)).await;
    let base = format!("http://{}", gw.addr());
    let c = client();
    let expected = pattern(0, TEN_MIB);

    // Downloads: Content-Length and chunked.
    for path in ["bytes", "chunked"] {
        let r = c
            .get(format!("{base}/{path}/{TEN_MIB}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        if path == "bytes" {
            assert_eq!(r.content_length(), Some(TEN_MIB as u64));
        } else {
            assert_eq!(r.headers()["transfer-encoding"], "chunked");
        }
        assert!(r.bytes().await.unwrap() == expected, "{path} body differs");
    }

    // Uploads echoed back: Content-Length and chunked.
    let r = c
        .post(format!("{base}/echo"))
        .body(expected.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap() == expected,
        "content-length upload differs"
    );
    assert_eq!(up.last().headers["content-length"], TEN_MIB.to_string());

    let r = c
        .post(format!("{base}/echo"))
        .body(streamed_body(TEN_MIB as u64))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap() == expected,
        "chunked upload differs"
    );
    assert_eq!(up.last().headers["transfer-encoding"], "chunked");
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(&up.url(), PUBLIC)).await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .get(format!("http://{}/h2?q=1", gw.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/h2?q=1");
    assert_eq!(
        seen.headers["host"],
        gw.addr().to_string(),
        "the client's authority becomes Host"
    );
    let body = c
        .post(format!("http://{}/echo", gw.addr()))
        .body(pattern(0, 100_000))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body == pattern(0, 100_000));
    gw.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_never_cross() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(&up.url(), PUBLIC)).await;
    let request = "GET /hop HTTP/1.1\r\nHost: app.example\r\n\
        Connection: close, X-Private-Hop\r\nX-Private-Hop: secret\r\nKeep-Alive: timeout=99\r\n\
        TE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n\
        Upgrade: h2c\r\nX-End-To-End: kept\r\n\r\n";
    let (status, headers, body) = raw(gw.addr(), request).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"hop");

    let seen = up.last().headers;
    for name in [
        "x-private-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert!(
            !seen.contains_key(name),
            "{name} reached the upstream: {seen:?}"
        );
    }
    // hyper's client adds its own `connection: keep-alive` only if anything; never the client's tokens.
    for v in seen.get_all("connection") {
        assert!(!v
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-private-hop"));
    }
    assert_eq!(seen["x-end-to-end"], "kept");

    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    for name in ["x-resp-private", "keep-alive", "proxy-authenticate"] {
        assert!(
            !names.contains(&name),
            "{name} reached the client: {headers:?}"
        );
    }
    assert!(names.contains(&"x-resp-kept"));
    gw.shutdown().await;
}

fn forwarded(seen: &http::HeaderMap) -> (String, String, String) {
    let get = |n: &str| {
        let all: Vec<_> = seen
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(all.len(), 1, "exactly one {n}: {all:?}");
        all[0].clone()
    };
    (
        get("x-forwarded-for"),
        get("x-forwarded-proto"),
        get("x-forwarded-host"),
    )
}

#[tokio::test]
async fn forwarded_headers_are_exact_without_a_trusted_proxy() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(&up.url(), PUBLIC)).await;
    let request = "GET /x HTTP/1.1\r\nHost: app.example:8443\r\nConnection: close\r\n\
        X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Proto: https\r\n\
        X-Forwarded-Host: evil.example\r\nX_Forwarded_For: 8.8.8.8\r\nForwarded: for=6.6.6.6\r\n\r\n";
    assert_eq!(raw(gw.addr(), request).await.0, 200);
    let seen = up.last().headers;
    assert_eq!(
        forwarded(&seen),
        ("127.0.0.1".into(), "http".into(), "app.example:8443".into())
    );
    assert!(!seen.contains_key("x_forwarded_for"));
    assert!(!seen.contains_key("forwarded"));
    assert_eq!(
        seen["host"], "app.example:8443",
        "the upstream sees the client's Host"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_are_kept_from_a_trusted_proxy() {
    let up = TestUpstream::start("a").await;
    let text = gateway_toml(&up.url(), PUBLIC)
        .replace("[server]", "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]");
    let gw = gateway(&text).await;
    let request = "GET /x HTTP/1.1\r\nHost: internal:4180\r\nConnection: close\r\n\
        X-Forwarded-For: 203.0.113.9, 10.0.0.2\r\nX-Forwarded-Proto: https\r\n\
        X-Forwarded-Host: app.example\r\n\r\n";
    assert_eq!(raw(gw.addr(), request).await.0, 200);
    assert_eq!(
        forwarded(&up.last().headers),
        (
            "203.0.113.9, 10.0.0.2, 127.0.0.1".into(),
            "https".into(),
            "app.example".into()
        )
    );

    // A trusted proxy that sends none gets them set.
    assert_eq!(
        raw(
            gw.addr(),
            "GET /y HTTP/1.1\r\nHost: internal:4180\r\nConnection: close\r\n\r\n"
        )
        .await
        .0,
        200
    );
    assert_eq!(
        forwarded(&up.last().headers),
        ("127.0.0.1".into(), "http".into(), "internal:4180".into())
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn host_is_rewritten_when_not_preserved() {
    let up = TestUpstream::start("a").await;
    let text = gateway_toml(&up.url(), PUBLIC).replace(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\npreserve_host = false",
    );
    let gw = gateway(&text).await;
    assert_eq!(
        raw(
            gw.addr(),
            "GET /x HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"
        )
        .await
        .0,
        200
    );
    let seen = up.last().headers;
    assert_eq!(seen["host"], up.addr.to_string());
    assert_eq!(seen["x-forwarded-host"], "app.example");
    gw.shutdown().await;
}

#[tokio::test]
async fn websocket_echo_round_trip() {
    // A plain WebSocket echo server as the upstream.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });
    let gw = gateway(&gateway_toml(&format!("http://{ws_addr}"), PUBLIC)).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/socket", gw.addr()))
        .await
        .expect("the upgrade passes through the gateway");
    assert_eq!(response.status(), 101);
    for text in ["hello", "through the gateway"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        &[0u8, 1, 2, 255]
    );
    ws.close(None).await.unwrap();
    gw.shutdown().await;
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test]
async fn upstream_failures_give_502_and_504_and_leave_nothing_behind() {
    // Refused: a port with no listener.
    let closed_port = ClosedPort::new();
    let closed = format!("http://{}", closed_port.addr());
    let gw = gateway(&gateway_toml(&closed, PUBLIC)).await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let r = quick
        .get(format!("http://{}/x", gw.addr()))
        .header("accept", "text/html")
        .send()
        .await
        .expect("a refused upstream answers at once, not after a timeout");
    assert_eq!(r.status(), 502);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("could not connect to the application"));
    gw.shutdown().await;

    // Silent: accepts, reads the request, never answers; the gateway's timeout is 2 s.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel::<usize>(4);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut total = 0;
                // Read until the gateway hangs up; report how much was read.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                let _ = tx.send(total).await;
            });
        }
    });
    let gw = gateway(&gateway_toml(&format!("http://{silent}"), PUBLIC)).await;
    let baseline = alive_tasks();
    let mut conn = TcpStream::connect(gw.addr()).await.unwrap();
    conn.write_all(
        b"GET /slow HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).await.unwrap();
    let (status, _, body) = parse_response(&buf);
    assert_eq!(status, 504);
    assert!(String::from_utf8_lossy(&body).contains("upstream_timeout"));
    let read = tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
        .await
        .expect("the gateway closes its upstream connection after the timeout")
        .unwrap();
    assert!(read > 0, "the upstream received the request");
    assert!(
        eventually(Duration::from_secs(10), || alive_tasks() <= baseline).await,
        "tasks left behind: {} alive, {baseline} before",
        alive_tasks()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(&up.url(), PUBLIC)).await;
    let big = "a".repeat(100 * 1024);
    let request =
        format!("GET /x HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    let _ = stream.write_all(request.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf).await;
    let (status, _, _) = parse_response(&buf);
    assert_eq!(status, 431);
    assert!(up.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let up = TestUpstream::start("a").await;
    let text = gateway_toml(&up.url(), PUBLIC).replace(
        "grace_period = \"5s\"",
        "grace_period = \"5s\"\nheader_read_timeout = \"1s\"",
    );
    let gw = gateway(&text).await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the gateway must give up on its own.
    let mut buf = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut buf)).await;
    assert!(ended.is_ok(), "the gateway closed the slow connection");
    assert!(up.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn tls_with_alpn_serves_http2_and_http1() {
    let up = TestUpstream::start("a").await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let text = gateway_toml(&up.url(), PUBLIC).replace(
        "[server]",
        &format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    );
    let gw = gateway(&text).await;
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let url = format!("https://localhost:{}/tls", gw.addr().port());
    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut builder = reqwest::Client::builder().tls_certs_only([root.clone()]);
        if http1_only {
            builder = builder.http1_only();
        }
        let r = builder.build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version, "negotiated by ALPN");
        assert_eq!(up.last().headers["x-forwarded-proto"], "https");
    }
    // Plain HTTP on the TLS port is refused, never served.
    let plain = client()
        .get(format!("http://127.0.0.1:{}/tls", gw.addr().port()))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = TestUpstream::start("a").await;
    // A host name, resolved when connecting.
    let upstream = format!("http://localhost:{}", up.addr.port());
    let gw = gateway(&gateway_toml(&upstream, PUBLIC)).await;
    let base = format!("http://{}", gw.addr());
    let c = client();

    // Every kind of response end hands the connection back: an exact length, chunked, an echoed
    // upload, and no body at all.
    for i in 0..20 {
        let r = match i % 5 {
            0 => c.get(format!("{base}/bytes/100000")).send().await.unwrap(),
            1 => c
                .get(format!("{base}/chunked/200000"))
                .send()
                .await
                .unwrap(),
            2 => c
                .post(format!("{base}/echo"))
                .body(pattern(0, 50_000))
                .send()
                .await
                .unwrap(),
            3 => c.head(format!("{base}/head/{i}")).send().await.unwrap(),
            _ => c.get(format!("{base}/plain/{i}")).send().await.unwrap(),
        };
        assert_eq!(r.status(), 200, "request {i}");
        r.bytes().await.unwrap();
    }
    assert_eq!(up.seen().len(), 20);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests share one connection"
    );

    // Concurrent requests: never more connections than requests in flight.
    const CONCURRENCY: usize = 8;
    for round in 0..5 {
        let requests = (0..CONCURRENCY).map(|i| {
            let c = c.clone();
            let url = format!("{base}/bytes/{}", 1000 * (round * CONCURRENCY + i + 1));
            async move {
                c.get(url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .len()
            }
        });
        let lengths = futures_util::future::join_all(requests).await;
        for (i, len) in lengths.into_iter().enumerate() {
            assert_eq!(len, 1000 * (round * CONCURRENCY + i + 1));
        }
    }
    assert!(
        up.connections() <= CONCURRENCY,
        "{} connections for {CONCURRENCY} concurrent requests",
        up.connections()
    );
    gw.shutdown().await;
}

/// How a `HangingUpUpstream` ends each connection, never announcing it with `Connection: close`.
#[derive(Clone, Copy)]
enum HangUp {
    /// After answering the first request, when `close_answered` is called: the connection is idle by then.
    WhenTold,
    /// After answering the first request, once the second one has arrived, unanswered.
    OnTheSecondRequest,
}

/// A raw HTTP/1.1 upstream that answers `200 ok` and closes its keep-alive connections without notice,
/// recording every request it received in full (request line and body).
struct HangingUpUpstream {
    addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Connections that answered and wait to be closed (`HangUp::WhenTold`).
    answered: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<TcpStream>>,
}

impl HangingUpUpstream {
    async fn start(hang_up: HangUp) -> HangingUpUpstream {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accepted, seen) = (connections.clone(), received.clone());
        let (answered_tx, answered) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                let answered_tx = answered_tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let Some(first) = read_request(&mut stream, &mut buf).await else {
                        return;
                    };
                    seen.lock().unwrap().push(first);
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    match hang_up {
                        HangUp::WhenTold => {
                            let _ = answered_tx.send(stream);
                        }
                        HangUp::OnTheSecondRequest => {
                            if let Some(second) = read_request(&mut stream, &mut buf).await {
                                seen.lock().unwrap().push(second);
                            }
                            // The stream is dropped here: the connection closes.
                        }
                    }
                });
            }
        });
        HangingUpUpstream {
            addr,
            connections,
            received,
            answered: tokio::sync::Mutex::new(answered),
        }
    }

    /// Close the connection that answered last (`HangUp::WhenTold`).
    async fn close_answered(&self) {
        let mut answered = self.answered.lock().await;
        let stream = tokio::time::timeout(Duration::from_secs(10), answered.recv())
            .await
            .expect("a connection answered")
            .unwrap();
        drop(stream);
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

/// One request read from `stream` (`buf` keeps what was read beyond it): its request line and body, or
/// `None` when the peer closes first. Bodies are expected with a Content-Length.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    // Bounded: requests in these tests are far smaller than 1 MiB.
    while buf.len() < 1 << 20 {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                buf.drain(..end + 4 + length);
                let line = head.lines().next().unwrap_or_default();
                return Some(format!("{line} {body}").trim_end().to_string());
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    None
}

#[tokio::test]
async fn connections_closed_by_the_upstream_are_not_reused() {
    let up = HangingUpUpstream::start(HangUp::WhenTold).await;
    let gw = gateway(&gateway_toml(&format!("http://{}", up.addr), PUBLIC)).await;
    let base = format!("http://{}", gw.addr());
    let c = client();
    for i in 0..20 {
        let r = c.get(format!("{base}/get/{i}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
        // Closed while idle in the gateway's pool: the gateway learns of it when it next looks.
        up.close_answered().await;
    }
    for i in 0..5 {
        let r = c
            .post(format!("{base}/post/{i}"))
            .body(format!("payload {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "POST {i}");
        up.close_answered().await;
    }
    let received = up.received();
    assert_eq!(received.len(), 25, "{received:#?}");
    for i in 0..5 {
        let expected = format!("POST /post/{i} HTTP/1.1 payload {i}");
        assert_eq!(
            received.iter().filter(|r| **r == expected).count(),
            1,
            "{received:#?}"
        );
    }
    assert_eq!(up.connections(), 25, "one connection per request");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_that_reached_the_upstream_is_never_sent_again() {
    let up = HangingUpUpstream::start(HangUp::OnTheSecondRequest).await;
    let gw = gateway(&gateway_toml(&format!("http://{}", up.addr), PUBLIC)).await;
    let base = format!("http://{}", gw.addr());
    let c = client();
    assert_eq!(status_of(c.get(format!("{base}/first"))).await, 200);
    // Sent on the kept-alive connection, read by the upstream, never answered: lost, not repeated.
    let r = c
        .post(format!("{base}/once"))
        .header("accept", "application/json")
        .body("exactly once")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        up.received(),
        vec![
            "GET /first HTTP/1.1".to_string(),
            "POST /once HTTP/1.1 exactly once".to_string()
        ]
    );
    assert_eq!(up.connections(), 1);
    // The broken connection is gone; the next request gets a new one.
    assert_eq!(status_of(c.get(format!("{base}/after"))).await, 200);
    assert_eq!(up.connections(), 2);
    gw.shutdown().await;
}
