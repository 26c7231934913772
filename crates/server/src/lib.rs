//! statecast's transports around a [`Hub`](statecast_core::Hub): the WebSocket endpoint,
//! the Server-Sent Events stream, the Socket.IO endpoint, the REST API, health and
//! Prometheus metrics. The transports only parse, call the hub and write what it hands
//! them; no state lives here.
//!
//! The surface is small: [`serve`] with its [`ServerConfig`] (and the pieces a config is
//! made of); everything else is private to the crate.
//!
//! # Layout
//! - `listener`: the accept loop ([`serve`]): HTTP/1.1 or HTTP/2 by ALPN, a `Slot` per
//!   connection (the connection limits and its message budget), the heartbeat, shutdown;
//!   `deadline`: the time limit on a request's body (408); `head`: every request head
//!   checked before hyper, so that a malformed one gets a JSON error.
//! - `routes`: which handler answers which method and path, one table ([`http_routes`]
//!   lists it); the top-level paths defined once.
//! - `openapi`: `/api/openapi.json`, the OpenAPI 3.1 description of those routes
//!   (`openapi.json`, [`OPENAPI_DOCUMENT`]).
//! - `app`: `App`, what every handler shares, and its checks (credential, grant, rate,
//!   origin).
//! - `config`: [`ServerConfig`] and [`Limits`], with their defaults.
//! - `session`: the request side of a connection, shared by `/ws` and Socket.IO: the
//!   grant, the abuse budget, `dispatch` and the shape of answers.
//! - `ws`: `/ws`, one task per connection: `ws/upgrade.rs` (the handshake),
//!   `ws/socket.rs` (the socket's halves), `ws/frame.rs` (frame encoding, batched and
//!   direct writes), `ws/mod.rs` (the connection loop).
//! - `sse`: `/api/stream`, resumable with `Last-Event-ID`.
//! - `socketio`: `/socket.io/`, the same protocol as Socket.IO events (`socketio/mod.rs`),
//!   plus the event mappings that let Flask-SocketIO front ends run unchanged
//!   (`socketio/mappings.rs`, checked by [`Mappings::from_config`]).
//! - `writes`: the gate in front of every writing route (no other site's pages, JSON
//!   bodies only).
//! - `rest`: `/api/state`, `/api/events`, `/api/commands`, `/api/health`, `/metrics`.
//! - `query`: the `?token=` of a query string, for the transports that allow it.
//! - `auth`: API keys and JWTs ([`Auth`]); `tls`: the certificate, reloaded on SIGHUP.
//! - `assets`: the dashboard (`/`) and the JavaScript client (`/statecast.js`).
//! - `error`: JSON error responses; `metrics`: transport counters and the exposition.

mod app;
mod assets;
mod auth;
mod config;
mod deadline;
mod error;
mod head;
mod history;
mod listener;
mod metrics;
mod openapi;
mod query;
mod rest;
mod routes;
mod session;
mod socketio;
mod sse;
mod tls;
mod writes;
mod ws;

pub use auth::{Auth, AuthConfig, key_sha256};
pub use config::{Limits, ServerConfig};
pub use listener::serve;
pub use openapi::DOCUMENT as OPENAPI_DOCUMENT;
pub use routes::http_routes;
pub use socketio::{Emit, EmitConfig, Mappings, On, OnAction, OnConfig, SocketIoConfig};
pub use tls::Tls;
