//! The log task of the mesh's recovery layer (see `recovery`): the one place where this
//! node's log is written and read, so that deliveries keep arrival order and a replay
//! attaches its socket between two deliveries (nothing logged later overtakes it).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use skein::adapter::cluster::{Delivery, Envelope, Inbound, Message, ReplayReceiver};
use skein::adapter::recovery::now_ms;
use tokio::sync::{mpsc, oneshot};

use crate::vlog::{Kept, Offset, Sender, Snapshot, VectorLog};

/// What the log task delivers.
pub(crate) struct Logged {
    pub sender: Sender,
    pub seq: u64,
    pub env: Envelope,
}

/// What the log task is asked besides delivering.
pub(crate) enum Ctl {
    /// A copy of the log, for a node that starts.
    Snapshot(oneshot::Sender<Snapshot>),
    /// The copy this node starts from (`None`: no peer had one); until then the log
    /// task holds what it receives.
    Install(Option<Box<Snapshot>>),
}

/// How often the log forgets senders that are gone for good.
const RETIRE_EVERY: Duration = Duration::from_secs(10);

/// The log task's inputs.
pub(crate) struct Channels {
    pub logged: mpsc::UnboundedReceiver<Logged>,
    pub replays: ReplayReceiver,
    pub ctl: mpsc::UnboundedReceiver<Ctl>,
}

fn kept(env: &Envelope) -> Option<Kept> {
    match &env.msg {
        Message::Broadcast { packet, opts } if !opts.flags.volatile => Some(Kept {
            nsp: env.nsp.to_string(),
            packet: packet.clone(),
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
        }),
        _ => None,
    }
}

/// Delivery to this node's clients.
struct Local {
    /// Per sender, the last message delivered here: the offsets this node gives (and
    /// its position, shown to other tasks). After a copy of a peer's log, the messages
    /// it holds still reach this node on their senders' streams and are delivered then
    /// (once), though the log has them already; an offset names only what was
    /// delivered here, so a client that moves on is owed what the copy held and it did
    /// not get.
    position: Arc<Mutex<Offset>>,
    inbound: Inbound,
}

impl Local {
    fn deliver(&self, log: &mut VectorLog, m: Logged) {
        let Logged { sender, seq, env } = m;
        let offset = {
            let mut p = self.position.lock();
            let last = p.seqs.entry(sender).or_default();
            if seq <= *last {
                return; // a resend
            }
            *last = seq;
            if !log.has(sender, seq) {
                log.append(sender, seq, now_ms(), kept(&env));
            }
            p.t = log.position().t;
            p.format()
        };
        (self.inbound)(env, Delivery::Log(offset));
    }
}

/// The log task: delivers every logged message in arrival order, keeps the broadcasts,
/// and runs the replays between two deliveries. Until the node copied a peer's log
/// ([`Ctl::Install`]) it holds what it receives, and the replays. `position` is what
/// was delivered here, shown to other tasks; `live` lists the live incarnations (to retire the
/// senders that are gone for good).
pub(crate) async fn run(
    mut log: VectorLog,
    mut ch: Channels,
    inbound: Inbound,
    position: Arc<Mutex<Offset>>,
    live: impl Fn() -> Vec<Sender> + Send + 'static,
) {
    let mut retire = tokio::time::interval(RETIRE_EVERY);
    retire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: Option<(Vec<Logged>, Vec<skein::adapter::cluster::Replay>)> =
        Some(Default::default());
    let local = Local { position, inbound };
    loop {
        tokio::select! {
            m = ch.logged.recv() => {
                let Some(m) = m else { return };
                if let Some((logged, _)) = held.as_mut() {
                    logged.push(m);
                    continue;
                }
                local.deliver(&mut log, m);
            }
            r = ch.replays.recv() => {
                let Some(r) = r else { return };
                if let Some((_, replays)) = held.as_mut() {
                    replays.push(r);
                    continue;
                }
                let found = log.missed(&r.nsp, &r.rec, r.offset.as_deref());
                r.finish(found);
            }
            c = ch.ctl.recv() => match c {
                None => return,
                Some(Ctl::Snapshot(tx)) => {
                    let _ = tx.send(log.snapshot());
                }
                Some(Ctl::Install(copy)) => {
                    let Some((logged, replays)) = held.take() else { continue };
                    if let Some(copy) = copy {
                        log.install(*copy);
                    }
                    // What reached this node meanwhile is delivered to its clients (none
                    // of it was), and logged unless the copy had it.
                    for m in logged {
                        local.deliver(&mut log, m);
                    }
                    for r in replays {
                        let found = log.missed(&r.nsp, &r.rec, r.offset.as_deref());
                        r.finish(found);
                    }
                }
            },
            _ = retire.tick() => {
                let live = live();
                log.retire(|s| live.contains(&s), now_ms());
                log.trim(now_ms());
                local.position.lock().seqs.retain(|s, _| log.knows(*s));
            }
        }
    }
}
