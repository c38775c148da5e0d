//! The stream's and the sessions' formats (those of @socket.io/redis-streams-adapter).

use super::*;

pub(super) type Id = (u64, u64);

pub(super) fn parse_id(s: &str) -> Option<Id> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

pub(super) fn encode_session(rec: &SessionRecord) -> String {
    let v = serde_json::to_value(rec).unwrap_or(Value::Null);
    base64::engine::general_purpose::STANDARD.encode(msgpack::encode(&msgpack::to_mp(&v, &[])))
}

pub(super) fn decode_session(s: &str) -> Option<SessionRecord> {
    let raw = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    let v = msgpack::from_mp(&msgpack::decode(&raw)?, &mut Vec::new());
    serde_json::from_value(v).ok()
}

/// `(id, fields)` of each entry in an XRANGE-style reply.
pub(super) fn entries(v: &RValue) -> Vec<(String, HashMap<String, String>)> {
    let RValue::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| {
            let RValue::Array(pair) = e else { return None };
            let id: String = redis::from_redis_value(pair.first()?.clone()).ok()?;
            let kv: Vec<String> = redis::from_redis_value(pair.get(1)?.clone()).ok()?;
            let fields = kv
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// A decoded broadcast entry: the packet and its options.
pub(super) fn decode_broadcast(
    f: &HashMap<String, String>,
) -> Option<(EventPacket, BroadcastOptions)> {
    let raw = f.get("data")?;
    let data: Value = if raw.starts_with('{') {
        serde_json::from_str(raw).ok()?
    } else {
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        let mp = msgpack::decode(&bytes)?;
        let mut bins = Vec::new();
        let opts = msgpack::from_mp(msgpack::get(&mp, "opts")?, &mut bins);
        let pk = msgpack::get(&mp, "packet")?;
        let (event, d) = msgpack::event_from_mp(msgpack::get(pk, "data")?)?;
        let o = options(&opts)?;
        return Some((EventPacket { event, data: d }, o));
    };
    if data.get("requestId").is_some() {
        return None;
    }
    let arr = data.get("packet")?.get("data")?.as_array()?;
    let event = match arr.first()? {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let packet = EventPacket {
        event,
        data: Data::new(arr[1..].to_vec()),
    };
    Some((packet, options(data.get("opts")?)?))
}

pub(super) fn options(v: &Value) -> Option<BroadcastOptions> {
    let rooms = |k: &str| -> Vec<Room> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(Room::from).collect())
            .unwrap_or_default()
    };
    let mut o = BroadcastOptions {
        rooms: rooms("rooms"),
        except: rooms("except"),
        ..Default::default()
    };
    o.flags.volatile = v
        .pointer("/flags/volatile")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some(o)
}
