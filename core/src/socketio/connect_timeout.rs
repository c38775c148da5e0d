//! `connectTimeout`: a connection that joins no namespace in time is closed.
//!
//! One sweeper task scans the sessions a few times per timeout and closes those that
//! are old enough and still have no socket. A connection pays one timestamp for this;
//! nothing is queued per connection, so a storm of short-lived connections leaves
//! nothing behind (a per-connection timer, or a queue of weak references, kept memory
//! for the whole timeout after each connection had gone).

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{ClientData, SioHandler};
use crate::engineio::{CloseReason, Engine};

/// Starts the sweeper of `engine` (once per server).
pub(crate) fn start(engine: Weak<Engine<SioHandler>>, timeout: Duration) {
    let every = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let now = Instant::now();
            engine.for_each_session(|s| {
                if expired(&s.data, now, timeout) && !s.is_closed() {
                    tracing::debug!(sid = %s.id(), "no namespace joined in time, closing");
                    s.close(CloseReason::ForcedClose);
                }
            });
        }
    });
}

fn expired(d: &ClientData, now: Instant, timeout: Duration) -> bool {
    now.duration_since(d.opened) >= timeout && d.has_no_socket()
}
