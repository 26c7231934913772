//! Every request head of an HTTP/1.1 connection, checked before hyper parses it, so that a
//! head hyper would refuse gets the contract's JSON error.
//!
//! Why here: hyper answers a head it cannot parse (a raw 0xFF in the request line, a
//! header name with a space, an unknown version) itself, with an empty 400 and no hook to
//! change it, before any route or layer runs. So the accept loop puts [`HeadCheck`]
//! between the socket and hyper. It holds back each head until it is whole and checks it
//! with the parser hyper uses (httparse, with hyper's settings, and the `http` crate's
//! method and URI rules); an accepted head goes to hyper unchanged. A refused one never
//! reaches hyper: in its place hyper reads a stand-in request (and nothing after it),
//! and the connection's service, told by [`Refusals`], answers that request with
//! the JSON error (400, or 431 for a head too large) and `Connection: close`. Answers stay
//! in order, since hyper writes them; keep-alive and pipelined requests are covered too.
//!
//! To find where the next head begins, [`HeadCheck`] follows the simple framings: no body,
//! or one `Content-Length`. Where a request makes the rest of the stream anything else (a
//! chunked body, `Expect`, an upgrade such as a WebSocket, `CONNECT`), it stops checking
//! and passes the stream through: hyper alone reads what follows, as it did before, so this
//! can only ever refuse what hyper would have refused. A WebSocket takes the socket back
//! out of it (`ws/socket.rs`, [`HeadCheck::into_parts`]).
//!
//! The cost: each head is parsed twice (httparse takes well under a microsecond for a
//! usual one) and the request bytes pass through one copy; a connection holds a buffer
//! only while part of a head is waiting for the rest.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::{HeaderValue, Response, StatusCode, header};
use statecast_core::{ErrorCode, HubError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::error_response;

/// The most headers hyper takes in a request (its default); more is 431.
const MAX_HEADERS: usize = 100;
/// The largest head held back before refusing it (431), well inside hyper's buffer limit.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// What hyper reads in place of a refused head: a request the service answers with the
/// refusal (it is never routed); nothing comes after it.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";

/// What a connection's [`HeadCheck`] tells its service: which request (counted from 0)
/// stands in for a refused head, and the refusal.
#[derive(Default)]
pub(crate) struct Refusals {
    /// Heads handed to hyper so far, the stand-in included.
    heads: AtomicU64,
    /// Requests the service was called for so far.
    calls: AtomicU64,
    refused: Mutex<Option<(u64, StatusCode, HubError)>>,
}

impl Refusals {
    /// For each request the service is called for, in order: the JSON error to answer
    /// instead of routing it, when it is the stand-in for a refused head.
    pub(crate) fn answer(&self) -> Option<Response<axum::body::Body>> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let (_, status, e) = refused.as_ref().filter(|(index, ..)| *index == call)?;
        tracing::debug!("refused a request head: {}", e.message);
        let mut response = axum::response::IntoResponse::into_response(error_response(*status, e));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Some(response)
    }
}

/// Where the stream is, as far as finding the next head goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    /// A head (or the start of one) comes next.
    Head,
    /// This many body bytes of the current request come next.
    Body(u64),
    /// No more checking: everything passes through.
    Through,
    /// A head was refused: the stand-in was queued and nothing follows it.
    Refused,
}

/// The stream between the socket and hyper (see the module's doc).
pub(crate) struct HeadCheck<S> {
    inner: S,
    /// Bytes read from `inner` that hyper has not had: the first `ready` of them may go to
    /// it, the rest are a head not yet whole. Empty (and unallocated) most of the time.
    held: Vec<u8>,
    ready: usize,
    framing: Framing,
    refusals: Arc<Refusals>,
}

impl<S> HeadCheck<S> {
    pub(crate) fn new(inner: S, refusals: Arc<Refusals>) -> HeadCheck<S> {
        HeadCheck {
            inner,
            held: Vec::new(),
            ready: 0,
            framing: Framing::Head,
            refusals,
        }
    }

    /// The stream and the bytes read from it that hyper has not had (after an upgrade:
    /// what the client sent past its upgrade request, if hyper did not read it yet).
    pub(crate) fn into_parts(self) -> (S, Vec<u8>) {
        (self.inner, self.held)
    }

    /// Moves what the framing allows from the held bytes to the part hyper may have.
    fn advance(&mut self) {
        loop {
            let rest = &self.held[self.ready..];
            if rest.is_empty() {
                return;
            }
            match self.framing {
                Framing::Refused => return,
                Framing::Through => {
                    self.ready = self.held.len();
                    return;
                }
                Framing::Body(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    self.ready += n;
                    let left = left - n as u64;
                    self.framing = if left == 0 {
                        Framing::Head
                    } else {
                        Framing::Body(left)
                    };
                }
                Framing::Head => match check(rest) {
                    Verdict::Partial if rest.len() < MAX_HEAD_BYTES => return,
                    Verdict::Partial | Verdict::TooLarge => self.refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        ErrorCode::TooLarge,
                        "the request's head is too large (too many or too long headers)".into(),
                    ),
                    Verdict::Malformed(why) => self.refuse(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::BadRequest,
                        format!("the request's head is not valid HTTP/1.1: {why}"),
                    ),
                    Verdict::Valid { length, next } => {
                        self.ready += length;
                        self.refusals.heads.fetch_add(1, Ordering::Relaxed);
                        self.framing = next;
                    }
                },
            }
        }
    }

    /// Drops the refused head and all after it, and queues the stand-in in its place.
    fn refuse(&mut self, status: StatusCode, code: ErrorCode, message: String) {
        let index = self.refusals.heads.fetch_add(1, Ordering::Relaxed);
        *self
            .refusals
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner()) =
            Some((index, status, HubError::new(code, message)));
        self.held.truncate(self.ready);
        self.held.extend_from_slice(STAND_IN);
        self.ready = self.held.len();
        self.framing = Framing::Refused;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadCheck<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                this.ready -= n;
                if this.held.is_empty() {
                    // Idle connections keep no buffer.
                    this.held = Vec::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.framing == Framing::Through && this.held.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // On the stack, not in the connection: only held bytes take memory.
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            if this.framing == Framing::Refused {
                // After the stand-in, nothing more for hyper, not even the end of the stream
                // (at which hyper would drop the connection before answering): it answers
                // the stand-in with `Connection: close` and closes. Meanwhile what the
                // client still sends is read and dropped, so that the close is not a reset
                // that loses the answer.
                while Pin::new(&mut this.inner)
                    .poll_read(cx, &mut read)?
                    .is_ready()
                {
                    if read.filled().is_empty() {
                        return Poll::Pending;
                    }
                    read.clear();
                }
                return Poll::Pending;
            }
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The end of the stream: hyper gets what is held (a head cut short, which
                // it drops as it always did), then the end.
                this.framing = Framing::Through;
                this.ready = this.held.len();
                if this.ready == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.held.extend_from_slice(read.filled());
            this.advance();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadCheck<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the bytes held so far make of a request head.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// A head of `length` bytes, and where the stream is after it.
    Valid {
        length: usize,
        next: Framing,
    },
    Partial,
    TooLarge,
    Malformed(String),
}

/// Checks a head as hyper's HTTP/1 server would: httparse with hyper's default settings
/// (no extra spaces in the request line, no invalid header lines ignored), then the
/// method, the URI and the framing headers as hyper reads them.
fn check(bytes: &[u8]) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match httparse::ParserConfig::default().parse_request(&mut request, bytes) {
        Ok(httparse::Status::Partial) => return Verdict::Partial,
        Err(httparse::Error::TooManyHeaders) => return Verdict::TooLarge,
        Err(e) => return Verdict::Malformed(e.to_string()),
        Ok(httparse::Status::Complete(length)) => length,
    };
    let method = request.method.unwrap_or_default();
    if axum::http::Method::from_bytes(method.as_bytes()).is_err() {
        return Verdict::Malformed(format!("{method:?} is not a method"));
    }
    let path = request.path.unwrap_or_default();
    if let Err(e) = axum::http::Uri::try_from(path) {
        return Verdict::Malformed(format!("the request target: {e}"));
    }
    let mut content_length = None;
    // Anything but no body or one Content-Length: hyper alone reads on (see the module doc).
    let mut through = method.eq_ignore_ascii_case("CONNECT");
    for header in request.headers.iter() {
        if axum::http::HeaderName::from_bytes(header.name.as_bytes()).is_err() {
            return Verdict::Malformed(format!("{:?} is not a header name", header.name));
        }
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok();
            // Several values must agree, and each be digits only (as hyper reads them).
            for value in value.unwrap_or("").split(',').map(str::trim) {
                let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                match (
                    digits.then(|| value.parse::<u64>().ok()).flatten(),
                    content_length,
                ) {
                    (Some(n), None) => content_length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => return Verdict::Malformed("an invalid Content-Length".to_owned()),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked_last = std::str::from_utf8(header.value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            });
            if request.version == Some(0) || !chunked_last {
                return Verdict::Malformed(
                    "a Transfer-Encoding other than chunked last, or on HTTP/1.0".to_owned(),
                );
            }
            through = true;
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            through = true;
        }
    }
    let next = match content_length {
        _ if through => Framing::Through,
        Some(n) if n > 0 => Framing::Body(n),
        _ => Framing::Head,
    };
    Verdict::Valid { length, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `check` gives each of `heads` a verdict `expected` accepts.
    fn each_is(heads: &[&[u8]], expected: fn(&Verdict) -> bool) {
        for head in heads {
            assert!(
                expected(&check(head)),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn heads_hyper_takes_pass_and_those_it_refuses_do_not() {
        each_is(
            &[
                &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                b"\r\nGET /api/state?match=a%2F%23 HTTP/1.0\r\n\r\n",
                b"PUT /api/state/a/b HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n{}",
                b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            ],
            |v| matches!(v, Verdict::Valid { .. }),
        );
        for partial in [&b""[..], b"GET /", b"GET / HTTP/1.1\r\nHost: x\r\n"] {
            assert_eq!(check(partial), Verdict::Partial);
        }
        each_is(
            &[
                &b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                b"GET /a\x01b HTTP/1.1\r\n\r\n",
                b"GET / HTTP/9.9\r\n\r\n",
                b"G(T / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                b"PUT / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            ],
            |v| matches!(v, Verdict::Malformed(_)),
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: x\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(check(head.as_bytes()), Verdict::TooLarge);
    }

    /// What hyper reads of `input` through a [`HeadCheck`] (until the end of the stream, or
    /// until a read would wait: `ended` tells which), and the refusals it was told.
    async fn through_check(input: &[u8]) -> (Vec<u8>, bool, Arc<Refusals>) {
        use futures_util::FutureExt;
        use tokio::io::AsyncReadExt;
        let refusals = Arc::new(Refusals::default());
        let mut stream =
            HeadCheck::new(std::io::Cursor::new(input.to_vec()), Arc::clone(&refusals));
        let mut out = Vec::new();
        let mut chunk = [0u8; 1000];
        // The input is all there: only the check itself can make a read wait.
        let ended = loop {
            match stream.read(&mut chunk).now_or_never() {
                Some(Ok(0)) => break true,
                Some(Ok(n)) => out.extend_from_slice(&chunk[..n]),
                Some(Err(e)) => panic!("{e}"),
                None => break false,
            }
        };
        (out, ended, refusals)
    }

    #[tokio::test]
    async fn a_refused_head_after_good_requests_becomes_the_stand_in_for_its_request() {
        let good = b"GET /a HTTP/1.1\r\n\r\nPUT /b HTTP/1.1\r\nContent-Length: 6\r\n\r\nG\xffT /\n";
        let mut input = good.to_vec();
        input.extend_from_slice(b"GET /\xff HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n");
        let (out, ended, refusals) = through_check(&input).await;
        // The body that looks like a bad head is a body; what follows the bad head is gone,
        // and hyper is not told the stream ended (it would drop the connection unanswered).
        assert_eq!(out, [&good[..], STAND_IN].concat());
        assert!(!ended);
        assert!(refusals.answer().is_none());
        assert!(refusals.answer().is_none());
        let answer = refusals
            .answer()
            .expect("the third request is the stand-in");
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        assert_eq!(answer.headers()[header::CONNECTION], "close");
        assert!(refusals.answer().is_none());
    }

    #[tokio::test]
    async fn what_follows_a_chunked_body_or_an_upgrade_is_left_to_hyper() {
        for input in [
            &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n\xff\xff\xff\r\n0\r\n\r\nGET /\xff HTTP/1.1\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x85\xff\xff",
            b"PUT /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n1\xff",
        ] {
            let (out, ended, refusals) = through_check(input).await;
            assert_eq!(out, input);
            assert!(ended);
            assert!(refusals.answer().is_none());
        }
    }

    #[tokio::test]
    async fn a_head_cut_short_by_the_end_of_the_stream_goes_to_hyper_as_it_is() {
        let input = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nHos";
        let (out, ended, refusals) = through_check(input).await;
        assert_eq!((out.as_slice(), ended), (&input[..], true));
        refusals.answer();
        assert!(refusals.answer().is_none());
    }

    #[tokio::test]
    async fn a_head_too_large_is_refused_431() {
        let input = format!(
            "GET / HTTP/1.1\r\nx: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let (out, ended, refusals) = through_check(input.as_bytes()).await;
        assert_eq!((out.as_slice(), ended), (STAND_IN, false));
        let answer = refusals.answer().expect("refused");
        assert_eq!(answer.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
