//! Many tools behind one login (SPEC "Many tools behind one login", "Forward-auth"): routes on hosts
//! with `cookie_domain`, the return targets, the forward-auth contract of `/oauth2/auth`, and the
//! gateway behind a real nginx running `deploy/nginx/nginx.conf`. Hosts are told apart by `Host` on
//! loopback: the clients resolve every name to 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use devidp::{DevClient, DevClientAuth, DevProvider, DevProviderOptions, DEMO_USERS};
use reqwest::cookie::Jar;
use tokio::net::TcpListener;

use crate::browser::*;
use crate::support::*;

fn sub_of(name: &str) -> &'static str {
    DEMO_USERS.iter().find(|u| u.username == name).unwrap().sub
}

const CLIENT_SECRET: &str = "edge-secret";

/// The provider, registered for `redirect_uri`, with `options` for the rest.
async fn provider(redirect_uri: &str, options: DevProviderOptions) -> DevProvider {
    DevProvider::start(
        reusable_listener(),
        DevProviderOptions {
            clients: vec![DevClient {
                client_id: CLIENT_ID.into(),
                auth: DevClientAuth::SecretBasic(CLIENT_SECRET.into()),
                redirect_uris: vec![redirect_uri.into()],
            }],
            ..options
        },
    )
    .await
    .unwrap()
}

fn oidc_lines(provider: &DevProvider) -> String {
    format!(
        "issuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_auth = \"client_secret_basic\"\nclient_secret = \"{CLIENT_SECRET}\"",
        provider.issuer()
    )
}

/// A browser (cookie jar, redirects off, HTML accepted) for which every name in `hosts` is
/// 127.0.0.1, trusting `ca` when given.
fn browser_for(hosts: &[&str], port: u16, ca: Option<&[u8]>) -> Browser {
    let jar = Arc::new(Jar::default());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "accept",
        "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap(),
    );
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_provider(jar.clone())
        .default_headers(headers)
        .timeout(Duration::from_secs(30));
    for host in hosts {
        builder = builder.resolve(host, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(pem) = ca {
        builder = builder.tls_certs_only([reqwest::Certificate::from_pem(pem).unwrap()]);
    }
    Browser {
        client: builder.build().unwrap(),
        jar,
    }
}

/// Two tools on their own hosts under `corp.test` (grafana for admins only, a wiki with a public
/// part), the default upstream for any other host, one login at `login.corp.test`.
struct Tools {
    provider: DevProvider,
    grafana: TestUpstream,
    wiki: TestUpstream,
    app: TestUpstream,
    gateway: portcullis::RunningGateway,
    port: u16,
    toml: String,
}

impl Tools {
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}.corp.test:{}{path}", self.port)
    }

    fn browser(&self) -> Browser {
        browser_for(
            &[
                "login.corp.test",
                "grafana.corp.test",
                "wiki.corp.test",
                "other.corp.test",
            ],
            self.port,
            None,
        )
    }
}

async fn tools() -> Tools {
    logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let public_url = format!("http://login.corp.test:{port}");
    let provider = provider(
        &format!("{public_url}/oauth2/callback"),
        DevProviderOptions::default(),
    )
    .await;
    let (grafana, wiki, app) = (
        TestUpstream::start("grafana").await,
        TestUpstream::start("wiki").await,
        TestUpstream::start("app").await,
    );
    let routes = format!(
        r#"cookie_domain = "corp.test"
[[routes]]
host = "GRAFANA.corp.test"
upstream = "{}"
allowed_groups = ["admins"]
[[routes]]
host = "wiki.corp.test"
path = "^/public/"
policy = "public"
upstream = "{}"
[[routes]]
host = "wiki.corp.test"
upstream = "{}"
"#,
        grafana.url(),
        wiki.url(),
        wiki.url()
    );
    let toml = login_gateway_toml(&public_url, &app.url(), &oidc_lines(&provider), &routes);
    let gateway = portcullis::spawn(config(&toml), listener).unwrap();
    wait_ready(&format!("http://127.0.0.1:{port}")).await;
    Tools {
        provider,
        grafana,
        wiki,
        app,
        gateway,
        port,
        toml,
    }
}

/// One login serves both tools; each tool's own policy holds; the browser returns to the tool the
/// login started from; another host follows the default; sign-out on one tool ends it everywhere.
#[tokio::test]
async fn two_tools_on_two_hosts_share_one_login_and_keep_their_own_policies() {
    let t = tools().await;

    // bob (staff) starts on grafana: one login at login.corp.test, back to grafana, where he is
    // refused; the wiki lets him in with the same session, and the grafana upstream never saw him.
    let bob = t.browser();
    let back = bob.login(&t.url("grafana", "/d/1?orgId=2"), "bob").await;
    assert_eq!(back, t.url("grafana", "/d/1?orgId=2"));
    let cookies = bob.cookie_header(&t.url("wiki", "/"));
    assert!(cookies.contains("_portcullis="), "{cookies}");
    assert_eq!(bob.get(&back).await.status(), 403);
    assert!(t.grafana.seen().is_empty(), "grafana was reached");
    let r = bob.get(&t.url("wiki", "/page")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "wiki /page");
    assert_eq!(t.wiki.last().headers["x-forwarded-user"], sub_of("bob"));

    // alice (admins) starts on the wiki and reaches grafana without logging in again.
    let alice = t.browser();
    let back = alice.login(&t.url("wiki", "/page?x=1"), "alice").await;
    assert_eq!(back, t.url("wiki", "/page?x=1"));
    let r = alice.get(&t.url("grafana", "/d/1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "grafana /d/1");
    assert_eq!(
        t.grafana.last().headers["x-forwarded-user"],
        sub_of("alice")
    );
    assert_eq!(
        t.grafana.last().headers["x-forwarded-email"],
        "alice@example.com"
    );

    // A host no route names: the routes without host, then the default (login required, [upstream]).
    let r = alice.get(&t.url("other", "/x")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "app /x");
    assert_eq!(t.app.last().headers["x-forwarded-user"], sub_of("alice"));
    let stranger = t.browser();
    let r = stranger.get(&t.url("other", "/x")).await;
    assert_eq!(r.status(), 302, "the default requires a login");
    // The wiki's public route on its host only.
    assert_eq!(
        stranger.get(&t.url("wiki", "/public/a")).await.status(),
        200
    );
    assert_eq!(
        stranger.get(&t.url("grafana", "/public/a")).await.status(),
        302
    );

    // Sign-out on the wiki ends the session on every tool.
    let r = alice.get(&t.url("wiki", "/oauth2/sign_out")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(alice.get(&t.url("grafana", "/d/1")).await.status(), 302);
    assert_eq!(alice.get(&t.url("wiki", "/page")).await.status(), 302);
    assert!(t.provider.issuer().starts_with("http://127.0.0.1:"));
}

/// Where `/oauth2/start?rd=<target>` sends the browser after a complete login.
async fn after_login(t: &Tools, from_host: &str, target: &str) -> String {
    let b = t.browser();
    let mut start = url::Url::parse(&t.url(from_host, "/oauth2/start")).unwrap();
    start.query_pairs_mut().append_pair("rd", target);
    let authorize = b.redirect_from(start.as_str()).await;
    let callback = b.provider_login(&authorize, "alice").await;
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 302, "{target:?}");
    r.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn hostile_return_targets_fall_back_to_the_public_root_and_ours_are_kept() {
    let t = tools().await;
    let p = t.port;
    let root = format!("http://login.corp.test:{p}/");
    for hostile in [
        "http://evil.example/".to_string(),
        format!("http://corp.test.evil.com:{p}/"),
        format!("http://wiki.corp.test.evil.com:{p}/"),
        "http://evilcorp.test/".to_string(),
        format!("http://user@wiki.corp.test:{p}/"),
        format!("http://wiki.corp.test:{p}@evil.example/"),
        format!("http://wiki.corp.test:{p}\\@evil.example/"),
        "/\\evil.example".to_string(),
        "//evil.example/".to_string(),
        "http://wiki%2ecorp.test/".to_string(),
        "http://evil.example%2F.corp.test/".to_string(),
        format!("https://wiki.corp.test:{p}/"),
        "javascript:alert(1)".to_string(),
        "/%09/evil.example".to_string(),
        format!("http://wiki.corp.test:{p}/a b"),
        "http://wiki.corp\u{3002}test/".to_string(),
    ] {
        assert_eq!(
            after_login(&t, "login", &hostile).await,
            root,
            "{hostile:?}"
        );
    }
    for ours in [
        format!("http://wiki.corp.test:{p}/page?a=1&b=2"),
        format!("http://GRAFANA.corp.test:{p}/d/1"),
        format!("http://corp.test:{p}/"),
        format!("http://login.corp.test:{p}/x"),
        "/relative?q=1".to_string(),
    ] {
        assert_eq!(after_login(&t, "login", &ours).await, ours, "{ours:?}");
    }
    // A relative target asked on a tool's host means that host's path.
    assert_eq!(
        after_login(&t, "wiki", "/page").await,
        format!("http://wiki.corp.test:{p}/page")
    );
}

/// A gateway as a forward-auth endpoint: a deny route, a public route, the default; `trusted`
/// is `server.trusted_proxies`.
async fn forward_auth_gateway(trusted: &str) -> (DevProvider, portcullis::RunningGateway, String) {
    logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let provider = provider(
        &format!("{base}/oauth2/callback"),
        DevProviderOptions::default(),
    )
    .await;
    let extra = "[[routes]]\nhost = \"grafana.example\"\nallowed_groups = [\"admins\"]\n\
         [[routes]]\npath = \"^/admin(/|$)\"\npolicy = \"deny\"\n\
         [[routes]]\npath = \"^/public/\"\npolicy = \"public\"\n\
         [[routes]]\npath = \"^/ops/\"\nallowed_groups = [\"admins\"]\n";
    let toml = login_gateway_toml(&base, "http://127.0.0.1:9", &oidc_lines(&provider), extra)
        .replace(
            "[server]\n",
            &format!("[server]\ntrusted_proxies = [\"{trusted}\"]\n"),
        );
    let gateway = portcullis::spawn(config(&toml), listener).unwrap();
    wait_ready(&base).await;
    (provider, gateway, base)
}

/// `GET {base}/oauth2/auth` (or `path`) with these headers; status and headers of the answer.
async fn check(
    b: &Browser,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap) {
    let mut rb = b.client.get(format!("{base}{path}"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.headers().clone())
}

#[tokio::test]
async fn forward_auth_judges_the_forwarded_request_by_routes_and_policy() {
    let (_provider, _gw, base) = forward_auth_gateway("127.0.0.1/32").await;
    let anon = Browser::new();
    let bob = Browser::new();
    bob.login(&format!("{base}/private"), "bob").await;
    let identity = [
        "x-forwarded-user",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-groups",
        "x-auth-request-preferred-username",
    ];
    let nginx = |uri: &'static str| vec![("x-original-uri", uri)];
    let traefik = |method: &'static str, uri: &'static str| {
        vec![("x-forwarded-method", method), ("x-forwarded-uri", uri)]
    };

    // A signed-in user on a protected path: 202 with the identity under both sets of names.
    for headers in [nginx("/private/x?y=1"), traefik("GET", "/private/x?y=1")] {
        let (status, h) = check(&bob, &base, "/oauth2/auth", &headers).await;
        assert_eq!(status, 202, "{headers:?}");
        assert_eq!(h["x-forwarded-user"], sub_of("bob"));
        assert_eq!(h["x-auth-request-user"], sub_of("bob"));
        assert_eq!(h["x-auth-request-email"], "bob@example.org");
        assert_eq!(h["x-auth-request-groups"], "staff");
        assert_eq!(h["x-auth-request-preferred-username"], "bob");
        assert!(h.get("set-cookie").is_none());
    }
    // A route's own groups: bob is refused, as he would be through the gateway's own proxy.
    for headers in [nginx("/ops/x"), traefik("GET", "/ops/x")] {
        assert_eq!(check(&bob, &base, "/oauth2/auth", &headers).await.0, 403);
    }
    // The deny route, for anyone; the public route, with the identity only when there is one.
    for b in [&anon, &bob] {
        for headers in [nginx("/admin"), traefik("GET", "/admin/x")] {
            assert_eq!(check(b, &base, "/oauth2/auth", &headers).await.0, 403);
        }
    }
    for headers in [nginx("/public/a"), traefik("POST", "/public/a")] {
        let (status, h) = check(&anon, &base, "/oauth2/auth", &headers).await;
        assert_eq!(status, 202);
        for name in identity {
            assert!(h.get(name).is_none(), "{name} without a session");
        }
        let (status, h) = check(&bob, &base, "/oauth2/auth", &headers).await;
        assert_eq!(status, 202);
        assert_eq!(h["x-auth-request-user"], sub_of("bob"));
    }
    // No session on a protected path: 401, never a redirect outside redirect mode.
    for headers in [nginx("/private"), traefik("DELETE", "/private")] {
        assert_eq!(check(&anon, &base, "/oauth2/auth", &headers).await.0, 401);
    }
    // Path tricks are judged on the canonical path or refused, never let through as public.
    for trick in [
        "/public/../admin",
        "/public/%2E%2E/admin",
        "/public/..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/public//../../admin",
    ] {
        for headers in [
            vec![("x-original-uri", trick)],
            vec![("x-forwarded-uri", trick)],
        ] {
            let (status, _) = check(&bob, &base, "/oauth2/auth", &headers).await;
            assert!(
                status == 403 || status == 400,
                "{trick:?} answered {status}"
            );
        }
    }
    // X-Forwarded-Host steers routes that name a host: grafana is for admins only.
    let grafana = [
        ("x-forwarded-host", "Grafana.example:8443"),
        ("x-forwarded-uri", "/private"),
    ];
    assert_eq!(check(&bob, &base, "/oauth2/auth", &grafana).await.0, 403);
    let alice = Browser::new();
    alice.login(&format!("{base}/private"), "alice").await;
    assert_eq!(check(&alice, &base, "/oauth2/auth", &grafana).await.0, 202);
    let escaped = [
        ("x-forwarded-host", "%67rafana.example"),
        ("x-forwarded-uri", "/private"),
    ];
    assert_eq!(check(&bob, &base, "/oauth2/auth", &escaped).await.0, 403);
    // Contradictory or repeated descriptions are refused.
    let (status, _) = check(
        &bob,
        &base,
        "/oauth2/auth",
        &[
            ("x-original-uri", "/public/a"),
            ("x-forwarded-uri", "/admin"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    // Envoy's form: the original path after ours, described by X-Forwarded-Uri; allowed is 200.
    let (status, h) = check(
        &bob,
        &base,
        "/oauth2/auth/private/x?y=1",
        &[("x-forwarded-uri", "/private/x?y=1")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["x-auth-request-user"], sub_of("bob"));
    let envoy_admin = [("x-forwarded-uri", "/admin")];
    assert_eq!(
        check(&bob, &base, "/oauth2/auth/admin", &envoy_admin)
            .await
            .0,
        403
    );
    assert_eq!(check(&bob, &base, "/oauth2/auth/private", &[]).await.0, 403);
}

#[tokio::test]
async fn forward_auth_headers_from_an_untrusted_peer_are_refused() {
    let (_provider, _gw, base) = forward_auth_gateway("10.0.0.0/8").await;
    let bob = Browser::new();
    bob.login(&format!("{base}/private"), "bob").await;
    for headers in [
        vec![("x-original-uri", "/public/a")],
        vec![("x-forwarded-uri", "/private")],
        vec![("x-forwarded-method", "GET"), ("x-forwarded-uri", "/admin")],
        vec![("x-forwarded-host", "other.example")],
    ] {
        let (status, h) = check(&bob, &base, "/oauth2/auth", &headers).await;
        assert_eq!(status, 403, "{headers:?}");
        assert!(h.get("x-auth-request-user").is_none());
    }
    // A check that describes nothing is judged as itself: login required.
    let (status, h) = check(&bob, &base, "/oauth2/auth", &[]).await;
    assert_eq!(status, 202);
    assert_eq!(h["x-auth-request-user"], sub_of("bob"));
    assert_eq!(
        check(&Browser::new(), &base, "/oauth2/auth", &[]).await.0,
        401
    );
}

/// `?redirect=true`: a browser without a session gets the login redirect, and comes back to the
/// forwarded URL once logged in; an API client still gets 401.
#[tokio::test]
async fn forward_auth_redirect_mode_completes_a_login_back_to_the_forwarded_url() {
    let (_provider, _gw, base) = forward_auth_gateway("127.0.0.1/32").await;
    let b = Browser::new();
    let r = b
        .client
        .get(format!("{base}/oauth2/auth?redirect=true"))
        .header("x-original-uri", "/reports/q3?year=2026&view=full")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let authorize = location(&r, &base);
    assert!(authorize.contains("code_challenge="), "{authorize}");
    let callback = b.provider_login(&authorize, "alice").await;
    let back = b.redirect_from(&callback).await;
    assert_eq!(back, format!("{base}/reports/q3?year=2026&view=full"));
    let (status, h) = check(
        &b,
        &base,
        "/oauth2/auth",
        &[("x-original-uri", "/reports/q3")],
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(h["x-auth-request-groups"], "admins,staff");

    let api = client();
    let r = api
        .get(format!("{base}/oauth2/auth?redirect=true"))
        .header("accept", "application/json")
        .header("x-original-uri", "/reports/q3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// nginx running the exact `deploy/nginx/nginx.conf` (ports and paths substituted) in front of the
/// real gateway and an app, with the development provider: a browser-style login through nginx,
/// the identity the app sees, a forged one that never reaches it, a denied user, a public location,
/// and a refreshed session of several cookies that reaches the browser through `auth_request`.
#[tokio::test]
async fn nginx_in_front_of_the_gateway_logs_in_and_passes_only_its_identity() {
    let nginx = crate::deploy::required("nginx", "nginx");
    logs();
    let app = TestUpstream::start("app").await;
    let gw_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = gw_listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, https) =
        crate::deploy::start_example_nginx(&nginx, dir.path(), gw_addr, app.addr).await;
    let base = format!("https://app.example.com:{https}");
    // carol's long claim makes a session of several cookies.
    let mut bio = serde_json::Map::new();
    bio.insert(
        "bio".into(),
        serde_json::Value::String(
            (0..900)
                .map(|i| format!("{i:x}"))
                .collect::<Vec<_>>()
                .join("-"),
        ),
    );
    let provider = provider(
        &format!("{base}/oauth2/callback"),
        DevProviderOptions {
            issue_refresh_token: true,
            extra_claims: vec![("carol".into(), bio)],
            ..Default::default()
        },
    )
    .await;
    let toml = login_gateway_toml(
        &base,
        "http://127.0.0.1:9",
        &oidc_lines(&provider),
        "[[routes]]\npath = \"^/admin(/|$)\"\nallowed_groups = [\"admins\"]\n",
    )
    .replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    let gateway = portcullis::spawn(config(&toml), gw_listener).unwrap();
    wait_ready(&format!("http://{gw_addr}")).await;
    let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let browser = || browser_for(&["app.example.com"], https, Some(&cert));
    let forged = [
        ("x-forwarded-user", "mallory"),
        ("x-forwarded-email", "mallory@evil.example"),
        ("x-forwarded-groups", "admins"),
        ("x-auth-request-user", "mallory"),
    ];

    // A login through nginx: the check's 401 becomes the gateway's redirect, the return URL keeps
    // its query whole.
    let bob = browser();
    let back = bob
        .login(&format!("{base}/private/page?a=1&b=%2F&c=x+y"), "bob")
        .await;
    assert_eq!(back, format!("{base}/private/page?a=1&b=%2F&c=x+y"));
    let mut rb = bob.client.get(&back);
    for (k, v) in forged {
        rb = rb.header(k, v);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = app.last();
    assert_eq!(seen.uri, "/private/page?a=1&b=%2F&c=x+y");
    assert_eq!(seen.headers["x-forwarded-user"], sub_of("bob"));
    assert_eq!(seen.headers["x-forwarded-email"], "bob@example.org");
    assert_eq!(seen.headers["x-forwarded-groups"], "staff");
    assert_eq!(seen.headers.get_all("x-forwarded-user").iter().count(), 1);
    for absent in ["x-auth-request-user", "x-portcullis-set-cookie-0"] {
        assert!(
            seen.headers.get(absent).is_none(),
            "{absent} reached the app"
        );
    }

    // A denied user gets the gateway's 403 through nginx; the app is not reached.
    let before = app.seen().len();
    let r = bob.get(&format!("{base}/admin/x")).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("bob"));
    assert_eq!(app.seen().len(), before, "the app was reached");

    // A public location, without any login.
    let stranger = browser();
    let mut rb = stranger.client.get(format!("{base}/static/app.css"));
    for (k, v) in forged {
        rb = rb.header(k, v);
    }
    assert_eq!(rb.send().await.unwrap().status(), 200);
    assert!(app.last().headers.get("x-forwarded-user").is_none());
    // An API call without a session: 401 JSON through nginx, never a redirect.
    let r = stranger
        .client
        .post(format!("{base}/api/items"))
        .header("accept", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // carol's session takes several cookies; when it is refreshed during a check, every one of them
    // reaches the browser, and they alone make a whole session.
    let carol = browser();
    carol.login(&format!("{base}/private"), "carol").await;
    let before = carol.cookie_header(&base);
    assert!(before.contains("_portcullis_1="), "not chunked: {before}");
    provider.set_user_claim("carol", "email", serde_json::json!("carol@new.example"));
    let due = toml.replace("[session]\n", "[session]\nrefresh_before = \"2h\"\n");
    gateway.runtime().reload(config(&due)).unwrap();
    let r = carol.get(&format!("{base}/private")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(provider.refresh_requests(), 1);
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|c| c.starts_with("_portcullis"))
        .collect();
    assert!(set.len() >= 2, "{set:?}");
    assert!(
        r.headers().get("x-portcullis-set-cookie-0").is_none(),
        "nginx passed the copies to the browser"
    );
    let seen = app.last();
    assert_eq!(seen.headers["x-forwarded-email"], "carol@new.example");
    assert!(seen.headers.get("x-portcullis-set-cookie-0").is_none());
    gateway.runtime().reload(config(&toml)).unwrap();
    let after = carol.cookie_header(&base);
    assert_ne!(after, before);
    // A browser holding only the cookies that came back through nginx is signed in as the
    // refreshed carol, without another refresh.
    let fresh = browser_for(&["app.example.com"], https, Some(&cert));
    let r = fresh
        .client
        .get(format!("{base}/private"))
        .header("cookie", after)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.last().headers["x-forwarded-email"], "carol@new.example");
    assert_eq!(provider.refresh_requests(), 1);
}

/// Host routes and `cookie_domain` belong to the configuration snapshot: a reload applies them; one
/// whose cookie domain would not hold the running public_url (kept until a restart) is refused.
#[tokio::test]
async fn a_reload_applies_host_routes_and_keeps_the_cookie_domain_consistent() {
    let t = tools().await;
    let alice = t.browser();
    alice.login(&t.url("wiki", "/page"), "alice").await;
    assert_eq!(alice.get(&t.url("wiki", "/page")).await.status(), 200);
    let deny_wiki_page = t.toml.replace(
        "[[routes]]\nhost = \"GRAFANA.corp.test\"",
        "[[routes]]\nhost = \"*.corp.test\"\npath = \"^/page\"\npolicy = \"deny\"\n\
         [[routes]]\nhost = \"GRAFANA.corp.test\"",
    );
    assert_ne!(deny_wiki_page, t.toml);
    t.gateway.runtime().reload(config(&deny_wiki_page)).unwrap();
    assert_eq!(alice.get(&t.url("wiki", "/page")).await.status(), 403);
    assert_eq!(alice.get(&t.url("grafana", "/page")).await.status(), 403);
    assert_eq!(alice.get(&t.url("wiki", "/other")).await.status(), 200);

    // A configuration valid on its own (its public_url lies in its cookie domain), but public_url
    // needs a restart: the running one would lie outside the new domain.
    let moved = t
        .toml
        .replace("login.corp.test", "login.other.test")
        .replace(
            "cookie_domain = \"corp.test\"",
            "cookie_domain = \"other.test\"",
        );
    let e = t.gateway.runtime().reload(config(&moved)).unwrap_err();
    assert!(e.contains("session.cookie_domain"), "{e}");
    // The running configuration stays.
    assert_eq!(alice.get(&t.url("wiki", "/page")).await.status(), 403);
    assert_eq!(alice.get(&t.url("wiki", "/other")).await.status(), 200);
}
