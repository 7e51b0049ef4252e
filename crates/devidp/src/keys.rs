//! Signing keys of the development provider, the JWKS it publishes, and key helpers for tests.
//!
//! RSA 2048 (RS256) or P-256 (ES256) keys come from aws-lc-rs. jsonwebtoken's
//! `EncodingKey::from_rsa_der` wants a PKCS#1 `RSAPrivateKey`, while aws-lc-rs exports PKCS#8 only, so the key goes through a PKCS#8 PEM
//! (`from_rsa_pem` unwraps PKCS#8 itself): no hand-written DER surgery. EC keys go in as PKCS#8 DER.
//! With the `misbehavior` feature, a second "rogue" key, never published, lets the provider sign with
//! a key the JWKS lacks.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use aws_lc_rs::{digest, rand};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};

use super::{Profile, SigningAlgorithm};

/// Key generation or conversion failed (aws-lc-rs reports no detail).
#[derive(Debug, thiserror::Error)]
#[error("key generation failed: {0}")]
pub(crate) struct KeyError(&'static str);

impl From<KeyError> for std::io::Error {
    fn from(e: KeyError) -> Self {
        std::io::Error::other(e)
    }
}

/// The public half of a signing key as the JWK carries it (base64url).
enum PublicJwk {
    /// Modulus and exponent (RFC 7518 section 6.3.1).
    Rsa { n: String, e: String },
    /// P-256 point coordinates (RFC 7518 section 6.2.1).
    P256 { x: String, y: String },
}

/// One signing key with everything the provider publishes about it.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    /// The algorithm it signs with.
    pub(crate) algorithm: SigningAlgorithm,
    pub(crate) encoding: EncodingKey,
    public: PublicJwk,
    /// SHA-1 thumbprint (base64url). There is no certificate, so it is taken over the key's
    /// SubjectPublicKeyInfo; it only needs to look like Asgardeo's header.
    pub(crate) x5t: String,
    /// SubjectPublicKeyInfo PEM: the bytes a naive verifier would use as an HMAC secret in the
    /// algorithm-confusion attack.
    #[cfg(any(test, feature = "misbehavior"))]
    pub(crate) public_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("private", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// A fresh key for `alg` with a fresh kid in the style of `profile`.
    pub(crate) fn generate(
        profile: Profile,
        algorithm: SigningAlgorithm,
    ) -> Result<Self, KeyError> {
        let (encoding, public, spki) = match algorithm {
            SigningAlgorithm::Rs256 => {
                let pair =
                    KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError("RSA generate"))?;
                let pkcs8: Pkcs8V1Der<'static> =
                    pair.as_der().map_err(|_| KeyError("PKCS#8 export"))?;
                let encoding =
                    EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
                        .map_err(|_| KeyError("PKCS#8 import"))?;
                let components: PublicKeyComponents<Vec<u8>> = pair.public_key().into();
                let spki: PublicKeyX509Der<'static> = pair
                    .public_key()
                    .as_der()
                    .map_err(|_| KeyError("SPKI export"))?;
                let public = PublicJwk::Rsa {
                    n: URL_SAFE_NO_PAD.encode(&components.n),
                    e: URL_SAFE_NO_PAD.encode(&components.e),
                };
                (encoding, public, spki)
            }
            SigningAlgorithm::Es256 => {
                let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError("EC generate"))?;
                let pkcs8 = pair.to_pkcs8v1().map_err(|_| KeyError("PKCS#8 export"))?;
                let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
                // The uncompressed point: 0x04, then X and Y of 32 bytes each.
                let point = pair.public_key().as_ref();
                let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
                    return Err(KeyError("EC public point"));
                };
                let public = PublicJwk::P256 {
                    x: URL_SAFE_NO_PAD.encode(x),
                    y: URL_SAFE_NO_PAD.encode(y),
                };
                let spki: PublicKeyX509Der<'static> = pair
                    .public_key()
                    .as_der()
                    .map_err(|_| KeyError("SPKI export"))?;
                (encoding, public, spki)
            }
        };
        let x5t = URL_SAFE_NO_PAD
            .encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, spki.as_ref()).as_ref());
        // Asgardeo's kids are a thumbprint followed by the algorithm, such as `_RS256`.
        let kid = match profile {
            Profile::Standard => format!("dev-{}", random_token(9)?),
            Profile::Asgardeo => format!("{}_{}", hex(&random_bytes::<20>()?), algorithm.name()),
        };
        Ok(SigningKey {
            kid,
            algorithm,
            encoding,
            public,
            x5t,
            #[cfg(any(test, feature = "misbehavior"))]
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
        })
    }

    /// The JWS `alg` of its signatures.
    pub(crate) fn alg(&self) -> jsonwebtoken::Algorithm {
        self.algorithm.jws()
    }

    /// The public JWK (RFC 7517 section 4, RFC 7518 section 6).
    pub(crate) fn jwk(&self, profile: Profile) -> Value {
        let alg = self.algorithm.name();
        let mut jwk = match &self.public {
            PublicJwk::Rsa { n, e } => json!({
                "kty": "RSA", "kid": self.kid, "use": "sig", "alg": alg, "n": n, "e": e,
            }),
            PublicJwk::P256 { x, y } => json!({
                "kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": alg, "x": x, "y": y,
            }),
        };
        if profile == Profile::Asgardeo {
            jwk["x5t"] = Value::String(self.x5t.clone());
        }
        jwk
    }
}

/// The published key and, for the `WrongKey` defect, a rogue key that is never published.
pub(crate) struct KeySet {
    pub(crate) current: SigningKey,
    #[cfg(feature = "misbehavior")]
    pub(crate) rogue: SigningKey,
}

impl KeySet {
    pub(crate) fn generate(profile: Profile, alg: SigningAlgorithm) -> Result<Self, KeyError> {
        Ok(KeySet {
            current: SigningKey::generate(profile, alg)?,
            #[cfg(feature = "misbehavior")]
            rogue: SigningKey::generate(profile, alg)?,
        })
    }

    /// The JWKS document: only the current key.
    pub(crate) fn jwks(&self, profile: Profile) -> Value {
        json!({ "keys": [self.current.jwk(profile)] })
    }
}

/// Wraps DER in a PEM block (RFC 7468) with 64-character lines.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Generates an RSA 2048 key pair for a `private_key_jwt` test client:
/// (PKCS#8 private key PEM, SubjectPublicKeyInfo public key PEM).
///
/// # Panics
/// Only when aws-lc-rs cannot generate or export a key, which means the crypto library itself
/// is broken; this is a helper for tests and the demo.
pub fn generate_client_keypair() -> (String, String) {
    fn inner() -> Result<(String, String), KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError("RSA generate"))?;
        let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| KeyError("PKCS#8 export"))?;
        let spki: PublicKeyX509Der<'static> = pair
            .public_key()
            .as_der()
            .map_err(|_| KeyError("SPKI export"))?;
        Ok((
            pem("PRIVATE KEY", pkcs8.as_ref()),
            pem("PUBLIC KEY", spki.as_ref()),
        ))
    }
    #[allow(clippy::expect_used)]
    inner().expect("aws-lc-rs failed to generate an RSA key")
}

/// Base64url (no padding) of the left half of SHA-256 of `value`: `at_hash` and `c_hash` for
/// RS256 (OpenID Connect Core 3.1.3.6 and 3.3.2.11).
pub(crate) fn half_hash(value: &str) -> String {
    let d = digest::digest(&digest::SHA256, value.as_bytes());
    let bytes = d.as_ref();
    URL_SAFE_NO_PAD.encode(bytes.get(..bytes.len() / 2).unwrap_or(bytes))
}

/// Base64url of SHA-256: the S256 PKCE transform (RFC 7636 section 4.2).
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    rand::fill(&mut buf).map_err(|_| KeyError("random"))?;
    Ok(buf)
}

/// `bytes` random bytes as base64url: codes, tokens, request ids.
pub(crate) fn random_token(bytes: usize) -> Result<String, KeyError> {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf).map_err(|_| KeyError("random"))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Header, Validation};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct C {
        sub: String,
        exp: u64,
    }

    #[test]
    fn generated_key_signs_and_jwk_verifies() {
        let key = SigningKey::generate(Profile::Standard, SigningAlgorithm::Rs256)
            .map_err(|e| e.to_string());
        let Ok(key) = key else { panic!("{key:?}") };
        let claims = C {
            sub: "x".into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key.encoding);
        let Ok(token) = token else {
            panic!("sign failed")
        };
        let jwk = key.jwk(Profile::Standard);
        let n = jwk["n"].as_str().unwrap_or_default();
        let e = jwk["e"].as_str().unwrap_or_default();
        let Ok(dk) = DecodingKey::from_rsa_components(n, e) else {
            panic!("jwk")
        };
        assert!(decode::<C>(&token, &dk, &Validation::new(Algorithm::RS256)).is_ok());
        let Ok(pem_key) = DecodingKey::from_rsa_pem(key.public_pem.as_bytes()) else {
            panic!("pem")
        };
        assert!(decode::<C>(&token, &pem_key, &Validation::new(Algorithm::RS256)).is_ok());
        assert_eq!(e, "AQAB");
        assert!(jwk.get("x5t").is_none());
        assert!(format!("{key:?}").contains("[redacted]"));
    }

    #[test]
    fn es256_key_signs_and_its_jwk_verifies() {
        let Ok(key) = SigningKey::generate(Profile::Standard, SigningAlgorithm::Es256) else {
            panic!("keygen")
        };
        assert_eq!(key.alg(), Algorithm::ES256);
        let claims = C {
            sub: "x".into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
        };
        let Ok(token) =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key.encoding)
        else {
            panic!("sign failed")
        };
        let jwk = key.jwk(Profile::Standard);
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        let x = jwk["x"].as_str().unwrap_or_default();
        let y = jwk["y"].as_str().unwrap_or_default();
        assert_eq!((x.len(), y.len()), (43, 43)); // 32 bytes each
        let Ok(dk) = DecodingKey::from_ec_components(x, y) else {
            panic!("jwk")
        };
        assert!(decode::<C>(&token, &dk, &Validation::new(Algorithm::ES256)).is_ok());
        // Another key's JWK does not verify it.
        let Ok(other) = SigningKey::generate(Profile::Standard, SigningAlgorithm::Es256) else {
            panic!("keygen")
        };
        let o = other.jwk(Profile::Standard);
        let Ok(odk) = DecodingKey::from_ec_components(
            o["x"].as_str().unwrap_or_default(),
            o["y"].as_str().unwrap_or_default(),
        ) else {
            panic!("jwk")
        };
        assert!(decode::<C>(&token, &odk, &Validation::new(Algorithm::ES256)).is_err());
    }

    #[test]
    fn asgardeo_kid_and_x5t() {
        let Ok(key) = SigningKey::generate(Profile::Asgardeo, SigningAlgorithm::Rs256) else {
            panic!("keygen")
        };
        assert!(key.kid.ends_with("_RS256"));
        assert_eq!(
            key.jwk(Profile::Asgardeo)["x5t"].as_str(),
            Some(key.x5t.as_str())
        );
        assert_eq!(key.x5t.len(), 27); // 20 bytes of SHA-1
    }

    #[test]
    fn client_keypair_round_trip() {
        let (private, public) = generate_client_keypair();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let Ok(ek) = EncodingKey::from_rsa_pem(private.as_bytes()) else {
            panic!("private")
        };
        let Ok(dk) = DecodingKey::from_rsa_pem(public.as_bytes()) else {
            panic!("public")
        };
        let claims = C {
            sub: "x".into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
        };
        let Ok(t) = jsonwebtoken::encode(&Header::new(Algorithm::PS256), &claims, &ek) else {
            panic!()
        };
        assert!(decode::<C>(&t, &dk, &Validation::new(Algorithm::PS256)).is_ok());
    }

    #[test]
    fn hashes_match_known_vectors() {
        // RFC 7636 appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        // at_hash is 16 bytes: 22 base64url characters.
        assert_eq!(half_hash("token").len(), 22);
        assert_ne!(half_hash("a"), half_hash("b"));
    }
}
