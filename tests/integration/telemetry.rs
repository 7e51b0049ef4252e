//! Operations over real HTTP: `GET /metrics` read by the Prometheus project's own OpenMetrics parser
//! (`prometheus_client.openmetrics.parser`, in `target/deploy-venv`), every series moved by exactly
//! the traffic sent and their number fixed whatever the paths; the metrics on their own listener; the
//! access log and request ids; and the real binary logging at `trace` through a login, a refresh and
//! a sign-out without a single token, code, cookie value or secret in its output.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use devidp::{DevProviderOptions, DEMO_USERS};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::browser::*;
use crate::support::*;

/// Samples by `name{label="value",...}` (labels sorted by name), as the parser read them.
type Series = BTreeMap<String, f64>;

fn venv_python() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/deploy-venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which creates target/deploy-venv from \
         tests/deploy/requirements.txt (prometheus-client's OpenMetrics parser)",
        path.display()
    );
    path
}

/// Every sample of an OpenMetrics exposition, read by the reference parser, which refuses anything
/// malformed (a missing `# EOF`, a counter without `_total`, buckets out of order...).
fn parse(text: &str) -> Series {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, sorted(s.labels.items()), s.value])
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new(venv_python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text_owned = text.to_string();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        stdin.write_all(text_owned.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    /// A sample as the script prints it: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);
    let samples: Vec<Sample> = serde_json::from_slice(&out.stdout).unwrap();
    let mut series = Series::new();
    for (name, labels, value) in samples {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let key = format!("{name}{{{}}}", labels.join(","));
        assert!(series.insert(key.clone(), value).is_none(), "{key} twice");
    }
    series
}

/// `GET /metrics` at `addr`, parsed.
async fn scrape(addr: SocketAddr) -> Series {
    let r = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    parse(&r.text().await.unwrap())
}

/// What moved between two scrapes: every series present in both, except the histogram's buckets
/// and sums (their values depend on timing; the counts do not) and the open-connections gauge.
fn moved(before: &Series, after: &Series) -> BTreeMap<String, f64> {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the set of series changed"
    );
    after
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("portcullis_request_duration_seconds_bucket")
                && !k.starts_with("portcullis_request_duration_seconds_sum")
                && !k.starts_with("portcullis_open_connections")
        })
        .map(|(k, v)| (k.clone(), v - before[k]))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

fn requests(policy: &str, status: &str, method: &str) -> String {
    format!(
        "portcullis_requests_total{{method=\"{method}\",policy=\"{policy}\",status=\"{status}\"}}"
    )
}

fn one(name: &str, label: &str, value: &str) -> String {
    format!("{name}{{{label}=\"{value}\"}}")
}

/// The request id a response carries.
fn id_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .expect("every response carries X-Request-Id")
        .to_str()
        .unwrap()
        .to_string()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
}

#[tokio::test]
async fn metrics_move_by_exactly_the_traffic_sent_and_paths_add_no_series() {
    let dead = ClosedPort::new();
    let s = stack(StackOptions {
        extra: format!(
            "{PUBLIC_ROUTE}[[routes]]\npath = \"^/broken/\"\npolicy = \"public\"\nupstream = \"http://{}\"\n\
             [[routes]]\npath = \"^/admin\"\npolicy = \"deny\"\n",
            dead.addr()
        ),
        ..Default::default()
    })
    .await;
    let addr = s.gateway.addr();
    let base = &s.base;
    let c = client();
    let before = scrape(addr).await;
    // Every series exists from the start, at zero.
    for key in [
        requests("none", "4xx", "GET"),
        requests("public", "2xx", "other"),
        one("portcullis_logins_failed_total", "reason", "state"),
        one("portcullis_refreshes_total", "outcome", "shared"),
        one("portcullis_backchannel_logouts_total", "outcome", "refused"),
        one("portcullis_store_errors_total", "op", "lock"),
        one("portcullis_upstream_errors_total", "kind", "tls"),
    ] {
        assert_eq!(before.get(&key), Some(&0.0), "{key}");
    }
    assert_eq!(before["portcullis_jwks_fetches_total{}"], 1.0);

    // Public hits, one with a method outside the fixed set.
    for _ in 0..5 {
        assert_eq!(status_of(c.get(format!("{base}/public/a"))).await, 200);
    }
    let propfind = reqwest::Method::from_bytes(b"PROPFIND").unwrap();
    assert_eq!(
        status_of(c.request(propfind, format!("{base}/public/a"))).await,
        200
    );
    // 401s: API clients without a session.
    for _ in 0..3 {
        let r = c
            .get(format!("{base}/private"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(is_uuid(&id_of(&r)));
    }
    assert_eq!(status_of(c.post(format!("{base}/private"))).await, 401);
    // A login: the redirect to the provider, the callback, then two requests with the session.
    let b = Browser::new();
    let r = b.get(&format!("{base}/private")).await;
    assert_eq!(r.status(), 302);
    assert!(is_uuid(&id_of(&r)));
    let authorize = location(&r, base);
    let callback = b.provider_login(&authorize, "alice").await;
    assert_eq!(b.redirect_from(&callback).await, format!("{base}/private"));
    for _ in 0..2 {
        assert_eq!(b.get(&format!("{base}/private")).await.status(), 200);
    }
    // Failed logins: a forged state, and an error from the provider.
    let r = c
        .get(format!("{base}/oauth2/callback?code=forged&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        status_of(c.get(format!(
            "{base}/oauth2/callback?error=access_denied&state=whatever"
        )))
        .await,
        400
    );
    // An upstream that refuses connections: 502.
    let r = c.get(format!("{base}/broken/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(is_uuid(&id_of(&r)));
    // A deny route, an unknown endpoint, and a path refused before routing.
    let r = c.get(format!("{base}/admin")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(is_uuid(&id_of(&r)));
    assert_eq!(status_of(c.get(format!("{base}/oauth2/nope"))).await, 404);
    assert_eq!(raw_get(addr, "/a%2Fb").await, 400);
    // 500 distinct paths.
    for i in 0..500 {
        assert_eq!(
            status_of(c.get(format!("{base}/public/p{i}?q={i}"))).await,
            200
        );
    }

    let after = scrape(addr).await;
    let expected: BTreeMap<String, f64> = [
        (requests("public", "2xx", "GET"), 505.0),
        (requests("public", "2xx", "other"), 1.0),
        (requests("public", "5xx", "GET"), 1.0),
        (requests("authenticated", "4xx", "GET"), 3.0),
        (requests("authenticated", "4xx", "POST"), 1.0),
        (requests("authenticated", "3xx", "GET"), 1.0),
        (requests("authenticated", "2xx", "GET"), 2.0),
        (requests("deny", "4xx", "GET"), 1.0),
        // The callback's redirect back, the two failed callbacks and the unknown endpoint, and the
        // first scrape itself.
        (requests("internal", "3xx", "GET"), 1.0),
        (requests("internal", "4xx", "GET"), 3.0),
        (requests("internal", "2xx", "GET"), 1.0),
        (requests("none", "4xx", "GET"), 1.0),
        (
            one(
                "portcullis_request_duration_seconds_count",
                "policy",
                "public",
            ),
            507.0,
        ),
        (
            one(
                "portcullis_request_duration_seconds_count",
                "policy",
                "authenticated",
            ),
            7.0,
        ),
        (
            one(
                "portcullis_request_duration_seconds_count",
                "policy",
                "deny",
            ),
            1.0,
        ),
        (
            one(
                "portcullis_request_duration_seconds_count",
                "policy",
                "internal",
            ),
            5.0,
        ),
        (
            one(
                "portcullis_request_duration_seconds_count",
                "policy",
                "none",
            ),
            1.0,
        ),
        (
            one("portcullis_upstream_errors_total", "kind", "connect"),
            1.0,
        ),
        ("portcullis_logins_started_total{}".to_string(), 1.0),
        ("portcullis_logins_completed_total{}".to_string(), 1.0),
        (
            one("portcullis_logins_failed_total", "reason", "state"),
            1.0,
        ),
        (
            one("portcullis_logins_failed_total", "reason", "provider_error"),
            1.0,
        ),
        // The login's session kept, then opened once: the second request finds it in the cache.
        (one("portcullis_store_operations_total", "op", "save"), 1.0),
        (one("portcullis_store_operations_total", "op", "load"), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(moved(&before, &after), expected);
    // Each histogram's +Inf bucket holds all its observations.
    for policy in ["public", "authenticated", "deny", "internal", "none"] {
        let inf = format!(
            "portcullis_request_duration_seconds_bucket{{le=\"+Inf\",policy=\"{policy}\"}}"
        );
        let count = one(
            "portcullis_request_duration_seconds_count",
            "policy",
            policy,
        );
        assert_eq!(after[&inf], after[&count], "{policy}");
    }
    // No label value anywhere is a path, a user or a token.
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "/public", "/private", "p499", "alice", "forged", "PROPFIND", "broken",
    ] {
        assert!(!text.contains(needle), "{needle} in /metrics");
    }
}

/// Connections held open by raw keep-alive clients, each having had one answer.
async fn open_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.ends_with(b"ok\n") {
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("the health check answers")
                .unwrap();
            assert!(read > 0, "closed early");
            buf.extend_from_slice(&chunk[..read]);
        }
        held.push(stream);
    }
    held
}

/// `GET /metrics` on a connection of its own, closed after the answer.
async fn scrape_once(addr: SocketAddr) -> Series {
    let (status, _, body) = raw(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    parse(&String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn open_connections_are_counted_while_they_last() {
    let up = TestUpstream::start("app").await;
    let gw = gateway(&gateway_toml(&up.url(), "")).await;
    let held = open_connections(gw.addr(), 3).await;
    let gauge = "portcullis_open_connections{}";
    // The three held, and the scrape's own.
    assert_eq!(scrape_once(gw.addr()).await[gauge], 4.0);
    drop(held);
    let mut last = 0.0;
    for _ in 0..250 {
        last = scrape_once(gw.addr()).await[gauge];
        if last == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, 1.0, "closed connections are still counted");
}

#[tokio::test]
async fn metrics_on_their_own_listener_and_not_on_the_main_one() {
    let up = TestUpstream::start("app").await;
    let toml = gateway_toml(&up.url(), PUBLIC_ROUTE)
        .replace("[server]\n", "[server]\nmetrics_listen = \"127.0.0.1:0\"\n");
    let gw = gateway(&toml).await;
    let main = gw.addr();
    let metrics = gw.metrics_addr().expect("a metrics listener");
    assert_ne!(main, metrics);
    let c = client();

    // The main listener: /metrics is not there (and never proxied), the rest is as usual.
    let r = c
        .get(format!("http://{main}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(is_uuid(&id_of(&r)));
    assert_eq!(
        status_of(c.get(format!("http://{main}/healthz"))).await,
        200
    );
    assert_eq!(
        status_of(c.get(format!("http://{main}/public/x"))).await,
        200
    );
    assert_eq!(up.seen().len(), 1, "{:?}", up.seen());

    // The metrics listener: /metrics, health and readiness, nothing else.
    let series = scrape(metrics).await;
    assert_eq!(series[&requests("internal", "4xx", "GET")], 1.0);
    assert_eq!(series[&requests("public", "2xx", "GET")], 1.0);
    assert_eq!(
        status_of(c.get(format!("http://{metrics}/healthz"))).await,
        200
    );
    // The provider of `gateway_toml` is never reachable: not ready.
    assert_eq!(
        status_of(c.get(format!("http://{metrics}/readyz"))).await,
        503
    );
    for path in ["/public/x", "/", "/oauth2/start", "/private"] {
        let r = c
            .get(format!("http://{metrics}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    assert_eq!(
        status_of(c.post(format!("http://{metrics}/metrics"))).await,
        405
    );
    assert_eq!(up.seen().len(), 1, "the metrics listener proxied something");
    // Its own connections are not the clients': once the client's connection to the main listener
    // is gone, none is counted while one to the metrics listener is open.
    drop(c);
    let mut last = -1.0;
    for _ in 0..250 {
        last = scrape_once(metrics).await["portcullis_open_connections{}"];
        if last == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, 0.0);
    gw.shutdown().await;

    // Without metrics_listen, /metrics is on the main listener.
    let gw = gateway(&gateway_toml(&up.url(), "")).await;
    assert_eq!(gw.metrics_addr(), None);
    let series = scrape(gw.addr()).await;
    assert_eq!(series["portcullis_jwks_fetches_total{}"], 0.0);
}

#[tokio::test]
async fn request_ids_are_kept_or_made_passed_upstream_and_returned() {
    let up = TestUpstream::start("app").await;
    let dead = ClosedPort::new();
    let gw = gateway(&gateway_toml(
        &up.url(),
        &format!(
            "{PUBLIC_ROUTE}[[routes]]\npath = \"^/broken/\"\npolicy = \"public\"\nupstream = \"http://{}\"\n\
             [[routes]]\npath = \"^/admin\"\npolicy = \"deny\"\n",
            dead.addr()
        ),
    ))
    .await;
    let base = format!("http://{}", gw.addr());
    let c = client();

    // A sane id is kept, reaches the upstream and comes back.
    let r = c
        .get(format!("{base}/public/x"))
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&r), "client-id-42");
    assert_eq!(up.last().headers["x-request-id"], "client-id-42");
    assert_eq!(up.last().headers.get_all("x-request-id").iter().count(), 1);

    // None, an unusable one, or two: a fresh one, the same upstream and back.
    for sent in [
        vec![],
        vec!["has spaces in it"],
        vec!["a,b"],
        vec!["one", "two"],
    ] {
        let mut request = c.get(format!("{base}/public/x"));
        for id in &sent {
            request = request.header("x-request-id", *id);
        }
        let r = request.send().await.unwrap();
        let id = id_of(&r);
        assert!(is_uuid(&id), "{sent:?}: {id}");
        let seen = up.last();
        assert_eq!(seen.headers.get_all("x-request-id").iter().count(), 1);
        assert_eq!(seen.headers["x-request-id"], id.as_str(), "{sent:?}");
    }

    // The gateway's own answers carry it too, the client's when it sent one.
    for (path, status) in [
        ("/private", 401),
        ("/admin", 403),
        ("/broken/x", 502),
        ("/oauth2/nope", 404),
        ("/healthz", 200),
        ("/metrics", 200),
    ] {
        let r = c
            .get(format!("{base}{path}"))
            .header("accept", "application/json")
            .header("x-request-id", "mine")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(id_of(&r), "mine", "{path}");
    }
    let (status, headers, _) = raw(
        gw.addr(),
        "GET /a%2Fb HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: raw-1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert!(headers.contains(&("x-request-id".into(), "raw-1".into())));
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_unless_turned_off() {
    logs();
    let up = TestUpstream::start("app").await;
    let marker = format!("access-{}", std::process::id());
    let on = gateway(&gateway_toml(&up.url(), PUBLIC_ROUTE)).await;
    let off = gateway(&gateway_toml(
        &up.url(),
        &format!("{PUBLIC_ROUTE}[log]\naccess_log = false\n"),
    ))
    .await;
    let c = client();
    for gw in [&on, &off] {
        let r = c
            .get(format!(
                "http://{}/public/{marker}-{}?code=secret-code-value",
                gw.addr(),
                gw.addr().port()
            ))
            .header("x-request-id", format!("id-{}", gw.addr().port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let logged = log_text();
    let line = logged
        .lines()
        .find(|l| l.contains(&format!("{marker}-{}", on.addr().port())))
        .unwrap_or_else(|| panic!("no access line:\n{logged}"));
    assert!(line.contains("portcullis::access"), "{line}");
    for part in [
        format!("request_id=\"id-{}\"", on.addr().port()),
        "method=\"GET\"".to_string(),
        format!("path=\"/public/{marker}-{}\"", on.addr().port()),
        "status=200".to_string(),
        "duration_ms=".to_string(),
        "upstream_ms=".to_string(),
    ] {
        assert!(line.contains(&part), "{part} not in {line}");
    }
    assert!(!line.contains("sub="), "no identity, no sub: {line}");
    assert!(
        !logged.contains("secret-code-value"),
        "a query reached the log"
    );
    assert!(
        !logged.contains(&format!("{marker}-{}", off.addr().port())),
        "access_log = false still logged"
    );
}

#[tokio::test]
async fn a_request_whose_client_leaves_before_the_answer_is_logged_and_counted_as_499() {
    logs();
    let up = TestUpstream::start("app").await;
    let gw = gateway(&gateway_toml(
        &up.url(),
        "[[routes]]\npath = \"^/hold$\"\npolicy = \"public\"\n",
    ))
    .await;
    let addr = gw.addr();
    let id = format!("left-{}", addr.port());
    let before = scrape(addr).await;
    // The upstream holds the request; the client closes its connection meanwhile.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: {id}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    up.hold_arrived.notified().await;
    drop(conn);
    let line = |text: &str| text.lines().find(|l| l.contains(&id)).map(str::to_string);
    assert!(
        eventually(Duration::from_secs(5), || line(&log_text()).is_some()).await,
        "no access line for the abandoned request"
    );
    let line = line(&log_text()).unwrap_or_default();
    for part in [
        "portcullis::access",
        "path=\"/hold\"",
        "status=499",
        "duration_ms=",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    let after = scrape(addr).await;
    assert_eq!(
        after[&requests("public", "4xx", "GET")] - before[&requests("public", "4xx", "GET")],
        1.0,
        "the abandoned request is counted once, as a 4xx"
    );
    assert_eq!(
        after[&requests("public", "2xx", "GET")],
        before[&requests("public", "2xx", "GET")]
    );
    up.release();
}

/// The real binary, its stdout and stderr kept whole.
struct LoggedGateway {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl LoggedGateway {
    async fn start(toml: &str, env: &[(&str, &str)]) -> LoggedGateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("--config")
            .arg(&path)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for (mut pipe, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            readers.push(std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            }));
        }
        let address = |prefix: &str| {
            let out = String::from_utf8_lossy(&stdout.lock().unwrap()).to_string();
            out.lines()
                .find_map(|l| l.strip_prefix(prefix)?.trim().parse::<SocketAddr>().ok())
        };
        let mut found = None;
        for _ in 0..500 {
            if let (Some(addr), Some(metrics)) =
                (address("listening on "), address("metrics listening on "))
            {
                found = Some((addr, metrics));
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the gateway exited: {status}\n{}",
                    String::from_utf8_lossy(&stderr.lock().unwrap())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (addr, metrics) = found.expect("the gateway printed both addresses");
        LoggedGateway {
            child,
            addr,
            metrics,
            stdout,
            stderr,
            readers,
            _dir: dir,
        }
    }

    /// Stop it (SIGTERM), wait for its end, and return (stdout, stderr).
    fn stop(mut self) -> (String, String) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8(b.lock().unwrap().clone()).unwrap();
        (text(&self.stdout), text(&self.stderr))
    }
}

impl Drop for LoggedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of each cookie a response sets.
fn set_cookie_values(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| {
            let v = v.to_str().unwrap();
            let (_, rest) = v.split_once('=')?;
            Some(rest.split(';').next().unwrap_or_default().to_string())
        })
        .filter(|v| !v.is_empty())
        .collect()
}

#[tokio::test]
async fn json_logs_at_trace_hold_no_secret_and_every_line_parses() {
    // The provider, with refresh tokens; the gateway's public URL names a port nobody listens on, and
    // the browser follows the provider's redirect to the gateway's real address instead (cookies
    // are not bound to ports).
    const PUBLIC_URL: &str = "http://localhost:9";
    let provider = test_provider(
        vec![format!("{PUBLIC_URL}/oauth2/callback")],
        DevProviderOptions {
            issue_refresh_token: true,
            ..Default::default()
        },
    )
    .await;
    let up = TestUpstream::start("app").await;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"
grace_period = "2s"
[upstream]
url = "{upstream}"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_auth = "client_secret_basic"
client_secret = {secret:?}
[session]
secret = "{SECRET}"
[headers]
"X-Forwarded-User" = "sub"
"X-Forwarded-Email" = "email"
pass_access_token = true
pass_id_token = true
[log]
format = "json"
level = "trace"
"#,
        upstream = up.url(),
        issuer = provider.issuer(),
        secret = AWKWARD_SECRET,
    );
    let gw = LoggedGateway::start(&toml, &[("RUST_LOG", "trace")]).await;
    let base = format!("http://localhost:{}", gw.addr.port());
    wait_ready(&base).await;
    let alice = DEMO_USERS.iter().find(|u| u.username == "alice").unwrap();
    let mut seen_on_the_wire: Vec<String> = Vec::new();

    // The login: tokens that expire within refresh_before, so the next request refreshes.
    provider.set_access_token_ttl(Duration::from_secs(30));
    let b = Browser::new();
    let r = b.get(&format!("{base}/private")).await;
    assert_eq!(r.status(), 302);
    seen_on_the_wire.extend(set_cookie_values(&r));
    let authorize = location(&r, &base);
    let q = query_map(&authorize);
    seen_on_the_wire.extend([q["state"].clone(), q["nonce"].clone()]);
    let callback = b
        .provider_login(&authorize, "alice")
        .await
        .replace(PUBLIC_URL, &base);
    seen_on_the_wire.push(query_map(&callback)["code"].clone());
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 302, "the callback");
    seen_on_the_wire.extend(set_cookie_values(&r));

    // Signed in, with a request id of the client's; the session's tokens are due, so this request
    // refreshes them first.
    provider.set_access_token_ttl(Duration::from_secs(3600));
    let r = b
        .client
        .get(format!("{base}/private"))
        .header("x-request-id", "trace-test-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(provider.refresh_requests(), 1, "the session was refreshed");
    assert_eq!(id_of(&r), "trace-test-0001");
    seen_on_the_wire.extend(set_cookie_values(&r));
    let seen = up.last();
    assert_eq!(seen.headers["x-request-id"], "trace-test-0001");
    for header in ["x-forwarded-access-token", "authorization"] {
        let value = seen.headers[header].to_str().unwrap();
        seen_on_the_wire.push(value.trim_start_matches("Bearer ").to_string());
    }

    // With a request id of the gateway's.
    let r = b.get(&format!("{base}/private")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(provider.refresh_requests(), 1);
    let made_id = id_of(&r);
    assert!(is_uuid(&made_id));
    assert_eq!(up.last().headers["x-request-id"], made_id.as_str());
    assert_eq!(
        b.get(&format!("{base}/oauth2/userinfo")).await.status(),
        200
    );

    // Sign-out, then a failed callback.
    let r = b.get(&format!("{base}/oauth2/sign_out")).await;
    assert_eq!(r.status(), 302);
    seen_on_the_wire.extend(set_cookie_values(&r));
    let r = b.get(&format!("{base}/private")).await;
    assert_eq!(r.status(), 302, "signed out");
    seen_on_the_wire.extend(set_cookie_values(&r));
    assert_eq!(
        b.get(&format!(
            "{base}/oauth2/callback?code=forged-code&state=forged-state"
        ))
        .await
        .status(),
        400
    );

    // The counters on the metrics listener agree.
    let series = scrape(gw.metrics).await;
    assert_eq!(series["portcullis_logins_started_total{}"], 2.0);
    assert_eq!(series["portcullis_logins_completed_total{}"], 1.0);
    assert_eq!(
        series[&one("portcullis_logins_failed_total", "reason", "state")],
        1.0
    );
    assert_eq!(
        series[&one("portcullis_refreshes_total", "outcome", "refreshed")],
        1.0
    );
    assert_eq!(
        series[&one("portcullis_store_operations_total", "op", "delete")],
        1.0
    );

    let (stdout, stderr) = tokio::task::spawn_blocking(move || gw.stop())
        .await
        .unwrap();

    // Every secret that crossed the wire: the provider's codes and tokens (each JWT part too), the
    // client secret (as configured, form-encoded, and in its Basic credentials), the session secret,
    // every cookie value, state and nonce.
    let mut secrets: Vec<String> = provider.issued();
    assert!(secrets.len() >= 7, "a code, two of each token: {secrets:?}");
    secrets.extend(seen_on_the_wire);
    let form = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    secrets.extend([
        AWKWARD_SECRET.to_string(),
        form(AWKWARD_SECRET),
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form(CLIENT_ID),
            form(AWKWARD_SECRET)
        )),
        SECRET.to_string(),
    ]);
    let parts: Vec<String> = secrets
        .iter()
        .filter(|s| s.split('.').count() == 3)
        .flat_map(|jwt| jwt.split('.').map(str::to_string).collect::<Vec<_>>())
        .collect();
    secrets.extend(parts);
    secrets.sort();
    secrets.dedup();
    assert!(secrets.iter().all(|s| s.len() >= 16), "{secrets:?}");
    let output = format!("{stdout}\n{stderr}");
    for secret in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "a secret reached the log: {secret}"
        );
    }
    assert!(
        !output.contains("forged-code"),
        "a code from a query was logged"
    );

    // Every line on stderr is one JSON object.
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .collect();
    assert!(lines.iter().all(serde_json::Value::is_object));
    // The run did log at debug and trace levels for the gateway, and never for anything beneath it.
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "nothing at debug: the test proves little"
    );
    for line in &lines {
        let target = line["target"].as_str().unwrap_or_default();
        let verbose = line["level"] == "DEBUG" || line["level"] == "TRACE";
        assert!(
            !verbose || target.starts_with("portcullis"),
            "a dependency logged below info: {line}"
        );
    }

    // The access lines: SPEC's keys; the one with the client's id is the request the upstream saw.
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "portcullis::access")
        .collect();
    assert!(access.len() >= 8, "{access:?}");
    for line in &access {
        for key in ["request_id", "method", "path", "status", "duration_ms"] {
            assert!(!line[key].is_null(), "{key} missing: {line}");
        }
        let path = line["path"].as_str().unwrap();
        assert!(!path.contains('?'), "a query in the access log: {line}");
    }
    let mine = access
        .iter()
        .find(|l| l["request_id"] == "trace-test-0001")
        .expect("the access line of the client's request id");
    assert_eq!(mine["method"], "GET");
    assert_eq!(mine["path"], "/private");
    assert_eq!(mine["status"], 200);
    assert_eq!(mine["sub"], alice.sub);
    assert!(mine["duration_ms"].as_f64().unwrap() >= mine["upstream_ms"].as_f64().unwrap());
    let made = access
        .iter()
        .find(|l| l["request_id"] == made_id.as_str())
        .expect("the access line of the gateway's request id");
    assert_eq!(made["sub"], alice.sub);
    assert_eq!(made["path"], "/private");
    // The failed callback's own line names its request too.
    let failed = lines
        .iter()
        .find(|l| l["target"] == "portcullis::error" && l["status"] == 400)
        .expect("the failed callback's line");
    let failed_id = failed["span"]["request_id"].as_str().unwrap();
    assert!(access
        .iter()
        .any(|l| l["request_id"] == failed_id && l["path"] == "/oauth2/callback"));
    let callback_line = access
        .iter()
        .find(|l| l["path"] == "/oauth2/callback" && l["status"] == 302)
        .expect("the callback's access line");
    assert!(callback_line["sub"].is_null());
    assert!(callback_line["upstream_ms"].is_null());
}
