//! Provider metadata: the discovery request, the discovery document parser, and the merge of
//! discovered endpoints with endpoints set by hand (OpenID Connect Discovery 1.0).
//!
//! What it owns: turning an issuer and a response into a [`ProviderMetadata`] that the rest of
//! the module can trust (issuer matched, URLs checked). What it does not own: fetching (see
//! `provider`). Pure functions, so every rule is a unit test.

use bytes::Bytes;
use serde::Deserialize;
use url::Url;

use super::{get_json_request, json_object, EndpointOverrides};

/// The endpoints and issuer portcullis works with, after discovery and overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// The issuer string that id_tokens must carry exactly in `iss`.
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    pub userinfo_endpoint: Option<Url>,
    pub end_session_endpoint: Option<Url>,
    /// RFC 7662 token introspection (RFC 8414 names it in the metadata).
    pub introspection_endpoint: Option<Url>,
}

/// Why the provider metadata could not be established.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("discovery document: {0}")]
    BadDocument(String),
    /// OpenID Connect Discovery 4.3: the document's issuer must be the issuer we asked.
    #[error(
        "discovery document names issuer {found:?}, but the configured issuer is {expected:?}"
    )]
    IssuerMismatch { expected: String, found: String },
    #[error("{field}: {reason}")]
    BadUrl { field: &'static str, reason: String },
    #[error("no {0} in the discovery document or the configuration")]
    MissingEndpoint(&'static str),
    #[error("discovery endpoint answered HTTP {0}")]
    Status(u16),
}

/// The discovery URL: the issuer with `/.well-known/openid-configuration` appended to its path
/// (Discovery 4), keeping any path the issuer has and never doubling the slash.
pub fn discovery_url(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = issuer.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{path}/.well-known/openid-configuration"));
    url
}

/// True when `found` is the configured issuer. The comparison is exact, except that `url::Url`
/// always serialises an empty path as `/`: for an issuer with no path, `https://idp` and
/// `https://idp/` are the same configured value, so both spellings are accepted.
pub fn issuer_matches(configured: &Url, found: &str) -> bool {
    let configured_str = configured.as_str();
    if found == configured_str {
        return true;
    }
    configured.path() == "/"
        && configured.query().is_none()
        && configured.fragment().is_none()
        && configured_str.strip_suffix('/') == Some(found)
}

/// The issuer string to expect when discovery is skipped: the configured issuer, without the
/// trailing slash `url::Url` adds to an empty path (most providers spell issuers without it).
pub fn configured_issuer_string(configured: &Url) -> String {
    let s = configured.as_str();
    if configured.path() == "/" && configured.query().is_none() && configured.fragment().is_none() {
        s.trim_end_matches('/').to_owned()
    } else {
        s.to_owned()
    }
}

/// True when the hand-set endpoints make discovery unnecessary.
pub fn discovery_needed(overrides: &EndpointOverrides) -> bool {
    overrides.authorization_endpoint.is_none()
        || overrides.token_endpoint.is_none()
        || overrides.jwks_uri.is_none()
}

/// The GET request for the discovery document.
pub fn discovery_request(issuer: &Url) -> Result<http::Request<Bytes>, MetadataError> {
    get_json_request(&discovery_url(issuer)).map_err(MetadataError::BadDocument)
}

/// The fields of the discovery document that portcullis uses; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct RawDocument {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    userinfo_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
    introspection_endpoint: Option<String>,
}

/// The discovered endpoints, before overrides are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryDocument {
    pub issuer: String,
    pub authorization_endpoint: Option<Url>,
    pub token_endpoint: Option<Url>,
    pub jwks_uri: Option<Url>,
    pub userinfo_endpoint: Option<Url>,
    pub end_session_endpoint: Option<Url>,
    pub introspection_endpoint: Option<Url>,
}

/// Parses and checks a discovery response against the configured issuer.
pub fn parse_discovery(
    response: &http::Response<Bytes>,
    configured_issuer: &Url,
) -> Result<DiscoveryDocument, MetadataError> {
    if !response.status().is_success() {
        return Err(MetadataError::Status(response.status().as_u16()));
    }
    let map = json_object(response.body(), "discovery").map_err(MetadataError::BadDocument)?;
    let raw: RawDocument = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| MetadataError::BadDocument(e.to_string()))?;
    // Discovery 4.3: the issuer value returned MUST be identical to the issuer URL that was used
    // as the prefix to /.well-known/openid-configuration. This stops a provider (or anyone who can
    // answer on its behalf) from passing off another issuer's tokens (IdP mix-up).
    if !issuer_matches(configured_issuer, &raw.issuer) {
        return Err(MetadataError::IssuerMismatch {
            expected: configured_issuer.to_string(),
            found: raw.issuer,
        });
    }
    let opt = |field: &'static str, v: Option<String>| -> Result<Option<Url>, MetadataError> {
        v.map(|s| parse_endpoint(field, &s)).transpose()
    };
    Ok(DiscoveryDocument {
        authorization_endpoint: opt("authorization_endpoint", raw.authorization_endpoint)?,
        token_endpoint: opt("token_endpoint", raw.token_endpoint)?,
        jwks_uri: opt("jwks_uri", raw.jwks_uri)?,
        userinfo_endpoint: opt("userinfo_endpoint", raw.userinfo_endpoint)?,
        end_session_endpoint: opt("end_session_endpoint", raw.end_session_endpoint)?,
        introspection_endpoint: opt("introspection_endpoint", raw.introspection_endpoint)?,
        issuer: raw.issuer,
    })
}

/// Parses one endpoint URL and accepts only http and https: a `javascript:` or `file:` URL in a
/// document must never reach a redirect or the HTTP client.
pub fn parse_endpoint(field: &'static str, value: &str) -> Result<Url, MetadataError> {
    let url = Url::parse(value).map_err(|e| MetadataError::BadUrl {
        field,
        reason: format!("not a URL: {e}"),
    })?;
    check_endpoint(field, &url)?;
    Ok(url)
}

/// Accepts only absolute http(s) URLs with a host and no fragment (RFC 6749 3.1, 3.2).
pub fn check_endpoint(field: &'static str, url: &Url) -> Result<(), MetadataError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(MetadataError::BadUrl {
            field,
            reason: format!("scheme {:?} is not http or https", url.scheme()),
        });
    }
    if url.host().is_none() {
        return Err(MetadataError::BadUrl {
            field,
            reason: "no host".into(),
        });
    }
    if url.fragment().is_some() {
        return Err(MetadataError::BadUrl {
            field,
            reason: "has a fragment".into(),
        });
    }
    Ok(())
}

/// Merges discovered endpoints with hand-set ones (hand-set wins) into the final metadata.
pub fn resolve(
    configured_issuer: &Url,
    overrides: &EndpointOverrides,
    discovered: Option<DiscoveryDocument>,
) -> Result<ProviderMetadata, MetadataError> {
    let doc = discovered.unwrap_or_default();
    let pick = |field: &'static str, hand: &Option<Url>, found: Option<Url>| {
        let chosen = hand.clone().or(found);
        if let Some(url) = &chosen {
            check_endpoint(field, url)?;
        }
        Ok::<_, MetadataError>(chosen)
    };
    let required = |field: &'static str, hand: &Option<Url>, found: Option<Url>| {
        pick(field, hand, found)?.ok_or(MetadataError::MissingEndpoint(field))
    };
    let issuer = if doc.issuer.is_empty() {
        configured_issuer_string(configured_issuer)
    } else {
        doc.issuer
    };
    Ok(ProviderMetadata {
        issuer,
        authorization_endpoint: required(
            "authorization_endpoint",
            &overrides.authorization_endpoint,
            doc.authorization_endpoint,
        )?,
        token_endpoint: required(
            "token_endpoint",
            &overrides.token_endpoint,
            doc.token_endpoint,
        )?,
        jwks_uri: required("jwks_uri", &overrides.jwks_uri, doc.jwks_uri)?,
        userinfo_endpoint: pick(
            "userinfo_endpoint",
            &overrides.userinfo_endpoint,
            doc.userinfo_endpoint,
        )?,
        end_session_endpoint: pick(
            "end_session_endpoint",
            &overrides.end_session_endpoint,
            doc.end_session_endpoint,
        )?,
        introspection_endpoint: pick(
            "introspection_endpoint",
            &overrides.introspection_endpoint,
            doc.introspection_endpoint,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn response(status: u16, body: &str) -> http::Response<Bytes> {
        http::Response::builder()
            .status(status)
            .body(Bytes::from(body.to_owned()))
            .unwrap()
    }

    fn doc(issuer: &str) -> String {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": "https://idp.example.com/auth",
            "token_endpoint": "https://idp.example.com/token",
            "jwks_uri": "https://idp.example.com/jwks",
            "userinfo_endpoint": "https://idp.example.com/userinfo",
            "some_future_field": {"nested": [1, 2, 3]},
            "response_types_supported": ["code"]
        })
        .to_string()
    }

    #[test]
    fn discovery_url_keeps_issuer_path_without_double_slash() {
        assert_eq!(
            discovery_url(&url("https://idp.example.com")).as_str(),
            "https://idp.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url(&url("https://idp.example.com/realms/main")).as_str(),
            "https://idp.example.com/realms/main/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url(&url("https://idp.example.com/realms/main/")).as_str(),
            "https://idp.example.com/realms/main/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url(&url("https://api.asgardeo.io/t/org/oauth2/token")).as_str(),
            "https://api.asgardeo.io/t/org/oauth2/token/.well-known/openid-configuration"
        );
        let req = discovery_request(&url("https://idp.example.com/t/org")).unwrap();
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(
            req.uri().to_string(),
            "https://idp.example.com/t/org/.well-known/openid-configuration"
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let issuer = url("https://idp.example.com/realms/main");
        let ok = parse_discovery(
            &response(200, &doc("https://idp.example.com/realms/main")),
            &issuer,
        )
        .unwrap();
        assert_eq!(ok.issuer, "https://idp.example.com/realms/main");
        assert_eq!(
            ok.token_endpoint,
            Some(url("https://idp.example.com/token"))
        );
        for wrong in [
            "https://idp.example.com/realms/other",
            "https://idp.example.com/realms/main/",
            "https://evil.example.com/realms/main",
            "http://idp.example.com/realms/main",
        ] {
            let err = parse_discovery(&response(200, &doc(wrong)), &issuer).unwrap_err();
            assert!(
                matches!(err, MetadataError::IssuerMismatch { .. }),
                "{wrong}"
            );
            assert!(err.to_string().contains("configured issuer"));
        }
    }

    #[test]
    fn root_issuer_accepts_either_spelling_of_the_empty_path() {
        let issuer = url("https://accounts.example.com");
        for found in [
            "https://accounts.example.com",
            "https://accounts.example.com/",
        ] {
            assert!(
                parse_discovery(&response(200, &doc(found)), &issuer).is_ok(),
                "{found}"
            );
        }
        assert!(!issuer_matches(&issuer, "https://accounts.example.com//"));
        assert_eq!(
            configured_issuer_string(&issuer),
            "https://accounts.example.com"
        );
        assert_eq!(
            configured_issuer_string(&url("https://idp.example.com/t/org/")),
            "https://idp.example.com/t/org/"
        );
    }

    #[test]
    fn bad_documents_are_clear_errors() {
        let issuer = url("https://idp.example.com");
        assert_eq!(
            parse_discovery(&response(404, "nope"), &issuer),
            Err(MetadataError::Status(404))
        );
        assert!(matches!(
            parse_discovery(&response(200, "<html>"), &issuer),
            Err(MetadataError::BadDocument(_))
        ));
        assert!(matches!(
            parse_discovery(&response(200, "{}"), &issuer),
            Err(MetadataError::BadDocument(_))
        ));
        let js = serde_json::json!({
            "issuer": "https://idp.example.com",
            "authorization_endpoint": "javascript:alert(1)",
        })
        .to_string();
        let err = parse_discovery(&response(200, &js), &issuer).unwrap_err();
        assert!(matches!(
            err,
            MetadataError::BadUrl {
                field: "authorization_endpoint",
                ..
            }
        ));
    }

    #[test]
    fn overrides_win_and_missing_endpoints_are_named() {
        let issuer = url("https://idp.example.com/realms/main");
        let discovered = parse_discovery(
            &response(200, &doc("https://idp.example.com/realms/main")),
            &issuer,
        )
        .unwrap();
        let overrides = EndpointOverrides {
            token_endpoint: Some(url("https://other.example.com/token")),
            end_session_endpoint: Some(url("https://idp.example.com/logout")),
            ..Default::default()
        };
        assert!(discovery_needed(&overrides));
        let meta = resolve(&issuer, &overrides, Some(discovered)).unwrap();
        assert_eq!(meta.token_endpoint, url("https://other.example.com/token"));
        assert_eq!(
            meta.authorization_endpoint,
            url("https://idp.example.com/auth")
        );
        assert_eq!(
            meta.end_session_endpoint,
            Some(url("https://idp.example.com/logout"))
        );
        assert_eq!(meta.issuer, "https://idp.example.com/realms/main");

        assert_eq!(
            resolve(&issuer, &overrides, None),
            Err(MetadataError::MissingEndpoint("authorization_endpoint"))
        );
    }

    #[test]
    fn all_three_by_hand_skips_discovery() {
        let issuer = url("https://idp.example.com");
        let overrides = EndpointOverrides {
            authorization_endpoint: Some(url("https://idp.example.com/a")),
            token_endpoint: Some(url("https://idp.example.com/t")),
            jwks_uri: Some(url("https://idp.example.com/k")),
            ..Default::default()
        };
        assert!(!discovery_needed(&overrides));
        let meta = resolve(&issuer, &overrides, None).unwrap();
        assert_eq!(meta.issuer, "https://idp.example.com");
        assert_eq!(meta.userinfo_endpoint, None);
        let bad = EndpointOverrides {
            jwks_uri: Some(url("file:///etc/passwd")),
            ..overrides
        };
        assert!(matches!(
            resolve(&issuer, &bad, None),
            Err(MetadataError::BadUrl {
                field: "jwks_uri",
                ..
            })
        ));
    }
}
