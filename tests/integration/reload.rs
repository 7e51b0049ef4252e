//! Changing a running gateway: `SIGHUP` re-reads `gateway.toml` (the real binary), and the listener's
//! certificate is re-read when its files change.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use devidp::DevProvider;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::browser::{
    log_text, logs, test_provider, wait_ready, Browser, AWKWARD_SECRET, CLIENT_ID,
};
use crate::servers::TestCa;
use crate::support::*;

/// The public URL the provider knows; the gateway listens elsewhere (the binary picks its port), and
/// the browser is sent there: cookies are per host, not per port.
const PUBLIC_URL: &str = "http://localhost:1";

fn binary_toml(provider: &DevProvider, upstream: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"
grace_period = "10s"
[upstream]
url = "{upstream}"
[oidc]
issuer = "{}"
client_id = "{CLIENT_ID}"
client_secret = {:?}
[session]
secret = "{SECRET}"
{routes}
"#,
        provider.issuer(),
        AWKWARD_SECRET
    )
}

/// GET `path` on an open HTTP/1.1 connection; the status and body.
async fn get_on(
    conn: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, String) {
    conn.ready()
        .await
        .expect("the kept-alive connection is still open");
    let r = conn
        .send_request(
            http::Request::get(path)
                .header("host", "localhost")
                .header("accept", "application/json")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .expect("the kept-alive connection answers");
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

#[tokio::test]
async fn sighup_applies_a_new_configuration_without_dropping_anything() {
    let provider = test_provider(
        vec![format!("{PUBLIC_URL}/oauth2/callback")],
        Default::default(),
    )
    .await;
    let up = TestUpstream::start("app").await;
    let routes = "[[routes]]\npath = \"^/hold\"\npolicy = \"public\"\n\
                  [[routes]]\npath = \"^/old\"\npolicy = \"public\"\n";
    let first = binary_toml(&provider, &up.url(), routes);
    let mut gw = GatewayProcess::start(&first).await;
    let base = format!("http://localhost:{}", gw.addr.port());
    wait_ready(&base).await;

    // A signed-in browser.
    let b = Browser::new();
    let authorize = b.redirect_from(&format!("{base}/private")).await;
    let callback = b
        .provider_login(&authorize, "alice")
        .await
        .replacen(PUBLIC_URL, &base, 1);
    assert_eq!(b.redirect_from(&callback).await, format!("{base}/private"));
    assert_eq!(b.get(&format!("{base}/private")).await.status(), 200);

    // A kept-alive connection, used before and after the reload.
    let (mut conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(
        TcpStream::connect(gw.addr).await.unwrap(),
    ))
    .await
    .unwrap();
    tokio::spawn(driver);
    assert_eq!(get_on(&mut conn, "/old").await, (200, "app /old".into()));

    // A slow request in flight across the reload.
    let hold = format!("http://{}/hold", gw.addr);
    let in_flight = tokio::spawn(async move { client().get(hold).send().await });
    up.hold_arrived.notified().await;

    // The new file: /old denied, another header mapping, and a key that needs a restart.
    let second = binary_toml(
        &provider,
        &up.url(),
        "[[routes]]\npath = \"^/hold\"\npolicy = \"public\"\n\
         [[routes]]\npath = \"^/old\"\npolicy = \"deny\"\n\
         [headers]\n\"X-Who\" = \"email\"\n",
    )
    .replace(
        "grace_period = \"10s\"",
        "grace_period = \"10s\"\nmax_connections = 5000",
    );
    std::fs::write(gw.config_path(), &second).unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(20), || gw
            .logs()
            .contains("take effect only after a restart"))
        .await,
        "no reload was logged"
    );
    assert!(
        gw.logs().contains("server.max_connections"),
        "{}",
        gw.logs()
    );

    // The same connection now follows the new routes.
    let (status, _) = get_on(&mut conn, "/old").await;
    assert_eq!(
        status, 403,
        "the kept-alive connection still used the old routes"
    );
    // The session survived, and its identity goes out under the new mapping.
    assert_eq!(b.get(&format!("{base}/private")).await.status(), 200);
    let seen = up.last().headers;
    assert_eq!(seen["x-who"], "alice@example.com");
    assert!(!seen.contains_key("x-forwarded-user"));
    // The slow request finishes.
    up.release();
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "released");

    // A file that does not validate is refused, saying why, and the running configuration stays.
    let broken = second.replace("[upstream]\n", "[upstream]\ntimeout = \"soon\"\n");
    std::fs::write(gw.config_path(), broken).unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(20), || gw
            .logs()
            .contains("configuration reload refused"))
        .await,
        "the refusal was not logged"
    );
    assert!(gw.logs().contains("upstream.timeout"), "{}", gw.logs());
    assert_eq!(get_on(&mut conn, "/old").await.0, 403);
    assert_eq!(b.get(&format!("{base}/private")).await.status(), 200);
    assert_eq!(up.last().headers["x-who"], "alice@example.com");
    assert!(gw.child.try_wait().unwrap().is_none(), "the gateway exited");

    // The first file again: back to the first routes.
    std::fs::write(gw.config_path(), &first).unwrap();
    gw.signal("HUP");
    let mut status = 0;
    for _ in 0..200 {
        status = get_on(&mut conn, "/old").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the second reload was not applied");
}

/// A rustls client trusting `ca`: the end-entity certificate a new connection to `addr` is served.
async fn served_certificate(addr: std::net::SocketAddr, ca: &TestCa) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake with a trusted certificate");
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Replace `path`'s contents at once (a rename), as deployment tools do.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Wait (bounded) until new connections are served `expected`.
async fn serves(addr: std::net::SocketAddr, ca: &TestCa, expected: &[u8]) -> bool {
    for _ in 0..150 {
        if served_certificate(addr, ca).await == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_replaced_listener_certificate_is_served_to_new_connections() {
    logs();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (cert1, key1) = ca.issue_pem(&["localhost"]);
    replace(&cert_path, &cert1);
    replace(&key_path, &key1);
    let up = TestUpstream::start("app").await;
    let text = gateway_toml(
        &up.url(),
        "[[routes]]\npath = \"^/\"\npolicy = \"public\"\n",
    )
    .replace(
        "[server]",
        &format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    );
    let gw = gateway(&text).await;
    let addr = gw.addr();
    assert_eq!(served_certificate(addr, &ca).await, der(&cert1));
    // A connection made before the change, kept open.
    let root = reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap();
    let kept = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/kept", addr.port());
    assert_eq!(kept.get(&url).send().await.unwrap().status(), 200);

    // A new pair: new connections get it, without a restart.
    let (cert2, key2) = ca.issue_pem(&["localhost"]);
    replace(&key_path, &key2);
    replace(&cert_path, &cert2);
    assert!(
        serves(addr, &ca, &der(&cert2)).await,
        "the new certificate was not served"
    );
    assert_eq!(kept.get(&url).send().await.unwrap().status(), 200);

    // A certificate whose key is not there yet: logged, and the previous pair keeps serving.
    let logged_before = log_text().len();
    let (cert3, key3) = ca.issue_pem(&["localhost"]);
    replace(&cert_path, &cert3);
    assert!(
        eventually(Duration::from_secs(15), || log_text()[logged_before..]
            .contains("does not fit the certificate"))
        .await,
        "the mismatched pair was not logged"
    );
    assert!(log_text()[logged_before..].contains("the previous certificate keeps serving"));
    assert_eq!(served_certificate(addr, &ca).await, der(&cert2));
    // Its key arrives: the pair is served.
    replace(&key_path, &key3);
    assert!(
        serves(addr, &ca, &der(&cert3)).await,
        "the completed pair was not served"
    );
    gw.shutdown().await;
}
