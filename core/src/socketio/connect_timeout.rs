//! `connectTimeout`: a connection that joins no namespace in time is closed.
//!
//! Every connection has the same timeout, so deadlines arrive in the order connections
//! opened: one FIFO queue and one sweeper task serve them all, instead of a timer task
//! per connection (which would cost each idle connection a task for its first 45 s).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::client::ClientData;
use crate::engineio::{CloseReason, Session};

type Entry = (Instant, Weak<Session<ClientData>>);

#[derive(Default)]
pub(crate) struct ConnectTimeouts {
    queue: Mutex<VecDeque<Entry>>,
    sweeper: std::sync::OnceLock<()>,
}

impl ConnectTimeouts {
    /// Starts the clock of a new connection.
    pub(crate) fn watch(self: &Arc<Self>, s: &Arc<Session<ClientData>>, timeout: Duration) {
        self.queue
            .lock()
            .push_back((Instant::now() + timeout, Arc::downgrade(s)));
        self.sweeper.get_or_init(|| {
            let me = Arc::downgrade(self);
            tokio::spawn(sweep(me, timeout));
        });
    }
}

async fn sweep(me: Weak<ConnectTimeouts>, timeout: Duration) {
    loop {
        let next = match me.upgrade() {
            Some(t) => t.queue.lock().front().map(|(d, _)| *d),
            None => return,
        };
        tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + timeout)).await;
        let Some(t) = me.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Entry> = {
            let mut q = t.queue.lock();
            let n = q.iter().take_while(|(d, _)| *d <= now).count();
            q.drain(..n).collect()
        };
        for (_, weak) in expired {
            if let Some(s) = weak.upgrade() {
                if s.data.sockets().is_empty() && !s.is_closed() {
                    tracing::debug!(sid = %s.id(), "no namespace joined in time, closing");
                    s.close(CloseReason::ForcedClose);
                }
            }
        }
    }
}
