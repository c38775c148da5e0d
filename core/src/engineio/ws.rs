//! The WebSocket wire format (RFC 6455), server side: the opening handshake key, and a
//! decoder for the masked frames clients send.
//!
//! Outgoing frames are built by [`super::packet::Frame`]; only control frames (pong,
//! close) are built here. No extension is negotiated, so RSV bits must be zero.

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum WsMessage {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close,
}

/// Why the connection must be closed, with its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message too big")]
    TooBig,
    #[error("invalid UTF-8 in text message")]
    BadUtf8,
}

impl WsError {
    pub fn close_code(self) -> u16 {
        match self {
            Self::Protocol(_) => 1002,
            Self::TooBig => 1009,
            Self::BadUtf8 => 1007,
        }
    }
}

/// Reassembles client frames into messages, enforcing the size limit.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Opcode and data of a fragmented message in progress.
    partial: Option<(u8, BytesMut)>,
}

impl Decoder {
    /// Decodes the next message from `buf`, consuming what it used. `Ok(None)`: more
    /// bytes are needed; `need` is then set to the total length the frame requires, so
    /// the reader can size its buffer.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
        need: &mut usize,
    ) -> Result<Option<WsMessage>, WsError> {
        loop {
            if buf.len() < 2 {
                *need = 2;
                return Ok(None);
            }
            let b0 = buf[0];
            let b1 = buf[1];
            let fin = b0 & 0x80 != 0;
            if b0 & 0x70 != 0 {
                return Err(WsError::Protocol("reserved bits set"));
            }
            let opcode = b0 & 0x0f;
            if b1 & 0x80 == 0 {
                return Err(WsError::Protocol("client frame not masked"));
            }
            let (len, hlen) = match b1 & 0x7f {
                126 => {
                    if buf.len() < 4 {
                        *need = 4;
                        return Ok(None);
                    }
                    (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
                }
                127 => {
                    if buf.len() < 10 {
                        *need = 10;
                        return Ok(None);
                    }
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(a), 10)
                }
                n => (n as u64, 2),
            };
            let is_control = opcode & 0x08 != 0;
            if is_control && (len > 125 || !fin) {
                return Err(WsError::Protocol("bad control frame"));
            }
            let so_far = self.partial.as_ref().map_or(0, |(_, d)| d.len()) as u64;
            if !is_control && len + so_far > max as u64 {
                return Err(WsError::TooBig);
            }
            let total = hlen + 4 + len as usize;
            if buf.len() < total {
                *need = total;
                return Ok(None);
            }
            let mut mask = [0u8; 4];
            mask.copy_from_slice(&buf[hlen..hlen + 4]);
            buf.advance(hlen + 4);
            let mut data = buf.split_to(len as usize);
            unmask(&mut data, mask);
            match opcode {
                0x0 => {
                    let Some((op, mut acc)) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without start"));
                    };
                    acc.extend_from_slice(&data);
                    if fin {
                        return finish(op, acc.freeze()).map(Some);
                    }
                    self.partial = Some((op, acc));
                }
                0x1 | 0x2 => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol("new message inside fragmented one"));
                    }
                    if fin {
                        return finish(opcode, data.freeze()).map(Some);
                    }
                    self.partial = Some((opcode, data));
                }
                0x8 => return Ok(Some(WsMessage::Close)),
                0x9 => return Ok(Some(WsMessage::Ping(data.freeze()))),
                0xA => return Ok(Some(WsMessage::Pong)),
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
        }
    }
}

fn finish(opcode: u8, data: Bytes) -> Result<WsMessage, WsError> {
    if opcode == 0x1 {
        if std::str::from_utf8(&data).is_err() {
            return Err(WsError::BadUtf8);
        }
        Ok(WsMessage::Text(data))
    } else {
        Ok(WsMessage::Binary(data))
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    // Word-at-a-time is what makes large messages cheap; the tail is done bytewise.
    let m = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    let done = data.len() - data.len() % 4;
    for (i, b) in data[done..].iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// A server control frame (unmasked).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(2 + payload.len());
    v.push(0x80 | opcode);
    v.push(payload.len().min(125) as u8);
    v.extend_from_slice(&payload[..payload.len().min(125)]);
    Bytes::from(v)
}

/// A close frame with a status code.
pub fn close_frame(code: u16) -> Bytes {
    control_frame(0x8, &code.to_be_bytes())
}

#[cfg(test)]
pub(crate) fn mask_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
    let n = payload.len();
    if n < 126 {
        v.push(0x80 | n as u8);
    } else if n <= 65535 {
        v.push(0x80 | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<WsMessage>, WsError> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = vec![];
        let mut need = 0;
        while let Some(m) = d.decode(&mut buf, max, &mut need)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn accept_key_matches_rfc() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn decodes_masked_and_fragmented() {
        let mut bytes = mask_frame(0x1, true, b"4hello");
        bytes.extend(mask_frame(0x2, false, b"ab"));
        bytes.extend(mask_frame(0x9, true, b"p"));
        bytes.extend(mask_frame(0x0, true, b"cde"));
        let big = vec![7u8; 70_000];
        bytes.extend(mask_frame(0x2, true, &big));
        let msgs = decode_all(&bytes, 100_000).unwrap();
        assert_eq!(msgs[0], WsMessage::Text(Bytes::from_static(b"4hello")));
        assert_eq!(msgs[1], WsMessage::Ping(Bytes::from_static(b"p")));
        assert_eq!(msgs[2], WsMessage::Binary(Bytes::from_static(b"abcde")));
        assert_eq!(msgs[3], WsMessage::Binary(Bytes::from(big)));
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(
            decode_all(&mask_frame(0x1, true, &[0xff, 0xfe]), 100),
            Err(WsError::BadUtf8)
        );
        assert_eq!(
            decode_all(&mask_frame(0x2, true, &[0; 101]), 100),
            Err(WsError::TooBig)
        );
        assert_eq!(
            decode_all(&[0x81, 0x01, b'a'], 100),
            Err(WsError::Protocol("client frame not masked"))
        );
        assert!(decode_all(&mask_frame(0x0, true, b"x"), 100).is_err());
        assert!(decode_all(&mask_frame(0x3, true, b"x"), 100).is_err());
        assert!(decode_all(&mask_frame(0x9, false, b"x"), 100).is_err());
    }

    #[test]
    fn partial_input_asks_for_more() {
        let full = mask_frame(0x1, true, b"4abc");
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&full[..3]);
        let mut need = 0;
        assert_eq!(d.decode(&mut buf, 100, &mut need), Ok(None));
        assert_eq!(need, full.len());
    }
}
