//! Every setting of `statecast serve`, each defined once: its name (which gives the flag,
//! the `STATECAST_*` variable and the file key), its doc, and the field of
//! [`Settings`](super::Settings) it sets. The defaults are that field's value in
//! `Settings::default()`, taken from the crate
//! that owns the setting. Help, the file reader and the docs all read this list; a new
//! setting is one entry here and one field in `Settings`.

use super::setting::{Field, Setting, typed};
use statecast_server::{Mappings, SocketIoConfig};

/// The setting that names the file, read before the file is.
pub const CONFIG: &str = "config";

/// In the order `--help` lists them.
pub static SETTINGS: &[Setting] = &[
    Setting::new(
        "listen",
        "ADDR",
        "Address to listen on: IP:PORT, or HOST:PORT resolved once at start (of several \
         addresses, the first IPv4 one: localhost:8080 is 127.0.0.1:8080)",
        Field::Value(|s| &mut s.listen),
    ),
    Setting::new(
        "data_dir",
        "DIR",
        "Directory of the embedded store",
        Field::Value(|s| &mut s.data_dir),
    ),
    Setting::new(
        "reset_broken_store",
        "",
        "If the store file is empty or not a store, move it aside (statecast.redb.broken-<time>) and start with an empty store, instead of refusing to start",
        Field::Switch(|s| &mut s.reset_broken_store),
    ),
    Setting::new(
        CONFIG,
        "FILE",
        "TOML file with any of these settings (flags and environment variables win)",
        Field::Value(|s| &mut s.config),
    )
    .not_in_file(),
    Setting::new(
        "heartbeat_ms",
        "N",
        "Interval of WebSocket pings; a connection silent for 2.5 intervals is closed",
        Field::Value(|s| &mut s.heartbeat_ms),
    ),
    Setting::new(
        "resume_len",
        "N",
        "Changes kept per topic so reconnecting clients get patches, not snapshots",
        Field::Value(|s| &mut s.hub.resume_len),
    ),
    Setting::new(
        "history_max_bytes",
        "N",
        "Bytes all topics' history may hold in the embedded store, or in Redis with \
         `--cluster` (about: see docs/history.md); over it the oldest changes go first (how \
         long each topic keeps them: `history` in `[[topics]]`)",
        Field::Value(|s| &mut s.history_max_bytes),
    ),
    Setting::new(
        "max_state_bytes",
        "N",
        "Largest state or event accepted, in bytes of JSON",
        Field::Value(|s| &mut s.hub.max_state_bytes),
    ),
    Setting::new(
        "max_frame_bytes",
        "N",
        "Largest WebSocket message accepted; larger ones close the connection with 1009",
        Field::Value(|s| &mut s.max_frame_bytes),
    ),
    Setting::new(
        "outbox_messages",
        "N",
        "Messages queued per client before its pending patches are conflated",
        Field::Value(|s| &mut s.hub.outbox.max_messages),
    ),
    Setting::new(
        "outbox_bytes",
        "N",
        "Bytes queued per client before its pending patches are conflated",
        Field::Value(|s| &mut s.hub.outbox.max_bytes),
    ),
    Setting::new(
        "demo",
        "",
        "Run simulated devices (an output controller, two microphones) to watch live changes",
        Field::Switch(|s| &mut s.demo),
    ),
    Setting::new(
        "max_connections",
        "N",
        "Open connections in all; more get HTTP 503",
        Field::Value(|s| &mut s.limits.max_connections),
    ),
    Setting::new(
        "max_connections_per_ip",
        "N",
        "Open connections from one IP address; more get HTTP 503",
        Field::Value(|s| &mut s.limits.max_connections_per_ip),
    ),
    Setting::new(
        "max_subscriptions",
        "N",
        "Subscription patterns one WebSocket may hold",
        Field::Value(|s| &mut s.limits.max_subscriptions),
    ),
    Setting::new(
        "max_topics",
        "N",
        "Topics the hub holds; writes creating more are refused",
        Field::Value(|s| &mut s.hub.max_topics),
    ),
    Setting::new(
        "messages_per_second",
        "N",
        "Messages per second one WebSocket may send (bursts as large)",
        Field::Value(|s| &mut s.limits.messages_per_second),
    ),
    Setting::new(
        "messages_per_second_per_ip",
        "N",
        "Messages and REST requests per second from one IP address",
        Field::Value(|s| &mut s.limits.messages_per_second_per_ip),
    ),
    Setting::new(
        "handshake_timeout_ms",
        "N",
        "Time a client has to send a request's headers, and again its body; idle keep-alive connections close after it (slowloris)",
        Field::Value(|s| &mut s.limits.handshake_timeout_ms),
    ),
    Setting::new(
        "tls_cert",
        "FILE",
        "TLS certificate chain (PEM); with --tls-key, the hub speaks HTTPS, WSS and HTTP/2. \
         SIGHUP reloads both files",
        Field::Value(|s| &mut s.tls_cert),
    )
    .requires("tls_key"),
    Setting::new(
        "tls_key",
        "FILE",
        "TLS private key (PEM)",
        Field::Value(|s| &mut s.tls_key),
    )
    .requires("tls_cert"),
    Setting::new(
        "insecure",
        "",
        "Listen on a non-loopback address without authentication ([auth] in the file)",
        Field::Switch(|s| &mut s.insecure),
    ),
    Setting::new(
        "cluster",
        "URL",
        "Share state with other hubs through Redis, redis://HOST:PORT[/DB] (instead of the \
         embedded store; see docs/cluster.md)",
        Field::Value(|s| &mut s.cluster_url),
    )
    .key("cluster.url"),
    Setting::new(
        "cluster_prefix",
        "PREFIX",
        "Prefix of the cluster's Redis keys, so several clusters can share one Redis",
        Field::Value(|s| &mut s.cluster_prefix),
    )
    .key("cluster.prefix"),
    Setting::new(
        "node_id",
        "NAME",
        "This hub's name in the cluster",
        Field::Value(|s| &mut s.node_id),
    )
    .key("cluster.node")
    .default_text("random"),
    Setting::file_only(
        "cluster.stream_len",
        "N",
        "Entries the cluster's Redis stream keeps (about): how far behind a hub may fall and \
         still catch up without a resync",
        Field::Value(|s| &mut s.cluster_stream_len),
    ),
    Setting::file_only(
        "allowed_origins",
        "[ORIGIN]",
        "Origins (https://host[:port]) whose pages may open WebSockets and SSE streams, \
         besides the hub's own; \"*\" allows any",
        Field::Section(|s, value| {
            s.allowed_origins = typed(value)?;
            Ok(())
        }),
    ),
    Setting::file_only(
        "auth",
        "",
        "[auth]: API keys and JWT settings (see docs/security.md)",
        Field::Section(|s, value| {
            s.auth = typed(value)?;
            Ok(())
        }),
    ),
    Setting::file_only(
        "source",
        "",
        "[[source]]: what the hub reads from devices and services",
        Field::Section(|s, value| {
            s.bridge.source = typed(value)?;
            Ok(())
        }),
    ),
    Setting::file_only(
        "topics",
        "",
        "[[topics]]: policies for the topics a pattern matches: `match`, `schema` (JSON \
         Schema, a file relative to the config file or an inline table), `stale_after`, \
         `history` (see docs/protocol.md)",
        Field::Section(|s, value| {
            s.topics = typed(value)?;
            Ok(())
        }),
    ),
    Setting::file_only(
        "entity",
        "",
        "[[entity]]: entity descriptions the hub writes to `_entities/<key>` at start: `key` \
         plus the description's fields (see docs/entities.md); only the hub writes those topics",
        Field::Section(|s, value| {
            s.entity_tables = typed(value)?;
            Ok(())
        }),
    ),
    Setting::file_only(
        "route",
        "",
        "[[route]]: where commands for a target go",
        Field::Section(|s, value| {
            s.bridge.route = typed(value)?;
            Ok(())
        }),
    ),
    Setting::file_only(
        "socketio",
        "",
        "[socketio]: the Socket.IO endpoint and its event mappings (see docs/socketio.md)",
        Field::Section(|s, value| {
            s.socketio = Mappings::from_config(typed::<SocketIoConfig>(value)?)?;
            Ok(())
        }),
    ),
];
