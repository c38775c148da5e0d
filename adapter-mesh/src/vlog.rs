//! The packet log one node keeps for connection state recovery on the mesh, and its
//! offsets: vectors of per-sender sequence numbers, so that an offset one node gave a
//! client means the same thing on every node.
//!
//! With recovery on, every logged message goes to every live node (not only to the
//! nodes the room index lists), numbered by its sender: `(sender, seq)`, the sender
//! being the process's incarnation. Each node delivers the messages in the order they
//! reach it, one sender's in that sender's order, and gives every delivered packet the
//! offset `t~s1:n1~s2:n2…`: the node's clock `t` (ms, base 36) and, for each sender,
//! the highest sequence number it delivered so far. A client holding that offset has
//! received everything meant for it from `s1` up to `n1`, from `s2` up to `n2`, and so
//! on, whichever node it was on. Any node that received the same messages can therefore
//! replay what the client missed: the entries past the offset, sender by sender.
//!
//! A node cannot replay a span it does not hold, and refuses then ([`NotRecovered::LogGap`]):
//! a sender whose first entry here comes after the client's offset, a span lost on a
//! broken stream, entries trimmed by size or age that the session may have missed (as
//! judged by `gap_is_safe`), or a sender it never heard from while the offset is older
//! than this log.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use skein::adapter::recovery::{gap_is_safe, targets, with_offset};
use skein::adapter::{
    EventPacket, LoggedPacket, NotRecovered, RecoveryConfig, Room, SessionRecord,
};

/// A node's incarnation as a sender of logged messages.
pub type Sender = u64;

/// A message of a sender an offset does not name, that arrived here this long before
/// the offset was given, was not missed by its client: the node that gave the offset
/// had it too (nodes receive the same messages within this margin), or the client's
/// session started after it.
pub const ARRIVAL_MARGIN: u64 = 1_000;

/// A parsed offset: when it was given (the giving node's clock, ms) and, per sender,
/// the highest sequence number delivered by then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offset {
    pub t: u64,
    pub seqs: BTreeMap<Sender, u64>,
}

impl Offset {
    pub fn parse(s: &str) -> Option<Offset> {
        let mut parts = s.split('~');
        let t = u64::from_str_radix(parts.next()?, 36).ok()?;
        let mut seqs = BTreeMap::new();
        for p in parts {
            let (k, n) = p.split_once(':')?;
            seqs.insert(
                u64::from_str_radix(k, 36).ok()?,
                u64::from_str_radix(n, 36).ok()?,
            );
        }
        Some(Offset { t, seqs })
    }

    pub fn format(&self) -> String {
        let mut s = radix36(self.t);
        for (k, n) in &self.seqs {
            s.push('~');
            s.push_str(&radix36(*k));
            s.push(':');
            s.push_str(&radix36(*n));
        }
        s
    }

    /// What a client holds after receiving a packet with offset `other` on top of this
    /// one: the higher of both, sender by sender.
    pub fn merge(&mut self, other: &Offset) {
        self.t = self.t.max(other.t);
        for (k, n) in &other.seqs {
            let e = self.seqs.entry(*k).or_default();
            *e = (*e).max(*n);
        }
    }

    /// Whether `from` counts messages of a sender this position (a node's) has not
    /// delivered yet: they are in flight to it (a sender it never heard from is not
    /// waited for).
    pub fn lacks(&self, from: &Offset) -> bool {
        from.seqs
            .iter()
            .any(|(k, n)| self.seqs.get(k).is_some_and(|m| m < n))
    }

    fn get(&self, sender: Sender) -> u64 {
        self.seqs.get(&sender).copied().unwrap_or(0)
    }
}

fn radix36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = Vec::with_capacity(13);
    loop {
        buf.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    buf.reverse();
    String::from_utf8(buf).unwrap_or_default()
}

/// A broadcast kept for replays.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    pub nsp: String,
    pub packet: EventPacket,
    pub rooms: Vec<Room>,
    pub except: Vec<Room>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    sender: Sender,
    seq: u64,
    at_ms: u64,
    /// The offset it was delivered with here.
    #[serde(with = "offset_text")]
    offset: Offset,
    kept: Kept,
}

mod offset_text {
    use super::Offset;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(o: &Offset, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&o.format())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Offset, D::Error> {
        let text = String::deserialize(d)?;
        Offset::parse(&text).ok_or_else(|| serde::de::Error::custom("not an offset"))
    }
}

/// A log as another node copies it when it starts (see [`VectorLog::install`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    started: u64,
    entries: Vec<Entry>,
    senders: Vec<(Sender, SenderState)>,
    #[serde(with = "offset_text")]
    now: Offset,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct SenderState {
    /// The first sequence number received here: anything before it is unknown.
    first: u64,
    last: u64,
    /// Spans that never arrived (a stream that broke).
    gaps: Vec<(u64, u64)>,
    /// The last entry trimmed: (seq, unix ms).
    trimmed: Option<(u64, u64)>,
    /// When its last message arrived (unix ms).
    last_at: u64,
}

/// One node's log. See the module documentation.
pub struct VectorLog {
    cfg: RecoveryConfig,
    /// When this log started (unix ms): an offset given before may name spans it lacks.
    started: u64,
    /// The broadcasts that can be replayed (volatile ones and socket management only
    /// advance the offsets).
    entries: VecDeque<Entry>,
    senders: BTreeMap<Sender, SenderState>,
    /// The offset of the last message delivered here.
    now: Offset,
}

impl VectorLog {
    pub fn new(cfg: RecoveryConfig, started: u64) -> Self {
        VectorLog {
            cfg,
            started,
            entries: VecDeque::new(),
            senders: BTreeMap::new(),
            now: Offset {
                t: started,
                seqs: BTreeMap::new(),
            },
        }
    }

    /// The position now: what a new session records as its start.
    pub fn position(&self) -> &Offset {
        &self.now
    }

    /// Records message `seq` of `sender`, arrived at `at_ms`; `false` for one already
    /// recorded. `kept`: a broadcast to keep for replays.
    pub fn append(&mut self, sender: Sender, seq: u64, at_ms: u64, kept: Option<Kept>) -> bool {
        let s = self.senders.entry(sender).or_default();
        if s.first == 0 {
            s.first = seq;
        } else if seq <= s.last {
            return false;
        } else if seq > s.last + 1 {
            tracing::warn!(
                sender = radix36(sender),
                from = s.last + 1,
                to = seq - 1,
                "mesh log: messages of a sender never arrived (a stream broke)"
            );
            s.gaps.push((s.last + 1, seq - 1));
        }
        s.last = seq;
        s.last_at = at_ms;
        self.now.t = self.now.t.max(at_ms);
        self.now.seqs.insert(sender, seq);
        if let Some(kept) = kept {
            self.entries.push_back(Entry {
                sender,
                seq,
                at_ms,
                offset: self.now.clone(),
                kept,
            });
        }
        self.trim(at_ms);
        true
    }

    /// Whether message `seq` of `sender` is recorded already (a copied log had it).
    pub fn has(&self, sender: Sender, seq: u64) -> bool {
        self.senders
            .get(&sender)
            .is_some_and(|s| s.first != 0 && seq <= s.last)
    }

    /// Trims entries past the log's length or age (the newest always stays).
    pub fn trim(&mut self, now: u64) {
        let max_age = self.cfg.log_max_age.as_millis() as u64;
        while let Some(front) = self.entries.front().filter(|_| self.entries.len() > 1) {
            if self.entries.len() <= self.cfg.log_max_len && front.at_ms + max_age >= now {
                break;
            }
            if let Some(e) = self.entries.pop_front() {
                if let Some(s) = self.senders.get_mut(&e.sender) {
                    s.trimmed = Some((e.seq, e.at_ms));
                }
            }
        }
    }

    /// Whether this log has heard from `sender` (and not retired it).
    pub fn knows(&self, sender: Sender) -> bool {
        self.senders.contains_key(&sender)
    }

    /// A copy of this log, for a node that starts.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            started: self.started,
            entries: self.entries.iter().cloned().collect(),
            senders: self.senders.iter().map(|(k, s)| (*k, s.clone())).collect(),
            now: self.now.clone(),
        }
    }

    /// Takes over a peer's log, as this node's history: what reached this node since it
    /// started must be appended again after it (duplicates are then dropped). Offsets
    /// given before (by this node, with nothing delivered yet: they name no sender) stay
    /// valid: a replay skips what arrived well before them ([`ARRIVAL_MARGIN`]).
    pub fn install(&mut self, snap: Snapshot) {
        self.entries = snap.entries.into();
        self.senders = snap.senders.into_iter().collect();
        self.now.merge(&snap.now);
        self.started = snap.started;
    }

    /// How long after its last message a sender that is gone for good is still named in
    /// offsets: past this, a replay ignores its entries for offsets that do not name it.
    fn retire_after(&self) -> u64 {
        (self.cfg.max_disconnection_duration + self.cfg.log_max_age).as_millis() as u64
    }

    /// Forgets the senders that are gone for good (`live` says which are not) and
    /// silent for [`Self::retire_after`], so that offsets stay short across restarts.
    pub fn retire(&mut self, live: impl Fn(Sender) -> bool, now: u64) {
        let after = self.retire_after();
        let old: Vec<Sender> = self
            .senders
            .iter()
            .filter(|(k, s)| !live(**k) && s.last_at + after < now)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            self.senders.remove(&k);
            self.now.seqs.remove(&k);
        }
    }

    /// What `rec` missed in `nsp` after `offset` (after its start when `None`), each
    /// with the offset the client holds once it has it.
    pub fn missed(
        &self,
        nsp: &str,
        rec: &SessionRecord,
        offset: Option<&str>,
    ) -> Result<Vec<LoggedPacket>, NotRecovered> {
        let from = offset
            .or(rec.offset.as_deref())
            .ok_or(NotRecovered::BadOffset)?;
        let from = Offset::parse(from).ok_or(NotRecovered::BadOffset)?;
        self.covers(&from, rec)?;
        let mut rooms = rec.rooms.clone();
        rooms.push(rec.sid.clone());
        let mut holds = from.clone();
        let mut missed = Vec::new();
        let before = |sender: Sender, at: u64| {
            !from.seqs.contains_key(&sender) && at + ARRIVAL_MARGIN < from.t
        };
        for e in &self.entries {
            if e.seq <= from.get(e.sender) || before(e.sender, e.at_ms) {
                continue;
            }
            if e.kept.nsp != nsp || !targets(&rooms, &e.kept.rooms, &e.kept.except) {
                continue;
            }
            holds.merge(&e.offset);
            let offset = holds.format();
            missed.push(LoggedPacket {
                packet: EventPacket {
                    event: e.kept.packet.event.clone(),
                    data: with_offset(e.kept.packet.data.clone(), &offset),
                },
                offset,
            });
        }
        Ok(missed)
    }

    /// Whether this log holds every message after `from` (see the module documentation).
    fn covers(&self, from: &Offset, rec: &SessionRecord) -> Result<(), NotRecovered> {
        for (k, s) in &self.senders {
            let named = from.seqs.contains_key(k);
            if !named && s.last_at + ARRIVAL_MARGIN < from.t {
                // All of it arrived before the offset: nothing of it is owed.
                continue;
            }
            let after = from.get(*k);
            // What came before its first entry here was sent before this log started:
            // owed only if the offset names the sender, or predates the log.
            if s.first > after + 1 && (named || from.t <= self.started + ARRIVAL_MARGIN) {
                return Err(NotRecovered::LogGap);
            }
            if s.gaps.iter().any(|&(_, to)| to > after) {
                return Err(NotRecovered::LogGap);
            }
            if let Some((seq, at)) = s.trimmed {
                if seq > after && !gap_is_safe(at, rec) {
                    return Err(NotRecovered::LogGap);
                }
            }
        }
        // A sender this log never heard from, named by an offset older than the log:
        // what it sent before this log started is not here.
        let unknown = from.seqs.keys().any(|k| !self.senders.contains_key(k));
        if unknown && from.t < self.started {
            return Err(NotRecovered::LogGap);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "vlog_tests.rs"]
mod tests;
