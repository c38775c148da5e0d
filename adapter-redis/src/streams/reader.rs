//! The stream reader: delivery in stream order, replays between two reads, and how far
//! the stream was trimmed.
//!
//! The reader has a connection of its own (it blocks in `XREAD`). When that connection
//! fails (Redis restarted, the connection killed) it connects again with backoff and
//! resumes after the last entry it delivered, so nothing written meanwhile is skipped or
//! delivered twice. An entry a writer wrote twice (a retried pipeline whose first answer
//! was lost) carries the same `seq` as the first copy and is dropped; so is an own entry
//! this node already delivered unlogged during an outage.

use std::sync::atomic::Ordering;

use redis::AsyncConnectionConfig;
use skein::adapter::cluster::message::Envelope;
use skein::adapter::cluster::Delivery;

use super::format::{decode_broadcast, entries, options, parse_id, Id};
use super::*;

/// How long one `XREAD` blocks; the connection's answer timeout is above it.
const BLOCK_MS: u64 = 100;

/// The reader's connection: answers are due within the block time plus a margin, so a
/// Redis that stopped answering is noticed and the connection replaced.
pub(super) async fn connect(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(
            Duration::from_millis(BLOCK_MS) + Duration::from_secs(2),
        ));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

/// The highest `seq` delivered per writing node: a copy of an entry (same node, same or
/// lower seq) is dropped. Node servers write no `seq`; their entries always pass.
#[derive(Default)]
pub(super) struct Dedup(HashMap<String, u64>);

impl Dedup {
    /// Whether an entry is new; records it.
    pub(super) fn fresh(&mut self, f: &HashMap<String, String>) -> bool {
        let (Some(uid), Some(seq)) = (
            f.get("uid"),
            f.get("seq").and_then(|s| s.parse::<u64>().ok()),
        ) else {
            return true;
        };
        match self.0.get_mut(uid) {
            Some(last) if *last >= seq => false,
            Some(last) => {
                *last = seq;
                true
            }
            None => {
                self.0.insert(uid.clone(), seq);
                true
            }
        }
    }
}

/// Reads the stream and delivers each entry to its namespace; runs replays between reads.
pub(super) async fn read_loop(
    client: redis::Client,
    mut conn: MultiplexedConnection,
    log: Weak<StreamLog>,
    mut replays: ReplayReceiver,
    mut last: String,
) {
    let mut failing = false;
    let mut backoff = Duration::from_millis(100);
    let mut seen = Dedup::default();
    loop {
        let Some(l) = log.upgrade() else { return };
        let stream = l.cfg.stream.clone();
        while let Ok(r) = replays.try_recv() {
            let res = replay_now(&l, &mut conn, &last, &r.nsp, &r.rec, r.offset.as_deref()).await;
            r.finish(res);
        }
        drop(l);
        let reply: redis::RedisResult<RValue> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(v) => {
                if failing {
                    tracing::info!(after = %last, "redis streams: reading resumed");
                    failing = false;
                    backoff = Duration::from_millis(100);
                    if let Some(l) = log.upgrade() {
                        l.stats.reader_down.store(false, Ordering::Release);
                        l.resync.notify_one();
                    }
                }
                v
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "redis streams: read failed, reconnecting");
                    failing = true;
                    if let Some(l) = log.upgrade() {
                        l.stats.reader_down.store(true, Ordering::Release);
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // A multiplexed connection does not come back by itself once it broke.
                match connect(&client).await {
                    Ok(c) => conn = c,
                    Err(e) => tracing::debug!(error = %e, "redis streams: reader reconnect failed"),
                }
                continue;
            }
        };
        // [[stream, [[id, [k, v, ...]], ...]]] (or nil on timeout)
        let RValue::Array(streams) = reply else {
            continue;
        };
        let Some(l) = log.upgrade() else {
            return;
        };
        for s in &streams {
            let RValue::Array(pair) = s else { continue };
            let Some(list) = pair.get(1) else { continue };
            for (id, f) in entries(list) {
                if seen.fresh(&f) && !l.own_unlogged(&f) {
                    match decode_entry(&f) {
                        Some(env) => (l.inbound)(env, Delivery::Log(id.clone())),
                        None => tracing::debug!(id, "stream entry: not one this node applies"),
                    }
                }
                last = id;
            }
        }
        *l.position.lock() = last.clone();
    }
}

impl StreamLog {
    /// An entry of this node that it delivered unlogged already (see [`writer`]).
    fn own_unlogged(&self, f: &HashMap<String, String>) -> bool {
        f.get("uid") == Some(&self.uid)
            && f.get("seq")
                .and_then(|s| s.parse().ok())
                .is_some_and(|seq| self.queue.was_delivered_unlogged(seq))
    }

    /// Refuses a recovery whose client was away while broadcasts went unlogged (a gap
    /// recorded by any node, or this node's own not recorded yet). `from_ms`: the time of
    /// the client's last entry; node clocks may differ from Redis's by the margin.
    async fn check_gaps(
        &self,
        conn: &mut MultiplexedConnection,
        from_ms: u64,
        rec: &SessionRecord,
    ) -> Result<(), NotRecovered> {
        let margin = skein::adapter::recovery::DELIVERY_MARGIN.as_millis() as u64;
        let since = from_ms.saturating_sub(margin);
        let mut ends: Vec<u64> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.gaps_key())
            .arg(since)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async::<Vec<(String, u64)>>(conn)
            .await
            .map_err(|e| NotRecovered::Backend(AdapterError::Unavailable(e.to_string())))?
            .into_iter()
            .map(|(_, end)| end)
            .collect();
        ends.extend(self.queue.open_gap().map(|(_, end)| end));
        if ends
            .iter()
            .any(|end| *end >= since && !gap_is_safe(*end, rec))
        {
            return Err(NotRecovered::LogGap);
        }
        Ok(())
    }
}

/// A stream entry as a message of the cluster protocol: a broadcast (3), or
/// SOCKETS_JOIN (4), SOCKETS_LEAVE (5), DISCONNECT_SOCKETS (6) from Skein or Node nodes.
fn decode_entry(f: &HashMap<String, String>) -> Option<Envelope> {
    let nsp = f.get("nsp")?;
    let from = f.get("uid").map(String::as_str).unwrap_or("emitter");
    let msg = match f.get("type").map(String::as_str)? {
        BROADCAST => {
            let (packet, opts) = decode_broadcast(f)?;
            Message::Broadcast { packet, opts }
        }
        t @ ("4" | "5" | "6") => {
            let data: Value = serde_json::from_str(f.get("data")?).ok()?;
            let opts = data.get("opts").and_then(options)?;
            let rooms: Vec<Room> = data
                .get("rooms")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(Room::from).collect())
                .unwrap_or_default();
            match t {
                "4" => Message::SocketsJoin {
                    opts,
                    rooms,
                    req: None,
                },
                "5" => Message::SocketsLeave {
                    opts,
                    rooms,
                    req: None,
                },
                _ => Message::DisconnectSockets {
                    opts,
                    close: data.get("close").and_then(Value::as_bool).unwrap_or(false),
                    req: None,
                },
            }
        }
        _ => return None,
    };
    Some(Envelope {
        from: from.into(),
        nsp: nsp.as_str().into(),
        msg,
    })
}

/// What a session missed after its offset, up to the reader's position `last`.
async fn replay_now(
    log: &StreamLog,
    conn: &mut MultiplexedConnection,
    last: &str,
    nsp: &str,
    rec: &SessionRecord,
    offset: Option<&str>,
) -> Result<Vec<LoggedPacket>, NotRecovered> {
    let from = offset
        .or(rec.offset.as_deref())
        .ok_or(NotRecovered::BadOffset)?;
    let from_id = parse_id(from).ok_or(NotRecovered::BadOffset)?;
    let last_id = parse_id(last).unwrap_or((0, 0));
    if from_id > last_id {
        return Err(NotRecovered::BadOffset);
    }
    let backend =
        |e: redis::RedisError| NotRecovered::Backend(AdapterError::Unavailable(e.to_string()));
    // Entries after `from` may have been trimmed: only acceptable when they predate the
    // disconnect by the delivery margin (the client had them).
    let stream = log.cfg.stream.as_str();
    if let Some(trimmed) = max_deleted(conn, stream).await.map_err(backend)? {
        if trimmed > from_id && !gap_is_safe(trimmed.0, rec) {
            return Err(NotRecovered::LogGap);
        }
    }
    log.check_gaps(conn, from_id.0, rec).await?;
    let mut rooms = rec.rooms.clone();
    rooms.push(rec.sid.clone());
    let mut missed = Vec::new();
    let mut seen = Dedup::default();
    let mut cursor = from.to_owned();
    while parse_id(&cursor).unwrap_or((0, 0)) < last_id {
        let page: RValue = redis::cmd("XRANGE")
            .arg(stream)
            .arg(format!("({cursor}"))
            .arg(last)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(backend)?;
        let list = entries(&page);
        if list.is_empty() {
            break;
        }
        for (id, f) in &list {
            if seen.fresh(f)
                && f.get("nsp").map(String::as_str) == Some(nsp)
                && f.get("type").map(String::as_str) == Some(BROADCAST)
            {
                if let Some((packet, opts)) = decode_broadcast(f) {
                    if !opts.flags.volatile && targets(&rooms, &opts.rooms, &opts.except) {
                        let packet = EventPacket {
                            data: with_offset(packet.data, id),
                            ..packet
                        };
                        missed.push(LoggedPacket {
                            offset: id.clone(),
                            packet,
                        });
                    }
                }
            }
            cursor = id.clone();
        }
    }
    Ok(missed)
}

/// An upper bound of the ids trimmed or deleted from the stream so far (`None`: none
/// were). `max-deleted-entry-id` only follows XDEL, so when entries were trimmed
/// (`entries-added` > `length`) the first remaining entry stands in: every trimmed entry
/// is older. That bound is conservative: it can only turn a recovery down, never let a
/// gap through.
async fn max_deleted(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<Option<Id>> {
    let info: redis::RedisResult<RValue> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await;
    let Ok(RValue::Array(kv)) = info else {
        // No stream yet: nothing was ever trimmed.
        return Ok(None);
    };
    let (mut deleted, mut first, mut added, mut len) = (None, None, 0u64, 0u64);
    for pair in kv.chunks(2) {
        let key: String = redis::from_redis_value(pair[0].clone()).unwrap_or_default();
        let text = || redis::from_redis_value::<String>(pair[1].clone()).unwrap_or_default();
        match key.as_str() {
            "max-deleted-entry-id" => deleted = parse_id(&text()).filter(|i| *i != (0, 0)),
            "entries-added" => added = redis::from_redis_value(pair[1].clone()).unwrap_or(0),
            "length" => len = redis::from_redis_value(pair[1].clone()).unwrap_or(0),
            "first-entry" => {
                first = entries(&RValue::Array(vec![pair[1].clone()]))
                    .first()
                    .and_then(|(id, _)| parse_id(id))
            }
            _ => {}
        }
    }
    if added <= len {
        return Ok(deleted);
    }
    Ok(match (deleted, first) {
        (Some(d), Some(f)) => Some(d.max(f)),
        (d, f) => d.or(f),
    })
}
