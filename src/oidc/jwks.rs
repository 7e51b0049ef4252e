//! The provider's signing keys: JWKS parsing (RFC 7517) and the key cache.
//!
//! What it owns: turning a JWKS document into verification keys, and deciding when to fetch it
//! again. What it does not own: the HTTP call (the cache takes a fetch closure) or the token
//! checks (`id_token`).
//!
//! Why it is shaped so: the hot path (every login callback) only clones an `Arc<KeySet>` under a
//! read lock. A token naming an unknown `kid` triggers a refetch, so key rotation just works, but
//! refetches are single-flight (concurrent misses share one fetch) and spaced at least
//! `min_interval` apart (except the first), so a flood of tokens with bogus `kid`s cannot make
//! portcullis hammer the provider.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::json_object;

/// The key families portcullis can verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind can verify a signature made with `alg` (RFC 7518 3.1, RFC 8037).
    pub fn supports(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key from the JWKS.
#[derive(Clone)]
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The key's own `alg`, when the JWKS states one (RFC 7517 4.4).
    pub alg: Option<String>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The usable signing keys of one JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        Self { keys }
    }

    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a JWKS document was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("JWKS endpoint answered HTTP {0}")]
    Status(u16),
    #[error("JWKS: {0}")]
    BadDocument(String),
    #[error("JWKS holds no usable signing key (RSA, EC P-256/P-384, Ed25519)")]
    NoUsableKeys,
}

/// Parses a JWKS response. Keys that are not for signatures, of an unsupported kind or curve,
/// or malformed are skipped one by one: a provider that adds an encryption key or a new key type
/// must not break logins with the keys we can use.
pub fn parse_jwks(response: &http::Response<Bytes>) -> Result<KeySet, JwksError> {
    if !response.status().is_success() {
        return Err(JwksError::Status(response.status().as_u16()));
    }
    let map = json_object(response.body(), "JWKS").map_err(JwksError::BadDocument)?;
    let Some(Value::Array(entries)) = map.get("keys") else {
        return Err(JwksError::BadDocument("no \"keys\" array".into()));
    };
    let keys: Vec<VerifyingKey> = entries.iter().filter_map(parse_key).collect();
    if keys.is_empty() {
        return Err(JwksError::NoUsableKeys);
    }
    Ok(KeySet { keys })
}

fn str_field<'a>(key: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    key.get(name).and_then(Value::as_str)
}

/// One JWK to a verification key, or `None` when it cannot or must not verify signatures.
fn parse_key(entry: &Value) -> Option<VerifyingKey> {
    let obj = entry.as_object()?;
    // RFC 7517 4.2: a key marked for another use (`enc`) must not verify signatures.
    if let Some(usage) = obj.get("use") {
        if usage.as_str() != Some("sig") {
            return None;
        }
    }
    // RFC 7517 4.3: when key_ops is given, it must allow verification.
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array()?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return None;
        }
    }
    let (kind, key) = match str_field(obj, "kty")? {
        "RSA" => {
            let key = DecodingKey::from_rsa_components(str_field(obj, "n")?, str_field(obj, "e")?)
                .ok()?;
            (KeyKind::Rsa, key)
        }
        "EC" => {
            let (kind, coord_len) = match str_field(obj, "crv")? {
                "P-256" => (KeyKind::EcP256, 32),
                "P-384" => (KeyKind::EcP384, 48),
                _ => return None,
            };
            let x = str_field(obj, "x")?;
            let y = str_field(obj, "y")?;
            // Coordinates of the wrong length would build a point for another curve.
            if decoded_len(x)? != coord_len || decoded_len(y)? != coord_len {
                return None;
            }
            (kind, DecodingKey::from_ec_components(x, y).ok()?)
        }
        "OKP" => {
            if str_field(obj, "crv")? != "Ed25519" {
                return None;
            }
            let x = str_field(obj, "x")?;
            if decoded_len(x)? != 32 {
                return None;
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_components(x).ok()?)
        }
        // Symmetric (`oct`) keys never verify id_tokens here: HMAC is not on the allow-list.
        _ => return None,
    };
    Some(VerifyingKey {
        kid: str_field(obj, "kid").map(str::to_owned),
        kind,
        alg: str_field(obj, "alg").map(str::to_owned),
        key,
    })
}

fn decoded_len(b64: &str) -> Option<usize> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .ok()
        .map(|v| v.len())
}

/// The cache of the provider's keys, with single-flight, rate-limited refetch on a miss.
#[derive(Debug)]
pub struct KeyCache {
    current: RwLock<Arc<KeySet>>,
    /// Held across a refetch, so concurrent misses wait for the one fetch in flight.
    refetch: tokio::sync::Mutex<RefetchState>,
    min_interval: Duration,
    fetches: AtomicU64,
}

#[derive(Debug, Default)]
struct RefetchState {
    /// When the last miss-triggered fetch started; `None` until the first miss after start-up.
    last: Option<Instant>,
}

impl KeyCache {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            current: RwLock::new(Arc::new(KeySet::default())),
            refetch: tokio::sync::Mutex::new(RefetchState::default()),
            min_interval,
            fetches: AtomicU64::new(0),
        }
    }

    /// The current key set: one read lock and an `Arc` clone.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True once a non-empty key set has been installed.
    pub fn is_loaded(&self) -> bool {
        !self.current().is_empty()
    }

    /// Installs a freshly fetched set (start-up load). Does not touch the refetch rate limit, so
    /// the first unknown `kid` after start-up is still fetched at once.
    pub fn install(&self, set: KeySet) -> Arc<KeySet> {
        let set = Arc::new(set);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = set.clone();
        set
    }

    /// Counts one JWKS fetch; the caller that performs a fetch outside [`Self::refetch_after_miss`]
    /// (the start-up load) records it here.
    pub fn record_fetch(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the JWKS has been fetched (a metric for the integrator).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Called after a lookup in `seen` found no key. Returns a newer set to retry the lookup
    /// once, or `None` when no newer set is available (rate-limited or the fetch failed).
    ///
    /// Single flight: the refetch mutex is held across the fetch; a caller that waited finds
    /// the set already swapped (it is no longer `seen`) and retries with it, without a fetch of
    /// its own. Rate limit: a fetch starts only if the previous miss-triggered fetch started at
    /// least `min_interval` ago; a failed fetch counts too, so a down provider is not hammered.
    pub async fn refetch_after_miss<F, Fut>(
        &self,
        seen: &Arc<KeySet>,
        fetch: F,
    ) -> Option<Arc<KeySet>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<KeySet>>,
    {
        let mut state = self.refetch.lock().await;
        let now_current = self.current();
        if !Arc::ptr_eq(&now_current, seen) {
            return Some(now_current);
        }
        if let Some(last) = state.last {
            if last.elapsed() < self.min_interval {
                return None;
            }
        }
        state.last = Some(Instant::now());
        self.record_fetch();
        let fresh = fetch().await?;
        Some(self.install(fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(body: Value) -> http::Response<Bytes> {
        http::Response::new(Bytes::from(body.to_string()))
    }

    // A real RSA-2048 modulus is not needed for parsing; from_rsa_components only decodes base64.
    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
    const P256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const P256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn parses_supported_kinds_and_skips_the_rest() {
        let set = parse_jwks(&response(json!({"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": N, "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": P256_X, "y": P256_Y},
            {"kty": "OKP", "kid": "o1", "crv": "Ed25519", "x": ED_X},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": N, "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": N, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": P256_X, "y": P256_Y},
            {"kty": "EC", "kid": "short", "crv": "P-384", "x": P256_X, "y": P256_Y},
            {"kty": "OKP", "kid": "x448", "crv": "Ed448", "x": ED_X},
            {"kty": "RSA", "kid": "broken", "n": 5, "e": "AQAB"},
            {"kty": "RSA", "kid": "odd-alg", "alg": "RSA-OAEP-9000", "n": N, "e": "AQAB"},
            "not an object",
            {"kty": "weird"}
        ]})))
        .unwrap();
        let kids: Vec<_> = set.keys().iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["r1", "e1", "o1", "odd-alg"]);
        assert_eq!(set.keys()[0].alg.as_deref(), Some("RS256"));
        assert_eq!(set.keys()[1].kind, KeyKind::EcP256);
        assert_eq!(set.keys()[2].kind, KeyKind::Ed25519);
    }

    #[test]
    fn unusable_documents_are_errors() {
        assert_eq!(
            parse_jwks(&response(
                json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
            ))
            .unwrap_err(),
            JwksError::NoUsableKeys
        );
        assert!(matches!(
            parse_jwks(&response(json!({"nokeys": []}))),
            Err(JwksError::BadDocument(_))
        ));
        let not_found = http::Response::builder()
            .status(404)
            .body(Bytes::new())
            .unwrap();
        assert_eq!(parse_jwks(&not_found).unwrap_err(), JwksError::Status(404));
    }

    #[test]
    fn key_kinds_match_algorithm_families() {
        assert!(KeyKind::Rsa.supports(Algorithm::PS384));
        assert!(!KeyKind::Rsa.supports(Algorithm::ES256));
        assert!(!KeyKind::Rsa.supports(Algorithm::HS256));
        assert!(KeyKind::EcP256.supports(Algorithm::ES256));
        assert!(!KeyKind::EcP256.supports(Algorithm::ES384));
        assert!(KeyKind::Ed25519.supports(Algorithm::EdDSA));
    }

    fn one_key_set() -> KeySet {
        parse_jwks(&response(
            json!({"keys": [{"kty": "OKP", "kid": "o1", "crv": "Ed25519", "x": ED_X}]}),
        ))
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_fetch_and_later_misses_are_rate_limited() {
        let cache = Arc::new(KeyCache::new(Duration::from_secs(3600)));
        let seen = cache.install(KeySet::default());
        let calls = Arc::new(AtomicU64::new(0));
        // The fetch is held open until every task has been spawned, so most of them queue
        // behind it; whichever order they run in, there must be exactly one fetch.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, seen, calls, gate) =
                (cache.clone(), seen.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .refetch_after_miss(&seen, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _permit = gate.acquire().await.ok()?;
                        Some(one_key_set())
                    })
                    .await
            }));
        }
        gate.add_permits(1);
        for t in tasks {
            let got = t.await.unwrap().expect("every waiter sees the fresh set");
            assert_eq!(got.keys().len(), 1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.fetches(), 1);

        // A later miss within the interval does not fetch.
        let seen = cache.current();
        let again = cache
            .refetch_after_miss(&seen, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Some(one_key_set())
            })
            .await;
        assert!(again.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.fetches(), 1);
    }

    #[tokio::test]
    async fn failed_fetch_counts_and_interval_zero_allows_refetch() {
        let cache = KeyCache::new(Duration::ZERO);
        let seen = cache.install(KeySet::default());
        assert!(cache
            .refetch_after_miss(&seen, || async { None })
            .await
            .is_none());
        let got = cache
            .refetch_after_miss(&seen, || async { Some(one_key_set()) })
            .await;
        assert!(got.is_some());
        assert!(cache.is_loaded());
        assert_eq!(cache.fetches(), 2);
    }
}
