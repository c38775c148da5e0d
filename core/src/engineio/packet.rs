//! Engine.IO v4 packets, and the pre-encoded [`Frame`] every outgoing packet becomes.
//!
//! Incoming packets are decoded from WebSocket messages or from a long-polling payload
//! (packets joined with `\x1e`, binary ones as `b` + base64).
//!
//! Outgoing packets are encoded once into a [`Frame`]: the bytes of a complete,
//! unmasked WebSocket frame whose payload is the Engine.IO packet. Server-to-client
//! WebSocket frames are never masked, so the same bytes are valid for every recipient:
//! a broadcast builds one `Frame` and each recipient's queue holds a reference to it.
//! Long-polling takes the payload part of the same bytes.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

/// The type digit of an Engine.IO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Upgrade = 5,
    Noop = 6,
}

impl PacketType {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }
}

/// A packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Open,
    Close,
    /// `2` or `2probe`.
    Ping(Bytes),
    /// `3` or `3probe`.
    Pong(Bytes),
    /// A text message (`4...`). The bytes are valid UTF-8.
    Message(Bytes),
    /// A binary message (a binary WebSocket frame, or `b<base64>` over polling).
    Binary(Bytes),
    Upgrade,
    Noop,
}

/// The client sent something that is not an Engine.IO packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("invalid base64 in binary packet")]
    Base64,
    #[error("packet is not valid UTF-8")]
    Utf8,
}

impl Packet {
    /// Decodes a text packet (a WebSocket text frame, or one polling payload part).
    pub fn decode_text(data: Bytes) -> Result<Packet, PacketError> {
        let first = *data.first().ok_or(PacketError::Empty)?;
        let rest = data.slice(1..);
        Ok(
            match PacketType::from_byte(first).ok_or(PacketError::UnknownType)? {
                PacketType::Open => Packet::Open,
                PacketType::Close => Packet::Close,
                PacketType::Ping => Packet::Ping(rest),
                PacketType::Pong => Packet::Pong(rest),
                PacketType::Message => Packet::Message(rest),
                PacketType::Upgrade => Packet::Upgrade,
                PacketType::Noop => Packet::Noop,
            },
        )
    }

    /// Decodes a long-polling payload: packets separated by `\x1e`.
    pub fn decode_payload(body: Bytes) -> impl Iterator<Item = Result<Packet, PacketError>> {
        let mut start = 0usize;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let end = body[start..]
                .iter()
                .position(|b| *b == 0x1e)
                .map(|p| start + p)
                .unwrap_or_else(|| {
                    done = true;
                    body.len()
                });
            let part = body.slice(start..end);
            start = end + 1;
            Some(Self::decode_polling_part(part))
        })
    }

    fn decode_polling_part(part: Bytes) -> Result<Packet, PacketError> {
        if part.first() == Some(&b'b') {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&part[1..])
                .map_err(|_| PacketError::Base64)?;
            return Ok(Packet::Binary(Bytes::from(raw)));
        }
        if std::str::from_utf8(&part).is_err() {
            return Err(PacketError::Utf8);
        }
        Self::decode_text(part)
    }
}

/// Room reserved in front of a frame's payload for the longest WebSocket header.
const MAX_WS_HEADER: usize = 10;

/// A pre-encoded outgoing packet: a whole unmasked WebSocket frame, shareable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// WebSocket header followed by the payload.
    buf: Bytes,
    header_len: u8,
    binary: bool,
}

impl Frame {
    /// Starts building a text frame whose payload begins with the packet type digit.
    pub fn builder(kind: PacketType) -> FrameBuilder {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_bytes(0, MAX_WS_HEADER);
        buf.put_u8(b'0' + kind as u8);
        FrameBuilder { buf, binary: false }
    }

    /// A text packet with an optional body, e.g. `2`, `3probe`, `0{...}`.
    pub fn text(kind: PacketType, data: &[u8]) -> Frame {
        let mut b = Self::builder(kind);
        b.buf.extend_from_slice(data);
        b.finish()
    }

    /// A binary message. Over WebSocket it is a binary frame with no type prefix.
    pub fn binary(data: &[u8]) -> Frame {
        let mut buf = BytesMut::with_capacity(MAX_WS_HEADER + data.len());
        buf.put_bytes(0, MAX_WS_HEADER);
        buf.extend_from_slice(data);
        FrameBuilder { buf, binary: true }.finish()
    }

    /// The complete WebSocket frame.
    pub fn ws_bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The WebSocket frame, taken out (no reference count touched).
    pub fn into_ws_bytes(self) -> Bytes {
        self.buf
    }

    /// The Engine.IO packet without the WebSocket header.
    pub fn payload(&self) -> &[u8] {
        &self.buf[self.header_len as usize..]
    }

    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Bytes this frame takes on the wire, for queue accounting.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends this packet to a long-polling payload (with the `\x1e` separator).
    pub fn write_polling(&self, out: &mut Vec<u8>) {
        if !out.is_empty() {
            out.push(0x1e);
        }
        if self.binary {
            out.push(b'b');
            let enc = base64::engine::general_purpose::STANDARD.encode(self.payload());
            out.extend_from_slice(enc.as_bytes());
        } else {
            out.extend_from_slice(self.payload());
        }
    }
}

/// Writes a frame's payload in place, then prepends the WebSocket header.
#[derive(Debug)]
pub struct FrameBuilder {
    buf: BytesMut,
    binary: bool,
}

impl FrameBuilder {
    /// The payload written so far can be extended through this buffer.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn finish(mut self) -> Frame {
        let len = self.buf.len() - MAX_WS_HEADER;
        let opcode: u8 = if self.binary { 0x2 } else { 0x1 };
        let mut hdr = [0u8; MAX_WS_HEADER];
        hdr[0] = 0x80 | opcode;
        let hlen = if len < 126 {
            hdr[1] = len as u8;
            2
        } else if len <= u16::MAX as usize {
            hdr[1] = 126;
            hdr[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            hdr[1] = 127;
            hdr[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        let start = MAX_WS_HEADER - hlen;
        self.buf[start..MAX_WS_HEADER].copy_from_slice(&hdr[..hlen]);
        let buf = self.buf.freeze().slice(start..);
        Frame {
            buf,
            header_len: hlen as u8,
            binary: self.binary,
        }
    }
}

impl std::io::Write for FrameBuilder {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_text_packets() {
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"2probe")),
            Ok(Packet::Ping(Bytes::from_static(b"probe")))
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"4hello")),
            Ok(Packet::Message(Bytes::from_static(b"hello")))
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"9")),
            Err(PacketError::UnknownType)
        );
        assert_eq!(Packet::decode_text(Bytes::new()), Err(PacketError::Empty));
    }

    #[test]
    fn decodes_payload() {
        let body = Bytes::from_static(b"4hello\x1ebAQID\x1e3");
        let v: Vec<_> = Packet::decode_payload(body).collect();
        assert_eq!(
            v,
            vec![
                Ok(Packet::Message(Bytes::from_static(b"hello"))),
                Ok(Packet::Binary(Bytes::from_static(&[1, 2, 3]))),
                Ok(Packet::Pong(Bytes::new())),
            ]
        );
        let bad: Vec<_> = Packet::decode_payload(Bytes::from_static(b"b!!")).collect();
        assert_eq!(bad, vec![Err(PacketError::Base64)]);
    }

    #[test]
    fn frame_headers() {
        let f = Frame::text(PacketType::Message, b"hi");
        assert_eq!(&f.ws_bytes()[..], b"\x81\x034hi");
        assert_eq!(f.payload(), b"4hi");
        let big = vec![b'a'; 300];
        let f = Frame::text(PacketType::Message, &big);
        assert_eq!(&f.ws_bytes()[..4], &[0x81, 126, 0x01, 0x2d]);
        let huge = vec![b'a'; 70_000];
        let f = Frame::binary(&huge);
        assert_eq!(f.ws_bytes()[0], 0x82);
        assert_eq!(f.ws_bytes()[1], 127);
        assert_eq!(f.payload().len(), 70_000);
        let mut out = Vec::new();
        Frame::text(PacketType::Ping, b"").write_polling(&mut out);
        Frame::binary(&[1, 2, 3]).write_polling(&mut out);
        assert_eq!(out, b"2\x1ebAQID");
    }
}
