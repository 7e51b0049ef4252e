//! The route table: which handler a request goes to, decided on its canonical path alone.
//!
//! Order of precedence: the fixed health and metrics paths, then the gateway's own endpoints under the
//! prefix (`/oauth2` unless configured), then the `[[routes]]` rules (first match wins), then the default
//! policy (login required). A listener of its own for metrics (`server.metrics_listen`) has a table of
//! three paths ([`metrics_listener_route`]). Nothing here looks at a header or the query, so no client-controlled input other than
//! the path and method chooses the policy. Before any of it, `host` refuses a request whose host is
//! missing, repeated, malformed or contradictory.

pub mod canonical;
pub mod host;

use http::Method;
use regex::RegexSet;

use crate::config::{Policy, RouteConfig};

/// The gateway's own endpoints, under the configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Start,
    Callback,
    SignOut,
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
    methods: Option<Vec<Method>>,
    policy: Policy,
    upstream: usize,
}

pub struct Router {
    prefix: String,
    set: RegexSet,
    routes: Vec<Route>,
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
        Router {
            prefix: prefix.to_string(),
            set: set.clone(),
            routes: routes
                .iter()
                .enumerate()
                .map(|(i, r)| Route {
                    methods: r.methods.clone(),
                    policy: r.policy,
                    upstream: upstream_index(i),
                })
                .collect(),
        }
    }

    /// The target for a request with this method and canonical path.
    pub fn route(&self, method: &Method, path: &str) -> Target {
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
        if !self.routes.is_empty() {
            let matches = self.set.matches(path);
            for i in matches.iter() {
                let route = &self.routes[i];
                if route.methods.as_ref().is_none_or(|ms| ms.contains(method)) {
                    return Target::Proxy {
                        policy: route.policy,
                        upstream: route.upstream,
                        route: Some(i),
                    };
                }
            }
        }
        Target::Proxy {
            policy: Policy::Authenticated,
            upstream: 0,
            route: None,
        }
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
    use regex::Regex;

    fn route(path: &str, methods: Option<Vec<Method>>, policy: Policy) -> RouteConfig {
        RouteConfig {
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
            r.route(&get, "/public/x"),
            Target::Proxy {
                policy: Policy::Public,
                upstream: 0,
                route: Some(0)
            }
        );
        assert_eq!(
            r.route(&get, "/admin/x"),
            Target::Proxy {
                policy: Policy::Deny,
                upstream: 0,
                route: Some(1)
            }
        );
        assert_eq!(
            r.route(&get, "/api/x"),
            Target::Proxy {
                policy: Policy::Public,
                upstream: 0,
                route: Some(2)
            }
        );
        assert_eq!(
            r.route(&Method::POST, "/api/x"),
            Target::Proxy {
                policy: Policy::Deny,
                upstream: 0,
                route: Some(3)
            }
        );
        assert_eq!(
            r.route(&get, "/other/x"),
            Target::Proxy {
                policy: Policy::Public,
                upstream: 1,
                route: Some(4)
            }
        );
        assert_eq!(
            r.route(&get, "/elsewhere"),
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
        assert_eq!(r.route(&Method::GET, "/ADMIN"), deny(0));
        assert_eq!(r.route(&Method::GET, "/Admin/x"), deny(0));
        assert_eq!(r.route(&Method::GET, "/Exact"), deny(1));
        assert_ne!(r.route(&Method::GET, "/exact"), deny(1));
    }

    #[test]
    fn own_endpoints_and_health_come_first() {
        let r = router();
        let get = Method::GET;
        assert_eq!(r.route(&get, "/healthz"), Target::Healthz);
        assert_eq!(r.route(&get, "/readyz"), Target::Readyz);
        assert_eq!(r.route(&get, "/metrics"), Target::Metrics);
        assert_eq!(metrics_listener_route("/metrics"), Target::Metrics);
        assert_eq!(metrics_listener_route("/readyz"), Target::Readyz);
        assert_eq!(
            metrics_listener_route("/public/x"),
            Target::Endpoint(Endpoint::Unknown)
        );
        assert_eq!(
            r.route(&get, "/oauth2/start"),
            Target::Endpoint(Endpoint::Start)
        );
        assert_eq!(
            r.route(&get, "/oauth2/callback"),
            Target::Endpoint(Endpoint::Callback)
        );
        assert_eq!(
            r.route(&get, "/oauth2/jwks"),
            Target::Endpoint(Endpoint::Jwks)
        );
        assert_eq!(
            r.route(&get, "/oauth2/nope"),
            Target::Endpoint(Endpoint::Unknown)
        );
        assert_eq!(
            r.route(&get, "/oauth2"),
            Target::Endpoint(Endpoint::Unknown)
        );
        assert_eq!(
            r.route(&get, "/oauth2x"),
            Target::Proxy {
                policy: Policy::Authenticated,
                upstream: 0,
                route: None
            }
        );
    }
}
