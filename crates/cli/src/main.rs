//! The `statecast` binary: `statecast serve` runs the hub with its embedded store.

mod client;
mod config;
mod demo;
mod history;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use statecast_bridge::{Bridge, Handlers};
use statecast_cluster::RedisEngine;
use statecast_cluster::relay::CommandRelay;
use statecast_core::Hub;
use statecast_server::{Auth, ServerConfig, Tls};
use statecast_store::RedbEngine;
use std::sync::Arc;

use crate::config::{ServeArgs, Settings};

// jemalloc with background threads, so a long-running hub gives memory back after a spike:
// they return freed pages to the system within seconds (jemalloc's 10 s decay). Measured
// with `statecast-bench run --scenario spike` (5,000 stalled clients fill their queues, then
// close; debug build): glibc's malloc went 28 -> 758 MiB and kept 172 MiB (200 MiB after a
// second round); jemalloc went 34 -> 809 MiB and was back at 40 MiB 9 s after the close
// (41 MiB after a second round). `burst` deliveries/s were the same within the noise.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// statecast: a real-time state hub. Devices and apps write JSON state to topics; every
/// subscribed client gets each change pushed over WebSocket (or Server-Sent Events) within
/// milliseconds, as a minimal patch with a per-topic revision.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Run the hub: WebSocket at /ws, REST at /api, SSE at /api/stream, metrics at /metrics.
    ///
    /// Settings come from flags, then STATECAST_* environment variables, then the TOML file
    /// given with --config (keys named like the flags, with underscores), then defaults;
    /// docs/configuration.md lists them all.
    #[command(after_help = "\
Examples:
  statecast serve --demo
  statecast serve --listen 0.0.0.0:8080 --config /etc/statecast/statecast.toml
  STATECAST_DATA_DIR=/var/lib/statecast statecast serve")]
    Serve(Box<ServeArgs>),
    /// Print every change of topics matching PATTERN as it happens, one line each with a
    /// timestamp. Waits for a hub that is not up yet, and reconnects and resumes by itself.
    #[command(after_help = "\
Examples:
  statecast watch 'demo/#'
  statecast watch 'micboard/+' --json | jq .patch
  statecast watch '_sources/#' --url ws://10.0.0.5:8080/ws")]
    Watch {
        /// A topic or pattern (`+` one segment, final `#` the rest), e.g. `micboard/#`
        pattern: String,
        /// One JSON object per line, for scripts
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: client::HubUrl,
    },
    /// Print a topic's state, or every topic matching a pattern.
    #[command(after_help = "\
Examples:
  statecast get railhub/esp32-01
  statecast get 'demo/#'")]
    Get {
        /// A topic (`railhub/esp32-01`), or a pattern with `+` or `#` (`'demo/#'`)
        #[arg(value_name = "TOPIC")]
        topic: String,
        #[command(flatten)]
        hub: client::HubUrl,
    },
    /// Replace a topic's state.
    #[command(after_help = "\
Examples:
  statecast set railhub/esp32-01 '{\"uptime\": 3}'
  curl -s http://192.168.1.50/api/status | statecast set railhub/esp32-01 -")]
    Set {
        /// The topic to write: segments of A-Z a-z 0-9 _ . : @ ~ - joined by `/`, no
        /// wildcards (`railhub/esp32-01`)
        #[arg(value_name = "TOPIC")]
        topic: String,
        /// The whole new state as JSON, or `-` to read it from standard input
        #[arg(value_name = "STATE")]
        state: String,
        #[command(flatten)]
        hub: client::HubUrl,
    },
    /// Apply an RFC 7396 merge patch to a topic's state.
    #[command(after_help = "\
Examples:
  statecast patch railhub/esp32-01 '{\"uptime\": 4}'
  statecast patch railhub/esp32-01 '{\"wifi\": null}'   # null removes a key")]
    Patch {
        /// The topic to change, no wildcards (`railhub/esp32-01`)
        #[arg(value_name = "TOPIC")]
        topic: String,
        /// The merge patch as JSON (what changes; `null` removes a key), or `-` to read it
        /// from standard input
        #[arg(value_name = "PATCH")]
        patch: String,
        #[command(flatten)]
        hub: client::HubUrl,
    },
    /// Remove a topic.
    #[command(after_help = "\
Example:
  statecast delete railhub/esp32-01")]
    Delete {
        /// The topic to remove, no wildcards
        #[arg(value_name = "TOPIC")]
        topic: String,
        #[command(flatten)]
        hub: client::HubUrl,
    },
    /// Publish an event on a topic.
    #[command(after_help = "\
Example:
  statecast event mopidy/player1 '{\"event\": \"track_playback_started\"}'")]
    Event {
        /// The topic the event is about, no wildcards; its state is left as it is
        #[arg(value_name = "TOPIC")]
        topic: String,
        /// The event data as JSON, or `-` to read it from standard input
        #[arg(value_name = "DATA")]
        data: String,
        #[command(flatten)]
        hub: client::HubUrl,
    },
    /// Print a topic's recorded changes, a numeric field of it per step, or its state at a
    /// time, from the hub's history (kept for topics whose policy has `history`, 24h by
    /// default).
    ///
    /// A table by default: time, rev and the state (or the --fields), or for --field: each
    /// step's start, min, max, time-weighted avg, last value and number of writes. Times are
    /// RFC 3339, Unix ms, or a duration before now (-1h, -90s, -7d).
    #[command(after_help = "\
Examples:
  statecast history micboard/SHURE001 --from -1h
  statecast history micboard/SHURE001 --from -1d --fields /battery,/rf --csv > battery.csv
  statecast history micboard/SHURE001 --from -1d --field /battery --step 1h
  statecast history micboard/SHURE001 --at 2026-12-06T21:00:00Z
  statecast history railhub/esp32-01 --from -15m --json | jq '.changes[].rev'")]
    History(Box<history::HistoryArgs>),
    /// Print the SHA-256 of an API key, for `key_sha256` in [[auth.keys]].
    #[command(after_help = "\
Example:
  statecast hash-key \"$(openssl rand -hex 32)\"")]
    HashKey {
        /// The API key clients will send
        key: String,
    },
    /// Send a command to a device or handler and print its answer.
    #[command(after_help = "\
Examples:
  statecast command demo/railhub/esp32-01 switch '{\"output\": 2, \"on\": true}'   # with serve --demo
  statecast command demo/railhub/esp32-01 reboot '{\"delay_s\": 1}'
  statecast command ha/light.kitchen light.turn_on '{\"brightness_pct\": 40}'")]
    Command {
        /// Who the command is for: a topic such as `railhub/esp32-01`, which a [[route]]
        /// of the hub's config (its `target` pattern) or a source takes
        #[arg(value_name = "TARGET")]
        target: String,
        /// The command's name, as the route or the device knows it (`switch`, `reboot`,
        /// a Home Assistant service such as `light.turn_on`)
        #[arg(value_name = "COMMAND")]
        name: String,
        /// The command's arguments as JSON (default `{}`), or `-` to read them from
        /// standard input
        #[arg(value_name = "ARGS")]
        args: Option<String>,
        #[command(flatten)]
        hub: client::HubUrl,
    },
    /// Print docs/configuration.md, generated from the settings' definitions.
    #[command(hide = true)]
    ConfigDocs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STATECAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Action::Serve(args) => Settings::resolve(*args).and_then(serve),
        Action::HashKey { key } => {
            output::line(&statecast_server::key_sha256(&key));
            Ok(())
        }
        Action::ConfigDocs => {
            output::line(config::docs::markdown().trim_end());
            Ok(())
        }
        other => run_client(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statecast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a client subcommand on a small runtime.
fn run_client(command: Action) -> Result<(), String> {
    use reqwest::Method;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        match command {
            Action::Serve(_) | Action::HashKey { .. } | Action::ConfigDocs => Ok(()),
            Action::Watch { pattern, json, hub } => client::watch(&hub, &pattern, json).await,
            Action::Get { topic, hub } => client::get(&hub, &topic).await,
            Action::Set { topic, state, hub } => {
                client::write(&hub, Method::PUT, &topic, &state).await
            }
            Action::Patch { topic, patch, hub } => {
                client::write(&hub, Method::PATCH, &topic, &patch).await
            }
            Action::Delete { topic, hub } => client::delete(&hub, &topic).await,
            Action::History(args) => history::run(&args).await,
            Action::Event { topic, data, hub } => client::event(&hub, &topic, &data).await,
            Action::Command {
                target,
                name,
                args,
                hub,
            } => client::command(&hub, &target, &name, args.as_deref()).await,
        }
    })
}

fn serve(settings: Settings) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let hub_config = settings.hub.clone();
    let cluster_config = settings.cluster();
    let cluster = match &cluster_config {
        Some(config) => Some(Arc::new(
            RedisEngine::open(config.clone()).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let hub = match &cluster {
        Some(engine) => Hub::open_shared(Arc::clone(engine), hub_config),
        None => Hub::open(open_store(&settings)?, hub_config),
    }
    .map_err(|e| e.to_string())?;
    let auth = Auth::from_config(&settings.auth)?;
    if !auth.required() && !settings.listen.ip().is_loopback() && !settings.insecure {
        return Err(format!(
            "refusing to listen on {} without authentication: anyone who can reach it could \
             read every state and send commands. Configure [auth] in the config file (see \
             docs/security.md), listen on 127.0.0.1, or pass --insecure",
            settings.listen
        ));
    }
    let mut server_config = ServerConfig {
        heartbeat_ms: settings.heartbeat_ms,
        max_frame_bytes: settings.max_frame_bytes,
        auth: std::sync::Arc::new(auth),
        allowed_origins: settings.allowed_origins.clone(),
        limits: settings.limits.clone(),
        tls: match settings.tls() {
            Some((cert, key)) => Some(std::sync::Arc::new(Tls::load(cert, key)?)),
            None => None,
        },
        socketio: settings.socketio.clone(),
        ..ServerConfig::default()
    };
    server_config
        .reserved
        .extend(config::entities::reserved(&settings.entities));
    let scheme = if settings.tls().is_some() {
        "https"
    } else {
        "http"
    };
    let ws_scheme = if settings.tls().is_some() {
        "wss"
    } else {
        "ws"
    };
    runtime.block_on(async move {
        let mut bridge_config = settings.bridge.clone();
        let demo = match settings.demo {
            true => Some(demo::Demo::new(&hub, &mut bridge_config)?),
            false => None,
        };
        let handlers = demo
            .as_ref()
            .map_or_else(Handlers::new, demo::Demo::handlers);
        let (written, deleted) = config::entities::apply(&hub, &settings.entities).await?;
        if written + deleted > 0 {
            tracing::info!(
                "entities: {written} from the config file written to _entities/, {deleted} it no longer has deleted"
            );
        }
        let bridge = Arc::new(Bridge::start(&hub, bridge_config, handlers)?);
        if let Some(engine) = &cluster {
            let relay = CommandRelay::start(Arc::clone(engine), &bridge).await?;
            bridge.set_forward(relay);
        }
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let store = match &cluster_config {
            Some(c) => format!("cluster {} (prefix {}, node {})", c.url, c.prefix, c.node),
            None => format!("store {}", settings.data_dir.display()),
        };
        tracing::info!(
            "statecast {} listening on {scheme}://{addr} (WebSocket {ws_scheme}://{addr}/ws), {}",
            env!("CARGO_PKG_VERSION"),
            statecast_bridge::redact(&store),
        );
        log_setup(&settings, &format!("{scheme}://{addr}/"));
        tokio::spawn(log_store_health(hub.clone()));
        if let Some(demo) = demo {
            demo.start(&hub);
            tracing::info!(
                "demo devices running: subscribe to demo/#; demo/railhub/esp32-01 takes the \
                 commands switch and reboot"
            );
        }
        notify_service_manager(ServiceState::Ready);
        statecast_server::serve(listener, hub, bridge, server_config, shutdown_signal())
            .await
            .map_err(|e| format!("server error: {e}"))?;
        notify_service_manager(ServiceState::Stopping);
        if let Some(engine) = &cluster {
            engine.leave();
        }
        Ok::<(), String>(())
    })?;
    // The tasks still hold the hub; dropping them closes the store (redb syncs its file
    // once more). That happens here, before "stopped", and a task stuck in a blocking call
    // (a DNS lookup of a source, say) cannot hold the exit up.
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    tracing::info!("statecast stopped; every acknowledged write is stored");
    Ok(())
}

/// What the hub tells a service manager that started it.
enum ServiceState {
    /// Listening, with the store open and sources started: clients may connect.
    Ready,
    /// The server has stopped and the store is being closed.
    Stopping,
}

/// Tells systemd (a unit with `Type=notify`, see packaging/statecast.service) the hub's
/// state; does nothing unless `NOTIFY_SOCKET` is set, i.e. outside such a unit. A failure
/// is logged, never fatal: the hub serves either way.
fn notify_service_manager(state: ServiceState) {
    #[cfg(target_os = "linux")]
    {
        let state = match state {
            ServiceState::Ready => sd_notify::NotifyState::Ready,
            ServiceState::Stopping => sd_notify::NotifyState::Stopping,
        };
        if let Err(e) = sd_notify::notify(&[state]) {
            tracing::warn!("could not notify the service manager (NOTIFY_SOCKET): {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = state;
}

/// Longest wait, once the server has stopped, for its tasks to end and the store to close.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a user needs to know at start, after the `listening on` line (which names the data
/// directory): the dashboard, the config file, and one line per source and route (URLs
/// redacted).
fn log_setup(settings: &Settings, dashboard: &str) {
    tracing::info!("dashboard: {dashboard}");
    match &settings.config {
        Some(path) => tracing::info!("config file: {}", path.display()),
        None => tracing::info!("config file: none (flags, STATECAST_* and defaults)"),
    }
    let lines = settings.bridge.describe();
    if lines.is_empty() {
        tracing::info!("no sources or routes configured");
    }
    for line in lines {
        tracing::info!("{line}");
    }
}

/// The embedded store in the data directory; with `reset_broken_store`, a file there that
/// is not a store is moved aside (and said so) instead of refusing to start.
fn open_store(settings: &Settings) -> Result<RedbEngine, String> {
    let max = settings.history_max_bytes;
    if !settings.reset_broken_store {
        return RedbEngine::open(&settings.data_dir)
            .map(|e| e.with_history_max_bytes(max))
            .map_err(|e| e.to_string());
    }
    let (engine, moved) =
        RedbEngine::open_setting_aside(&settings.data_dir).map_err(|e| e.to_string())?;
    let engine = engine.with_history_max_bytes(max);
    for moved in moved {
        tracing::warn!(
            "{} was not a store: moved it aside to {} and started with an empty one",
            // `<file>.broken-<time>`: the file it was.
            moved
                .display()
                .to_string()
                .split(".broken-")
                .next()
                .unwrap_or_default(),
            moved.display()
        );
    }
    Ok(engine)
}

/// Logs when the store starts refusing writes and when it takes them again. The hub does
/// no I/O and only reports it ([`Hub::store_status`]); a look every second is enough, as
/// its count of spells tells of one that began and ended between two looks.
async fn log_store_health(hub: Hub) {
    let mut seen = 0;
    let mut refusing = false;
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let status = hub.store_status();
        let began = status.spells - seen;
        seen = status.spells;
        if began > 0 && refusing {
            tracing::info!("the store takes writes again");
        }
        if began > 0 || (status.refusing.is_some() && !refusing) {
            let why = status.refusing.as_ref().or(status.last_refusal.as_ref());
            tracing::error!(
                "writes are refused (/api/health says degraded): {}",
                why.map_or("", String::as_str)
            );
            refusing = true;
        }
        if refusing && status.refusing.is_none() {
            tracing::info!("the store takes writes again");
            refusing = false;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: closing connections and flushing the store");
}
