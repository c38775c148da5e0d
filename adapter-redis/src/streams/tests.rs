//! The stream and session formats against what Node's adapter writes.

use super::format::*;
use super::writer;
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

fn entry(uid: &str, seq: Option<u64>) -> HashMap<String, String> {
    let mut f = HashMap::from([("uid".to_owned(), uid.to_owned())]);
    if let Some(s) = seq {
        f.insert("seq".into(), s.to_string());
    }
    f
}

#[test]
fn readers_drop_an_entry_written_twice() {
    let mut d = super::reader::Dedup::default();
    assert!(d.fresh(&entry("a", Some(5))));
    assert!(!d.fresh(&entry("a", Some(5))), "a retried write of seq 5");
    assert!(d.fresh(&entry("b", Some(5))), "seqs are per node");
    assert!(
        !d.fresh(&entry("a", Some(4))),
        "older than the last one delivered"
    );
    assert!(d.fresh(&entry("a", Some(6))));
    // Node servers write no seq: never dropped.
    assert!(d.fresh(&entry("node", None)));
    assert!(d.fresh(&entry("node", None)));
}

fn session_cmd(owner: &str, claim: bool, discard: bool) -> writer::SessionCmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(format!("{owner}/{claim}/{discard}"));
    writer::SessionCmd {
        owner: owner.into(),
        claim,
        discard,
        cmd,
    }
}

#[test]
fn session_writes_coalesce_but_a_claim_is_never_replaced_by_a_save() {
    let q = writer::Queue::new();
    let s1 = q.session("p", session_cmd("x", true, false));
    let s2 = q.session("p", session_cmd("x", false, false));
    let s3 = q.session("p", session_cmd("x", false, false));
    assert!(s1 < s2 && s2 < s3);
    // A stale instance's save queues behind (Redis refuses it by owner).
    q.session("p", session_cmd("y", false, false));
    q.session("other", session_cmd("z", false, true));
    let args = q.pending_session_args();
    assert_eq!(
        args,
        vec![
            ("other".to_owned(), vec!["z/false/true".to_owned()]),
            (
                "p".to_owned(),
                vec![
                    "x/true/false".to_owned(),
                    "x/false/false".to_owned(),
                    "y/false/false".to_owned()
                ]
            ),
        ]
    );
}

#[test]
fn a_full_queue_gives_entries_back_and_going_down_hands_over_what_was_queued() {
    let q = writer::Queue::new();
    let big = "x".repeat(writer::MAX_QUEUED_BYTES / 2 + 1);
    let mk = |data: &str| writer::Queued {
        seq: q.next_seq(),
        nsp: "/".into(),
        kind: BROADCAST,
        data: data.to_owned(),
    };
    assert!(q.push(mk(&big)).is_ok());
    let back = q.push(mk(&big)).expect_err("over the byte bound");
    assert_eq!(back.data.len(), big.len());
    assert!(q.push(mk("small")).is_ok());
    let handed = q.go_down_for_test();
    assert_eq!(handed.len(), 2, "both queued entries, in order");
    assert_eq!(handed[1].data, "small");
    assert!(q.push(mk("later")).is_err(), "down: nothing is queued");
    // Delivered unlogged: a gap opens, and the reader will skip those seqs.
    q.note_unlogged(handed.iter().map(|e| e.seq));
    assert!(q.open_gap().is_some());
    assert!(q.was_delivered_unlogged(handed[0].seq));
    assert!(!q.was_delivered_unlogged(handed[0].seq), "once");
}
