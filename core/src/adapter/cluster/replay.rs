//! The hand-off of a replay to a log's reader task.
//!
//! A [`ClusterLog`](super::ClusterLog) must replay what a session missed at a point
//! where nothing read from the log later can reach the socket first: between two reads
//! of the task that delivers the log on this node. Every log therefore sends the replay
//! to that task and waits for its answer. This is that channel, written once for every
//! backend: the caller's side ([`Replays::run`]) and the reader's ([`Replay`]).

use tokio::sync::{mpsc, oneshot};

use crate::adapter::{AdapterError, Attach, NotRecovered, SessionRecord};

/// A replay waiting for the reader: what the session missed after `offset` (after its
/// start when `None`) is looked up by the reader, then [`Replay::finish`] attaches it.
pub struct Replay {
    pub nsp: String,
    pub rec: SessionRecord,
    pub offset: Option<String>,
    attach: Attach,
    done: oneshot::Sender<Result<(), NotRecovered>>,
}

impl Replay {
    /// Answers the caller: on success the socket is attached with the missed packets,
    /// here, in the reader, so nothing read later overtakes them.
    pub fn finish(self, found: Result<Vec<crate::adapter::LoggedPacket>, NotRecovered>) {
        let _ = self.done.send(found.map(self.attach));
    }

    /// Refuses the replay because the log cannot be read now (the client gets a new
    /// session rather than wait for the backend).
    pub fn refuse(self, why: &str) {
        let _ = self
            .done
            .send(Err(NotRecovered::Backend(AdapterError::Unavailable(
                why.to_owned(),
            ))));
    }
}

/// The caller's side: cloneable, unbounded (a replay is one per reconnecting client,
/// and each waits for its answer, so the queue is bounded by the clients waiting).
#[derive(Clone)]
pub struct Replays(mpsc::UnboundedSender<Replay>);

/// The reader's side.
pub type ReplayReceiver = mpsc::UnboundedReceiver<Replay>;

impl Replays {
    /// The two ends: keep [`Replays`] in the log, give the receiver to its reader task.
    pub fn channel() -> (Replays, ReplayReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Replays(tx), rx)
    }

    /// Sends a replay to the reader and waits for its answer. A stopped reader refuses
    /// it as [`AdapterError::Unavailable`]; a reader that dropped it without an answer
    /// (shutdown) means the socket is gone.
    pub async fn run(
        &self,
        nsp: &str,
        rec: &SessionRecord,
        offset: Option<&str>,
        attach: Attach,
    ) -> Result<(), NotRecovered> {
        let (done, rx) = oneshot::channel();
        let r = Replay {
            nsp: nsp.to_owned(),
            rec: rec.clone(),
            offset: offset.map(str::to_owned),
            attach,
            done,
        };
        if self.0.send(r).is_err() {
            return Err(NotRecovered::Backend(AdapterError::Unavailable(
                "the log reader stopped".into(),
            )));
        }
        rx.await.unwrap_or(Err(NotRecovered::Gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::LoggedPacket;
    use std::sync::{Arc, Mutex};

    fn rec() -> SessionRecord {
        serde_json::from_value(serde_json::json!({"sid": "s", "pid": "p", "rooms": []}))
            .expect("a session record")
    }

    fn attach(got: &Arc<Mutex<Option<usize>>>) -> Attach {
        let got = got.clone();
        Box::new(move |p: Vec<LoggedPacket>| *got.lock().unwrap() = Some(p.len()))
    }

    #[tokio::test]
    async fn the_reader_attaches_and_answers() {
        let (replays, mut rx) = Replays::channel();
        let reader = tokio::spawn(async move {
            let r = rx.recv().await.unwrap();
            assert_eq!((r.nsp.as_str(), r.offset.as_deref()), ("/chat", Some("7")));
            r.finish(Ok(vec![]));
        });
        let got = Arc::new(Mutex::new(None));
        let res = replays.run("/chat", &rec(), Some("7"), attach(&got)).await;
        reader.await.unwrap();
        assert_eq!(res, Ok(()));
        assert_eq!(*got.lock().unwrap(), Some(0), "attached, in the reader");
    }

    #[tokio::test]
    async fn a_refusal_or_a_stopped_reader_is_an_error_and_attaches_nothing() {
        let got = Arc::new(Mutex::new(None));
        let (replays, mut rx) = Replays::channel();
        tokio::spawn(async move { rx.recv().await.unwrap().refuse("down") });
        let res = replays.run("/", &rec(), None, attach(&got)).await;
        assert!(
            matches!(res, Err(NotRecovered::Backend(AdapterError::Unavailable(w))) if w == "down")
        );

        let (replays, mut rx) = Replays::channel();
        tokio::spawn(async move { drop(rx.recv().await) });
        assert_eq!(
            replays.run("/", &rec(), None, attach(&got)).await,
            Err(NotRecovered::Gone)
        );

        let (replays, rx) = Replays::channel();
        drop(rx);
        assert!(matches!(
            replays.run("/", &rec(), None, attach(&got)).await,
            Err(NotRecovered::Backend(AdapterError::Unavailable(_)))
        ));
        assert_eq!(*got.lock().unwrap(), None);
    }
}
