//! The real binary under load and under signals: constant memory, graceful shutdown.

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
