//! The thin HTTP sender: the only code in `oidc/` that does I/O.
//!
//! What it owns: turning an `http::Request<Bytes>` into an `http::Response<Bytes>` over reqwest
//! (rustls, redirects off, connect and total timeouts, bounded body), and classifying failures
//! as "provider unreachable" or not. What it does not own: any protocol meaning.
//! Redirects are off because a provider endpoint that redirects is misconfigured, and following
//! it could send the client credentials of a token request somewhere else.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::MAX_BODY_BYTES;

/// The user agent sent to the provider.
pub const USER_AGENT: &str = concat!("portcullis/", env!("CARGO_PKG_VERSION"));

/// Why a request got no usable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Connect failure, timeout, reset: the provider is down or cannot be reached.
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    #[error("provider response body exceeds {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("cannot send the request: {0}")]
    Request(String),
}

/// A reqwest client configured for provider calls.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { client })
    }

    /// Sends one request and reads at most [`MAX_BODY_BYTES`] of the response body.
    pub async fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, SendError> {
        let req = reqwest::Request::try_from(req).map_err(|e| SendError::Request(e.to_string()))?;
        let mut resp = self.client.execute(req).await.map_err(classify)?;
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(SendError::TooLarge);
        }
        let mut builder = http::Response::builder()
            .status(resp.status())
            .version(resp.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = resp.headers().clone();
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(SendError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body.freeze())
            .map_err(|e| SendError::Request(e.to_string()))
    }
}

/// A builder error is ours; every other failure (connect, timeout, TLS, reset mid-body) means
/// the provider could not be talked to.
fn classify(e: reqwest::Error) -> SendError {
    if e.is_builder() {
        SendError::Request(e.to_string())
    } else {
        SendError::Unreachable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::testutil::TestServer;

    #[tokio::test]
    async fn sends_and_reads_and_does_not_follow_redirects() {
        let server = TestServer::default();
        server.set("/doc", 200, r#"{"ok":true}"#);
        server.set("/moved", 302, "");
        let addr = server.start().await;
        let sender = HttpSender::new(Duration::from_secs(10)).unwrap();
        let req = http::Request::get(format!("http://{addr}/doc"))
            .body(Bytes::new())
            .unwrap();
        let resp = sender.send(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body().as_ref(), br#"{"ok":true}"#);
        assert!(server
            .last_request("/doc")
            .to_ascii_lowercase()
            .contains(&format!("user-agent: {USER_AGENT}")));
        let req = http::Request::get(format!("http://{addr}/moved"))
            .body(Bytes::new())
            .unwrap();
        assert_eq!(sender.send(req).await.unwrap().status(), 302);
    }

    #[tokio::test]
    async fn refused_connection_is_unreachable_and_big_bodies_are_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = listener.local_addr().unwrap();
        drop(listener);
        let sender = HttpSender::new(Duration::from_secs(10)).unwrap();
        let req = http::Request::get(format!("http://{dead}/"))
            .body(Bytes::new())
            .unwrap();
        assert!(matches!(
            sender.send(req).await,
            Err(SendError::Unreachable(_))
        ));

        let server = TestServer::default();
        server.set("/big", 200, "x".repeat(MAX_BODY_BYTES + 1));
        let addr = server.start().await;
        let req = http::Request::get(format!("http://{addr}/big"))
            .body(Bytes::new())
            .unwrap();
        assert!(matches!(sender.send(req).await, Err(SendError::TooLarge)));
    }
}
