//! The real binary under load and under signals: constant memory, graceful shutdown (with and without
//! a shutdown delay).

use std::time::Duration;

use crate::support::*;

const PUBLIC: &str = "[[routes]]\npath = \"^/\"\npolicy = \"public\"\n";
const GIB: u64 = 1024 * 1024 * 1024;
const RSS_LIMIT: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn one_gib_streams_through_in_constant_memory() {
    let up = TestUpstream::start("a").await;
    let gw = GatewayProcess::start(&gateway_toml(&up.url(), PUBLIC)).await;
    let c = client();
    let r = c
        .post(format!("http://{}/count", gw.addr))
        .body(zero_stream(GIB))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        GIB.to_string(),
        "every byte arrived upstream"
    );

    // And 1 GiB back down.
    let r = c
        .get(format!("http://{}/chunked/{GIB}", gw.addr))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut total = 0u64;
    use futures_util::StreamExt as _;
    while let Some(chunk) = body.next().await {
        total += chunk.unwrap().len() as u64;
    }
    assert_eq!(total, GIB);

    let peak = gw.peak_rss();
    eprintln!(
        "gateway peak RSS after 2 GiB streamed: {:.1} MiB",
        peak as f64 / 1048576.0
    );
    assert!(peak < RSS_LIMIT, "peak RSS {peak} bytes");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let up = TestUpstream::start("a").await;
    let mut gw = GatewayProcess::start(&gateway_toml(&up.url(), PUBLIC)).await;
    let addr = gw.addr;
    let in_flight =
        tokio::spawn(async move { client().get(format!("http://{addr}/hold")).send().await });
    up.hold_arrived.notified().await;

    gw.signal("TERM");
    // New connections are refused once the listener is closed.
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_err())
        .await,
        "the gateway kept accepting after SIGTERM"
    );
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "exited before the in-flight request finished"
    );

    up.release();
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "released");

    let mut status = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            status = gw.child.try_wait().unwrap();
            status.is_some()
        })
        .await
    );
    assert_eq!(status.unwrap().code(), Some(0));
}

/// SPEC, SIGTERM: `/readyz` answers 503 at once, the listener keeps accepting (and serving) for
/// `server.shutdown_delay`, then closes; the request in flight finishes; exit 0.
#[tokio::test]
async fn sigterm_withdraws_readiness_then_accepts_for_the_shutdown_delay() {
    use crate::browser::{wait_ready, CLIENT_ID};
    use devidp::{DevClient, DevClientAuth, DevProvider, DevProviderOptions};

    // A provider, so the gateway is ready before the signal.
    let provider = DevProvider::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        DevProviderOptions {
            clients: vec![DevClient {
                client_id: CLIENT_ID.into(),
                auth: DevClientAuth::SecretBasic("secret".into()),
                redirect_uris: vec!["http://localhost:4180/oauth2/callback".into()],
            }],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let up = TestUpstream::start("a").await;
    // The delay only has to outlast the few requests below; nothing measures it.
    let text = gateway_toml(&up.url(), PUBLIC)
        .replace(
            "issuer = \"http://127.0.0.1:9\"",
            &format!("issuer = {:?}", provider.issuer()),
        )
        .replace(
            "client_id = \"portcullis\"",
            &format!("client_id = {CLIENT_ID:?}"),
        )
        .replace(
            "grace_period = \"5s\"",
            "grace_period = \"60s\"\nshutdown_delay = \"8s\"",
        )
        .replace("\ntimeout = \"2s\"", "\ntimeout = \"120s\"");
    let mut gw = GatewayProcess::start(&text).await;
    let addr = gw.addr;
    wait_ready(&format!("http://{addr}")).await;
    let in_flight =
        tokio::spawn(async move { client().get(format!("http://{addr}/hold")).send().await });
    up.hold_arrived.notified().await;

    gw.signal("TERM");
    // Readiness is withdrawn, and the answer comes on a new connection: the listener still accepts.
    let mut readyz = 0;
    for _ in 0..200 {
        readyz = raw(
            addr,
            "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .0;
        if readyz == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readyz, 503, "readiness was not withdrawn after SIGTERM");
    // A new connection during the delay is served.
    let (status, _, body) = raw(
        addr,
        "GET /during-the-delay HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, b"a /during-the-delay");

    // After the delay the listener closes.
    assert!(
        eventually(Duration::from_secs(60), || std::net::TcpStream::connect(
            addr
        )
        .is_err())
        .await,
        "the gateway kept accepting after the shutdown delay"
    );
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "exited before the in-flight request finished"
    );
    up.release();
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "released");

    let mut status = None;
    assert!(
        eventually(Duration::from_secs(30), || {
            status = gw.child.try_wait().unwrap();
            status.is_some()
        })
        .await
    );
    assert_eq!(status.unwrap().code(), Some(0));
}
