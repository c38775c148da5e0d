use std::time::Duration;

use serde_json::json;
use skein::adapter::{
    EventPacket, LoggedPacket, NotRecovered, RecoveryConfig, Room, SessionRecord,
};
use skein::Data;

use super::{Kept, Offset, VectorLog};

const T0: u64 = 1_700_000_000_000;
const S1: u64 = 0x51;
const S2: u64 = 0x52;

fn cfg(max_len: usize) -> RecoveryConfig {
    RecoveryConfig {
        log_max_len: max_len,
        log_max_age: Duration::from_secs(180),
        ..Default::default()
    }
}

fn kept(n: u64, room: &str) -> Option<Kept> {
    Some(Kept {
        nsp: "/".into(),
        packet: EventPacket {
            event: "e".into(),
            data: Data::one(json!(n)),
        },
        rooms: vec![Room::from(room)],
        except: vec![],
    })
}

fn rec(offset: Option<String>, seen: u64) -> SessionRecord {
    serde_json::from_value(json!({
        "sid": "sid1", "pid": "p1", "rooms": ["sid1", "r"], "nsp": "/",
        "offset": offset, "seen": seen,
    }))
    .unwrap()
}

/// The event numbers of replayed packets.
fn nums(v: &[LoggedPacket]) -> Vec<u64> {
    v.iter()
        .map(|p| p.packet.data.args[0].as_u64().unwrap())
        .collect()
}

#[test]
fn offsets_round_trip_and_merge_sender_by_sender() {
    let o = Offset {
        t: T0,
        seqs: [(S1, 7), (u64::MAX, 1)].into_iter().collect(),
    };
    assert_eq!(Offset::parse(&o.format()), Some(o.clone()));
    assert_eq!(Offset::parse("zz~1:"), None);
    assert_eq!(Offset::parse("12-3"), None);
    let mut m = o.clone();
    m.merge(&Offset {
        t: T0 + 5,
        seqs: [(S1, 3), (S2, 4)].into_iter().collect(),
    });
    assert_eq!(m.t, T0 + 5);
    assert_eq!(m.seqs.get(&S1), Some(&7));
    assert_eq!(m.seqs.get(&S2), Some(&4));
}

/// The property recovery rests on: two nodes receive the same messages in different
/// orders; an offset given by one replays exactly the rest on the other.
#[test]
fn an_offset_from_one_node_replays_exactly_the_rest_on_another() {
    let (mut x, mut y) = (VectorLog::new(cfg(100), T0), VectorLog::new(cfg(100), T0));
    // Sender 1 sends 1..=4 (events 11..14), sender 2 sends 1..=3 (21..23).
    let order_x = [(S1, 1), (S2, 1), (S1, 2), (S2, 2)];
    let mut last = None;
    for (i, (s, n)) in order_x.iter().enumerate() {
        let ev = if *s == S1 { 10 + n } else { 20 + n };
        assert!(x.append(*s, *n, T0 + i as u64, kept(ev, "r")));
        last = Some(x.position().format());
    }
    let order_y = [
        (S2, 1),
        (S2, 2),
        (S2, 3),
        (S1, 1),
        (S1, 2),
        (S1, 3),
        (S1, 4),
    ];
    for (i, (s, n)) in order_y.iter().enumerate() {
        let ev = if *s == S1 { 10 + n } else { 20 + n };
        y.append(*s, *n, T0 + i as u64, kept(ev, "r"));
    }
    let missed = y.missed("/", &rec(None, T0), last.as_deref()).unwrap();
    assert_eq!(nums(&missed), vec![23, 13, 14]);
    // The last replayed offset covers everything: nothing more to replay from it.
    let end = missed.last().unwrap().offset.clone();
    assert_eq!(y.missed("/", &rec(None, T0), Some(&end)).unwrap(), vec![]);
    // And an intermediate one replays the rest only.
    assert_eq!(
        nums(
            &y.missed("/", &rec(None, T0), Some(&missed[0].offset))
                .unwrap()
        ),
        vec![13, 14]
    );
}

#[test]
fn rooms_namespaces_and_duplicates() {
    let mut y = VectorLog::new(cfg(100), T0);
    let start = y.position().format();
    assert!(y.append(S1, 1, T0, kept(1, "r")));
    assert!(!y.append(S1, 1, T0, kept(1, "r")), "a resend is dropped");
    y.append(S1, 2, T0, kept(2, "other"));
    y.append(S1, 3, T0, None); // socket management: advances, kept nowhere
    y.append(S1, 4, T0, kept(4, "sid1"));
    let missed = y.missed("/", &rec(Some(start.clone()), T0), None).unwrap();
    assert_eq!(nums(&missed), vec![1, 4]);
    assert_eq!(
        y.missed("/chat", &rec(Some(start), T0), None).unwrap(),
        vec![]
    );
}

#[test]
fn spans_it_does_not_hold_are_refused() {
    // A sender first heard of at 5: 1..=4 are unknown here.
    let mut y = VectorLog::new(cfg(100), T0);
    y.append(S1, 5, T0, kept(5, "r"));
    let from = |n: u64| {
        Offset {
            t: T0,
            seqs: [(S1, n)].into_iter().collect(),
        }
        .format()
    };
    assert_eq!(
        y.missed("/", &rec(None, T0), Some(&from(2))),
        Err(NotRecovered::LogGap)
    );
    assert_eq!(
        nums(&y.missed("/", &rec(None, T0), Some(&from(4))).unwrap()),
        vec![5]
    );
    // A stream that broke: 6..=7 never arrived.
    y.append(S1, 8, T0, kept(8, "r"));
    assert_eq!(
        y.missed("/", &rec(None, T0), Some(&from(5))),
        Err(NotRecovered::LogGap)
    );
    assert_eq!(
        nums(&y.missed("/", &rec(None, T0), Some(&from(7))).unwrap()),
        vec![8]
    );
    // Not an offset of this log.
    assert_eq!(
        y.missed("/", &rec(None, T0), Some("12-3")),
        Err(NotRecovered::BadOffset)
    );
}

#[test]
fn an_offset_older_than_the_log_naming_an_unknown_sender_is_refused() {
    let y = VectorLog::new(cfg(100), T0 + 10_000);
    let old = Offset {
        t: T0,
        seqs: [(S2, 3)].into_iter().collect(),
    };
    assert_eq!(
        y.missed("/", &rec(None, T0), Some(&old.format())),
        Err(NotRecovered::LogGap)
    );
    let newer = Offset {
        t: T0 + 20_000,
        ..old
    };
    assert_eq!(
        y.missed("/", &rec(None, T0), Some(&newer.format()))
            .unwrap(),
        vec![]
    );
}

#[test]
fn trimmed_entries_refuse_only_sessions_that_may_have_missed_them() {
    let mut y = VectorLog::new(cfg(2), T0);
    let start = y.position().format();
    for n in 1..=4 {
        y.append(S1, n, T0 + n, kept(n, "r"));
    }
    // 1 and 2 are trimmed; a session disconnected before them may have missed them.
    assert_eq!(
        y.missed("/", &rec(Some(start.clone()), T0), None),
        Err(NotRecovered::LogGap)
    );
    // One last seen well after they were trimmed had them (gap_is_safe).
    let late = rec(Some(start), T0 + 60_000);
    assert_eq!(nums(&y.missed("/", &late, None).unwrap()), vec![3, 4]);
}

#[test]
fn a_position_lacks_what_an_offset_counts_still_in_flight_to_it() {
    let mut y = VectorLog::new(cfg(100), T0);
    y.append(S1, 1, T0, kept(1, "r"));
    let ahead = Offset {
        t: T0,
        seqs: [(S1, 2), (S2, 9)].into_iter().collect(),
    };
    assert!(y.position().lacks(&ahead));
    y.append(S1, 2, T0, kept(2, "r"));
    assert!(
        !y.position().lacks(&ahead),
        "a sender never heard from is not waited for"
    );
}

#[test]
fn gone_senders_retire_from_offsets() {
    let mut y = VectorLog::new(cfg(100), T0);
    y.append(S1, 1, T0, kept(1, "r"));
    y.append(S2, 1, T0, kept(2, "r"));
    let later = T0 + 3_600_000;
    y.retire(|s| s == S2, later);
    assert_eq!(
        y.position().seqs.keys().copied().collect::<Vec<_>>(),
        vec![S2]
    );
    // An offset given after the retirement does not name S1: its old entries are not
    // replayed.
    let from = Offset {
        t: later,
        seqs: [(S2, 1)].into_iter().collect(),
    };
    assert_eq!(
        y.missed("/", &rec(None, later), Some(&from.format()))
            .unwrap(),
        vec![]
    );
}

#[test]
fn a_node_that_starts_takes_over_a_peers_history() {
    let mut old = VectorLog::new(cfg(100), T0);
    let mut offsets = vec![];
    for n in 1..=3 {
        assert!(old.append(S1, n, T0 + n, kept(n, "r")));
        offsets.push(old.position().format());
    }
    // A node started later, with one message that reached it while it copied.
    let started = T0 + 10_000;
    let mut fresh = VectorLog::new(cfg(100), started);
    let early = fresh.position().format();
    fresh.install(old.snapshot());
    assert!(fresh.has(S1, 3) && !fresh.has(S1, 4));
    assert!(
        !fresh.append(S1, 3, started + 1, kept(3, "r")),
        "copied already"
    );
    fresh.append(S1, 4, started + 2, kept(4, "r"));
    // A client of the old node resumes here with exactly what it missed.
    let missed = fresh
        .missed("/", &rec(None, T0), Some(&offsets[1]))
        .unwrap();
    assert_eq!(nums(&missed), vec![3, 4]);
    // A client that connected here before the copy missed only what came after it.
    let missed = fresh.missed("/", &rec(Some(early), started), None).unwrap();
    assert_eq!(nums(&missed), vec![4]);
}
