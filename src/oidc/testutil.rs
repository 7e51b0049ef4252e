//! Test support: signing keys generated with aws-lc-rs, their JWKs, a JWT signer that lets a
//! test write any header, and a tiny HTTP/1.1 server on 127.0.0.1:0 that counts requests.
//! Compiled only for tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
    pub private_pem: String,
    pub public_pem: String,
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn make_rsa(kid: &str) -> TestKey {
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let private_pem = pem("PRIVATE KEY", kp.as_der().unwrap().as_ref());
    let public_pem = pem("PUBLIC KEY", kp.public_key().as_der().unwrap().as_ref());
    let comps = RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
    TestKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&comps.n), "e": b64(&comps.e)}),
        private_pem,
        public_pem,
    }
}

pub fn rsa() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make_rsa("rsa-1"))
}

pub fn rsa2() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make_rsa("rsa-2"))
}

fn make_ec(
    kid: &str,
    signing: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
    alg: Algorithm,
    crv: &str,
    coord: usize,
) -> TestKey {
    let kp = EcdsaKeyPair::generate(signing).unwrap();
    let der = kp.to_pkcs8v1().unwrap();
    let point = kp.public_key().as_ref().to_vec();
    let (x, y) = point[1..].split_at(coord);
    TestKey {
        kid: kid.into(),
        alg,
        encoding: EncodingKey::from_ec_der(der.as_ref()),
        jwk: json!({"kty": "EC", "kid": kid, "crv": crv, "x": b64(x), "y": b64(y)}),
        private_pem: pem("PRIVATE KEY", der.as_ref()),
        public_pem: String::new(),
    }
}

pub fn p256() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        make_ec(
            "ec-1",
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            Algorithm::ES256,
            "P-256",
            32,
        )
    })
}

pub fn p384() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        make_ec(
            "ec-2",
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            Algorithm::ES384,
            "P-384",
            48,
        )
    })
}

pub fn ed25519() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let kp = Ed25519KeyPair::generate().unwrap();
        let der = kp.to_pkcs8v1().unwrap();
        TestKey {
            kid: "ed-1".into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der.as_ref()),
            jwk: json!({"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(kp.public_key().as_ref())}),
            private_pem: pem("PRIVATE KEY", der.as_ref()),
            public_pem: String::new(),
        }
    })
}

/// Signs `claims` under exactly the given header (which names the alg), so tests can forge
/// headers (`alg: none`, no `kid`, a wrong `kid`).
pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// Signs with the key's own alg and kid.
pub fn sign(key: &TestKey, claims: &Value) -> String {
    let alg = serde_json::to_value(key.alg).unwrap();
    sign_raw(
        &json!({"alg": alg, "kid": key.kid, "typ": "JWT"}),
        claims,
        &key.encoding,
        key.alg,
    )
}

pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A canned response: status and JSON (or any) body.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub body: String,
}

/// A minimal HTTP/1.1 server: answers by path from a mutable table, counts requests per path,
/// keeps the last request head and body per path. One request per connection.
#[derive(Clone, Default)]
pub struct TestServer {
    pub routes: Arc<Mutex<HashMap<String, Canned>>>,
    pub hits: Arc<Mutex<HashMap<String, u64>>>,
    pub last: Arc<Mutex<HashMap<String, String>>>,
}

impl TestServer {
    pub fn set(&self, path: &str, status: u16, body: impl Into<String>) {
        self.routes.lock().unwrap().insert(
            path.into(),
            Canned {
                status,
                body: body.into(),
            },
        );
    }

    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn last_request(&self, path: &str) -> String {
        self.last
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Serves on an already bound listener until the test ends.
    pub fn serve(&self, listener: tokio::net::TcpListener) {
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head, then as many body bytes as Content-Length says.
                    let (head_end, content_length) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (pos + 4, len);
                        }
                    };
                    while buf.len() < head_end + content_length {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let path = text
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .split('?')
                        .next()
                        .unwrap_or("/")
                        .to_string();
                    *this.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    this.last.lock().unwrap().insert(path.clone(), text);
                    let canned = this.routes.lock().unwrap().get(&path).cloned();
                    let canned = canned.unwrap_or(Canned {
                        status: 404,
                        body: "not found".into(),
                    });
                    let resp = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                        canned.status,
                        canned.body.len(),
                        canned.body
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
    }

    pub async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        self.serve(listener);
        addr
    }
}

/// A provider response with `status` and `body`, as the sender hands it to the parsers.
pub(crate) fn response(status: u16, body: &str) -> http::Response<bytes::Bytes> {
    http::Response::builder()
        .status(status)
        .body(bytes::Bytes::from(body.to_owned()))
        .unwrap()
}
