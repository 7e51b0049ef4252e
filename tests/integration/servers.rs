//! Real Redis deployments for the tests: redis-server processes on loopback (standalone, TLS with a
//! private CA, a master with a replica and sentinels, a three-master cluster), each in its own
//! temporary directory, stopped when dropped; and a relay a test can point elsewhere.
//!
//! redis-server cannot be handed a listener, and with `port 0` it listens on no TCP port at all, so a
//! port is chosen and, when redis-server finds it taken meanwhile (another test bound it), the next
//! one is tried. Where a test needs the same address before and after a restart, the gateway talks
//! to a [`Relay`] whose listener the test holds throughout.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

/// One redis-server (or sentinel) process.
pub struct RedisProcess {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    /// TLS: the port serves TLS only, with this directory's certificates.
    tls: bool,
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port_guess() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run `redis-server` with a configuration `conf(port, dir)` until it answers, retrying other ports
/// when the chosen one is taken.
fn start(conf: impl Fn(u16, &Path) -> String, sentinel: bool, tls: bool) -> RedisProcess {
    let mut last_log = String::new();
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_guess();
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf(port, dir.path())).unwrap();
        let log = dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf_path);
        if sentinel {
            cmd.arg("--sentinel");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        let mut process = RedisProcess {
            child,
            port,
            dir,
            tls,
        };
        for _ in 0..200 {
            if matches!(process.child.try_wait(), Ok(Some(_))) {
                break;
            }
            if process.ping() {
                return process;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        last_log = std::fs::read_to_string(&log).unwrap_or_default();
        if !last_log.contains("Address already in use") {
            break;
        }
    }
    panic!("redis-server did not start:\n{last_log}");
}

impl RedisProcess {
    /// A plain redis-server; `extra` lines are added to its configuration.
    pub fn standalone(extra: &str) -> RedisProcess {
        start(
            |port, dir| {
                format!(
                    "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\nlogfile {}\ndir {}\n{extra}\n",
                    dir.join("redis.log").display(),
                    dir.display()
                )
            },
            false,
            false,
        )
    }

    /// A redis-server that speaks TLS only, with a certificate for `localhost` signed by `ca`.
    pub fn tls(ca: &TestCa) -> RedisProcess {
        start(
            |port, dir| {
                let (cert, key) = ca.issue(dir, "localhost");
                std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
                format!(
                    "port 0\ntls-port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\nlogfile {}\ndir {}\n\
                     tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n",
                    dir.join("redis.log").display(),
                    dir.display(),
                    cert.display(),
                    key.display(),
                    dir.join("ca.pem").display(),
                )
            },
            false,
            true,
        )
    }

    /// A sentinel watching `master` (named `name`, quorum 1, failing over after 1 s).
    pub fn sentinel(name: &str, master: &RedisProcess) -> RedisProcess {
        let master_port = master.port;
        start(
            |port, dir| {
                format!(
                    "port {port}\nbind 127.0.0.1\nlogfile {}\ndir {}\n\
                     sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir.join("redis.log").display(),
                    dir.display()
                )
            },
            true,
            false,
        )
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.tls {
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(self.dir.path().join("ca.pem"));
        }
        let out = cmd.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn ping(&self) -> bool {
        self.cli(&["PING"]) == "PONG"
    }

    /// Every key and its value as redis-cli prints them (strings, and the members of sets).
    pub fn dump(&self) -> Vec<(String, String)> {
        let keys = self.cli(&["--scan"]);
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|k| {
                let kind = self.cli(&["TYPE", k]);
                let value = match kind.as_str() {
                    "string" => self.cli(&["GET", k]),
                    "set" => self.cli(&["SMEMBERS", k]),
                    other => format!("<{other}>"),
                };
                (k.to_string(), value)
            })
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A replica of `master`.
pub fn replica_of(master: &RedisProcess) -> RedisProcess {
    RedisProcess::standalone(&format!("replicaof 127.0.0.1 {}", master.port))
}

/// A three-master cluster (no replicas), its slots assigned.
pub struct Cluster {
    pub nodes: Vec<RedisProcess>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<RedisProcess> = (0..3)
            .map(|_| {
                start(
                    |port, dir| {
                        format!(
                            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\nlogfile {}\ndir {}\n\
                             cluster-enabled yes\ncluster-config-file {}\ncluster-node-timeout 2000\n",
                            dir.join("redis.log").display(),
                            dir.display(),
                            dir.join("nodes.conf").display(),
                        )
                    },
                    false,
                    false,
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisProcess::addr).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Wait until every node agrees the cluster is up.
        for node in &nodes {
            let mut ok = false;
            for _ in 0..200 {
                if node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(ok, "the cluster did not come up");
        }
        Cluster { nodes }
    }

    /// Every key of every node.
    pub fn dump(&self) -> Vec<(String, String)> {
        self.nodes.iter().flat_map(RedisProcess::dump).collect()
    }
}

/// A private certificate authority for TLS tests.
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portcullis test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `host` in `dir`: (certificate file, key file).
    pub fn issue(&self, dir: &Path, host: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue_pem(&[host]);
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server-key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    /// A certificate naming `names` (DNS names or IP addresses), signed by this CA: (certificate PEM,
    /// key PEM).
    pub fn issue_pem(&self, names: &[&str]) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A TCP relay on a loopback port the test holds for its whole life, forwarding to a target it may
/// change (or take away: then connections are accepted and closed at once, like a server that
/// went away).
pub struct Relay {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(Some(target.to_string())));
        let current = target.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let to = current.lock().unwrap().clone();
                connections.spawn(async move {
                    let Some(to) = to else {
                        return;
                    };
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Relay { addr, target, task }
    }

    /// Point new connections at `target`, or at nothing (`None`).
    pub fn set_target(&self, target: Option<&str>) {
        *self.target.lock().unwrap() = target.map(str::to_string);
    }
}
