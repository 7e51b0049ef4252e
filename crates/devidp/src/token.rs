//! The token endpoint: client authentication, the authorization_code and refresh_token grants,
//! and id_token minting (with the `misbehavior` feature, also its one deliberate defect).
//!
//! Order of checks: request syntax (400 invalid_request), client authentication (401
//! invalid_client, RFC 6749 section 5.2), grant (400 invalid_grant), then the response. A
//! client must use exactly its registered method: a confidential client that leaves out its
//! credentials is refused, never downgraded to a public one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::form::{self, Params};
use super::handlers::{json_response, oauth_error, token_user_claims, with_challenge, Resp};
use super::keys::{half_hash, random_token, s256};
use super::state::{lock, ClientMethod, RegisteredClient, Shared, TokenGrant};
use super::state::{ID_TOKEN_TTL, REFRESH_TOKEN_TTL};
use super::Profile;

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const BASIC_CHALLENGE: &str = "Basic realm=\"dev-provider\"";

/// A refusal of the token endpoint.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// Add `WWW-Authenticate: Basic` (RFC 6749 section 5.2, invalid_client).
    basic_challenge: bool,
}

fn invalid_request(description: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        description: description.into(),
        basic_challenge: false,
    }
}

fn invalid_grant(description: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_grant",
        description: description.into(),
        basic_challenge: false,
    }
}

fn invalid_client(basic_challenge: bool, description: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        error: "invalid_client",
        description: description.into(),
        basic_challenge,
    }
}

pub(crate) fn server_error() -> Refusal {
    Refusal {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        error: "server_error",
        description: "the development provider failed".into(),
        basic_challenge: false,
    }
}

/// What a successful grant yields, before tokens are minted.
struct Issuance {
    grant: TokenGrant,
    nonce: Option<String>,
    /// The authorization code, for Asgardeo's `c_hash`.
    code: Option<String>,
}

/// Handles a token request whose Content-Type was already checked.
pub(crate) fn token(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Resp {
    match run(shared, headers, body) {
        Ok(response) => response,
        Err(r) => {
            tracing::debug!(error = r.error, description = %r.description, "development provider: token request refused");
            let response = oauth_error(r.status, r.error, &r.description);
            if r.basic_challenge {
                with_challenge(response, BASIC_CHALLENGE)
            } else {
                response
            }
        }
    }
}

fn run(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Resp, Refusal> {
    let text = std::str::from_utf8(body).map_err(|_| invalid_request("body is not UTF-8"))?;
    let params = form::parse(text).map_err(|e| invalid_request(e.to_string()))?;
    let client = authenticate(shared, headers, &params)?;
    let now = shared.clock.now();
    // A failing endpoint fails before it spends anything (a code, a refresh token).
    #[cfg(feature = "misbehavior")]
    if let Some(answer) = super::misbehavior::token_endpoint(&shared.misbehavior()) {
        return answer;
    }
    let issuance = match params.non_empty("grant_type") {
        None => return Err(invalid_request("grant_type is required")),
        Some("authorization_code") => exchange_code(shared, client, &params, now)?,
        Some("refresh_token") if shared.issue_refresh_token => {
            refresh(shared, client, &params, now)?
        }
        Some(_) => {
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: "grant_type not supported".into(),
                basic_challenge: false,
            })
        }
    };
    issue(shared, issuance, now)
}

fn authenticate<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
    params: &Params,
) -> Result<&'a RegisteredClient, Refusal> {
    let header = headers.get(AUTHORIZATION);
    let secret_sent = params.get("client_secret").is_some();
    let assertion_sent =
        params.get("client_assertion").is_some() || params.get("client_assertion_type").is_some();
    if [header.is_some(), secret_sent, assertion_sent]
        .iter()
        .filter(|used| **used)
        .count()
        > 1
    {
        return Err(invalid_request(
            "more than one client authentication method (RFC 6749 section 2.3)",
        ));
    }
    let form_id = params.non_empty("client_id");
    let (method, client_id, secret): (&str, String, Option<String>) = if let Some(value) = header {
        let credentials = value.to_str().ok().and_then(form::basic_credentials);
        let Some(credentials) = credentials else {
            return Err(invalid_client(
                true,
                "only Basic client authentication is accepted in Authorization",
            ));
        };
        let (id, secret) = form::decode_basic(credentials)
            .map_err(|e| invalid_client(true, format!("Basic credentials: {e}")))?;
        ("client_secret_basic", id, Some(secret))
    } else if secret_sent {
        let id = form_id
            .ok_or_else(|| invalid_client(false, "client_id is required with client_secret"))?;
        (
            "client_secret_post",
            id.to_owned(),
            params.get("client_secret").map(str::to_owned),
        )
    } else if assertion_sent {
        // RFC 7523 section 3: client_id is optional; the assertion's iss names the client.
        let iss = params
            .non_empty("client_assertion")
            .and_then(jwt_payload)
            .and_then(|p| p["iss"].as_str().map(str::to_owned));
        let id = form_id.map(str::to_owned).or(iss);
        (
            "private_key_jwt",
            id.ok_or_else(|| invalid_client(false, "client_assertion names no client"))?,
            None,
        )
    } else {
        let id =
            form_id.ok_or_else(|| invalid_client(false, "client authentication is required"))?;
        ("none", id.to_owned(), None)
    };
    let used_basic = method == "client_secret_basic";
    if form_id.is_some_and(|f| f != client_id) {
        return Err(invalid_client(
            used_basic,
            "client_id does not match the authenticated client",
        ));
    }
    let client = shared
        .client(&client_id)
        .ok_or_else(|| invalid_client(used_basic, "unknown client"))?;
    let registered = client.method.name();
    if registered != method {
        let challenge = used_basic || matches!(client.method, ClientMethod::Basic(_));
        return Err(invalid_client(
            challenge,
            format!("client must authenticate with {registered}, not {method}"),
        ));
    }
    match &client.method {
        ClientMethod::Basic(expected) | ClientMethod::Post(expected) => {
            let given = secret.unwrap_or_default();
            if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
                return Err(invalid_client(used_basic, "wrong client secret"));
            }
        }
        ClientMethod::Jwt { key, algorithms } => {
            verify_assertion(shared, client, key, algorithms, params)?
        }
        ClientMethod::None => {}
    }
    Ok(client)
}

/// RFC 7523 section 3 and OpenID Connect Core section 9 (private_key_jwt).
fn verify_assertion(
    shared: &Shared,
    client: &RegisteredClient,
    key: &DecodingKey,
    algorithms: &[Algorithm],
    params: &Params,
) -> Result<(), Refusal> {
    #[derive(serde::Deserialize)]
    struct Claims {
        jti: String,
        exp: u64,
    }
    if params.get("client_assertion_type") != Some(JWT_BEARER) {
        return Err(invalid_client(
            false,
            format!("client_assertion_type must be {JWT_BEARER}"),
        ));
    }
    let assertion = params
        .non_empty("client_assertion")
        .ok_or_else(|| invalid_client(false, "client_assertion is required"))?;
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| invalid_client(false, format!("client_assertion: {e}")))?;
    if !algorithms.contains(&header.alg) {
        return Err(invalid_client(
            false,
            "client_assertion alg does not fit the registered key",
        ));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&client.client_id]);
    validation.sub = Some(client.client_id.clone());
    // The token endpoint, the issuer, or the introspection endpoint when that is where it is sent.
    validation.set_audience(&[
        &shared.urls.token_endpoint,
        &shared.urls.issuer,
        &shared.urls.introspection_endpoint,
    ]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.validate_nbf = true;
    let data = jsonwebtoken::decode::<Claims>(assertion, key, &validation)
        .map_err(|e| invalid_client(false, format!("client_assertion: {e}")))?;
    let now = shared.clock.now();
    let key = format!("{} {}", client.client_id, data.claims.jti);
    let mut used = lock(&shared.used_jtis);
    if used.contains(now, &key) {
        return Err(invalid_client(
            false,
            "client_assertion jti was already used",
        ));
    }
    // Remembered until the assertion could no longer pass anyway (exp plus leeway).
    used.insert(
        now,
        key,
        data.claims.exp.max(now) + validation.leeway + 1,
        (),
    );
    Ok(())
}

fn exchange_code(
    shared: &Shared,
    client: &RegisteredClient,
    params: &Params,
    now: u64,
) -> Result<Issuance, Refusal> {
    let code = params
        .non_empty("code")
        .ok_or_else(|| invalid_request("code is required"))?;
    let redirect_uri = params
        .non_empty("redirect_uri")
        .ok_or_else(|| invalid_request("redirect_uri is required"))?;
    let grant = {
        let mut codes = lock(&shared.codes);
        let grant = codes
            .get_mut(now, code)
            .ok_or_else(|| invalid_grant("unknown code"))?;
        if grant.login.client_id != client.client_id {
            return Err(invalid_grant("code was issued to another client"));
        }
        // Single use (RFC 6749 section 4.1.2): burnt by the first attempt, whatever its outcome.
        if grant.used {
            return Err(invalid_grant("code was already used"));
        }
        grant.used = true;
        if grant.expires_at <= now {
            return Err(invalid_grant("code expired"));
        }
        grant.clone()
    };
    // RFC 6749 section 4.1.3: identical to the redirect_uri of the authorization request.
    if grant.login.redirect_uri != redirect_uri {
        return Err(invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    // RFC 7636 section 4.6.
    match (
        &grant.login.code_challenge,
        params.non_empty("code_verifier"),
    ) {
        (Some(challenge), Some(verifier)) => {
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !well_formed {
                return Err(invalid_grant("code_verifier is malformed"));
            }
            if !bool::from(s256(verifier).as_bytes().ct_eq(challenge.as_bytes())) {
                return Err(invalid_grant("PKCE verification failed"));
            }
        }
        (Some(_), None) => return Err(invalid_grant("code_verifier is required")),
        // A verifier without a challenge is a downgrade attempt (OAuth 2.1 section 4.1.3).
        (None, Some(_)) => {
            return Err(invalid_grant(
                "code_verifier sent but no code_challenge was",
            ))
        }
        (None, None) => {}
    }
    Ok(Issuance {
        grant: TokenGrant {
            client_id: client.client_id.clone(),
            user: grant.user,
            scope: grant.login.scope.clone(),
            auth_time: grant.auth_time,
            sid: grant.sid.clone(),
        },
        nonce: grant.login.nonce.clone(),
        code: Some(code.to_owned()),
    })
}

fn refresh(
    shared: &Shared,
    client: &RegisteredClient,
    params: &Params,
    now: u64,
) -> Result<Issuance, Refusal> {
    let token = params
        .non_empty("refresh_token")
        .ok_or_else(|| invalid_request("refresh_token is required"))?;
    let mut tokens = lock(&shared.refresh_tokens);
    let mut spent = lock(&shared.spent_refresh_tokens);
    if let Some(family) = spent.get_mut(now, token).cloned() {
        // A rotated-away token presented again: whoever holds it, the grant is compromised.
        tokens.retain(|grant| grant.sid != family);
        return Err(invalid_grant(
            "refresh_token reused after rotation; every token of this login is revoked",
        ));
    }
    let owner = tokens.get_mut(now, token).map(|g| g.client_id.clone());
    if owner.as_deref() != Some(client.client_id.as_str()) {
        return Err(invalid_grant("unknown refresh_token"));
    }
    // Rotation: the old refresh token is spent, and remembered as such.
    let grant = tokens
        .remove(now, token)
        .ok_or_else(|| invalid_grant("unknown refresh_token"))?;
    spent.insert(
        now,
        token.to_owned(),
        now + REFRESH_TOKEN_TTL,
        grant.sid.clone(),
    );
    shared
        .counters
        .refresh
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // OpenID Connect Core 12.2: no nonce in an id_token from a refresh.
    Ok(Issuance {
        grant,
        nonce: None,
        code: None,
    })
}

fn issue(shared: &Shared, issuance: Issuance, now: u64) -> Result<Resp, Refusal> {
    let access_token = match &shared.access_token_audience {
        Some(audience) => jwt_access_token(shared, &issuance.grant, audience, now)?,
        None => random_token(32).map_err(|_| server_error())?,
    };
    let id_token = id_token(shared, &issuance, &access_token, now)?;
    shared.note_issued(&access_token);
    shared.note_issued(&id_token);
    let access_ttl = shared.access_token_ttl();
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": access_ttl,
        "scope": issuance.grant.scope,
        "id_token": id_token,
    });
    if shared.issue_refresh_token {
        let refresh_token = random_token(32).map_err(|_| server_error())?;
        shared.note_issued(&refresh_token);
        lock(&shared.refresh_tokens).insert(
            now,
            refresh_token.clone(),
            now + REFRESH_TOKEN_TTL,
            issuance.grant.clone(),
        );
        body["refresh_token"] = Value::String(refresh_token);
    }
    lock(&shared.access_tokens).insert(now, access_token, now + access_ttl, issuance.grant);
    let mut response = json_response(StatusCode::OK, &body);
    response
        .headers_mut()
        .insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn id_token(
    shared: &Shared,
    issuance: &Issuance,
    access_token: &str,
    now: u64,
) -> Result<String, Refusal> {
    let grant = &issuance.grant;
    let client_id = grant.client_id.as_str();
    let mut claims = token_user_claims(shared, grant.user);
    claims.insert("iss".into(), shared.urls.issuer.clone().into());
    claims.insert("aud".into(), client_id.into());
    claims.insert("azp".into(), client_id.into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + ID_TOKEN_TTL).into());
    claims.insert("auth_time".into(), grant.auth_time.into());
    if let Some(nonce) = &issuance.nonce {
        claims.insert("nonce".into(), nonce.clone().into());
    }
    claims.insert("at_hash".into(), half_hash(access_token).into());
    // OpenID Connect Back-Channel Logout 1.0 section 2.4: the session of this login.
    claims.insert("sid".into(), grant.sid.clone().into());
    if shared.profile == Profile::Asgardeo {
        if let Some(code) = &issuance.code {
            claims.insert("c_hash".into(), half_hash(code).into());
        }
        claims.insert("amr".into(), json!(["BasicAuthenticator"]));
        // Asgardeo's `isk` is an opaque key of the session; a hash of the sid looks the part.
        claims.insert("isk".into(), s256(&format!("isk {}", grant.sid)).into());
    }
    #[cfg(feature = "misbehavior")]
    let misbehavior = shared.misbehavior().of_id_token();
    #[cfg(feature = "misbehavior")]
    super::misbehavior::alter_claims(
        &misbehavior,
        &mut claims,
        &shared.urls.issuer,
        client_id,
        now,
    );
    let keys = shared.keys.read().unwrap_or_else(|e| e.into_inner());
    let mut header = Header::new(keys.current.alg());
    header.kid = Some(keys.current.kid.clone());
    if shared.profile == Profile::Asgardeo {
        header.x5t = Some(keys.current.x5t.clone());
    }
    let claims = Value::Object(claims);
    #[cfg(feature = "misbehavior")]
    if let Some(signed) = super::misbehavior::sign(&misbehavior, &header, &claims, &keys) {
        return signed;
    }
    let signed = jsonwebtoken::encode(&header, &claims, &keys.current.encoding);
    signed.map_err(|e| {
        tracing::error!(error = %e, "development provider: signing the id_token failed");
        server_error()
    })
}

/// A JWT access token in the shape of RFC 9068: `typ: at+jwt`, the API's `aud`, the client, the
/// scope, the times and a `jti`, with the user's claims (as the id_token carries them).
fn jwt_access_token(
    shared: &Shared,
    grant: &TokenGrant,
    audience: &str,
    now: u64,
) -> Result<String, Refusal> {
    let mut claims = token_user_claims(shared, grant.user);
    claims.insert("iss".into(), shared.urls.issuer.clone().into());
    claims.insert("aud".into(), audience.into());
    claims.insert("client_id".into(), grant.client_id.clone().into());
    claims.insert("scope".into(), grant.scope.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + shared.access_token_ttl()).into());
    claims.insert(
        "jti".into(),
        random_token(16).map_err(|_| server_error())?.into(),
    );
    #[cfg(feature = "misbehavior")]
    let misbehavior = shared.misbehavior().of_access_token();
    #[cfg(feature = "misbehavior")]
    super::misbehavior::alter_claims(
        &misbehavior,
        &mut claims,
        &shared.urls.issuer,
        audience,
        now,
    );
    let keys = shared.keys.read().unwrap_or_else(|e| e.into_inner());
    let mut header = Header::new(keys.current.alg());
    header.typ = Some("at+jwt".into());
    header.kid = Some(keys.current.kid.clone());
    let claims = Value::Object(claims);
    #[cfg(feature = "misbehavior")]
    if let Some(signed) = super::misbehavior::sign(&misbehavior, &header, &claims, &keys) {
        return signed;
    }
    jsonwebtoken::encode(&header, &claims, &keys.current.encoding).map_err(|e| {
        tracing::error!(error = %e, "development provider: signing the access token failed");
        server_error()
    })
}

/// The introspection endpoint (RFC 7662): any registered client, authenticated as at the token
/// endpoint, may ask about an access token; a token it does not know (or no longer) is inactive.
pub(crate) fn introspect(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Resp {
    let answer = (|| {
        let text = std::str::from_utf8(body).map_err(|_| invalid_request("body is not UTF-8"))?;
        let params = form::parse(text).map_err(|e| invalid_request(e.to_string()))?;
        authenticate(shared, headers, &params)?;
        let token = params
            .non_empty("token")
            .ok_or_else(|| invalid_request("token is required"))?;
        let now = shared.clock.now();
        let tokens = lock(&shared.access_tokens);
        let Some((exp, grant)) = tokens.get_with_expiry(now, token) else {
            return Ok(json!({ "active": false }));
        };
        let iat = exp.saturating_sub(shared.access_token_ttl());
        let aud = shared
            .access_token_audience
            .clone()
            .unwrap_or_else(|| grant.client_id.clone());
        let mut answer = serde_json::Map::new();
        if shared.profile == Profile::Standard {
            answer.extend(token_user_claims(shared, grant.user));
        }
        for (k, v) in [
            ("active", json!(true)),
            ("iss", json!(shared.urls.issuer)),
            ("sub", json!(grant.user.sub)),
            ("aud", json!(aud)),
            ("client_id", json!(grant.client_id)),
            ("username", json!(grant.user.username)),
            ("scope", json!(grant.scope)),
            ("token_type", json!("Bearer")),
            ("iat", json!(iat)),
            ("nbf", json!(iat)),
            ("exp", json!(exp)),
        ] {
            answer.insert(k.into(), v);
        }
        Ok::<_, Refusal>(Value::Object(answer))
    })();
    match answer {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(r) => {
            let response = oauth_error(r.status, r.error, &r.description);
            if r.basic_challenge {
                with_challenge(response, BASIC_CHALLENGE)
            } else {
                response
            }
        }
    }
}

/// The payload of a compact JWS, not verified: only to find which client or issuer it names.
pub(crate) fn jwt_payload(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}
