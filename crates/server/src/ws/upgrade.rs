//! The `/ws` handshake: the upgrade request checked (its key, origin and credential) and
//! answered, then the connection's task started on the upgraded socket.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use statecast_core::ErrorCode;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::frame::Writer;
use super::socket::{ReadHalf, split};
use crate::app::App;
use crate::auth::Grant;
use crate::error::ApiError;
use crate::listener::{Peer, Slot};
use crate::query;
use crate::session::Session;

/// Answers the upgrade request and runs the connection on its own task. The handshake is
/// done here, on hyper's upgrade, so the connection gets its `TcpStream` back: it writes
/// its own frames, and after a close for a bad frame it can drain what the client still
/// sends before closing (contract rule 5).
pub(crate) async fn upgrade(State(app): State<Arc<App>>, mut request: Request) -> Response {
    let key = match handshake_key(request.headers()) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let (peer, slot) = match request.extensions().get::<Peer>() {
        Some(Peer(addr, slot)) => (Some(*addr), Some(Arc::clone(slot))),
        None => (None, None),
    };
    if let Err(e) = app.check_origin(request.headers(), peer) {
        return ApiError(e).into_response();
    }
    // A token on the upgrade (header or `?token=`) must be valid; without one, the client
    // has `auth_timeout_ms` to send an `auth` message.
    let query_token = query::token(request.uri().query());
    let grant = match app
        .config
        .auth
        .grant(request.headers(), query_token.as_deref())
    {
        Ok(grant) => grant.map(Box::new),
        Err(e) => {
            app.refused(peer, &e);
            return ApiError(e).into_response();
        }
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return ApiError::new(ErrorCode::BadRequest, "this connection cannot be upgraded")
            .into_response();
    };
    tokio::spawn(upgraded(app, on_upgrade, (grant, slot)));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Client messages are small: a small read buffer (it grows for a large message) keeps
/// idle connections cheap; 384 bytes still takes a few pipelined writes per read. Built
/// after the upgrade, not carried into the connection's future, which it would enlarge.
fn websocket_config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(384)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// The task of one connection (see `the_connection_future_stays_small`): waits for the
/// upgrade, splits the socket and runs the connection.
pub(super) async fn upgraded(
    app: Arc<App>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    (grant, slot): (Option<Box<Grant>>, Option<Arc<Slot>>),
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!("websocket upgrade failed: {e}");
            return;
        }
    };
    let Some((read, write, early)) = split(upgraded, &app) else {
        tracing::error!("websocket upgrade on a connection of an unknown kind");
        return;
    };
    let reader = Box::new(
        WebSocketStream::from_partially_read(
            ReadHalf(read),
            early,
            Role::Server,
            Some(websocket_config(app.config.max_frame_bytes)),
        )
        .await,
    );
    let session = Session::new(&app, slot, grant);
    super::connection(app, reader, Writer(write), session).await;
}

/// The `Sec-WebSocket-Key` of a valid upgrade request.
fn handshake_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "/ws expects a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "missing Sec-WebSocket-Key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use statecast_bridge::Bridge;
    use statecast_core::{Hub, HubConfig, MemoryEngine};

    #[tokio::test]
    async fn the_connection_future_stays_small() {
        // Every open WebSocket is one of these, from the upgrade to the close: what is
        // rare or large in it is boxed (the reader, the write of a batch, the close
        // handshake, an auth deadline), so this is most of a connection's memory.
        let hub = Hub::open(MemoryEngine, HubConfig::default()).unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let app = Arc::new(App::new(
            hub,
            Arc::new(Bridge::empty()),
            ServerConfig::default(),
            stopped,
        ));
        let mut request = axum::http::Request::new(());
        let on_upgrade = hyper::upgrade::on(&mut request);
        let future = upgraded(app, on_upgrade, (None, None));
        let size = std::mem::size_of_val(&future);
        assert!(size <= LIMIT, "{size}");
    }

    /// 840 bytes with rustc 1.95 (968 while the WebSocket config was carried in it): room
    /// for a few more bytes, not for another buffer or a timer inline.
    const LIMIT: usize = 896;
}
