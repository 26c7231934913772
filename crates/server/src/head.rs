//! The first request head of an HTTP/1.1 connection, read and checked before hyper parses
//! it, so that a head hyper would refuse gets the contract's JSON error.
//!
//! Why here: hyper answers a head it cannot parse (a raw 0xFF in the request line, a
//! header name with a space, an unknown version) itself, with an empty 400 and no hook to
//! change it, before any route or layer runs. So the accept loop reads the head first,
//! checks it with the parser hyper uses (httparse, with hyper's settings, and the `http`
//! crate's method and URI rules), answers a refused one itself with a JSON 400 (431 when
//! it is too large) and closes; an accepted head is handed to hyper unconsumed, through
//! [`Rewind`], which also goes on to a WebSocket upgrade (`ws/socket.rs` takes the stream
//! back out of it). The later requests of a keep-alive connection are hyper's alone:
//! finding where each begins would mean parsing every body as hyper does.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The most headers hyper takes in a request (its default); more is 431.
const MAX_HEADERS: usize = 100;
/// The largest head read before giving up on it (431), well inside hyper's buffer limit.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a refused connection is drained after its answer, so that what the client
/// still sends does not turn the close into a reset that loses the answer.
const DRAIN: Duration = Duration::from_secs(1);

/// What became of a connection's first request head.
pub(crate) enum Head<S> {
    /// A head hyper can parse, not consumed: hyper reads it from the stream.
    Accepted(Rewind<S>),
    /// Refused with the contract's JSON error, and closed.
    Refused,
    /// The client closed, or sent no whole head within the time limit: nothing to answer
    /// (hyper's header timer closes such connections the same way).
    Closed,
}

/// Reads `stream`'s first request head (within `limit`) and checks it.
pub(crate) async fn first<S>(mut stream: S, limit: Duration) -> Head<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // On the heap, not in the connection's future: that stays small.
    let mut head = Vec::with_capacity(1024);
    let verdict = tokio::time::timeout(limit, async {
        loop {
            match check(&head) {
                Verdict::Partial if head.len() < MAX_HEAD_BYTES => {}
                Verdict::Partial => return Some(Verdict::TooLarge),
                verdict => return Some(verdict),
            }
            head.reserve(4096);
            match stream.read_buf(&mut head).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    let (status, message) = match verdict {
        Ok(Some(Verdict::Valid)) => return Head::Accepted(Rewind::new(head, stream)),
        Ok(Some(Verdict::TooLarge)) => (
            "431 Request Header Fields Too Large",
            "the request's head is too large (too many or too long headers)".to_owned(),
        ),
        Ok(Some(Verdict::Malformed(why))) => (
            "400 Bad Request",
            format!("the request's head is not valid HTTP/1.1: {why}"),
        ),
        Ok(Some(Verdict::Partial) | None) | Err(_) => return Head::Closed,
    };
    tracing::debug!("refused a request head: {message}");
    let code = if status.starts_with("431") {
        "too_large"
    } else {
        "bad_request"
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(DRAIN, async {
        if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
            return;
        }
        let mut sink = head;
        loop {
            sink.clear();
            if !matches!(stream.read_buf(&mut sink).await, Ok(1..)) {
                break;
            }
        }
    })
    .await;
    Head::Refused
}

/// What the bytes read so far make of a request head.
#[derive(Debug, PartialEq)]
enum Verdict {
    Valid,
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
    match httparse::ParserConfig::default().parse_request(&mut request, bytes) {
        Ok(httparse::Status::Partial) => return Verdict::Partial,
        Err(httparse::Error::TooManyHeaders) => return Verdict::TooLarge,
        Err(e) => return Verdict::Malformed(e.to_string()),
        Ok(httparse::Status::Complete(_)) => {}
    }
    let method = request.method.unwrap_or_default();
    if axum::http::Method::from_bytes(method.as_bytes()).is_err() {
        return Verdict::Malformed(format!("{method:?} is not a method"));
    }
    let path = request.path.unwrap_or_default();
    if let Err(e) = axum::http::Uri::try_from(path) {
        return Verdict::Malformed(format!("the request target: {e}"));
    }
    let mut length = None;
    for header in request.headers.iter() {
        if axum::http::HeaderName::from_bytes(header.name.as_bytes()).is_err() {
            return Verdict::Malformed(format!("{:?} is not a header name", header.name));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok();
            // Several values must agree, and each be a length (as hyper reads them).
            for value in value.unwrap_or("x").split(',').map(str::trim) {
                match (value.parse::<u64>(), length) {
                    (Ok(n), None) => length = Some(n),
                    (Ok(n), Some(m)) if n == m => {}
                    _ => return Verdict::Malformed("an invalid Content-Length".to_owned()),
                }
            }
        }
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
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
        }
    }
    Verdict::Valid
}

/// A stream whose first bytes are `prefix` (a head already read), then the stream's own.
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S> Rewind<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind {
            prefix,
            read: 0,
            inner,
        }
    }

    /// The stream and what of the prefix was not read yet.
    pub(crate) fn into_parts(self) -> (S, Vec<u8>) {
        let unread = self.prefix[self.read..].to_vec();
        (self.inner, unread)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                // Read once: its memory goes back.
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_hyper_takes_pass_and_those_it_refuses_do_not() {
        for valid in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"\r\nGET /api/state?match=a%2F%23 HTTP/1.0\r\n\r\n",
            b"PUT /api/state/a/b HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n{}",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ] {
            assert_eq!(
                check(valid),
                Verdict::Valid,
                "{:?}",
                String::from_utf8_lossy(valid)
            );
        }
        for partial in [&b""[..], b"GET /", b"GET / HTTP/1.1\r\nHost: x\r\n"] {
            assert_eq!(check(partial), Verdict::Partial);
        }
        for malformed in [
            &b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /a\x01b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(check(malformed), Verdict::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(malformed)
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: x\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(check(head.as_bytes()), Verdict::TooLarge);
    }
}
