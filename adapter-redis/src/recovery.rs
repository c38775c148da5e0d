//! Connection state recovery across nodes: whether a session's socket is still alive
//! somewhere, and the socket-management messages of streams mode.

use std::time::Duration;

use serde_json::{json, Value};
use skein::adapter::recovery::PROBE_TIMEOUT;
use skein::adapter::{Adapter, BroadcastOptions, EventPacket, SessionRecord};
use skein::Data;

use crate::adapter::{rooms_json, RedisAdapter};

/// The server-side event a node sends to ask whether a socket is alive (see
/// [`Adapter::session_alive`]); never handed to applications.
pub(crate) const PROBE_EVENT: &str = "skein:probe";

impl RedisAdapter {
    /// Whether the socket of a session a client presents is alive: a local one is pinged;
    /// one that another live node wrote as connected is asked about there.
    pub(crate) async fn probe_session(&self, rec: &SessionRecord) -> bool {
        let local = match rec
            .sid
            .parse::<skein::Sid>()
            .ok()
            .and_then(|sid| self.local.get(sid))
        {
            Some(s) if s.connected() => return s.probe(PROBE_TIMEOUT).await,
            _ => false,
        };
        // Written as connected by another node that is alive: ask it.
        let remote = rec.connected
            && rec.node.as_deref().is_some_and(|n| {
                n != self.shared.uid && self.shared.live_peers().iter().any(|p| p == n)
            });
        if !remote {
            return local;
        }
        let packet = EventPacket {
            event: PROBE_EVENT.into(),
            data: Data::one(json!(rec.sid)),
        };
        match self
            .server_side_emit_with_ack(packet, PROBE_TIMEOUT + Duration::from_secs(1))
            .await
        {
            Ok(g) => g
                .items
                .iter()
                .any(|d| d.args.first() == Some(&Value::Bool(true))),
            // Cannot tell: do not hand out a session that may be in use.
            Err(_) => true,
        }
    }

    /// Streams mode: logs a socket-management message for the other nodes (true), unless
    /// it is local-only.
    pub(crate) fn to_stream(
        &self,
        kind: &'static str,
        opts: &BroadcastOptions,
        mut data: Value,
    ) -> bool {
        let Some(log) = self.shared.streams.get() else {
            return false;
        };
        if !opts.flags.local {
            data["opts"] = json!({ "rooms": rooms_json(&opts.rooms), "except": rooms_json(&opts.except), "flags": {} });
            log.append_control(self.local.nsp(), kind, &data);
        }
        true
    }
}
