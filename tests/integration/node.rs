//! Node.js for the interoperability and browser suites: a node process whose stdout lines and stderr
//! are collected as they come, and the certified `oidc-provider` (tests/e2e/oidc-provider.mjs) started
//! through it. The packages come from `npm ci` in tests/e2e, which scripts/test.sh runs.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::eventually;

/// The node project of the suites.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

/// A running `node <script> <args>` in tests/e2e; killed when dropped.
pub struct NodeProcess {
    script: String,
    child: Mutex<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl NodeProcess {
    pub fn spawn(script: &str, args: &[String]) -> NodeProcess {
        let dir = e2e_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir()
                && dir.join("node_modules/playwright-core").is_dir(),
            "{}/node_modules is missing: run `npm ci` there (scripts/test.sh does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {script}: {e} (is Node.js installed?)"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out_pipe = child.stdout.take().unwrap();
        let err_pipe = child.stderr.take().unwrap();
        let lines = stdout.clone();
        let text = stderr.clone();
        let readers = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(out_pipe).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            }),
            std::thread::spawn(move || {
                let mut pipe = BufReader::new(err_pipe);
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => text
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            }),
        ];
        NodeProcess {
            script: script.to_string(),
            child: Mutex::new(child),
            stdout,
            stderr,
            readers,
        }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// A diagnosis for a failure message: whether the process still runs, and what it wrote.
    pub fn report(&self) -> String {
        let state = match self.exited() {
            Some(status) => format!("EXITED ({status})"),
            None => "still running".into(),
        };
        format!(
            "node {}: {state}\n--- its stdout ---\n{}\n--- its stderr ---\n{}",
            self.script,
            self.stdout_lines().join("\n"),
            self.stderr()
        )
    }

    /// Kill the process (SIGKILL), as a crash would.
    pub fn kill(&self) {
        let _ = self.child.lock().unwrap().kill();
    }

    /// Fail the test if the process has died.
    pub fn assert_alive(&self) {
        if self.exited().is_some() {
            panic!("{}", self.report());
        }
    }

    /// Wait (at most `limit`) for a stdout line that `pred` picks; fail with the process's output
    /// if it ends first or the time runs out.
    pub async fn wait_line(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        match self.try_wait_line(limit, pred).await {
            Some(line) => line,
            None => panic!("no awaited line within {limit:?}\n{}", self.report()),
        }
    }

    /// [`NodeProcess::wait_line`], with `None` when the time runs out while the process still runs.
    pub async fn try_wait_line(
        &self,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(line) = self.stdout_lines().into_iter().find(|l| pred(l)) {
                return Some(line);
            }
            if self.exited().is_some() {
                // Let the readers drain the pipes so the report is complete.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("the awaited line never came\n{}", self.report());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait (at most `limit`) for the process to end by itself; returns its status, stdout and stderr.
    /// On timeout it is killed and the test fails.
    pub async fn finish(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let deadline = tokio::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.lock().unwrap().kill();
                panic!("still running after {limit:?}, killed\n{}", self.report());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (status, self.stdout_lines().join("\n"), self.stderr())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The clients tests/e2e/oidc-provider.mjs registers, by token endpoint authentication.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OpClient {
    /// `client_secret_basic`; no refresh token.
    Basic,
    /// `client_secret_post`; refresh token issued.
    Post,
    /// `private_key_jwt` (ES256); refresh token issued.
    PrivateKeyJwt,
    /// Public client (`none`) with PKCE; no refresh token.
    Public,
}

impl OpClient {
    pub fn client_id(self) -> &'static str {
        match self {
            OpClient::Basic => "portcullis-basic",
            OpClient::Post => "portcullis-post",
            OpClient::PrivateKeyJwt => "portcullis-jwt",
            OpClient::Public => "portcullis-public",
        }
    }

    /// Whether the provider is configured to issue it a refresh token.
    pub fn gets_refresh_token(self) -> bool {
        matches!(self, OpClient::Post | OpClient::PrivateKeyJwt)
    }
}

/// oidc-provider, the certified OpenID Provider for Node.js, on a loopback port.
pub struct OidcProvider {
    pub node: NodeProcess,
    pub issuer: String,
    key_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The secret of its two secret clients: the characters RFC 6749 2.3.1 form-encoding changes (`+ / : % &`,
/// a space). No non-ASCII: oidc-provider refuses secrets outside VSCHAR (%x20-7E, RFC 6749 appendix A.2).
pub const OP_SECRET: &str = "s3cr+t/with:all%the&odd bits";
const KEY_ID: &str = "portcullis-gateway";

/// A test that fails for any reason (a dead provider shows first as a refused connection or a 503 from
/// the gateway) ends with the provider's state and output.
impl Drop for OidcProvider {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.node.report());
        }
    }
}

impl OidcProvider {
    /// Start it with every client registered for the gateway at `public_url` (its callback, and `/` and
    /// `/bye` after logout); wait until it listens.
    pub async fn start(public_url: &str) -> OidcProvider {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("client.pem");
        let options = serde_json::json!({
            "port": 0,
            "redirectUris": [format!("{public_url}/oauth2/callback")],
            "postLogoutRedirectUris": [format!("{public_url}/"), format!("{public_url}/bye")],
            "secret": OP_SECRET,
            "privateKeyPath": key_path,
            "keyId": KEY_ID,
        });
        let is_ready = |l: &str| l.starts_with("{\"ready\"");
        let mut node = NodeProcess::spawn("oidc-provider.mjs", &[options.to_string()]);
        // Node has been seen, very rarely and under a full test run, never to reach `listen`; the
        // provider is only the tests' fixture, so a stuck start is reported and tried once more.
        let ready = match node.try_wait_line(Duration::from_secs(60), is_ready).await {
            Some(line) => line,
            None => {
                eprintln!(
                    "oidc-provider did not start within 60s; starting it again\n{}",
                    node.report()
                );
                node.kill();
                node = NodeProcess::spawn("oidc-provider.mjs", &[options.to_string()]);
                node.wait_line(Duration::from_secs(120), is_ready).await
            }
        };
        let ready: Value = serde_json::from_str(&ready).unwrap();
        let issuer = ready["ready"]["issuer"].as_str().unwrap().to_string();
        OidcProvider {
            node,
            issuer,
            key_path,
            _dir: dir,
        }
    }

    /// The `[oidc]` lines of a gateway that is `client`.
    pub fn gateway_oidc(&self, client: OpClient) -> String {
        let auth = match client {
            OpClient::Basic => format!(
                "client_auth = \"client_secret_basic\"\nclient_secret = {OP_SECRET:?}"
            ),
            OpClient::Post => {
                format!("client_auth = \"client_secret_post\"\nclient_secret = {OP_SECRET:?}")
            }
            OpClient::PrivateKeyJwt => format!(
                "client_auth = \"private_key_jwt\"\nprivate_key_file = {:?}\nprivate_key_id = \"{KEY_ID}\"",
                self.key_path.display().to_string()
            ),
            OpClient::Public => "client_auth = \"none\"".into(),
        };
        format!(
            "issuer = \"{}\"\nclient_id = \"{}\"\n{auth}",
            self.issuer,
            client.client_id()
        )
    }

    /// The provider's events named `name` once at least `count` have been read from its stdout (the
    /// provider writes them before it answers; the reader thread may lag behind), waiting at most 10 s.
    pub async fn events_at_least(&self, name: &str, count: usize) -> Vec<Value> {
        let enough = || self.events(name).len() >= count;
        if !eventually(Duration::from_secs(10), enough).await {
            panic!(
                "fewer than {count} {name} events within 10 s\n{}",
                self.node.report()
            );
        }
        self.events(name)
    }

    /// The provider's own events (JSON lines on its stdout) named `name`, as read so far.
    pub fn events(&self, name: &str) -> Vec<Value> {
        self.node
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == name)
            .collect()
    }
}
