//! A lean WebSocket client data path: the opening handshake and frame I/O straight
//! on a tokio `TcpStream`, with tungstenite's header codec and key helpers.
//!
//! Why not `tokio_tungstenite::WebSocketStream` for the data path: on this kind of
//! machine it cost ~19 µs of generator CPU per received broadcast message (an
//! eagerly zeroed read buffer per read, waker juggling, two reads per wake-up);
//! this path reads into uninitialised spare capacity and clears readiness after a
//! short read, so one wake-up costs one `recv`. `--ws tungstenite` keeps the
//! tokio-tungstenite path to cross-check results.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BytesMut};
use std::io::{self, Cursor};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

const READ_CHUNK: usize = 4096;
const MAX_MESSAGE: usize = 64 << 20;

/// What a read produced.
pub enum WsMsg {
    Text(String),
    Close,
}

pub struct LeanWs {
    stream: TcpStream,
    buf: BytesMut,
    /// Payload of a fragmented text message being reassembled.
    partial: Option<Vec<u8>>,
    out: Vec<u8>,
    rng: u64,
}

impl LeanWs {
    /// HTTP/1.1 upgrade on an open TCP stream. `host` is the Host header,
    /// `path_query` e.g. `/socket.io/?EIO=4&transport=websocket`.
    pub async fn handshake(mut stream: TcpStream, host: &str, path_query: &str) -> Result<LeanWs> {
        let key = generate_key();
        let req = format!(
            "GET {path_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut ws = LeanWs {
            stream,
            buf: BytesMut::with_capacity(1024),
            partial: None,
            out: Vec::with_capacity(128),
            rng: seed(),
        };
        let end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if ws.buf.len() > 16 * 1024 {
                bail!("oversized handshake response");
            }
            if ws.fill().await? == 0 {
                bail!("connection closed during the websocket handshake");
            }
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
        ws.buf.advance(end);
        let status = head.lines().next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            bail!("websocket upgrade refused: {status}");
        }
        let expected = derive_accept_key(key.as_bytes());
        let accept_ok = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expected
            })
        });
        if !accept_ok {
            bail!("bad Sec-WebSocket-Accept in the upgrade response");
        }
        Ok(ws)
    }

    /// Reads once into the buffer's spare capacity; 0 means end of stream. After a
    /// short read the socket is drained, so readiness is cleared right away
    /// instead of paying a second `recv` for `EAGAIN`.
    async fn fill(&mut self) -> io::Result<usize> {
        loop {
            self.stream.readable().await?;
            self.buf.reserve(READ_CHUNK);
            let spare = self.buf.capacity() - self.buf.len();
            let mut got = 0;
            let (stream, buf) = (&self.stream, &mut self.buf);
            let res = stream.try_io(Interest::READABLE, || {
                let n = stream.try_read_buf(buf)?;
                got = n;
                if n == 0 || n == spare {
                    Ok(n)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            });
            match res {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got > 0 {
                        return Ok(got);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Next text message (pings answered, pongs and binary frames skipped),
    /// or `Close`. Cancel-safe: partial frames stay in the buffer.
    pub async fn recv(&mut self) -> Result<WsMsg> {
        loop {
            while let Some((header, len, hdr_len)) = self.parse_header()? {
                let total = hdr_len + len;
                if self.buf.len() < total {
                    break;
                }
                self.buf.advance(hdr_len);
                let mut payload = self.buf.split_to(len);
                if let Some(mask) = header.mask {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= mask[i & 3];
                    }
                }
                match header.opcode {
                    OpCode::Data(Data::Text) if header.is_final => {
                        return Ok(WsMsg::Text(
                            String::from_utf8(payload.to_vec()).context("text frame not UTF-8")?,
                        ));
                    }
                    OpCode::Data(Data::Text) => self.partial = Some(payload.to_vec()),
                    OpCode::Data(Data::Continue) => {
                        if let Some(p) = self.partial.as_mut() {
                            p.extend_from_slice(&payload);
                            if p.len() > MAX_MESSAGE {
                                bail!("message too large");
                            }
                        }
                        if header.is_final {
                            if let Some(p) = self.partial.take() {
                                return Ok(WsMsg::Text(
                                    String::from_utf8(p).context("text not UTF-8")?,
                                ));
                            }
                        }
                    }
                    OpCode::Control(Control::Ping) => self.send_frame(0xA, &payload).await?,
                    OpCode::Control(Control::Close) => {
                        let _ = self.send_frame(0x8, &payload).await;
                        return Ok(WsMsg::Close);
                    }
                    _ => {}
                }
            }
            if self.fill().await? == 0 {
                return Ok(WsMsg::Close);
            }
        }
    }

    fn parse_header(&self) -> Result<Option<(FrameHeader, usize, usize)>> {
        let mut cur = Cursor::new(&self.buf[..]);
        match FrameHeader::parse(&mut cur).map_err(|e| anyhow!("bad websocket frame: {e}"))? {
            None => Ok(None),
            Some((h, len)) => {
                if len as usize > MAX_MESSAGE {
                    bail!("frame too large ({len} bytes)");
                }
                Ok(Some((h, len as usize, cur.position() as usize)))
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    /// Writes one final, masked frame.
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let out = &mut self.out;
        out.clear();
        out.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // xorshift64: masking keys need not be secret here, only present.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mask = (self.rng as u32).to_ne_bytes();
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        self.stream.write_all(out).await?;
        Ok(())
    }

    /// Close handshake: send a close frame and wait for the server's (bounded by the caller).
    pub async fn close(&mut self) -> Result<()> {
        self.send_frame(0x8, &1000u16.to_be_bytes()).await?;
        while let Ok(WsMsg::Text(_)) = self.recv().await {}
        Ok(())
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) | 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A fake server: upgrade, then frames split across writes, a ping, a fragmented text.
    #[tokio::test(flavor = "current_thread")]
    async fn reads_frames_and_answers_pings() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).await.unwrap();
            let req = String::from_utf8_lossy(&req[..n]).to_string();
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .trim()
                .to_string();
            let accept = derive_accept_key(key.as_bytes());
            let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
            let mut all = resp.into_bytes();
            all.extend_from_slice(&[0x81, 2, b'4', b'0']); // text "40"
            all.extend_from_slice(&[0x89, 1, b'p']); // ping
            all.extend_from_slice(&[0x01, 1, b'a', 0x80, 2, b'b', b'c']); // fragmented "abc"
            let (a, b) = all.split_at(all.len() - 3);
            s.write_all(a).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b).await.unwrap();
            let mut pong = [0u8; 7];
            s.read_exact(&mut pong).await.unwrap();
            assert_eq!(pong[0], 0x8A);
            assert_eq!(pong[1], 0x81);
            assert_eq!(pong[6] ^ pong[2], b'p');
            s.write_all(&[0x88, 0]).await.unwrap();
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut ws = LeanWs::handshake(tcp, &addr.to_string(), "/x")
            .await
            .unwrap();
        assert!(matches!(ws.recv().await.unwrap(), WsMsg::Text(t) if t == "40"));
        assert!(matches!(ws.recv().await.unwrap(), WsMsg::Text(t) if t == "abc"));
        assert!(matches!(ws.recv().await.unwrap(), WsMsg::Close));
        server.await.unwrap();
    }
}
