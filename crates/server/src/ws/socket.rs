//! The upgraded socket's two halves: plain TCP (split without a lock, the write half
//! shared with the hub's direct writes) or TLS (split by tokio). tungstenite reads
//! frames from the read half; frames out are written on the write half (`frame.rs`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;

use super::frame::TcpWrite;
use crate::app::App;
use crate::head::HeadCheck;

/// Boxed: moved between the connection's stages, inline it would take room in each
/// (see `the_connection_future_stays_small`).
pub(super) type Reader = Box<WebSocketStream<ReadHalf>>;

/// The halves of an upgraded connection, and what hyper read past the request (usually
/// nothing), copied out so that hyper's buffer, which would otherwise live as long as the
/// connection, is freed.
pub(super) fn split(
    upgraded: hyper::upgrade::Upgraded,
    app: &Arc<App>,
) -> Option<(ReadSide, WriteSide, Vec<u8>)> {
    // The accept loop hands hyper its streams through `head::HeadCheck`; what hyper had
    // read but not used comes first, then what the check held that hyper had not read yet.
    let early = |read_buf: &[u8], unread: Vec<u8>| [read_buf, &unread].concat();
    match upgraded.downcast::<TokioIo<HeadCheck<TcpStream>>>() {
        Ok(parts) => {
            let (tcp, unread) = parts.io.into_inner().into_parts();
            let (read, write) = tcp.into_split();
            let write = Arc::new(TcpWrite {
                write,
                app: Arc::clone(app),
            });
            Some((
                ReadSide::Tcp(read),
                WriteSide::Tcp(write),
                early(&parts.read_buf, unread),
            ))
        }
        Err(upgraded) => match upgraded.downcast::<TokioIo<HeadCheck<TlsStream<TcpStream>>>>() {
            Ok(parts) => {
                let (tls, unread) = parts.io.into_inner().into_parts();
                let (read, write) = tokio::io::split(tls);
                Some((
                    ReadSide::Tls(read),
                    WriteSide::Tls(write),
                    early(&parts.read_buf, unread),
                ))
            }
            Err(_) => None,
        },
    }
}

/// The read half of the socket as tungstenite's stream. tungstenite also writes (its
/// automatic answers to pings and closes); those writes are dropped here, because the
/// connection answers on the write half itself.
pub(super) struct ReadHalf(pub(super) ReadSide);

/// The socket's two halves: plain TCP (split without a lock) or TLS (split by tokio).
pub(super) enum ReadSide {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

pub(super) enum WriteSide {
    /// Shared with the hub, which writes lone changes to an idle connection itself.
    Tcp(Arc<TcpWrite>),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            ReadSide::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
