//! Codec tests (kept apart so `packet.rs` stays about the codec).

use bytes::Bytes;
use serde_json::json;

use super::data::Data;
use super::packet::*;

fn text(e: &Encoded) -> String {
    String::from_utf8(e.text.payload().to_vec()).unwrap()
}

#[test]
fn decodes_every_kind() {
    let p = Packet::decode("0/admin,{\"token\":\"x\"}").unwrap();
    assert_eq!(p.kind, PacketKind::Connect);
    assert_eq!(p.nsp, "/admin");
    assert_eq!(p.data, Some(json!({"token": "x"})));
    let p = Packet::decode("2[\"hello\",1]").unwrap();
    assert_eq!(
        (p.kind, p.nsp.as_str(), p.id),
        (PacketKind::Event, "/", None)
    );
    let p = Packet::decode("2/chat,12[\"a\"]").unwrap();
    assert_eq!((p.nsp.as_str(), p.id), ("/chat", Some(12)));
    let p = Packet::decode("3/chat,7[]").unwrap();
    assert_eq!((p.kind, p.id), (PacketKind::Ack, Some(7)));
    let p = Packet::decode("51-[\"b\",{\"_placeholder\":true,\"num\":0}]").unwrap();
    assert_eq!((p.kind, p.attachments), (PacketKind::BinaryEvent, 1));
    assert!(p.attachments_valid(1));
    assert!(!p.attachments_valid(0));
    let p = Packet::decode("1/x,").unwrap();
    assert_eq!((p.kind, p.nsp.as_str()), (PacketKind::Disconnect, "/x"));
    let p = Packet::decode("0/nsp").unwrap();
    assert_eq!(p.nsp, "/nsp");
    assert_eq!(Packet::decode("").unwrap().kind, PacketKind::Connect);
    let (name, args) = Packet::decode("2[42,\"x\"]").unwrap().into_event().unwrap();
    assert_eq!((name.as_str(), args), ("42", vec![json!("x")]));
}

#[test]
fn rejects_invalid() {
    use DecodeError::*;
    let cases = [
        ("9", UnknownType),
        ("a", UnknownType),
        ("2{\"a\":1}", InvalidPayload),
        ("2[]", InvalidPayload),
        ("2[\"connect\"]", InvalidPayload),
        ("2[{}]", InvalidPayload),
        ("2[\"a\"", InvalidPayload),
        ("0\"str\"", InvalidPayload),
        ("1{}", InvalidPayload),
        ("3{}", InvalidPayload),
        ("5[\"a\"]", IllegalAttachments),
        ("5x-[\"a\"]", IllegalAttachments),
        ("599999-[\"a\"]", IllegalAttachments),
        ("299999999999999999999999[\"a\"]", InvalidId),
    ];
    for (s, e) in cases {
        assert_eq!(Packet::decode(s), Err(e), "{s}");
    }
    let deep = format!("2[\"a\",{}{}]", "[".repeat(500), "]".repeat(500));
    assert_eq!(Packet::decode(&deep), Err(InvalidPayload));
}

#[test]
fn encodes_events_and_acks() {
    let d = Data::new(vec![json!(1), json!({"a": "b"})]);
    assert_eq!(
        text(&encode_event("/", "ev", &d, None)),
        "42[\"ev\",1,{\"a\":\"b\"}]"
    );
    assert_eq!(
        text(&encode_event("/chat", "ev", &d, Some(3))),
        "42/chat,3[\"ev\",1,{\"a\":\"b\"}]"
    );
    assert_eq!(text(&encode_ack("/", 5, &d)), "435[1,{\"a\":\"b\"}]");
    assert_eq!(text(&encode_ack("/", 5, &Data::empty())), "435[]");
    let b = Data::new(vec![]).push_binary(Bytes::from_static(&[1, 2]));
    let e = encode_event("/", "bin", &b, None);
    assert_eq!(text(&e), "451-[\"bin\",{\"_placeholder\":true,\"num\":0}]");
    assert_eq!(e.binary.len(), 1);
    assert_eq!(e.binary[0].payload(), &[1, 2]);
    let c = encode_control(
        PacketKind::ConnectError,
        "/x",
        Some(&json!({"message": "m"})),
    );
    assert_eq!(c.payload(), b"44/x,{\"message\":\"m\"}");
}

#[test]
fn roundtrip() {
    let d = Data::new(vec![json!("x"), json!([1, {"k": null}])]);
    let e = encode_event("/n", "ev", &d, Some(9));
    let s = text(&e);
    let p = Packet::decode(&s[1..]).unwrap();
    assert_eq!(p.id, Some(9));
    let (name, args) = p.into_event().unwrap();
    assert_eq!(name, "ev");
    assert_eq!(args, d.args);
}
