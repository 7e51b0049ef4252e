//! The binary's command line: bad configurations stop it with one line naming the key; `check` agrees;
//! `secret` prints a usable secret.

use std::process::Command;

use crate::support::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// Run `portcullis [check] --config <file>` and return (exit success, stderr lines).
fn run(args: &[&str], text: &str) -> (bool, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = bin()
        .args(args)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (
        out.status.success(),
        stderr.lines().map(str::to_string).collect(),
    )
}

#[test]
fn each_bad_configuration_exits_with_one_line_naming_the_key() {
    let good = gateway_toml("http://127.0.0.1:8080", "");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            good.replace("[upstream]", "[upstream]\nurll = \"x\""),
            "upstream.urll",
        ),
        (
            good.replace("http://127.0.0.1:8080", "htp:/bad url"),
            "upstream.url",
        ),
        (
            good.replace("timeout = \"2s\"", "timeout = \"two seconds\""),
            "upstream.timeout",
        ),
        (
            good.replace(
                "client_secret = \"secret\"",
                "client_secret_file = \"/nonexistent/client_secret\"",
            ),
            "oidc.client_secret_file",
        ),
        (
            // A directory cannot be read as a file, even by root.
            good.replace(
                &format!("secret = \"{SECRET}\""),
                &format!("secret_file = {:?}", dir.path().display().to_string()),
            ),
            "session.secret_file",
        ),
    ];
    for (text, key) in cases {
        for args in [&["check", "--offline"][..], &["check"][..], &[][..]] {
            let (ok, lines) = run(args, &text);
            assert!(!ok, "{args:?} accepted a configuration with a bad {key}");
            assert_eq!(
                lines.len(),
                1,
                "{args:?} {key}: expected one line, got {lines:?}"
            );
            assert!(
                lines[0].contains(key),
                "{args:?}: {:?} does not name {key}",
                lines[0]
            );
        }
    }
    let (ok, lines) = run(&["check", "--offline"], &good);
    assert!(ok, "{lines:?}");
    // Online, the check must reach the provider's discovery document: nothing listens there.
    let (ok, lines) = run(&["check"], &good);
    assert!(!ok);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("oidc.issuer"), "{lines:?}");
}

#[test]
fn a_misspelt_environment_key_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, gateway_toml("http://127.0.0.1:8080", "")).unwrap();
    for args in [&["check", "--offline"][..], &[][..]] {
        let out = bin()
            .args(args)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "off")
            .env("PORTCULLIS_SERVICE_HOST", "10.0.0.1")
            .env("PORTCULLIS_OIDC__CLIENT_SECRETT", "typo")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{args:?} started with a misspelt key"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("oidc.client_secrett")
                && stderr.contains("PORTCULLIS_OIDC__CLIENT_SECRETT"),
            "{stderr}"
        );
    }
}

#[test]
fn unreadable_configuration_file_is_named() {
    let out = bin()
        .args(["check", "--config", "/nonexistent/gateway.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1);
    assert!(stderr.contains("/nonexistent/gateway.toml"), "{stderr}");
}

#[test]
fn the_committed_gateway_toml_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let out = bin()
        .args(["check", "--offline", "--config", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn secret_prints_a_fresh_usable_secret() {
    let a = bin().arg("secret").output().unwrap();
    let b = bin().arg("secret").output().unwrap();
    assert!(a.status.success());
    let a = String::from_utf8(a.stdout).unwrap().trim().to_string();
    let b = String::from_utf8(b.stdout).unwrap().trim().to_string();
    assert_ne!(a, b);
    assert_eq!(
        portcullis::config::decode_secret("k", &a).unwrap().len(),
        32
    );
    let text = gateway_toml("http://127.0.0.1:8080", "").replace(SECRET, &a);
    assert!(run(&["check", "--offline"], &text).0);
}
