//! Channel names and message shapes of `@socket.io/redis-adapter` 8.x (classic mode).
//!
//! Broadcasts: msgpack `[uid, packet, opts]` on `<key>#<nsp>#` (or `<key>#<nsp>#<room>#`
//! for exactly one room). Requests: JSON on `<key>-request#<nsp>#`, except BROADCAST
//! with acks, which is msgpack. Responses: on `<key>-response#<nsp>#` (or the
//! requester's own `<key>-response#<nsp>#<uid>#`), JSON except BROADCAST_ACK.
//! Skein adds `uid` to its responses (Node ignores unknown fields) so a requester can
//! name the nodes that did not answer.

use serde_json::Value;

pub const SOCKETS: u64 = 0;
pub const ALL_ROOMS: u64 = 1;
pub const REMOTE_JOIN: u64 = 2;
pub const REMOTE_LEAVE: u64 = 3;
pub const REMOTE_DISCONNECT: u64 = 4;
pub const REMOTE_FETCH: u64 = 5;
pub const SERVER_SIDE_EMIT: u64 = 6;
pub const BROADCAST: u64 = 7;
pub const BROADCAST_CLIENT_COUNT: u64 = 8;
pub const BROADCAST_ACK: u64 = 9;

/// The channels of one namespace.
#[derive(Debug, Clone)]
pub struct Channels {
    /// `<key>#<nsp>#`: broadcasts (subscribed as a pattern with `*`).
    pub broadcast: String,
    pub request: String,
    pub response: String,
    /// `<key>-response#<nsp>#<uid>#`.
    pub own_response: String,
}

impl Channels {
    pub fn new(key: &str, nsp: &str, uid: &str) -> Self {
        let response = format!("{key}-response#{nsp}#");
        Channels {
            broadcast: format!("{key}#{nsp}#"),
            request: format!("{key}-request#{nsp}#"),
            own_response: format!("{response}{uid}#"),
            response,
        }
    }

    /// The channel of a broadcast to `rooms`.
    pub fn broadcast_to(&self, rooms: &[impl AsRef<str>]) -> String {
        match rooms {
            [one] => format!("{}{}#", self.broadcast, one.as_ref()),
            _ => self.broadcast.clone(),
        }
    }
}

/// The namespace a channel belongs to, for routing: `<prefix><nsp>#...`.
pub fn nsp_of<'a>(channel: &'a str, key: &str) -> Option<&'a str> {
    let rest = channel
        .strip_prefix(key)?
        .trim_start_matches("-request")
        .trim_start_matches("-response");
    let rest = rest.strip_prefix('#')?;
    let end = rest.find('#')?;
    Some(&rest[..end])
}

/// Decodes a request or response: JSON when it starts with `{`, msgpack otherwise,
/// always as a JSON value (binaries of msgpack bodies become placeholders in `bins`).
pub fn decode_body(b: &[u8], bins: &mut Vec<bytes::Bytes>) -> Option<Value> {
    if b.first() == Some(&b'{') {
        serde_json::from_slice(b).ok()
    } else {
        crate::msgpack::decode(b).map(|v| crate::msgpack::from_mp(&v, bins))
    }
}

/// Room names as the reference sends them: strings, or numbers for numeric rooms.
pub fn rooms_of(v: Option<&Value>) -> Vec<skein::adapter::Room> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|r| match r {
                Value::String(s) => Some(s.as_str().into()),
                Value::Number(n) => Some(n.to_string().into()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_match_the_reference() {
        let c = Channels::new("socket.io", "/", "abc123");
        assert_eq!(c.broadcast, "socket.io#/#");
        assert_eq!(c.request, "socket.io-request#/#");
        assert_eq!(c.response, "socket.io-response#/#");
        assert_eq!(c.own_response, "socket.io-response#/#abc123#");
        assert_eq!(c.broadcast_to(&["room1"]), "socket.io#/#room1#");
        assert_eq!(c.broadcast_to(&["a", "b"]), "socket.io#/#");
        assert_eq!(nsp_of("socket.io#/chat#room#", "socket.io"), Some("/chat"));
        assert_eq!(nsp_of("socket.io-request#/#", "socket.io"), Some("/"));
        assert_eq!(
            nsp_of("socket.io-response#/x#uid#", "socket.io"),
            Some("/x")
        );
        assert_eq!(nsp_of("other#/#", "socket.io"), None);
    }
}
