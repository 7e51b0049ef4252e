//! Interoperability with a provider somebody else wrote: oidc-provider, the certified OpenID Provider for
//! Node.js, started from tests/e2e/oidc-provider.mjs. The gateway sits in front of a recording upstream;
//! the cookie-jar browser walks the provider's real login and consent pages for each of the four ways
//! of client authentication, and RP-initiated logout through the provider's confirmation page. The
//! access tokens it issues at those logins are then presented as API clients' bearer tokens: a JWT
//! for a resource (RFC 8707, asked for through `extra_auth_params`) checked against its keys, and an
//! opaque token through its introspection endpoint.
//!
//! Refresh tokens are observed at the provider: its `grant.success` event, printed by the script,
//! reports whether the token response it sent carried a refresh_token. The gateway itself keeps none
//! (session refresh is not built yet), so the provider's own account is the honest witness.

use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use url::Url;

use crate::browser::{location, query_map, wait_ready, Browser};
use crate::node::{OidcProvider, OpClient};
use crate::support::*;

pub struct InteropStack {
    pub provider: OidcProvider,
    pub upstream: TestUpstream,
    _gateway: portcullis::RunningGateway,
    pub base: String,
}

/// oidc-provider, a recording upstream, and the gateway registered as `client`.
pub async fn interop_stack(client: OpClient) -> InteropStack {
    interop_stack_with(client, "", "").await
}

/// [`interop_stack`] with more `[oidc]` lines and more sections for the gateway.
pub async fn interop_stack_with(client: OpClient, oidc_extra: &str, extra: &str) -> InteropStack {
    crate::browser::logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let provider = OidcProvider::start(&base).await;
    let upstream = TestUpstream::start("app").await;
    let oidc = format!("{}\n{oidc_extra}", provider.gateway_oidc(client));
    let toml = login_gateway_toml(&base, &upstream.url(), &oidc, extra);
    let gateway = portcullis::spawn(config(&toml), listener).unwrap();
    wait_ready(&base).await;
    InteropStack {
        provider,
        upstream,
        _gateway: gateway,
        base,
    }
}

/// One form of a provider page: where it posts and its fields (hidden inputs with their values).
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let end = tag[i..].find('"')?;
    Some(html_unescape(&tag[i..i + end]))
}

/// The first `<form>` of `html` with its `<input>` fields that have a value.
fn first_form(html: &str, page_url: &str) -> Option<Form> {
    let start = html.find("<form")?;
    let end = start + html[start..].find("</form>")?;
    let form = &html[start..end];
    let open = &form[..form.find('>')?];
    let action = Url::parse(page_url)
        .ok()?
        .join(&attr(open, "action")?)
        .ok()?
        .to_string();
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
        })
        .collect();
    Some(Form { action, fields })
}

/// What the browser saw at the provider on the way back to the gateway.
#[derive(Debug, Default)]
pub struct ProviderVisit {
    pub login_pages: usize,
    pub consent_pages: usize,
    pub logout_pages: usize,
}

/// Follow the provider's redirects and fill in its pages (login as `user`, consent, logout
/// confirmation) until it sends the browser to the gateway's origin; return that URL.
async fn through_provider(
    b: &Browser,
    s: &InteropStack,
    start: &str,
    user: &str,
) -> (String, ProviderVisit) {
    let mut visit = ProviderVisit::default();
    let mut response = b.get(start).await;
    let mut url = start.to_string();
    for _ in 0..12 {
        let status = response.status();
        if status.is_redirection() {
            let next = location(&response, &url);
            if next.starts_with(&s.base) {
                return (next, visit);
            }
            url = next;
            response = b.get(&url).await;
            continue;
        }
        let page = response.text().await.unwrap();
        assert_eq!(
            status,
            200,
            "at {url}: {page}\n{}",
            s.provider.node.report()
        );
        let form = first_form(&page, &url)
            .unwrap_or_else(|| panic!("no form at {url}: {page}\n{}", s.provider.node.report()));
        let mut fields = form.fields.clone();
        let prompt = fields
            .iter()
            .find(|(k, _)| k == "prompt")
            .map(|(_, v)| v.clone());
        match prompt.as_deref() {
            Some("login") => {
                visit.login_pages += 1;
                fields.retain(|(k, _)| k == "prompt");
                fields.push(("login".into(), user.into()));
                fields.push(("password".into(), "any password".into()));
            }
            Some("consent") => visit.consent_pages += 1,
            _ if page.contains("op.logoutForm") => {
                visit.logout_pages += 1;
                fields.push(("logout".into(), "yes".into()));
            }
            other => panic!("unexpected page at {url} (prompt {other:?}): {page}"),
        }
        response = b
            .client
            .post(&form.action)
            .form(&fields)
            .send()
            .await
            .unwrap();
        url = form.action;
    }
    panic!(
        "the provider did not send the browser back within 12 steps\n{}",
        s.provider.node.report()
    );
}

/// Log in as `user` from a protected path; returns what the browser went through at the provider.
async fn login(b: &Browser, s: &InteropStack, path: &str, user: &str) -> ProviderVisit {
    let protected = format!("{}{path}", s.base);
    let authorize = b.redirect_from(&protected).await;
    assert!(
        authorize.starts_with(&format!("{}/auth?", s.provider.issuer)),
        "{authorize}"
    );
    let (callback, visit) = through_provider(b, s, &authorize, user).await;
    assert!(
        callback.starts_with(&format!("{}/oauth2/callback?", s.base)),
        "{callback}"
    );
    let r = b.get(&callback).await;
    let status = r.status();
    if status != 302 {
        let page = r.text().await.unwrap();
        panic!(
            "callback answered {status}: {page}\ngateway log:\n{}\n{}",
            crate::browser::log_text(),
            s.provider.node.report()
        );
    }
    assert_eq!(r.headers()["location"], path);
    visit
}

async fn grants(s: &InteropStack, client: OpClient) -> Vec<Value> {
    s.provider
        .events_at_least("grant.success", 1)
        .await
        .into_iter()
        .filter(|e| e["client_id"] == client.client_id())
        .collect()
}

async fn full_login(client: OpClient) {
    let s = interop_stack(client).await;
    let b = Browser::new();
    let authorize = b.redirect_from(&format!("{}/reports?q=1", s.base)).await;
    let q = query_map(&authorize);
    assert_eq!(q["client_id"], client.client_id());
    assert_eq!(q["code_challenge_method"], "S256");

    let visit = login(&b, &s, "/reports?q=1", "alice").await;
    assert_eq!(visit.login_pages, 1, "{client:?}: {visit:?}");
    assert_eq!(visit.consent_pages, 1, "{client:?}: {visit:?}");

    let r = b.get(&format!("{}/reports?q=1", s.base)).await;
    assert_eq!(r.status(), 200, "{client:?}: signed in");
    let seen = s.upstream.last();
    assert_eq!(seen.uri, "/reports?q=1");
    assert_eq!(seen.headers["x-forwarded-user"], "alice");
    assert_eq!(seen.headers["x-forwarded-email"], "alice@example.com");
    assert_eq!(seen.headers["x-forwarded-groups"], "admins,staff");
    assert_eq!(seen.headers["x-forwarded-preferred-username"], "alice");

    // The provider's account of the token response.
    let grants = grants(&s, client).await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["grant_type"], "authorization_code");
    assert_eq!(grants[0]["id_token"], true);
    assert_eq!(
        grants[0]["refresh_token"],
        client.gets_refresh_token(),
        "{client:?}: {grants:?}"
    );
    assert!(s.provider.events("grant.error").is_empty());
    s.provider.node.assert_alive();
}

#[tokio::test]
async fn oidc_provider_login_with_client_secret_basic_and_an_awkward_secret() {
    full_login(OpClient::Basic).await;
}

#[tokio::test]
async fn oidc_provider_login_with_client_secret_post_gets_a_refresh_token() {
    full_login(OpClient::Post).await;
}

#[tokio::test]
async fn oidc_provider_login_with_private_key_jwt_gets_a_refresh_token() {
    full_login(OpClient::PrivateKeyJwt).await;
}

#[tokio::test]
async fn oidc_provider_login_as_public_client_with_pkce() {
    full_login(OpClient::Public).await;
}

#[tokio::test]
async fn oidc_provider_rp_initiated_logout_ends_both_sessions() {
    let s = interop_stack(OpClient::Basic).await;
    let b = Browser::new();
    login(&b, &s, "/private", "bob").await;
    assert_eq!(b.get(&format!("{}/private", s.base)).await.status(), 200);
    assert_eq!(s.upstream.last().headers["x-forwarded-groups"], "staff");

    // While the provider session lives, a new login needs no login page (single sign-on).
    let other_tab = b
        .redirect_from(&format!("{}/oauth2/start?rd=%2Fsso", s.base))
        .await;
    let (_, visit) = through_provider(&b, &s, &other_tab, "bob").await;
    assert_eq!(visit.login_pages, 0, "{visit:?}");

    // Sign out: the gateway sends the browser to the provider's end_session_endpoint with the hint.
    let r = b
        .get(&format!("{}/oauth2/sign_out?rd=%2Fbye", s.base))
        .await;
    assert_eq!(r.status(), 302);
    let end = location(&r, &s.base);
    assert!(
        end.starts_with(&format!("{}/session/end?", s.provider.issuer)),
        "{end}"
    );
    let q = query_map(&end);
    assert!(q.contains_key("id_token_hint"), "{end}");
    assert_eq!(q["post_logout_redirect_uri"], format!("{}/bye", s.base));

    // The provider asks for confirmation, then sends the browser back to the post_logout_redirect_uri.
    let (back, visit) = through_provider(&b, &s, &end, "bob").await;
    assert_eq!(visit.logout_pages, 1, "{visit:?}");
    assert_eq!(back, format!("{}/bye", s.base));
    let ended = s.provider.events_at_least("end_session.success", 1).await;
    assert_eq!(ended.len(), 1, "{}", s.provider.node.report());
    assert_eq!(ended[0]["client_id"], OpClient::Basic.client_id());

    // Signed out at both ends: the gateway asks for a login, and the provider shows its login page.
    let authorize = b.redirect_from(&format!("{}/private", s.base)).await;
    let (_, visit) = through_provider(&b, &s, &authorize, "bob").await;
    assert_eq!(visit.login_pages, 1, "{visit:?}");
    s.provider.node.assert_alive();
}

/// The access token oidc-provider issued at a login through the gateway, as the upstream received it
/// (`pass_access_token`), then presented by an API client as `Authorization: Bearer`.
async fn bearer_call(s: &InteropStack, token: &str) -> reqwest::Response {
    client()
        .get(format!("{}/api/orders", s.base))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
}

/// The id_token the upstream last received (`pass_id_token`).
fn seen_id_token(s: &InteropStack) -> String {
    s.upstream
        .seen()
        .iter()
        .rev()
        .find_map(|seen| seen.headers.get("authorization"))
        .and_then(|v| v.to_str().ok()?.strip_prefix("Bearer ").map(str::to_string))
        .expect("an id_token was passed upstream")
}

async fn issued_access_token(s: &InteropStack, user: &str) -> String {
    let b = Browser::new();
    login(&b, s, "/whoami", user).await;
    assert_eq!(b.get(&format!("{}/whoami", s.base)).await.status(), 200);
    s.upstream.last().headers["x-forwarded-access-token"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn oidc_provider_jwt_access_token_for_a_resource_is_a_bearer_credential() {
    // RFC 8707: the authorization request names the API (through extra_auth_params), so
    // oidc-provider issues a JWT access token with that audience.
    let s = interop_stack_with(
        OpClient::Basic,
        "scopes = [\"openid\", \"profile\", \"email\", \"api:read\"]\n\
         extra_auth_params = { resource = \"urn:portcullis:api\" }",
        "[headers]\n\"X-Forwarded-User\" = \"sub\"\n\"X-Forwarded-Scope\" = \"scope\"\n\
         pass_access_token = true\npass_id_token = true\n[api]\naudiences = [\"urn:portcullis:api\"]\n",
    )
    .await;
    let token = issued_access_token(&s, "alice").await;
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT: {}",
        s.provider.node.report()
    );
    let before = s.upstream.seen().len();
    let r = bearer_call(&s, &token).await;
    assert_eq!(r.status(), 200, "{}", crate::browser::log_text());
    assert!(r.headers().get("set-cookie").is_none());
    let seen = s.upstream.last();
    assert_eq!(s.upstream.seen().len(), before + 1);
    assert_eq!(seen.headers["x-forwarded-user"], "alice");
    assert_eq!(seen.headers["x-forwarded-scope"], "api:read");

    // Another token oidc-provider signed, the id_token it issued to the gateway (passed upstream with
    // pass_id_token), is not an access token for the API: its audience is the gateway's client id.
    let id_token = seen_id_token(&s);
    let r = bearer_call(&s, &id_token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"the token's audience is not accepted\""
    );
    assert_eq!(s.upstream.seen().len(), before + 1, "nothing more upstream");
    s.provider.node.assert_alive();
}

#[tokio::test]
async fn oidc_provider_opaque_access_token_is_introspected() {
    let s = interop_stack_with(
        OpClient::Post,
        "userinfo_claims = true",
        "[headers]\n\"X-Forwarded-User\" = \"sub\"\n\"X-Forwarded-Email\" = \"email\"\n\
         \"X-Forwarded-Groups\" = \"groups\"\npass_access_token = true\n\
         [api]\nintrospection = true\n",
    )
    .await;
    let token = issued_access_token(&s, "bob").await;
    assert_eq!(token.split('.').count(), 1, "opaque");
    let r = bearer_call(&s, &token).await;
    assert_eq!(r.status(), 200, "{}", crate::browser::log_text());
    let seen = s.upstream.last();
    assert_eq!(seen.headers["x-forwarded-user"], "bob");
    // Introspection says who; userinfo (oidc.userinfo_claims) fills in the rest.
    assert_eq!(seen.headers["x-forwarded-email"], "bob@example.com");
    assert_eq!(seen.headers["x-forwarded-groups"], "staff");
    let r = bearer_call(&s, "not-a-token-oidc-provider-knows").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("the token is not active"));
    s.provider.node.assert_alive();
}

#[tokio::test]
async fn a_dead_oidc_provider_fails_the_test_with_its_stderr() {
    let s = interop_stack(OpClient::Basic).await;
    s.provider.node.assert_alive();
    s.provider.node.kill();
    assert!(
        eventually(Duration::from_secs(10), || s
            .provider
            .node
            .exited()
            .is_some())
        .await,
        "the provider did not die"
    );
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.provider.node.assert_alive()
    }));
    let message = failed.expect_err("a dead provider fails the test");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("EXITED"), "{message}");
    assert!(
        message.contains("oidc-provider WARNING"),
        "its stderr is in the failure: {message}"
    );
}
