//! The authorization request (OIDC Core 3.1.2.1, RFC 6749 4.1.1, RFC 7636 4).
//!
//! What it owns: the per-login secrets (state, nonce, PKCE verifier) and the URL the browser is
//! sent to. What it does not own: storing those secrets for the callback (that is `login`).
//! A pure function of its inputs plus fresh randomness, so the URL is tested as a value.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use url::Url;

use super::{random_token, Nonce, PkceVerifier, State};

/// Parameters portcullis sets itself; extra parameters may not override them.
pub const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// The secrets of one login attempt, kept (encrypted) until the callback.
#[derive(Debug, Clone)]
pub struct LoginSecrets {
    pub state: State,
    pub nonce: Nonce,
    /// Present when PKCE is on.
    pub pkce_verifier: Option<PkceVerifier>,
}

impl LoginSecrets {
    /// Fresh random secrets: 32 bytes each from the system RNG, base64url. A 43-character
    /// verifier from the unreserved set satisfies RFC 7636 4.1.
    pub fn generate(pkce: bool) -> Result<Self, aws_lc_rs::error::Unspecified> {
        Ok(Self {
            state: State::new(random_token(32)?),
            nonce: Nonce::new(random_token(32)?),
            pkce_verifier: if pkce {
                Some(PkceVerifier::new(random_token(32)?))
            } else {
                None
            },
        })
    }
}

/// RFC 7636 4.2: `code_challenge = BASE64URL(SHA256(ASCII(code_verifier)))`.
pub fn pkce_challenge(verifier: &PkceVerifier) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.secret().as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// What the authorization URL is made of, besides the per-login secrets.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub endpoint: &'a Url,
    pub client_id: &'a str,
    pub redirect_uri: &'a Url,
    pub scopes: &'a [String],
    pub extra_params: &'a [(String, String)],
}

/// The authorization URL. A query already on the endpoint is kept (some providers put a tenant
/// or policy there); our parameters are appended, form-encoded by `url`.
pub fn authorization_url(req: &AuthRequest<'_>, secrets: &LoginSecrets) -> Url {
    let mut url = req.endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", req.client_id)
            .append_pair("redirect_uri", req.redirect_uri.as_str())
            .append_pair("scope", &req.scopes.join(" "))
            .append_pair("state", secrets.state.secret())
            .append_pair("nonce", secrets.nonce.secret());
        if let Some(verifier) = &secrets.pkce_verifier {
            q.append_pair("code_challenge", &pkce_challenge(verifier))
                .append_pair("code_challenge_method", "S256");
        }
        for (k, v) in req.extra_params {
            if !RESERVED_PARAMS.contains(&k.as_str()) {
                q.append_pair(k, v);
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn params(url: &Url) -> Vec<(String, String)> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn rfc7636_appendix_b_challenge() {
        let v = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            pkce_challenge(&v),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn url_carries_every_parameter_and_keeps_the_endpoint_query() {
        let endpoint = Url::parse("https://idp.example.com/authorize?p=b2c_signin&x=1").unwrap();
        let redirect = Url::parse("https://app.example.com/oauth2/callback").unwrap();
        let scopes = vec!["openid".to_string(), "email".to_string()];
        let extra = vec![
            ("prompt".to_string(), "login".to_string()),
            ("state".to_string(), "attacker".to_string()),
        ];
        let secrets = LoginSecrets::generate(true).unwrap();
        let url = authorization_url(
            &AuthRequest {
                endpoint: &endpoint,
                client_id: "port cullis",
                redirect_uri: &redirect,
                scopes: &scopes,
                extra_params: &extra,
            },
            &secrets,
        );
        assert_eq!(url.path(), "/authorize");
        let p = params(&url);
        let map: HashMap<_, _> = p.iter().cloned().collect();
        assert_eq!(map["p"], "b2c_signin");
        assert_eq!(map["x"], "1");
        assert_eq!(map["response_type"], "code");
        assert_eq!(map["client_id"], "port cullis");
        assert_eq!(
            map["redirect_uri"],
            "https://app.example.com/oauth2/callback"
        );
        assert_eq!(map["scope"], "openid email");
        assert_eq!(map["nonce"], secrets.nonce.secret());
        assert_eq!(map["prompt"], "login");
        let verifier = secrets.pkce_verifier.as_ref().unwrap();
        assert_eq!(map["code_challenge"], pkce_challenge(verifier));
        assert_eq!(map["code_challenge_method"], "S256");
        // The extra `state` cannot replace ours.
        let states: Vec<_> = p.iter().filter(|(k, _)| k == "state").collect();
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].1, secrets.state.secret());
        // Spaces are form-encoded, never raw.
        assert!(url.as_str().contains("scope=openid+email"));
    }

    #[test]
    fn without_pkce_no_challenge_and_secrets_are_fresh() {
        let a = LoginSecrets::generate(false).unwrap();
        let b = LoginSecrets::generate(false).unwrap();
        assert!(a.pkce_verifier.is_none());
        assert_ne!(a.state.secret(), b.state.secret());
        assert_ne!(a.nonce.secret(), b.nonce.secret());
        assert_ne!(a.state.secret(), a.nonce.secret());
        let endpoint = Url::parse("https://idp.example.com/authorize").unwrap();
        let url = authorization_url(
            &AuthRequest {
                endpoint: &endpoint,
                client_id: "c",
                redirect_uri: &endpoint,
                scopes: &[],
                extra_params: &[],
            },
            &a,
        );
        assert!(!url.as_str().contains("code_challenge"));
        let v = LoginSecrets::generate(true).unwrap().pkce_verifier.unwrap();
        assert!((43..=128).contains(&v.secret().len()));
    }
}
