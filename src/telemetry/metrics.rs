//! The gateway's metrics, in an explicit `prometheus-client` registry, served as `GET /metrics`.
//!
//! Every label value comes from a small fixed set (a route policy, a status class, a method among the
//! common ones, a reason from an enum): never a path, a user or a token, so the number of series is
//! bounded whatever the traffic. The hot path touches no lock: the series of every combination are
//! made at start-up and kept in arrays the request path indexes, each an atomic counter, and the
//! latency histogram is a set of atomic buckets of its own (prometheus-client's takes a lock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Which kind of route a request went to: the `policy` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyLabel {
    Public,
    Authenticated,
    Deny,
    /// The gateway's own endpoints (everything under the prefix), health, readiness and metrics.
    Internal,
    /// Refused before it could be routed: `CONNECT`, a bad `Host`, an ambiguous path (`none`).
    #[default]
    Unrouted,
}

impl PolicyLabel {
    /// In the order of the discriminants: `label as usize` indexes the series.
    const ALL: [PolicyLabel; 5] = [
        PolicyLabel::Public,
        PolicyLabel::Authenticated,
        PolicyLabel::Deny,
        PolicyLabel::Internal,
        PolicyLabel::Unrouted,
    ];

    fn name(self) -> &'static str {
        match self {
            PolicyLabel::Public => "public",
            PolicyLabel::Authenticated => "authenticated",
            PolicyLabel::Deny => "deny",
            PolicyLabel::Internal => "internal",
            PolicyLabel::Unrouted => "none",
        }
    }
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Why an upstream exchange failed: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Connect,
    Timeout,
    Protocol,
    Tls,
}

impl UpstreamError {
    const ALL: [UpstreamError; 4] = [
        UpstreamError::Connect,
        UpstreamError::Timeout,
        UpstreamError::Protocol,
        UpstreamError::Tls,
    ];
    fn name(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Protocol => "protocol",
            UpstreamError::Tls => "tls",
        }
    }
}

/// Why a login failed at the callback: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// The callback's state is missing or matches no login started in this browser (stale,
    /// tampered, replayed).
    State,
    /// The provider answered the login with an `error` (denied consent, ...).
    ProviderError,
    /// The callback's query is malformed: a repeated parameter, no code.
    Malformed,
    /// The code exchange was refused or the provider could not be reached.
    Exchange,
    /// No id_token, or one that failed a check.
    IdToken,
    /// The userinfo claims could not be had or were refused (`oidc.userinfo_claims`).
    Userinfo,
    /// The session could not be kept (the store failed, or the identity is too large).
    Store,
    /// Anything else (the gateway's own failure).
    Other,
}

impl LoginFailure {
    const ALL: [LoginFailure; 8] = [
        LoginFailure::State,
        LoginFailure::ProviderError,
        LoginFailure::Malformed,
        LoginFailure::Exchange,
        LoginFailure::IdToken,
        LoginFailure::Userinfo,
        LoginFailure::Store,
        LoginFailure::Other,
    ];
    fn name(self) -> &'static str {
        match self {
            LoginFailure::State => "state",
            LoginFailure::ProviderError => "provider_error",
            LoginFailure::Malformed => "malformed",
            LoginFailure::Exchange => "exchange",
            LoginFailure::IdToken => "id_token",
            LoginFailure::Userinfo => "userinfo",
            LoginFailure::Store => "store",
            LoginFailure::Other => "other",
        }
    }
}

/// How a refresh ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// This request redeemed the refresh token and the session has new tokens.
    Refreshed,
    /// Another request (here or on another replica) refreshed the session; this one took its result.
    Shared,
    /// `invalid_grant`, or a new id_token that failed: the session ended.
    Refused,
    /// The provider could not be reached or failed: tried again later.
    Failed,
}

impl RefreshOutcome {
    const ALL: [RefreshOutcome; 4] = [
        RefreshOutcome::Refreshed,
        RefreshOutcome::Shared,
        RefreshOutcome::Refused,
        RefreshOutcome::Failed,
    ];
    fn name(self) -> &'static str {
        match self {
            RefreshOutcome::Refreshed => "refreshed",
            RefreshOutcome::Shared => "shared",
            RefreshOutcome::Refused => "refused",
            RefreshOutcome::Failed => "failed",
        }
    }
}

/// A session store operation: the `op` label. A session served from the cache of opened sessions
/// costs no operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Open the session a cookie stands for.
    Load,
    /// Look a session up again by its key (a refresh that waited for another).
    Reload,
    /// Keep a new session (a login).
    Save,
    /// Replace a session (a refresh, a recorded use).
    Update,
    /// Sign-out.
    Delete,
    /// End a session whose refresh was refused.
    End,
    /// Back-channel logout: end every session of a `sid` or `sub`.
    Revoke,
    /// Remember a one-time value (a logout token's `jti`).
    FirstUse,
    /// Take a session's refresh lock.
    Lock,
}

impl StoreOp {
    const ALL: [StoreOp; 9] = [
        StoreOp::Load,
        StoreOp::Reload,
        StoreOp::Save,
        StoreOp::Update,
        StoreOp::Delete,
        StoreOp::End,
        StoreOp::Revoke,
        StoreOp::FirstUse,
        StoreOp::Lock,
    ];
    fn name(self) -> &'static str {
        match self {
            StoreOp::Load => "load",
            StoreOp::Reload => "reload",
            StoreOp::Save => "save",
            StoreOp::Update => "update",
            StoreOp::Delete => "delete",
            StoreOp::End => "end",
            StoreOp::Revoke => "revoke",
            StoreOp::FirstUse => "first_use",
            StoreOp::Lock => "lock",
        }
    }
}

/// How a back-channel logout request ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackchannelOutcome {
    /// A valid logout token: its sessions ended (`200`).
    Accepted,
    /// The request or its token was refused (`400`).
    Refused,
    /// The store could not record it (`503`): the provider may retry.
    Failed,
}

impl BackchannelOutcome {
    const ALL: [BackchannelOutcome; 3] = [
        BackchannelOutcome::Accepted,
        BackchannelOutcome::Refused,
        BackchannelOutcome::Failed,
    ];
    fn name(self) -> &'static str {
        match self {
            BackchannelOutcome::Accepted => "accepted",
            BackchannelOutcome::Refused => "refused",
            BackchannelOutcome::Failed => "failed",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// A histogram of request durations whose buckets are atomic counters (no lock per observation).
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds, seconds; the last bucket is +Inf.
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of the observations in nanoseconds.
    sum_nanos: AtomicU64,
}

/// Seconds: from a fraction of a millisecond (a cached session, a health check) to a slow upstream.
const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            buckets: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    /// The encoder takes each bucket's own count and sums them up itself; the last bucket is
    /// `+Inf` (`f64::INFINITY`), holding what no finite bound took. The buckets are read before the
    /// count (an observation adds to its bucket first), and the count written is never below what
    /// the buckets hold, so `_count` always equals the `+Inf` bucket, as OpenMetrics requires.
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut finite = 0;
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(self.buckets.iter())
            .map(|(bound, n)| {
                let n = n.load(Ordering::Relaxed);
                finite += n;
                (*bound, n)
            })
            .collect();
        let count = self.count.load(Ordering::Relaxed).max(finite);
        buckets.push((f64::INFINITY, count - finite));
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// An [`AtomicHistogram`] shared between the registry and the request path.
#[derive(Debug, Clone)]
pub struct SharedHistogram(Arc<AtomicHistogram>);

impl TypedMetric for SharedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SharedHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A counter whose value is read from elsewhere at each scrape (the provider's JWKS fetches).
struct ReadCounter(Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for ReadCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadCounter")
    }
}

impl TypedMetric for ReadCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ReadCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, u64, u64>(&(self.0)(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Every series, made at start-up.
pub struct Metrics {
    registry: Registry,
    /// By (policy, status class, method): see [`Metrics::request`].
    requests: Box<[Counter]>,
    /// By policy.
    latency: Box<[SharedHistogram]>,
    upstream_errors: Box<[Counter]>,
    logins_started: Counter,
    logins_completed: Counter,
    logins_failed: Box<[Counter]>,
    refreshes: Box<[Counter]>,
    backchannel_logouts: Box<[Counter]>,
    store_operations: Box<[Counter]>,
    store_errors: Box<[Counter]>,
    open_connections: Gauge,
}

/// A counter family with one label, a series for each of `values` (in that order).
fn family<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> Box<[Counter]> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    values
        .iter()
        .map(|v| family.get_or_create(&vec![(label, *v)]).clone())
        .collect()
}

/// The position of `value` in `all`: the index of its series. The label enums are small and their
/// `ALL` lists complete, so this never falls back (a test checks it).
fn index<T: PartialEq>(all: &[T], value: &T) -> usize {
    all.iter().position(|x| x == value).unwrap_or(0)
}

impl Metrics {
    /// The registry with every series at zero; `jwks_fetches` is read at each scrape.
    pub fn new(jwks_fetches: Arc<dyn Fn() -> u64 + Send + Sync>) -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests_family = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route policy (internal: the gateway's own endpoints; none: refused \
             before routing), status class and method (other: any method not listed)",
            requests_family.clone(),
        );
        let mut requests =
            Vec::with_capacity(PolicyLabel::ALL.len() * CLASSES.len() * METHODS.len());
        for policy in PolicyLabel::ALL {
            for class in CLASSES {
                for method in METHODS {
                    requests.push(
                        requests_family
                            .get_or_create(&vec![
                                ("policy", policy.name()),
                                ("status", class),
                                ("method", method),
                            ])
                            .clone(),
                    );
                }
            }
        }
        let latency_family = Family::<Labels, SharedHistogram>::new_with_constructor(|| {
            SharedHistogram(Arc::new(AtomicHistogram::new(LATENCY_BOUNDS)))
        });
        registry.register(
            "request_duration_seconds",
            "Time from the request head to the response head, by route policy",
            latency_family.clone(),
        );
        let latency = PolicyLabel::ALL
            .iter()
            .map(|p| {
                latency_family
                    .get_or_create(&vec![("policy", p.name())])
                    .clone()
            })
            .collect();
        let upstream_errors = family(
            &mut registry,
            "upstream_errors",
            "Proxied requests the upstream did not answer, by kind (connect, timeout, protocol, tls)",
            "kind",
            UpstreamError::ALL.map(UpstreamError::name),
        );
        let logins_started = Counter::default();
        registry.register(
            "logins_started",
            "Logins started (redirects to the provider)",
            logins_started.clone(),
        );
        let logins_completed = Counter::default();
        registry.register(
            "logins_completed",
            "Logins completed with a session",
            logins_completed.clone(),
        );
        let logins_failed = family(
            &mut registry,
            "logins_failed",
            "Logins that failed at the callback, by reason",
            "reason",
            LoginFailure::ALL.map(LoginFailure::name),
        );
        let refreshes = family(
            &mut registry,
            "refreshes",
            "Token refreshes, by outcome",
            "outcome",
            RefreshOutcome::ALL.map(RefreshOutcome::name),
        );
        let backchannel_logouts = family(
            &mut registry,
            "backchannel_logouts",
            "Back-channel logout requests, by outcome",
            "outcome",
            BackchannelOutcome::ALL.map(BackchannelOutcome::name),
        );
        registry.register(
            "jwks_fetches",
            "JWKS fetches from the provider (start-up and refetches)",
            ReadCounter(jwks_fetches),
        );
        let store_operations = family(
            &mut registry,
            "store_operations",
            "Session store operations, by kind (sessions served from the cache cost none)",
            "op",
            StoreOp::ALL.map(StoreOp::name),
        );
        let store_errors = family(
            &mut registry,
            "store_errors",
            "Session store operations that failed, by kind",
            "op",
            StoreOp::ALL.map(StoreOp::name),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now (the main listener's)",
            open_connections.clone(),
        );
        Metrics {
            registry,
            requests: requests.into_boxed_slice(),
            latency,
            upstream_errors,
            logins_started,
            logins_completed,
            logins_failed,
            refreshes,
            backchannel_logouts,
            store_operations,
            store_errors,
            open_connections,
        }
    }

    /// One request answered: no lock, no allocation (an index into series made at start-up).
    pub fn request(&self, policy: PolicyLabel, method: &Method, status: u16, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        let p = index(&PolicyLabel::ALL, &policy);
        let i = (p * CLASSES.len() + class) * METHODS.len() + method_index(method);
        if let Some(counter) = self.requests.get(i) {
            counter.inc();
        }
        if let Some(h) = self.latency.get(p) {
            h.0.observe(elapsed);
        }
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[index(&UpstreamError::ALL, &kind)].inc();
    }

    pub fn login_started(&self) {
        self.logins_started.inc();
    }

    pub fn login_completed(&self) {
        self.logins_completed.inc();
    }

    pub fn login_failed(&self, reason: LoginFailure) {
        self.logins_failed[index(&LoginFailure::ALL, &reason)].inc();
    }

    pub fn refresh(&self, outcome: RefreshOutcome) {
        self.refreshes[index(&RefreshOutcome::ALL, &outcome)].inc();
    }

    pub fn backchannel_logout(&self, outcome: BackchannelOutcome) {
        self.backchannel_logouts[index(&BackchannelOutcome::ALL, &outcome)].inc();
    }

    /// One store operation; `ok: false` counts it among the errors too.
    pub fn store_operation(&self, op: StoreOp, ok: bool) {
        let i = index(&StoreOp::ALL, &op);
        self.store_operations[i].inc();
        if !ok {
            self.store_errors[i].inc();
        }
    }

    /// A connection opened; the returned guard counts it closed when dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.open_connections.clone())
    }

    /// The text exposition (OpenMetrics 1.0, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts one open connection while it lives.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The `Content-Type` of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn every_series_exists_at_zero_and_moves_by_what_is_counted() {
        let m = Metrics::new(Arc::new(|| 7));
        let before = m.encode();
        assert_eq!(
            value(
                &before,
                r#"portcullis_requests_total{policy="public",status="2xx",method="GET"}"#
            ),
            0.0
        );
        m.request(
            PolicyLabel::Public,
            &Method::GET,
            200,
            Duration::from_millis(3),
        );
        m.request(
            PolicyLabel::Public,
            &Method::GET,
            204,
            Duration::from_millis(30),
        );
        m.request(
            PolicyLabel::Internal,
            &Method::from_bytes(b"PROPFIND").unwrap(),
            503,
            Duration::ZERO,
        );
        m.upstream_error(UpstreamError::Timeout);
        m.login_failed(LoginFailure::IdToken);
        m.backchannel_logout(BackchannelOutcome::Failed);
        m.store_operation(StoreOp::FirstUse, false);
        let after = m.encode();
        assert_eq!(
            value(
                &after,
                r#"portcullis_requests_total{policy="public",status="2xx",method="GET"}"#
            ),
            2.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_requests_total{policy="internal",status="5xx",method="other"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_request_duration_seconds_bucket{le="0.005",policy="public"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_request_duration_seconds_count{policy="public"}"#
            ),
            2.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_request_duration_seconds_bucket{le="0.025",policy="public"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_request_duration_seconds_bucket{le="0.05",policy="public"}"#
            ),
            2.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_request_duration_seconds_bucket{le="+Inf",policy="public"}"#
            ),
            2.0
        );
        // Beyond the last bound: in +Inf only.
        m.request(
            PolicyLabel::Deny,
            &Method::GET,
            200,
            Duration::from_secs(60),
        );
        let slow = m.encode();
        assert_eq!(
            value(
                &slow,
                r#"portcullis_request_duration_seconds_bucket{le="30.0",policy="deny"}"#
            ),
            0.0
        );
        assert_eq!(
            value(
                &slow,
                r#"portcullis_request_duration_seconds_bucket{le="+Inf",policy="deny"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_upstream_errors_total{kind="timeout"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_logins_failed_total{reason="id_token"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_backchannel_logouts_total{outcome="failed"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &after,
                r#"portcullis_store_operations_total{op="first_use"}"#
            ),
            1.0
        );
        assert_eq!(
            value(&after, r#"portcullis_store_errors_total{op="first_use"}"#),
            1.0
        );
        assert_eq!(value(&after, "portcullis_jwks_fetches_total"), 7.0);
        assert!(after.ends_with("# EOF\n"));
        // The number of series never depends on the traffic.
        assert_eq!(before.lines().count(), after.lines().count());
        let guard = m.connection_opened();
        assert_eq!(value(&m.encode(), "portcullis_open_connections"), 1.0);
        drop(guard);
        assert_eq!(value(&m.encode(), "portcullis_open_connections"), 0.0);
    }

    #[test]
    fn every_label_value_has_its_own_series() {
        let m = Metrics::new(Arc::new(|| 0));
        for (i, policy) in PolicyLabel::ALL.iter().enumerate() {
            assert_eq!(index(&PolicyLabel::ALL, policy), i);
            m.request(*policy, &Method::POST, 302, Duration::ZERO);
        }
        for kind in UpstreamError::ALL {
            m.upstream_error(kind);
        }
        for reason in LoginFailure::ALL {
            m.login_failed(reason);
        }
        for outcome in RefreshOutcome::ALL {
            m.refresh(outcome);
        }
        for outcome in BackchannelOutcome::ALL {
            m.backchannel_logout(outcome);
        }
        for op in StoreOp::ALL {
            m.store_operation(op, false);
        }
        let text = m.encode();
        let ones = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.ends_with(" 1"))
            .count();
        // Each value above moved exactly its own series; a request also its policy's histogram: the
        // count and, for an observation of zero, every bucket (cumulative), +Inf included.
        let expected = PolicyLabel::ALL.len() * (1 + 1 + LATENCY_BOUNDS.len() + 1)
            + UpstreamError::ALL.len()
            + LoginFailure::ALL.len()
            + RefreshOutcome::ALL.len()
            + BackchannelOutcome::ALL.len()
            + StoreOp::ALL.len() * 2;
        assert_eq!(ones, expected, "{text}");
        for policy in ["public", "authenticated", "deny", "internal", "none"] {
            assert_eq!(
                value(
                    &text,
                    &format!(
                        r#"portcullis_requests_total{{policy="{policy}",status="3xx",method="POST"}}"#
                    )
                ),
                1.0
            );
        }
    }
}
