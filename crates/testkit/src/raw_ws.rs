//! A WebSocket over TCP whose handshake and frames are written by hand, for what
//! tungstenite will not do: invalid frames, fragments, silence.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wait::within;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A WebSocket whose handshake and frames are written by hand.
pub struct RawWs {
    pub tcp: TcpStream,
}

impl RawWs {
    /// Connects and upgrades `/ws` by hand (RFC 6455's sample key).
    pub async fn connect(addr: &str) -> RawWs {
        let mut tcp = within("a TCP connection", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .expect("write the upgrade");
        // Byte by byte, so nothing after the head (the welcome frame) is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = within("the upgrade response", tcp.read_u8())
                .await
                .expect("read the upgrade response");
            head.push(byte);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "upgrade refused: {head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "bad accept key: {head}"
        );
        RawWs { tcp }
    }

    /// Writes one final, masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.send_raw_frame(true, opcode, payload).await;
    }

    /// Writes one masked frame; `fin: false` starts or continues a fragmented message
    /// (opcode 0 for continuations).
    pub async fn send_raw_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.try_send_raw_frame(fin, opcode, payload)
            .await
            .expect("write a frame");
    }

    /// Like [`RawWs::send_raw_frame`], returning the write error (a reset connection).
    pub async fn try_send_raw_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= 0xffff {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await
    }

    /// Reads one frame as `(opcode, payload)`; `None` once the server has ended the
    /// connection (EOF or reset).
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        within("a frame from the server", async {
            let mut head = [0u8; 2];
            self.tcp.read_exact(&mut head).await.ok()?;
            let opcode = head[0] & 0x0f;
            let masked = head[1] & 0x80 != 0;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                len = u64::from(self.tcp.read_u16().await.ok()?);
            } else if len == 127 {
                len = self.tcp.read_u64().await.ok()?;
            }
            let mut mask = [0u8; 4];
            if masked {
                self.tcp.read_exact(&mut mask).await.ok()?;
            }
            let mut payload = vec![0u8; len as usize];
            self.tcp.read_exact(&mut payload).await.ok()?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            Some((opcode, payload))
        })
        .await
    }

    /// Reads until the connection ends: `Ok(frames read)` on a clean end of stream (FIN),
    /// `Err` when it breaks off (a reset, as when the server drops a socket with unread
    /// data).
    pub async fn read_to_end(&mut self) -> std::io::Result<usize> {
        let mut buffer = vec![0u8; 64 << 10];
        let mut bytes = 0;
        loop {
            let n = within("the end of the connection", self.tcp.read(&mut buffer)).await?;
            if n == 0 {
                return Ok(bytes);
            }
            bytes += n;
        }
    }

    /// Reads (skipping data, pings, pongs) until the server's close frame; returns its code,
    /// or `None` if the connection ended without one.
    pub async fn read_close_code(&mut self) -> Option<u16> {
        loop {
            let (opcode, payload) = self.read_frame().await?;
            if opcode == OP_CLOSE {
                assert!(payload.len() >= 2, "close frame without a code");
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }
}
