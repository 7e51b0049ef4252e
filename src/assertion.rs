//! The signed identity assertion: a short-lived ES256 JWT in a header of every request forwarded with
//! an identity, so the application can check offline that the request came through the gateway.
//!
//! What it owns: the P-256 signing key (from `assertion.key_file`, shared by replicas, or generated at
//! start-up), its `kid` (the RFC 7638 thumbprint, so replicas sharing a key publish the same one), the
//! JWK Set of `GET /oauth2/jwks` (the current key and, after a key change, the previous one until every
//! assertion it signed has expired), and the assertions themselves, minted once per identity and
//! lifetime window and then reused. What it does not own: stripping client-sent copies of the header
//! (`proxy`, which treats it as an identity header) or which requests carry one (`phases`).
//!
//! Why it is shaped so: signing costs tens of microseconds, a cache hit a lock and a clone, so each
//! opened identity (a cached session or bearer token) keeps the assertions minted for it, per upstream
//! (the audience may differ), until a quarter of their lifetime is left.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde_json::{json, Value};

use crate::session::Claims;

/// A P-256 signing key with its published form.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    /// The public JWK, as `/oauth2/jwks` lists it.
    jwk: Value,
    /// The base64url JWS header, the same for every assertion this key signs.
    header: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("private", &"[redacted]")
            .finish()
    }
}

const NOT_P256: &str = "expected a P-256 (prime256v1) private key in PKCS#8 (\"PRIVATE KEY\") or SEC1 (\"EC PRIVATE KEY\") PEM";

/// The DER of the first private-key block of a PEM text (a SEC1 file from `openssl ecparam` starts
/// with an `EC PARAMETERS` block, which is skipped).
fn private_key_der(text: &str) -> Option<Vec<u8>> {
    let mut lines = text.lines().map(str::trim);
    loop {
        let label = lines
            .by_ref()
            .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))?
            .to_owned();
        let end = format!("-----END {label}-----");
        let body: String = lines.by_ref().take_while(|l| *l != end).collect();
        if label == "PRIVATE KEY" || label == "EC PRIVATE KEY" {
            return STANDARD.decode(body).ok();
        }
    }
}

impl SigningKey {
    /// The key in `pem` (PKCS#8 or SEC1); any other key or text is refused.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| NOT_P256.to_string())?;
        let der = private_key_der(text).ok_or_else(|| NOT_P256.to_string())?;
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| NOT_P256.to_string())?;
        Ok(SigningKey::with_pair(pair))
    }

    /// A fresh key from the system's random number generator.
    pub fn generate() -> Result<SigningKey, String> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| "generating the assertion key failed".to_string())?;
        Ok(SigningKey::with_pair(pair))
    }

    fn with_pair(pair: EcdsaKeyPair) -> SigningKey {
        // The public key is the uncompressed point: 0x04, then x and y of 32 bytes each.
        let point = pair.public_key().as_ref();
        let x = URL_SAFE_NO_PAD.encode(point.get(1..33).unwrap_or_default());
        let y = URL_SAFE_NO_PAD.encode(point.get(33..65).unwrap_or_default());
        // RFC 7638 3: the thumbprint is over the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
        );
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": kid,
            "use": "sig",
            "alg": "ES256",
        });
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string());
        SigningKey {
            pair,
            kid,
            jwk,
            header,
        }
    }

    /// The key id: its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWS of `claims`, signed ES256 (the fixed-length `r || s` form JWS uses).
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let mut token = String::with_capacity(512);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut token);
        let signature = self
            .pair
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|_| "signing the assertion failed".to_string())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

/// The signing keys: the current one, and previous ones still published until what they signed has
/// expired.
pub struct AssertionKeys {
    /// Read on every request that carries an assertion, so it is lock-free.
    current: ArcSwap<SigningKey>,
    /// Keys replaced by a configuration change, with the Unix second until which they are published.
    previous: Mutex<Vec<(Arc<SigningKey>, u64)>>,
}

impl AssertionKeys {
    /// The key of `key_pem`, or a generated one.
    pub fn new(key_pem: Option<&[u8]>) -> Result<AssertionKeys, String> {
        let current = match key_pem {
            Some(pem) => SigningKey::from_pem(pem)?,
            None => SigningKey::generate()?,
        };
        Ok(AssertionKeys {
            current: ArcSwap::from_pointee(current),
            previous: Mutex::new(Vec::new()),
        })
    }

    /// The key that signs from now on.
    pub fn current(&self) -> Guard<Arc<SigningKey>> {
        self.current.load()
    }

    /// A configuration names `key_pem` (or none: the running key stays). A different key becomes the
    /// current one; the one it replaces stays published for `retain` (the longest lifetime of what it
    /// signed) from `now`. Returns whether the key changed.
    pub fn update(
        &self,
        key_pem: Option<&[u8]>,
        retain: Duration,
        now: u64,
    ) -> Result<bool, String> {
        let Some(pem) = key_pem else {
            return Ok(false);
        };
        let key = SigningKey::from_pem(pem)?;
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        if key.kid == self.current.load().kid {
            return Ok(false);
        }
        let until = now.saturating_add(retain.as_secs()).saturating_add(1);
        let kid = key.kid.clone();
        let old = self.current.swap(Arc::new(key));
        previous.retain(|(k, u)| *u > now && k.kid != kid);
        previous.push((old, until));
        Ok(true)
    }

    /// The JWK Set of `GET /oauth2/jwks`: the current key first, then previous ones still needed.
    pub fn jwks(&self, now: u64) -> String {
        let current = self.current.load_full();
        let previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<&Value> = std::iter::once(&current.jwk)
            .chain(
                previous
                    .iter()
                    .filter(|(_, until)| *until > now)
                    .map(|(k, _)| &k.jwk),
            )
            .collect();
        json!({ "keys": keys }).to_string()
    }
}

/// `[assertion]` as one configuration applies it.
#[derive(Debug, Clone)]
pub struct AssertionSettings {
    pub header: HeaderName,
    pub lifetime: u64,
    /// `iss`: the public URL's origin.
    pub issuer: String,
    /// `aud` per upstream slot (the configured audience, or each upstream's origin).
    pub audiences: Vec<String>,
}

/// One assertion minted for an identity and an upstream.
#[derive(Debug, Clone)]
struct Minted {
    slot: usize,
    key: usize,
    value: HeaderValue,
    /// Minted again from here on, so none is sent close to its expiry.
    renew_at: u64,
}

/// Who an assertion is about.
pub struct Subject<'a> {
    pub claims: &'a Claims,
    /// The groups, as `[access]` reads them.
    pub groups: Vec<String>,
    /// When the identity itself ends (the session's or the token's expiry): no assertion outlives it.
    pub expires_at: u64,
}

/// The assertions minted for one opened identity (kept with it in the session or token cache).
#[derive(Debug, Default)]
pub struct AssertionCache {
    minted: Mutex<Vec<Minted>>,
}

/// Tells signing keys apart within one cache entry: the key's address. (Were a dropped key's
/// address reused, the assertion served would still verify: a replaced key stays published for as
/// long as what it signed lives.)
fn key_tag(key: &SigningKey) -> usize {
    std::ptr::from_ref(key) as usize
}

/// The claims of one assertion: `iss`, `aud`, `sub`, `email`, `groups` (always a list), `iat`, and
/// `exp` = `iat` + lifetime, or the identity's end when that comes first.
pub fn assertion_claims(
    settings: &AssertionSettings,
    slot: usize,
    claims: &Claims,
    groups: Vec<String>,
    iat: u64,
    exp: u64,
) -> Value {
    let mut c = serde_json::Map::new();
    c.insert("iss".into(), settings.issuer.clone().into());
    if let Some(aud) = settings.audiences.get(slot) {
        c.insert("aud".into(), aud.clone().into());
    }
    if let Some(sub) = claims.get("sub").and_then(|s| s.as_str()) {
        c.insert("sub".into(), sub.into());
    }
    if let Some(email) = claims.get("email").and_then(|s| s.as_str()) {
        c.insert("email".into(), email.into());
    }
    c.insert("groups".into(), groups.into());
    c.insert("iat".into(), iat.into());
    c.insert("exp".into(), exp.into());
    Value::Object(c)
}

impl AssertionCache {
    /// The assertion for `slot` when one minted with `key` is still fresh at `now`.
    pub fn fresh(&self, slot: usize, key: &SigningKey, now: u64) -> Option<HeaderValue> {
        let key = key_tag(key);
        let minted = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        minted
            .iter()
            .find(|m| m.slot == slot && m.key == key && m.renew_at > now)
            .map(|m| m.value.clone())
    }

    /// Mint an assertion for `slot` with `key` and keep it; `None` when the identity has already
    /// ended or signing failed (logged).
    pub fn mint(
        &self,
        settings: &AssertionSettings,
        slot: usize,
        key: &SigningKey,
        subject: Subject<'_>,
        now: u64,
    ) -> Option<HeaderValue> {
        let exp = now
            .saturating_add(settings.lifetime)
            .min(subject.expires_at);
        if exp <= now {
            return None;
        }
        let body = assertion_claims(settings, slot, subject.claims, subject.groups, now, exp);
        let token = match key.sign(&body) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{e}");
                return None;
            }
        };
        let mut value = HeaderValue::try_from(token).ok()?;
        value.set_sensitive(true);
        // Renewed once three quarters of its life have passed.
        let renew_at = now + (exp - now) * 3 / 4;
        let mut minted = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        minted.retain(|m| m.slot != slot && m.renew_at > now);
        minted.push(Minted {
            slot,
            key: key_tag(key),
            value: value.clone(),
            renew_at,
        });
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn pkcs8() -> (EcdsaKeyPair, String) {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        let text = pem("PRIVATE KEY", der.as_ref());
        (pair, text)
    }

    #[test]
    fn keys_load_from_pkcs8_and_sec1_with_the_same_kid() {
        let (pair, pkcs8_pem) = pkcs8();
        let sec1 = pair.private_key().as_der().unwrap();
        let sec1_pem = format!(
            "{}{}",
            pem("EC PARAMETERS", &[6, 8, 42, 134, 72, 206, 61, 3, 1, 7]),
            pem("EC PRIVATE KEY", sec1.as_ref())
        );
        let a = SigningKey::from_pem(pkcs8_pem.as_bytes()).unwrap();
        let b = SigningKey::from_pem(sec1_pem.as_bytes()).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), 43, "a SHA-256 thumbprint");
        assert_ne!(a.kid(), SigningKey::generate().unwrap().kid());
        assert!(!format!("{a:?}").contains("BEGIN"));
        for bad in [
            "not a key".to_string(),
            crate::oidc::testutil::rsa().private_pem.clone(),
            crate::oidc::testutil::p384().private_pem.clone(),
            pem("PRIVATE KEY", b"garbage"),
        ] {
            assert!(SigningKey::from_pem(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc7638_thumbprint_of_a_known_key() {
        // RFC 7638 3.1 gives an RSA example; for EC the same construction over crv, kty, x, y.
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
        );
        assert_eq!(kid.len(), 43);
    }

    #[test]
    fn a_changed_key_stays_published_until_its_assertions_expire() {
        let (_, first) = pkcs8();
        let (_, second) = pkcs8();
        let keys = AssertionKeys::new(Some(first.as_bytes())).unwrap();
        let old_kid = keys.current().kid().to_string();
        assert!(!keys
            .update(Some(first.as_bytes()), Duration::from_secs(300), 1000)
            .unwrap());
        assert!(!keys.update(None, Duration::from_secs(300), 1000).unwrap());
        assert!(keys
            .update(Some(second.as_bytes()), Duration::from_secs(300), 1000)
            .unwrap());
        let new_kid = keys.current().kid().to_string();
        assert_ne!(old_kid, new_kid);
        let kids = |now| {
            let v: Value = serde_json::from_str(&keys.jwks(now)).unwrap();
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(kids(1000), [new_kid.clone(), old_kid.clone()]);
        assert_eq!(kids(1300), [new_kid.clone(), old_kid]);
        assert_eq!(kids(1302), [new_kid]);
    }

    #[test]
    fn assertions_verify_and_are_reused_until_renewal() {
        let key = SigningKey::generate().unwrap();
        let settings = AssertionSettings {
            header: HeaderName::from_static("x-portcullis-jwt-assertion"),
            lifetime: 300,
            issuer: "https://gw.example.com".into(),
            audiences: vec!["http://app:8080".into()],
        };
        let claims = Claims::new(
            json!({"sub": "u1", "email": "a@example.com", "groups": ["g"]})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let cache = AssertionCache::default();
        assert!(cache.fresh(0, &key, 1000).is_none());
        let v = cache
            .mint(
                &settings,
                0,
                &key,
                Subject {
                    claims: &claims,
                    groups: vec!["g".into()],
                    expires_at: 5000,
                },
                1000,
            )
            .unwrap();
        assert!(v.is_sensitive());
        assert_eq!(cache.fresh(0, &key, 1224).as_ref(), Some(&v));
        assert!(
            cache.fresh(0, &key, 1225).is_none(),
            "renewed after 3/4 of 300 s"
        );
        assert!(cache.fresh(1, &key, 1000).is_none(), "another upstream");
        let other = SigningKey::generate().unwrap();
        assert!(cache.fresh(0, &other, 1000).is_none(), "another key");

        // A real JOSE implementation accepts it with the published key.
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&json!({"keys": [key.jwk.clone()]}).to_string()).unwrap();
        let header = jsonwebtoken::decode_header(v.to_str().unwrap()).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let jwk = jwks.find(key.kid()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["http://app:8080"]);
        validation.set_issuer(&["https://gw.example.com"]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(
            v.to_str().unwrap(),
            &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap();
        let c = data.claims;
        assert_eq!(c["sub"], "u1");
        assert_eq!(c["email"], "a@example.com");
        assert_eq!(c["groups"], json!(["g"]));
        assert_eq!(c["iat"], 1000);
        assert_eq!(c["exp"], 1300);

        // Never past the identity's own end.
        let v = cache
            .mint(
                &settings,
                0,
                &key,
                Subject {
                    claims: &claims,
                    groups: vec![],
                    expires_at: 1100,
                },
                1000,
            )
            .unwrap();
        let payload = v.to_str().unwrap().split('.').nth(1).unwrap();
        let c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(c["exp"], 1100);
        assert_eq!(c["groups"], json!([]));
        assert!(cache
            .mint(
                &settings,
                0,
                &key,
                Subject {
                    claims: &claims,
                    groups: vec![],
                    expires_at: 1000
                },
                1000
            )
            .is_none());
    }
}
