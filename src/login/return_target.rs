//! Where a browser may be sent after a login or a sign-out: the return target rules (SPEC "Many tools
//! behind one login", "Return targets").
//!
//! A target is either a relative path on the origin the browser is on, or an absolute URL whose scheme
//! is `public_url`'s and whose host is `public_url`'s, named by a route, or the cookie domain or under
//! it: the hosts one login serves. Everything else goes to `public_url` + `/`, never to an error page:
//! another host, a look-alike (`corp.example.evil.com`, `evilcorp.example`), a user part (`@` in the
//! authority), an escape in the host (`%2e` for a dot), a backslash (browsers read `\` as `/`),
//! non-ASCII, and any control or space character, raw or percent-decoded (browsers drop tabs and
//! newlines from URLs, so `/%09/evil.example` would become `//evil.example`).
//!
//! The checks are made on the text as it is, without a URL parser's repairs: a parser that accepts
//! what a browser would read differently is the usual way an open redirect gets through.

use std::borrow::Cow;

use url::Url;

use crate::router::host::HostPattern;

/// Longest return target kept; longer ones fall back (a login cookie must stay small).
pub const MAX_RETURN_TARGET: usize = 2048;

/// The return target rules of one configuration.
#[derive(Debug, Clone)]
pub struct ReturnTargets {
    /// `public_url` + `/`: where a refused target goes.
    fallback: String,
    /// `public_url`'s scheme: the only one an absolute target may have.
    scheme: String,
    /// `public_url`'s host, lower-case (an IPv6 address in brackets).
    public_host: String,
    /// `public_url`'s port, when not the scheme's default.
    public_port: Option<u16>,
    /// The hosts routes name.
    hosts: Vec<HostPattern>,
    /// `session.cookie_domain`, lower-case.
    cookie_domain: Option<String>,
}

impl ReturnTargets {
    pub fn new<'h>(
        public_url: &Url,
        hosts: impl IntoIterator<Item = &'h HostPattern>,
        cookie_domain: Option<&str>,
    ) -> ReturnTargets {
        let mut root = public_url.clone();
        root.set_path("/");
        root.set_query(None);
        ReturnTargets {
            fallback: root.into(),
            scheme: public_url.scheme().to_string(),
            public_host: public_url
                .host_str()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            public_port: public_url.port(),
            hosts: hosts.into_iter().cloned().collect(),
            cookie_domain: cookie_domain.map(str::to_ascii_lowercase),
        }
    }

    /// Where a refused target goes: `public_url` + `/`.
    pub fn fallback(&self) -> &str {
        &self.fallback
    }

    /// `target` when the rules allow it, else `public_url` + `/`.
    pub fn check<'t>(&'t self, target: &'t str) -> &'t str {
        if self.allowed(target) {
            target
        } else {
            &self.fallback
        }
    }

    /// Whether the rules allow `target` (see the module header).
    pub fn allowed(&self, target: &str) -> bool {
        let raw = target.as_bytes();
        if raw.is_empty() || raw.len() > MAX_RETURN_TARGET || raw.iter().any(|&b| refused_byte(b)) {
            return false;
        }
        let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(raw).into();
        // Decoded, a byte beyond ASCII is a character of the path (`%C3%A9`), which is fine; a
        // control, a space or a backslash is not.
        if decoded
            .iter()
            .any(|&b| b == b'\\' || b <= b' ' || b == 0x7f)
        {
            return false;
        }
        if raw[0] == b'/' {
            // A path on this origin: never `//host` or `/\host` (a network-path reference), also
            // once decoded (`/%2F/evil.example`).
            return [raw, &decoded[..]]
                .iter()
                .all(|s| s.first() == Some(&b'/') && !matches!(s.get(1), Some(b'/' | b'\\')));
        }
        self.allowed_absolute(target)
    }

    fn allowed_absolute(&self, target: &str) -> bool {
        let Some(rest) = target
            .strip_prefix(self.scheme.as_str())
            .and_then(|r| r.strip_prefix("://"))
        else {
            return false;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains(['@', '%']) {
            return false;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((addr, port)) => (&authority[..addr.len() + 2], port),
                None => return false,
            },
            // The port keeps its colon, so `host:` (an empty port) is told from no port.
            None => match authority.rfind(':') {
                Some(colon) => authority.split_at(colon),
                None => (authority, ""),
            },
        };
        let port_ok = match port.strip_prefix(':') {
            None => port.is_empty(),
            Some(digits) => {
                (1..=5).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            }
        };
        port_ok && self.host_allowed(host)
    }

    /// Whether `host` (as written in a URL, without its port) is one of the hosts one login serves.
    fn host_allowed(&self, host: &str) -> bool {
        if host.is_empty() {
            return false;
        }
        if host.starts_with('[') {
            return host.eq_ignore_ascii_case(&self.public_host);
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return false;
        }
        host.eq_ignore_ascii_case(&self.public_host)
            || self.hosts.iter().any(|pattern| pattern.matches(host))
            || self.cookie_domain.as_deref().is_some_and(|domain| {
                host.eq_ignore_ascii_case(domain)
                    || host.len() > domain.len() + 1
                        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                        && !host.starts_with('.')
                        && !host.contains("..")
            })
    }

    /// The target that brings a browser back to `path_and_query` on `host` (the request's `Host`
    /// value, port included): that path as it is on `public_url`'s own host and port (or when the
    /// host is unknown), else an absolute URL with `scheme` (default: `public_url`'s). Not checked
    /// here: [`ReturnTargets::check`] decides when the login starts.
    pub fn on_host(
        &self,
        scheme: Option<&str>,
        host: Option<&str>,
        path_and_query: &str,
    ) -> String {
        let scheme = scheme.unwrap_or(self.scheme.as_str());
        match host {
            Some(host) if !(scheme == self.scheme && self.is_public_authority(host)) => {
                format!("{scheme}://{host}{path_and_query}")
            }
            _ => path_and_query.to_string(),
        }
    }

    /// Whether a `Host` value names `public_url`'s host and port (the default port may be spelt out).
    fn is_public_authority(&self, authority: &str) -> bool {
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, port.parse::<u16>().ok()),
            _ => (authority, None),
        };
        let port = port.filter(|&p| p != default_port);
        host.eq_ignore_ascii_case(&self.public_host) && port == self.public_port
    }
}

/// A byte no return target may contain as it is: a backslash, a control or space character, or
/// anything beyond ASCII.
fn refused_byte(b: u8) -> bool {
    b == b'\\' || b <= b' ' || b >= 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> ReturnTargets {
        let hosts = [
            HostPattern::parse("grafana.tools.example").unwrap(),
            HostPattern::parse("*.apps.example").unwrap(),
        ];
        ReturnTargets::new(
            &Url::parse("https://login.corp.example").unwrap(),
            &hosts,
            Some("corp.example"),
        )
    }

    #[test]
    fn relative_paths_and_the_hosts_one_login_serves_are_allowed() {
        let r = rules();
        for good in [
            "/",
            "/a/b?c=d",
            "/a//b",
            "/caf%C3%A9?q=a+b",
            "/docs?page=2#top",
            "https://login.corp.example/",
            "https://login.corp.example",
            "https://LOGIN.corp.example:8443/x?y=1",
            "https://wiki.corp.example/page",
            "https://corp.example/",
            "https://a.b.corp.example/deep",
            "https://grafana.tools.example/d/1?orgId=1",
            "https://GRAFANA.tools.example:3000/",
            "https://x.apps.example/",
            "https://x.y.apps.example/?q",
            "https://wiki.corp.example?q=1",
            "https://wiki.corp.example#frag",
        ] {
            assert!(r.allowed(good), "{good:?} was refused");
            assert_eq!(r.check(good), good);
        }
    }

    #[test]
    fn hostile_targets_fall_back_to_the_public_root() {
        let r = rules();
        for bad in [
            // Other hosts, and hosts that only look like ours.
            "https://evil.example/",
            "https://corp.example.evil.com/",
            "https://wiki.corp.example.evil.com/",
            "https://evilcorp.example/",
            "https://tools.example/",
            "https://apps.example/",
            "https://grafana.tools.example.evil/",
            "https://wiki.corp.example./",
            "https://.corp.example/",
            "https://a..corp.example/",
            // Another scheme, or none.
            "http://wiki.corp.example/",
            "HTTPS://wiki.corp.example/",
            "javascript:alert(1)",
            "data:text/html,x",
            "ftp://wiki.corp.example/",
            "https:wiki.corp.example/",
            "https:/wiki.corp.example/",
            "//wiki.corp.example/",
            "//evil.example",
            // A user part, in every position.
            "https://user@wiki.corp.example/",
            "https://wiki.corp.example@evil.example/",
            "https://wiki.corp.example:443@evil.example/",
            "https://a%40wiki.corp.example/",
            // An escape in the host: encoded dots, slashes, the host spelt in escapes.
            "https://evil%2Eexample/",
            "https://wiki%2ecorp.example/",
            "https://evil.example%2F.corp.example/",
            "https://%77iki.corp.example/",
            // Backslashes, raw or decoded.
            "/\\evil.example",
            "https:\\\\evil.example",
            "https://wiki.corp.example\\@evil.example/",
            "/%5Cevil.example",
            "https://wiki.corp.example/%5C",
            // Non-ASCII (look-alike dots and slashes).
            "https://wiki.corp\u{3002}example/",
            "https://wiki.corp.example\u{ff0f}evil.example",
            "/caf\u{e9}",
            // Controls and spaces, raw or decoded.
            "/\t/evil.example",
            "/%09/evil.example",
            "/%0A/evil.example",
            "/%00",
            " /x",
            "/x y",
            "/x%20y",
            "https://wiki.corp.example/%0D%0ASet-Cookie:x=1",
            "https://wiki.corp.example /",
            // Network-path references and their encodings.
            "/%2F/evil.example",
            "%2F%2Fevil.example",
            "/%2f%2fevil.example",
            // Malformed ports and authorities.
            "https://wiki.corp.example:/",
            "https://wiki.corp.example:99999x/",
            "https://wiki.corp.example:123456/",
            "https://:443/",
            "https:///x",
            "https://[::1]/",
            "",
            "evil",
        ] {
            assert!(!r.allowed(bad), "{bad:?} was allowed");
            assert_eq!(r.check(bad), "https://login.corp.example/", "{bad:?}");
        }
        assert!(!r.allowed(&format!("/{}", "a".repeat(MAX_RETURN_TARGET))));
    }

    #[test]
    fn without_a_cookie_domain_only_public_url_and_route_hosts_are_ours() {
        let hosts = [HostPattern::parse("grafana.tools.example").unwrap()];
        let r = ReturnTargets::new(&Url::parse("http://127.0.0.1:4180").unwrap(), &hosts, None);
        assert_eq!(r.fallback(), "http://127.0.0.1:4180/");
        assert!(r.allowed("http://127.0.0.1:4180/x"));
        assert!(r.allowed("http://grafana.tools.example/x"));
        assert!(!r.allowed("http://wiki.corp.example/x"));
        assert!(!r.allowed("http://127.0.0.2:4180/x"));
        let v6 = ReturnTargets::new(&Url::parse("http://[::1]:4180").unwrap(), [], None);
        assert!(v6.allowed("http://[::1]:4180/x"));
        assert!(!v6.allowed("http://[::2]:4180/x"));
        assert!(!v6.allowed("http://[::1/x"));
    }

    #[test]
    fn the_way_back_is_relative_on_public_url_and_absolute_elsewhere() {
        let r = rules();
        assert_eq!(r.on_host(None, None, "/a?b"), "/a?b");
        assert_eq!(r.on_host(None, Some("login.corp.example"), "/a"), "/a");
        assert_eq!(r.on_host(None, Some("LOGIN.corp.example:443"), "/a"), "/a");
        assert_eq!(
            r.on_host(None, Some("login.corp.example:8443"), "/a"),
            "https://login.corp.example:8443/a"
        );
        assert_eq!(
            r.on_host(None, Some("wiki.corp.example"), "/a?b=1"),
            "https://wiki.corp.example/a?b=1"
        );
        assert_eq!(
            r.on_host(Some("http"), Some("login.corp.example"), "/a"),
            "http://login.corp.example/a"
        );
    }

    /// Targets built from the pieces open redirects are made of, around hosts of ours.
    fn arb_target() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => prop::sample::select(vec![
                "/", "//", "\\", ".", "..", "%2F", "%2f", "%5C", "%2E", "%2e", "%09", "%0A", "%00",
                "%20", "%25", "%40", "%", "@", ":", ":443", "?", "#", " ", "\t", "\n", "[", "]",
                "https://", "https:", "http://", "javascript:", "evil.example", "corp.example",
                ".corp.example", "wiki.corp.example", "login.corp.example", "x.apps.example",
                "grafana.tools.example", "a", "\u{3002}", "\u{ff0f}",
            ])
            .prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
        ];
        let pieces = prop::collection::vec(piece, 0..8).prop_map(|p| p.concat());
        prop_oneof![
            3 => pieces.clone().prop_map(|p| format!("/{p}")),
            3 => pieces.clone().prop_map(|p| format!("https://{p}")),
            2 => pieces,
            1 => ".{0,30}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Whatever the target, the redirect it gives, resolved the way browsers resolve a
        /// Location (WHATWG URL parsing, from a page on any of our hosts), lands on a host one
        /// login serves, with our scheme; so does the same target percent-decoded once more.
        #[test]
        fn no_return_target_ever_leaves_the_hosts_of_one_login(target in arb_target()) {
            let r = rules();
            let safe = r.check(&target);
            prop_assert!(safe == target || safe == r.fallback());
            let decoded = percent_encoding::percent_decode_str(safe).decode_utf8_lossy();
            for base in ["https://login.corp.example/app/page", "https://x.apps.example/p"] {
                let base = Url::parse(base).unwrap();
                for candidate in [safe, decoded.as_ref()] {
                    if let Ok(url) = base.join(candidate) {
                        prop_assert_eq!(url.scheme(), "https", "{:?} -> {}", target, url);
                        let host = url.host_str().unwrap_or_default();
                        prop_assert!(
                            host == "login.corp.example"
                                || host == "corp.example"
                                || host.ends_with(".corp.example")
                                || host == "grafana.tools.example"
                                || host.ends_with(".apps.example")
                                || host == base.host_str().unwrap(),
                            "{:?} -> {}", target, url
                        );
                        prop_assert!(url.username().is_empty() && url.password().is_none());
                    }
                }
            }
        }
    }
}
