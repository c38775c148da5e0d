//! The Node-compatible codec: what Skein writes reads back the same, and what Node
//! servers write (captured from @socket.io/redis-adapter 8.3) reads as they mean it.

use super::*;
use bytes::Bytes;

fn opts(rooms: &[&str], except: &[&str]) -> BroadcastOptions {
    BroadcastOptions {
        rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
        except: except.iter().map(|r| Room::from(*r)).collect(),
        ..Default::default()
    }
}

fn packet(event: &str, data: Data) -> EventPacket {
    EventPacket {
        event: event.into(),
        data,
    }
}

#[test]
fn what_skein_publishes_reads_back_the_same() {
    let bin = Data::new(vec![json!({"n": 1})]).push_binary(Bytes::from_static(&[1, 2, 255]));
    let mut o = opts(&["r"], &["x"]);
    o.flags.volatile = true;
    let cases = vec![
        Message::Broadcast {
            packet: packet("m", bin.clone()),
            opts: o.clone(),
        },
        Message::SocketsJoin {
            opts: opts(&["a"], &[]),
            rooms: vec!["j".into()],
            req: None,
        },
        Message::SocketsLeave {
            opts: opts(&[], &["b"]),
            rooms: vec!["l".into()],
            req: None,
        },
        Message::DisconnectSockets {
            opts: opts(&["a"], &[]),
            close: true,
            req: None,
        },
        Message::ServerSideEmit {
            packet: packet("s", Data::one(json!(1))),
            req: None,
        },
        Message::ServerSideEmit {
            packet: packet("s", bin.clone()),
            req: Some("q1".into()),
        },
        Message::FetchSockets {
            req: "q2".into(),
            opts: opts(&["r"], &[]),
        },
        Message::AllRooms { req: "q3".into() },
        Message::BroadcastWithAck {
            req: "q4".into(),
            packet: packet("b", bin),
            opts: o,
        },
    ];
    for msg in cases {
        let out = publish("socket.io", "me", "/chat", &msg).expect("sent to all");
        let env = if out.channel.starts_with("socket.io#") {
            assert_eq!(
                out.channel, "socket.io#/chat#r#",
                "a one-room broadcast has its channel"
            );
            decode_broadcast("/chat", &out.payload)
        } else {
            assert_eq!(out.channel, "socket.io-request#/chat#");
            decode_request("/chat", &out.payload)
        }
        .unwrap_or_else(|| panic!("decodes: {msg:?}"));
        assert_eq!((env.from.as_ref(), env.nsp.as_ref()), ("me", "/chat"));
        assert_eq!(env.msg, msg);
    }
}

#[test]
fn answers_read_back_on_the_response_channel() {
    let bin =
        Data::one(json!({"_placeholder": true, "num": 0})).push_binary(Bytes::from_static(b"z"));
    let mut acked = Data::one(json!({"_placeholder": true, "num": 0}));
    acked.binary = bin.binary.clone();
    for (body, want) in [
        (ResponseBody::Rooms(vec!["a".into()]), None),
        (ResponseBody::ClientCount(3), None),
        (
            ResponseBody::ServerSideEmit(Data::one(json!({"ok": 1}))),
            None,
        ),
        (
            ResponseBody::BroadcastAck(acked.clone()),
            Some(ResponseBody::BroadcastAck(acked)),
        ),
        (ResponseBody::Done, None),
    ] {
        let msg = Message::Response(Response {
            req: "r9".into(),
            body: body.clone(),
        });
        let out = send("socket.io", "me", "them", "/", &msg);
        assert_eq!(out.channel, "socket.io-response#/#");
        let env = decode_response("/", &out.payload).expect("decodes");
        assert_eq!(env.from.as_ref(), "me");
        let Message::Response(r) = env.msg else {
            panic!()
        };
        assert_eq!(&*r.req, "r9");
        assert_eq!(r.body, want.unwrap_or(body));
    }
    // Anything else to one node goes on that node's own channel, natively encoded.
    let out = send(
        "socket.io",
        "me",
        "them",
        "/",
        &Message::ServerSideEmit {
            packet: packet("p", Data::empty()),
            req: None,
        },
    );
    assert_eq!(out.channel, "socket.io-skein#node#them#");
    assert!(skein::adapter::cluster::codec::decode(&out.payload).is_ok());
}

#[test]
fn what_node_servers_send_reads_as_they_mean_it() {
    // io.fetchSockets() on a Node server.
    let fetch = br#"{"uid":"nodeA","requestId":"Zx1","type":5,"opts":{"rooms":["r"],"except":[]}}"#;
    let env = decode_request("/", fetch).unwrap();
    assert_eq!(
        env.msg,
        Message::FetchSockets {
            req: "Zx1".into(),
            opts: opts(&["r"], &[])
        }
    );
    // io.allSockets() (legacy SOCKETS) and the legacy remoteJoin of one socket.
    let legacy = br#"{"uid":"nodeA","requestId":"L1","type":0,"rooms":["r"]}"#;
    assert!(matches!(
        decode_request("/", legacy).unwrap().msg,
        Message::SocketIds { .. }
    ));
    let join = br#"{"uid":"nodeA","requestId":"L2","type":2,"sid":"abc","room":"j"}"#;
    assert_eq!(
        decode_request("/", join).unwrap().msg,
        Message::SocketsJoin {
            opts: opts(&["abc"], &[]),
            rooms: vec!["j".into()],
            req: Some("L2".into())
        }
    );
    // The emitter's socketsJoin has no uid.
    let emitter = br#"{"type":2,"opts":{"rooms":["a"],"except":[]},"rooms":["j"]}"#;
    assert_eq!(
        decode_request("/", emitter).unwrap().from.as_ref(),
        "emitter"
    );
    // A Node server's answer to a fetch: no uid.
    let answer = br#"{"requestId":"Zx1","sockets":[{"id":"4rS-Yh4hQLmqTzmNAAAB","handshake":{"headers":{},"time":"t","address":"::1","xdomain":false,"secure":false,"issued":1,"url":"/socket.io/","query":{},"auth":{}},"rooms":["4rS-Yh4hQLmqTzmNAAAB","r"],"data":{"n":1}}]}"#;
    let env = decode_response("/", answer).unwrap();
    assert_eq!(env.from.as_ref(), "");
    let Message::Response(Response {
        body: ResponseBody::Sockets(list),
        ..
    }) = env.msg
    else {
        panic!("sockets")
    };
    assert_eq!(list[0].data, json!({"n": 1}));
    // Garbage is dropped, not a panic.
    assert!(
        decode_request("/", b"{\"type\":5}").is_none(),
        "a fetch needs its requestId"
    );
    assert!(decode_request("/", b"\xc1\xc1").is_none());
    assert!(decode_broadcast("/", b"\x93\xa1a").is_none());
    assert!(decode_heartbeat(b"[1]").is_none());
}
