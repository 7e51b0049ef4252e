//! The demo binary, driven like a newcomer would: start it, open the printed URL, log in.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::browser::Browser;

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn scripted_login_against_the_demo_binary() {
    // Port 0 everywhere: the demo binds what the system gives it and prints the URL.
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["demo", "--gateway-port", "0"])
        .args(["--provider-port", "0", "--app-port", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    // The demo prints the URL to open and the provider's once everything listens.
    let (url, provider) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        while let Some(line) = lines.next() {
            let line = line.unwrap();
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Open ") {
                url = Some(rest.split_whitespace().next().unwrap().to_string());
            }
            if let Some(rest) = line.strip_prefix("Provider: ") {
                let provider = rest.split_whitespace().next().unwrap().to_string();
                // Keep reading: the demo prints more lines, and a closed pipe would end it.
                std::thread::spawn(move || lines.for_each(drop));
                return (url.expect("the URL comes first"), provider);
            }
        }
        panic!("the demo exited without printing its URLs");
    })
    .await
    .unwrap();
    assert!(
        url.starts_with("http://localhost:") && url.ends_with('/') && !url.contains(":0/"),
        "{url}"
    );

    let b = Browser::new();
    crate::browser::wait_ready(url.trim_end_matches('/')).await;
    let back = b.login(&url, "alice").await;
    assert_eq!(back, url);
    let page = b.get(&url).await.text().await.unwrap();
    assert!(
        page.contains("Signed in as <strong>alice@example.com</strong>"),
        "{page}"
    );
    assert!(
        page.contains("x-forwarded-groups") && page.contains("admins,staff"),
        "{page}"
    );

    // `portcullis check` reaches the running provider's discovery document with the committed file.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", config])
        .env("PORTCULLIS_OIDC__ISSUER", &provider)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reachable"));
    drop(demo);
}
