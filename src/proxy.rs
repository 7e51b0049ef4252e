//! Forwarding to the upstream: strip, then set headers; stream both bodies; tunnel upgrades.
//!
//! The proxy sees a request that routing and policy have already admitted and, on an authenticated route,
//! the identity headers to add; it never sees a cookie or a token response. Header handling follows one
//! order, so nothing a client sends can survive in the place of something the gateway sets:
//! 1. remove hop-by-hop headers (RFC 9110 section 7.6.1) and every header named in `Connection`;
//! 2. remove every client-sent copy of the identity headers and of the forwarding headers the gateway
//!    sets, also under names that differ only by `_` for `-` (CGI, PHP and Django map both to one variable);
//! 3. set `X-Forwarded-For/-Proto/-Host` (incoming ones kept only from `server.trusted_proxies`), `Host`,
//!    and the identity headers, each built as a `HeaderValue` so nothing can be spliced into them.
//!
//! Bodies are hyper `Incoming` streams handed straight to the other side: memory stays constant whatever
//! the size. Upstream connections are kept alive and reused, each upstream with its own pool (`pool`);
//! `https://` upstreams are reached through rustls (`tls`), in HTTP/2 when they offer it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use url::Url;

use crate::error::{ErrorKind, GatewayError};
use crate::telemetry::metrics::UpstreamError;
use crate::Body;

mod h1;
mod pool;
pub mod tls;

pub use pool::{Pool, PooledBody};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as an `X-Forwarded-For` value, formatted once per connection.
    peer_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        let peer_ip = HeaderValue::try_from(peer.ip().to_canonical().to_string())
            .expect("an IP address is a valid header value");
        ConnInfo { peer, tls, peer_ip }
    }
}

/// Headers that describe one connection, never the message (RFC 9110 section 7.6.1), plus the
/// proxy-authentication pair, which is addressed to the first proxy and must not travel further.
/// A `static`, not a `const`: the names are built once rather than at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_ACCESS_TOKEN: HeaderName =
    HeaderName::from_static("x-forwarded-access-token");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers the gateway sets itself and that a claim mapping may not take over.
pub fn is_reserved_header(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || [
            header::HOST,
            header::COOKIE,
            header::SET_COOKIE,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_FORWARDED_ACCESS_TOKEN,
            FORWARDED,
        ]
        .contains(name)
}

/// One upstream, parsed once at start-up.
#[derive(Debug, Clone)]
pub struct Upstream {
    authority: Authority,
    /// The upstream URL's path without its trailing `/`, prepended to every forwarded path.
    base_path: String,
    /// `Host` sent when the client's is not preserved.
    host: HeaderValue,
    /// Idle keep-alive connections to this upstream.
    pool: pool::Pool,
}

impl Upstream {
    /// An upstream with a pool of its own.
    pub fn from_url(url: &Url) -> Upstream {
        Upstream::with_pool(url, pool::Pool::new(url, None))
    }

    /// An upstream whose connections come from `pool` (a pool kept across configurations).
    pub fn with_pool(url: &Url, pool: Pool) -> Upstream {
        let host = url.host_str().unwrap_or_default();
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Upstream {
            authority: authority
                .parse()
                .expect("a validated URL's host and port form an authority"),
            base_path: url.path().trim_end_matches('/').to_string(),
            host: HeaderValue::from_str(&authority).expect("an authority is a valid header value"),
            pool,
        }
    }
}

/// The forwarding half of the gateway: the upstream timeouts and the header rules.
pub struct Proxy {
    connect_timeout: Duration,
    timeout: Duration,
    preserve_host: bool,
    trusted_proxies: Vec<IpNet>,
    /// Names of every header a client may not send: identity headers and the forwarding headers.
    protected: Vec<HeaderName>,
    /// The same names spelled with `_` for `-`, as lower-case strings.
    protected_underscored: Vec<String>,
    /// A one-word filter of the protected names by length and last byte (see [`filter_bit`]):
    /// most header names are told apart by it without a comparison.
    protected_filter: u128,
}

impl Proxy {
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        preserve_host: bool,
        trusted_proxies: Vec<IpNet>,
        identity_headers: impl IntoIterator<Item = HeaderName>,
    ) -> Proxy {
        let mut protected: Vec<HeaderName> = identity_headers.into_iter().collect();
        for h in [
            X_FORWARDED_ACCESS_TOKEN,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_REAL_IP,
        ] {
            if !protected.contains(&h) {
                protected.push(h);
            }
        }
        let protected_underscored = protected
            .iter()
            .map(|h| h.as_str().replace('-', "_"))
            .collect();
        let protected_filter = protected
            .iter()
            .fold(filter_bit(FORWARDED.as_str()), |mask, h| {
                mask | filter_bit(h.as_str())
            });
        Proxy {
            connect_timeout,
            timeout,
            preserve_host,
            trusted_proxies,
            protected,
            protected_underscored,
            protected_filter,
        }
    }

    /// Whether `ip` is one of `server.trusted_proxies`, whose forwarding headers are believed.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Whether a client-sent header is a protected one, in any case or `_` spelling: identity and
    /// forwarding headers, except the forwarding headers of a trusted proxy.
    /// `text` is `name.as_str()`, taken once by the caller.
    fn is_doomed(&self, name: &HeaderName, text: &str, trusted: bool) -> bool {
        // Also covers `Forwarded`, whose bit is in the filter too.
        if self.protected_filter & filter_bit(text) == 0 {
            return false;
        }
        if text == "forwarded" {
            return !trusted;
        }
        if trusted
            && (name == X_FORWARDED_FOR || name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST)
        {
            return false;
        }
        self.protected.contains(name)
            || (text.as_bytes().contains(&b'_') && self.is_underscored_protected(name))
    }

    /// Remove every client-sent copy of the protected headers (see [`Proxy::is_doomed`]).
    fn strip_protected(&self, headers: &mut HeaderMap, trusted: bool) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.is_doomed(k, k.as_str(), trusted))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }

    /// Whether `name` spells a protected header with `_` for `-`.
    fn is_underscored_protected(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        self.protected_underscored.iter().any(|p| {
            p.len() == name.len()
                && p.bytes()
                    .zip(name)
                    .all(|(p, &n)| p == n || (p == b'_' && n == b'-'))
        })
    }

    /// Strip, then set (the module header's steps 1 to 3) on a request's headers: `uri` supplies the
    /// client's host when there is no `Host` header (HTTP/2). Returns the `Upgrade` protocol when the
    /// client asked to upgrade; `Connection: upgrade` and `Upgrade` are then already set again.
    pub fn rewrite_headers(
        &self,
        headers: &mut HeaderMap,
        uri: &Uri,
        conn: &ConnInfo,
        upstream: &Upstream,
        identity: &[(HeaderName, HeaderValue)],
        assertion: Option<(&HeaderName, HeaderValue)>,
    ) -> Option<HeaderValue> {
        let trusted = self.is_trusted(conn.peer.ip());
        // One pass over the fields finds everything the steps below need, so the common request
        // (nothing to strip) costs no lookups beyond it.
        let mut hop = HopByHop::default();
        let (mut host_header, mut hosts, mut cookies, mut doomed) = (None, 0, 0, false);
        for (name, value) in headers.iter() {
            let text = name.as_str();
            // Hop-by-hop names are never protected ones (see `is_reserved_header`).
            if let Some(i) = hop_by_hop_index(text) {
                hop.note(i, value);
                continue;
            }
            if name == header::HOST {
                hosts += 1;
                host_header.get_or_insert_with(|| value.clone());
            } else if name == header::COOKIE {
                cookies += 1;
            } else if !doomed && self.protected_filter & filter_bit(text) != 0 {
                // The filter (inlined here) tells most names apart without the call.
                doomed = self.is_doomed(name, text, trusted);
            }
        }
        // Exactly one `Host` can stay in place; several are replaced by the first.
        let sent_host = hosts == 1;
        let client_host = host_header.or_else(|| {
            uri.authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });

        let upgrade = hop.remove(headers);
        if doomed {
            self.strip_protected(headers, trusted);
        }
        // Room for what is added below, so the map grows at most once.
        headers.reserve(4 + identity.len());

        set_forwarded_for(headers, conn, trusted);
        if !(trusted && headers.contains_key(X_FORWARDED_PROTO)) {
            headers.insert(
                X_FORWARDED_PROTO,
                HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
            );
        }
        if !(trusted && headers.contains_key(X_FORWARDED_HOST)) {
            if let Some(host) = &client_host {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
        }
        match (client_host, self.preserve_host) {
            // The client's own `Host` stays where it is.
            (Some(_), true) if sent_host => {}
            (Some(host), true) => {
                headers.insert(header::HOST, host);
            }
            _ => {
                headers.insert(header::HOST, upstream.host.clone());
            }
        }
        for (name, value) in identity {
            headers.append(name, value.clone());
        }
        if let Some((name, value)) = assertion {
            headers.insert(name, value);
        }
        if cookies > 1 {
            merge_cookie_headers(headers);
        }
        if let Some(protocol) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        upgrade
    }

    /// Forward `req` to `upstream` with `path` (the canonical path), the given identity headers and
    /// the signed assertion, if any.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        path: &str,
        upstream: &Upstream,
        identity: &[(HeaderName, HeaderValue)],
        assertion: Option<(&HeaderName, HeaderValue)>,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut head, body) = req.into_parts();
        let upgrade = self.rewrite_headers(
            &mut head.headers,
            &head.uri,
            conn,
            upstream,
            identity,
            assertion,
        );
        let mut req = Request::from_parts(head, body);

        let path_and_query = match req.uri().path_and_query() {
            // The common case: the client's path is already canonical and the upstream has no base
            // path, so the target is the client's own, shared rather than copied.
            Some(pq) if upstream.base_path.is_empty() && pq.path() == path => pq.clone(),
            _ => {
                let mut target = String::with_capacity(upstream.base_path.len() + path.len() + 64);
                target.push_str(&upstream.base_path);
                target.push_str(path);
                if let Some(q) = req.uri().query() {
                    target.push('?');
                    target.push_str(q);
                }
                PathAndQuery::try_from(target).map_err(|e| {
                    GatewayError::new(
                        ErrorKind::BadRequest,
                        format!("unusable request target: {e}"),
                    )
                })?
            }
        };
        // Origin-form: the upstream gets the path and query only.
        *req.uri_mut() = Uri::from(path_and_query);
        *req.version_mut() = Version::HTTP_11;

        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        // `upstream.timeout` counts from the end of the request body, so a long upload is not cut off
        // while the upstream is still receiving it.
        // A request without a body (most) is sent in full at once: no need to be told.
        let progress = if http_body::Body::is_end_stream(req.body()) {
            None
        } else {
            Some(Arc::new(BodyProgress::default()))
        };
        let req = req.map(|body| UpstreamBody::new(body, progress.clone()));
        let exchange = upstream.pool.send(req, self.connect_timeout);
        let deadline = async {
            if let Some(progress) = &progress {
                progress.done.notified().await;
            }
            tokio::time::sleep(self.timeout).await;
        };
        let outcome = tokio::select! {
            result = exchange => Ok(result),
            () = deadline => Err(()),
        };
        let mut response = match outcome {
            Ok(Ok(response)) => response,
            // The client's body broke off or was malformed (a bad chunk size, an oversized chunk
            // extension): the client's fault, not the upstream's. The upstream connection is dropped.
            Ok(Err(pool::Error::Http(e)))
                if e.downcast_ref::<h1::Error>()
                    .is_some_and(h1::Error::is_request_body)
                    || progress
                        .as_ref()
                        .is_some_and(|p| p.failed.load(Ordering::SeqCst)) =>
            {
                return Err(GatewayError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "the request body from {} could not be read: {}",
                        conn.peer,
                        error_chain(e.as_ref())
                    ),
                ));
            }
            Ok(Err(e)) => {
                let (kind, what, chain) = match &e {
                    pool::Error::Connect(e) => {
                        (UpstreamError::Connect, "connecting to", error_chain(e))
                    }
                    pool::Error::Tls(why) => (UpstreamError::Tls, "TLS with", why.clone()),
                    pool::Error::Http(e) => (
                        UpstreamError::Protocol,
                        "talking to",
                        error_chain(e.as_ref()),
                    ),
                };
                return Err(GatewayError::upstream(
                    kind,
                    format!("{what} upstream {}: {chain}", upstream.authority),
                ));
            }
            Err(_) => {
                return Err(GatewayError::upstream(
                    UpstreamError::Timeout,
                    format!(
                        "upstream {} sent no response head within {:?}",
                        upstream.authority, self.timeout
                    ),
                ))
            }
        };

        // The client's connection keeps its own version and keep-alive whatever the upstream speaks:
        // hyper writes a response's version in its status line, and closes after an HTTP/1.0 one.
        // (hyper answers an HTTP/1.0 client in HTTP/1.0 itself, and HTTP/2 ignores the field.)
        *response.version_mut() = Version::HTTP_11;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let response_upgrade = remove_hop_by_hop(response.headers_mut());
        if switching {
            match (client_upgrade, response_upgrade) {
                (Some(client_side), Some(protocol)) => {
                    let Some(upstream_side) = response.body_mut().take_upgraded() else {
                        return Err(GatewayError::upstream(
                            UpstreamError::Protocol,
                            "upstream switched protocols but its connection is gone",
                        ));
                    };
                    tokio::spawn(tunnel(client_side, upstream_side));
                    let headers = response.headers_mut();
                    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    headers.insert(header::UPGRADE, protocol);
                }
                _ => {
                    return Err(GatewayError::upstream(
                        UpstreamError::Protocol,
                        "upstream switched protocols without an upgrade request",
                    ))
                }
            }
        }
        Ok(response.map(Either::Left))
    }
}

/// How far a request body has gone upstream: told once it has been sent in full or abandoned, and
/// whether reading it from the client failed.
#[derive(Default)]
struct BodyProgress {
    done: tokio::sync::Notify,
    failed: AtomicBool,
}

/// The request body on its way upstream; reports when it has been sent in full (or abandoned).
pub struct UpstreamBody {
    inner: Incoming,
    progress: Option<Arc<BodyProgress>>,
}

impl UpstreamBody {
    fn new(inner: Incoming, progress: Option<Arc<BodyProgress>>) -> UpstreamBody {
        let mut body = UpstreamBody { inner, progress };
        if http_body::Body::is_end_stream(&body.inner) {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(progress) = self.progress.take() {
            // A permit is kept for a waiter that comes later.
            progress.done.notify_one();
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Err(_))) => {
                if let Some(progress) = &this.progress {
                    progress.failed.store(true, Ordering::SeqCst);
                }
                this.finish();
            }
            std::task::Poll::Ready(None) => this.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Copy bytes both ways between the two upgraded connections until either side closes; what the
/// upstream sent right after its `101` goes to the client first.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: (pool::Stream, bytes::Bytes)) {
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let (mut upstream, early) = upstream;
    let mut client = TokioIo::new(client);
    if !early.is_empty() {
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut client, &early).await {
            tracing::debug!("upgraded connection ended: {e}");
            return;
        }
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
}

/// Remove hop-by-hop headers and those named in `Connection`. Returns the `Upgrade` protocol when the
/// message asked to upgrade (`Connection: upgrade` with an `Upgrade` header), so the caller can re-add it.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut hop = HopByHop::default();
    for (name, value) in headers.iter() {
        if let Some(i) = hop_by_hop_index(name.as_str()) {
            hop.note(i, value);
        }
    }
    hop.remove(headers)
}

/// The hop-by-hop headers of a message, gathered in one pass over its fields so that only the ones
/// present are looked up again (most messages carry none, or only `Connection: keep-alive`).
#[derive(Default)]
struct HopByHop {
    /// Bit `i` set: `HOP_BY_HOP[i]` is present.
    present: u16,
    /// Other headers named in `Connection`.
    named: Vec<HeaderName>,
    upgrade_requested: bool,
    upgrade: Option<HeaderValue>,
}

impl HopByHop {
    /// Note a field whose name is `HOP_BY_HOP[i]`.
    fn note(&mut self, i: usize, value: &HeaderValue) {
        self.present |= 1 << i;
        if i == UPGRADE_INDEX {
            self.upgrade.get_or_insert_with(|| value.clone());
        } else if i == CONNECTION_INDEX {
            let bytes = value.as_bytes();
            // The usual values name nothing beyond the fixed list: no need to split them.
            if bytes.eq_ignore_ascii_case(b"keep-alive") || bytes.eq_ignore_ascii_case(b"close") {
                return;
            }
            let tokens = value.to_str().unwrap_or_default().split(',').map(str::trim);
            for token in tokens {
                if token.eq_ignore_ascii_case("upgrade") {
                    self.upgrade_requested = true;
                }
                // `keep-alive`, `upgrade` and the like go with the fixed list.
                if HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(token))
                {
                    continue;
                }
                if let Ok(named) = HeaderName::from_bytes(token.as_bytes()) {
                    self.named.push(named);
                }
            }
        }
    }

    /// Remove what was noted; the `Upgrade` protocol when `Connection` asked for it.
    fn remove(self, headers: &mut HeaderMap) -> Option<HeaderValue> {
        if self.present == 0 {
            return None;
        }
        for name in self.named {
            headers.remove(name);
        }
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            if self.present & (1 << i) != 0 {
                headers.remove(name);
            }
        }
        self.upgrade.filter(|_| self.upgrade_requested)
    }
}

/// One bit of 128 for a header name, from its length and last byte, the same for its `-` and `_`
/// spellings: a protected name and any spelling of it always share their bit.
#[inline]
fn filter_bit(name: &str) -> u128 {
    let last = match name.as_bytes().last() {
        Some(b'-') | None => b'_',
        Some(&b) => b,
    };
    1 << ((name.len().wrapping_mul(7) + usize::from(last)) & 127)
}

const CONNECTION_INDEX: usize = 0;
const UPGRADE_INDEX: usize = 6;

/// The position of a (lower-case) header name in [`HOP_BY_HOP`]: a `match`, which compiles to a
/// length switch and one comparison, rather than nine comparisons.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => CONNECTION_INDEX,
        "proxy-connection" => 1,
        "keep-alive" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => UPGRADE_INDEX,
        "proxy-authorization" => 7,
        "proxy-authenticate" => 8,
        _ => return None,
    })
}

/// HTTP/2 clients may split cookies over several `cookie` fields; an HTTP/1.1 upstream must receive one
/// header, joined with "; " (RFC 9113 section 8.2.3, RFC 6265 section 5.4).
fn merge_cookie_headers(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(mut value) = HeaderValue::from_bytes(&joined) {
        value.set_sensitive(true);
        headers.insert(header::COOKIE, value);
    }
}

/// `X-Forwarded-For`: the peer's address, appended to a trusted proxy's list, or alone.
fn set_forwarded_for(headers: &mut HeaderMap, conn: &ConnInfo, trusted: bool) {
    if !trusted {
        headers.insert(X_FORWARDED_FOR, conn.peer_ip.clone());
        return;
    }
    let mut value = String::new();
    for v in headers.get_all(X_FORWARDED_FOR) {
        if let Ok(v) = v.to_str() {
            let v = v.trim();
            if !v.is_empty() {
                value.push_str(v);
                value.push_str(", ");
            }
        }
    }
    value.push_str(&conn.peer.ip().to_canonical().to_string());
    headers.remove(X_FORWARDED_FOR);
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret , close"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert_eq!(remove_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn a_connection_of_only_keep_alive_or_close_is_removed_too() {
        for value in ["keep-alive", "Keep-Alive", "close", "CLOSE"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(value));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            assert_eq!(remove_hop_by_hop(&mut h), None, "{value}");
            assert_eq!(h.len(), 1, "{value}: {h:?}");
            assert!(h.contains_key("x-kept"), "{value}");
        }
    }

    #[test]
    fn hop_by_hop_names_are_found_by_position() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index("connections"), None);
        assert_eq!(hop_by_hop_index("host"), None);
    }

    #[test]
    fn both_spellings_of_a_name_share_a_filter_bit() {
        for name in [
            "x-forwarded-user",
            "x-user-",
            "a",
            "x-forwarded-preferred-username",
        ] {
            assert_eq!(
                filter_bit(name),
                filter_bit(&name.replace('-', "_")),
                "{name}"
            );
        }
        assert_ne!(filter_bit("x-forwarded-for"), filter_bit("accept-language"));
    }

    #[test]
    fn upgrade_is_reported_only_when_connection_asks_for_it() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            remove_hop_by_hop(&mut h),
            Some(HeaderValue::from_static("websocket"))
        );
        assert!(h.is_empty());

        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(remove_hop_by_hop(&mut h), None);
    }

    #[test]
    fn protected_headers_go_in_every_spelling() {
        let proxy = Proxy::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            true,
            vec![],
            [HeaderName::from_static("x-forwarded-user")],
        );
        let mut h = HeaderMap::new();
        h.append("x-forwarded-user", HeaderValue::from_static("admin"));
        h.append("x-forwarded-user", HeaderValue::from_static("root"));
        h.append("x_forwarded_user", HeaderValue::from_static("admin"));
        h.append("X_Forwarded_For", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-access-token", HeaderValue::from_static("t"));
        h.append("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        h.append("x-other_header", HeaderValue::from_static("kept"));
        proxy.strip_protected(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-other_header"));
    }

    #[test]
    fn several_cookie_fields_become_one() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2; c=3"));
        merge_cookie_headers(&mut h);
        assert_eq!(
            h.get_all(header::COOKIE).iter().collect::<Vec<_>>(),
            vec!["a=1; b=2; c=3"]
        );
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        merge_cookie_headers(&mut h);
        assert_eq!(h[header::COOKIE], "a=1");
    }

    #[test]
    fn forwarded_for_appends_only_for_trusted_peers() {
        let peer = ConnInfo::new("10.1.2.3:5555".parse().unwrap(), false);
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        set_forwarded_for(&mut h, &peer, true);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        set_forwarded_for(&mut h, &peer, false);
        assert_eq!(h[X_FORWARDED_FOR], "10.1.2.3");
    }

    /// Names a client may not send, as the gateway is configured below.
    const PROTECTED: [&str; 10] = [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-auth-request-groups",
        "remote-user",
        "x-forwarded-access-token",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
    ];

    /// `name` with each letter upper-cased and each `-` turned into `_` as the bits of `spelling` say.
    fn spelled(name: &str, spelling: u64) -> String {
        name.chars()
            .enumerate()
            .map(|(i, c)| match (c, spelling >> (i % 64) & 1) {
                ('-', 1) => '_',
                (c, 1) => c.to_ascii_uppercase(),
                (c, _) => c,
            })
            .collect()
    }

    proptest::proptest! {
        /// Whatever spellings of protected names a client sends (any case, `_` for any `-`, any
        /// count, among other headers), after the rewrite every field whose name means a protected
        /// one carries the gateway's value, never the client's.
        #[test]
        fn identity_header_stripping_removes_every_spelling(
            sent in proptest::collection::vec((0..PROTECTED.len(), proptest::prelude::any::<u64>(), 1..4usize), 0..10),
            others in proptest::collection::vec("[a-zA-Z][a-zA-Z0-9_-]{0,24}", 0..6),
            trusted in proptest::prelude::any::<bool>(),
        ) {
            let proxy = Proxy::new(
                Duration::from_secs(1),
                Duration::from_secs(1),
                true,
                if trusted { vec!["10.0.0.0/8".parse().unwrap()] } else { vec![] },
                PROTECTED[..4].iter().map(|n| HeaderName::from_static(n)),
            );
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("app.example"));
            for (i, (which, spelling, count)) in sent.iter().enumerate() {
                let name = HeaderName::from_bytes(spelled(PROTECTED[*which], *spelling).as_bytes()).unwrap();
                for n in 0..*count {
                    h.append(name.clone(), HeaderValue::from_str(&format!("spoofed-{i}-{n}")).unwrap());
                }
            }
            for other in &others {
                h.append(HeaderName::from_bytes(other.as_bytes()).unwrap(), HeaderValue::from_static("spoofed-other"));
            }
            let conn = ConnInfo::new("10.1.2.3:5555".parse().unwrap(), false);
            let upstream = Upstream::from_url(&Url::parse("http://127.0.0.1:9000").unwrap());
            let identity = [(HeaderName::from_static("x-forwarded-user"), HeaderValue::from_static("real"))];
            proxy.rewrite_headers(&mut h, &Uri::from_static("/"), &conn, &upstream, &identity, None);
            for (name, value) in &h {
                let meaning = name.as_str().replace('_', "-");
                if !PROTECTED.contains(&meaning.as_str()) {
                    continue;
                }
                // A trusted proxy's own forwarding headers, spelled as such, are believed.
                let believed = trusted
                    && ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"]
                        .contains(&name.as_str());
                let spoofed = value.to_str().unwrap().contains("spoofed");
                proptest::prop_assert!(believed || !spoofed, "{}: {:?} survived", name, value);
            }
            proptest::prop_assert_eq!(h.get_all("x-forwarded-user").iter().count(), 1);
            proptest::prop_assert_eq!(&h["x-forwarded-user"], "real");
        }
    }

    #[test]
    fn upstream_authority_and_base_path() {
        let u = Upstream::from_url(&Url::parse("http://127.0.0.1:9000/app/").unwrap());
        assert_eq!(u.authority.as_str(), "127.0.0.1:9000");
        assert_eq!(u.base_path, "/app");
        let u = Upstream::from_url(&Url::parse("http://[::1]:9000").unwrap());
        assert_eq!(u.authority.as_str(), "[::1]:9000");
        assert_eq!(u.base_path, "");
    }
}
