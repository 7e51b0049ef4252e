//! The route table: which handler a request goes to, decided on its method, host and canonical path.
//!
//! Order of precedence: the fixed health and metrics paths, then the gateway's own endpoints under the
//! prefix (`/oauth2` unless configured), then the `[[routes]]` rules (first match wins; a rule that
//! names a host matches only that host), then the default policy (login required). A listener of its
//! own for metrics (`server.metrics_listen`) has a table of three paths ([`metrics_listener_route`]).
//! Nothing here looks at another header or the query, so no client-controlled input other than the
//! method, the host and the path chooses the policy. Before any of it, `host` refuses a request whose
//! host is missing, repeated, malformed or contradictory.
//!
//! Forward-auth judges another request (the one the proxy in front describes) with [`Router::rule`]:
//! the rules and the default only, because that request goes to the application, never to the
//! gateway's own endpoints.

pub mod canonical;
pub mod host;

use http::Method;
use regex::{Regex, RegexSet};

use crate::config::{Policy, RouteConfig};
use host::HostPattern;

/// The gateway's own endpoints, under the configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Start,
    Callback,
    SignOut,
    /// Forward-auth: `/oauth2/auth`, or `/oauth2/auth/<anything>` (Envoy's ext_authz appends the
    /// original path to its `path_prefix`).
    Auth,
    Userinfo,
    /// `POST /oauth2/backchannel_logout`.
    BackchannelLogout,
    /// The public keys of `[assertion]`.
    Jwks,
    /// Anything else under the prefix: 404, never proxied.
    Unknown,
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `server.listen`: the traffic, the gateway's endpoints, and `/metrics` unless
    /// `server.metrics_listen` moves it.
    Main,
    /// `server.metrics_listen`: `/metrics`, `/healthz` and `/readyz`, nothing else.
    Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Healthz,
    Readyz,
    /// `GET /metrics` (served where the metrics are: see [`Listener`]).
    Metrics,
    Endpoint(Endpoint),
    /// A proxied path: its policy, the index of the upstream (0: `[upstream]`, else route-specific),
    /// and the index of the route that matched (`None`: the default).
    Proxy {
        policy: Policy,
        upstream: usize,
        route: Option<usize>,
    },
}

struct Route {
    host: Option<HostPattern>,
    methods: Option<Vec<Method>>,
    policy: Policy,
    upstream: usize,
    /// How the path is matched: a host's rule by its own pattern (only once the host matched), the
    /// others in one pass of the set.
    path: PathRule,
}

enum PathRule {
    /// Index of the pattern in `Router::set`.
    InSet(usize),
    Own(Regex),
}

pub struct Router {
    prefix: String,
    /// `prefix` + `/auth/`: a raw path starting so is a forward-auth check (see [`Router::check_path`]).
    auth_prefix: String,
    /// The patterns of the rules that name no host, matched in one pass when one is reached.
    set: RegexSet,
    routes: Vec<Route>,
    /// Whether any rule names a host.
    names_hosts: bool,
}

impl Router {
    /// `set` holds the routes' patterns in order (built and size-checked by the configuration);
    /// `upstream_index(i)` gives the upstream slot of route `i` (0 for the default upstream).
    pub fn new(
        prefix: &str,
        routes: &[RouteConfig],
        set: &RegexSet,
        upstream_index: impl Fn(usize) -> usize,
    ) -> Router {
        let names_hosts = routes.iter().any(|r| r.host.is_some());
        // With rules on hosts, the set holds only the others: a host's rules, often "^/" each, would
        // all match and be reported on every request. A subset of a set that fit the size limit
        // fits too; should it not, every rule keeps its own pattern.
        let hostless = routes.iter().filter(|r| r.host.is_none());
        let set = if names_hosts {
            RegexSet::new(hostless.clone().map(|r| r.path.as_str())).ok()
        } else {
            Some(set.clone())
        };
        let mut in_set = 0;
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route {
                host: r.host.clone(),
                methods: r.methods.clone(),
                policy: r.policy,
                upstream: upstream_index(i),
                path: match (&r.host, &set) {
                    (None, Some(_)) => {
                        in_set += 1;
                        PathRule::InSet(in_set - 1)
                    }
                    _ => PathRule::Own(r.path.clone()),
                },
            })
            .collect();
        Router {
            prefix: prefix.to_string(),
            auth_prefix: format!("{prefix}/auth/"),
            set: set.unwrap_or_else(RegexSet::empty),
            routes,
            names_hosts,
        }
    }

    /// Whether any rule names a host: then a request's host takes part in routing.
    pub fn names_hosts(&self) -> bool {
        self.names_hosts
    }

    /// The gateway's endpoint prefix (`/oauth2`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A raw request path of the form `/oauth2/auth/<anything>`: Envoy's ext_authz check, whose path
    /// is its `path_prefix` followed by the original request's path. That tail belongs to the
    /// original request (judged from `X-Forwarded-Uri`), so it is routed as it is, never resolved as
    /// part of our path: `/oauth2/auth/../../admin` stays a check and cannot become a request for
    /// `/admin` proxied to the upstream.
    pub fn check_path<'p>(&self, raw: &'p str) -> Option<&'p str> {
        raw.starts_with(self.auth_prefix.as_str()).then_some(raw)
    }

    /// The target for a request with this method, host [`name`](host::name) and canonical path.
    pub fn route(&self, method: &Method, host: Option<&str>, path: &str) -> Target {
        match path {
            "/healthz" => return Target::Healthz,
            "/readyz" => return Target::Readyz,
            "/metrics" => return Target::Metrics,
            _ => {}
        }
        if let Some(rest) = path.strip_prefix(self.prefix.as_str()) {
            let endpoint = match rest {
                "/start" => Some(Endpoint::Start),
                "/callback" => Some(Endpoint::Callback),
                "/sign_out" => Some(Endpoint::SignOut),
                "/auth" => Some(Endpoint::Auth),
                r if r.starts_with("/auth/") => Some(Endpoint::Auth),
                "/userinfo" => Some(Endpoint::Userinfo),
                "/backchannel_logout" => Some(Endpoint::BackchannelLogout),
                "/jwks" => Some(Endpoint::Jwks),
                "" => Some(Endpoint::Unknown),
                r if r.starts_with('/') => Some(Endpoint::Unknown),
                _ => None, // `/oauth2x` is an ordinary path
            };
            if let Some(endpoint) = endpoint {
                return Target::Endpoint(endpoint);
            }
        }
        self.rule(method, host, path)
    }

    /// The `[[routes]]` rule for a request (first match wins), else the default (login required,
    /// `[upstream]`); never one of the gateway's own endpoints.
    pub fn rule(&self, method: &Method, host: Option<&str>, path: &str) -> Target {
        const DEFAULT: Target = Target::Proxy {
            policy: Policy::Authenticated,
            upstream: 0,
            route: None,
        };
        if self.routes.is_empty() {
            return DEFAULT;
        }
        if !self.names_hosts {
            // Every rule is in the set: only those whose path matched are looked at.
            for i in self.set.matches(path).iter() {
                let route = &self.routes[i];
                if route.methods.as_ref().is_none_or(|ms| ms.contains(method)) {
                    return Target::Proxy {
                        policy: route.policy,
                        upstream: route.upstream,
                        route: Some(i),
                    };
                }
            }
            return DEFAULT;
        }
        // The set is asked once, when the first rule without a host is reached.
        let mut matches = None;
        for (i, route) in self.routes.iter().enumerate() {
            let host_ok = match &route.host {
                None => true,
                Some(pattern) => host.is_some_and(|h| pattern.matches(h)),
            };
            if !host_ok
                || route
                    .methods
                    .as_ref()
                    .is_some_and(|ms| !ms.contains(method))
            {
                continue;
            }
            let path_ok = match &route.path {
                PathRule::InSet(j) => matches
                    .get_or_insert_with(|| self.set.matches(path))
                    .matched(*j),
                PathRule::Own(pattern) => pattern.is_match(path),
            };
            if path_ok {
                return Target::Proxy {
                    policy: route.policy,
                    upstream: route.upstream,
                    route: Some(i),
                };
            }
        }
        DEFAULT
    }
}

/// The route table of the metrics listener: anything but its three paths is an unknown endpoint (404),
/// never proxied and never a login.
pub fn metrics_listener_route(path: &str) -> Target {
    match path {
        "/healthz" => Target::Healthz,
        "/readyz" => Target::Readyz,
        "/metrics" => Target::Metrics,
        _ => Target::Endpoint(Endpoint::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, methods: Option<Vec<Method>>, policy: Policy) -> RouteConfig {
        RouteConfig {
            host: None,
            path: Regex::new(path).unwrap(),
            methods,
            policy,
            upstream: None,
            allowed_groups: None,
        }
    }

    fn router() -> Router {
        let routes = vec![
            route("^/public/", None, Policy::Public),
            route("^/admin", None, Policy::Deny),
            route("^/api/", Some(vec![Method::GET]), Policy::Public),
            route("^/api/", None, Policy::Deny),
            route("^/other/", None, Policy::Public),
        ];
        let set = RegexSet::new(routes.iter().map(|r| r.path.as_str())).unwrap();
        Router::new("/oauth2", &routes, &set, |i| if i == 4 { 1 } else { 0 })
    }

    #[test]
    fn first_match_wins_and_methods_filter() {
        let r = router();
        let get = Method::GET;
        assert_eq!(
            r.route(&get, None, "/public/x"),
            Target::Proxy {
                policy: Policy::Public,
                upstream: 0,
                route: Some(0)
            }
        );
        assert_eq!(
            r.route(&get, None, "/admin/x"),
            Target::Proxy {
                policy: Policy::Deny,
                upstream: 0,
                route: Some(1)
            }
        );
        assert_eq!(
            r.route(&get, None, "/api/x"),
            Target::Proxy {
                policy: Policy::Public,
                upstream: 0,
                route: Some(2)
            }
        );
        assert_eq!(
            r.route(&Method::POST, None, "/api/x"),
            Target::Proxy {
                policy: Policy::Deny,
                upstream: 0,
                route: Some(3)
            }
        );
        assert_eq!(
            r.route(&get, None, "/other/x"),
            Target::Proxy {
                policy: Policy::Public,
                upstream: 1,
                route: Some(4)
            }
        );
        assert_eq!(
            r.route(&get, None, "/elsewhere"),
            Target::Proxy {
                policy: Policy::Authenticated,
                upstream: 0,
                route: None
            }
        );
    }

    #[test]
    fn a_case_insensitive_pattern_keeps_its_flag_in_the_set() {
        let routes = vec![
            route("(?i)^/admin", None, Policy::Deny),
            route("^/Exact", None, Policy::Deny),
        ];
        let set = RegexSet::new(routes.iter().map(|r| r.path.as_str())).unwrap();
        let r = Router::new("/oauth2", &routes, &set, |_| 0);
        let deny = |route| Target::Proxy {
            policy: Policy::Deny,
            upstream: 0,
            route: Some(route),
        };
        assert_eq!(r.route(&Method::GET, None, "/ADMIN"), deny(0));
        assert_eq!(r.route(&Method::GET, None, "/Admin/x"), deny(0));
        assert_eq!(r.route(&Method::GET, None, "/Exact"), deny(1));
        assert_ne!(r.route(&Method::GET, None, "/exact"), deny(1));
    }

    fn on_host(host: &str, path: &str, policy: Policy) -> RouteConfig {
        RouteConfig {
            host: Some(HostPattern::parse(host).unwrap()),
            ..route(path, None, policy)
        }
    }

    /// Two tools on their own hosts, a wildcard for the rest of the domain, a public path on any
    /// host, and the default.
    #[test]
    fn routes_on_hosts_are_tried_in_order_with_the_host_ignoring_case_and_port() {
        let routes = vec![
            on_host("grafana.corp.example", "^/api/admin", Policy::Deny),
            on_host("grafana.corp.example", "^/", Policy::Authenticated),
            on_host("wiki.corp.example", "^/public/", Policy::Public),
            route("^/public/", None, Policy::Public),
            on_host("*.corp.example", "^/", Policy::Deny),
        ];
        let set = RegexSet::new(routes.iter().map(|r| r.path.as_str())).unwrap();
        let r = Router::new("/oauth2", &routes, &set, |i| i + 1);
        assert!(r.names_hosts());
        let get = Method::GET;
        let at = |host: &str, path: &str| {
            let name = host::name(host.as_bytes());
            match r.route(&get, name, path) {
                Target::Proxy { route, policy, .. } => (route, policy),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            at("grafana.corp.example", "/api/admin/x"),
            (Some(0), Policy::Deny)
        );
        assert_eq!(
            at("GRAFANA.corp.example:8443", "/api/admin"),
            (Some(0), Policy::Deny)
        );
        assert_eq!(
            at("grafana.corp.example.", "/api/admin"),
            (Some(0), Policy::Deny)
        );
        assert_eq!(
            at("grafana.corp.example", "/d/1"),
            (Some(1), Policy::Authenticated)
        );
        assert_eq!(
            at("wiki.corp.example", "/public/x"),
            (Some(2), Policy::Public)
        );
        assert_eq!(
            at("grafana.corp.example", "/public/x"),
            (Some(1), Policy::Authenticated)
        );
        assert_eq!(at("other.example", "/public/x"), (Some(3), Policy::Public));
        assert_eq!(at("wiki.corp.example", "/page"), (Some(4), Policy::Deny));
        assert_eq!(at("a.b.corp.example", "/page"), (Some(4), Policy::Deny));
        // The domain itself, another host, an address, no host: the default.
        for host in [
            "corp.example",
            "other.example",
            "127.0.0.1:4180",
            "[::1]:4180",
            "",
        ] {
            assert_eq!(at(host, "/page"), (None, Policy::Authenticated), "{host:?}");
        }
        // Upstream slots follow the route.
        assert_eq!(
            r.route(&get, Some("wiki.corp.example"), "/public/x"),
            Target::Proxy {
                policy: Policy::Public,
                upstream: 3,
                route: Some(2)
            }
        );
        // The gateway's own endpoints and health come first on every host.
        assert_eq!(
            r.route(&get, Some("grafana.corp.example"), "/oauth2/start"),
            Target::Endpoint(Endpoint::Start)
        );
        assert_eq!(
            r.route(&get, Some("grafana.corp.example"), "/healthz"),
            Target::Healthz
        );
        // ... but a request judged by forward-auth goes to the application: rules and default only.
        assert_eq!(
            r.rule(&get, Some("grafana.corp.example"), "/oauth2/start"),
            Target::Proxy {
                policy: Policy::Authenticated,
                upstream: 2,
                route: Some(1)
            }
        );
        assert_eq!(
            r.rule(&get, None, "/healthz"),
            Target::Proxy {
                policy: Policy::Authenticated,
                upstream: 0,
                route: None
            }
        );
    }

    #[test]
    fn forward_auth_checks_are_recognised_before_and_after_canonicalisation() {
        let r = router();
        let get = Method::GET;
        for path in [
            "/oauth2/auth",
            "/oauth2/auth/",
            "/oauth2/auth/admin?x",
            "/oauth2/auth/a/b",
        ] {
            assert_eq!(
                r.route(&get, None, path),
                Target::Endpoint(Endpoint::Auth),
                "{path}"
            );
        }
        assert_eq!(
            r.route(&get, None, "/oauth2/authx"),
            Target::Endpoint(Endpoint::Unknown)
        );
        assert_eq!(
            r.check_path("/oauth2/auth/../../admin"),
            Some("/oauth2/auth/../../admin")
        );
        assert_eq!(r.check_path("/oauth2/auth/"), Some("/oauth2/auth/"));
        assert_eq!(r.check_path("/oauth2/auth"), None, "canonical already");
        assert_eq!(r.check_path("/oauth2/authx/y"), None);
        assert_eq!(r.check_path("/x/oauth2/auth/y"), None);
    }

    #[test]
    fn own_endpoints_and_health_come_first() {
        let r = router();
        let get = Method::GET;
        assert_eq!(r.route(&get, None, "/healthz"), Target::Healthz);
        assert_eq!(r.route(&get, None, "/readyz"), Target::Readyz);
        assert_eq!(r.route(&get, None, "/metrics"), Target::Metrics);
        assert_eq!(metrics_listener_route("/metrics"), Target::Metrics);
        assert_eq!(metrics_listener_route("/readyz"), Target::Readyz);
        assert_eq!(
            metrics_listener_route("/public/x"),
            Target::Endpoint(Endpoint::Unknown)
        );
        assert_eq!(
            r.route(&get, None, "/oauth2/start"),
            Target::Endpoint(Endpoint::Start)
        );
        assert_eq!(
            r.route(&get, None, "/oauth2/callback"),
            Target::Endpoint(Endpoint::Callback)
        );
        assert_eq!(
            r.route(&get, None, "/oauth2/jwks"),
            Target::Endpoint(Endpoint::Jwks)
        );
        assert_eq!(
            r.route(&get, None, "/oauth2/nope"),
            Target::Endpoint(Endpoint::Unknown)
        );
        assert_eq!(
            r.route(&get, None, "/oauth2"),
            Target::Endpoint(Endpoint::Unknown)
        );
        assert_eq!(
            r.route(&get, None, "/oauth2x"),
            Target::Proxy {
                policy: Policy::Authenticated,
                upstream: 0,
                route: None
            }
        );
    }
}
