//! The session cookie: one sealed value, split over numbered cookies when large.
//!
//! The session is serialized (`payload`) and sealed once, and the sealed text is split over `NAME_0`,
//! `NAME_1`, ... only when it does not fit one cookie. Sealing once (rather than per chunk) means one
//! nonce, one tag and one key attempt per read, and a reordered, dropped or foreign chunk breaks the
//! tag. Reading never fails loudly: a missing, tampered or expired cookie is simply no session.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderValue};

use super::{pairs, Attributes, MAX_DUPLICATES};
use crate::session::payload;
use crate::session::seal::{self, KeyRing};
use crate::session::{Session, SessionError};

/// Longest cookie value we write or read. A multiple of 4, so every chunk but the last is whole
/// base64 quanta and decodes on its own; with the name and attributes it stays under 4096 bytes.
pub const CHUNK_LEN: usize = 3800;
/// Most chunks read back. Bounds the work and memory a hostile `Cookie` header can cause.
pub const MAX_CHUNKS: usize = 16;

pub(super) struct SessionCookie {
    /// `NAME`, the unchunked cookie and the AEAD's associated data.
    name: String,
    /// `NAME_`, the prefix of chunk names.
    chunk_prefix: String,
    keys: KeyRing,
}

impl SessionCookie {
    pub(super) fn new(name: &str, keys: KeyRing) -> SessionCookie {
        SessionCookie {
            name: name.to_string(),
            chunk_prefix: format!("{name}_"),
            keys,
        }
    }

    /// Our session cookie values in the request: up to [`MAX_DUPLICATES`] copies of the unchunked
    /// cookie, and the chunks by index.
    pub(super) fn locate<'h>(&self, headers: &'h HeaderMap) -> Candidates<'h> {
        let mut found = Candidates {
            whole: [&[]; MAX_DUPLICATES],
            whole_count: 0,
            chunks: [&[]; MAX_CHUNKS],
            present: 0,
        };
        for (name, value) in pairs(headers) {
            if name == self.name.as_bytes() {
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

    pub(super) fn open(&self, parts: &[&[u8]], now: u64) -> Option<Session> {
        let (last, init) = parts.split_last()?;
        if last.len() > CHUNK_LEN || init.iter().any(|p| p.len() > CHUNK_LEN || p.len() % 4 != 0) {
            return None;
        }
        let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() / 4 * 3 + 3);
        let plain = self.keys.open(self.name.as_bytes(), &mut buf, |raw| {
            parts.iter().all(|part| seal::decode_into(part, raw))
        })?;
        payload::decode(plain, now)
    }

    /// `Set-Cookie` values storing `session` (not expired at `now`), and deletions of stale cookies of
    /// ours present in `request` (chunks beyond the new count, or the unchunked cookie when now
    /// chunked, and vice versa).
    pub(super) fn write(
        &self,
        attributes: &Attributes,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, SessionError> {
        let text = self.seal(session)?;
        let count = text.len().div_ceil(CHUNK_LEN);
        if count > MAX_CHUNKS {
            return Err(SessionError::TooLarge {
                needed: text.len(),
                max: MAX_CHUNKS * CHUNK_LEN,
            });
        }
        let max_age = attributes.max_age(session.expires_at, now);
        let mut out = Vec::with_capacity(count + 1);
        if count == 1 {
            out.push(attributes.set_cookie(&self.name, &text, max_age));
        } else {
            let mut name = String::with_capacity(self.chunk_prefix.len() + 2);
            for (index, chunk) in text.as_bytes().chunks(CHUNK_LEN).enumerate() {
                // base64url text is ASCII, so any split is on a character boundary.
                let chunk = std::str::from_utf8(chunk).map_err(|_| SessionError::Seal)?;
                name.clear();
                name.push_str(&self.chunk_prefix);
                // Writing a number into a String cannot fail.
                let _ = write!(name, "{index}");
                out.push(attributes.set_cookie(&name, chunk, max_age));
            }
        }
        attributes.push_deletions(&mut out, request, |name| match self.chunk_index(name) {
            Some(index) => count == 1 || index >= count,
            None => count > 1 && name == self.name.as_bytes(),
        });
        Ok(out)
    }

    /// One cookie with `value` (a session id), deleting every chunk of ours in `request`.
    pub(super) fn write_single(
        &self,
        attributes: &Attributes,
        value: &str,
        expires_at: u64,
        request: &HeaderMap,
        now: u64,
    ) -> Vec<HeaderValue> {
        let mut out =
            vec![attributes.set_cookie(&self.name, value, attributes.max_age(expires_at, now))];
        attributes.push_deletions(&mut out, request, |name| self.chunk_index(name).is_some());
        out
    }

    /// The sealed text of `session`, before any chunking.
    fn seal(&self, session: &Session) -> Result<String, SessionError> {
        let mut plain = seal::plaintext_buffer(payload::size_hint(session));
        payload::encode(session, &mut plain)?;
        self.keys
            .seal(self.name.as_bytes(), plain)
            .map_err(|_| SessionError::Seal)
    }

    pub(super) fn clear(&self, attributes: &Attributes, request: &HeaderMap) -> Vec<HeaderValue> {
        let mut out = vec![attributes.removal(&self.name)];
        attributes.push_deletions(&mut out, request, |name| self.chunk_index(name).is_some());
        // With a cookie domain, a host-only copy (set before the domain was configured) would
        // outlive the sign-out on its host: deleted too, by its own attributes.
        attributes.push_host_only_deletions(&mut out, request, |name| self.is_own(name));
        out
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

    pub(super) fn is_own(&self, name: &[u8]) -> bool {
        name == self.name.as_bytes() || self.chunk_index(name).is_some()
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// A `Cookie` header value carrying `plain` sealed and chunked as `write` does (fuzzing).
    #[cfg(feature = "fuzzing")]
    pub(super) fn fuzz_header(&self, plain: &[u8]) -> Option<String> {
        let mut buf = seal::plaintext_buffer(plain.len());
        buf.extend_from_slice(plain);
        let text = self.keys.seal(self.name.as_bytes(), buf).ok()?;
        if text.len() <= CHUNK_LEN {
            return Some(format!("{}={text}", self.name));
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
}

/// The session cookie values found in one request.
pub struct Candidates<'h> {
    whole: [&'h [u8]; MAX_DUPLICATES],
    whole_count: usize,
    chunks: [&'h [u8]; MAX_CHUNKS],
    present: u32,
}

impl<'h> Candidates<'h> {
    /// The values worth opening, in order: each copy of the unchunked cookie, then the chunks when
    /// they run from 0 without a gap (a gap means a lost cookie, so no session).
    pub fn iter(&self) -> impl Iterator<Item = &[&'h [u8]]> + '_ {
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
