//! Gathering the acks of a broadcast with acks, wherever its clients are.
//!
//! Every node that got the broadcast first says how many of its clients it reached
//! ([`AckEvent::Count`]), then forwards each client's ack. The broadcast is complete
//! when every node counted and every counted ack arrived; otherwise it ends at its
//! timeout with what came. One loop does this for every caller: the library's
//! `emit_with_ack` and the gRPC API's `EmitWithAck` stream.

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engineio::Sid;
use crate::socketio::Data;

/// What a broadcast with acks reports, as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum AckEvent {
    /// A node sent the packet to this many of its clients.
    Count { node: String, count: usize },
    /// One client's ack.
    Ack { sid: Option<Sid>, data: Data },
}

/// How a broadcast with acks ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckSummary {
    /// Acks the counting nodes announced.
    pub expected: u64,
    pub received: u64,
    /// The timeout came first.
    pub timed_out: bool,
    /// Nodes that never said how many clients they reached.
    pub missing_nodes: usize,
}

/// The acks of a broadcast: `nodes` nodes will each send one [`AckEvent::Count`].
#[derive(Debug)]
pub struct AckStream {
    pub nodes: usize,
    pub rx: mpsc::UnboundedReceiver<AckEvent>,
    counted: usize,
    summary: AckSummary,
}

impl AckStream {
    pub fn new(nodes: usize, rx: mpsc::UnboundedReceiver<AckEvent>) -> Self {
        AckStream {
            nodes,
            rx,
            counted: 0,
            summary: AckSummary::default(),
        }
    }

    fn complete(&self) -> bool {
        self.counted >= self.nodes && self.summary.received >= self.summary.expected
    }

    /// The next client ack; `None` once every node counted and every counted ack came,
    /// or at `deadline` (then [`AckSummary::timed_out`]).
    pub async fn next_ack(&mut self, deadline: Instant) -> Option<Data> {
        loop {
            if self.complete() {
                return None;
            }
            let ev = tokio::select! {
                ev = self.rx.recv() => ev,
                _ = tokio::time::sleep_until(deadline) => {
                    self.summary.timed_out = true;
                    return None;
                }
            };
            match ev {
                Some(AckEvent::Count { count, .. }) => {
                    self.counted += 1;
                    self.summary.expected += count as u64;
                }
                Some(AckEvent::Ack { data, .. }) => {
                    self.summary.received += 1;
                    return Some(data);
                }
                None => {
                    // Every sender is gone: nothing more can come; the broadcast is
                    // incomplete, and ends at its timeout as it would have.
                    tokio::time::sleep_until(deadline).await;
                    self.summary.timed_out = true;
                    return None;
                }
            }
        }
    }

    /// How it ended (or stands).
    pub fn summary(&self) -> AckSummary {
        AckSummary {
            missing_nodes: self.nodes.saturating_sub(self.counted),
            ..self.summary
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn complete_when_every_node_counted_and_every_ack_came() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = AckStream::new(2, rx);
        let deadline = Instant::now() + Duration::from_secs(5);
        tx.send(AckEvent::Count {
            node: "a".into(),
            count: 1,
        })
        .unwrap();
        tx.send(AckEvent::Ack {
            sid: None,
            data: Data::one(1.into()),
        })
        .unwrap();
        assert_eq!(s.next_ack(deadline).await, Some(Data::one(1.into())));
        tx.send(AckEvent::Count {
            node: "b".into(),
            count: 0,
        })
        .unwrap();
        assert_eq!(s.next_ack(deadline).await, None);
        let sum = s.summary();
        assert_eq!(
            (sum.expected, sum.received, sum.timed_out, sum.missing_nodes),
            (1, 1, false, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_or_client_ends_it_at_the_deadline() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = AckStream::new(2, rx);
        let deadline = Instant::now() + Duration::from_secs(5);
        tx.send(AckEvent::Count {
            node: "a".into(),
            count: 2,
        })
        .unwrap();
        tx.send(AckEvent::Ack {
            sid: None,
            data: Data::empty(),
        })
        .unwrap();
        assert!(s.next_ack(deadline).await.is_some());
        assert_eq!(s.next_ack(deadline).await, None);
        assert_eq!(Instant::now(), deadline);
        let sum = s.summary();
        assert_eq!(
            (sum.expected, sum.received, sum.timed_out, sum.missing_nodes),
            (2, 1, true, 1)
        );
        drop(tx);
    }
}
