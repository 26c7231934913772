//! What statecast's integration tests share, in one place: the CLI's tests (the real
//! binary), the bridge's (sources against real devices) and any other crate's take it as
//! a dev-dependency instead of reaching into each other's `tests/` folders.
//!
//! Two rules hold throughout. Every wait is bounded ([`within`], [`TIMEOUT`]): a test that
//! would hang fails, saying what it waited for; nothing sleeps to synchronise. And nothing
//! here depends on a statecast crate: the [`merge_patch`] oracle shares no code with the
//! hub it checks, and the hub binary is a path the testing package passes in.
//!
//! # Layout
//!
//! - `wait.rs`: [`TIMEOUT`] and [`within`], the bounded wait every helper uses.
//! - `local.rs`: the repository root, a free loopback port, signals to a test's process.
//! - `hub.rs`: [`Server`], the `statecast serve` binary on an ephemeral port, with its
//!   address, log, restarts and signals.
//! - `http.rs`: [`http_client`] and [`Resp`], a whole HTTP response.
//! - `ws.rs`: [`Ws`], a WebSocket client of `/ws` with the protocol's request and result.
//! - `raw_ws.rs`: [`RawWs`], a WebSocket written by hand for invalid frames and silence.
//! - `sse.rs`: [`Sse`], a Server-Sent Events client of `/api/stream`.
//! - `merge_patch.rs`: the RFC 7396 oracle, from the RFC's pseudo-code, with its
//!   appendix A as tests.
//! - `history.rs`: the history's answers as tests read them ([`all_changes`], [`unix_ms`],
//!   [`brute_force_series`]) and a config file ([`config_file`]).
//! - `follow.rs`: [`Follower`], a client's copy of a topic that checks the delivery rules.
//! - `homeassistant.rs`: [`HomeAssistant`], a real Home Assistant process per test.
//! - `redis.rs`: [`RedisPrefix`], a test's own keys on the shared Redis, deleted after it;
//!   [`OwnRedis`], a `redis-server` of the test's own, to kill or starve.
//! - `disk.rs`: [`Tmpfs`] and [`fill_disk`], a full disk on demand.
//! - `netns.rs`: [`Netns`], a network namespace of the test's own, to cut links in.

mod disk;
mod follow;
mod history;
mod homeassistant;
mod http;
mod hub;
mod local;
pub mod merge_patch;
mod netns;
mod raw_ws;
mod redis;
mod sse;
mod wait;
mod ws;

pub use disk::{Tmpfs, fill_disk, is_root};
pub use follow::Follower;
pub use history::{
    ADMIN_KEY, DASH_KEY, TWO_KEYS, all_changes, assert_history_forbidden, assert_oldest_went_first,
    assert_recorded, assert_same_series, brute_force_series, config_file, history, states, unix_ms,
    write_old_then_new,
};
pub use homeassistant::HomeAssistant;
pub use http::{Resp, http_client, untimed};
pub use hub::{Server, metric_value};
pub use local::{free_port, repo_root, signal};
pub use merge_patch::{merge_apply, merge_patch};
pub use netns::Netns;
pub use raw_ws::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, RawWs};
pub use redis::{OwnRedis, RedisPrefix, RedisSetup, SHARED_REDIS, cluster_args};
pub use sse::{Sse, SseEvent};
pub use wait::{TIMEOUT, within};
pub use ws::{Ws, close_code, tcp_small_buffer};
