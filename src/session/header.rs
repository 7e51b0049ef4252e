//! Reading and filtering `Cookie` request headers.
//!
//! Hand-written rather than `cookie::Cookie::split_parse` because it runs on every request and must
//! not allocate: it yields borrowed `(name, value)` byte slices straight out of the header values.
//! It follows the user-agent side of RFC 6265 section 4.2.1 (`name=value` pairs separated by `; `)
//! but tolerates what real clients send: several `Cookie` headers (HTTP/2 may split the field,
//! RFC 9113 section 8.2.3), missing spaces, empty parts, parts without `=`, quoted values and
//! bytes that are not UTF-8. A malformed part is skipped; it never hides the parts around it.
//!
//! The `Cookie` header carries the sealed session (a kilobyte or more), and it is scanned on every
//! request: separators are found with `memchr` (SIMD) rather than byte by byte, and a header is only
//! rebuilt when it holds a cookie of ours next to foreign ones.

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// Every `(name, value)` pair of every `Cookie` header, in order. Values lose one pair of
/// surrounding double quotes (RFC 6265 section 4.1.1 allows `cookie-value = DQUOTE ... DQUOTE`).
pub(super) fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| parts(value.as_bytes()))
        .filter_map(parse_pair)
}

/// The `;`-separated parts of one header value, like `split(|&b| b == b';')`, found with `memchr`.
fn parts(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(i) => {
                rest = current.get(i + 1..);
                current.get(..i)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn parse_pair(part: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = memchr::memchr(b'=', part)?;
    let (name, value) = part.split_at(eq);
    let name = name.trim_ascii();
    if name.is_empty() {
        return None;
    }
    let value = value.get(1..)?.trim_ascii();
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    Some((name, value))
}

/// Remove every cookie whose name `is_ours` says so from the `Cookie` header(s). Other cookies keep
/// their bytes and their order; a header left empty is dropped. Without any cookie of ours the
/// headers are not touched at all (the common case for public routes costs one scan).
pub(super) fn strip(headers: &mut HeaderMap, is_ours: impl Fn(&[u8]) -> bool) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), None) = (values.next(), values.next()) else {
        return strip_all(headers, &is_ours);
    };
    // One header (HTTP/1.1 always, HTTP/2 usually): filter it in one pass, replace it in place.
    match filtered(first.as_bytes(), &is_ours) {
        None => {}
        Some(out) if out.is_empty() => {
            headers.remove(COOKIE);
        }
        Some(out) => {
            if let Some(value) = rebuilt(out, first) {
                headers.insert(COOKIE, value);
            }
        }
    }
}

/// [`strip`] for several `Cookie` headers.
fn strip_all(headers: &mut HeaderMap, is_ours: &impl Fn(&[u8]) -> bool) {
    let mut changed = false;
    let mut kept: Vec<HeaderValue> = Vec::new();
    for value in headers.get_all(COOKIE) {
        match filtered(value.as_bytes(), is_ours) {
            None => kept.push(value.clone()),
            Some(out) => {
                changed = true;
                if !out.is_empty() {
                    kept.extend(rebuilt(out, value));
                }
            }
        }
    }
    if !changed {
        return;
    }
    headers.remove(COOKIE);
    for value in kept {
        headers.append(COOKIE, value);
    }
}

/// The parts of one header value that are not ours, joined by `"; "`; `None` when it holds no
/// cookie of ours. Nothing is copied before the first cookie of ours is seen.
fn filtered(bytes: &[u8], is_ours: &impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut foreign_before = 0;
    for part in parts(bytes) {
        let ours = parse_pair(part).is_some_and(|(name, _)| is_ours(name));
        match (&mut out, ours) {
            (None, false) => foreign_before += 1,
            (None, true) => {
                // First cookie of ours: copy the foreign parts seen so far, then go on filtering.
                // Foreign cookies are usually short next to the session: start small.
                let mut buf = Vec::with_capacity(bytes.len().min(128));
                for earlier in parts(bytes).take(foreign_before) {
                    push_part(&mut buf, earlier);
                }
                out = Some(buf);
            }
            (Some(buf), false) => push_part(buf, part),
            (Some(_), true) => {}
        }
    }
    out
}

fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    let part = part.trim_ascii();
    if part.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.extend_from_slice(b"; ");
    }
    out.extend_from_slice(part);
}

/// A header value of the filtered bytes (taken over, not copied), as sensitive as the one it came
/// from.
fn rebuilt(out: Vec<u8>, from: &HeaderValue) -> Option<HeaderValue> {
    // The bytes all come from a valid header value joined by "; ", so this cannot fail.
    let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()?;
    value.set_sensitive(from.is_sensitive());
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(COOKIE, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn collect(headers: &HeaderMap) -> Vec<(String, String)> {
        pairs(headers)
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn parses_pairs_across_headers_and_tolerates_junk() {
        let headers = map(&[
            b"a=1; b = 2 ;;  junk ; =novalue; c=\"quoted\"",
            b"d=x=y;e=;\xff=\xfe",
        ]);
        assert_eq!(
            collect(&headers),
            [
                ("a", "1"),
                ("b", "2"),
                ("c", "quoted"),
                ("d", "x=y"),
                ("e", ""),
                ("\u{fffd}", "\u{fffd}"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn parts_split_like_slice_split() {
        for case in [&b""[..], b";", b"a", b"a;b", b";a;;b;", b"a=1; b=2"] {
            let want: Vec<&[u8]> = case.split(|&b| b == b';').collect();
            assert_eq!(parts(case).collect::<Vec<_>>(), want, "{case:?}");
        }
    }

    #[test]
    fn strip_keeps_foreign_cookies_in_order_and_drops_empty_headers() {
        let mut headers = map(&[b"x=1; ours=2;y=\"3\"; flag", b"ours_1=a", b"z=9"]);
        strip(&mut headers, |name| name.starts_with(b"ours"));
        let values: Vec<_> = headers.get_all(COOKIE).iter().collect();
        assert_eq!(values, ["x=1; y=\"3\"; flag", "z=9"]);
    }

    #[test]
    fn strip_without_own_cookies_leaves_headers_untouched() {
        let mut headers = map(&[b"x=1;y=2", b" z=3 "]);
        let before = headers.clone();
        strip(&mut headers, |name| name == b"ours");
        assert_eq!(headers, before);
    }

    #[test]
    fn strip_removes_the_header_when_nothing_is_left() {
        let mut headers = map(&[b"ours=1", b"ours=2; ;"]);
        strip(&mut headers, |name| name == b"ours");
        assert!(headers.get(COOKIE).is_none());
    }
}
