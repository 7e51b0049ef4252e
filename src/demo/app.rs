//! The demo application: an upstream with no login of its own that shows what the gateway sent it.
//!
//! `GET` anything: an HTML page listing the request line and headers (the identity headers first), so a
//! newcomer sees exactly what their application would receive. Plain hyper, HTTP/1.1, loopback only.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::html_escape;

/// Serve the demo application on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|req| async move { Ok::<_, Infallible>(page(&req)) });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Bind and serve on a free loopback port, returning the address.
pub async fn spawn() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(addr)
}

fn page(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut identity = String::new();
    let mut others = String::new();
    for (name, value) in req.headers() {
        let row = format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            html_escape(name.as_str()),
            html_escape(&String::from_utf8_lossy(value.as_bytes()))
        );
        if name.as_str().starts_with("x-forwarded-") {
            identity.push_str(&row);
        } else {
            others.push_str(&row);
        }
    }
    let user = req
        .headers()
        .get("x-forwarded-email")
        .or_else(|| req.headers().get("x-forwarded-user"))
        .map(|v| html_escape(&String::from_utf8_lossy(v.as_bytes())));
    let greeting = match user {
        Some(u) => format!("<p id=\"whoami\">Signed in as <strong>{u}</strong>.</p>"),
        None => "<p id=\"whoami\">No identity headers: this page was reached without a login.</p>"
            .into(),
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>portcullis demo app</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:50rem;margin:3rem auto;padding:0 1rem}}\
         th{{text-align:left;padding-right:1rem;font-family:monospace}}td{{font-family:monospace;word-break:break-all}}</style></head>\
         <body><h1>Demo application</h1>{greeting}\
         <p>This application has no login of its own. Everything below is what it received from the gateway.</p>\
         <p><code>{} {}</code></p>\
         <h2>Headers set by the gateway</h2><table id=\"identity\">{identity}</table>\
         <h2>Other headers</h2><table id=\"headers\">{others}</table>\
         <p><a href=\"/oauth2/sign_out\">Sign out</a></p></body></html>\n",
        html_escape(req.method().as_str()),
        html_escape(&req.uri().to_string()),
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
