//! Recovery on the mesh, first step (issue 13, item 5): the store a backup peer keeps of
//! another node's sessions and delivered-packet log, and the atomic take a reconnect
//! runs against it. Not wired into the transport yet: `--adapter mesh --recovery` is
//! refused at startup until it is (see the README's mesh section).
//!
//! The design it is built for (replication to peers, never Raft: consensus stays off
//! the per-message and per-socket path):
//! - each node numbers the broadcasts it delivers to its own sockets, per incarnation
//!   (offset `<origin>-<seq>`, `origin` being the node's incarnation id), and streams
//!   every logged packet and every session change to its R backups (the next live
//!   nodes in sorted membership order);
//! - a backup keeps one [`ReplicaStore`]: per origin, a bounded log of those packets
//!   and the origin's session records;
//! - a reconnect on any node asks who holds the pid; the owner (alive) or a backup
//!   answers with [`ReplicaStore::take`]: the record and the packets after the
//!   client's offset, atomically (one restorer wins);
//! - a span the backup did not receive (it joined after, or its stream dropped frames)
//!   is a gap: a recovery whose offset lies before the gap is refused rather than
//!   replaying a hole. Entries trimmed by size or age are judged as in
//!   `skein::adapter::recovery` ([`gap_is_safe`]).
//!
//! Not covered yet (to wire it): broadcasts sent between the origin's death and its
//! clients' reconnects, and those in flight to the origin when it died. There is no
//! global log; the plan (README, mesh section): every logged broadcast carries its
//! sender's id and sequence; senders send room broadcasts to the listed nodes and to
//! their first backups; an origin delivers a packet only once its backup acknowledged
//! the replicated copy (so the backup knows every packet a client could have got, and
//! which sender message it was); the backup keeps the senders' copies until the
//! origin's copy confirms them, and on the origin's death the unconfirmed ones (never
//! delivered) follow its log in a replay; the backup takes over the index interest of
//! the dead origin's sessions; a restoring node joins the rooms before the take and
//! drops what it gets both ways by (sender, sequence); a disconnected session keeps
//! its rooms' interest on a live origin until it expires.
//!
//! What a second simultaneous failure loses: the sessions of a node whose backups all
//! died with it (with R = 1, the owner and its one backup).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use skein::adapter::recovery::{gap_is_safe, now_ms, targets, with_offset};
use skein::adapter::{
    EventPacket, LoggedPacket, NotRecovered, RecoveryConfig, Room, SessionRecord,
};

/// One packet an origin node delivered, as replicated to its backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedPacket {
    pub seq: u64,
    pub at_ms: u64,
    /// The broadcast it was: its sender and the sender's sequence number (what ties the
    /// origin's copy to the one the sender sent this backup directly, see [`Copy`]).
    pub sender: String,
    pub sender_seq: u64,
    /// The packet with its offset as last argument (as delivered).
    pub packet: EventPacket,
    pub rooms: Vec<Room>,
    pub except: Vec<Room>,
}

/// A broadcast a sender sent straight to a backup of one of its targets (the origin),
/// held until the origin's replicated copy confirms it: if the origin dies first, the
/// unconfirmed ones are what it never delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Copy {
    pub sender: String,
    pub sender_seq: u64,
    pub at_ms: u64,
    /// The packet as sent (no offset yet).
    pub packet: EventPacket,
    pub rooms: Vec<Room>,
    pub except: Vec<Room>,
}

/// An offset of the mesh: `<origin>-<seq>` (the origin may contain `-`).
pub fn parse_offset(offset: &str) -> Option<(&str, u64)> {
    let (origin, seq) = offset.rsplit_once('-')?;
    Some((origin, seq.parse().ok()?))
}

pub fn format_offset(origin: &str, seq: u64) -> String {
    format!("{origin}-{seq}")
}

/// What an origin streams to its backups, in order (one stream per backup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicaOp {
    /// The stream (re)opened: everything from `next_seq` on follows.
    Start { next_seq: u64 },
    /// A packet the origin delivered.
    Packet(ReplicatedPacket),
    /// A sender's copy of a broadcast to the origin (sent by the sender, not the origin).
    Copy(Copy),
    /// A session write ([`ReplicaStore::save`]).
    Save(SessionRecord),
    /// A session claimed by its restored socket ([`ReplicaStore::claim`]).
    Claim(SessionRecord),
    /// A session forgotten ([`ReplicaStore::discard`]).
    Discard(SessionRecord),
}

/// The backups of `origin`: the `r` nodes after it in sorted order among `live` (which
/// may or may not list `origin` itself), wrapping around. Every node computes the same
/// list from the same view, so a reconnect knows whom to ask first.
pub fn backups_of<'a>(origin: &str, live: &[&'a str], r: usize) -> Vec<&'a str> {
    let mut others: Vec<&'a str> = live.iter().copied().filter(|n| *n != origin).collect();
    others.sort_unstable();
    others.dedup();
    let start = others.partition_point(|n| *n < origin);
    (0..others.len().min(r))
        .map(|i| others[(start + i) % others.len()])
        .collect()
}

#[derive(Debug, Default)]
struct OriginLog {
    entries: VecDeque<ReplicatedPacket>,
    /// The first seq this store received from the origin: anything before is unknown.
    first: Option<u64>,
    /// The next seq expected.
    next: u64,
    /// Spans [from, to] of seqs that never arrived here.
    gaps: Vec<(u64, u64)>,
    /// The last entry trimmed: (seq, unix ms).
    dropped: Option<(u64, u64)>,
    /// Senders' copies not confirmed by the origin yet, in arrival order.
    copies: VecDeque<Copy>,
    /// When the last copy trimmed unconfirmed was sent (unix ms).
    copy_dropped: Option<u64>,
    /// Per sender, the highest sequence the origin delivered (as replicated here).
    confirmed: HashMap<String, u64>,
}

impl OriginLog {
    /// Trims entries (or copies) past the log's length or age; the newest always stays.
    fn trim<T>(q: &mut VecDeque<T>, cfg: &RecoveryConfig, at: impl Fn(&T) -> u64) -> Option<T> {
        let now = now_ms();
        let max_age = cfg.log_max_age.as_millis() as u64;
        let mut last = None;
        while let Some(front) = q.front().filter(|_| q.len() > 1) {
            if q.len() <= cfg.log_max_len && at(front) + max_age >= now {
                break;
            }
            last = q.pop_front();
        }
        last
    }
}

/// Another node's sessions and delivered packets, as one backup keeps them.
#[derive(Debug)]
pub struct ReplicaStore {
    cfg: RecoveryConfig,
    logs: HashMap<String, OriginLog>,
    sessions: HashMap<String, SessionRecord>,
    /// Taken by a reconnect (unix ms): a late write of the instance it left is refused.
    taken: HashMap<String, u64>,
}

impl ReplicaStore {
    pub fn new(cfg: RecoveryConfig) -> Self {
        ReplicaStore {
            cfg,
            logs: HashMap::new(),
            sessions: HashMap::new(),
            taken: HashMap::new(),
        }
    }

    /// The origin's replication stream (re)opened: from now on it sends everything
    /// from `next_seq` on. What lies between what arrived before and `next_seq` is a gap.
    pub fn start(&mut self, origin: &str, next_seq: u64) {
        let log = self.logs.entry(origin.to_owned()).or_default();
        match log.first {
            None => log.first = Some(next_seq),
            Some(_) if next_seq > log.next => log.gaps.push((log.next, next_seq - 1)),
            Some(_) => return,
        }
        log.next = next_seq;
    }

    /// Stores a packet the origin delivered. A seq past the next expected records the
    /// span in between as a gap; one already seen (a resend) is ignored.
    pub fn append(&mut self, origin: &str, p: ReplicatedPacket) {
        let log = self.logs.entry(origin.to_owned()).or_default();
        match log.first {
            None => log.first = Some(p.seq),
            Some(_) if p.seq < log.next => return,
            Some(_) if p.seq > log.next => log.gaps.push((log.next, p.seq - 1)),
            Some(_) => {}
        }
        log.next = p.seq + 1;
        // The origin delivers each sender's broadcasts in the sender's order: its copies
        // up to this one are settled (delivered, or never received by the origin).
        let c = log.confirmed.entry(p.sender.clone()).or_default();
        *c = (*c).max(p.sender_seq);
        let settled = *c;
        log.copies
            .retain(|x| x.sender != p.sender || x.sender_seq > settled);
        log.entries.push_back(p);
        if let Some(front) = OriginLog::trim(&mut log.entries, &self.cfg, |e| e.at_ms) {
            log.dropped = Some((front.seq, front.at_ms));
        }
        let oldest = log.dropped.map_or(0, |(s, _)| s);
        log.gaps.retain(|&(_, to)| to > oldest);
    }

    /// Holds a sender's copy of a broadcast to `origin` until the origin confirms it.
    pub fn copy(&mut self, origin: &str, c: Copy) {
        let log = self.logs.entry(origin.to_owned()).or_default();
        if log
            .confirmed
            .get(&c.sender)
            .is_some_and(|&s| s >= c.sender_seq)
        {
            return;
        }
        log.copies.push_back(c);
        if let Some(gone) = OriginLog::trim(&mut log.copies, &self.cfg, |c| c.at_ms) {
            log.copy_dropped = Some(gone.at_ms);
        }
    }

    /// Applies what `origin` streamed.
    pub fn apply(&mut self, origin: &str, op: ReplicaOp) {
        match op {
            ReplicaOp::Start { next_seq } => self.start(origin, next_seq),
            ReplicaOp::Packet(p) => self.append(origin, p),
            ReplicaOp::Copy(c) => self.copy(origin, c),
            ReplicaOp::Save(rec) => {
                self.save(&rec);
            }
            ReplicaOp::Claim(rec) => self.claim(&rec),
            ReplicaOp::Discard(rec) => self.discard(&rec),
        }
    }

    /// Writes a session, unless a reconnect took it or another instance owns it.
    pub fn save(&mut self, rec: &SessionRecord) -> bool {
        if self.taken.contains_key(&rec.pid) {
            return false;
        }
        if let Some(old) = self.sessions.get(&rec.pid) {
            if old.owner.is_some() && old.owner != rec.owner {
                return false;
            }
        }
        self.sessions.insert(rec.pid.clone(), rec.clone());
        true
    }

    /// Writes a session whatever wrote it last (its restored socket owns it now).
    pub fn claim(&mut self, rec: &SessionRecord) {
        self.taken.remove(&rec.pid);
        self.sessions.insert(rec.pid.clone(), rec.clone());
    }

    /// Forgets a session, unless another instance owns it.
    pub fn discard(&mut self, rec: &SessionRecord) {
        if self
            .sessions
            .get(&rec.pid)
            .is_some_and(|old| old.owner.is_none() || old.owner == rec.owner)
        {
            self.sessions.remove(&rec.pid);
        }
    }

    /// Forgets what an origin's previous life left, once it is known gone for good.
    pub fn forget_origin(&mut self, origin: &str) {
        self.logs.remove(origin);
        self.sessions
            .retain(|_, r| r.node.as_deref() != Some(origin));
    }

    /// Takes a session and what it missed after `offset` (after its start when `None`):
    /// of two callers, one gets it. A session whose span is not fully here is refused
    /// (and taken all the same: it cannot be recovered anywhere else either).
    pub fn take(
        &mut self,
        pid: &str,
        offset: Option<&str>,
    ) -> Result<(SessionRecord, Vec<LoggedPacket>), NotRecovered> {
        let rec = self
            .sessions
            .remove(pid)
            .ok_or(NotRecovered::UnknownSession)?;
        let now = now_ms();
        self.taken.insert(pid.to_owned(), now);
        let max = self.cfg.max_disconnection_duration.as_millis() as u64;
        if !rec.connected && rec.seen.unwrap_or(0) + max < now {
            return Err(NotRecovered::UnknownSession);
        }
        let from = offset
            .or(rec.offset.as_deref())
            .ok_or(NotRecovered::BadOffset)?;
        let (origin, from) = parse_offset(from).ok_or(NotRecovered::BadOffset)?;
        let log = self.logs.get(origin).ok_or(NotRecovered::LogGap)?;
        if from > log.next {
            // Past anything the origin delivered (as far as this store knows).
            return Err(NotRecovered::BadOffset);
        }
        if from + 1 < log.first.unwrap_or(u64::MAX) {
            // Before what this store ever received.
            return Err(NotRecovered::LogGap);
        }
        if log.gaps.iter().any(|&(_, to)| to > from) {
            return Err(NotRecovered::LogGap);
        }
        if let Some((dropped, at)) = log.dropped {
            if dropped > from && !gap_is_safe(at, &rec) {
                return Err(NotRecovered::LogGap);
            }
        }
        if log.copy_dropped.is_some_and(|at| !gap_is_safe(at, &rec)) {
            // A copy trimmed unconfirmed may be one the origin never delivered.
            return Err(NotRecovered::LogGap);
        }
        let mut rooms = rec.rooms.clone();
        rooms.push(rec.sid.clone());
        // Then what the origin never delivered (it died first), numbered on from its
        // last offset: anything the client got came from the log, so it is older.
        let mut missed: Vec<LoggedPacket> = log
            .entries
            .iter()
            .filter(|e| e.seq > from)
            .filter(|e| targets(&rooms, &e.rooms, &e.except))
            .map(|e| LoggedPacket {
                offset: format_offset(origin, e.seq),
                packet: e.packet.clone(),
            })
            .collect();
        let pending = log
            .copies
            .iter()
            .filter(|c| targets(&rooms, &c.rooms, &c.except));
        for (i, c) in pending.enumerate() {
            let offset = format_offset(origin, log.next + i as u64);
            missed.push(LoggedPacket {
                packet: EventPacket {
                    event: c.packet.event.clone(),
                    data: with_offset(c.packet.data.clone(), &offset),
                },
                offset,
            });
        }
        Ok((rec, missed))
    }

    /// Drops expired sessions and old take markers.
    pub fn sweep(&mut self) {
        let now = now_ms();
        let max = self.cfg.max_disconnection_duration.as_millis() as u64;
        self.sessions
            .retain(|_, r| r.connected || r.seen.unwrap_or(0) + max >= now);
        self.taken.retain(|_, at| *at + max >= now);
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
