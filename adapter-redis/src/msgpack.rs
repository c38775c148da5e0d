//! The MessagePack dialect of notepack.io, which `@socket.io/redis-adapter` uses, and the
//! conversion between it and Skein's event arguments.
//!
//! On the wire a binary value is a msgpack `bin` in place; in Skein it is an attachment
//! pointed to by a `{"_placeholder":true,"num":N}` object. `undefined` is notepack's
//! fixext 1 of type 0 and reads as `null`; a timestamp extension reads as its ISO date.

use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value};
use skein::socketio::data::placeholder_num;
use skein::Data;

/// JSON (with placeholders into `bins`) to msgpack, binaries in place.
pub fn to_mp(v: &Value, bins: &[Bytes]) -> Mp {
    match v {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else {
                Mp::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(a) => Mp::Array(a.iter().map(|x| to_mp(x, bins)).collect()),
        Value::Object(o) => {
            if let Some(b) = placeholder_num(v).and_then(|n| bins.get(n)) {
                return Mp::Binary(b.to_vec());
            }
            Mp::Map(
                o.iter()
                    .map(|(k, x)| (Mp::from(k.as_str()), to_mp(x, bins)))
                    .collect(),
            )
        }
    }
}

/// msgpack to JSON, moving binaries into `bins` and leaving placeholders.
pub fn from_mp(v: &Mp, bins: &mut Vec<Bytes>) -> Value {
    match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(i) => {
            if let Some(u) = i.as_u64() {
                Value::from(u)
            } else {
                Value::from(i.as_i64().unwrap_or(0))
            }
        }
        Mp::F32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        Mp::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Mp::String(s) => Value::String(s.as_str().unwrap_or_default().to_owned()),
        Mp::Binary(b) => {
            bins.push(Bytes::copy_from_slice(b));
            skein::socketio::data::placeholder(bins.len() - 1)
        }
        Mp::Array(a) => Value::Array(a.iter().map(|x| from_mp(x, bins)).collect()),
        Mp::Map(m) => {
            let mut o = Map::new();
            for (k, x) in m {
                let key = match k {
                    Mp::String(s) => s.as_str().unwrap_or_default().to_owned(),
                    other => other.to_string(),
                };
                o.insert(key, from_mp(x, bins));
            }
            Value::Object(o)
        }
        // notepack: fixext 1 type 0 is `undefined`.
        Mp::Ext(0, _) => Value::Null,
        Mp::Ext(-1, raw) => timestamp(raw),
        Mp::Ext(_, _) => Value::Null,
    }
}

/// The msgpack timestamp extension, as the ISO string JavaScript's `Date` serializes to.
fn timestamp(raw: &[u8]) -> Value {
    let (secs, nanos): (i64, u32) = match raw.len() {
        4 => (
            i64::from(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]])),
            0,
        ),
        8 => {
            let v = u64::from_be_bytes(raw.try_into().unwrap_or([0; 8]));
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        12 => {
            let n = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let s = i64::from_be_bytes(raw[4..12].try_into().unwrap_or([0; 8]));
            (s, n)
        }
        _ => return Value::Null,
    };
    Value::from(secs * 1000 + i64::from(nanos / 1_000_000))
}

/// A map key lookup on a msgpack map.
pub fn get<'a>(m: &'a Mp, key: &str) -> Option<&'a Mp> {
    match m {
        Mp::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// `[event, ...args]` with binaries in place.
pub fn event_to_mp(event: &str, data: &Data) -> Mp {
    let mut a = Vec::with_capacity(1 + data.args.len());
    a.push(Mp::from(event));
    a.extend(data.args.iter().map(|v| to_mp(v, &data.binary)));
    Mp::Array(a)
}

/// Splits `[event, ...args]`; the event name may be a number, as the parser allows.
pub fn event_from_mp(v: &Mp) -> Option<(String, Data)> {
    let a = v.as_array()?;
    let name = match a.first()? {
        Mp::String(s) => s.as_str()?.to_owned(),
        Mp::Integer(i) => i.to_string(),
        Mp::F64(f) => f.to_string(),
        _ => return None,
    };
    let mut bins = Vec::new();
    let args = a[1..].iter().map(|x| from_mp(x, &mut bins)).collect();
    Some((name, Data { args, binary: bins }))
}

/// Encodes a msgpack value.
pub fn encode(v: &Mp) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// Decodes one msgpack value, refusing trailing garbage.
pub fn decode(mut b: &[u8]) -> Option<Mp> {
    let v = rmpv::decode::read_value(&mut b).ok()?;
    b.is_empty().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binaries_move_between_placeholders_and_bin() {
        let d = Data::new(vec![json!({"a": 1, "b": [true, null, 1.5, -3]})])
            .push_binary(Bytes::from_static(&[1, 2, 3]));
        let mp = event_to_mp("ev", &d);
        let bytes = encode(&mp);
        let back = decode(&bytes).unwrap();
        let (name, d2) = event_from_mp(&back).unwrap();
        assert_eq!(name, "ev");
        assert_eq!(d2, d);
    }

    #[test]
    fn notepack_quirks() {
        // fixext 1 type 0 (undefined) and a timestamp-32 extension.
        let undefined = decode(&[0xd4, 0x00, 0x00]).unwrap();
        assert_eq!(from_mp(&undefined, &mut vec![]), Value::Null);
        let ts = decode(&[0xd6, 0xff, 0, 0, 0, 10]).unwrap();
        assert_eq!(from_mp(&ts, &mut vec![]), json!(10_000));
        assert!(decode(&[0x91]).is_none(), "truncated input is refused");
        assert!(
            decode(&[0xc0, 0xc0]).is_none(),
            "trailing bytes are refused"
        );
    }
}
