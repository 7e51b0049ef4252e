//! The access log and request ids: one line per request, and one id that follows it through.
//!
//! The line is an INFO event of target `portcullis::access` (so `log.level = "warn,portcullis::access=info"`
//! keeps it alone), written in the `record` phase when `log.access_log` is on. Its fields are SPEC's:
//! `request_id`, `method`, `path`, `status`, `duration_ms` (request head to response head),
//! `upstream_ms` (sending to the upstream until its response head; only when the request was
//! proxied) and `sub` (only when the request carried an identity). The path is the request's path
//! alone: never the query, which holds the callback's `code` and `state`; never a header value.
//!
//! The request id is the client's `X-Request-Id` when it sent exactly one that is short and made of
//! token characters (so it cannot confuse a log line), else a fresh random UUID (version 4). The
//! gateway passes it upstream, returns it on every response (its own too: 302, 401, 403, 502...) and
//! logs it, so one id finds a request in the client's, the gateway's and the application's logs.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent request id kept.
pub const MAX_REQUEST_ID: usize = 128;

/// The request id of a request with these headers (see the module header).
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(X_REQUEST_ID).iter();
    if let (Some(id), None) = (sent.next(), sent.next()) {
        if is_sane(id.as_bytes()) {
            return id.clone();
        }
    }
    generate()
}

/// Between 1 and [`MAX_REQUEST_ID`] bytes of letters, digits and `-_.:+/=@`: what UUIDs, ULIDs,
/// base64 ids and the trace ids of common load balancers are made of; nothing that could end a
/// field, start another or hide in a terminal.
pub fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'=' | b'@')
        })
}

/// Random bytes for request ids, drawn from the system's generator 4 KiB at a time per thread: one
/// call costs about as much as the rest of a request's own work, and an id needs to be unique, not
/// secret. Each byte is used once.
struct Pool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            bytes: [0; 4096],
            used: 4096,
        })
    };
}

/// 16 random bytes (see [`Pool`]).
fn random16() -> [u8; 16] {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.used + 16 > pool.bytes.len() {
            if aws_lc_rs::rand::fill(&mut pool.bytes).is_err() {
                return unique16();
            }
            pool.used = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&pool.bytes[pool.used..pool.used + 16]);
        pool.used += 16;
        out
    })
}

/// When the system's random source fails (never seen in practice): an id unique within this process
/// is still an id.
fn unique16() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes
}

/// A random UUID (RFC 9562 version 4) as a header value.
fn generate() -> HeaderValue {
    let mut bytes = random16();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    HeaderValue::from_bytes(&text).expect("hex digits and dashes are a valid header value")
}

/// What one access log line says.
pub struct Line<'a> {
    pub request_id: &'a HeaderValue,
    pub method: &'a Method,
    /// The request's path, without its query.
    pub path: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub sub: Option<&'a str>,
}

/// Write the access log line.
pub fn write(line: &Line<'_>) {
    tracing::info!(
        target: "portcullis::access",
        request_id = line.request_id.to_str().unwrap_or("-"),
        method = line.method.as_str(),
        path = line.path,
        status = line.status,
        duration_ms = millis(line.duration),
        upstream_ms = line.upstream.map(millis),
        sub = line.sub,
        "request"
    );
}

/// Milliseconds with microsecond precision (`1.234`).
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ids: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for id in ids {
            h.append(X_REQUEST_ID, HeaderValue::from_bytes(id).unwrap());
        }
        h
    }

    fn is_uuid_v4(id: &HeaderValue) -> bool {
        let s = id.to_str().unwrap();
        let groups: Vec<&str> = s.split('-').collect();
        groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && s.bytes()
                .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && groups[2].starts_with('4')
            && matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn a_sane_client_id_is_kept() {
        for id in [
            &b"abc"[..],
            b"0f8fad5b-d9cb-469f-a165-70867728950e",
            b"Root=1-67891233-abcdef012345678912345678",
            b"req_01HZX.4:a+b/c=@d",
            &[b'a'; MAX_REQUEST_ID],
        ] {
            assert_eq!(request_id(&headers(&[id])).as_bytes(), id);
        }
    }

    #[test]
    fn anything_else_gets_a_fresh_uuid() {
        for sent in [
            vec![],
            vec![&b""[..]],
            vec![b"two words"],
            vec![b"a\"b"],
            vec![b"a,b"],
            vec![b"a;b"],
            vec![b"a\tb"],
            vec![b"caf\xc3\xa9"],
            vec![&[b'a'; MAX_REQUEST_ID + 1][..]],
            vec![b"one", b"two"],
        ] {
            let id = request_id(&headers(&sent));
            assert!(is_uuid_v4(&id), "{sent:?} -> {id:?}");
        }
        // Across more than one refill of the pool, every id differs.
        let ids: std::collections::HashSet<HeaderValue> =
            (0..1000).map(|_| request_id(&HeaderMap::new())).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        assert_eq!(millis(Duration::from_micros(1234)).to_string(), "1.234");
        assert_eq!(millis(Duration::from_nanos(999)).to_string(), "0");
        assert_eq!(millis(Duration::from_secs(2)).to_string(), "2000");
    }
}
