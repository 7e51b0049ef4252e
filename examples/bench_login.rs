//! Helper of `benches/load.sh`: the development OpenID provider as a process of its own, and a client
//! that performs real logins through a running gateway.
//!
//! ```text
//! bench_login provider PORT REDIRECT_URIS CLIENT_ID CLIENT_SECRET [REDIRECT_URIS CLIENT_ID CLIENT_SECRET]...
//!     Serve the development provider on 127.0.0.1:PORT until stdin closes, with one client
//!     (client_secret_basic) per group of three arguments; REDIRECT_URIS is a comma-separated list
//!     (one per gateway under test that uses that client). The environment variable
//!     `SIGNING_ALG` chooses how it signs id_tokens: `RS256` (the default) or `ES256`.
//! bench_login login GATEWAY_URL PATH COUNT CONCURRENCY TIME_LIMIT_SECS
//!     Perform COUNT full logins (gateway -> provider form -> callback), CONCURRENCY at a time, stopping
//!     early after TIME_LIMIT_SECS. Prints `cookie=<Cookie header of the last session>` and
//!     `logins=<n> seconds=<wall> logins_per_sec=<rate>` on stdout.
//! bench_login floor PORT UPSTREAM_PORT
//!     The floor of the proxied rows: on 127.0.0.1:PORT, forward each request head as it arrived to
//!     an upstream connection of its own on 127.0.0.1:UPSTREAM_PORT and copy the answer back, on one
//!     thread. It checks nothing (no session, no header rewrite, no validation beyond parsing, no
//!     request bodies, Content-Length answers only): what moving the bytes costs any proxy built on
//!     tokio here, for the report's comparison. Not a proxy to run anywhere else.
//! ```
//!
//! The login follows the redirects a browser would, carrying the cookies of the first answer to the
//! callback, so it works through any relying party that keeps its login state in cookies: portcullis,
//! and Apache's mod_auth_openidc (its state cookie `mod_auth_openidc_state_*`, its callback at its
//! `OIDCRedirectURI`, its session cookie `mod_auth_openidc_session`).
//!
//! The provider runs in this process and the gateway in its own, so the gateway's CPU time during the
//! logins (read from /proc by the script) is the gateway's own work per login, the provider's excluded.

use std::time::{Duration, Instant};

use devidp::{
    DevClient, DevClientAuth, DevProvider, DevProviderOptions, Profile, SigningAlgorithm,
};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let ["floor", port, upstream] = args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        let (port, upstream): (u16, u16) = (port.parse()?, upstream.parse()?);
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(floor(port, upstream));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["provider", port, clients @ ..] if !clients.is_empty() && clients.len() % 3 == 0 => {
            let clients = clients
                .chunks_exact(3)
                .map(|c| DevClient {
                    client_id: c[1].to_string(),
                    auth: DevClientAuth::SecretBasic(c[2].to_string()),
                    redirect_uris: c[0].split(',').map(str::to_string).collect(),
                })
                .collect();
            rt.block_on(provider(port.parse()?, clients))
        }
        ["login", gateway, path, count, concurrency, limit] => rt.block_on(logins(
            gateway,
            path,
            count.parse()?,
            concurrency.parse()?,
            Duration::from_secs(limit.parse()?),
        )),
        _ => Err(
            "usage: bench_login provider PORT (REDIRECT_URIS CLIENT_ID CLIENT_SECRET)... | \
                  bench_login login GATEWAY_URL PATH COUNT CONCURRENCY TIME_LIMIT_SECS | \
                  bench_login floor PORT UPSTREAM_PORT"
                .into(),
        ),
    }
}

async fn provider(port: u16, clients: Vec<DevClient>) -> Result<(), Error> {
    let signing_algorithm = match std::env::var("SIGNING_ALG").as_deref() {
        Err(_) | Ok("RS256") => SigningAlgorithm::Rs256,
        Ok("ES256") => SigningAlgorithm::Es256,
        Ok(other) => return Err(format!("SIGNING_ALG={other}: RS256 or ES256").into()),
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let provider = DevProvider::start(
        listener,
        DevProviderOptions {
            clients,
            profile: Profile::Standard,
            issue_refresh_token: false,
            signing_algorithm,
            ..Default::default()
        },
    )
    .await?;
    println!("provider ready at {}", provider.issuer());
    // Until the script closes our stdin (or kills us).
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut sink = Vec::new();
        std::io::stdin().read_to_end(&mut sink)
    })
    .await;
    provider.shutdown().await;
    Ok(())
}

async fn floor(port: u16, upstream: u16) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("floor ready");
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A load generator that stops resets its connections: that ends one, nothing more.
            match floor_connection(client, upstream).await {
                Err(e)
                    if !e.downcast_ref::<std::io::Error>().is_some_and(|e| {
                        matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                        )
                    }) =>
                {
                    eprintln!("floor: {e}");
                }
                _ => {}
            }
        });
    }
}

/// Head after head from `client`, each sent on to the upstream as it came and answered with the
/// upstream's bytes; ends when either side closes or sends what it cannot handle.
async fn floor_connection(mut client: TcpStream, upstream: u16) -> Result<(), Error> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.set_nodelay(true)?;
    let (mut request, mut response) = (vec![0; 16 * 1024], vec![0; 16 * 1024]);
    let mut filled = 0;
    loop {
        let head = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut fields);
            if let httparse::Status::Complete(len) = parsed.parse(&request[..filled])? {
                let body = parsed.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("transfer-encoding")
                        || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                });
                if body {
                    return Err("request bodies are not forwarded".into());
                }
                break len;
            }
            if filled == request.len() {
                return Err("request head too large".into());
            }
            match client.read(&mut request[filled..]).await? {
                0 => return Ok(()),
                n => filled += n,
            }
        };
        up.write_all(&request[..head]).await?;
        request.copy_within(head..filled, 0);
        filled -= head;
        let mut got = 0;
        let end = loop {
            if got == response.len() {
                return Err("response too large".into());
            }
            match up.read(&mut response[got..]).await? {
                0 => return Err("the upstream closed".into()),
                n => got += n,
            }
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) = parsed.parse(&response[..got])? {
                let length = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .ok_or("answers without Content-Length are not forwarded")?;
                break len + length;
            }
        };
        if end > response.len() {
            return Err("response too large".into());
        }
        while got < end {
            match up.read(&mut response[got..end]).await? {
                0 => return Err("the upstream closed".into()),
                n => got += n,
            }
        }
        client.write_all(&response[..end]).await?;
    }
}

async fn logins(
    gateway: &str,
    path: &str,
    count: usize,
    concurrency: usize,
    limit: Duration,
) -> Result<(), Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let started = Instant::now();
    let deadline = started + limit;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, next) = (client.clone(), next.clone());
        let url = format!("{gateway}{path}");
        tasks.spawn(async move {
            let mut done = 0usize;
            let mut last = String::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count
                && Instant::now() < deadline
            {
                last = login(&client, &url).await?;
                done += 1;
            }
            Ok::<_, Error>((done, last))
        });
    }
    let (mut total, mut cookie) = (0, String::new());
    while let Some(joined) = tasks.join_next().await {
        let (done, last) = joined??;
        total += done;
        if !last.is_empty() {
            cookie = last;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("cookie={cookie}");
    println!(
        "logins={total} seconds={seconds:.3} logins_per_sec={:.1}",
        total as f64 / seconds
    );
    Ok(())
}

/// One whole login; returns the `Cookie` header carrying the new session.
async fn login(client: &reqwest::Client, protected: &str) -> Result<String, Error> {
    // 1. The gateway sends the browser to the provider and sets the login-state cookie.
    let r = client
        .get(protected)
        .header("accept", "text/html")
        .send()
        .await?;
    expect(&r, 302, "gateway redirect to the provider")?;
    let authorize = location(&r)?;
    let login_cookies = cookie_pairs(&r);
    // 2. The provider's login form.
    let r = client.get(&authorize).send().await?;
    expect(&r, 200, "provider login form")?;
    let page = r.text().await?;
    let action = between(&page, "<form method=\"post\" action=\"", "\"")?;
    let request_id = between(&page, "name=\"request_id\" value=\"", "\"")?;
    let action = reqwest::Url::parse(&authorize)?.join(&unescape(action))?;
    // 3. Sign in; the provider redirects to the gateway's callback.
    let r = client
        .post(action)
        .form(&[
            ("request_id", unescape(request_id).as_str()),
            ("username", "alice"),
            ("password", devidp::DEMO_PASSWORD),
        ])
        .send()
        .await?;
    expect(&r, 302, "provider sign-in")?;
    let callback = location(&r)?;
    // 4. The callback: code exchange, id_token validation, session cookie.
    let r = client
        .get(&callback)
        .header(COOKIE, login_cookies)
        .send()
        .await?;
    expect(&r, 302, "gateway callback")?;
    let session = cookie_pairs(&r);
    if session.is_empty() {
        return Err("the callback set no session cookie".into());
    }
    Ok(session)
}

fn expect(r: &reqwest::Response, status: u16, what: &str) -> Result<(), Error> {
    if r.status().as_u16() == status {
        Ok(())
    } else {
        Err(format!("{what}: expected {status}, got {}", r.status()).into())
    }
}

fn location(r: &reqwest::Response) -> Result<String, Error> {
    let loc = r
        .headers()
        .get(LOCATION)
        .ok_or("no Location header")?
        .to_str()?;
    Ok(r.url().join(loc)?.to_string())
}

/// `name=value; ...` of every cookie set (not deleted) by the response.
fn cookie_pairs(r: &reqwest::Response) -> String {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.contains("Max-Age=0"))
        .filter_map(|v| v.split(';').next())
        .filter(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Result<&'a str, Error> {
    let i = text.find(start).ok_or("login form not found")? + start.len();
    let j = text[i..].find(end).ok_or("login form not found")?;
    Ok(&text[i..i + j])
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
