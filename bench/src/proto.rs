//! Engine.IO v4 / Socket.IO v5 text packets, just what the generator needs.
//!
//! Engine.IO packet types: `0` open, `1` close, `2` ping, `3` pong, `4` message, `6` noop.
//! A Socket.IO packet rides in an Engine.IO message: `4` + type (`0` connect,
//! `1` disconnect, `2` event, `3` ack, `4` connect_error) + optional namespace
//! (omitted for `/`) + optional ack id + JSON payload.

/// What one incoming Engine.IO text packet means to the generator.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{...}` handshake: the raw JSON.
    Open(&'a str),
    /// `2` / `2probe`: must be answered with `3` + the same data.
    Ping(&'a str),
    /// `40{...}`: namespace connected.
    Connect(&'a str),
    /// `44{...}`: namespace refused.
    ConnectError(&'a str),
    /// `42[...]` / `42<id>[...]`: an event; the JSON array of `[name, ...args]`.
    Event(&'a str),
    /// `43<id>[...]`: an ack for our emit `id`.
    Ack(u64, &'a str),
    /// `41` or Engine.IO `1`: the server closed us.
    Disconnect,
    /// Anything else (pong, noop, other namespaces, binary placeholders).
    Other,
}

/// Parses one Engine.IO text packet (one WebSocket text frame or one record of a
/// polling payload). Only namespace `/` is recognised as Socket.IO.
pub fn parse(s: &str) -> Packet<'_> {
    let b = s.as_bytes();
    match b.first() {
        Some(b'0') => Packet::Open(&s[1..]),
        Some(b'1') => Packet::Disconnect,
        Some(b'2') => Packet::Ping(&s[1..]),
        Some(b'4') => parse_sio(&s[1..]),
        _ => Packet::Other,
    }
}

fn parse_sio(s: &str) -> Packet<'_> {
    let b = s.as_bytes();
    let Some(&ty) = b.first() else {
        return Packet::Other;
    };
    let rest = &s[1..];
    // A namespace other than "/" starts with '/'; we only speak "/".
    if rest.starts_with('/') {
        return Packet::Other;
    }
    match ty {
        b'0' => Packet::Connect(rest),
        b'1' => Packet::Disconnect,
        b'4' => Packet::ConnectError(rest),
        b'2' => {
            let start = rest.find('[').unwrap_or(rest.len());
            Packet::Event(&rest[start..])
        }
        b'3' => {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            match rest[..digits].parse() {
                Ok(id) => Packet::Ack(id, &rest[digits..]),
                Err(_) => Packet::Other,
            }
        }
        _ => Packet::Other,
    }
}

/// The event name of an event payload `["name", ...]`, without unescaping
/// (event names used by the bench are plain ASCII).
pub fn event_name(payload: &str) -> Option<&str> {
    let rest = payload.strip_prefix("[\"")?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// Finds `"key":<digits>` anywhere in `s` and parses the digits. Cheap enough for
/// hundreds of thousands of broadcast messages a second, and indifferent to key
/// order (serde_json sorts keys, Node keeps insertion order).
pub fn scan_u64(s: &str, key: &str) -> Option<u64> {
    let b = s.as_bytes();
    let k = key.as_bytes();
    let mut from = 0;
    while let Some(pos) = find(&b[from..], k) {
        let at = from + pos;
        let before_ok = at > 0 && b[at - 1] == b'"';
        let after = at + k.len();
        if before_ok && b.get(after) == Some(&b'"') && b.get(after + 1) == Some(&b':') {
            let digits = &b[after + 2..];
            let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
            return std::str::from_utf8(&digits[..n]).ok()?.parse().ok();
        }
        from = at + 1;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `40` — connect to namespace `/` (no auth).
pub const CONNECT: &str = "40";
/// `41` — leave namespace `/`.
pub const DISCONNECT: &str = "41";
/// `3` — Engine.IO pong.
pub const PONG: &str = "3";

/// `42<id>["event",<args>]`, `args` being already-encoded JSON values separated by commas.
pub fn emit(event: &str, args: &str, ack_id: Option<u64>) -> String {
    let mut s = String::with_capacity(8 + event.len() + args.len());
    s.push_str("42");
    if let Some(id) = ack_id {
        s.push_str(&id.to_string());
    }
    s.push_str("[\"");
    s.push_str(event);
    s.push('"');
    if !args.is_empty() {
        s.push(',');
        s.push_str(args);
    }
    s.push(']');
    s
}

/// Encodes a string as a JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_packets() {
        assert_eq!(parse("0{\"sid\":\"x\"}"), Packet::Open("{\"sid\":\"x\"}"));
        assert_eq!(parse("2"), Packet::Ping(""));
        assert_eq!(
            parse("40{\"sid\":\"a\"}"),
            Packet::Connect("{\"sid\":\"a\"}")
        );
        assert_eq!(
            parse("44{\"message\":\"no\"}"),
            Packet::ConnectError("{\"message\":\"no\"}")
        );
        assert_eq!(parse("42[\"msg\",1]"), Packet::Event("[\"msg\",1]"));
        assert_eq!(parse("4212[\"msg\",1]"), Packet::Event("[\"msg\",1]"));
        assert_eq!(parse("4317[\"hi\"]"), Packet::Ack(17, "[\"hi\"]"));
        assert_eq!(parse("41"), Packet::Disconnect);
        assert_eq!(parse("1"), Packet::Disconnect);
        assert_eq!(parse("42/admin,[\"x\"]"), Packet::Other);
        assert_eq!(parse("6"), Packet::Other);
    }

    #[test]
    fn scans_numbers_in_any_key_order() {
        let a = r#"["msg",{"room":"bench","seq":42,"t":123456}]"#;
        let b = r#"["msg",{"t":99,"seq":7,"room":"seqt"}]"#;
        assert_eq!(scan_u64(a, "seq"), Some(42));
        assert_eq!(scan_u64(a, "t"), Some(123456));
        assert_eq!(scan_u64(b, "seq"), Some(7));
        assert_eq!(scan_u64(b, "t"), Some(99));
        assert_eq!(scan_u64(b, "nope"), None);
        assert_eq!(event_name(a), Some("msg"));
    }

    #[test]
    fn encodes_emits() {
        assert_eq!(emit("echo", "\"x\"", Some(3)), "423[\"echo\",\"x\"]");
        assert_eq!(emit("pub", "", None), "42[\"pub\"]");
        assert_eq!(json_str("a\"b"), "\"a\\\"b\"");
    }
}
