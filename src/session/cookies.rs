//! The cookie codec: a [`Session`] or a [`LoginState`] to `Set-Cookie` values and back.
//!
//! Owns cookie naming, chunking and attributes; the cryptography lives in `seal`, header parsing in
//! `header`. The session is serialized and sealed once, and the sealed text is split over
//! `NAME_0`, `NAME_1`, ... only when it does not fit one cookie: browsers keep about 4096 bytes per
//! cookie (RFC 6265 section 6.1). Sealing once (rather than per chunk) means one nonce, one tag and
//! one key attempt per read, and a reordered, dropped or foreign chunk breaks the tag.
//!
//! Login states live in cookies of their own, `NAME_login_<id>` with `<id>` derived from the
//! `state`, so several logins started in parallel tabs do not overwrite each other and the callback
//! finds its cookie by the `state` it is given. At most [`MAX_LOGIN_STATES`] are kept.
//!
//! Every `Set-Cookie` is built with the `cookie` crate from validated parts, never spliced by hand.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cookie::time::{Duration as CookieDuration, OffsetDateTime};
use cookie::{Cookie, CookieBuilder, SameSite};
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::cache::SessionCache;

use super::header::{self, pairs};
use super::payload;
use super::seal::{self, KeyRing, Purpose};
use super::{CookieSettings, LoginState, Session, SessionError, MAX_NAME_LEN};

/// Longest cookie value we write or read. A multiple of 4, so every chunk but the last is whole
/// base64 quanta and decodes on its own; with the name and attributes it stays under 4096 bytes.
pub const CHUNK_LEN: usize = 3800;
/// Most chunks read back. Bounds the work and memory a hostile `Cookie` header can cause.
pub const MAX_CHUNKS: usize = 16;
/// Most login-state cookies alive at once.
pub const MAX_LOGIN_STATES: usize = 5;
/// Lifetime of a login-state cookie, and the oldest login a callback may complete.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// Most copies of one cookie name tried: a browser may hold the same name for several Domain or
/// Path values and sends all of them (RFC 6265 section 5.4), a stale one possibly first.
const MAX_DUPLICATES: usize = 4;
/// Most login-state cookies looked at when deciding which to evict.
const MAX_LOGIN_SCAN: usize = 32;
/// Most deletions of stale cookies in one response.
const MAX_DELETIONS: usize = 64;
/// Length of `<id>` in `NAME_login_<id>`: base64url of 9 bytes of SHA-256(state).
const LOGIN_ID_BYTES: usize = 9;
const LOGIN_ID_LEN: usize = 12;
const MIN_SECRET_LEN: usize = 32;
/// How far in the future a login's `created_at` may lie, for replicas whose clocks differ a little.
const LOGIN_CLOCK_SKEW: u64 = 60;

/// Encodes sessions and login states into cookies and reads them back. Build once at start-up:
/// the keys are derived in [`SessionCookies::new`].
pub struct SessionCookies {
    settings: CookieSettings,
    /// `NAME_`, the prefix of chunk names.
    chunk_prefix: String,
    /// `NAME_login_`, the prefix of login-state cookie names.
    login_prefix: String,
    session_keys: KeyRing,
    login_keys: KeyRing,
}

impl fmt::Debug for SessionCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCookies")
            .field("settings", &self.settings)
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
        let [session_keys, login_keys] =
            KeyRing::derive(current, previous, [Purpose::Session, Purpose::LoginState])
                .map_err(|_| SessionError::KeyDerivation)?;
        Ok(Self {
            chunk_prefix: format!("{}_", settings.name),
            login_prefix: format!("{}_login_", settings.name),
            settings,
            session_keys,
            login_keys,
        })
    }

    /// Our session cookie values in the request: up to [`MAX_DUPLICATES`] copies of the unchunked
    /// cookie, and the chunks by index.
    fn locate<'h>(&self, headers: &'h HeaderMap) -> Located<'h> {
        let mut found = Located {
            whole: [&[]; MAX_DUPLICATES],
            whole_count: 0,
            chunks: [&[]; MAX_CHUNKS],
            present: 0,
        };
        for (name, value) in pairs(headers) {
            if name == self.settings.name.as_bytes() {
                if let Some(slot) = found.whole.get_mut(found.whole_count) {
                    *slot = value;
                    found.whole_count += 1;
                }
            } else if let Some(index) = self.chunk_index(name) {
                if let Some(slot) = found.chunks.get_mut(index) {
                    if found.present & (1 << index) == 0 {
                        *slot = value;
                        found.present |= 1 << index;
                    }
                }
            }
        }
        found
    }

    /// The session carried by the request's `Cookie` header(s); `None` when absent, tampered,
    /// truncated, sealed with an unknown key, missing a chunk, or expired (`now >= expires_at`).
    pub fn read(&self, headers: &HeaderMap, now: u64) -> Option<Session> {
        let found = self.locate(headers);
        let mut buf = Vec::new();
        let session = found
            .candidates()
            .find_map(|parts| self.open_session(parts, &mut buf, now));
        session
    }

    /// [`SessionCookies::read`] through `cache`: a value already opened for exactly these cookie bytes
    /// is taken from the cache (expiry checked again); otherwise the cookie is opened and `make` turns
    /// the session into what is cached (e.g. the session with its identity headers).
    pub fn read_cached<T>(
        &self,
        headers: &HeaderMap,
        now: u64,
        cache: &SessionCache<T>,
        make: impl FnOnce(Session) -> T,
    ) -> Option<Arc<T>> {
        let found = self.locate(headers);
        let mut buf = Vec::new();
        for parts in found.candidates() {
            if let Some(hit) = cache.get(parts, now) {
                return Some(hit);
            }
            if let Some(session) = self.open_session(parts, &mut buf, now) {
                let expires_at = session.expires_at;
                let value = Arc::new(make(session));
                cache.insert(parts, expires_at, value.clone());
                return Some(value);
            }
        }
        None
    }

    /// `Set-Cookie` values storing `session`: one cookie when it fits, numbered chunks otherwise,
    /// plus deletions of stale cookies of ours present in `request` (chunks beyond the new count,
    /// or the unchunked cookie when now chunked, and vice versa). The cookies live until the
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
        let mut plain = seal::plaintext_buffer(payload::size_hint(session));
        payload::encode(session, &mut plain)?;
        let text = self
            .session_keys
            .seal(self.settings.name.as_bytes(), plain)
            .map_err(|_| SessionError::Seal)?;
        let count = text.len().div_ceil(CHUNK_LEN);
        if count > MAX_CHUNKS {
            return Err(SessionError::TooLarge {
                needed: text.len(),
                max: MAX_CHUNKS * CHUNK_LEN,
            });
        }
        let lifetime = self
            .settings
            .max_age
            .as_secs()
            .min(session.expires_at - now);
        let max_age = seconds(lifetime);
        let mut out = Vec::with_capacity(count + 1);
        if count == 1 {
            out.push(self.set_cookie(&self.settings.name, &text, max_age));
        } else {
            let mut name = String::with_capacity(self.chunk_prefix.len() + 2);
            for (index, chunk) in text.as_bytes().chunks(CHUNK_LEN).enumerate() {
                // base64url text is ASCII, so any split is on a character boundary.
                let chunk = std::str::from_utf8(chunk).map_err(|_| SessionError::Seal)?;
                name.clear();
                name.push_str(&self.chunk_prefix);
                // Writing a number into a String cannot fail.
                let _ = write!(name, "{index}");
                out.push(self.set_cookie(&name, chunk, max_age));
            }
        }
        self.push_deletions(&mut out, request, |name| match self.chunk_index(name) {
            Some(index) => count == 1 || index >= count,
            None => count > 1 && name == self.settings.name.as_bytes(),
        });
        Ok(out)
    }

    /// `Set-Cookie` values deleting the session cookie and every chunk present in `request`.
    pub fn clear(&self, request: &HeaderMap) -> Vec<HeaderValue> {
        let mut out = vec![self.removal(&self.settings.name)];
        self.push_deletions(&mut out, request, |name| self.chunk_index(name).is_some());
        out
    }

    /// Remove every cookie of ours (session, chunks, login states) from the `Cookie` header(s),
    /// leaving the others byte-for-byte and in order; the header goes when nothing is left.
    pub fn strip_own_cookies(&self, headers: &mut HeaderMap) {
        header::strip(headers, |name| self.is_own(name));
    }

    /// Seal a login state into a cookie of its own (Max-Age 10 minutes). When the request already
    /// carries [`MAX_LOGIN_STATES`] login cookies, the result also deletes the oldest (by the
    /// `created_at` inside; ones that do not open count as oldest), so at most that many live.
    pub fn start_login(
        &self,
        login: &LoginState,
        request: &HeaderMap,
    ) -> Result<Vec<HeaderValue>, SessionError> {
        let name = self.login_cookie_name(&login.state);
        let text = seal_json(&self.login_keys, name.as_bytes(), login, 256)?;
        if text.len() > CHUNK_LEN {
            return Err(SessionError::TooLarge {
                needed: text.len(),
                max: CHUNK_LEN,
            });
        }
        let mut out = vec![self.set_cookie(&name, &text, seconds(LOGIN_TTL.as_secs()))];
        let mut live: Vec<(&[u8], u64)> = Vec::new();
        let mut buf = Vec::new();
        let login_cookies = pairs(request).filter(|(cookie, _)| self.is_login_name(cookie));
        for (cookie, value) in login_cookies.take(MAX_LOGIN_SCAN) {
            if cookie == name.as_bytes() || live.iter().any(|(seen, _)| *seen == cookie) {
                continue;
            }
            let created = self
                .open_login(cookie, value, &mut buf)
                .map_or(0, |old| old.created_at);
            live.push((cookie, created));
        }
        if live.len() >= MAX_LOGIN_STATES {
            // Stable sort: equal times keep header order, which is oldest first (RFC 6265 5.4).
            live.sort_by_key(|&(_, created)| created);
            let excess = live.len() + 1 - MAX_LOGIN_STATES;
            for (cookie, _) in live.iter().take(excess) {
                if let Ok(cookie) = std::str::from_utf8(cookie) {
                    out.push(self.removal(cookie));
                }
            }
        }
        Ok(out)
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
        let name = self.login_cookie_name(state_param);
        let mut buf = Vec::new();
        let login = pairs(request)
            .filter(|(cookie, _)| *cookie == name.as_bytes())
            .take(MAX_DUPLICATES)
            .filter_map(|(_, value)| self.open_login(name.as_bytes(), value, &mut buf))
            .find(|login| {
                let same = login.state.as_bytes().ct_eq(state_param.as_bytes());
                // `created_at` is in microseconds (it orders parallel logins for eviction).
                let created = login.created_at / 1_000_000;
                let fresh = now < created.saturating_add(LOGIN_TTL.as_secs())
                    && created <= now.saturating_add(LOGIN_CLOCK_SKEW);
                bool::from(same) && fresh
            })?;
        Some((login, self.removal(&name)))
    }

    /// `Set-Cookie` deleting the login cookie for `state_param` (for error paths).
    pub fn clear_login(&self, state_param: &str) -> HeaderValue {
        self.removal(&self.login_cookie_name(state_param))
    }

    fn open_session(&self, parts: &[&[u8]], buf: &mut Vec<u8>, now: u64) -> Option<Session> {
        let (last, init) = parts.split_last()?;
        if last.len() > CHUNK_LEN || init.iter().any(|p| p.len() > CHUNK_LEN || p.len() % 4 != 0) {
            return None;
        }
        buf.reserve(parts.iter().map(|p| p.len()).sum::<usize>() / 4 * 3 + 3);
        let plain = self
            .session_keys
            .open(self.settings.name.as_bytes(), buf, |raw| {
                parts.iter().all(|part| seal::decode_into(part, raw))
            })?;
        payload::decode(plain, now)
    }

    fn open_login(&self, name: &[u8], value: &[u8], buf: &mut Vec<u8>) -> Option<LoginState> {
        if value.len() > CHUNK_LEN {
            return None;
        }
        let plain = self
            .login_keys
            .open(name, buf, |raw| seal::decode_into(value, raw))?;
        serde_json::from_slice(plain).ok()
    }

    /// `NAME_login_<id>`, `<id>` = base64url(SHA-256(state)[..9]): fixed length, cookie-safe
    /// whatever the state holds, and distinct per login.
    fn login_cookie_name(&self, state: &str) -> String {
        let digest = digest::digest(&digest::SHA256, state.as_bytes());
        let id = digest.as_ref().get(..LOGIN_ID_BYTES).unwrap_or_default();
        let mut name = String::with_capacity(self.login_prefix.len() + LOGIN_ID_LEN);
        name.push_str(&self.login_prefix);
        URL_SAFE_NO_PAD.encode_string(id, &mut name);
        name
    }

    /// The index of a chunk name `NAME_<n>` (canonical decimal, at most 3 digits).
    fn chunk_index(&self, name: &[u8]) -> Option<usize> {
        let digits = name.strip_prefix(self.chunk_prefix.as_bytes())?;
        let canonical = match digits {
            [b'0'] => true,
            [b'1'..=b'9', rest @ ..] => rest.len() < 3 && rest.iter().all(u8::is_ascii_digit),
            _ => false,
        };
        canonical.then(|| digits.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
    }

    fn is_login_name(&self, name: &[u8]) -> bool {
        name.strip_prefix(self.login_prefix.as_bytes())
            .is_some_and(|id| {
                id.len() == LOGIN_ID_LEN
                    && id
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    }

    fn is_own(&self, name: &[u8]) -> bool {
        name == self.settings.name.as_bytes()
            || self.chunk_index(name).is_some()
            || self.is_login_name(name)
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
}

/// What the fuzz targets seal by hand, to reach what lies behind the AEAD.
#[cfg(feature = "fuzzing")]
impl SessionCookies {
    /// A `Cookie` header value carrying `plain` as a session, sealed and chunked as `write` does.
    pub(super) fn fuzz_session_header(&self, plain: &[u8]) -> Option<String> {
        let mut buf = seal::plaintext_buffer(plain.len());
        buf.extend_from_slice(plain);
        let text = self
            .session_keys
            .seal(self.settings.name.as_bytes(), buf)
            .ok()?;
        if text.len() <= CHUNK_LEN {
            return Some(format!("{}={text}", self.settings.name));
        }
        let chunks: Vec<String> = text
            .as_bytes()
            .chunks(CHUNK_LEN)
            .enumerate()
            .map(|(i, chunk)| {
                format!(
                    "{}{i}={}",
                    self.chunk_prefix,
                    String::from_utf8_lossy(chunk)
                )
            })
            .collect();
        Some(chunks.join("; "))
    }

    /// A `Cookie` header value carrying `plain` as the login state of `state`.
    pub(super) fn fuzz_login_header(&self, state: &str, plain: &[u8]) -> String {
        let name = self.login_cookie_name(state);
        let mut buf = seal::plaintext_buffer(plain.len());
        buf.extend_from_slice(plain);
        let text = self
            .login_keys
            .seal(name.as_bytes(), buf)
            .unwrap_or_default();
        format!("{name}={text}")
    }
}

fn seal_json<T: Serialize>(
    keys: &KeyRing,
    aad: &[u8],
    value: &T,
    capacity: usize,
) -> Result<String, SessionError> {
    let mut buf = seal::plaintext_buffer(capacity);
    serde_json::to_writer(&mut buf, value)?;
    keys.seal(aad, buf).map_err(|_| SessionError::Seal)
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

/// The session cookie values found in one request.
struct Located<'h> {
    whole: [&'h [u8]; MAX_DUPLICATES],
    whole_count: usize,
    chunks: [&'h [u8]; MAX_CHUNKS],
    present: u32,
}

impl<'h> Located<'h> {
    /// The values worth opening, in order: each copy of the unchunked cookie, then the chunks when
    /// they run from 0 without a gap (a gap means a lost cookie, so no session).
    fn candidates(&self) -> impl Iterator<Item = &[&'h [u8]]> + '_ {
        let count = self.present.trailing_ones() as usize;
        let chunks = (count > 0 && self.present >> count == 0)
            .then(|| self.chunks.get(..count))
            .flatten();
        self.whole
            .get(..self.whole_count)
            .unwrap_or_default()
            .chunks(1)
            .chain(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Claims;
    use http::header::{COOKIE, SET_COOKIE};
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;
    const SECRET: [u8; 32] = [0x42; 32];

    fn settings(name: &str) -> CookieSettings {
        CookieSettings {
            name: name.into(),
            secure: true,
            max_age: Duration::from_secs(12 * 3600),
            domain: None,
        }
    }

    fn codec() -> SessionCookies {
        SessionCookies::new(settings("_portcullis"), &SECRET, &[]).unwrap()
    }

    fn session(groups: usize) -> Session {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "user-1234".into());
        claims.insert("email".into(), "alice@example.com".into());
        let groups: Vec<serde_json::Value> = (0..groups)
            .map(|i| format!("group-number-{i:05}").into())
            .collect();
        claims.insert("groups".into(), groups.into());
        Session {
            claims: Claims::new(&claims).unwrap(),
            id_token: Some("eyJhbGciOiJSUzI1NiJ9.".repeat(20)),
            access_token: Some("opaque-access-token".into()),
            refresh_token: None,
            created_at: NOW,
            expires_at: NOW + 3600,
        }
    }

    /// A login started at `created_at` (Unix seconds), stored in microseconds.
    fn login(state: &str, created_at: u64) -> LoginState {
        LoginState {
            state: state.into(),
            nonce: format!("nonce-{state}"),
            pkce_verifier: Some(format!("verifier-{state}")),
            return_to: "/dashboard?tab=1".into(),
            created_at: created_at * 1_000_000,
        }
    }

    /// A browser cookie jar: applies Set-Cookie values, sends the live cookies back in creation
    /// order (RFC 6265 section 5.3: replacing a cookie keeps its creation time).
    #[derive(Default)]
    struct Jar(Vec<(String, String)>);

    impl Jar {
        fn apply(&mut self, set_cookies: &[HeaderValue]) {
            for value in set_cookies {
                let cookie = parse(value);
                let (name, val) = (cookie.name().to_owned(), cookie.value().to_owned());
                let pos = self.0.iter().position(|(n, _)| *n == name);
                match (cookie.max_age() == Some(CookieDuration::ZERO), pos) {
                    (true, Some(pos)) => {
                        self.0.remove(pos);
                    }
                    (true, None) => {}
                    (false, Some(pos)) => self.0[pos].1 = val,
                    (false, None) => self.0.push((name, val)),
                }
            }
        }

        fn headers(&self) -> HeaderMap {
            let mut headers = HeaderMap::new();
            let line: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
            if !line.is_empty() {
                headers.insert(COOKIE, HeaderValue::try_from(line.join("; ")).unwrap());
            }
            headers
        }

        fn names(&self) -> Vec<&str> {
            self.0.iter().map(|(n, _)| n.as_str()).collect()
        }

        fn get_mut(&mut self, name: &str) -> &mut String {
            &mut self.0.iter_mut().find(|(n, _)| n == name).unwrap().1
        }
    }

    fn cookie_header(pairs: &[(&str, &str)]) -> HeaderMap {
        let jar = Jar(pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect());
        jar.headers()
    }

    fn parse(value: &HeaderValue) -> Cookie<'static> {
        Cookie::parse(value.to_str().unwrap().to_owned()).unwrap()
    }

    fn stored(codec: &SessionCookies, session: &Session) -> Jar {
        let mut jar = Jar::default();
        jar.apply(&codec.write(session, &HeaderMap::new(), NOW).unwrap());
        jar
    }

    /// The session plaintext `write` would seal for `session`.
    fn plaintext(session: &Session) -> Vec<u8> {
        let mut buf = Vec::new();
        payload::encode(session, &mut buf).unwrap();
        buf
    }

    /// A request carrying `plain`, whatever it holds, sealed as the session cookie under the
    /// right key and name.
    fn sealed_session(codec: &SessionCookies, plain: &[u8]) -> HeaderMap {
        let mut buf = seal::plaintext_buffer(plain.len());
        buf.extend_from_slice(plain);
        let text = codec.session_keys.seal(b"_portcullis", buf).unwrap();
        cookie_header(&[("_portcullis", &text)])
    }

    #[test]
    fn small_session_round_trips_in_one_cookie_with_all_attributes() {
        let codec = codec();
        let small = session(10);
        let set = codec.write(&small, &HeaderMap::new(), NOW).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set[0].is_sensitive());
        let text = set[0].to_str().unwrap();
        assert!(text.len() > 1000, "about 1 KB: {}", text.len());
        let cookie = Cookie::parse(text).unwrap();
        assert_eq!(cookie.name(), "_portcullis");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.domain(), None);
        // Capped by the session's own expiry (1 h), below the configured 12 h.
        assert_eq!(cookie.max_age(), Some(CookieDuration::seconds(3600)));
        let mut jar = Jar::default();
        jar.apply(&set);
        assert_eq!(codec.read(&jar.headers(), NOW + 10), Some(small));
    }

    #[test]
    fn domain_and_insecure_settings_show_in_attributes() {
        let mut s = settings("sid");
        s.secure = false;
        s.domain = Some("example.com".into());
        s.max_age = Duration::from_secs(60);
        let codec = SessionCookies::new(s, &SECRET, &[]).unwrap();
        let set = codec.write(&session(1), &HeaderMap::new(), NOW).unwrap();
        let cookie = parse(&set[0]);
        assert_eq!(cookie.secure(), None);
        assert_eq!(cookie.domain(), Some("example.com"));
        assert_eq!(cookie.max_age(), Some(CookieDuration::seconds(60)));
        let removal = parse(&codec.clear_login("s"));
        assert_eq!(removal.domain(), Some("example.com"));
    }

    #[test]
    fn large_session_is_chunked_and_joined() {
        let codec = codec();
        let large = session(400);
        let jar = stored(&codec, &large);
        let names = jar.names();
        assert!(names.len() >= 3, "about 10 KB needs chunks: {names:?}");
        let expected: Vec<String> = (0..names.len())
            .map(|i| format!("_portcullis_{i}"))
            .collect();
        assert_eq!(names, expected);
        assert!(jar.0.iter().all(|(_, v)| v.len() <= CHUNK_LEN));
        assert_eq!(codec.read(&jar.headers(), NOW), Some(large));
    }

    #[test]
    fn growing_and_shrinking_delete_stale_cookies() {
        let codec = codec();
        let mut jar = stored(&codec, &session(1));
        // Grow: the unchunked cookie must go.
        let big = session(400);
        jar.apply(&codec.write(&big, &jar.headers(), NOW).unwrap());
        assert!(!jar.names().contains(&"_portcullis"), "{:?}", jar.names());
        assert_eq!(codec.read(&jar.headers(), NOW), Some(big));
        let chunks = jar.names().len();
        // Shrink by one chunk: the last chunk must go.
        let mut smaller = session(400);
        while {
            let n = stored(&codec, &smaller).names().len();
            n >= chunks
        } {
            let mut claims = smaller.claims.to_map();
            let groups = claims["groups"].as_array_mut().unwrap();
            groups.truncate(groups.len() - 20);
            smaller.claims = Claims::new(&claims).unwrap();
        }
        jar.apply(&codec.write(&smaller, &jar.headers(), NOW).unwrap());
        assert_eq!(jar.names().len(), chunks - 1, "{:?}", jar.names());
        assert_eq!(codec.read(&jar.headers(), NOW), Some(smaller));
        // Shrink to one cookie: every chunk must go.
        let small = session(1);
        jar.apply(&codec.write(&small, &jar.headers(), NOW).unwrap());
        assert_eq!(jar.names(), ["_portcullis"]);
        assert_eq!(codec.read(&jar.headers(), NOW), Some(small));
    }

    #[test]
    fn tampered_truncated_and_foreign_values_read_as_none() {
        let codec = codec();
        let jar = stored(&codec, &session(10));
        let value = &jar.0[0].1;
        for pos in [0, 1, 10, value.len() / 2, value.len() - 1] {
            let mut bytes = value.clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            let headers = cookie_header(&[("_portcullis", &tampered)]);
            assert_eq!(codec.read(&headers, NOW), None, "byte {pos}");
        }
        for cut in [1, 16, value.len() / 2] {
            let headers = cookie_header(&[("_portcullis", &value[..value.len() - cut])]);
            assert_eq!(codec.read(&headers, NOW), None, "cut {cut}");
        }
        let other_key = SessionCookies::new(settings("_portcullis"), &[1; 32], &[]).unwrap();
        assert_eq!(other_key.read(&jar.headers(), NOW), None);
        // Same secret, other cookie name: the name is authenticated data.
        let other_name = SessionCookies::new(settings("_other"), &SECRET, &[]).unwrap();
        let moved = cookie_header(&[("_other", value)]);
        assert_eq!(other_name.read(&moved, NOW), None);
        assert_eq!(codec.read(&jar.headers(), NOW), Some(session(10)));
    }

    #[test]
    fn missing_or_tampered_chunk_reads_as_none() {
        let codec = codec();
        let mut jar = stored(&codec, &session(400));
        assert!(jar.names().len() >= 3);
        let mut gap = Jar(jar.0.clone());
        gap.0.remove(1);
        assert_eq!(codec.read(&gap.headers(), NOW), None);
        let mut last_missing = Jar(jar.0.clone());
        last_missing.0.pop();
        assert_eq!(codec.read(&last_missing.headers(), NOW), None);
        let mut swapped = Jar(jar.0.clone());
        let (a, b) = (swapped.0[0].1.clone(), swapped.0[1].1.clone());
        swapped.0[0].1 = b;
        swapped.0[1].1 = a;
        assert_eq!(codec.read(&swapped.headers(), NOW), None);
        jar.get_mut("_portcullis_1").replace_range(5..6, "x");
        assert_eq!(codec.read(&jar.headers(), NOW), None);
    }

    #[test]
    fn expired_session_reads_as_none_and_is_cleared_on_write() {
        let codec = codec();
        let s = session(1);
        let jar = stored(&codec, &s);
        assert!(codec.read(&jar.headers(), s.expires_at - 1).is_some());
        assert_eq!(codec.read(&jar.headers(), s.expires_at), None);
        let set = codec.write(&s, &jar.headers(), s.expires_at).unwrap();
        let removal = parse(&set[0]);
        assert_eq!(removal.max_age(), Some(CookieDuration::ZERO));
    }

    #[test]
    fn every_truncation_of_a_session_plaintext_reads_as_none() {
        let codec = codec();
        let mut all_tokens = session(2);
        all_tokens.refresh_token = Some("refresh".into());
        let mut no_tokens = session(0);
        no_tokens.id_token = None;
        no_tokens.access_token = None;
        for s in [session(2), all_tokens, no_tokens] {
            let plain = plaintext(&s);
            for cut in 0..plain.len() {
                let headers = sealed_session(&codec, &plain[..cut]);
                assert_eq!(codec.read(&headers, NOW), None, "cut {cut}");
            }
            assert_eq!(codec.read(&sealed_session(&codec, &plain), NOW), Some(s));
        }
    }

    #[test]
    fn json_session_payloads_are_refused() {
        let codec = codec();
        let s = session(3);
        // The shape earlier releases sealed.
        let json = serde_json::to_vec(&serde_json::json!({
            "claims": s.claims.to_map(),
            "id_token": s.id_token,
            "access_token": s.access_token,
            "refresh_token": s.refresh_token,
            "created_at": s.created_at,
            "expires_at": s.expires_at,
        }))
        .unwrap();
        assert_eq!(json.first(), Some(&b'{'));
        assert_eq!(codec.read(&sealed_session(&codec, &json), NOW), None);
        assert_eq!(
            codec.read(&sealed_session(&codec, &plaintext(&s)), NOW),
            Some(s)
        );
    }

    #[test]
    fn non_canonical_base64_reads_as_none() {
        let codec = codec();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut tails = Vec::new();
        // Three consecutive plaintext lengths give every remainder of the sealed length mod 3.
        for pad in 0..3 {
            let mut s = session(1);
            let mut claims = s.claims.to_map();
            claims.insert("pad".into(), "x".repeat(pad).into());
            s.claims = Claims::new(&claims).unwrap();
            let value = stored(&codec, &s).0.remove(0).1;
            let read = |value: &str| codec.read(&cookie_header(&[("_portcullis", value)]), NOW);
            assert_eq!(read(&value), Some(s.clone()));
            tails.push(value.len() % 4);
            if value.len() % 4 != 0 {
                // Same bytes under a lenient decoder: only the unused low bits of the last
                // character change.
                let mut bytes = value.clone().into_bytes();
                let last = bytes.last_mut().unwrap();
                let sextet = alphabet.iter().position(|c| c == last).unwrap();
                *last = alphabet[sextet ^ 1];
                assert_eq!(
                    read(&String::from_utf8(bytes).unwrap()),
                    None,
                    "trailing bits"
                );
                let padding = "=".repeat(4 - value.len() % 4);
                assert_eq!(read(&format!("{value}{padding}")), None, "padded");
            }
            for junk in ["+", "/", "=", ".", "%2B"] {
                let mid = value.len() / 2;
                let bad = format!("{}{junk}{}", &value[..mid], &value[mid + 1..]);
                assert_eq!(read(&bad), None, "{junk}");
            }
        }
        tails.sort_unstable();
        assert_eq!(tails, [0, 2, 3]);
    }

    #[test]
    fn rotation_reads_old_cookies_only_while_the_old_secret_is_listed() {
        let old = SessionCookies::new(settings("_portcullis"), &[1; 32], &[]).unwrap();
        let jar = stored(&old, &session(400));
        let rotated = SessionCookies::new(
            settings("_portcullis"),
            &[2; 32],
            &[vec![9; 32], vec![1; 32]],
        )
        .unwrap();
        assert_eq!(rotated.read(&jar.headers(), NOW), Some(session(400)));
        let dropped = SessionCookies::new(settings("_portcullis"), &[2; 32], &[]).unwrap();
        assert_eq!(dropped.read(&jar.headers(), NOW), None);
        // New cookies are sealed with the current secret only.
        let fresh = stored(&rotated, &session(1));
        assert_eq!(old.read(&fresh.headers(), NOW), None);
        assert!(dropped.read(&fresh.headers(), NOW).is_some());
    }

    #[test]
    fn a_stale_duplicate_does_not_hide_the_valid_cookie() {
        let codec = codec();
        let jar = stored(&codec, &session(1));
        let headers = cookie_header(&[("_portcullis", "garbage"), ("_portcullis", &jar.0[0].1)]);
        assert_eq!(codec.read(&headers, NOW), Some(session(1)));
    }

    #[test]
    fn clear_deletes_session_and_present_chunks() {
        let codec = codec();
        let mut jar = stored(&codec, &session(400));
        jar.0.push(("other".into(), "1".into()));
        let set = codec.clear(&jar.headers());
        for value in &set {
            let cookie = parse(value);
            assert_eq!(cookie.max_age(), Some(CookieDuration::ZERO));
            assert_eq!(cookie.expires_datetime(), Some(OffsetDateTime::UNIX_EPOCH));
            assert_eq!(cookie.path(), Some("/"));
        }
        jar.apply(&set);
        assert_eq!(jar.names(), ["other"]);
        assert_eq!(set.len(), 1 + stored(&codec, &session(400)).names().len());
    }

    #[test]
    fn too_large_session_is_an_error() {
        let codec = codec();
        let huge = session(4000);
        assert!(matches!(
            codec.write(&huge, &HeaderMap::new(), NOW),
            Err(SessionError::TooLarge { .. })
        ));
    }

    #[test]
    fn login_round_trip_is_single_use_and_bound_to_its_state() {
        let codec = codec();
        let mut jar = Jar::default();
        jar.apply(
            &codec
                .start_login(&login("abc", NOW), &jar.headers())
                .unwrap(),
        );
        let name = jar.names()[0].to_owned();
        assert!(
            name.starts_with("_portcullis_login_") && name.len() == 30,
            "{name}"
        );
        let cookie = parse(&codec.clear_login("abc"));
        assert_eq!(cookie.name(), name);
        assert_eq!(codec.finish_login("abd", &jar.headers(), NOW), None);
        assert_eq!(codec.finish_login("abc", &jar.headers(), NOW + 600), None);
        let (state, removal) = codec
            .finish_login("abc", &jar.headers(), NOW + 599)
            .unwrap();
        assert_eq!(state, login("abc", NOW));
        jar.apply(&[removal]);
        assert!(jar.names().is_empty());
    }

    #[test]
    fn login_cookie_under_another_state_name_is_refused() {
        let codec = codec();
        let mut jar = Jar::default();
        jar.apply(
            &codec
                .start_login(&login("one", NOW), &jar.headers())
                .unwrap(),
        );
        // Moving the sealed value to the cookie name of another state fails the AEAD check.
        let moved = codec.login_cookie_name("two");
        jar.0[0].0 = moved;
        assert_eq!(codec.finish_login("two", &jar.headers(), NOW), None);
    }

    #[test]
    fn login_state_inside_must_match_the_parameter() {
        // Sealed under the right name but holding another state: the constant-time check refuses.
        let codec = codec();
        let name = codec.login_cookie_name("wanted");
        let text = seal_json(&codec.login_keys, name.as_bytes(), &login("other", NOW), 0).unwrap();
        let headers = cookie_header(&[(&name, &text)]);
        assert_eq!(codec.finish_login("wanted", &headers, NOW), None);
    }

    #[test]
    fn login_and_session_cookies_do_not_open_as_each_other() {
        let codec = codec();
        let mut jar = Jar::default();
        jar.apply(&codec.start_login(&login("s", NOW), &jar.headers()).unwrap());
        let login_value = jar.0[0].1.clone();
        let as_session = cookie_header(&[("_portcullis", &login_value)]);
        assert_eq!(codec.read(&as_session, NOW), None);
        let session_jar = stored(&codec, &session(1));
        let name = codec.login_cookie_name("s");
        let as_login = cookie_header(&[(&name, &session_jar.0[0].1)]);
        assert_eq!(codec.finish_login("s", &as_login, NOW), None);
    }

    #[test]
    fn at_most_five_login_cookies_live_and_the_newest_finish() {
        let codec = codec();
        let mut jar = Jar::default();
        jar.0.push(("unrelated".into(), "1".into()));
        for i in 0..20u64 {
            let set = codec
                .start_login(&login(&format!("state-{i}"), NOW + i), &jar.headers())
                .unwrap();
            jar.apply(&set);
            let alive = jar.names().iter().filter(|n| n.contains("_login_")).count();
            assert!(alive <= MAX_LOGIN_STATES, "after {i}: {alive}");
        }
        assert!(jar.names().contains(&"unrelated"));
        for i in 15..20u64 {
            let state = format!("state-{i}");
            let (found, _) = codec
                .finish_login(&state, &jar.headers(), NOW + 20)
                .unwrap();
            assert_eq!(found.created_at, (NOW + i) * 1_000_000);
        }
        assert_eq!(
            codec.finish_login("state-14", &jar.headers(), NOW + 20),
            None
        );
    }

    #[test]
    fn undecryptable_login_cookies_are_evicted_first() {
        let codec = codec();
        let mut jar = Jar::default();
        for i in 0..4u64 {
            let set = codec
                .start_login(&login(&format!("s{i}"), NOW + i), &jar.headers())
                .unwrap();
            jar.apply(&set);
        }
        // Added last, but it cannot be opened, so it is the one to go.
        let junk = codec.login_cookie_name("junk");
        jar.0.push((junk.clone(), "not-sealed".into()));
        jar.apply(
            &codec
                .start_login(&login("new", NOW + 9), &jar.headers())
                .unwrap(),
        );
        assert!(!jar.names().contains(&junk.as_str()), "{:?}", jar.names());
        assert_eq!(jar.names().len(), MAX_LOGIN_STATES);
    }

    #[test]
    fn strip_own_cookies_keeps_foreign_cookies_intact() {
        let codec = codec();
        let mut jar = stored(&codec, &session(400));
        jar.apply(&codec.start_login(&login("x", NOW), &jar.headers()).unwrap());
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("theme=dark; _portcullis_0=zz"),
        );
        headers.append(COOKIE, jar.headers().remove(COOKIE).unwrap());
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=\"q\"; _portcullis_x=keep; _portcullis=1;b=2"),
        );
        codec.strip_own_cookies(&mut headers);
        let left: Vec<_> = headers.get_all(COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark", "a=\"q\"; _portcullis_x=keep; b=2"]);
        let mut only_ours = stored(&codec, &session(1)).headers();
        codec.strip_own_cookies(&mut only_ours);
        assert!(only_ours.is_empty());
    }

    #[test]
    fn invalid_settings_and_short_secrets_are_refused() {
        for name in ["", "a b", "a;b", "a=b", "é", &"n".repeat(65)] {
            let result = SessionCookies::new(settings(name), &SECRET, &[]);
            assert!(
                matches!(result, Err(SessionError::CookieName(_))),
                "{name:?}"
            );
        }
        let mut host = settings("__Host-sid");
        host.domain = Some("example.com".into());
        assert!(SessionCookies::new(host, &SECRET, &[]).is_err());
        let mut bad_domain = settings("sid");
        bad_domain.domain = Some("example.com; HttpOnly".into());
        assert!(matches!(
            SessionCookies::new(bad_domain, &SECRET, &[]),
            Err(SessionError::CookieDomain(_))
        ));
        assert!(matches!(
            SessionCookies::new(settings("sid"), &[1; 31], &[]),
            Err(SessionError::SecretTooShort)
        ));
        assert!(SessionCookies::new(settings("sid"), &SECRET, &[vec![1; 8]]).is_err());
    }

    #[test]
    fn debug_never_shows_keys_or_secrets() {
        let debug = format!("{:?}", codec());
        assert!(
            debug.contains("[redacted]") && debug.contains("_portcullis"),
            "{debug}"
        );
    }

    /// Claim values of every JSON kind, nested a few levels.
    fn arb_claim() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::{Number, Value};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            ".{0,40}".prop_map(Value::from),
        ];
        let nested = leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(".{0,12}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            4 => nested,
            1 => prop::collection::vec("[a-z0-9-]{1,30}", 0..600).prop_map(Value::from),
        ]
    }

    fn arb_session() -> impl Strategy<Value = Session> {
        let value = arb_claim();
        let token = prop::option::of(".{0,400}");
        (
            prop::collection::btree_map(".{1,12}", value, 0..6),
            (token.clone(), token.clone(), token),
            any::<u64>(),
            1..u64::MAX - NOW,
        )
            .prop_map(|(claims, (id, access, refresh), created_at, ttl)| Session {
                claims: Claims::new(&claims.into_iter().collect()).unwrap(),
                id_token: id,
                access_token: access,
                refresh_token: refresh,
                created_at,
                expires_at: NOW + ttl,
            })
    }

    /// Cookie headers mixing our names with junk, so the parser reaches every branch.
    fn arb_cookie_header() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just("_portcullis".to_owned()),
            (0..20usize).prop_map(|i| format!("_portcullis_{i}")),
            Just("_portcullis_login_Kx2Kq1v1bK9S".to_owned()),
            "[ -~]{0,20}",
        ];
        let value = prop_oneof!["[A-Za-z0-9_-]{0,300}", "[ -~]{0,40}"];
        prop::collection::vec((name, value), 0..24).prop_map(|parts| {
            let parts: Vec<String> = parts.iter().map(|(n, v)| format!("{n}={v}")).collect();
            parts.join(";").into_bytes()
        })
    }

    fn request_with(bytes: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            headers.append(COOKIE, value);
        }
        headers
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn write_then_read_round_trips(session in arb_session()) {
            let codec = codec();
            let jar = stored(&codec, &session);
            prop_assert_eq!(codec.read(&jar.headers(), NOW), Some(session));
        }

        #[test]
        fn opened_claims_read_back_as_the_json_they_came_from(
            claims in prop::collection::btree_map(".{1,12}", arb_claim(), 0..6),
        ) {
            let map: serde_json::Map<String, serde_json::Value> = claims.into_iter().collect();
            let mut session = session(0);
            session.claims = Claims::new(&map).unwrap();
            let codec = codec();
            let opened = codec.read(&stored(&codec, &session).headers(), NOW).unwrap();
            prop_assert_eq!(&opened.claims.to_map(), &map);
            for (name, value) in &map {
                prop_assert_eq!(opened.claims.get(name).map(|c| c.to_value()), Some(value.clone()));
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_cookie_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let codec = codec();
            let mut headers = request_with(&bytes);
            prop_assert_eq!(codec.read(&headers, NOW), None);
            prop_assert!(codec.finish_login("state", &headers, NOW).is_none());
            let _ = codec.start_login(&login("s", NOW), &headers).unwrap();
            let _ = codec.write(&session(1), &headers, NOW).unwrap();
            let _ = codec.clear(&headers);
            codec.strip_own_cookies(&mut headers);
        }

        #[test]
        fn structured_junk_never_panics(bytes in arb_cookie_header()) {
            let codec = codec();
            let mut headers = request_with(&bytes);
            prop_assert_eq!(codec.read(&headers, NOW), None);
            prop_assert!(codec.finish_login("state", &headers, NOW).is_none());
            let _ = codec.start_login(&login("s", NOW), &headers).unwrap();
            let _ = codec.clear(&headers);
            codec.strip_own_cookies(&mut headers);
            prop_assert!(pairs(&headers).all(|(name, _)| !codec.is_own(name)));
        }

        #[test]
        fn garbage_session_plaintexts_read_as_none(plain in prop::collection::vec(any::<u8>(), 0..300)) {
            let codec = codec();
            prop_assert_eq!(codec.read(&sealed_session(&codec, &plain), NOW), None);
        }

        /// Behind a well-formed, unexpired header with a UTF-8 text section, so that random bytes
        /// reach the token and claims structure. The rare structure that happens to be valid must
        /// describe a session that survives its own round trip.
        #[test]
        fn garbage_structure_never_panics(
            flags in 0..8u8,
            text in ".{0,40}",
            code in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let codec = codec();
            let mut plain = vec![payload::FORMAT];
            plain.extend_from_slice(&(NOW + 1).to_le_bytes());
            plain.extend_from_slice(&NOW.to_le_bytes());
            plain.push(flags);
            plain.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
            plain.extend_from_slice(text.as_bytes());
            plain.extend_from_slice(&code);
            if let Some(session) = codec.read(&sealed_session(&codec, &plain), NOW) {
                let again = codec.read(&sealed_session(&codec, &plaintext(&session)), NOW);
                prop_assert_eq!(again, Some(session));
            }
        }

        #[test]
        fn flipped_bytes_in_real_chunks_read_as_none(pos in any::<prop::sample::Index>(), bit in 0..6u32) {
            let codec = codec();
            let mut jar = stored(&codec, &session(400));
            let all: usize = jar.0.iter().map(|(_, v)| v.len()).sum();
            let mut at = pos.index(all);
            for (_, value) in &mut jar.0 {
                if at < value.len() {
                    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    let old = alphabet.iter().position(|&c| c == value.as_bytes()[at]).unwrap();
                    let new = alphabet[old ^ (1 << bit)] as char;
                    value.replace_range(at..=at, &new.to_string());
                    break;
                }
                at -= value.len();
            }
            prop_assert_eq!(codec.read(&jar.headers(), NOW), None);
        }
    }

    #[test]
    fn set_cookie_headers_are_named_set_cookie_ready() {
        // Every value we build is a valid header value (never the empty fallback).
        let codec = codec();
        let mut values = codec.write(&session(400), &HeaderMap::new(), NOW).unwrap();
        values.push(codec.clear_login("x"));
        values.extend(codec.clear(&HeaderMap::new()));
        let mut headers = HeaderMap::new();
        for value in values {
            assert!(!value.is_empty());
            headers.append(SET_COOKIE, value);
        }
        assert!(headers.len() > 3);
    }
}
