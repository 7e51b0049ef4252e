//! Real servers on loopback for the integration tests: a recording upstream, the gateway (in this
//! process or as the real binary), and raw HTTP/1.1 helpers for requests a normal client would "fix".

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portcullis::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
}

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A recording upstream with behaviour chosen by path:
/// `/echo*` streams the request body back; `/bytes/N` answers N pattern bytes with a Content-Length;
/// `/chunked/N` the same, chunked; `/count` drains the body and answers its length; `/hold` answers only
/// after `release()`; `/hop` answers with hop-by-hop headers; anything else answers `name` and the path.
pub struct TestUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    pub hold_arrived: Arc<Notify>,
    hold_release: Arc<Notify>,
}

/// Deterministic test bytes: position-dependent so a reordering or a lost chunk shows.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let p = offset + i;
            (p.wrapping_mul(31) ^ (p >> 11)) as u8
        })
        .collect()
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

impl TestUpstream {
    pub async fn start(name: &'static str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hold_arrived = Arc::new(Notify::new());
        let hold_release = Arc::new(Notify::new());
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, a, r) = (seen.clone(), hold_arrived.clone(), hold_release.clone());
        let accepted = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (s, a, r) = (s.clone(), a.clone(), r.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (s, a, r) = (s.clone(), a.clone(), r.clone());
                        async move { Ok::<_, Infallible>(respond(name, req, s, a, r).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestUpstream {
            addr,
            seen,
            connections,
            hold_arrived,
            hold_release,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many connections the upstream has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }

    pub fn release(&self) {
        self.hold_release.notify_one();
    }
}

async fn respond(
    name: &'static str,
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<Notify>,
    release: Arc<Notify>,
) -> Response<Body> {
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_string();
    if path.starts_with("/echo") {
        return Response::new(req.into_body().map_err(Into::into).boxed());
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap();
        return Response::new(full(pattern(0, n)));
    }
    if let Some(n) = path.strip_prefix("/chunked/") {
        let n: usize = n.parse().unwrap();
        let chunk = 64 * 1024;
        let stream = futures_util::stream::iter((0..n).step_by(chunk).map(move |start| {
            let len = chunk.min(n - start);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(pattern(
                start as u64,
                len,
            ))))
        }));
        return Response::new(BodyExt::boxed(StreamBody::new(stream)));
    }
    if path == "/count" {
        let mut body = req.into_body();
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                total += data.len() as u64;
            }
        }
        return Response::new(full(total.to_string()));
    }
    if path == "/hold" {
        arrived.notify_one();
        release.notified().await;
        return Response::new(full("released"));
    }
    if path == "/hop" {
        return Response::builder()
            .header("connection", "x-resp-private")
            .header("x-resp-private", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-resp-kept", "1")
            .body(full("hop"))
            .unwrap();
    }
    Response::builder()
        .status(StatusCode::OK)
        .header("x-upstream", name)
        .body(full(format!("{name} {path}")))
        .unwrap()
}

/// Configuration text for a gateway in front of `upstream`, with `extra` appended (routes etc.).
pub fn gateway_toml(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://localhost:4180"
grace_period = "5s"
[upstream]
url = "{upstream}"
timeout = "2s"
connect_timeout = "2s"
[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portcullis"
client_secret = "secret"
[session]
secret = "{SECRET}"
{extra}
"#
    )
}

/// Configuration text for a gateway seen by browsers at `public_url`, in front of `upstream`, with these
/// `[oidc]` lines and `extra` sections.
pub fn login_gateway_toml(public_url: &str, upstream: &str, oidc: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "{public_url}"
grace_period = "2s"
[upstream]
url = "{upstream}"
[oidc]
{oidc}
[session]
secret = "{SECRET}"
{extra}
"#
    )
}

/// The status of a request's response.
/// The JSON document at `url`, fetched with a plain client.
pub async fn get_json(url: &str) -> serde_json::Value {
    let r = client().get(url).send().await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

pub async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

/// Undo HTML escaping of an attribute value from a provider's page; `&amp;` last, so `&amp;lt;` stays `&lt;`.
pub fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

pub fn config(text: &str) -> Config {
    Config::from_toml_str(text, &BTreeMap::new()).expect("valid test configuration")
}

/// A gateway served by this process on a free port.
pub async fn gateway(text: &str) -> portcullis::RunningGateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    portcullis::spawn(config(text), listener).unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The real `portcullis` binary running with a configuration file; killed when dropped. What it
/// logs on stderr is passed on to the test's stderr and kept for [`GatewayProcess::logs`].
pub struct GatewayProcess {
    pub child: Child,
    pub addr: SocketAddr,
    config: std::path::PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Start the binary on a port of its choosing (`listen` on port 0), read the address it prints,
    /// and wait until it answers `/healthz`.
    pub async fn start(text_with_port_zero: &str) -> GatewayProcess {
        GatewayProcess::start_with_env(text_with_port_zero, &[]).await
    }

    /// [`GatewayProcess::start`] with these variables added to its environment.
    pub async fn start_with_env(text_with_port_zero: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text_with_port_zero).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, kept) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        // The first line on stdout names the address; the rest is drained so the pipe never fills.
        let addr = tokio::task::spawn_blocking(move || {
            use std::io::BufRead as _;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            std::thread::spawn(move || lines.for_each(drop));
            first
        })
        .await
        .unwrap();
        let Some(addr) = addr
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        else {
            let status = child.wait().unwrap();
            panic!("the gateway printed no address ({addr:?}) and exited: {status}");
        };
        let mut process = GatewayProcess {
            child,
            addr,
            config: path,
            stderr,
            _dir: dir,
        };
        for _ in 0..300 {
            if let Ok(r) = client().get(format!("http://{addr}/healthz")).send().await {
                if r.status() == 200 {
                    return process;
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("the gateway exited early: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not become healthy");
    }

    /// Peak resident set size of the process so far, in bytes (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// The configuration file it was started with (rewrite it, then send `HUP`).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Everything it has logged on stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port held but not listening, for as long as this lives: connections to it are refused,
/// and nothing else can take it meanwhile (unlike a port bound, released and named).
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        ClosedPort::at("127.0.0.1:0".parse().unwrap())
    }

    /// Hold `addr`, which a listener of [`reusable_listener`] may hold too: once that listener closes,
    /// connections are refused and the port stays ours until [`ClosedPort::listen`].
    pub fn at(addr: SocketAddr) -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseport(true).unwrap();
        socket.bind(addr).unwrap();
        ClosedPort { socket }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Start listening on the held port.
    pub fn listen(self) -> TcpListener {
        self.socket.listen(1024).unwrap()
    }
}

/// A listener on a free loopback port that a [`ClosedPort`] can share (`SO_REUSEPORT`), so a test can
/// stop a server and bring it back on the same address without ever letting the port go.
pub fn reusable_listener() -> TcpListener {
    ClosedPort::new().listen()
}

/// A raw HTTP/1.1 exchange: send `request` verbatim, read until the server closes, return the status
/// and the response head's header lines (lower-cased names) and body.
pub async fn raw(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf))
        .await
        .expect("the server answers and closes")
        .unwrap();
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buf[end + 4..].to_vec())
}

#[test]
fn html_unescape_decodes_once() {
    assert_eq!(html_unescape("a&amp;lt;b&quot;&#x2F;&#39;"), "a&lt;b\"/'");
}

/// GET `path` verbatim (no client-side normalisation) and return the status.
pub async fn raw_get(addr: SocketAddr, path: &str) -> u16 {
    raw(addr, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n"))
        .await
        .0
}

/// A streamed request body of `total` pattern bytes in 64 KiB chunks (sent chunked).
pub fn streamed_body(total: u64) -> reqwest::Body {
    let chunk = 64 * 1024u64;
    let stream = futures_util::stream::iter((0..total).step_by(chunk as usize)).map(move |start| {
        let len = chunk.min(total - start) as usize;
        Ok::<_, std::io::Error>(Bytes::from(pattern(start, len)))
    });
    reqwest::Body::wrap_stream(stream)
}

/// A cheap streamed body of `total` bytes reusing one buffer: for sizes where generating a pattern
/// would cost more than the transfer.
pub fn zero_stream(total: u64) -> reqwest::Body {
    let chunk = Bytes::from(vec![0x5a; 256 * 1024]);
    let n = total / chunk.len() as u64;
    let stream =
        futures_util::stream::iter(0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    reqwest::Body::wrap_stream(stream)
}

/// Wait for `cond` to hold, checking every 20 ms for at most `limit`: readiness, never a timing assert.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Wait for an asynchronous `cond` to hold, checking every 100 ms for at most `limit`.
pub async fn eventually_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond().await
}
