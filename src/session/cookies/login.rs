//! Login-state cookies: one short-lived, sealed cookie per login attempt.
//!
//! Each lives in a cookie of its own, `NAME_login_<id>` with `<id>` derived from the `state`, so several
//! logins started in parallel tabs do not overwrite each other and the callback finds its cookie by the
//! `state` it is given. At most [`MAX_LOGIN_STATES`] are kept; the oldest are evicted.

use std::time::Duration;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{pairs, seconds, Attributes, CHUNK_LEN, MAX_DUPLICATES};
use crate::session::seal::{self, KeyRing};
use crate::session::{LoginState, SessionError};

/// Most login-state cookies alive at once.
pub const MAX_LOGIN_STATES: usize = 5;
/// Lifetime of a login-state cookie, and the oldest login a callback may complete.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// Most login-state cookies looked at when deciding which to evict.
const MAX_LOGIN_SCAN: usize = 32;
/// Length of `<id>` in `NAME_login_<id>`: base64url of 9 bytes of SHA-256(state).
const LOGIN_ID_BYTES: usize = 9;
const LOGIN_ID_LEN: usize = 12;
/// How far in the future a login's `created_at` may lie, for replicas whose clocks differ a little.
const LOGIN_CLOCK_SKEW: u64 = 60;

pub(super) struct LoginCookies {
    /// `NAME_login_`, the prefix of login-state cookie names.
    prefix: String,
    keys: KeyRing,
}

impl LoginCookies {
    pub(super) fn new(name: &str, keys: KeyRing) -> LoginCookies {
        LoginCookies {
            prefix: format!("{name}_login_"),
            keys,
        }
    }

    pub(super) fn start(
        &self,
        attributes: &Attributes,
        login: &LoginState,
        request: &HeaderMap,
    ) -> Result<Vec<HeaderValue>, SessionError> {
        let name = self.cookie_name(&login.state);
        let text = seal_json(&self.keys, name.as_bytes(), login, 256)?;
        if text.len() > CHUNK_LEN {
            return Err(SessionError::TooLarge {
                needed: text.len(),
                max: CHUNK_LEN,
            });
        }
        let mut out = vec![attributes.set_cookie(&name, &text, seconds(LOGIN_TTL.as_secs()))];
        let mut live: Vec<(&[u8], u64)> = Vec::new();
        let mut buf = Vec::new();
        let login_cookies = pairs(request).filter(|(cookie, _)| self.is_own(cookie));
        for (cookie, value) in login_cookies.take(MAX_LOGIN_SCAN) {
            if cookie == name.as_bytes() || live.iter().any(|(seen, _)| *seen == cookie) {
                continue;
            }
            let created = self
                .open(cookie, value, &mut buf)
                .map_or(0, |old| old.created_at);
            live.push((cookie, created));
        }
        if live.len() >= MAX_LOGIN_STATES {
            // Stable sort: equal times keep header order, which is oldest first (RFC 6265 5.4).
            live.sort_by_key(|&(_, created)| created);
            let excess = live.len() + 1 - MAX_LOGIN_STATES;
            for (cookie, _) in live.iter().take(excess) {
                if let Ok(cookie) = std::str::from_utf8(cookie) {
                    out.push(attributes.removal(cookie));
                }
            }
        }
        Ok(out)
    }

    pub(super) fn finish(
        &self,
        attributes: &Attributes,
        state_param: &str,
        request: &HeaderMap,
        now: u64,
    ) -> Option<(LoginState, HeaderValue)> {
        let name = self.cookie_name(state_param);
        let mut buf = Vec::new();
        let login = pairs(request)
            .filter(|(cookie, _)| *cookie == name.as_bytes())
            .take(MAX_DUPLICATES)
            .filter_map(|(_, value)| self.open(name.as_bytes(), value, &mut buf))
            .find(|login| {
                let same = login.state.as_bytes().ct_eq(state_param.as_bytes());
                // `created_at` is in microseconds (it orders parallel logins for eviction).
                let created = login.created_at / 1_000_000;
                let fresh = now < created.saturating_add(LOGIN_TTL.as_secs())
                    && created <= now.saturating_add(LOGIN_CLOCK_SKEW);
                bool::from(same) && fresh
            })?;
        Some((login, attributes.removal(&name)))
    }

    fn open(&self, name: &[u8], value: &[u8], buf: &mut Vec<u8>) -> Option<LoginState> {
        if value.len() > CHUNK_LEN {
            return None;
        }
        let plain = self
            .keys
            .open(name, buf, |raw| seal::decode_into(value, raw))?;
        serde_json::from_slice(plain).ok()
    }

    /// `NAME_login_<id>`, `<id>` = base64url(SHA-256(state)[..9]): fixed length, cookie-safe
    /// whatever the state holds, and distinct per login.
    pub(super) fn cookie_name(&self, state: &str) -> String {
        let digest = digest::digest(&digest::SHA256, state.as_bytes());
        let id = digest.as_ref().get(..LOGIN_ID_BYTES).unwrap_or_default();
        let mut name = String::with_capacity(self.prefix.len() + LOGIN_ID_LEN);
        name.push_str(&self.prefix);
        URL_SAFE_NO_PAD.encode_string(id, &mut name);
        name
    }

    pub(super) fn is_own(&self, name: &[u8]) -> bool {
        name.strip_prefix(self.prefix.as_bytes()).is_some_and(|id| {
            id.len() == LOGIN_ID_LEN
                && id
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// A `Cookie` header value carrying `plain` as the login state of `state` (fuzzing).
    #[cfg(feature = "fuzzing")]
    pub(super) fn fuzz_header(&self, state: &str, plain: &[u8]) -> String {
        let name = self.cookie_name(state);
        let mut buf = seal::plaintext_buffer(plain.len());
        buf.extend_from_slice(plain);
        let text = self.keys.seal(name.as_bytes(), buf).unwrap_or_default();
        format!("{name}={text}")
    }
}

pub(super) fn seal_json<T: Serialize>(
    keys: &KeyRing,
    aad: &[u8],
    value: &T,
    capacity: usize,
) -> Result<String, SessionError> {
    let mut buf = seal::plaintext_buffer(capacity);
    serde_json::to_writer(&mut buf, value)?;
    keys.seal(aad, buf).map_err(|_| SessionError::Seal)
}
