//! The Socket.IO v5 packet codec, following socket.io-parser 4.x.
//!
//! Text form: `<type>[<attachments>-][<nsp>,][<id>][<json>]`, where the namespace is
//! omitted for `/`. Binary events and acks are followed by their attachments, one binary
//! Engine.IO message each.

use serde_json::Value;

use super::data::{placeholders_valid, Data};
use crate::engineio::{Frame, FrameBuilder, PacketType as EioType};

/// The type digit of a Socket.IO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketKind {
    fn from_digit(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A decoded packet, before its attachments (if any) arrive.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketKind,
    pub nsp: String,
    pub id: Option<u64>,
    pub data: Option<Value>,
    pub attachments: usize,
}

/// Why a packet was refused; any of these closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown packet type")]
    UnknownType,
    #[error("illegal attachments")]
    IllegalAttachments,
    #[error("invalid payload")]
    InvalidPayload,
    #[error("invalid ack id")]
    InvalidId,
    #[error("binary data while no packet expects attachments")]
    UnexpectedBinary,
    #[error("text packet while attachments are expected")]
    UnexpectedText,
    #[error("attachments of one packet over max_payload bytes")]
    AttachmentsTooLarge,
}

/// Event names reserved by Socket.IO: clients may not send them, servers may not emit them.
pub const RESERVED: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Whether `event` is one of the [`RESERVED`] names.
pub fn is_reserved(event: &str) -> bool {
    RESERVED.contains(&event)
}

/// An event name as the parser allows it: a string, or a number.
pub fn event_name(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The most attachments one packet may announce; each is a message of up to
/// `maxPayload`, so this bounds what a client can make the server hold.
pub const MAX_ATTACHMENTS: usize = 1000;

impl Packet {
    /// Decodes the text part of a packet.
    pub fn decode(s: &str) -> Result<Packet, DecodeError> {
        let b = s.as_bytes();
        // As the reference (`Number("") === 0`), an empty message is a CONNECT to "/".
        let kind = match b.first() {
            None => PacketKind::Connect,
            Some(c) => PacketKind::from_digit(*c).ok_or(DecodeError::UnknownType)?,
        };
        let mut i = 1.min(b.len());
        let mut attachments = 0;
        if kind.is_binary() {
            let dash = b[i..]
                .iter()
                .position(|c| *c == b'-')
                .ok_or(DecodeError::IllegalAttachments)?;
            attachments = s[i..i + dash]
                .parse::<usize>()
                .map_err(|_| DecodeError::IllegalAttachments)?;
            if attachments > MAX_ATTACHMENTS {
                return Err(DecodeError::IllegalAttachments);
            }
            i += dash + 1;
        }
        let mut nsp = String::from("/");
        if b.get(i) == Some(&b'/') {
            let end = b[i..].iter().position(|c| *c == b',').map(|p| i + p);
            match end {
                Some(e) => {
                    nsp = s[i..e].to_owned();
                    i = e + 1;
                }
                None => {
                    nsp = s[i..].to_owned();
                    i = b.len();
                }
            }
        }
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let id = if digits > 0 {
            let id = s[i..i + digits]
                .parse::<u64>()
                .map_err(|_| DecodeError::InvalidId)?;
            i += digits;
            Some(id)
        } else {
            None
        };
        let data = if i < b.len() {
            let v: Value =
                serde_json::from_str(&s[i..]).map_err(|_| DecodeError::InvalidPayload)?;
            if !payload_valid(kind, &v) {
                return Err(DecodeError::InvalidPayload);
            }
            Some(v)
        } else {
            None
        };
        Ok(Packet {
            kind,
            nsp,
            id,
            data,
            attachments,
        })
    }

    /// For an event: its name and arguments (attachments are added by the caller).
    pub fn into_event(self) -> Option<(String, Vec<Value>)> {
        let Some(Value::Array(mut a)) = self.data else {
            return None;
        };
        if a.is_empty() {
            return None;
        }
        let name = event_name(a.remove(0))?;
        Some((name, a))
    }

    /// Checks the placeholders once all `bins` attachments are in.
    pub fn attachments_valid(&self, bins: usize) -> bool {
        self.data
            .as_ref()
            .is_none_or(|d| placeholders_valid(d, bins))
    }
}

fn payload_valid(kind: PacketKind, v: &Value) -> bool {
    match kind {
        PacketKind::Connect => v.is_object(),
        PacketKind::Disconnect => false,
        PacketKind::ConnectError => v.is_string() || v.is_object(),
        PacketKind::Event | PacketKind::BinaryEvent => match v.as_array().and_then(|a| a.first()) {
            Some(Value::Number(_)) => true,
            Some(Value::String(s)) => !is_reserved(s),
            _ => false,
        },
        PacketKind::Ack | PacketKind::BinaryAck => v.is_array(),
    }
}

/// An encoded packet: its text frame and one frame per attachment, all shareable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub text: Frame,
    pub binary: Vec<Frame>,
}

fn header(kind: PacketKind, attachments: usize, nsp: &str, id: Option<u64>) -> FrameBuilder {
    let mut f = Frame::builder(EioType::Message);
    let b = f.buf();
    b.extend_from_slice(&[b'0' + kind as u8]);
    if attachments > 0 {
        b.extend_from_slice(attachments.to_string().as_bytes());
        b.extend_from_slice(b"-");
    }
    if nsp != "/" {
        b.extend_from_slice(nsp.as_bytes());
        b.extend_from_slice(b",");
    }
    if let Some(id) = id {
        b.extend_from_slice(id.to_string().as_bytes());
    }
    f
}

/// Encodes a packet whose data is a plain JSON value (CONNECT, CONNECT_ERROR, DISCONNECT).
pub fn encode_control(kind: PacketKind, nsp: &str, data: Option<&Value>) -> Frame {
    let mut f = header(kind, 0, nsp, None);
    if let Some(d) = data {
        write_json(&mut f, d);
    }
    f.finish()
}

/// Writes JSON into a frame; serializing a `Value` into memory cannot fail.
fn write_json(f: &mut FrameBuilder, v: &(impl serde::Serialize + ?Sized)) {
    let _ = serde_json::to_writer(f, v);
}

fn encode_array(mut f: FrameBuilder, first: Option<&str>, data: &Data) -> Encoded {
    f.buf().extend_from_slice(b"[");
    if let Some(ev) = first {
        write_json(&mut f, ev);
    }
    for (n, a) in data.args.iter().enumerate() {
        if n > 0 || first.is_some() {
            f.buf().extend_from_slice(b",");
        }
        write_json(&mut f, a);
    }
    f.buf().extend_from_slice(b"]");
    Encoded {
        text: f.finish(),
        binary: data.binary.iter().map(|b| Frame::binary(b)).collect(),
    }
}

/// Encodes an event `[event, ...args]`, with an ack id when the sender waits for one.
pub fn encode_event(nsp: &str, event: &str, data: &Data, id: Option<u64>) -> Encoded {
    let kind = if data.binary.is_empty() {
        PacketKind::Event
    } else {
        PacketKind::BinaryEvent
    };
    encode_array(header(kind, data.binary.len(), nsp, id), Some(event), data)
}

/// Encodes an ack `[...args]` for ack id `id`.
pub fn encode_ack(nsp: &str, id: u64, data: &Data) -> Encoded {
    let kind = if data.binary.is_empty() {
        PacketKind::Ack
    } else {
        PacketKind::BinaryAck
    };
    encode_array(header(kind, data.binary.len(), nsp, Some(id)), None, data)
}
