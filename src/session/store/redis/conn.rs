//! Connections to Redis in its three deployments, each bounded in time and re-established by itself.
//!
//! - standalone: one `ConnectionManager`, created lazily (the gateway starts while Redis is down) and
//!   reconnecting in the background after a failure;
//! - sentinel: the master is asked of the sentinels, and asked again whenever a command fails in a
//!   way a failover causes (the connection refused or dropped, `READONLY` from a demoted master,
//!   a timeout), so a failover is followed without a restart;
//! - cluster: redis-rs's cluster connection (slots, redirections, reconnects), created lazily.
//!
//! Every command runs under [`Redis::timeout`]: a Redis that hangs costs a request that much, then a
//! 503, never a stuck request. Pub/sub uses a connection of its own ([`Redis::pubsub`]).

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, TlsCertificates, Value,
};
use secrecy::ExposeSecret as _;
use url::Url;

use crate::config::{RedisConfig, RedisMode};
use crate::session::StoreError;

/// The most a command may take; also the connect timeout.
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

/// Redis as the store talks to it.
pub(super) struct Redis {
    kind: Kind,
    /// How pub/sub connections are made.
    pubsub_client: PubSubTarget,
}

enum Kind {
    Standalone(ConnectionManager),
    Sentinel(Box<Sentinel>),
    Cluster(Box<Cluster>),
}

enum PubSubTarget {
    /// A fixed server (standalone) or one of the seed nodes (cluster: classic pub/sub reaches every
    /// node).
    Fixed(Vec<Client>),
    /// The current master, as the sentinels name it.
    Sentinel,
}

struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<(Client, ConnectionManager)>>,
}

struct Cluster {
    client: redis::cluster::ClusterClient,
    current: tokio::sync::Mutex<Option<ClusterConnection>>,
}

/// One connection, whatever the deployment: what redis-rs commands and scripts run on.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1))
}

/// Never show a Redis URL: it may carry a password.
fn config_error(what: &str, e: RedisError) -> String {
    format!("session.redis_url: {what}: {}", e.kind_str())
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for RedisError {
    fn kind_str(&self) -> String {
        // The category and the server's code, never the detail, which can echo connection info.
        format!("{:?}", self.kind())
    }
}

impl Redis {
    pub(super) fn new(config: &RedisConfig) -> Result<Redis, String> {
        let url = Url::parse(config.url.expose_secret())
            .map_err(|_| "session.redis_url: not a URL".to_string())?;
        let tls = url.scheme() == "rediss";
        let certificates = || TlsCertificates {
            client_tls: None,
            root_cert: config.ca_pem.clone(),
        };
        let client_for = |url: &str| -> Result<Client, String> {
            if tls && config.ca_pem.is_some() {
                Client::build_with_tls(url, certificates())
                    .map_err(|e| config_error("cannot use it", e))
            } else {
                Client::open(url).map_err(|e| config_error("cannot use it", e))
            }
        };
        // The node URLs of sentinel and cluster mode: the configured URL with each node's address.
        let node_url = |node: &str| -> Result<String, String> {
            let (host, port) = node
                .rsplit_once(':')
                .ok_or_else(|| format!("session.redis_nodes: expected host:port, got {node:?}"))?;
            let mut u = url.clone();
            u.set_host(Some(host.trim_start_matches('[').trim_end_matches(']')))
                .map_err(|_| format!("session.redis_nodes: bad host in {node:?}"))?;
            u.set_port(port.parse().ok())
                .map_err(|_| format!("session.redis_nodes: bad port in {node:?}"))?;
            Ok(u.to_string())
        };
        match config.mode {
            RedisMode::Standalone => {
                let client = client_for(config.url.expose_secret())?;
                let manager = client
                    .get_connection_manager_lazy(manager_config())
                    .map_err(|e| config_error("cannot use it", e))?;
                Ok(Redis {
                    kind: Kind::Standalone(manager),
                    pubsub_client: PubSubTarget::Fixed(vec![client]),
                })
            }
            RedisMode::Cluster => {
                let nodes = config
                    .nodes
                    .iter()
                    .map(|n| node_url(n))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .retries(1);
                if tls && config.ca_pem.is_some() {
                    builder = builder.certs(certificates());
                }
                let client = builder
                    .build()
                    .map_err(|e| config_error("cannot build the cluster client", e))?;
                let seeds = nodes
                    .iter()
                    .map(|n| client_for(n))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Redis {
                    kind: Kind::Cluster(Box::new(Cluster {
                        client,
                        current: tokio::sync::Mutex::new(None),
                    })),
                    pubsub_client: PubSubTarget::Fixed(seeds),
                })
            }
            RedisMode::Sentinel => {
                let master = config
                    .sentinel_master
                    .clone()
                    .ok_or_else(|| "session.redis_sentinel_master: is required".to_string())?;
                let sentinels = config
                    .nodes
                    .iter()
                    .map(|node| {
                        let (host, port) = node.rsplit_once(':').unwrap_or((node, "26379"));
                        let port = port.parse().unwrap_or(26379);
                        if tls {
                            ConnectionAddr::TcpTls {
                                host: host.to_string(),
                                port,
                                insecure: false,
                                tls_params: None,
                            }
                        } else {
                            ConnectionAddr::Tcp(host.to_string(), port)
                        }
                    })
                    .collect::<Vec<_>>();
                let mut builder =
                    SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
                        .map_err(|e| config_error("cannot build the sentinel client", e))?;
                if !url.username().is_empty() {
                    builder = builder.set_client_to_redis_username(url.username());
                }
                if let Some(password) = url.password() {
                    let password = percent_encoding::percent_decode_str(password)
                        .decode_utf8_lossy()
                        .to_string();
                    builder = builder.set_client_to_redis_password(password);
                }
                if let Some(db) = url
                    .path()
                    .trim_start_matches('/')
                    .parse::<i64>()
                    .ok()
                    .filter(|db| *db != 0)
                {
                    builder = builder.set_client_to_redis_db(db);
                }
                if tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                    if config.ca_pem.is_some() {
                        builder = builder
                            .set_client_to_redis_certificates(certificates())
                            .set_client_to_sentinel_certificates(certificates());
                    }
                }
                let client = builder
                    .build()
                    .map_err(|e| config_error("cannot build the sentinel client", e))?;
                Ok(Redis {
                    kind: Kind::Sentinel(Box::new(Sentinel {
                        client: tokio::sync::Mutex::new(client),
                        current: Mutex::new(None),
                    })),
                    pubsub_client: PubSubTarget::Sentinel,
                })
            }
        }
    }

    /// A connection to run commands on (cheap: connections are shared).
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        match &self.kind {
            Kind::Standalone(manager) => Ok(Conn::Single(manager.clone())),
            Kind::Sentinel(s) => s.master().await.map(|(_, m)| Conn::Single(m)),
            Kind::Cluster(c) => {
                let mut current = c.current.lock().await;
                if let Some(conn) = current.as_ref() {
                    return Ok(Conn::Cluster(conn.clone()));
                }
                let conn = tokio::time::timeout(TIMEOUT, c.client.get_async_connection())
                    .await
                    .map_err(|_| unavailable("connecting to the cluster timed out"))?
                    .map_err(|e| failure("connecting to the cluster", &e))?;
                *current = Some(conn.clone());
                Ok(Conn::Cluster(conn))
            }
        }
    }

    /// Run `op` on a connection, bounded by [`TIMEOUT`]; a failure that a failover explains makes
    /// the next call ask the sentinels again.
    pub(super) async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let conn = self.conn().await?;
        let result = tokio::time::timeout(TIMEOUT, op(conn)).await;
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => failure(what, &e),
            Err(_) => unavailable(&format!("{what}: no answer within {TIMEOUT:?}")),
        };
        if let Kind::Sentinel(s) = &self.kind {
            s.forget_master();
        }
        Err(error)
    }

    /// Run `cmds` and return their replies in order: one pipelined round trip on a single server; in
    /// a cluster, where one pipeline may not span slots, each command to its own node, all at once.
    pub(super) async fn batch(&self, what: &str, cmds: Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let cluster = matches!(self.kind, Kind::Cluster(_));
        self.run(what, |conn| async move {
            if cluster {
                let replies = futures_util::future::join_all(cmds.iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                }))
                .await;
                replies.into_iter().collect()
            } else {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                let mut conn = conn;
                pipe.query_async(&mut conn).await
            }
        })
        .await
    }

    /// A dedicated connection for subscribing.
    pub(super) async fn pubsub(&self) -> Result<PubSub, StoreError> {
        let clients: Vec<Client> = match &self.pubsub_client {
            PubSubTarget::Fixed(clients) => clients.clone(),
            PubSubTarget::Sentinel => match &self.kind {
                Kind::Sentinel(s) => vec![s.master().await?.0],
                _ => Vec::new(),
            },
        };
        let mut last = unavailable("no node to subscribe on");
        for client in clients {
            match tokio::time::timeout(TIMEOUT, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = failure("subscribing", &e),
                Err(_) => last = unavailable("subscribing: no answer"),
            }
        }
        Err(last)
    }
}

impl Sentinel {
    /// The current master's client and connection, asking the sentinels when none is known.
    async fn master(&self) -> Result<(Client, ConnectionManager), StoreError> {
        if let Some(current) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(current);
        }
        let mut sentinels = self.client.lock().await;
        // Someone else may have found it while this caller waited.
        if let Some(current) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(current);
        }
        let client = tokio::time::timeout(TIMEOUT, sentinels.async_get_client())
            .await
            .map_err(|_| unavailable("asking the sentinels for the master timed out"))?
            .map_err(|e| failure("asking the sentinels for the master", &e))?;
        let manager = client
            .get_connection_manager_lazy(manager_config())
            .map_err(|e| failure("connecting to the master", &e))?;
        tracing::info!("redis: master found through the sentinels");
        let pair = (client, manager);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(pair.clone());
        Ok(pair)
    }

    fn forget_master(&self) {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

fn unavailable(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: {what}"))
}

/// A Redis error as a store error, naming its kind only (details can echo connection info).
fn failure(what: &str, e: &RedisError) -> StoreError {
    let kind = if e.is_connection_refusal() {
        "connection refused".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connection_dropped() || e.is_io_error() {
        "connection lost".to_string()
    } else {
        e.kind_str()
    };
    StoreError::Unavailable(format!("redis: {what}: {kind}"))
}
