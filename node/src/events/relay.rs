//! The hub's messages between nodes: server-side events of the "/" namespace, over the
//! node's adapter (nothing crosses with the memory adapter: a single node). Their
//! names start with `skein:sub:`, a prefix reserved for the node (the API refuses it
//! in `ServerSideEmit`); they never reach an application's `on_server_event` handlers,
//! which are looked up by exact name.
//!
//! - `skein:sub:hello` `{node}`: a node started; nodes with subscribers advertise.
//! - `skein:sub:adv` `{node, filters}`: the filters of a node's subscribers, sent when
//!   they change and every few seconds; an advert not refreshed expires.
//! - `skein:sub:fwd` `{id, ns, sid, event, wants_ack}` then the event's arguments, to
//!   one node: an event for it to hand to one of its subscribers.
//! - `skein:sub:nack` `{id}`, to one node: its forwarded event found no subscriber.
//! - `skein:sub:ack` `{id}` then the ack's arguments, to the node holding the delivery,
//!   with a server ack: it answers `{"found": bool}`.
//!
//! The last three go to one node only (the cluster layer's send-to-one), so the others
//! neither receive nor decode them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skein::{Data, Namespace};
use skein_proto::v1::ClientEvent;

use super::hub::{AckOutcome, Filter, Hub, Retry};
use crate::grpc::args::to_args;

const HELLO: &str = "skein:sub:hello";
const ADV: &str = "skein:sub:adv";
const FWD: &str = "skein:sub:fwd";
const NACK: &str = "skein:sub:nack";
const ACK: &str = "skein:sub:ack";
/// The prefix of the node's own server-side events.
pub const RESERVED_PREFIX: &str = "skein:";
/// How long `AckClientEvent` waits for the origin node to confirm.
const ACK_WAIT: Duration = Duration::from_secs(5);

fn meta(d: &Data) -> Option<&Value> {
    d.args.first()
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

impl Hub {
    /// Carries the hub's messages over `ns` (the "/" namespace) and says hello.
    pub fn attach(&self, ns: &Arc<Namespace>) {
        *self.inner.ctl.write() = Some(Arc::downgrade(ns));
        let on = |name: &str, f: fn(&Hub, Data, Option<skein::adapter::ServerAck>)| {
            let weak = Arc::downgrade(&self.inner);
            ns.on_server_event(name, move |d, ack| {
                if let Some(inner) = weak.upgrade() {
                    f(&Hub { inner }, d, ack);
                }
            });
        };
        on(HELLO, |hub, _, _| {
            if hub.subscribers() > 0 {
                hub.advertise();
            }
        });
        on(ADV, |hub, d, _| {
            let Some(m) = meta(&d) else { return };
            let filters: Vec<Filter> = m
                .get("filters")
                .cloned()
                .and_then(|f| serde_json::from_value(f).ok())
                .unwrap_or_default();
            hub.set_remote(str_of(m, "node"), filters);
        });
        on(FWD, |hub, mut d, _| {
            let Some(m) = meta(&d).cloned() else { return };
            d.args.remove(0);
            let id = str_of(&m, "id").to_owned();
            let Some((origin, _, _)) = super::hub::parse_id(&id) else {
                return;
            };
            let origin = origin.to_owned();
            let ev = ClientEvent {
                delivery_id: id.clone(),
                namespace: str_of(&m, "ns").to_owned(),
                socket_id: str_of(&m, "sid").to_owned(),
                node: origin.clone(),
                event: str_of(&m, "event").to_owned(),
                args: Some(to_args(d)),
                wants_ack: m.get("wants_ack").and_then(Value::as_bool) == Some(true),
            };
            if !hub.deliver_local(ev) {
                hub.nack(&origin, &id);
            }
        });
        on(NACK, |hub, d, _| {
            let Some(m) = meta(&d) else { return };
            hub.on_nack(str_of(m, "id"));
        });
        on(ACK, |hub, mut d, ack| {
            let Some(m) = meta(&d).cloned() else { return };
            d.args.remove(0);
            let answer = json!({ "found": hub.ack_local(str_of(&m, "id"), d) });
            if let Some(a) = ack {
                a(Data::one(answer));
            }
        });
        self.hello();
    }

    fn ctl(&self) -> Option<Arc<Namespace>> {
        self.inner.ctl.read().as_ref().and_then(|w| w.upgrade())
    }

    fn send(&self, event: &str, data: Data) {
        if let Some(ns) = self.ctl() {
            if let Err(e) = ns.server_side_emit(event, data) {
                tracing::debug!(event, error = %e, "cannot reach the other nodes");
            }
        }
    }

    fn send_to(&self, node: &str, event: &str, data: Data) {
        if let Some(ns) = self.ctl() {
            if let Err(e) = ns.server_side_emit_to(node, event, data) {
                tracing::debug!(event, node, error = %e, "cannot reach the node");
            }
        }
    }

    /// Tells node `to` that its forwarded event `id` found no subscriber here.
    pub(crate) fn nack(&self, to: &str, id: &str) {
        self.send_to(to, NACK, Data::one(json!({ "id": id })));
    }

    pub(crate) fn hello(&self) {
        self.send(HELLO, Data::one(json!({ "node": self.inner.node })));
    }

    /// Tells the other nodes which events this node's subscribers take.
    pub(crate) fn advertise(&self) {
        let filters = self.local_filters();
        self.send(
            ADV,
            Data::one(json!({ "node": self.inner.node, "filters": filters })),
        );
    }

    pub(super) fn forward(&self, to: &str, id: &str, event: &str, wants_ack: bool, r: &Retry) {
        let m = json!({
            "id": id, "ns": r.ns, "sid": r.sid, "event": event, "wants_ack": wants_ack,
        });
        let mut args = Vec::with_capacity(r.data.args.len() + 1);
        args.push(m);
        args.extend(r.data.args.iter().cloned());
        self.send_to(
            to,
            FWD,
            Data {
                args,
                binary: r.data.binary.clone(),
            },
        );
    }

    pub(super) async fn ack_remote(&self, node: &str, id: &str, data: Data) -> AckOutcome {
        let Some(ns) = self.ctl() else {
            return AckOutcome::Unreachable(node.to_owned());
        };
        let mut args = vec![json!({ "id": id })];
        args.extend(data.args);
        let packet = Data {
            args,
            binary: data.binary,
        };
        match ns
            .server_side_emit_with_ack_to(node, ACK, packet, ACK_WAIT)
            .await
        {
            Ok(d) => match d
                .args
                .first()
                .and_then(|v| v.get("found"))
                .and_then(Value::as_bool)
            {
                Some(true) => AckOutcome::Sent,
                Some(false) => AckOutcome::NotFound,
                None => AckOutcome::Unreachable(node.to_owned()),
            },
            Err(e) => {
                tracing::debug!(error = %e, node, "cannot route an ack");
                // A node that is gone holds no delivery any more.
                if ns.adapter().server_count().await <= 1 {
                    AckOutcome::NotFound
                } else {
                    AckOutcome::Unreachable(node.to_owned())
                }
            }
        }
    }
}
