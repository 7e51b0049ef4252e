//! The gateway's cookies: a [`Session`] or a [`LoginState`] to `Set-Cookie` values and back.
//!
//! Two kinds, one file each, sharing only the attributes every cookie of ours carries (this file):
//! - `session`: the session cookie, sealed once and split over `NAME_0`, `NAME_1`, ... when it does
//!   not fit one cookie (browsers keep about 4096 bytes per cookie, RFC 6265 section 6.1);
//! - `login`: one short-lived cookie per login attempt, `NAME_login_<id>`, so parallel tabs each
//!   complete.
//!
//! [`SessionCookies`] is the face of both: built once from the `[session]` settings and secrets, it
//! derives a key ring per kind, so a value sealed as one kind never opens as the other. The
//! cryptography lives in `seal`, header parsing in `header`. Every `Set-Cookie` is built with the
//! `cookie` crate from validated parts, never spliced by hand.

mod login;
mod session;
#[cfg(test)]
mod tests;

use std::fmt;

use cookie::time::{Duration as CookieDuration, OffsetDateTime};
use cookie::{Cookie, CookieBuilder, SameSite};
use http::{HeaderMap, HeaderValue};

use super::header::{self, pairs};
use super::payload;
use super::seal::{self, KeyRing, MacRing, Purpose};
use super::{CookieSettings, LoginState, Session, SessionError, MAX_NAME_LEN};

pub use login::{LOGIN_TTL, MAX_LOGIN_STATES};
pub use session::{CHUNK_LEN, MAX_CHUNKS};

use login::LoginCookies;
use session::SessionCookie;

const MIN_SECRET_LEN: usize = 32;
/// Most copies of one cookie name tried: a browser may hold the same name for several Domain or
/// Path values and sends all of them (RFC 6265 section 5.4), a stale one possibly first.
const MAX_DUPLICATES: usize = 4;
/// Most deletions of stale cookies in one response.
const MAX_DELETIONS: usize = 64;

/// Encodes sessions and login states into cookies and reads them back. Build once from the
/// configuration: the keys are derived in [`SessionCookies::new`].
pub struct SessionCookies {
    attributes: Attributes,
    session: SessionCookie,
    login: LoginCookies,
    /// For sessions kept in a shared store: their sealing keys and the keys that name them there.
    stored: KeyRing,
    names: MacRing,
}

impl fmt::Debug for SessionCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCookies")
            .field("settings", &self.attributes.settings)
            .field("keys", &"[redacted]")
            .finish()
    }
}

impl SessionCookies {
    /// `current` is the session secret; `previous` are retired secrets still accepted for reading,
    /// so a secret can be rotated without signing everyone out. Fails on a cookie name or domain
    /// that could not appear in a `Set-Cookie` header, and on a secret shorter than 32 bytes.
    pub fn new(
        settings: CookieSettings,
        current: &[u8],
        previous: &[Vec<u8>],
    ) -> Result<Self, SessionError> {
        validate(&settings)?;
        if current.len() < MIN_SECRET_LEN || previous.iter().any(|s| s.len() < MIN_SECRET_LEN) {
            return Err(SessionError::SecretTooShort);
        }
        let [session_keys, login_keys, stored] = KeyRing::derive(
            current,
            previous,
            [Purpose::Session, Purpose::LoginState, Purpose::Stored],
        )
        .map_err(|_| SessionError::KeyDerivation)?;
        let names = MacRing::derive(current, previous).map_err(|_| SessionError::KeyDerivation)?;
        Ok(Self {
            session: SessionCookie::new(&settings.name, session_keys),
            login: LoginCookies::new(&settings.name, login_keys),
            attributes: Attributes { settings },
            stored,
            names,
        })
    }

    /// The session cookie's values in the request, each candidate (a whole cookie, or the chunks in
    /// order) as it should be opened: what a store is given to find the session.
    pub fn candidates<'h>(&self, headers: &'h HeaderMap) -> Candidates<'h> {
        self.session.locate(headers)
    }

    /// Open one candidate: the session it seals, or `None` when tampered, sealed under an unknown key,
    /// malformed or expired (`now >= expires_at`).
    pub fn open(&self, parts: &[&[u8]], now: u64) -> Option<Session> {
        self.session.open(parts, now)
    }

    /// The session carried by the request's `Cookie` header(s); `None` when absent, tampered,
    /// truncated, sealed with an unknown key, missing a chunk, or expired (`now >= expires_at`).
    pub fn read(&self, headers: &HeaderMap, now: u64) -> Option<Session> {
        self.candidates(headers)
            .iter()
            .find_map(|parts| self.open(parts, now))
    }

    /// `Set-Cookie` values storing `session`: one cookie when it fits, numbered chunks otherwise,
    /// plus deletions of stale cookies of ours present in `request`. The cookies live until the
    /// session expires or for `max_age`, whichever comes first; an expired session is cleared.
    pub fn write(
        &self,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, SessionError> {
        if session.expires_at <= now {
            return Ok(self.clear(request));
        }
        self.session.write(&self.attributes, session, request, now)
    }

    /// `Set-Cookie` values deleting the session cookie and every chunk present in `request`.
    pub fn clear(&self, request: &HeaderMap) -> Vec<HeaderValue> {
        self.session.clear(&self.attributes, request)
    }

    /// Remove every cookie of ours (session, chunks, login states) from the `Cookie` header(s),
    /// leaving the others byte-for-byte and in order; the header goes when nothing is left.
    pub fn strip_own_cookies(&self, headers: &mut HeaderMap) {
        header::strip(headers, |name| self.is_own(name));
    }

    /// Whether a cookie name is one of ours: the session cookie, a chunk, or a login state.
    fn is_own(&self, name: &[u8]) -> bool {
        self.session.is_own(name) || self.login.is_own(name)
    }

    /// Seal a login state into a cookie of its own (Max-Age 10 minutes). When the request already
    /// carries [`MAX_LOGIN_STATES`] login cookies, the result also deletes the oldest (by the
    /// `created_at` inside; ones that do not open count as oldest), so at most that many live.
    pub fn start_login(
        &self,
        login: &LoginState,
        request: &HeaderMap,
    ) -> Result<Vec<HeaderValue>, SessionError> {
        self.login.start(&self.attributes, login, request)
    }

    /// Open the login cookie for the `state` query parameter of a callback. The state inside must
    /// equal the parameter (compared in constant time) and be younger than [`LOGIN_TTL`]. Returns
    /// it with a `Set-Cookie` deleting the cookie, so a state is used once.
    pub fn finish_login(
        &self,
        state_param: &str,
        request: &HeaderMap,
        now: u64,
    ) -> Option<(LoginState, HeaderValue)> {
        self.login
            .finish(&self.attributes, state_param, request, now)
    }

    /// The names a shared store keeps `parts` under (an id, a claim with its kind), one per secret,
    /// the current one first: keyed hashes, so no name is a usable cookie or a readable claim.
    pub fn store_names(&self, parts: &[&[u8]]) -> Vec<[u8; 32]> {
        self.names.tags(parts)
    }

    /// `session` sealed for a shared store, bound to the name it is kept under.
    pub fn seal_stored(&self, name: &[u8], session: &Session) -> Result<String, SessionError> {
        let mut plain = seal::plaintext_buffer(payload::size_hint(session));
        payload::encode(session, &mut plain)?;
        self.stored
            .seal(name, plain)
            .map_err(|_| SessionError::Seal)
    }

    /// A session a shared store kept under `name`; `None` when it does not open (another name,
    /// an unknown key, tampering) or has expired.
    pub fn open_stored(&self, name: &[u8], sealed: &[u8], now: u64) -> Option<Session> {
        let mut buf = Vec::with_capacity(sealed.len() / 4 * 3 + 3);
        let plain = self
            .stored
            .open(name, &mut buf, |raw| seal::decode_into(sealed, raw))?;
        payload::decode(plain, now)
    }

    /// `Set-Cookie` values carrying a session id (a shared store's cookie) until `expires_at`, plus
    /// deletions of any chunks of ours in `request`.
    pub fn write_id(
        &self,
        id: &str,
        expires_at: u64,
        request: &HeaderMap,
        now: u64,
    ) -> Vec<HeaderValue> {
        self.session
            .write_single(&self.attributes, id, expires_at, request, now)
    }

    /// `Set-Cookie` deleting the login cookie for `state_param` (for error paths).
    pub fn clear_login(&self, state_param: &str) -> HeaderValue {
        self.attributes
            .removal(&self.login.cookie_name(state_param))
    }
}

pub use session::Candidates;

/// The attributes every cookie of ours carries, from the `[session]` settings.
struct Attributes {
    settings: CookieSettings,
}

impl Attributes {
    /// The attributes every cookie of ours carries; a deletion must repeat Path and Domain to hit
    /// the same cookie (RFC 6265 section 5.3 step 11).
    fn builder<'c>(&'c self, name: &'c str, value: &'c str) -> CookieBuilder<'c> {
        let builder = Cookie::build((name, value))
            .http_only(true)
            .same_site(SameSite::Lax)
            .path("/")
            .secure(self.settings.secure);
        match &self.settings.domain {
            Some(domain) => builder.domain(domain.as_str()),
            None => builder,
        }
    }

    fn set_cookie(&self, name: &str, value: &str, max_age: CookieDuration) -> HeaderValue {
        header_value(self.builder(name, value).max_age(max_age).to_string())
    }

    /// Max-Age=0 for RFC 6265 user agents, plus an Expires in the past for older ones.
    fn removal(&self, name: &str) -> HeaderValue {
        let builder = self
            .builder(name, "")
            .max_age(CookieDuration::ZERO)
            .expires(OffsetDateTime::UNIX_EPOCH);
        header_value(builder.to_string())
    }

    /// With a cookie domain, deletions without it (a host-only cookie is a cookie of its own, RFC
    /// 6265 section 5.3 step 6) for the distinct names in `request` that `own` selects; nothing
    /// without a domain.
    fn push_host_only_deletions(
        &self,
        out: &mut Vec<HeaderValue>,
        request: &HeaderMap,
        own: impl Fn(&[u8]) -> bool,
    ) {
        if self.settings.domain.is_none() {
            return;
        }
        let mut done: Vec<&[u8]> = Vec::new();
        for (name, _) in pairs(request) {
            if done.len() == MAX_DELETIONS {
                break;
            }
            if own(name) && !done.contains(&name) {
                done.push(name);
                if let Ok(name) = std::str::from_utf8(name) {
                    let builder = Cookie::build((name, ""))
                        .http_only(true)
                        .same_site(SameSite::Lax)
                        .path("/")
                        .secure(self.settings.secure)
                        .max_age(CookieDuration::ZERO)
                        .expires(OffsetDateTime::UNIX_EPOCH);
                    out.push(header_value(builder.to_string()));
                }
            }
        }
    }

    /// Deletions for the distinct cookie names in `request` that `stale` selects.
    fn push_deletions(
        &self,
        out: &mut Vec<HeaderValue>,
        request: &HeaderMap,
        stale: impl Fn(&[u8]) -> bool,
    ) {
        let mut done: Vec<&[u8]> = Vec::new();
        for (name, _) in pairs(request) {
            if done.len() == MAX_DELETIONS {
                break;
            }
            if stale(name) && !done.contains(&name) {
                done.push(name);
                if let Ok(name) = std::str::from_utf8(name) {
                    out.push(self.removal(name));
                }
            }
        }
    }

    /// How long a cookie holding something that expires at `expires_at` lives: at most `max_age`.
    fn max_age(&self, expires_at: u64, now: u64) -> CookieDuration {
        seconds(
            self.settings
                .max_age
                .as_secs()
                .min(expires_at.saturating_sub(now)),
        )
    }
}

/// Marks the value sensitive so that no tracing layer prints it.
fn header_value(set_cookie: String) -> HeaderValue {
    match HeaderValue::try_from(set_cookie) {
        Ok(mut value) => {
            value.set_sensitive(true);
            value
        }
        // Unreachable: `new` validated the name and domain and values are base64url. Should it
        // ever happen, an empty Set-Cookie is ignored by user agents (RFC 6265 section 5.2).
        Err(_) => HeaderValue::from_static(""),
    }
}

fn seconds(secs: u64) -> CookieDuration {
    CookieDuration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

fn validate(settings: &CookieSettings) -> Result<(), SessionError> {
    let name = settings.name.as_str();
    // RFC 6265 section 4.1.1: cookie-name is an RFC 2616 token.
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let prefix_ok = (!name.starts_with("__Secure-") || settings.secure)
        && (!name.starts_with("__Host-") || (settings.secure && settings.domain.is_none()));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(token) || !prefix_ok {
        return Err(SessionError::CookieName(settings.name.clone()));
    }
    if let Some(domain) = &settings.domain {
        let host = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
        if domain.trim_start_matches('.').is_empty()
            || domain.len() > 253
            || !domain.bytes().all(host)
        {
            return Err(SessionError::CookieDomain(domain.clone()));
        }
    }
    Ok(())
}

/// What the fuzz targets seal by hand, to reach what lies behind the AEAD.
#[cfg(feature = "fuzzing")]
impl SessionCookies {
    /// A `Cookie` header value carrying `plain` as a session, sealed and chunked as `write` does.
    pub(crate) fn fuzz_session_header(&self, plain: &[u8]) -> Option<String> {
        self.session.fuzz_header(plain)
    }

    /// A `Cookie` header value carrying `plain` as the login state of `state`.
    pub(crate) fn fuzz_login_header(&self, state: &str, plain: &[u8]) -> String {
        self.login.fuzz_header(state, plain)
    }
}
