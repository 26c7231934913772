//! `statecast serve` settings: flags, then `STATECAST_*` environment variables, then the
//! TOML file, then defaults. clap handles the first two; the file fills what they leave.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;
use statecast_bridge::BridgeConfig;
use statecast_bridge::config::{RouteConfig, SourceConfig};
use statecast_cluster::ClusterConfig;
use statecast_server::{AuthConfig, Limits, Mappings, SocketIoConfig};

/// Flags of `statecast serve`; each may also come from its environment variable.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "STATECAST_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./statecast-data]
    #[arg(long, env = "STATECAST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML file with any of these settings (flags and environment variables win)
    #[arg(long, env = "STATECAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interval of WebSocket pings; a connection silent for 2.5 intervals is closed [default: 25000]
    #[arg(long, env = "STATECAST_HEARTBEAT_MS", value_name = "N")]
    pub heartbeat_ms: Option<u64>,
    /// Changes kept per topic so reconnecting clients get patches, not snapshots [default: 128]
    #[arg(long, env = "STATECAST_HISTORY_LEN", value_name = "N")]
    pub history_len: Option<usize>,
    /// Largest state or event accepted, in bytes of JSON [default: 262144]
    #[arg(long, env = "STATECAST_MAX_STATE_BYTES", value_name = "N")]
    pub max_state_bytes: Option<usize>,
    /// Largest WebSocket message accepted; larger ones close the connection with 1009 [default: 1048576]
    #[arg(long, env = "STATECAST_MAX_FRAME_BYTES", value_name = "N")]
    pub max_frame_bytes: Option<usize>,
    /// Messages queued per client before its pending patches are conflated [default: 4096]
    #[arg(long, env = "STATECAST_OUTBOX_MESSAGES", value_name = "N")]
    pub outbox_messages: Option<usize>,
    /// Bytes queued per client before its pending patches are conflated [default: 4194304]
    #[arg(long, env = "STATECAST_OUTBOX_BYTES", value_name = "N")]
    pub outbox_bytes: Option<usize>,
    /// Run simulated devices (an output controller, two microphones) to watch live changes
    #[arg(long, env = "STATECAST_DEMO")]
    pub demo: bool,
    /// Open connections in all; more get HTTP 503 [default: 16000]
    #[arg(long, env = "STATECAST_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections from one IP address; more get HTTP 503 [default: 16000]
    #[arg(long, env = "STATECAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Subscription patterns one WebSocket may hold [default: 1000]
    #[arg(long, env = "STATECAST_MAX_SUBSCRIPTIONS", value_name = "N")]
    pub max_subscriptions: Option<usize>,
    /// Topics the hub holds; writes creating more are refused [default: 1000000]
    #[arg(long, env = "STATECAST_MAX_TOPICS", value_name = "N")]
    pub max_topics: Option<usize>,
    /// Messages per second one WebSocket may send (bursts as large) [default: 10000]
    #[arg(long, env = "STATECAST_MESSAGES_PER_SECOND", value_name = "N")]
    pub messages_per_second: Option<u32>,
    /// Messages and REST requests per second from one IP address [default: 100000]
    #[arg(long, env = "STATECAST_MESSAGES_PER_SECOND_PER_IP", value_name = "N")]
    pub messages_per_second_per_ip: Option<u32>,
    /// Time a client has to send a request's headers, and again its body; idle keep-alive connections close after it (slowloris) [default: 10000]
    #[arg(long, env = "STATECAST_HANDSHAKE_TIMEOUT_MS", value_name = "N")]
    pub handshake_timeout_ms: Option<u64>,
    /// TLS certificate chain (PEM); with --tls-key, the hub speaks HTTPS, WSS and HTTP/2.
    /// SIGHUP reloads both files.
    #[arg(
        long,
        env = "STATECAST_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(
        long,
        env = "STATECAST_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Listen on a non-loopback address without authentication ([auth] in the file)
    #[arg(long, env = "STATECAST_INSECURE")]
    pub insecure: bool,
    /// Share state with other hubs through Redis, redis://HOST:PORT[/DB] (instead of the
    /// embedded store; see docs/cluster.md)
    #[arg(long, env = "STATECAST_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// Prefix of the cluster's Redis keys, so several clusters can share one Redis [default: statecast]
    #[arg(long, env = "STATECAST_CLUSTER_PREFIX", value_name = "PREFIX")]
    pub cluster_prefix: Option<String>,
    /// This hub's name in the cluster [default: random]
    #[arg(long, env = "STATECAST_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,
}

/// `[cluster]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub node: Option<String>,
    /// Entries the Redis stream keeps (about).
    pub stream_len: Option<u64>,
}

/// The same settings as they appear in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub heartbeat_ms: Option<u64>,
    pub history_len: Option<usize>,
    pub max_state_bytes: Option<usize>,
    pub max_frame_bytes: Option<usize>,
    pub outbox_messages: Option<usize>,
    pub outbox_bytes: Option<usize>,
    pub demo: Option<bool>,
    pub insecure: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_subscriptions: Option<usize>,
    pub max_topics: Option<usize>,
    pub messages_per_second: Option<u32>,
    pub messages_per_second_per_ip: Option<u32>,
    pub handshake_timeout_ms: Option<u64>,
    /// Origins whose pages may open WebSockets and SSE streams (besides the hub's own).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// API keys and JWT settings: only in the file.
    pub auth: Option<AuthConfig>,
    /// Redis cluster settings (`--cluster` and friends win).
    pub cluster: Option<ClusterFile>,
    /// Sources (`[[source]]`) and command routes (`[[route]]`): only in the file.
    #[serde(default)]
    pub source: Vec<SourceConfig>,
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    /// The Socket.IO endpoint and its event mappings (`[socketio]`): only in the file.
    pub socketio: Option<SocketIoConfig>,
}

/// Every setting, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub history_len: usize,
    pub max_state_bytes: usize,
    pub max_frame_bytes: usize,
    pub outbox_messages: usize,
    pub outbox_bytes: usize,
    pub demo: bool,
    pub insecure: bool,
    /// Certificate and key files, when TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    pub max_topics: usize,
    pub allowed_origins: Vec<String>,
    pub auth: AuthConfig,
    pub bridge: BridgeConfig,
    /// Redis, when hubs share state; `None`: the embedded store in `data_dir`.
    pub cluster: Option<ClusterConfig>,
    pub socketio: Mappings,
}

impl Settings {
    pub fn resolve(args: ServeArgs) -> Result<Settings, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Limits::default();
        let cluster_file = file.cluster.unwrap_or_default();
        let cluster = args.cluster.or(cluster_file.url).map(|url| {
            let mut config = ClusterConfig::new(url);
            if let Some(prefix) = args.cluster_prefix.or(cluster_file.prefix) {
                config.prefix = prefix;
            }
            if let Some(node) = args.node_id.or(cluster_file.node) {
                config.node = node;
            }
            if let Some(len) = cluster_file.stream_len {
                config.stream_len = len;
            }
            config
        });
        let settings = Settings {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./statecast-data")),
            heartbeat_ms: args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(25_000),
            history_len: args.history_len.or(file.history_len).unwrap_or(128),
            max_state_bytes: args
                .max_state_bytes
                .or(file.max_state_bytes)
                .unwrap_or(256 << 10),
            max_frame_bytes: args
                .max_frame_bytes
                .or(file.max_frame_bytes)
                .unwrap_or(1 << 20),
            outbox_messages: args
                .outbox_messages
                .or(file.outbox_messages)
                .unwrap_or(4096),
            outbox_bytes: args.outbox_bytes.or(file.outbox_bytes).unwrap_or(4 << 20),
            demo: args.demo || file.demo.unwrap_or(false),
            insecure: args.insecure || file.insecure.unwrap_or(false),
            tls: match (
                args.tls_cert.or(file.tls_cert),
                args.tls_key.or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => return Err("give both tls_cert and tls_key, or neither".into()),
            },
            limits: Limits {
                max_connections: args
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(defaults.max_connections),
                max_connections_per_ip: args
                    .max_connections_per_ip
                    .or(file.max_connections_per_ip)
                    .unwrap_or(defaults.max_connections_per_ip),
                max_subscriptions: args
                    .max_subscriptions
                    .or(file.max_subscriptions)
                    .unwrap_or(defaults.max_subscriptions),
                messages_per_second: args
                    .messages_per_second
                    .or(file.messages_per_second)
                    .unwrap_or(defaults.messages_per_second),
                messages_per_second_per_ip: args
                    .messages_per_second_per_ip
                    .or(file.messages_per_second_per_ip)
                    .unwrap_or(defaults.messages_per_second_per_ip),
                handshake_timeout_ms: args
                    .handshake_timeout_ms
                    .or(file.handshake_timeout_ms)
                    .unwrap_or(defaults.handshake_timeout_ms),
            },
            max_topics: args.max_topics.or(file.max_topics).unwrap_or(1_000_000),
            allowed_origins: file.allowed_origins,
            auth: file.auth.unwrap_or_default(),
            bridge: BridgeConfig {
                source: file.source,
                route: file.route,
            },
            cluster,
            socketio: Mappings::from_config(file.socketio.unwrap_or_default())?,
        };
        let l = &settings.limits;
        if l.max_connections == 0
            || l.max_connections_per_ip == 0
            || l.messages_per_second == 0
            || l.messages_per_second_per_ip == 0
            || l.handshake_timeout_ms == 0
        {
            return Err("connection, rate and timeout limits must be at least 1".into());
        }
        if settings.heartbeat_ms == 0 {
            return Err("heartbeat_ms must be at least 1".into());
        }
        if settings.outbox_messages == 0 || settings.outbox_bytes == 0 {
            return Err("outbox_messages and outbox_bytes must be at least 1".into());
        }
        Ok(settings)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nheartbeat_ms = 500\nhistory_len = 7\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            heartbeat_ms: Some(1000),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.heartbeat_ms, 1000);
        assert_eq!(s.history_len, 7);
        assert_eq!(s.max_state_bytes, 256 << 10);
    }

    #[test]
    fn security_limits_and_tls_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(
            &path,
            r#"
            max_connections_per_ip = 7
            messages_per_second = 9
            tls_cert = "c.pem"
            tls_key = "k.pem"
            allowed_origins = ["https://a.example"]
            [auth]
            [[auth.keys]]
            key = "k"
            read = ["a/#"]
            "#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            messages_per_second: Some(11),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.limits.max_connections_per_ip, 7);
        assert_eq!(s.limits.messages_per_second, 11);
        assert_eq!(s.limits.max_connections, Limits::default().max_connections);
        assert_eq!(s.tls, Some(("c.pem".into(), "k.pem".into())));
        assert_eq!(s.allowed_origins, ["https://a.example"]);
        assert_eq!(s.auth.keys.len(), 1);
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(&path, "tls_cert = \"c.pem\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let err = Settings::resolve(args).unwrap_err();
        assert!(err.contains("tls_key"), "{err}");
    }

    fn resolve_text(text: &str) -> Result<Settings, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(&path, text).unwrap();
        Settings::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
    }

    #[test]
    fn the_socketio_section_is_checked_by_the_server() {
        let s = resolve_text("[socketio]\npath = \"/io/\"\n").unwrap();
        assert_eq!(s.socketio.path, "/io");
        let err =
            resolve_text("[[socketio.emit]]\nevent = \"patch\"\ntopic = \"a\"\n").unwrap_err();
        assert!(err.contains("socketio.emit[1] (patch)"), "{err}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statecast.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let err = Settings::resolve(args).unwrap_err();
        assert!(err.contains("lisen"), "{err}");
    }
}
