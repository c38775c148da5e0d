//! The session records of a store that keeps them in this process: the in-memory store
//! of one node ([`super::recovery::MemoryRecovery`]) and the mesh's replicas of every
//! node's sessions. The rules of [`super::SessionStore`] on a map: a taken session
//! refuses the writes of the instance it left until its new socket claims it, and a
//! stale instance cannot overwrite or discard a session another instance owns.

use std::collections::HashMap;

use super::recovery::now_ms;
use super::SessionRecord;

/// Sessions by pid. See the module documentation.
#[derive(Debug)]
pub struct SessionTable {
    /// How long a disconnected session stays recoverable (ms).
    max_ms: u64,
    /// Whether connected sessions are rewritten periodically (a cluster's keepalive):
    /// then one not rewritten for `max_ms` belongs to a node that is gone, and expires.
    refreshed: bool,
    sessions: HashMap<String, SessionRecord>,
    /// Taken by a reconnect (unix ms): a late write of the instance it left is refused.
    taken: HashMap<String, u64>,
}

impl SessionTable {
    pub fn new(max_disconnection: std::time::Duration, refreshed: bool) -> Self {
        SessionTable {
            max_ms: max_disconnection.as_millis() as u64,
            refreshed,
            sessions: HashMap::new(),
            taken: HashMap::new(),
        }
    }

    /// Writes a session, unless a reconnect took it or another instance owns it (the
    /// writer's connection dropped unnoticed). Returns whether it was written.
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

    /// A record from another store's copy: kept unless this table has one.
    pub fn adopt(&mut self, rec: &SessionRecord) {
        if !self.taken.contains_key(&rec.pid) {
            self.sessions
                .entry(rec.pid.clone())
                .or_insert_with(|| rec.clone());
        }
    }

    /// Every record held.
    pub fn records(&self) -> Vec<SessionRecord> {
        self.sessions.values().cloned().collect()
    }

    /// The record of `pid`, if held.
    pub fn get(&self, pid: &str) -> Option<&SessionRecord> {
        self.sessions.get(pid)
    }

    /// Takes a session out: of two callers, one gets it; an expired one is nobody's.
    pub fn take(&mut self, pid: &str) -> Option<SessionRecord> {
        let rec = self.sessions.remove(pid)?;
        let now = now_ms();
        self.taken.insert(pid.to_owned(), now);
        (rec.connected || rec.seen.unwrap_or(0) + self.max_ms >= now).then_some(rec)
    }

    /// Another store took `pid`: this copy is gone too.
    pub fn taken_elsewhere(&mut self, pid: &str) {
        self.sessions.remove(pid);
        self.taken.insert(pid.to_owned(), now_ms());
    }

    /// Drops expired sessions and old take markers.
    pub fn sweep(&mut self) {
        let now = now_ms();
        let (max, refreshed) = (self.max_ms, self.refreshed);
        self.sessions
            .retain(|_, r| (r.connected && !refreshed) || r.seen.unwrap_or(0) + max >= now);
        self.taken.retain(|_, at| *at + max >= now);
    }

    /// How many sessions are held.
    pub fn count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    const MAX: Duration = Duration::from_secs(120);

    fn rec(pid: &str, owner: &str, seen: u64, connected: bool) -> SessionRecord {
        serde_json::from_value(json!({
            "sid": "s", "pid": pid, "rooms": ["s"], "owner": owner, "seen": seen,
            "connected": connected,
        }))
        .unwrap()
    }

    #[test]
    fn one_take_wins_and_the_instance_it_left_cannot_write_it_back() {
        let mut m = SessionTable::new(MAX, true);
        assert!(m.save(&rec("p", "i1", now_ms(), false)));
        assert!(m.take("p").is_some());
        assert!(m.take("p").is_none(), "the second take finds nothing");
        assert!(
            !m.save(&rec("p", "i1", now_ms(), false)),
            "a late write is refused"
        );
        m.claim(&rec("p", "i2", now_ms(), true));
        assert_eq!(m.get("p").and_then(|r| r.owner.as_deref()), Some("i2"));
        assert!(
            !m.save(&rec("p", "i1", now_ms(), false)),
            "nor can another owner's"
        );
        m.discard(&rec("p", "i1", now_ms(), false));
        assert!(
            m.get("p").is_some(),
            "a discard by a stale owner is ignored"
        );
        m.discard(&rec("p", "i2", now_ms(), false));
        assert_eq!(m.count(), 0);
    }

    #[test]
    fn expired_sessions_are_not_taken_and_are_swept() {
        let mut m = SessionTable::new(MAX, true);
        m.save(&rec("old", "i", 1, false));
        m.save(&rec("dead-node", "i", 1, true));
        m.save(&rec("new", "i", now_ms(), false));
        assert!(m.take("old").is_none());
        m.sweep();
        assert_eq!(m.count(), 1);
        m.taken_elsewhere("new");
        assert!(m.take("new").is_none());
    }

    #[test]
    fn without_refreshes_a_connected_session_never_expires() {
        let mut m = SessionTable::new(MAX, false);
        m.save(&rec("live", "i", 1, true));
        m.sweep();
        assert_eq!(
            m.count(),
            1,
            "one node's own connected socket stays recoverable"
        );
    }
}
