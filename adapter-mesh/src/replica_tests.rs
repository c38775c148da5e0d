use std::time::Duration;

use serde_json::json;
use skein::adapter::recovery::now_ms;
use skein::adapter::{EventPacket, NotRecovered, RecoveryConfig, Room, SessionRecord};
use skein::Data;

use super::{
    backups_of, format_offset, parse_offset, Copy, ReplicaOp, ReplicaStore, ReplicatedPacket,
};

const A: &str = "node-a-17";

fn cfg(max_len: usize) -> RecoveryConfig {
    RecoveryConfig {
        log_max_len: max_len,
        log_max_age: Duration::from_secs(180),
        ..Default::default()
    }
}

fn pkt(seq: u64, rooms: &[&str], at_ms: u64) -> ReplicatedPacket {
    ReplicatedPacket {
        seq,
        at_ms,
        sender: "s1".into(),
        sender_seq: seq,
        packet: EventPacket {
            event: "e".into(),
            data: Data::one(json!(seq)),
        },
        rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
        except: vec![],
    }
}

fn rec(pid: &str, owner: &str, offset: u64, connected: bool) -> SessionRecord {
    SessionRecord {
        sid: "sid1".into(),
        pid: pid.into(),
        rooms: vec!["sid1".into(), "r1".into()],
        data: json!({"k": 1}),
        nsp: Some("/".into()),
        offset: Some(format_offset(A, offset)),
        seen: Some(now_ms()),
        owner: Some(owner.into()),
        connected,
        node: Some(A.into()),
    }
}

fn seqs(v: &[skein::adapter::LoggedPacket]) -> Vec<String> {
    v.iter().map(|p| p.offset.clone()).collect()
}

#[test]
fn offsets_round_trip_with_dashes_in_the_origin() {
    assert_eq!(parse_offset(&format_offset(A, 42)), Some((A, 42)));
    assert_eq!(parse_offset("nodash"), None);
    assert_eq!(parse_offset("a-b-x"), None);
}

#[test]
fn take_returns_the_session_and_what_targeted_it_after_the_offset_once() {
    let mut s = ReplicaStore::new(cfg(100));
    let now = now_ms();
    s.save(&rec("p1", "o1", 0, true));
    for seq in 1..=5 {
        let room = if seq == 3 { "other" } else { "r1" };
        s.append(A, pkt(seq, &[room], now));
    }
    let offset = format_offset(A, 1);
    let (r, missed) = s.take("p1", Some(&offset)).unwrap();
    assert_eq!(r.pid, "p1");
    assert_eq!(
        seqs(&missed),
        vec![
            format_offset(A, 2),
            format_offset(A, 4),
            format_offset(A, 5)
        ]
    );
    // One restorer wins; the instance it left cannot write the session back…
    assert_eq!(
        s.take("p1", Some(&offset)).unwrap_err(),
        NotRecovered::UnknownSession
    );
    assert!(!s.save(&rec("p1", "o1", 0, false)));
    // …until the new socket claims it.
    s.claim(&rec("p1", "o2", 5, true));
    assert!(!s.save(&rec("p1", "o1", 0, false)), "stale owner refused");
    assert!(s.save(&rec("p1", "o2", 5, true)));
}

#[test]
fn a_span_the_backup_never_received_refuses_recovery() {
    let mut s = ReplicaStore::new(cfg(100));
    let now = now_ms();
    s.append(A, pkt(1, &["r1"], now));
    s.append(A, pkt(2, &["r1"], now));
    // 3 and 4 were dropped on the way.
    s.append(A, pkt(5, &["r1"], now));
    s.save(&rec("before", "o1", 1, true));
    s.save(&rec("after", "o1", 4, true));
    assert_eq!(
        s.take("before", None).unwrap_err(),
        NotRecovered::LogGap,
        "offset 1 needs 3 and 4"
    );
    let (_, missed) = s.take("after", None).unwrap();
    assert_eq!(seqs(&missed), vec![format_offset(A, 5)]);
}

#[test]
fn an_offset_before_what_the_backup_received_refuses_recovery() {
    let mut s = ReplicaStore::new(cfg(100));
    let now = now_ms();
    // The backup joined when the origin was at 10.
    s.append(A, pkt(10, &["r1"], now));
    s.append(A, pkt(11, &["r1"], now));
    s.save(&rec("old", "o1", 5, true));
    s.save(&rec("edge", "o1", 9, true));
    assert_eq!(s.take("old", None).unwrap_err(), NotRecovered::LogGap);
    let (_, missed) = s.take("edge", None).unwrap();
    assert_eq!(
        seqs(&missed),
        vec![format_offset(A, 10), format_offset(A, 11)]
    );
}

#[test]
fn resends_are_ignored_and_an_offset_past_the_log_is_bad() {
    let mut s = ReplicaStore::new(cfg(100));
    let now = now_ms();
    for seq in [1, 2, 2, 1, 3] {
        s.append(A, pkt(seq, &["r1"], now));
    }
    s.save(&rec("p", "o1", 0, true));
    let (_, missed) = s.take("p", Some(&format_offset(A, 1))).unwrap();
    assert_eq!(
        seqs(&missed),
        vec![format_offset(A, 2), format_offset(A, 3)]
    );
    s.claim(&rec("p", "o2", 0, true));
    assert_eq!(
        s.take("p", Some(&format_offset(A, 9))).unwrap_err(),
        NotRecovered::BadOffset
    );
}

#[test]
fn trimmed_entries_recover_only_if_they_predate_the_disconnect() {
    let mut s = ReplicaStore::new(cfg(2));
    let long_ago = now_ms() - 60_000;
    let now = now_ms();
    s.append(A, pkt(1, &["r1"], long_ago));
    s.append(A, pkt(2, &["r1"], long_ago));
    s.append(A, pkt(3, &["r1"], now));
    // 1 was trimmed; logged long before the session was last seen: delivered.
    s.save(&rec("quiet", "o1", 0, true));
    let (_, missed) = s.take("quiet", None).unwrap();
    assert_eq!(
        seqs(&missed),
        vec![format_offset(A, 2), format_offset(A, 3)]
    );
    s.append(A, pkt(4, &["r1"], now));
    s.append(A, pkt(5, &["r1"], now));
    // 3 (just logged) was trimmed: a session at offset 2 cannot be sure it got it.
    s.save(&rec("busy", "o1", 2, true));
    assert_eq!(s.take("busy", None).unwrap_err(), NotRecovered::LogGap);
}

#[test]
fn a_discard_or_an_expired_session_is_not_recoverable() {
    let mut s = ReplicaStore::new(cfg(10));
    s.start(A, 1);
    s.save(&rec("p", "o1", 0, true));
    s.discard(&rec("p", "other", 0, false));
    assert!(s.take("p", None).is_ok(), "another owner cannot discard it");
    s.claim(&rec("q", "o1", 0, true));
    s.discard(&rec("q", "o1", 0, false));
    assert_eq!(s.take("q", None).unwrap_err(), NotRecovered::UnknownSession);
    let mut old = rec("r", "o1", 0, false);
    old.seen = Some(now_ms() - 10 * 60_000);
    s.save(&old);
    assert_eq!(s.take("r", None).unwrap_err(), NotRecovered::UnknownSession);
    s.save(&rec("f", "o1", 0, true));
    s.forget_origin(A);
    assert_eq!(s.take("f", None).unwrap_err(), NotRecovered::UnknownSession);
}

#[test]
fn a_reopened_stream_that_skipped_seqs_is_a_gap() {
    let mut s = ReplicaStore::new(cfg(10));
    let now = now_ms();
    s.start(A, 1);
    s.append(A, pkt(1, &["r1"], now));
    // The stream broke; the origin delivered 2..=4 meanwhile and reopens at 5.
    s.start(A, 5);
    s.append(A, pkt(5, &["r1"], now));
    s.save(&rec("lost", "o1", 1, true));
    s.save(&rec("fine", "o1", 4, true));
    assert_eq!(s.take("lost", None).unwrap_err(), NotRecovered::LogGap);
    let (_, missed) = s.take("fine", None).unwrap();
    assert_eq!(seqs(&missed), vec![format_offset(A, 5)]);
    // A quiet origin: a session with nothing to replay recovers.
    let b = "node-b-3";
    s.start(b, 7);
    let mut q = rec("quiet", "o1", 6, true);
    q.offset = Some(format_offset(b, 6));
    s.save(&q);
    assert_eq!(s.take("quiet", None).unwrap().1, vec![]);
}

#[test]
fn backups_are_the_next_nodes_in_sorted_order_wrapping_around() {
    let live = ["n3", "n1", "n2", "n4"];
    assert_eq!(backups_of("n1", &live, 1), vec!["n2"]);
    assert_eq!(backups_of("n2", &live, 2), vec!["n3", "n4"]);
    assert_eq!(backups_of("n4", &live, 2), vec!["n1", "n2"]);
    // An origin no longer listed (it died): the same nodes as while it lived.
    assert_eq!(backups_of("n2", &["n1", "n3", "n4"], 2), vec!["n3", "n4"]);
    assert_eq!(backups_of("n1", &["n1"], 2), Vec::<&str>::new());
    assert_eq!(backups_of("n1", &["n1", "n2"], 3), vec!["n2"]);
}

#[test]
fn ops_streamed_in_order_rebuild_the_origins_state_and_survive_serde() {
    let now = now_ms();
    let ops = vec![
        ReplicaOp::Start { next_seq: 1 },
        ReplicaOp::Save(rec("p", "o1", 0, true)),
        ReplicaOp::Packet(pkt(1, &["r1"], now)),
        ReplicaOp::Packet(pkt(2, &["nobody"], now)),
        ReplicaOp::Save(rec("gone", "o1", 0, true)),
        ReplicaOp::Discard(rec("gone", "o1", 0, false)),
        ReplicaOp::Packet(pkt(3, &["r1"], now)),
    ];
    let mut s = ReplicaStore::new(cfg(100));
    for op in ops {
        let wire = serde_json::to_vec(&op).unwrap();
        let back: ReplicaOp = serde_json::from_slice(&wire).unwrap();
        assert_eq!(back, op);
        s.apply(A, back);
    }
    let (_, missed) = s.take("p", None).unwrap();
    assert_eq!(
        seqs(&missed),
        vec![format_offset(A, 1), format_offset(A, 3)]
    );
    assert_eq!(
        s.take("gone", None).unwrap_err(),
        NotRecovered::UnknownSession
    );
    s.apply(A, ReplicaOp::Claim(rec("p", "o2", 3, true)));
    assert!(s.take("p", None).is_ok());
}

fn copy(sender: &str, sender_seq: u64, room: &str) -> Copy {
    Copy {
        sender: sender.into(),
        sender_seq,
        at_ms: now_ms(),
        packet: EventPacket {
            event: "e".into(),
            data: Data::one(json!(format!("{sender}:{sender_seq}"))),
        },
        rooms: vec![Room::from(room)],
        except: vec![],
    }
}

fn args(v: &[skein::adapter::LoggedPacket]) -> Vec<serde_json::Value> {
    v.iter().map(|p| p.packet.data.args[0].clone()).collect()
}

#[test]
fn senders_copies_confirmed_by_the_origin_are_dropped_and_late_ones_ignored() {
    let mut s = ReplicaStore::new(cfg(100));
    s.save(&rec("p1", "o1", 0, true));
    // s1's broadcasts 1 and 2 reach the backup straight from the sender…
    s.copy(A, copy("s1", 1, "r1"));
    s.copy(A, copy("s1", 2, "r1"));
    // …and the origin's copy of 1 confirms it; a copy of 1 arriving late is ignored.
    s.append(A, pkt(1, &["r1"], now_ms()));
    s.copy(A, copy("s1", 1, "r1"));
    let offset = format_offset(A, 1);
    let (_, missed) = s.take("p1", Some(&offset)).unwrap();
    // 2 was never delivered by the origin: it is replayed after the log, once.
    assert_eq!(args(&missed), vec![json!("s1:2")]);
    assert_eq!(seqs(&missed), vec![format_offset(A, 2)]);
    let last = missed[0].packet.data.args.last().unwrap();
    assert_eq!(
        last,
        &json!(format_offset(A, 2)),
        "the packet carries its offset"
    );
}

#[test]
fn what_the_origin_never_delivered_follows_its_log_filtered_by_rooms() {
    let mut s = ReplicaStore::new(cfg(100));
    s.save(&rec("p1", "o1", 0, true));
    for seq in 1..=3 {
        s.append(A, pkt(seq, &["r1"], now_ms()));
    }
    // Two senders' copies the origin never confirmed (it died), one for another room.
    s.copy(A, copy("s1", 4, "r1"));
    s.copy(A, copy("s2", 9, "other"));
    s.copy(A, copy("s2", 10, "r1"));
    let offset = format_offset(A, 2);
    let (_, missed) = s.take("p1", Some(&offset)).unwrap();
    assert_eq!(args(&missed), vec![json!(3), json!("s1:4"), json!("s2:10")]);
    assert_eq!(
        seqs(&missed),
        vec![
            format_offset(A, 3),
            format_offset(A, 4),
            format_offset(A, 5)
        ]
    );
}

#[test]
fn a_copy_trimmed_unconfirmed_recently_refuses_the_recovery() {
    let mut s = ReplicaStore::new(cfg(2));
    s.save(&rec("p1", "o1", 0, true));
    s.append(A, pkt(1, &["r1"], now_ms()));
    for seq in 1..=3 {
        s.copy(A, copy("s9", seq, "r1"));
    }
    let offset = format_offset(A, 1);
    assert_eq!(
        s.take("p1", Some(&offset)).unwrap_err(),
        NotRecovered::LogGap
    );
}
