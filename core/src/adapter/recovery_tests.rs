//! The in-memory store: replay, the trimmed-log rule, taking and ownership.

use super::*;
use crate::socketio::Data;
use serde_json::json;

fn cfg(max_len: usize) -> RecoveryConfig {
    RecoveryConfig {
        max_disconnection_duration: Duration::from_secs(60),
        log_max_len: max_len,
        ..Default::default()
    }
}

fn ev(n: i64) -> EventPacket {
    EventPacket {
        event: "e".into(),
        data: Data::one(json!(n)),
    }
}

fn to(rooms: &[&str], except: &[&str]) -> BroadcastOptions {
    BroadcastOptions {
        rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
        except: except.iter().map(|r| Room::from(*r)).collect(),
        ..Default::default()
    }
}

fn rec(pid: &str, rooms: &[&str], seen: u64, connected: bool) -> SessionRecord {
    SessionRecord {
        sid: "sid".into(),
        pid: pid.into(),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        data: json!({"k": 1}),
        nsp: Some("/".into()),
        offset: Some("0".into()),
        seen: Some(seen),
        owner: Some("o1".into()),
        connected,
        node: None,
    }
}

fn replayed(
    m: &MemoryRecovery,
    r: &SessionRecord,
    from: Option<&str>,
) -> Result<Vec<(String, i64)>, NotRecovered> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    m.replay(r, from, Box::new(move |v| *o.lock() = v))?;
    let v = out.lock().clone();
    Ok(v.into_iter()
        .map(|p| (p.offset, p.packet.data.args[0].as_i64().unwrap()))
        .collect())
}

use std::sync::Arc;

#[test]
fn replay_keeps_what_targeted_the_session_after_its_offset() {
    let m = MemoryRecovery::new(cfg(100));
    let mut log = m.lock();
    assert_eq!(log.append(&ev(1), &to(&["R"], &[])), "1");
    log.append(&ev(2), &to(&["other"], &[]));
    log.append(&ev(3), &to(&[], &[]));
    log.append(&ev(4), &to(&["R"], &["sid"]));
    log.append(&ev(5), &to(&["sid"], &[]));
    drop(log);
    assert_eq!(m.position(), "5");
    let r = rec("p", &["R"], now_ms(), false);
    assert_eq!(
        replayed(&m, &r, Some("1")).unwrap(),
        vec![("3".into(), 3), ("5".into(), 5)]
    );
    // No offset (never received an event): from the session's start.
    assert_eq!(replayed(&m, &r, None).unwrap().len(), 3);
    assert_eq!(
        replayed(&m, &r, Some("x")).unwrap_err(),
        NotRecovered::BadOffset
    );
    assert_eq!(
        replayed(&m, &r, Some("99")).unwrap_err(),
        NotRecovered::BadOffset
    );
}

#[test]
fn a_trimmed_log_recovers_only_if_the_dropped_entries_predate_the_disconnect() {
    let m = MemoryRecovery::new(cfg(2));
    for n in 1..=5 {
        m.lock().append(&ev(n), &to(&[], &[]));
    }
    // Entries 1..3 were dropped just now: a client that left now missed them.
    let left_now = rec("p", &[], now_ms(), false);
    assert_eq!(
        replayed(&m, &left_now, Some("1")).unwrap_err(),
        NotRecovered::LogGap
    );
    // Its offset is past everything dropped: nothing is missing.
    assert_eq!(replayed(&m, &left_now, Some("3")).unwrap().len(), 2);
    // A client that left long after those entries were logged had them already.
    let later = rec("p", &[], now_ms() + 60_000, false);
    assert_eq!(replayed(&m, &later, Some("1")).unwrap().len(), 2);
}

#[tokio::test]
async fn a_session_is_taken_once_and_expires() {
    let m = MemoryRecovery::new(cfg(10));
    m.save(&rec("p", &[], now_ms(), false));
    assert!(m.take("p").await.unwrap().is_some());
    assert!(m.take("p").await.unwrap().is_none(), "taken once");
    m.save(&rec("old", &[], now_ms() - 61_000, false));
    assert!(m.take("old").await.unwrap().is_none(), "expired");
    // A connected session (its node alive, or dead since `seen`) does not expire here.
    m.save(&rec("live", &[], now_ms() - 61_000, true));
    assert!(m.take("live").await.unwrap().is_some());
}

#[tokio::test]
async fn a_taken_session_cannot_be_written_back_until_claimed() {
    let m = MemoryRecovery::new(cfg(10));
    m.save(&rec("p", &["A"], now_ms(), true));
    let got = m.take("p").await.unwrap().unwrap();
    // The instance it left closes late: its write must not give a second reconnect
    // the session.
    m.save(&rec("p", &["A"], now_ms(), false));
    assert!(m.take("p").await.unwrap().is_none());
    m.claim(&got);
    assert!(
        m.take("p").await.unwrap().is_some(),
        "claimed: takeable again"
    );
}

#[tokio::test]
async fn a_stale_instance_cannot_overwrite_or_discard_a_restored_session() {
    let m = MemoryRecovery::new(cfg(10));
    let mut new = rec("p", &["A"], now_ms(), true);
    new.owner = Some("o2".into());
    m.save(&new);
    // The old instance closes afterwards, with its stale rooms.
    m.save(&rec("p", &["stale"], now_ms(), false));
    m.discard(&rec("p", &[], now_ms(), false));
    let got = m.take("p").await.unwrap().unwrap();
    assert_eq!(got.rooms, vec!["A".to_string()]);
    assert_eq!(got.owner.as_deref(), Some("o2"));
}

#[test]
fn targets_matches_rooms_and_except() {
    let rooms = vec!["a".to_string(), "sid".to_string()];
    assert!(targets(&rooms, &[], &[]));
    assert!(targets(&rooms, &["a".into()], &[]));
    assert!(!targets(&rooms, &["b".into()], &[]));
    assert!(!targets(&rooms, &[], &["sid".into()]));
}

#[test]
fn the_memory_log_drops_entries_older_than_its_age() {
    let m = MemoryRecovery::new(RecoveryConfig {
        log_max_age: Duration::from_millis(30),
        ..cfg(100)
    });
    m.lock().append(&ev(1), &to(&[], &[]));
    m.lock().append(&ev(2), &to(&[], &[]));
    std::thread::sleep(Duration::from_millis(60));
    m.lock().append(&ev(3), &to(&[], &[]));
    // 1 and 2 aged out just before this client left: it missed 2, which is gone.
    let left_now = rec("p", &[], now_ms(), false);
    assert_eq!(
        replayed(&m, &left_now, Some("1")).unwrap_err(),
        NotRecovered::LogGap
    );
    assert_eq!(
        replayed(&m, &left_now, Some("2")).unwrap(),
        vec![("3".into(), 3)]
    );
}
