//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): the provider tells a client that a
//! login ended by POSTing a signed logout token to the back-channel logout URI the client registered.
//!
//! The token carries `iss`, `aud` (the client), `iat`, `exp`, a fresh `jti`, the `events` member of
//! section 2.4, and `sid` and/or `sub`; it never carries a `nonce` (section 2.4). It is signed with
//! the provider's current key, like an id_token, with `typ: logout+jwt` (section 2.4).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Header;
use serde_json::{json, Value};

use super::keys::random_token;
use super::state::Shared;

/// The `events` member that makes a JWT a logout token (section 2.4).
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Whose logins a logout token ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutSubject {
    /// One login session: the `sid` of its id_tokens.
    Sid(String),
    /// Every login of a user: the `sub`.
    Sub(String),
    /// One login session, naming its user too.
    SidAndSub(String, String),
}

/// The claims of a proper logout token for `client_id`.
pub(crate) fn claims(
    shared: &Shared,
    client_id: &str,
    subject: &LogoutSubject,
) -> io::Result<Value> {
    let now = shared.clock.now();
    let jti = random_token(16).map_err(|_| io::Error::other("random generator failed"))?;
    let mut claims = json!({
        "iss": shared.urls.issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + 120,
        "jti": jti,
        "events": { LOGOUT_EVENT: {} },
    });
    match subject {
        LogoutSubject::Sid(sid) => claims["sid"] = sid.clone().into(),
        LogoutSubject::Sub(sub) => claims["sub"] = sub.clone().into(),
        LogoutSubject::SidAndSub(sid, sub) => {
            claims["sid"] = sid.clone().into();
            claims["sub"] = sub.clone().into();
        }
    }
    Ok(claims)
}

/// `claims` signed with the provider's current key, as a logout token.
pub(crate) fn sign(shared: &Shared, claims: &Value) -> io::Result<String> {
    let keys = shared.keys.read().unwrap_or_else(|e| e.into_inner());
    let mut header = Header::new(keys.current.alg());
    header.kid = Some(keys.current.kid.clone());
    header.typ = Some("logout+jwt".into());
    jsonwebtoken::encode(&header, claims, &keys.current.encoding)
        .map_err(|e| io::Error::other(format!("signing the logout token: {e}")))
}

/// POST `logout_token` to `uri` (an `http://` URL) as a form; the status the client answered.
pub(crate) async fn post(uri: &str, logout_token: &str) -> io::Result<u16> {
    let url = url::Url::parse(uri).map_err(|e| io::Error::other(format!("{uri}: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| io::Error::other("no host"))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(connection);
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", logout_token)
        .finish();
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let request = http::Request::post(path)
        .header(HOST, authority)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .map_err(io::Error::other)?;
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
        .map_err(io::Error::other)?;
    Ok(response.status().as_u16())
}
