//! Sessions shared by replicas through real redis-server processes: every deployment (standalone,
//! TLS with a private CA, Sentinel with a failover, a three-master Cluster), restarts and secret
//! rotation, what Redis holds, Redis going away under load, refresh across replicas, back-channel
//! logout, sign-out and idle timeout everywhere.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use devidp::{LogoutSubject, Misbehavior, DEMO_USERS};
use serde_json::json;

use crate::browser::*;
use crate::servers::*;
use crate::support::*;

const SECOND_SECRET: &str = "fedcba9876543210fedcba9876543210";

fn sub_of(name: &str) -> &'static str {
    DEMO_USERS.iter().find(|u| u.username == name).unwrap().sub
}

/// `[session]` lines for the Redis store.
fn redis_session(lines: &str) -> String {
    format!("store = \"redis\"\n{lines}\n")
}

/// A stack (provider, upstream, gateway A) on the Redis store configured by `session_lines`.
async fn redis_stack(session_lines: &str) -> Stack {
    stack(StackOptions {
        extra: redis_session(session_lines),
        refresh_tokens: true,
        ..Default::default()
    })
    .await
}

/// Another replica with the same configuration as `s`'s gateway (`edit` applied).
async fn replica(s: &Stack, edit: impl Fn(&str) -> String) -> (portcullis::RunningGateway, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let gw = portcullis::spawn(config(&edit(&s.toml)), listener).unwrap();
    wait_ready(&base).await;
    (gw, base)
}

/// Wait until the replica at `base` serves sessions (its subscription to Redis is up and Redis
/// answers): readiness of the shared store is not part of `/readyz`.
async fn status(b: &Browser, url: &str) -> u16 {
    b.get(url).await.status().as_u16()
}

/// The shared-session check every deployment passes: a login on A is a session on B; a sign-out on B
/// refuses the cookie on A; revoking on A ends it on B.
async fn shared_session_check(s: &Stack) {
    let (b_gw, b_base) = replica(s, str::to_string).await;
    let browser = Browser::new();
    browser.login(&format!("{}/private", s.base), "alice").await;
    assert_eq!(status(&browser, &format!("{}/private", s.base)).await, 200);
    // The same cookie on replica B (cookies are not bound to a port).
    assert_eq!(status(&browser, &format!("{b_base}/private")).await, 200);
    let seen = s.upstream.last();
    assert_eq!(seen.headers["x-forwarded-user"], sub_of("alice"));

    // Sign-out on B: the cookie copied before is refused on A and on B.
    let copy = cookie_value(&browser, &s.base);
    let r = browser.get(&format!("{b_base}/oauth2/sign_out")).await;
    assert_eq!(r.status(), 302);
    for base in [&s.base, &b_base] {
        let r = client()
            .get(format!("{base}/private"))
            .header("cookie", &copy)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "signed-out cookie accepted at {base}");
    }
    b_gw.shutdown().await;
}

fn cookie_value(b: &Browser, base: &str) -> String {
    use reqwest::cookie::CookieStore as _;
    b.jar
        .cookies(&url::Url::parse(base).unwrap())
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn standalone_shares_sessions_survives_restarts_and_rotation_and_leaks_nothing() {
    let redis = RedisProcess::standalone("");
    let s = redis_stack(&format!("redis_url = \"{}\"", redis.url())).await;
    shared_session_check(&s).await;

    // A session, then replica A restarted with the same secret: still a session.
    let browser = Browser::new();
    browser.login(&format!("{}/private", s.base), "carol").await;
    let Stack {
        gateway,
        base,
        toml,
        upstream,
        provider,
        ..
    } = s;
    gateway.shutdown().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restarted = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let again = portcullis::spawn(config(&toml), listener).unwrap();
    wait_ready(&restarted).await;
    assert_eq!(status(&browser, &format!("{restarted}/private")).await, 200);

    // The secret rotated: the old one in previous_secrets still opens the stored session.
    let rotated = toml.replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret = \"{SECOND_SECRET}\"\nprevious_secrets = [\"{SECRET}\"]"),
    );
    assert_ne!(rotated, toml);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rotated_base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let rotated_gw = portcullis::spawn(config(&rotated), listener).unwrap();
    wait_ready(&rotated_base).await;
    assert_eq!(
        status(&browser, &format!("{rotated_base}/private")).await,
        200
    );
    // Without the old secret, it does not.
    let forgotten = toml.replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret = \"{SECOND_SECRET}\""),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forgotten_base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let forgotten_gw = portcullis::spawn(config(&forgotten), listener).unwrap();
    wait_ready(&forgotten_base).await;
    assert_eq!(
        status(&browser, &format!("{forgotten_base}/private")).await,
        302
    );

    // Nothing Redis holds is usable: no claim, no token, and nothing that works as a cookie.
    let cookie = cookie_value(&browser, &base);
    let session_cookie = cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("_portcullis="))
        .expect("a session cookie")
        .to_string();
    let dump = redis.dump();
    assert!(!dump.is_empty());
    let carol = DEMO_USERS.iter().find(|u| u.username == "carol").unwrap();
    for (key, value) in &dump {
        for secret in [
            carol.sub,
            carol.email,
            carol.name,
            carol.username,
            &session_cookie,
        ] {
            assert!(
                !key.contains(secret) && !value.contains(secret),
                "{secret:?} readable in Redis: {key} = {value}"
            );
        }
    }
    // Each key, value and set member presented as the session cookie opens nothing.
    let seen_before = upstream.seen().len();
    let c = client();
    for candidate in dump
        .iter()
        .flat_map(|(k, v)| std::iter::once(k.clone()).chain(v.lines().map(str::to_string)))
        .flat_map(|t| {
            let tail = t.rsplit(':').next().unwrap_or_default().to_string();
            [t, tail]
        })
        .collect::<BTreeSet<_>>()
    {
        if !candidate
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'"')
        {
            continue;
        }
        let r = c
            .get(format!("{restarted}/private"))
            .header("cookie", format!("_portcullis={candidate}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{candidate:?} worked as a cookie");
    }
    assert_eq!(upstream.seen().len(), seen_before);
    drop(provider);
    for gw in [again, rotated_gw, forgotten_gw] {
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn tls_with_a_private_ca_shares_sessions() {
    let ca = TestCa::new();
    let redis = RedisProcess::tls(&ca);
    let ca_file = redis.dir().join("ca.pem");
    let s = redis_stack(&format!(
        "redis_url = \"rediss://localhost:{}\"\nredis_ca_file = {:?}",
        redis.port,
        ca_file.display().to_string()
    ))
    .await;
    shared_session_check(&s).await;
    // The sessions are really in that Redis.
    Browser::new()
        .login(&format!("{}/private", s.base), "bob")
        .await;
    assert!(redis
        .dump()
        .iter()
        .any(|(k, _)| k.starts_with("portcullis:s:")));
}

#[tokio::test]
async fn tls_to_an_untrusted_redis_is_503_never_a_pass() {
    let redis = RedisProcess::tls(&TestCa::new());
    // No redis_ca_file: the system roots do not know this CA.
    let s = redis_stack(&format!(
        "redis_url = \"rediss://localhost:{}\"",
        redis.port
    ))
    .await;
    let b = Browser::new();
    // The login itself cannot store the session.
    let authorize = b.redirect_from(&format!("{}/private", s.base)).await;
    let callback = b.provider_login(&authorize, "alice").await;
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 503);
    assert!(s.upstream.seen().is_empty());
}

#[tokio::test]
async fn sentinel_follows_a_failover_and_keeps_sessions() {
    let master = RedisProcess::standalone("");
    let replica_node = replica_of(&master);
    // The replica must be in sync before the master goes.
    let synced = eventually(Duration::from_secs(20), || {
        master
            .cli(&["INFO", "replication"])
            .contains("connected_slaves:1")
    })
    .await;
    assert!(synced, "the replica did not connect");
    let sentinels: Vec<RedisProcess> = (0..3)
        .map(|_| RedisProcess::sentinel("main", &master))
        .collect();
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|s| format!("\"{}\"", s.addr()))
        .collect();
    let s = redis_stack(&format!(
        "redis_mode = \"sentinel\"\nredis_nodes = [{}]\nredis_sentinel_master = \"main\"",
        nodes.join(", ")
    ))
    .await;
    shared_session_check(&s).await;

    let browser = Browser::new();
    browser.login(&format!("{}/private", s.base), "bob").await;
    assert_eq!(status(&browser, &format!("{}/private", s.base)).await, 200);
    // Every write reached the replica, then the master dies.
    assert_eq!(master.cli(&["WAIT", "1", "5000"]), "1");
    let old_port = master.port;
    drop(master);
    // The sentinels promote the replica.
    let promoted = eventually(Duration::from_secs(30), || {
        let addr = sentinels[0].cli(&["SENTINEL", "get-master-addr-by-name", "main"]);
        addr.lines().last() == Some(replica_node.port.to_string().as_str())
    })
    .await;
    assert!(promoted, "no failover (the old master was {old_port})");
    // The gateway follows without a restart: the session (written to the old master) is served,
    // read from the new one.
    let recovered = eventually_async(Duration::from_secs(20), || async {
        status(&browser, &format!("{}/private", s.base)).await == 200
    })
    .await;
    assert!(recovered, "sessions did not come back after the failover");
    // New logins work against the new master.
    let other = Browser::new();
    other.login(&format!("{}/private", s.base), "carol").await;
    assert_eq!(status(&other, &format!("{}/private", s.base)).await, 200);
}

#[tokio::test]
async fn a_three_master_cluster_shares_sessions() {
    let cluster = Cluster::start();
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.addr()))
        .collect();
    let s = redis_stack(&format!(
        "redis_mode = \"cluster\"\nredis_nodes = [{}]",
        nodes.join(", ")
    ))
    .await;
    shared_session_check(&s).await;
    // Many sessions land on every master.
    for _ in 0..12 {
        let b = Browser::new();
        b.login(&format!("{}/private", s.base), "alice").await;
    }
    let per_node: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.dump()
                .iter()
                .filter(|(k, _)| k.starts_with("portcullis:s:"))
                .count()
        })
        .collect();
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "{per_node:?}"
    );
    // A back-channel logout by sub reaches sessions on every master.
    s.provider
        .set_backchannel_logout_uri(CLIENT_ID, &format!("{}/oauth2/backchannel_logout", s.base));
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    let status_code = s
        .provider
        .backchannel_logout(CLIENT_ID, LogoutSubject::Sub(sub_of("alice").into()))
        .await
        .unwrap();
    assert_eq!(status_code, 200);
    assert_eq!(status(&b, &format!("{}/private", s.base)).await, 302);
    let left = cluster
        .dump()
        .iter()
        .filter(|(k, _)| k.starts_with("portcullis:s:"))
        .count();
    assert_eq!(left, 0, "alice's sessions left in the cluster");
}

#[tokio::test]
async fn redis_stopped_under_load_is_503_for_sessions_only_and_recovers() {
    // appendonly: the sessions survive the restart.
    let first = RedisProcess::standalone("appendonly yes\nappendfsync always");
    let relay = Relay::start(&first.addr()).await;
    let s = stack(StackOptions {
        extra: format!(
            "{}\n[[routes]]\npath = \"^/public/\"\npolicy = \"public\"\n",
            redis_session(&format!("redis_url = \"redis://{}\"", relay.addr))
        ),
        ..Default::default()
    })
    .await;
    let browser = Browser::new();
    browser.login(&format!("{}/private", s.base), "alice").await;
    let cookie = cookie_value(&browser, &s.base);

    // Load: protected requests with the session, public ones without, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        (bool, u16),
        usize,
    >::new()));
    let mut workers = Vec::new();
    for i in 0..4 {
        let (stop, counts, cookie, base) =
            (stop.clone(), counts.clone(), cookie.clone(), s.base.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                n += 1;
                let protected = (n + i) % 2 == 0;
                let r = if protected {
                    c.get(format!("{base}/private/{n}"))
                        .header("cookie", &cookie)
                        .header("accept", "application/json")
                } else {
                    c.get(format!("{base}/public/{n}"))
                }
                .send()
                .await;
                let code = r.map(|r| r.status().as_u16()).unwrap_or(0);
                *counts.lock().unwrap().entry((protected, code)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let snapshot = || counts.lock().unwrap().clone();
    // Redis goes away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = first.dir().to_path_buf();
    let aof = std::fs::read_dir(&dir).unwrap().count();
    assert!(aof > 0);
    relay.set_target(None);
    let data = tempfile::tempdir().unwrap();
    copy_dir(&dir, data.path());
    drop(first);
    let seen_503 = eventually(Duration::from_secs(10), || {
        snapshot().get(&(true, 503)).copied().unwrap_or(0) > 20
    })
    .await;
    assert!(seen_503, "{:?}", snapshot());
    let during = snapshot();
    // Redis comes back (a new process with the same data, behind the same address).
    let second =
        RedisProcess::standalone(&format!("appendonly yes\ndir {}", data.path().display()));
    relay.set_target(Some(&second.addr()));
    let recovered = eventually(Duration::from_secs(15), || {
        let now = snapshot();
        now.get(&(true, 200)).copied().unwrap_or(0)
            > during.get(&(true, 200)).copied().unwrap_or(0) + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let totals = snapshot();
    assert!(recovered, "service did not resume: {totals:?}");
    for ((protected, code), n) in &totals {
        match (protected, code) {
            (_, 200) => {}
            (true, 503) => {}
            other => panic!("unexpected answer {other:?} ({n} times): {totals:?}"),
        }
    }
    // Public routes never failed, and nothing reached the upstream without the session.
    assert!(totals.get(&(false, 200)).copied().unwrap_or(0) > 0);
    for seen in s.upstream.seen() {
        if seen.uri.starts_with("/private") {
            assert_eq!(
                seen.headers["x-forwarded-user"],
                sub_of("alice"),
                "{}",
                seen.uri
            );
        }
    }
    drop(second);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn refresh_across_two_replicas_happens_once() {
    let redis = RedisProcess::standalone("");
    let s = redis_stack(&format!("redis_url = \"{}\"", redis.url())).await;
    let (b_gw, b_base) = replica(&s, str::to_string).await;
    s.provider.set_access_token_ttl(Duration::from_secs(30));
    let browser = Browser::new();
    browser.login(&format!("{}/private", s.base), "alice").await;
    // Each replica has the session cached with its old tokens.
    assert_eq!(status(&browser, &format!("{b_base}/private")).await, 200);
    s.provider.set_access_token_ttl(Duration::from_secs(3600));
    s.provider
        .set_user_claim("alice", "email", json!("alice@refreshed.example"));
    let refreshes = s.provider.refresh_requests();
    let before = s.upstream.seen().len();
    let cookie = cookie_value(&browser, &s.base);

    // 50 requests at once, half to each replica.
    let c = client();
    let answers = futures_util::future::join_all((0..50).map(|i| {
        let base = if i % 2 == 0 {
            s.base.clone()
        } else {
            b_base.clone()
        };
        let (c, cookie) = (c.clone(), cookie.clone());
        async move {
            c.get(format!("{base}/private/{i}"))
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    }))
    .await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    assert_eq!(
        s.provider.refresh_requests(),
        refreshes + 1,
        "exactly one refresh"
    );
    let seen = s.upstream.seen();
    assert_eq!(seen.len() - before, 50);
    assert!(
        seen[before..]
            .iter()
            .all(|r| r.headers["x-forwarded-email"] == "alice@refreshed.example"),
        "a request went upstream with the old claims"
    );
    // The rotated refresh token is the one used next: a second refresh on either replica works
    // (the provider would revoke the login if the spent one came back).
    let due = |t: &str| t.replace("[session]\n", "[session]\nrefresh_before = \"2h\"\n");
    s.gateway.runtime().reload(config(&due(&s.toml))).unwrap();
    b_gw.runtime().reload(config(&due(&s.toml))).unwrap();
    assert_eq!(status(&browser, &format!("{b_base}/private")).await, 200);
    assert_eq!(s.provider.refresh_requests(), refreshes + 2);

    // invalid_grant ends the session everywhere: a browser is sent to log in, an API client 401.
    s.provider.set_misbehavior(Misbehavior::TokenError {
        error: "invalid_grant".into(),
        description: "revoked".into(),
    });
    let r = browser.get(&format!("{}/private", s.base)).await;
    assert_eq!(r.status(), 302);
    s.provider.set_misbehavior(Misbehavior::None);
    // The same session's cookie, kept by an API client, on the other replica.
    let r = c
        .get(format!("{b_base}/private"))
        .header("cookie", cookie.clone())
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    b_gw.shutdown().await;
}

#[tokio::test]
async fn back_channel_logout_ends_sessions_on_every_replica_within_a_second() {
    let redis = RedisProcess::standalone("");
    let s = redis_stack(&format!("redis_url = \"{}\"", redis.url())).await;
    let (b_gw, b_base) = replica(&s, str::to_string).await;
    s.provider
        .set_backchannel_logout_uri(CLIENT_ID, &format!("{}/oauth2/backchannel_logout", s.base));
    let (first, second, bob) = (Browser::new(), Browser::new(), Browser::new());
    first.login(&format!("{}/private", s.base), "alice").await;
    second.login(&format!("{}/private", s.base), "alice").await;
    bob.login(&format!("{}/private", s.base), "bob").await;
    // Cached on both replicas.
    for b in [&first, &second, &bob] {
        assert_eq!(status(b, &format!("{}/private", s.base)).await, 200);
        assert_eq!(status(b, &format!("{b_base}/private")).await, 200);
    }
    let info: serde_json::Value = first
        .get(&format!("{}/oauth2/userinfo", s.base))
        .await
        .json()
        .await
        .unwrap();
    let sid = info["sid"].as_str().unwrap().to_string();

    // Defective tokens end nothing anywhere.
    let claims = s
        .provider
        .logout_token_claims(CLIENT_ID, LogoutSubject::Sid(sid.clone()))
        .unwrap();
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("someone-else");
    let mut with_nonce = claims.clone();
    with_nonce["nonce"] = json!("n");
    for bad in [wrong_aud, with_nonce] {
        let token = s.provider.sign_jwt(&bad).unwrap();
        assert_eq!(
            s.provider
                .post_logout_token(CLIENT_ID, &token)
                .await
                .unwrap(),
            400
        );
    }
    assert_eq!(status(&first, &format!("{b_base}/private")).await, 200);

    // A valid sid token, received by A, ends that session on B within a second.
    let token = s.provider.sign_jwt(&claims).unwrap();
    let sent = std::time::Instant::now();
    assert_eq!(
        s.provider
            .post_logout_token(CLIENT_ID, &token)
            .await
            .unwrap(),
        200
    );
    let ended = eventually_async(Duration::from_secs(1), || async {
        status(&first, &format!("{b_base}/private")).await == 302
    })
    .await;
    assert!(
        ended,
        "still a session on B {:?} after the logout",
        sent.elapsed()
    );
    assert_eq!(status(&first, &format!("{}/private", s.base)).await, 302);
    assert_eq!(status(&second, &format!("{b_base}/private")).await, 200);
    // The same token again, now to B: its jti is remembered across replicas.
    let replayed = client()
        .post(format!("{b_base}/oauth2/backchannel_logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 400);

    // A sub-only token ends every session of that user, on both replicas.
    let status_code = s
        .provider
        .backchannel_logout(CLIENT_ID, LogoutSubject::Sub(sub_of("alice").into()))
        .await
        .unwrap();
    assert_eq!(status_code, 200);
    let ended = eventually_async(Duration::from_secs(1), || async {
        status(&second, &format!("{b_base}/private")).await == 302
    })
    .await;
    assert!(ended);
    assert_eq!(status(&bob, &format!("{b_base}/private")).await, 200);
    assert_eq!(status(&bob, &format!("{}/private", s.base)).await, 200);
    b_gw.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_ends_unused_sessions_on_every_replica() {
    let redis = RedisProcess::standalone("");
    let s = redis_stack(&format!(
        "redis_url = \"{}\"\nidle_timeout = \"4s\"",
        redis.url()
    ))
    .await;
    let (b_gw, b_base) = replica(&s, str::to_string).await;
    let (used, unused) = (Browser::new(), Browser::new());
    used.login(&format!("{}/private", s.base), "alice").await;
    unused.login(&format!("{}/private", s.base), "bob").await;
    assert_eq!(status(&unused, &format!("{b_base}/private")).await, 200);
    // One session is used every second, on alternating replicas; the other not at all.
    let uses = AtomicUsize::new(0);
    for i in 0..7 {
        let base = if i % 2 == 0 { &s.base } else { &b_base };
        assert_eq!(status(&used, &format!("{base}/private")).await, 200);
        uses.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(status(&used, &format!("{b_base}/private")).await, 200);
    assert_eq!(status(&unused, &format!("{}/private", s.base)).await, 302);
    assert_eq!(status(&unused, &format!("{b_base}/private")).await, 302);
    b_gw.shutdown().await;
}
