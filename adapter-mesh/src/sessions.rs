//! The session records one node keeps for connection state recovery on the mesh: its
//! own sessions and a replica of every other node's (each node streams its session
//! writes to every live peer, see `recovery`). What one copy decides (a take) is told
//! to the others.

use std::collections::HashMap;

use skein::adapter::recovery::now_ms;
use skein::adapter::{RecoveryConfig, SessionRecord};

/// The sessions as one node knows them.
#[derive(Debug)]
pub struct SessionMap {
    cfg: RecoveryConfig,
    sessions: HashMap<String, SessionRecord>,
    /// Taken by a reconnect (unix ms): a late write of the instance it left is refused.
    taken: HashMap<String, u64>,
}

impl SessionMap {
    pub fn new(cfg: RecoveryConfig) -> Self {
        SessionMap {
            cfg,
            sessions: HashMap::new(),
            taken: HashMap::new(),
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

    /// A record from a peer's copy (a node that starts): kept unless this node has one.
    pub fn adopt(&mut self, rec: &SessionRecord) {
        if !self.taken.contains_key(&rec.pid) {
            self.sessions
                .entry(rec.pid.clone())
                .or_insert_with(|| rec.clone());
        }
    }

    /// Every record held, for a node that starts.
    pub fn records(&self) -> Vec<SessionRecord> {
        self.sessions.values().cloned().collect()
    }

    /// The record of `pid`, if this node holds one.
    pub fn get(&self, pid: &str) -> Option<&SessionRecord> {
        self.sessions.get(pid)
    }

    /// Takes a session out: of two callers, one gets it; an expired one is nobody's.
    pub fn take(&mut self, pid: &str) -> Option<SessionRecord> {
        let rec = self.sessions.remove(pid)?;
        let now = now_ms();
        self.taken.insert(pid.to_owned(), now);
        let max = self.cfg.max_disconnection_duration.as_millis() as u64;
        (rec.connected || rec.seen.unwrap_or(0) + max >= now).then_some(rec)
    }

    /// Another node took `pid`: this copy is gone too.
    pub fn taken_elsewhere(&mut self, pid: &str) {
        self.sessions.remove(pid);
        self.taken.insert(pid.to_owned(), now_ms());
    }

    /// Drops expired sessions and old take markers. A session written connected by a
    /// node that died is refreshed by nobody: it expires like a disconnected one.
    pub fn sweep(&mut self) {
        let now = now_ms();
        let max = self.cfg.max_disconnection_duration.as_millis() as u64;
        // Connected sessions are rewritten every keepalive; one not rewritten for the
        // recovery window belongs to a node that is gone.
        self.sessions
            .retain(|_, r| r.seen.unwrap_or(now) + max >= now);
        self.taken.retain(|_, at| *at + max >= now);
    }

    /// How many sessions this node holds.
    pub fn count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(pid: &str, owner: &str, seen: u64, connected: bool) -> SessionRecord {
        serde_json::from_value(json!({
            "sid": "s", "pid": pid, "rooms": ["s"], "owner": owner, "seen": seen,
            "connected": connected,
        }))
        .unwrap()
    }

    #[test]
    fn one_take_wins_and_the_instance_it_left_cannot_write_it_back() {
        let mut m = SessionMap::new(RecoveryConfig::default());
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
        let mut m = SessionMap::new(RecoveryConfig::default());
        m.save(&rec("old", "i", 1, false));
        m.save(&rec("dead-node", "i", 1, true));
        m.save(&rec("new", "i", now_ms(), false));
        assert!(m.take("old").is_none());
        m.sweep();
        assert_eq!(m.count(), 1);
        m.taken_elsewhere("new");
        assert!(m.take("new").is_none());
    }
}
