//! WebSocket framing on the write side, the transport's whole job there: frames encoded
//! here (unmasked, as RFC 6455 has servers send them, and stateless), a batch written with
//! one `write` ([`Writer`]), and, over plain TCP, a lone change written by the hub's
//! publisher itself ([`TcpWrite`], a [`DirectWrite`]). Writing frames directly saves
//! tungstenite's write buffer, a lock shared by reader and writer, and a copy per message.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use statecast_core::{Client, DirectWrite, DirectWritten, Frame, Kind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use super::socket::WriteSide;
use crate::app::App;
use crate::metrics::Metrics;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
pub(super) const OP_PONG: u8 = 0xA;

/// The write half of a plain TCP connection, written with non-blocking writes from the
/// connection's task and, through [`DirectWrite`], from the hub's publisher.
pub(super) struct TcpWrite {
    pub(super) write: OwnedWriteHalf,
    pub(super) app: Arc<App>,
}

/// Messages up to this size are framed on the stack and sent with one `send`, which
/// costs less than a `writev` of header and message.
const DIRECT_STACK: usize = 2048;

impl DirectWrite for TcpWrite {
    fn try_write(&self, message: &[u8]) -> DirectWritten {
        let (header, header_len) = frame_header(OP_TEXT, message.len());
        let header = &header[..header_len];
        let total = header.len() + message.len();
        // Straight to the non-blocking socket, past tokio's readiness bookkeeping: a
        // refused write just leaves the message to the task, which waits properly.
        let socket = socket2::SockRef::from(self.write.as_ref());
        let mut framed = [0; DIRECT_STACK];
        let written = if total <= DIRECT_STACK {
            framed[..header.len()].copy_from_slice(header);
            framed[header.len()..total].copy_from_slice(message);
            socket.send(&framed[..total])
        } else {
            socket.send_vectored(&[IoSlice::new(header), IoSlice::new(message)])
        };
        let written = match written {
            Ok(0) | Err(_) => return DirectWritten::Nothing,
            Ok(n) => n,
        };
        let metrics = &self.app.metrics;
        Metrics::add(&metrics.messages_out, 1);
        Metrics::add(&metrics.bytes_out, message.len() as u64);
        Metrics::add(&metrics.socket_writes, 1);
        if written == total {
            return DirectWritten::All;
        }
        let rest: Vec<u8> = header
            .iter()
            .chain(message)
            .skip(written)
            .copied()
            .collect();
        DirectWritten::Part(Bytes::from(rest))
    }
}

/// The write half: server frames, encoded here (unmasked, as RFC 6455 has servers send
/// them) and written a batch at a time.
pub(super) struct Writer(pub(super) WriteSide);

impl Writer {
    /// Writes the hub's messages as text frames (and the heartbeat's ping) in one `write`.
    pub(super) async fn batch(&mut self, app: &App, frames: &[Frame]) -> io::Result<()> {
        let size: usize = frames.iter().map(|f| f.bytes.len() + 10).sum();
        let mut out = Vec::with_capacity(size);
        let (mut bytes, mut messages) = (0, 0);
        for frame in frames {
            match frame.kind {
                Kind::Framed => {
                    out.extend_from_slice(&frame.bytes);
                    continue;
                }
                Kind::Ping => {
                    encode(&mut out, OP_PING, &[]);
                    continue;
                }
                _ => {}
            }
            // The hub's messages are serde_json output or built from it: valid UTF-8.
            encode(&mut out, OP_TEXT, &frame.bytes);
            bytes += frame.bytes.len();
            messages += 1;
        }
        self.write_all(&out).await?;
        Metrics::add(&app.metrics.messages_out, messages);
        Metrics::add(&app.metrics.bytes_out, bytes as u64);
        Metrics::add(&app.metrics.socket_writes, 1);
        Ok(())
    }

    /// Writes a close frame; the hub writes nothing more to the socket.
    pub(super) async fn close(
        &mut self,
        client: &Client,
        code: u16,
        reason: &str,
    ) -> io::Result<()> {
        // A frame the hub began must end before the close frame starts.
        let mut out = client.stop_direct().map_or_else(Vec::new, Vec::from);
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        encode(&mut out, OP_CLOSE, &payload);
        self.write_all(&out).await
    }

    async fn write_all(&mut self, mut out: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            // Shared with the hub's direct writes, so written through `&self`: try at
            // once, and wait only when the socket is full (polled: an awaited `writable()`
            // would put its waiter into every connection's future).
            WriteSide::Tcp(tcp) => {
                let stream: &TcpStream = tcp.write.as_ref();
                std::future::poll_fn(|cx| {
                    while !out.is_empty() {
                        match stream.try_write(out) {
                            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                            Ok(n) => out = &out[n..],
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                std::task::ready!(stream.poll_write_ready(cx))?;
                            }
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    Poll::Ready(Ok(()))
                })
                .await
            }
            WriteSide::Tls(tls) => {
                tls.write_all(out).await?;
                // TLS holds records until flushed.
                tls.flush().await
            }
        }
    }
}

/// Appends one final (unfragmented), unmasked frame.
pub(super) fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let (header, len) = frame_header(opcode, payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
}

/// The header of a final, unmasked frame, and its length.
fn frame_header(opcode: u8, payload_len: usize) -> ([u8; 10], usize) {
    let mut header = [0; 10];
    header[0] = 0x80 | opcode;
    let len = match payload_len {
        n if n < 126 => {
            header[1] = n as u8;
            2
        }
        n if n <= 0xFFFF => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        n => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    };
    (header, len)
}
