//! Checking what API calls carry; every refusal is INVALID_ARGUMENT naming the field.

use std::sync::Arc;

use serde_json::Value;
use skein::adapter::BroadcastOptions;
use skein::socketio::data::placeholders_valid;
use skein::{Data, Namespace, SocketIo};
use skein_proto::v1::{Args, Selector};
use tonic::Status;

/// The longest room name accepted.
const MAX_ROOM: usize = 256;

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// The namespace a call names ("/" when empty); it must exist on this node.
pub fn namespace(io: &SocketIo, field: &str, name: &str) -> Result<Arc<Namespace>, Status> {
    let name = if name.is_empty() { "/" } else { name };
    io.of(name)
        .ok_or_else(|| invalid(field, format!("namespace {name:?} does not exist")))
}

fn rooms(field: &str, list: &[String]) -> Result<Vec<skein::adapter::Room>, Status> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            if r.is_empty() || r.len() > MAX_ROOM || r.chars().any(char::is_control) {
                Err(invalid(
                    &format!("{field}[{i}]"),
                    format!(
                        "room names are 1 to {MAX_ROOM} characters, without control characters"
                    ),
                ))
            } else {
                Ok(r.as_str().into())
            }
        })
        .collect()
}

/// A selector: its namespace and broadcast options.
pub fn selector(
    io: &SocketIo,
    s: Option<&Selector>,
) -> Result<(Arc<Namespace>, BroadcastOptions), Status> {
    let empty = Selector::default();
    let s = s.unwrap_or(&empty);
    let ns = namespace(io, "target.namespace", &s.namespace)?;
    let mut opts = BroadcastOptions {
        rooms: rooms("target.rooms", &s.rooms)?,
        except: rooms("target.except", &s.except)?,
        ..Default::default()
    };
    opts.flags.local = s.local;
    Ok((ns, opts))
}

/// Room names to join or leave (at least one).
pub fn room_list(list: &[String]) -> Result<Vec<skein::adapter::Room>, Status> {
    if list.is_empty() {
        return Err(invalid("rooms", "at least one room is needed"));
    }
    rooms("rooms", list)
}

/// An event name to emit: 1 to 256 bytes (as a subscriber's filter), not reserved. A
/// client cannot send a longer one in practice, and it must not bypass `max_payload`.
pub fn event(name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(invalid("event", "an event name is needed"));
    }
    if name.len() > MAX_ROOM {
        return Err(invalid(
            "event",
            format!("event names are at most {MAX_ROOM} bytes"),
        ));
    }
    if skein::socketio::packet::is_reserved(name) {
        return Err(invalid(
            "event",
            format!("{name:?} is a reserved event name"),
        ));
    }
    Ok(name.to_owned())
}

/// Event arguments: a JSON array plus attachments, within the node's `max_payload`.
pub fn data(args: Option<&Args>, max_payload: usize) -> Result<Data, Status> {
    let Some(a) = args else {
        return Ok(Data::empty());
    };
    let max_bins = skein::socketio::packet::MAX_ATTACHMENTS;
    if a.binary.len() > max_bins {
        return Err(invalid(
            "args.binary",
            format!("at most {max_bins} attachments, as a client may send"),
        ));
    }
    let size = a.json.len() + a.binary.iter().map(Vec::len).sum::<usize>();
    if size > max_payload {
        return Err(invalid(
            "args",
            format!("{size} bytes exceed max_payload ({max_payload} bytes)"),
        ));
    }
    let args = if a.json.trim().is_empty() {
        vec![]
    } else {
        match serde_json::from_str::<Value>(&a.json) {
            Ok(Value::Array(v)) => v,
            Ok(_) => {
                return Err(invalid(
                    "args.json",
                    "must be a JSON array of the arguments",
                ))
            }
            Err(e) => return Err(invalid("args.json", format!("invalid JSON: {e}"))),
        }
    };
    if !args.iter().all(|v| placeholders_valid(v, a.binary.len())) {
        return Err(invalid(
            "args.json",
            "a placeholder points to no attachment in args.binary",
        ));
    }
    Ok(Data {
        args,
        binary: a
            .binary
            .iter()
            .map(|b| bytes::Bytes::copy_from_slice(b))
            .collect(),
    })
}

/// Arguments back to the API's form.
pub fn to_args(d: Data) -> Args {
    Args {
        json: Value::Array(d.args).to_string(),
        binary: d.binary.into_iter().map(|b| b.to_vec()).collect(),
    }
}

/// A page token of `FetchSockets`: empty (the first page), or the last socket id of the
/// previous page.
pub fn page_token(token: &str) -> Result<Option<skein::Sid>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token.parse().map(Some).map_err(|_| {
        invalid(
            "page_token",
            "not a page token of a previous FetchSockets response",
        )
    })
}

/// A timeout in milliseconds, 1 to 600000.
pub fn timeout(field: &str, ms: u32) -> Result<std::time::Duration, Status> {
    if ms == 0 || ms > 600_000 {
        return Err(invalid(field, "must be between 1 and 600000 milliseconds"));
    }
    Ok(std::time::Duration::from_millis(u64::from(ms)))
}

/// The namespace of a subscription ("/" when empty): registered on the node, or one a
/// dynamic namespace of the node accepts.
pub fn subscribable_namespace(io: &SocketIo, name: &str) -> Result<String, Status> {
    let name = if name.is_empty() { "/" } else { name };
    if !io.accepts_namespace(name) {
        return Err(invalid(
            "namespace",
            format!("namespace {name:?} does not exist"),
        ));
    }
    Ok(name.to_owned())
}

/// The event names a subscriber takes: each 1 to 256 characters and not reserved.
pub fn event_filter(list: &[String]) -> Result<Vec<String>, Status> {
    if list.len() > 1000 {
        return Err(invalid("events", "at most 1000 event names"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let field = format!("events[{i}]");
        if e.is_empty() || e.len() > MAX_ROOM {
            return Err(invalid(&field, "event names are 1 to 256 characters"));
        }
        if skein::socketio::packet::is_reserved(e) {
            return Err(invalid(&field, format!("{e:?} is a reserved event name")));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}
