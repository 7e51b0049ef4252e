//! Regression tests for the defects an attack run found, each through the real server: connections
//! that never send a byte, the connection cap and accept errors, path segments whose name before `;`
//! is empty, Host fields, malformed request bodies, HTTP/1.0 upstreams, and route patterns that
//! ignore case; and one the property tests found since: raw UTF-8 in a path.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::session::{Claims, CookieSettings, Session, SessionCookies};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const PUBLIC: &str = "[[routes]]\npath = \"^/\"\npolicy = \"public\"\n";

/// Gateway text in front of `upstream` with extra `[server]` keys and `extra` sections.
fn with_server_keys(upstream: &str, server_keys: &str, extra: &str) -> String {
    gateway_toml(upstream, extra).replace(
        "grace_period = \"5s\"",
        &format!("grace_period = \"5s\"\n{server_keys}"),
    )
}

/// Raise this process's soft limit on open files to at least `want` (at most the hard limit).
fn raise_fd_limit(want: u64) -> u64 {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    if soft < want {
        let new = want.min(hard);
        rlimit::Resource::NOFILE.set(new, hard).unwrap();
        new
    } else {
        soft
    }
}

/// A `Cookie` header value holding a valid session for `sub`, sealed with the test secret.
fn session_cookie(sub: &str) -> String {
    let codec = SessionCookies::new(
        CookieSettings {
            name: "_portcullis".into(),
            secure: false,
            max_age: Duration::from_secs(3600),
            domain: None,
        },
        SECRET.as_bytes(),
        &[],
    )
    .unwrap();
    let claims = serde_json::json!({ "sub": sub });
    let now = portcullis::login::unix_now();
    let session = Session {
        claims: Claims::new(claims.as_object().unwrap()).unwrap(),
        id_token: None,
        access_token: None,
        refresh_token: None,
        created_at: now,
        expires_at: now + 3600,
        seen_at: now,
        access_expires_at: None,
    };
    let set = codec.write(&session, &http::HeaderMap::new(), now).unwrap();
    assert_eq!(set.len(), 1, "a small session is one cookie");
    let text = set[0].to_str().unwrap();
    text.split(';').next().unwrap().to_string()
}

/// One response read off a kept-alive HTTP/1.1 connection: status line, headers, body (by
/// Content-Length or chunked). `None` when the server closed the connection before a head.
async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Option<(String, Vec<(String, String)>, Vec<u8>)> {
    let mut status = String::new();
    if reader.read_line(&mut status).await.ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        body.resize(len.parse().ok()?, 0);
        reader.read_exact(&mut body).await.ok()?;
    } else if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim_end(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some((status.trim_end().to_string(), headers, body))
}

/// Whether the server closes `stream` (EOF or reset) within `limit`; the time it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

// --- High: connections bounded in time and in number ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_in_time_while_requests_are_answered() {
    const SILENT: usize = 2000;
    let limit = raise_fd_limit(3 * SILENT as u64 + 500);
    assert!(
        limit >= 2 * SILENT as u64 + 200,
        "this test needs {} open files, the hard limit allows {limit}",
        2 * SILENT + 200
    );
    let up = TestUpstream::start("a").await;
    let timeout = Duration::from_secs(2);
    let gw = gateway(&with_server_keys(
        &up.url(),
        "header_read_timeout = \"2s\"\nmax_connections = 2500",
        PUBLIC,
    ))
    .await;
    let addr = gw.addr();

    let mut silent = tokio::task::JoinSet::new();
    for _ in 0..SILENT {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        silent.spawn(async move { closed_within(&mut stream, 5 * timeout).await });
    }
    // Real requests are answered while the silent connections are open, on new connections.
    let c = client();
    for i in 0..20 {
        let r = c
            .get(format!("http://{addr}/real/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut slowest = Duration::ZERO;
    let mut open = 0;
    while let Some(result) = silent.join_next().await {
        match result.unwrap() {
            Some(took) => slowest = slowest.max(took),
            None => open += 1,
        }
    }
    assert_eq!(
        open, 0,
        "{open} silent connections still open after 5x the timeout"
    );
    assert!(
        slowest <= 3 * timeout,
        "the slowest silent connection was closed after {slowest:?}"
    );
    // And the gateway still answers afterwards.
    assert_eq!(status_of(c.get(format!("http://{addr}/after"))).await, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_get_the_keepalive_timeout_and_heads_the_header_timeout() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&with_server_keys(
        &up.url(),
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"3s\"",
        PUBLIC,
    ))
    .await;
    let addr = gw.addr();

    // HTTP/1.1: idle longer than the header timeout between requests is fine...
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut conn = BufReader::new(stream);
    let get = b"GET /ka HTTP/1.1\r\nHost: localhost\r\n\r\n";
    conn.get_mut().write_all(get).await.unwrap();
    assert!(read_response(&mut conn).await.unwrap().0.contains(" 200 "));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.get_mut().write_all(get).await.unwrap();
    let second = read_response(&mut conn).await;
    assert!(
        second.is_some_and(|r| r.0.contains(" 200 ")),
        "a connection idle for less than keepalive_timeout is kept"
    );
    // ...and the idle connection is closed after the keep-alive timeout.
    let took = closed_within(conn.get_mut(), Duration::from_secs(15)).await;
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(9)),
        "idle connection closed after {took:?}"
    );

    // A head started on a kept-alive connection must be finished within the header timeout.
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut conn = BufReader::new(stream);
    conn.get_mut().write_all(get).await.unwrap();
    assert!(read_response(&mut conn).await.unwrap().0.contains(" 200 "));
    conn.get_mut()
        .write_all(b"GET /slow HTTP/1.1\r\n")
        .await
        .unwrap();
    let took = closed_within(conn.get_mut(), Duration::from_secs(15)).await;
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(3)),
        "half a head was kept for {took:?}"
    );

    // HTTP/2: a connection without open streams is closed after the keep-alive timeout.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("http://{addr}/h2"))
        .body(Empty::new())
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    let ended = tokio::time::timeout(Duration::from_secs(15), driver).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_connection_cap_refuses_new_connections_and_keeps_established_ones() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&with_server_keys(
        &up.url(),
        "header_read_timeout = \"60s\"\nmax_connections = 10",
        PUBLIC,
    ))
    .await;
    let addr = gw.addr();
    let get = b"GET /kept HTTP/1.1\r\nHost: localhost\r\n\r\n";

    // One kept-alive connection with a request answered, then nine silent ones: the cap is full.
    let mut kept = BufReader::new(TcpStream::connect(addr).await.unwrap());
    kept.get_mut().write_all(get).await.unwrap();
    assert!(read_response(&mut kept).await.unwrap().0.contains(" 200 "));
    let mut silent = Vec::new();
    for _ in 0..9 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Beyond the cap, a new connection is closed at once, unanswered.
    for _ in 0..5 {
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let _ = extra.write_all(get).await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a connection beyond the cap was kept open");
        assert!(buf.is_empty(), "answered beyond the cap: {buf:?}");
    }
    // The established connection is unharmed.
    kept.get_mut().write_all(get).await.unwrap();
    assert!(read_response(&mut kept).await.unwrap().0.contains(" 200 "));
    // Once connections close, new ones are served again.
    silent.truncate(4);
    let mut served = false;
    for _ in 0..200 {
        if let Ok(r) = client().get(format!("http://{addr}/again")).send().await {
            served = r.status() == 200;
            if served {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "no new connection served after others closed");
    drop(silent);
    gw.shutdown().await;
}

/// Run the real binary with at most `nofile` open files, its log captured.
struct LimitedGateway {
    child: std::process::Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl LimitedGateway {
    fn start(text: &str, nofile: u32) -> LimitedGateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_portcullis"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prlimit (util-linux) runs the gateway with a low open-file limit");
        let addr = {
            use std::io::BufRead as _;
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let addr: SocketAddr = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("the gateway names its address, got {line:?}"))
                .parse()
                .unwrap();
            // Keep draining stdout so the gateway never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
            addr
        };
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("gateway: {line}");
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        LimitedGateway {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn lines_containing(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for LimitedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn healthy(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while Instant::now() < deadline {
        if let Ok(r) = c.get(format!("http://{addr}/healthz")).send().await {
            if r.status() == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn accept_errors_back_off_and_are_logged_rarely() {
    let up = TestUpstream::start("a").await;
    // A cap set above what 64 open files allow, so accepting runs out of descriptors (EMFILE).
    let text = with_server_keys(
        &up.url(),
        "header_read_timeout = \"2s\"\nmax_connections = 1000",
        PUBLIC,
    );
    let gw = LimitedGateway::start(&text, 64);
    assert!(
        healthy(gw.addr, Duration::from_secs(20)).await,
        "the gateway did not start"
    );

    let mut silent = Vec::new();
    for _ in 0..120 {
        silent.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    // Descriptors run out for a while; the silent connections time out, and the gateway recovers
    // without spinning or flooding its log.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        healthy(gw.addr, Duration::from_secs(20)).await,
        "requests are answered again once silent connections are closed"
    );
    let failures = gw.lines_containing("accept failed");
    assert!(
        (1..=3).contains(&failures),
        "{failures} accept error lines:\n{}",
        gw.log.lock().unwrap()
    );
    drop(silent);
}

// --- Medium: path segments whose name before `;` is empty, `.` or `..` ----------------------------

#[tokio::test]
async fn segments_with_an_empty_name_before_parameters_are_refused() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(
        &up.url(),
        "[[routes]]\npath = \"^/admin\"\npolicy = \"deny\"\n",
    ))
    .await;
    let cookie = session_cookie("alice");
    let get = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Cookie: {cookie}\r\nConnection: close\r\n\r\n"
        )
    };
    // The session is valid: an ordinary path reaches the upstream.
    assert_eq!(raw(gw.addr(), &get("/reports")).await.0, 200);
    assert_eq!(up.seen().len(), 1);
    for path in [
        "/;x/admin",
        "/;/admin",
        "/;",
        "/a/;x/../admin",
        "/%3Bx/admin",
        "/%3b/admin",
        "/..%3B/admin",
        "/.%3Bx/admin",
    ] {
        let status = raw(gw.addr(), &get(path)).await.0;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(up.seen().len(), 1, "reached the upstream: {:?}", up.seen());
    // Parameters on a named segment are ordinary (`jsessionid`), and kept.
    assert_eq!(raw(gw.addr(), &get("/reports;v=1/x")).await.0, 200);
    assert_eq!(up.last().uri, "/reports;v=1/x");
    gw.shutdown().await;
}

// --- Low: Host fields ---------------------------------------------------------------------------

#[tokio::test]
async fn host_fields_must_be_one_and_valid() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(&up.url(), PUBLIC)).await;
    let refused = [
        "GET /two HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET /none HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /bad HTTP/1.1\r\nHost: evil.example/x?y@z <script>\r\nConnection: close\r\n\r\n",
        "GET /user HTTP/1.1\r\nHost: user@a.example\r\nConnection: close\r\n\r\n",
        "GET /empty HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        "GET /port HTTP/1.1\r\nHost: a.example:80x\r\nConnection: close\r\n\r\n",
        "GET /v6 HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
    ];
    for request in refused {
        let status = raw(gw.addr(), request).await.0;
        assert_eq!(status, 400, "{request:?}");
    }
    assert!(
        up.seen().is_empty(),
        "reached the upstream: {:?}",
        up.seen()
    );

    let accepted = [
        ("GET /ok HTTP/1.1\r\nHost: app.example:8443\r\nConnection: close\r\n\r\n", "app.example:8443"),
        ("GET /v6 HTTP/1.1\r\nHost: [::1]:4180\r\nConnection: close\r\n\r\n", "[::1]:4180"),
        // HTTP/1.0 needs no Host.
        ("GET /old HTTP/1.0\r\n\r\n", ""),
        // Absolute form: the target's authority wins over Host (RFC 9112 section 3.2.2).
        ("GET http://target.example/abs HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n", "target.example"),
    ];
    for (request, host) in accepted {
        let status = raw(gw.addr(), request).await.0;
        assert_eq!(status, 200, "{request:?}");
        let seen = up.last();
        assert_eq!(
            seen.headers
                .get("x-forwarded-host")
                .map(|h| h.to_str().unwrap())
                .unwrap_or(""),
            host,
            "{request:?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http2_host_that_differs_from_the_authority_is_refused() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(&up.url(), PUBLIC)).await;
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = |host: Option<&str>| {
        let mut b = http::Request::builder().uri("http://good.example/h2");
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(Empty::<Bytes>::new()).unwrap()
    };
    let r = send
        .send_request(request(Some("evil.example")))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        up.seen().is_empty(),
        "reached the upstream: {:?}",
        up.seen()
    );

    for host in [None, Some("good.example"), Some("GOOD.example")] {
        let r = send.send_request(request(host)).await.unwrap();
        assert_eq!(r.status(), 200, "{host:?}");
        let seen = up.last();
        assert_eq!(seen.headers["x-forwarded-host"], "good.example");
        assert!(seen.headers["host"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("good.example"));
    }
    gw.shutdown().await;
}

// --- Low: a malformed request body is the client's fault ---------------------------------------

#[tokio::test]
async fn malformed_request_bodies_get_400_not_502() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(&gateway_toml(&up.url(), PUBLIC)).await;
    let head = "POST /count HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
                Accept: application/json\r\n\r\n";
    let extension = "a".repeat(64 * 1024);
    for body in [
        "ffffffffffffffff1\r\nx\r\n0\r\n\r\n".to_string(),
        format!("5;{extension}\r\nhello\r\n0\r\n\r\n"),
        "zz\r\nhello\r\n0\r\n\r\n".to_string(),
    ] {
        let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let _ = stream.write_all(body.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
        let (status, _, text) = parse_response(&buf);
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&text));
        assert!(String::from_utf8_lossy(&text).contains("bad_request"));
    }
    // The gateway and the upstream still serve well-formed requests.
    let r = client()
        .post(format!("http://{}/count", gw.addr()))
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "5");
    gw.shutdown().await;
}

// --- Low: an HTTP/1.0 upstream does not downgrade the client's connection ------------------------

/// An upstream that speaks HTTP/1.0 only: one response per connection, then close. `/length`
/// answers with a Content-Length, anything else with a body delimited by the close.
async fn http10_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut first = String::new();
                let _ = reader.read_line(&mut first).await;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let response = if first.starts_with("GET /length") {
                    "HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nlength"
                } else {
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close"
                };
                let mut stream = reader.into_inner();
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http10_upstream_keeps_the_clients_version_and_keep_alive() {
    let upstream = http10_upstream().await;
    let gw = gateway(&gateway_toml(&format!("http://{upstream}"), PUBLIC)).await;
    let mut conn = BufReader::new(TcpStream::connect(gw.addr()).await.unwrap());
    for (path, body) in [
        ("/length", "length"),
        ("/close", "until close"),
        ("/length", "length"),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        conn.get_mut().write_all(request.as_bytes()).await.unwrap();
        let (status, headers, got) = read_response(&mut conn)
            .await
            .unwrap_or_else(|| panic!("{path}: the connection was closed"));
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert_eq!(String::from_utf8_lossy(&got), body, "{path}");
        assert!(
            !headers
                .iter()
                .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close")),
            "{path}: {headers:?}"
        );
    }
    // An HTTP/1.0 client is still answered in HTTP/1.0.
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(b"GET /length HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.0 200 "),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    gw.shutdown().await;
}

// --- Low: route patterns and case -----------------------------------------------------------------

#[tokio::test]
async fn case_insensitive_routes_match_every_spelling() {
    let up = TestUpstream::start("a").await;
    let routes = "[[routes]]\npath = \"^/admin\"\ncase_insensitive = true\npolicy = \"deny\"\n\
                  [[routes]]\npath = \"^/Exact\"\npolicy = \"deny\"\n\
                  [[routes]]\npath = \"^/\"\npolicy = \"public\"\n";
    let gw = gateway(&gateway_toml(&up.url(), routes)).await;
    for path in ["/admin", "/ADMIN/x", "/%41dmin", "/aDmIn", "/%41%44MIN/"] {
        assert_eq!(raw_get(gw.addr(), path).await, 403, "{path}");
    }
    assert!(
        up.seen().is_empty(),
        "reached the upstream: {:?}",
        up.seen()
    );
    // Without the key, a pattern matches its own case only.
    assert_eq!(raw_get(gw.addr(), "/Exact").await, 403);
    assert_eq!(raw_get(gw.addr(), "/exact").await, 200);
    assert_eq!(up.last().uri, "/exact");
    gw.shutdown().await;
}

// --- Found by the property tests: raw UTF-8 in a path ---------------------------------------------

#[tokio::test]
async fn a_raw_utf8_path_is_matched_in_its_encoded_form() {
    let up = TestUpstream::start("a").await;
    let routes = "[[routes]]\npath = \"^/caf%C3%A9\"\npolicy = \"deny\"\n\
                  [[routes]]\npath = \"^/\"\npolicy = \"public\"\n";
    let gw = gateway(&gateway_toml(&up.url(), routes)).await;
    let request = |path: &[u8]| {
        let mut r = b"GET ".to_vec();
        r.extend_from_slice(path);
        r.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        r
    };
    for path in [&b"/caf\xc3\xa9"[..], b"/caf%C3%A9", b"/caf%c3%a9/x"] {
        let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
        stream.write_all(&request(path)).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        let (status, _, _) = parse_response(&buf);
        assert_eq!(status, 403, "{}", String::from_utf8_lossy(path));
    }
    assert!(
        up.seen().is_empty(),
        "reached the upstream: {:?}",
        up.seen()
    );
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream.write_all(&request(b"/na\xc3\xafve")).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    assert_eq!(parse_response(&buf).0, 200);
    assert_eq!(
        up.last().uri,
        "/na%C3%AFve",
        "the upstream gets the encoded form"
    );
    gw.shutdown().await;
}
