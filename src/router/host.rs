//! The request's host: exactly one, valid, and the same whichever field carries it.
//!
//! A request whose host is missing, repeated or malformed is refused before routing, so no part of the
//! gateway and nothing upstream (`Host`, `X-Forwarded-Host`) ever sees one:
//! - HTTP/1.1 requires exactly one `Host` with a valid value, else 400 (RFC 9112 section 3.2);
//!   HTTP/1.0 may omit it. A request target in absolute form names the host itself, and the `Host`
//!   field is then replaced by it (section 3.2.2);
//! - HTTP/2 carries the host in `:authority`; a `host` field that names another host makes the
//!   request malformed (RFC 9113 section 8.3.1), and a matching one is replaced by `:authority`.
//!
//! Valid means RFC 3986's `host [ ":" port ]`: a registered name of unreserved characters,
//! sub-delimiters and percent-escapes, an IPv4 address, or an IPv6 address in brackets; never a
//! user (`@`), a path, a query or a space.
//!
//! Routes may name hosts (`[[routes]] host`, [`HostPattern`]): one name, or every name under a domain
//! (`*.corp.example`). A request's host is matched by its [`name`]: without the port, without one
//! trailing dot (`grafana.corp.example.` is the same DNS name), and regardless of case, all without
//! allocating.

use std::net::{Ipv6Addr, SocketAddr};

use http::{header, HeaderValue, Request, Version};

use crate::error::{ErrorKind, GatewayError};

/// Why a request's host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("no Host field")]
    Missing,
    #[error("more than one Host field")]
    Repeated,
    #[error("the Host field is not a valid host and port")]
    Invalid,
    #[error("the request target's authority is not a valid host and port")]
    InvalidAuthority,
    #[error("the Host field names another host than :authority")]
    Conflicting,
}

/// Check the request's host (see the module header) and leave at most one `Host` field, naming it.
pub fn check<B>(req: &mut Request<B>, peer: SocketAddr) -> Result<(), GatewayError> {
    canonicalize(req).map_err(|e| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("refused request from {peer}: {e}"),
        )
    })
}

fn canonicalize<B>(req: &mut Request<B>) -> Result<(), HostError> {
    let mut fields = req.headers().get_all(header::HOST).iter();
    let host = fields.next();
    if fields.next().is_some() {
        return Err(HostError::Repeated);
    }
    if host.is_some_and(|h| !valid_host(h.as_bytes())) {
        return Err(HostError::Invalid);
    }
    let Some(authority) = req.uri().authority() else {
        return match (host, req.version()) {
            (Some(_), _) | (None, Version::HTTP_10 | Version::HTTP_09) => Ok(()),
            (None, _) => Err(HostError::Missing),
        };
    };
    if !valid_host(authority.as_str().as_bytes()) {
        return Err(HostError::InvalidAuthority);
    }
    if req.version() == Version::HTTP_2 {
        if let Some(host) = host {
            let https = req.uri().scheme_str() == Some("https");
            if !same_host(host.as_bytes(), authority.as_str().as_bytes(), https) {
                return Err(HostError::Conflicting);
            }
        }
    } else if host.is_none() && req.version() == Version::HTTP_11 {
        return Err(HostError::Missing);
    }
    let value =
        HeaderValue::from_str(authority.as_str()).map_err(|_| HostError::InvalidAuthority)?;
    req.headers_mut().insert(header::HOST, value);
    Ok(())
}

/// Whether two valid hosts name the same entity: equal but for case and a default port (RFC 3986
/// section 6.2.3).
fn same_host(a: &[u8], b: &[u8], https: bool) -> bool {
    let default_port: &[u8] = if https { b":443" } else { b":80" };
    let strip = |h: &'_ [u8]| -> Vec<u8> {
        let h = h.strip_suffix(default_port).unwrap_or(h);
        h.to_ascii_lowercase()
    };
    strip(a) == strip(b)
}

/// RFC 3986 `host [ ":" port ]` with a non-empty host (RFC 9110 section 4.2.1: an http URI never has an
/// empty host).
pub fn valid_host(value: &[u8]) -> bool {
    let port = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        let is_v6 = std::str::from_utf8(literal)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .is_some();
        if !is_v6 {
            return false;
        }
        &value[end + 1..]
    } else {
        let (host, port) = match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        };
        if host.is_empty() || !valid_reg_name(host) {
            return false;
        }
        port
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// RFC 3986 `reg-name` (which includes IPv4 addresses): unreserved, sub-delims, pct-encoded.
fn valid_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                let hex = |j: usize| name.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// A `[[routes]] host`: one host name, or every name under a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This name, lower-case.
    Exact(String),
    /// `*.corp.example`: any name of one label or more under the domain, kept as the lower-case
    /// suffix with its dot (`.corp.example`). The domain itself does not match.
    Subdomains(String),
}

impl HostPattern {
    /// A pattern as written in the configuration: `grafana.corp.example` or `*.corp.example`, in
    /// any case, without a port or a trailing dot; an internationalised name in its A-label form
    /// (`xn--...`).
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        match lower.strip_prefix("*.") {
            Some(domain) => {
                dns_name(domain)?;
                Ok(HostPattern::Subdomains(format!(".{domain}")))
            }
            None => {
                dns_name(&lower)?;
                Ok(HostPattern::Exact(lower))
            }
        }
    }

    /// Whether a request's host [`name`] matches: equal but for case, or (a wildcard) under the
    /// domain with at least one non-empty label before it.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => name.eq_ignore_ascii_case(exact),
            HostPattern::Subdomains(suffix) => {
                let (name, suffix) = (name.as_bytes(), suffix.as_bytes());
                name.len() > suffix.len() && {
                    let (labels, tail) = name.split_at(name.len() - suffix.len());
                    tail.eq_ignore_ascii_case(suffix)
                        && labels.first() != Some(&b'.')
                        && labels.last() != Some(&b'.')
                        && !labels.windows(2).any(|w| w == b"..")
                }
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// A lower-case DNS name as the configuration may give one (a route's host without its `*.`, the
/// cookie domain): labels of letters, digits, `-` and `_`, 1 to 63 bytes each, 253 in all.
pub fn dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("expected a host name such as \"grafana.corp.example\"".into());
    }
    if !name.is_ascii() {
        return Err(format!(
            "{name:?} is not ASCII: write an internationalised name in its xn-- form"
        ));
    }
    if name.contains(':') || name.contains('/') {
        return Err(format!(
            "{name:?}: a host name only (the port is ignored when matching; no scheme or path)"
        ));
    }
    if name.contains('*') {
        return Err(format!(
            "{name:?}: a wildcard is only allowed as the first label (\"*.corp.example\")"
        ));
    }
    let labels_ok = name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !labels_ok {
        return Err(format!(
            "{name:?} is not a host name (labels of letters, digits, '-' and '_', separated by single dots, no trailing dot)"
        ));
    }
    Ok(())
}

/// The host name a `Host` value (already checked by [`check`]) names, for matching routes: without the
/// port and without one trailing dot. `None` for an IPv6 literal, which no route names.
pub fn name(value: &[u8]) -> Option<&str> {
    if value.first() == Some(&b'[') {
        return None;
    }
    let host = match value.iter().rposition(|&b| b == b':') {
        Some(colon) => &value[..colon],
        None => value,
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    std::str::from_utf8(host).ok().filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_names_regardless_of_case_and_port() {
        let exact = HostPattern::parse("Grafana.Corp.Example").unwrap();
        assert_eq!(exact, HostPattern::Exact("grafana.corp.example".into()));
        let wild = HostPattern::parse("*.corp.example").unwrap();
        assert_eq!(wild.to_string(), "*.corp.example");
        let matches =
            |p: &HostPattern, host: &str| name(host.as_bytes()).is_some_and(|n| p.matches(n));
        for host in [
            "grafana.corp.example",
            "GRAFANA.corp.EXAMPLE",
            "grafana.corp.example:8443",
            "grafana.corp.example.",
            "grafana.corp.example.:80",
        ] {
            assert!(matches(&exact, host), "{host}");
        }
        for host in [
            "wiki.corp.example",
            "grafana.corp.example.evil",
            "corp.example",
            "[::1]:80",
        ] {
            assert!(!matches(&exact, host), "{host}");
        }
        for host in [
            "a.corp.example",
            "a.b.corp.example",
            "A.CORP.example:1",
            "x-y.corp.example.",
        ] {
            assert!(matches(&wild, host), "{host}");
        }
        for host in [
            "corp.example",
            ".corp.example",
            "a..corp.example",
            "..corp.example",
            "acorp.example",
            "corp.example.evil.com",
            "a.corp.example.evil.com",
            "a.corp.examples",
        ] {
            assert!(!matches(&wild, host), "{host}");
        }
    }

    #[test]
    fn host_patterns_refuse_what_is_not_a_name() {
        for bad in [
            "",
            "*",
            "*.",
            "a.*.example",
            "*a.example",
            "grafana.corp.example:3000",
            "http://grafana.corp.example",
            "grafana.corp.example.",
            "a..example",
            ".example",
            "gr\u{e4}fana.example",
            "a b.example",
            "a%2e.example",
            &format!("{}.example", "a".repeat(64)),
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(HostPattern::parse("xn--grfana-bua.example").is_ok());
        assert!(HostPattern::parse("10.0.0.1").is_ok());
    }

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    fn host_after(
        version: Version,
        uri: &str,
        hosts: &[&str],
    ) -> Result<Option<String>, HostError> {
        let mut req = request(version, uri, hosts);
        canonicalize(&mut req)?;
        let all: Vec<_> = req.headers().get_all(header::HOST).iter().collect();
        assert!(all.len() <= 1);
        Ok(all.first().map(|h| h.to_str().unwrap().to_string()))
    }

    #[test]
    fn valid_hosts() {
        for h in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com",
            "127.0.0.1",
            "127.0.0.1:4180",
            "[::1]",
            "[::1]:4180",
            "xn--bcher-kva.example",
            "a_b.example",
            "caf%C3%A9.example",
            "example.com:",
        ] {
            assert!(valid_host(h.as_bytes()), "{h}");
        }
        for h in [
            "",
            ":80",
            "evil.example/x?y@z <script>",
            "user@example.com",
            "example.com:80x",
            "example.com:123456",
            "a b",
            "[::1",
            "[::1]x",
            "[not-v6]",
            "[v1.x]",
            "example.com/",
            "example.com?",
            "example.com#",
            "ex\"ample",
            "a:b:c",
            "%zz.example",
            "%4",
        ] {
            assert!(!valid_host(h.as_bytes()), "{h}");
        }
    }

    #[test]
    fn http1_needs_exactly_one_valid_host() {
        let v11 = Version::HTTP_11;
        assert_eq!(
            host_after(v11, "/", &["a.example"]),
            Ok(Some("a.example".into()))
        );
        assert_eq!(host_after(v11, "/", &[]), Err(HostError::Missing));
        assert_eq!(
            host_after(v11, "/", &["a.example", "a.example"]),
            Err(HostError::Repeated)
        );
        assert_eq!(host_after(v11, "/", &["a/b"]), Err(HostError::Invalid));
        assert_eq!(host_after(Version::HTTP_10, "/", &[]), Ok(None));
        assert_eq!(
            host_after(Version::HTTP_10, "/", &["a b"]),
            Err(HostError::Invalid)
        );
    }

    #[test]
    fn an_absolute_target_names_the_host() {
        let v11 = Version::HTTP_11;
        assert_eq!(
            host_after(v11, "http://t.example/x", &["other.example"]),
            Ok(Some("t.example".into()))
        );
        assert_eq!(
            host_after(v11, "http://t.example/x", &[]),
            Err(HostError::Missing)
        );
        assert_eq!(
            host_after(Version::HTTP_10, "http://t.example:81/x", &[]),
            Ok(Some("t.example:81".into()))
        );
        assert_eq!(
            host_after(v11, "http://u@t.example/x", &["t.example"]),
            Err(HostError::InvalidAuthority)
        );
    }

    #[test]
    fn over_http2_the_authority_wins_and_another_host_is_refused() {
        let v2 = Version::HTTP_2;
        assert_eq!(
            host_after(v2, "http://good.example/", &[]),
            Ok(Some("good.example".into()))
        );
        assert_eq!(
            host_after(v2, "http://good.example/", &["GOOD.example"]),
            Ok(Some("good.example".into()))
        );
        assert_eq!(
            host_after(v2, "http://good.example/", &["good.example:80"]),
            Ok(Some("good.example".into()))
        );
        assert_eq!(
            host_after(v2, "https://good.example/", &["good.example:443"]),
            Ok(Some("good.example".into()))
        );
        assert_eq!(
            host_after(v2, "http://good.example/", &["evil.example"]),
            Err(HostError::Conflicting)
        );
        assert_eq!(
            host_after(v2, "http://good.example/", &["good.example:8080"]),
            Err(HostError::Conflicting)
        );
        assert_eq!(
            host_after(v2, "/", &["h.example"]),
            Ok(Some("h.example".into()))
        );
        assert_eq!(host_after(v2, "/", &[]), Err(HostError::Missing));
    }
}
