//! The one canonical view of a request path, shared by routing, policy and the upstream.
//!
//! Gateways have been bypassed whenever the path they matched differed from the path the application
//! served: `/public/../admin`, `/%61dmin`, `/public/..;/admin`, `//admin`. So the path is normalised once
//! (RFC 3986 section 6.2.2) and that exact string is both matched by the route rules and sent upstream:
//! - percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded; every other escape is kept,
//!   with upper-case hex, because decoding a reserved character would change the path's meaning; raw
//!   UTF-8 and spaces are encoded, so a path has one spelling whichever way the client wrote it;
//! - dot-segments are resolved (section 5.2.4) and runs of `/` folded into one;
//! - anything whose meaning is ambiguous is refused rather than guessed at: an encoded `/` or `\`, a raw
//!   `\`, a NUL or other control character, an invalid escape, a path that is not origin-form, and a
//!   segment with parameters whose name is `.` or `..` (`/..;/`, which servlet containers read as `..`)
//!   or empty (`/;x/admin`, which Tomcat, Jetty and Spring read as `/admin`). A parameter delimiter
//!   written `%3B` counts as `;` here, since some containers decode it before cutting parameters.
//!
//! The query is never part of the canonical path: rules match the path only.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    #[error("an encoded '/' or '\\' makes the path ambiguous")]
    EncodedSeparator,
    #[error("a backslash in the path is ambiguous")]
    Backslash,
    #[error("the path contains a NUL or control character")]
    ControlCharacter,
    #[error("the path contains an invalid percent-escape")]
    InvalidEscape,
    #[error("a dot-segment with parameters (\"..;\") is ambiguous")]
    DotSegmentParameters,
    #[error("a segment with parameters but no name (\"/;x/\") is ambiguous")]
    EmptySegmentParameters,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Append `%XX` with upper-case hex.
fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

/// Whether `path` is already canonical, checked without allocating: the common case on the hot path.
fn is_canonical(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // A segment starting with '.' is fine unless it is "." or "..".
                let rest = &path[i..];
                let seg_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                let seg = &rest[..seg_end];
                if seg == b"." || seg == b".." {
                    return false;
                }
            }
            // Controls are refused, a space or a byte beyond ASCII is encoded: both by the slow path.
            _ if b <= 0x20 || b >= 0x7f => return false,
            _ => {}
        }
        prev = b;
    }
    true
}

/// The part of a segment before its parameters, when it has any: up to the first `;`, or `%3B` (escapes
/// are upper-case by now).
fn name_before_parameters(segment: &str) -> Option<&str> {
    let raw = segment.find(';');
    let encoded = segment.find("%3B");
    let cut = match (raw, encoded) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    Some(&segment[..cut])
}

/// The canonical form of an origin-form request path.
pub fn canonicalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(bytes) {
        return Ok(Cow::Borrowed(path));
    }

    // Pass 1: decode unreserved escapes, normalise the others, refuse the ambiguous ones.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::InvalidEscape);
                };
                let v = h * 16 + l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    v if is_unreserved(v) => decoded.push(char::from(v)),
                    v => push_escape(&mut decoded, v),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            // The http crate admits UTF-8 in a path: its bytes are encoded, so `/café` and
            // `/caf%C3%A9` are one path, matched in the encoded form either way.
            b' ' | 0x80..=0xff => {
                push_escape(&mut decoded, b);
                i += 1;
            }
            _ => {
                decoded.push(char::from(b));
                i += 1;
            }
        }
    }

    // Pass 2: fold empty segments and resolve dot-segments (RFC 3986 section 5.2.4).
    let trailing_slash = decoded.ends_with('/');
    let mut segments: Vec<&str> = Vec::new();
    let mut last_was_dot = false;
    for seg in decoded.split('/') {
        if let Some(name) = name_before_parameters(seg) {
            match name {
                "" => return Err(PathError::EmptySegmentParameters),
                "." | ".." => return Err(PathError::DotSegmentParameters),
                _ => {}
            }
        }
        last_was_dot = false;
        match seg {
            "" => {}
            "." => last_was_dot = true,
            ".." => {
                segments.pop();
                last_was_dot = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || ((trailing_slash || last_was_dot) && !segments.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(p: &str) -> Result<String, PathError> {
        canonicalize(p).map(Cow::into_owned)
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/a.b/.well-known/c", "/x-y_z~"] {
            assert!(matches!(canonicalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn known_bypasses_resolve_to_the_real_target() {
        assert_eq!(c("/public/../admin").unwrap(), "/admin");
        assert_eq!(c("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(c("/public/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(c("/%61dmin").unwrap(), "/admin");
        assert_eq!(c("//admin").unwrap(), "/admin");
        assert_eq!(c("/./admin").unwrap(), "/admin");
        assert_eq!(c("/public/./../../admin/").unwrap(), "/admin/");
        assert_eq!(c("/..").unwrap(), "/");
        assert_eq!(c("/a/.").unwrap(), "/a/");
        assert_eq!(c("/a/..").unwrap(), "/");
        assert_eq!(c("/a//b///c").unwrap(), "/a/b/c");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(c("/public%2F..%2Fadmin"), Err(PathError::EncodedSeparator));
        assert_eq!(c("/public%2f..%2fadmin"), Err(PathError::EncodedSeparator));
        assert_eq!(c("/public%5C..%5Cadmin"), Err(PathError::EncodedSeparator));
        assert_eq!(c("/public\\..\\admin"), Err(PathError::Backslash));
        assert_eq!(c("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(c("/a%0Ab"), Err(PathError::ControlCharacter));
        assert_eq!(c("/a%zz"), Err(PathError::InvalidEscape));
        assert_eq!(c("/a%4"), Err(PathError::InvalidEscape));
        assert_eq!(c("/public/..;/admin"), Err(PathError::DotSegmentParameters));
        assert_eq!(c("/public/.;x/admin"), Err(PathError::DotSegmentParameters));
        assert_eq!(c("/..%3B/admin"), Err(PathError::DotSegmentParameters));
        assert_eq!(c("/.%3bx/admin"), Err(PathError::DotSegmentParameters));
        for p in [
            "/;x/admin",
            "/;/admin",
            "/;",
            "/a/;",
            "/a//;x/b",
            "/%3Bx/admin",
            "/%3b/admin",
        ] {
            assert_eq!(c(p), Err(PathError::EmptySegmentParameters), "{p}");
        }
        assert_eq!(c("*"), Err(PathError::NotAbsolute));
        assert_eq!(c(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn reserved_escapes_are_kept_and_normalised() {
        assert_eq!(c("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(c("/a%25b").unwrap(), "/a%25b");
        assert_eq!(c("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        // Raw UTF-8 (which the http crate admits) is one path with its encoded form.
        assert_eq!(c("/caf\u{e9}").unwrap(), "/caf%C3%A9");
        assert_eq!(c("/a b").unwrap(), "/a%20b");
        assert_eq!(c("/a;b=c/d").unwrap(), "/a;b=c/d");
        assert_eq!(c("/a;jsessionid=1").unwrap(), "/a;jsessionid=1");
        assert_eq!(c("/a%3bb").unwrap(), "/a%3Bb");
        assert_eq!(c("/...;x/a").unwrap(), "/...;x/a");
    }

    /// Paths made of the pieces path confusion is made of: dot-segments plain and encoded,
    /// separators plain and encoded, parameters, escapes valid and not.
    fn arb_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => prop::sample::select(vec![
                "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", ".%2E", "%2f", "%2F", "%5c", "%5C", "\\",
                ";", ";x", "%3b", "%3B", "a", "A", "%41", "%61", "~", "%7e", "%", "%z", "%4", "%00",
                "%0a", "%25", "%3F", "%C3%A9", "admin", "public",
            ])
            .prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..16).prop_map(|p| format!("/{}", p.concat()))
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(path in "/[a-zA-Z0-9%./;~_\\-]{0,40}") {
            if let Ok(once) = canonicalize(&path) {
                let twice = c(&once).expect("canonical output is valid input");
                prop_assert_eq!(once.as_ref(), twice.as_str());
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"));
                prop_assert!(!once.split('/').any(|s| s == ".." || s == "."));
            }
        }

        /// Canonical output is a fixed point and carries none of what makes a path ambiguous: no
        /// `//`, no dot-segment, no encoded separator, no escape of an unreserved character, no
        /// lower-case escape, no parameters on an empty or dot name, nothing but visible ASCII.
        #[test]
        fn canonical_paths_are_fixed_points_without_ambiguity(path in arb_path()) {
            let Ok(once) = canonicalize(&path) else { return Ok(()) };
            let twice = c(&once).expect("canonical output is valid input");
            prop_assert_eq!(once.as_ref(), twice.as_str());
            prop_assert!(once.starts_with('/'));
            prop_assert!(!once.contains("//"), "{}", once);
            prop_assert!(once.bytes().all(|b| b.is_ascii_graphic()), "{}", once);
            let upper = once.to_ascii_uppercase();
            prop_assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{}", once);
            prop_assert!(!once.contains('\\'));
            for seg in once.split('/').skip(1) {
                prop_assert!(seg != "." && seg != "..", "{}", once);
                if let Some(name) = name_before_parameters(seg) {
                    prop_assert!(!matches!(name, "" | "." | ".."), "{}", once);
                }
            }
            let bytes = once.as_bytes();
            for (i, _) in once.match_indices('%') {
                let (h, l) = (bytes[i + 1], bytes[i + 2]);
                prop_assert!(h.is_ascii_hexdigit() && l.is_ascii_hexdigit());
                prop_assert!(!h.is_ascii_lowercase() && !l.is_ascii_lowercase(), "{}", once);
                let v = hex(h).unwrap() * 16 + hex(l).unwrap();
                prop_assert!(!is_unreserved(v), "{}", once);
            }
        }
    }
}
