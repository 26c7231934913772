//! A time limit on receiving a request's body, so that a client sending it one byte at a
//! time (or never) cannot hold a connection slot: hyper bounds the headers
//! (`header_read_timeout`, which also ends an idle keep-alive connection), this bounds the
//! body with the same `handshake_timeout_ms`, counted from when a handler first waits for it.
//! A request whose body ran out of time is answered 408 with the contract's JSON error and
//! the connection closed, whatever route it was for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use statecast_core::{ErrorCode, HubError};
use tokio::time::Sleep;

use crate::error::error_response;

/// `request` with its body limited to `limit`, and the flag that tells [`answer`] the limit
/// was hit.
pub(crate) fn limit(
    request: Request<Incoming>,
    limit: Duration,
) -> (Request<DeadlineBody>, Arc<AtomicBool>) {
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| DeadlineBody {
        inner,
        limit,
        deadline: None,
        timed_out: Arc::clone(&timed_out),
    });
    (request, timed_out)
}

/// The route's `response`, or 408 (and `Connection: close`) if the body ran out of time:
/// whatever the route made of the broken body, the reason is the time.
pub(crate) fn answer(
    response: Response<axum::body::Body>,
    timed_out: &AtomicBool,
) -> Response<axum::body::Body> {
    if !timed_out.load(Ordering::Relaxed) {
        return response;
    }
    let e = HubError::new(
        ErrorCode::Timeout,
        "the request body did not arrive in time (handshake_timeout_ms)",
    );
    let mut response = error_response(StatusCode::REQUEST_TIMEOUT, &e).into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// A request body that fails once it has taken longer than `limit` to arrive.
pub(crate) struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    /// Armed the first time the body is not there yet: most bodies arrive with their
    /// headers and never need a timer.
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

/// The error of a body that did not arrive in time.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let limit = this.limit;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
