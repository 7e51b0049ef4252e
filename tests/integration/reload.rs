//! Changing a running gateway: the listener's certificate is re-read when its files change.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::browser::{log_text, logs};
use crate::servers::TestCa;
use crate::support::*;

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
