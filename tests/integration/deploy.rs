//! The examples under `deploy/` checked with the tools that run them: the Kubernetes manifests against
//! the Kubernetes schemas and the restricted Pod Security Standard, every YAML file with yamllint, the
//! nginx configuration with `nginx -t` and with a real nginx in front of a stand-in gateway, the systemd
//! unit with `systemd-analyze`, and the example gateway.toml files with `portcullis check --offline`.
//!
//! `scripts/test.sh` installs what these need: a Python virtual environment in `target/deploy-venv`
//! (tests/deploy/requirements.txt: kubernetes-validate, yamllint, PyYAML) and Debian's `nginx` and
//! `systemd`. A missing tool fails the test, naming what to run; only tools Debian does not carry
//! (kubectl for kustomize) and systemd-analyze outside CI are skipped, with the reason printed. Each
//! check is also run once on a broken copy, to show that it fails when it should.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::{eventually, TestUpstream};

/// Kubernetes versions whose schemas the manifests must match: 1.30 is the first release whose
/// `preStop: sleep` handler is on by default; the other is the newest kubernetes-validate ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
/// Highest `systemd-analyze security` exposure the unit may reach (the tool counts in tenths).
const MAX_EXPOSURE_TENTHS: &str = "20";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn venv_bin(tool: &str) -> PathBuf {
    let path = repo().join("target/deploy-venv/bin").join(tool);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which creates target/deploy-venv from \
         tests/deploy/requirements.txt",
        path.display()
    );
    path
}

fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// A tool scripts/test.sh installs from Debian's packages: its absence fails the test.
pub(crate) fn required(tool: &str, package: &str) -> PathBuf {
    on_path(tool).unwrap_or_else(|| {
        panic!("{tool} is missing: run scripts/test.sh (it installs Debian's {package} package)")
    })
}

/// Runs a command; returns whether it succeeded and everything it printed.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs a check that must pass, printing its report either way.
fn passes(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let (ok, text) = run(cmd);
    println!("$ {shown}\n{text}");
    assert!(ok, "failed: {shown}\n{text}");
    text
}

/// Runs a check on a broken input: it must fail, and say `why`.
fn refuses(cmd: &mut Command, why: &str) {
    let shown = format!("{cmd:?}");
    let (ok, text) = run(cmd);
    assert!(!ok, "passed a broken input: {shown}\n{text}");
    assert!(
        text.contains(why),
        "failed without naming {why:?}: {shown}\n{text}"
    );
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn rendered_manifests() -> Vec<PathBuf> {
    let found = files(&deploy().join("kubernetes/rendered"), "yaml");
    assert!(found.len() >= 2, "rendered manifests missing: {found:?}");
    found
}

fn check_deploy(python_args: &[&str], files: &[PathBuf]) -> Command {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(repo().join("tests/deploy/check_deploy.py"))
        .args(python_args)
        .args(files);
    cmd
}

fn schemas(files: &[PathBuf]) -> Command {
    let mut args = vec!["schemas"];
    args.extend(KUBERNETES_VERSIONS);
    args.push("--");
    check_deploy(&args, files)
}

/// A change to a file's text, making a broken copy of it.
type Edit = dyn Fn(&str) -> String;

/// A copy of `path` with `edit` applied, in `dir`.
fn broken(dir: &Path, path: &Path, edit: impl Fn(&str) -> String) -> PathBuf {
    let text = std::fs::read_to_string(path).unwrap();
    let changed = edit(&text);
    assert_ne!(
        changed,
        text,
        "the edit changed nothing in {}",
        path.display()
    );
    let copy = dir.join(path.file_name().unwrap());
    std::fs::write(&copy, changed).unwrap();
    copy
}

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let report = passes(&mut schemas(&rendered_manifests()));
    // The custom resource has no schema in kubernetes-validate: it is checked structurally, and says so.
    assert!(
        report.contains("ServiceMonitor/portcullis: structure"),
        "{report}"
    );

    let dir = tempfile::tempdir().unwrap();
    let sidecar = deploy().join("kubernetes/rendered/sidecar.yaml");
    let bad = broken(dir.path(), &sidecar, |t| {
        t.replace("containerPort: 4180", "containerPort: \"4180\"")
    });
    refuses(&mut schemas(&[bad]), "is not of type 'integer'");
    let bad = broken(dir.path(), &sidecar, |t| {
        t.replacen("readOnlyRootFilesystem", "readOnlyRootFileSystem", 1)
    });
    refuses(&mut schemas(&[bad]), "readOnlyRootFileSystem");
    let edge = deploy().join("kubernetes/rendered/edge.yaml");
    let bad = broken(dir.path(), &edge, |t| {
        t.replace(
            "  - interval: 30s\n    path: /metrics\n    port: metrics",
            "  - interval: 30s\n    path: /metrics\n    port: prometheus",
        )
    });
    refuses(&mut schemas(&[bad]), "has no port named 'prometheus'");
}

#[test]
fn every_pod_template_meets_the_restricted_profile() {
    let report = passes(&mut check_deploy(&["restricted"], &rendered_manifests()));
    for pod in [
        "Deployment/myapp-portcullis: restricted profile (app, portcullis)",
        "Deployment/portcullis: restricted profile (portcullis)",
        "Deployment/portcullis-redis: restricted profile (redis)",
    ] {
        assert!(report.contains(pod), "{pod} was not checked:\n{report}");
    }

    let dir = tempfile::tempdir().unwrap();
    let sidecar = deploy().join("kubernetes/rendered/sidecar.yaml");
    let restricted = |path| check_deploy(&["restricted"], &[path]);
    let cases: [(&Edit, &str); 7] = [
        (
            &|t| t.replace("runAsNonRoot: true", "runAsNonRoot: false"),
            "runAsNonRoot must be true",
        ),
        (
            // Removed everywhere: neither the pod nor any container says it.
            &|t| {
                t.lines()
                    .filter(|l| l.trim() != "runAsNonRoot: true")
                    .map(|l| format!("{l}\n"))
                    .collect()
            },
            "runAsNonRoot must be true",
        ),
        (
            &|t| {
                t.replace(
                    "allowPrivilegeEscalation: false",
                    "allowPrivilegeEscalation: true",
                )
            },
            "allowPrivilegeEscalation must be false",
        ),
        (
            &|t| {
                t.replacen(
                    "readOnlyRootFilesystem: true",
                    "readOnlyRootFilesystem: false",
                    1,
                )
            },
            "readOnlyRootFilesystem must be true",
        ),
        (
            &|t| {
                t.replace(
                    "automountServiceAccountToken: false",
                    "automountServiceAccountToken: true",
                )
            },
            "automountServiceAccountToken must be false",
        ),
        (
            &|t| {
                t.replace(
                    "terminationGracePeriodSeconds: 45",
                    "terminationGracePeriodSeconds: 30",
                )
            },
            "terminationGracePeriodSeconds 30 must exceed",
        ),
        (
            &|t| t.replace("path: /readyz", "path: /healthz"),
            "readinessProbe must be httpGet /readyz",
        ),
    ];
    for (edit, why) in cases {
        refuses(&mut restricted(broken(dir.path(), &sidecar, edit)), why);
    }
    // The configuration changed without its checksum annotation.
    let bad = broken(dir.path(), &sidecar, |t| {
        t.replace("grace_period = \"30s\"", "grace_period = \"31s\"")
    });
    refuses(&mut restricted(bad), "checksum/config");
    // The same in the edge layout: Redis without seccomp, with a root user.
    let edge = deploy().join("kubernetes/rendered/edge.yaml");
    let bad = broken(dir.path(), &edge, |t| {
        t.replace("runAsUser: 999", "runAsUser: 0")
    });
    refuses(&mut restricted(bad), "runAsUser must be set and non-zero");
}

/// The rendered manifests are what `kubectl kustomize` makes of the overlays, so they cannot drift.
#[test]
fn rendered_manifests_are_what_the_overlays_render() {
    let Some(kubectl) = on_path("kubectl") else {
        println!(
            "SKIPPED: kubectl (with its built-in kustomize) is not installed, and Debian's archive \
             does not carry it; the rendered manifests are still validated by the other tests"
        );
        return;
    };
    for rendered in rendered_manifests() {
        let overlay = rendered.file_stem().unwrap().to_str().unwrap().to_string();
        let dir = deploy().join("kubernetes/overlays").join(&overlay);
        let fresh = passes(Command::new(&kubectl).arg("kustomize").arg(&dir));
        let committed = std::fs::read_to_string(&rendered).unwrap();
        let body: String = committed
            .lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        if body == fresh {
            continue;
        }
        // Another kustomize release may format the same objects differently: compare them as data.
        let mut same = check_deploy(&["same"], std::slice::from_ref(&rendered));
        let mut child = same
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), fresh.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{} is out of date: run\n  kubectl kustomize deploy/kubernetes/overlays/{overlay}\n\
             and replace everything below its comment header with the output\n{}",
            rendered.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn yaml_under_deploy_passes_yamllint() {
    let yamllint = |target: &Path| {
        let mut cmd = Command::new(venv_bin("yamllint"));
        cmd.arg("--strict")
            .arg("-c")
            .arg(repo().join("tests/deploy/yamllint.yaml"))
            .arg(target);
        cmd
    };
    let yaml = files(&deploy(), "yaml");
    assert!(
        yaml.len() >= 10,
        "expected the YAML under deploy/: {yaml:?}"
    );
    passes(&mut yamllint(&deploy()));

    let dir = tempfile::tempdir().unwrap();
    let bad = broken(dir.path(), &deploy().join("traefik/dynamic.yaml"), |t| {
        t.replace(
            "        trustForwardHeader: false\n",
            "        trustForwardHeader: false\n        trustForwardHeader: true\n",
        )
    });
    refuses(
        &mut yamllint(&bad),
        "duplication of key \"trustForwardHeader\"",
    );
}

/// Ports and paths of the nginx examples, replaced to run them here: (in the example, replacement).
fn nginx_substitutions(dir: &Path, https: u16, http: u16) -> Vec<(String, String)> {
    let cert = rcgen::generate_simple_self_signed(vec!["app.example.com".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let d = dir.display();
    [
        ("listen 443 ", format!("listen 127.0.0.1:{https} ")),
        ("listen 80;", format!("listen 127.0.0.1:{http};")),
        (
            "/etc/nginx/tls/app.example.com.crt",
            format!("{d}/cert.pem"),
        ),
        ("/etc/nginx/tls/app.example.com.key", format!("{d}/key.pem")),
        ("/run/nginx.pid", format!("{d}/nginx.pid")),
        ("/var/log/nginx/", format!("{d}/logs/")),
        ("/var/lib/nginx/", format!("{d}/tmp/")),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_string(), to))
    .collect()
}

/// The example with its ports and paths replaced (and any `extra` replacements), written to `dir`;
/// the HTTPS server listens on `https`, the plain-HTTP one (which the tests never use) on `http`.
pub(crate) fn nginx_config(
    example: &Path,
    dir: &Path,
    (https, http): (u16, u16),
    extra: &[(String, String)],
) -> PathBuf {
    let mut text = std::fs::read_to_string(example).unwrap();
    let subs = nginx_substitutions(dir, https, http);
    for (from, to) in subs.iter().chain(extra) {
        assert!(
            text.contains(from.as_str()),
            "{} no longer contains {from:?}: update nginx_substitutions",
            example.display()
        );
        text = text.replace(from.as_str(), to);
    }
    let path = dir.join("nginx.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// Port numbers `nginx -t` is given but never binds.
const UNUSED_PORTS: (u16, u16) = (65_499, 65_500);

/// Start nginx on free ports of its own (HTTPS, and plain HTTP): nginx cannot be handed a listener
/// or bind port 0 and say which port it got, so ports are chosen, and when nginx finds one taken
/// meanwhile (another test bound it), nginx gives up and the next pair is tried.
/// `config_for((https, http))` writes the configuration; the HTTPS port is returned.
pub(crate) async fn start_nginx(
    nginx: &Path,
    dir: &Path,
    config_for: impl Fn((u16, u16)) -> PathBuf,
) -> (Nginx, u16) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let mut last_error = String::new();
    for _ in 0..10 {
        let (port, http) = (free(), free());
        let config = config_for((port, http));
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config)
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut nginx = Nginx(child);
        // Listening means nginx itself holds the listening socket: a port released for nginx can be
        // taken by another test's server first, and nginx then retries its bind for seconds before
        // it gives up, alive all that time.
        let pid = nginx.0.id();
        let up = eventually(Duration::from_secs(10), || {
            matches!(nginx.0.try_wait(), Ok(Some(_))) || (listens(pid, port) && listens(pid, http))
        })
        .await;
        if up && matches!(nginx.0.try_wait(), Ok(None)) {
            return (nginx, port);
        }
        let _ = nginx.0.kill();
        last_error.clear();
        let _ = std::io::Read::read_to_string(nginx.0.stderr.as_mut().unwrap(), &mut last_error);
        if !last_error.contains("Address already in use") {
            break;
        }
    }
    panic!("nginx did not start:\n{last_error}");
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port` (from /proc/net/tcp and the
/// process's file descriptors).
fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A: LISTEN), inode.
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|link| {
            inodes
                .iter()
                .any(|inode| link.as_os_str() == inode.as_str())
        })
}

/// A real nginx running deploy/nginx/nginx.conf in `dir`, its gateway and app upstreams
/// (`127.0.0.1:4180`, `127.0.0.1:8080`) replaced by `gateway` and `app`; returns it and its HTTPS port.
pub(crate) async fn start_example_nginx(
    nginx: &Path,
    dir: &Path,
    gateway: SocketAddr,
    app: SocketAddr,
) -> (Nginx, u16) {
    let upstreams = [
        ("127.0.0.1:4180".to_string(), gateway.to_string()),
        ("127.0.0.1:8080".to_string(), app.to_string()),
    ];
    start_nginx(nginx, dir, |ports| {
        nginx_config(&deploy().join("nginx/nginx.conf"), dir, ports, &upstreams)
    })
    .await
}

fn nginx_t(config: &Path) -> Command {
    let mut cmd = Command::new(required("nginx", "nginx"));
    cmd.arg("-t")
        .arg("-p")
        .arg(config.parent().unwrap())
        .arg("-c")
        .arg(config);
    cmd
}

#[test]
fn nginx_examples_pass_nginx_t() {
    let examples = files(&deploy().join("nginx"), "conf");
    assert!(!examples.is_empty(), "no nginx example under deploy/nginx");
    for example in &examples {
        let dir = tempfile::tempdir().unwrap();
        // `nginx -t` binds nothing, so any port number will do.
        let config = nginx_config(example, dir.path(), UNUSED_PORTS, &[]);
        let report = passes(&mut nginx_t(&config));
        assert!(report.contains("test is successful"), "{report}");

        // The mistake of the earlier example: an ssl listener without a certificate.
        let bad = broken(dir.path(), &config, |t| {
            t.lines()
                .filter(|l| !l.contains("ssl_certificate"))
                .map(|l| format!("{l}\n"))
                .collect()
        });
        refuses(&mut nginx_t(&bad), "no \"ssl_certificate\" is defined");
    }
}

/// What the stand-in gateway saw of one forward-auth request.
#[derive(Clone, Debug)]
struct Asked {
    method: String,
    uri: String,
    headers: http::HeaderMap,
}

/// A stand-in for the gateway's `/oauth2/auth` as SPEC.md describes it, so the nginx example is tested
/// on its own: 202 with identity headers (and a re-issued session of two cookies) for the cookie
/// `_portcullis=valid`; without it 401, or in redirect mode the 302 to the provider with a login cookie.
async fn stand_in_gateway() -> (SocketAddr, Arc<Mutex<Vec<Asked>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        log.lock().unwrap().push(Asked {
                            method: req.method().to_string(),
                            uri: req.uri().to_string(),
                            headers: req.headers().clone(),
                        });
                        let cookie = req
                            .headers()
                            .get("cookie")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        let mut r = Response::builder();
                        if cookie.contains("_portcullis=valid") {
                            r = r
                                .status(StatusCode::ACCEPTED)
                                .header("x-forwarded-user", "alice")
                                .header("x-forwarded-email", "alice@example.com")
                                .header("x-forwarded-groups", "staff,dev")
                                .header("x-auth-request-user", "alice")
                                // A re-issued session of two cookies, and the gateway's numbered
                                // copies of them.
                                .header("set-cookie", "_portcullis_0=renewed0; Path=/; HttpOnly")
                                .header("set-cookie", "_portcullis_1=renewed1; Path=/; HttpOnly")
                                .header(
                                    "x-portcullis-set-cookie-0",
                                    "_portcullis_0=renewed0; Path=/; HttpOnly",
                                )
                                .header(
                                    "x-portcullis-set-cookie-1",
                                    "_portcullis_1=renewed1; Path=/; HttpOnly",
                                );
                        } else if req.uri().query() == Some("redirect=true") {
                            r = r
                                .status(StatusCode::FOUND)
                                .header("location", "https://idp.example/authorize?state=s")
                                .header("set-cookie", "_portcullis_login_s=x; Path=/; HttpOnly");
                        } else {
                            r = r.status(StatusCode::UNAUTHORIZED);
                        }
                        Ok::<_, Infallible>(r.body(Full::new(Bytes::new())).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, asked)
}

pub(crate) struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real nginx running deploy/nginx/nginx.conf (ports and paths replaced) in front of a recording app
/// and the stand-in gateway: the identity the app sees comes only from the gateway's answer.
#[tokio::test]
async fn nginx_example_passes_only_the_gateways_identity() {
    let nginx = required("nginx", "nginx");
    let app = TestUpstream::start("app").await;
    let (gateway, asked) = stand_in_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, https) = start_example_nginx(&nginx, dir.path(), gateway, app.addr).await;
    let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&cert).unwrap()])
        .resolve("app.example.com", SocketAddr::from(([127, 0, 0, 1], https)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("https://app.example.com:{https}");
    let forged: BTreeMap<&str, &str> = [
        ("x-forwarded-user", "mallory"),
        ("x-forwarded-email", "mallory@evil.example"),
        ("x-forwarded-groups", "admins"),
        ("x-forwarded-preferred-username", "root"),
        ("x-forwarded-access-token", "forged"),
        ("x-portcullis-jwt-assertion", "forged"),
        ("x-auth-request-user", "mallory"),
        ("x-auth-request-groups", "admins"),
        ("x-original-uri", "/static/"),
        ("x-forwarded-uri", "/static/"),
        ("x-forwarded-method", "GET"),
    ]
    .into();
    let with_forged = |mut rb: reqwest::RequestBuilder| {
        for (k, v) in &forged {
            rb = rb.header(*k, *v);
        }
        rb
    };

    // No session: nginx asks the gateway in redirect mode and passes its 302 and login cookie on;
    // the app sees nothing.
    let seen_before = app.seen().len();
    let r = with_forged(client.get(format!("{base}/private/page?a=1&b=%2F&c=x y")))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "https://idp.example/authorize?state=s"
    );
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("_portcullis_login_s="));
    assert_eq!(app.seen().len(), seen_before, "the app was reached");
    let checks = asked.lock().unwrap().clone();
    let (check, redirect) = (&checks[checks.len() - 2], &checks[checks.len() - 1]);
    assert_eq!(check.uri, "/oauth2/auth");
    assert_eq!(redirect.uri, "/oauth2/auth?redirect=true");
    for a in [check, redirect] {
        assert_eq!(a.method, "GET");
        // Set by nginx from the request itself, never the client's copies.
        assert_eq!(
            a.headers["x-original-uri"],
            "/private/page?a=1&b=%2F&c=x%20y"
        );
        assert_eq!(
            a.headers["x-forwarded-uri"],
            "/private/page?a=1&b=%2F&c=x%20y"
        );
        assert_eq!(a.headers["x-forwarded-method"], "GET");
        // The client's Host as sent, port included.
        assert_eq!(
            a.headers["x-forwarded-host"],
            format!("app.example.com:{https}").as_str()
        );
        assert_eq!(a.headers["x-forwarded-proto"], "https");
        assert_eq!(a.headers.get_all("x-original-uri").iter().count(), 1);
        assert_eq!(a.headers.get_all("x-forwarded-method").iter().count(), 1);
    }

    // An API call without a session keeps its method for the gateway's decision.
    let r = client
        .post(format!("{base}/api/items"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        302,
        "the stand-in answers every redirect-mode check with 302"
    );
    let last = asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.method.as_str(), &last.headers["x-forwarded-method"]),
        ("GET", &"POST".parse::<http::HeaderValue>().unwrap())
    );
    assert_eq!(app.seen().len(), seen_before, "the app was reached");

    // A session: the app gets the gateway's identity and none of the client's; the re-issued cookie
    // reaches the browser.
    let r = with_forged(client.get(format!("{base}/private/page")))
        .header("cookie", "_portcullis=valid")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        set,
        [
            "_portcullis_0=renewed0; Path=/; HttpOnly",
            "_portcullis_1=renewed1; Path=/; HttpOnly"
        ]
    );
    let seen = app.last();
    assert_eq!(seen.uri, "/private/page");
    assert_eq!(seen.headers["x-forwarded-user"], "alice");
    assert_eq!(seen.headers["x-forwarded-email"], "alice@example.com");
    assert_eq!(seen.headers["x-forwarded-groups"], "staff,dev");
    for absent in [
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "x-portcullis-jwt-assertion",
        "x-auth-request-user",
        "x-auth-request-groups",
        "x-portcullis-set-cookie-0",
    ] {
        assert!(
            seen.headers.get(absent).is_none(),
            "{absent}: {:?} reached the app",
            seen.headers.get(absent)
        );
    }
    for name in ["x-forwarded-user", "x-forwarded-groups"] {
        assert_eq!(seen.headers.get_all(name).iter().count(), 1, "{name}");
    }

    // A public location: no check, and no identity at all.
    let before = asked.lock().unwrap().len();
    let r = with_forged(client.get(format!("{base}/static/app.css")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(asked.lock().unwrap().len(), before, "the gateway was asked");
    let seen = app.last();
    assert_eq!(seen.uri, "/static/app.css");
    for name in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "x-portcullis-jwt-assertion",
        "x-auth-request-user",
        "x-auth-request-groups",
    ] {
        assert!(seen.headers.get(name).is_none(), "{name} reached the app");
    }

    // The check endpoint itself is internal.
    let r = client
        .get(format!("{base}/oauth2/auth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn systemd_unit_verifies_and_stays_hardened() {
    let Some(analyze) = on_path("systemd-analyze") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing in CI: scripts/test.sh installs Debian's systemd package"
        );
        println!("SKIPPED: systemd-analyze is not installed (scripts/test.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = deploy().join("portcullis.service");
    // The only substitution: the binary's path, which verify checks exists.
    let copy = broken(dir.path(), &unit, |t| {
        t.replace(
            "/usr/local/bin/portcullis",
            env!("CARGO_BIN_EXE_portcullis"),
        )
    });
    passes(Command::new(&analyze).arg("verify").arg(&copy));
    let security = |path: &Path| {
        let mut cmd = Command::new(&analyze);
        cmd.args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--threshold={MAX_EXPOSURE_TENTHS}"))
            .arg(path);
        cmd
    };
    let report = passes(&mut security(&copy));
    let score = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"));
    println!("{score}");

    // Without its sandboxing the same unit goes over the threshold.
    let weak_dir = tempfile::tempdir().unwrap();
    let weak = broken(weak_dir.path(), &copy, |t| {
        t.lines()
            .filter(|l| {
                !l.starts_with("Protect")
                    && !l.starts_with("Private")
                    && !l.starts_with("SystemCall")
                    && !l.starts_with("Restrict")
                    && !l.starts_with("CapabilityBoundingSet")
            })
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let (ok, text) = run(&mut security(&weak));
    assert!(!ok, "an unsandboxed unit passed the threshold:\n{text}");
    // And a unit whose binary does not exist does not verify.
    let missing_dir = tempfile::tempdir().unwrap();
    let missing = broken(missing_dir.path(), &unit, |t| {
        t.replace("/usr/local/bin/portcullis", "/nonexistent/portcullis")
    });
    refuses(
        Command::new(&analyze).arg("verify").arg(&missing),
        "/nonexistent/portcullis",
    );
}

/// Every gateway.toml under deploy/ passes `portcullis check --offline` (secret paths replaced by
/// files holding test secrets). One that uses a feature this build does not have yet fails only with
/// the documented "not available yet" line, reported here.
#[test]
fn example_configurations_pass_check_offline() {
    let examples = files(&deploy(), "toml");
    assert!(
        examples.len() >= 2,
        "expected example gateway.toml files: {examples:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, crate::support::SECRET).unwrap();
    let redis = dir.path().join("redis_url");
    std::fs::write(&redis, "redis://:password@127.0.0.1:6379/0").unwrap();
    let mut checked = 0;
    for example in &examples {
        let text = std::fs::read_to_string(example)
            .unwrap()
            .replace(
                "/var/run/secrets/portcullis/client_secret",
                &secret.display().to_string(),
            )
            .replace(
                "/var/run/secrets/portcullis/session_secret",
                &secret.display().to_string(),
            )
            .replace(
                "/var/run/secrets/portcullis/redis_url",
                &redis.display().to_string(),
            );
        assert!(
            !text.contains("/var/run/secrets"),
            "{}: an unknown secret path",
            example.display()
        );
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, text).unwrap();
        let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--offline", "--config"])
            .arg(&config)
            .env("RUST_LOG", "off"));
        println!("{}: {}", example.display(), out.trim());
        assert!(
            ok,
            "{} does not pass `portcullis check --offline`:\n{out}",
            example.display()
        );
        checked += 1;
    }
    assert_eq!(checked, examples.len());
}

/// Where the outer Asgardeo test leaves the test CA and the provider's certificate for the inner one.
const ASGARDEO_DIR_VAR: &str = "ASGARDEO_TEST_DIR";
/// The tenant the README's `<org>` becomes: the development provider's tenant path.
const ASGARDEO_ORG: &str = "demo";
const SIGNED_IN: &str = "asgardeo: the README configuration signed in";
const REFUSED: &str = "asgardeo: with the issuer changed back, the login was refused";

/// The README's Asgardeo guide, verbatim, against the development provider's Asgardeo profile
/// issuing exactly the documented token response: `iss` on `https://accounts.asgardeo.io`, every
/// endpoint on `https://api.asgardeo.io`, both names mapped to loopback. That takes a user, network
/// and mount namespace (`unshare`), where `/etc/hosts` is ours and port 443 is free to bind; the
/// test runs [`asgardeo_inside_a_namespace`] there and fails, loudly, when it cannot.
#[test]
fn readme_asgardeo_configuration_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::servers::TestCa::new();
    let (cert, key) = ca.issue_pem(&["accounts.asgardeo.io", "api.asgardeo.io"]);
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("provider.pem"), cert).unwrap();
    std::fs::write(dir.path().join("provider-key.pem"), key).unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 accounts.asgardeo.io api.asgardeo.io\n",
    )
    .unwrap();
    let this_test_binary = std::env::current_exe().unwrap();
    let (ok, out) = run(Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "sh", "-c"])
        .arg(r#"ip link set lo up && mount --bind "$0" /etc/hosts && exec "$@""#)
        .arg(&hosts)
        .arg(&this_test_binary)
        .args([
            "deploy::asgardeo_inside_a_namespace",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ASGARDEO_DIR_VAR, dir.path())
        // Trust for the provider's TLS, for the gateway and the test's browser alike: the README's
        // configuration stays as it is.
        .env("SSL_CERT_FILE", dir.path().join("ca.pem")));
    println!("{out}");
    assert!(
        ok,
        "the Asgardeo test inside a user, network and mount namespace failed (unshare and ip are \
         needed: util-linux and iproute2):\n{out}"
    );
    assert!(
        out.contains(SIGNED_IN) && out.contains(REFUSED),
        "the inner test did not run:\n{out}"
    );
}

/// The README's `[oidc]` block for Asgardeo, with only `<org>`, the client id and the secret file
/// filled in.
fn readme_asgardeo_block(secret_file: &Path) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let guide = &readme[readme
        .find("#### WSO2 Asgardeo")
        .expect("the Asgardeo guide")..];
    let start = guide.find("```toml\n").expect("its configuration block") + 8;
    let block = &guide[start..start + guide[start..].find("```").unwrap()];
    assert!(block.starts_with("[oidc]\n"), "{block}");
    let oidc = block
        .trim_start_matches("[oidc]\n")
        .replace("<org>", ASGARDEO_ORG)
        .replace("<client id>", crate::browser::CLIENT_ID)
        .replace(
            "/run/secrets/portcullis/client_secret",
            &secret_file.display().to_string(),
        );
    assert!(
        !oidc.contains('<'),
        "a placeholder the test does not know:\n{oidc}"
    );
    oidc
}

/// Terminate TLS on 127.0.0.1:443 for `names` (the provider's certificate) and relay to `backend`.
async fn tls_front(dir: &Path, backend: SocketAddr) {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("provider.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("provider-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:443")
        .await
        .expect("port 443 inside the network namespace");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
}

/// The browser's walk from a protected page through the provider's form to the callback; the
/// callback's response.
async fn asgardeo_login(b: &crate::browser::Browser, protected: &str) -> reqwest::Response {
    let authorize = b.redirect_from(protected).await;
    assert!(
        authorize.starts_with(&format!(
            "https://api.asgardeo.io/t/{ASGARDEO_ORG}/oauth2/authorize?"
        )),
        "{authorize}"
    );
    let callback = b.provider_login(&authorize, "alice").await;
    b.get(&callback).await
}

/// Run by [`readme_asgardeo_configuration_signs_in`] inside its namespace, never on its own.
#[tokio::test]
#[ignore = "runs inside the namespace readme_asgardeo_configuration_signs_in sets up"]
async fn asgardeo_inside_a_namespace() {
    use crate::browser::{test_provider, wait_ready, Browser, AWKWARD_SECRET};
    use crate::support::GatewayProcess;
    use devidp::{DevProviderOptions, Profile, PublicOrigins};

    let dir = PathBuf::from(
        std::env::var_os(ASGARDEO_DIR_VAR)
            .expect("run by readme_asgardeo_configuration_signs_in, inside its namespace"),
    );
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host("api.asgardeo.io:443")
        .await
        .unwrap()
        .collect();
    assert!(
        resolved.iter().all(|a| a.ip().is_loopback()),
        "api.asgardeo.io must map to loopback here: {resolved:?}"
    );

    // In this namespace every port is ours: fixed ones do.
    let (public_url, changed_url) = ("http://localhost:4180", "http://localhost:4181");
    let provider = test_provider(
        vec![
            format!("{public_url}/oauth2/callback"),
            format!("{changed_url}/oauth2/callback"),
        ],
        DevProviderOptions {
            profile: Profile::Asgardeo,
            public_origins: Some(PublicOrigins {
                issuer: "https://accounts.asgardeo.io".into(),
                endpoints: "https://api.asgardeo.io".into(),
            }),
            ..Default::default()
        },
    )
    .await;
    tls_front(&dir, provider.addr()).await;
    let issuer = format!("https://accounts.asgardeo.io/t/{ASGARDEO_ORG}/oauth2/token");
    assert_eq!(provider.issuer(), issuer);

    // What the README tells the reader to check: the issuer in the tenant's discovery document.
    let discovery: serde_json::Value = Browser::new()
        .get(&format!(
            "https://api.asgardeo.io/t/{ASGARDEO_ORG}/oauth2/token/.well-known/openid-configuration"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert!(discovery["token_endpoint"]
        .as_str()
        .unwrap()
        .starts_with("https://api.asgardeo.io/"));

    let secret = dir.join("client_secret");
    std::fs::write(&secret, AWKWARD_SECRET).unwrap();
    let oidc = readme_asgardeo_block(&secret);
    let issuer_line = oidc
        .lines()
        .find(|l| l.starts_with("issuer = "))
        .expect("the guide's issuer line")
        .to_string();
    let app = TestUpstream::start("app").await;
    let gateway_toml = |public_url: &str, oidc: &str| {
        crate::support::login_gateway_toml(public_url, &app.url(), oidc, "").replace(
            "listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"127.0.0.1:{}\"",
                &public_url[public_url.len() - 4..]
            ),
        )
    };

    // The README's configuration: the login completes.
    let gateway = GatewayProcess::start(&gateway_toml(public_url, &oidc)).await;
    wait_ready(public_url).await;
    let b = Browser::new();
    let protected = format!("{public_url}/reports?q=1");
    let r = asgardeo_login(&b, &protected).await;
    assert_eq!(
        r.status(),
        302,
        "the callback refused the login:\n{}",
        gateway.logs()
    );
    assert_eq!(r.headers()["location"], "/reports?q=1");
    let r = b.get(&protected).await;
    assert_eq!(r.status(), 200);
    assert!(app.last().headers.contains_key("x-forwarded-user"));
    println!("{SIGNED_IN}");

    // The issuer line changed back to the token endpoint's host: every login is refused.
    let changed = oidc.replace(
        &issuer_line,
        &format!("issuer = \"https://api.asgardeo.io/t/{ASGARDEO_ORG}/oauth2/token\""),
    );
    assert_ne!(changed, oidc);
    let wrong = GatewayProcess::start(&gateway_toml(changed_url, &changed)).await;
    wait_ready(changed_url).await;
    let b = Browser::new();
    let protected = format!("{changed_url}/reports");
    let r = asgardeo_login(&b, &protected).await;
    assert!(
        r.status().is_client_error() || r.status().is_server_error(),
        "the login completed with the wrong issuer: {}",
        r.status()
    );
    assert_eq!(b.get(&protected).await.status(), 302, "a session was made");
    assert!(
        crate::support::eventually(Duration::from_secs(10), || wrong.logs().contains(&format!(
            "id_token rejected: id_token iss \"{issuer}\" is not the configured issuer"
        )))
        .await,
        "the refusal does not name the iss check:\n{}",
        wrong.logs()
    );
    println!("{REFUSED}");
    drop(gateway);
}
