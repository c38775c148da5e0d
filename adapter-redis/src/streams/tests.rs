//! The stream and session formats against what Node's adapter writes.

use super::format::*;
use super::*;
use bytes::Bytes;

fn fields(data: String) -> HashMap<String, String> {
    [("uid", "u"), ("nsp", "/"), ("type", "3")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([("data".to_owned(), data)])
        .collect()
}

#[test]
fn reads_a_node_streams_adapter_broadcast() {
    // What @socket.io/redis-streams-adapter 0.3 writes for `io.to("M").except("x").emit("msg", {n: 1})`.
    let data = r#"{"packet":{"type":2,"data":["msg",{"n":1}],"nsp":"/"},"opts":{"rooms":["M"],"except":["x"],"flags":{}}}"#;
    let (p, o) = decode_broadcast(&fields(data.into())).unwrap();
    assert_eq!(p.event, "msg");
    assert_eq!(p.data.args, vec![json!({"n": 1})]);
    assert_eq!(o.rooms, vec![Room::from("M")]);
    assert_eq!(o.except, vec![Room::from("x")]);
    assert!(!o.flags.volatile);
    // A broadcast with acks is ephemeral: never delivered from the stream.
    let acked = r#"{"requestId":"r","packet":{"type":2,"data":["msg"],"nsp":"/"},"opts":{"rooms":[],"except":[],"flags":{}}}"#;
    assert!(decode_broadcast(&fields(acked.into())).is_none());
    assert!(decode_broadcast(&fields("{not json".into())).is_none());
    assert!(decode_broadcast(&fields("!!!".into())).is_none());
}

#[test]
fn reads_a_binary_broadcast_as_base64_msgpack() {
    let d = Data::new(vec![json!("x")]).push_binary(Bytes::from_static(&[1, 2, 3]));
    let mp = Mp::Map(vec![
        (
            Mp::from("opts"),
            msgpack::to_mp(
                &json!({"rooms": [], "except": [], "flags": {"volatile": true}}),
                &[],
            ),
        ),
        (
            Mp::from("packet"),
            Mp::Map(vec![
                (Mp::from("type"), Mp::from(2)),
                (Mp::from("data"), msgpack::event_to_mp("bin", &d)),
                (Mp::from("nsp"), Mp::from("/")),
            ]),
        ),
    ]);
    let raw = base64::engine::general_purpose::STANDARD.encode(msgpack::encode(&mp));
    let (p, o) = decode_broadcast(&fields(raw)).unwrap();
    assert_eq!(p.event, "bin");
    assert_eq!(p.data, d);
    assert!(o.flags.volatile);
}

#[test]
fn sessions_round_trip_and_node_sessions_read() {
    let rec = SessionRecord {
        sid: "s".into(),
        pid: "p".into(),
        rooms: vec!["s".into(), "R".into()],
        data: json!({"user": "u", "n": [1, 2]}),
        nsp: Some("/".into()),
        offset: Some("1-0".into()),
        seen: Some(5),
        owner: Some("o".into()),
        connected: true,
        node: Some("n".into()),
    };
    assert_eq!(decode_session(&encode_session(&rec)).unwrap(), rec);
    // A Node server's session: only {sid, pid, rooms, data}.
    let node = msgpack::to_mp(
        &json!({"sid": "s", "pid": "p", "rooms": ["s"], "data": {"a": 1}}),
        &[],
    );
    let raw = base64::engine::general_purpose::STANDARD.encode(msgpack::encode(&node));
    let got = decode_session(&raw).unwrap();
    assert_eq!(
        (got.sid.as_str(), got.connected, got.nsp),
        ("s", false, None)
    );
    assert!(decode_session("not base64!").is_none());
}

#[test]
fn stream_ids_order_numerically() {
    assert!(parse_id("10-0").unwrap() > parse_id("9-5").unwrap());
    assert!(parse_id("1-10").unwrap() > parse_id("1-9").unwrap());
    assert!(parse_id("1").is_none());
    assert!(parse_id("a-b").is_none());
}
