//! This node's sockets and rooms for one namespace, and every operation on them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::recovery::{
    now_ms, with_offset, MemoryRecovery, RecoveryConfig, SessionRecord, SessionStore,
};
use super::{AckEvent, BroadcastOptions, EventPacket, Room, SocketInfo};
use crate::engineio::Sid;
use crate::socketio::packet::encode_event;
use crate::socketio::{Data, DisconnectReason, SocketRef};

#[derive(Default)]
struct Rooms {
    /// Explicit rooms, each with its members' sockets, so that a broadcast reaches them
    /// without a lookup per member. A socket's own room (its id) is implicit: never
    /// stored.
    members: HashMap<Room, HashMap<Sid, SocketRef>>,
    /// The explicit rooms of each socket that has any.
    of_socket: HashMap<Sid, Vec<Room>>,
}

/// Called when a room gains its first local member (`true`) or loses its last one.
pub type RoomHook = Box<dyn Fn(&Room, bool) + Send + Sync>;

/// Answers a server-side event sent with an ack (one value, as the reference).
pub type ServerAck = Box<dyn FnOnce(Data) + Send>;
/// Handles an event another server sent with `server_side_emit`.
pub type ServerEventHandler = Arc<dyn Fn(Data, Option<ServerAck>) + Send + Sync>;

/// The local sockets and rooms of a namespace.
pub struct LocalAdapter {
    nsp: Arc<str>,
    sockets: RwLock<HashMap<Sid, SocketRef>>,
    rooms: RwLock<Rooms>,
    server_events: RwLock<HashMap<String, ServerEventHandler>>,
    recovery: Option<Recovery>,
    room_hook: std::sync::OnceLock<RoomHook>,
}

/// Connection state recovery of a namespace.
struct Recovery {
    cfg: RecoveryConfig,
    /// The in-memory log and sessions, when the adapter has no store of its own.
    memory: Option<Arc<MemoryRecovery>>,
    store: std::sync::OnceLock<Arc<dyn SessionStore>>,
}

impl std::fmt::Debug for LocalAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAdapter")
            .field("nsp", &self.nsp)
            .field("sockets", &self.sockets.read().len())
            .finish()
    }
}

impl LocalAdapter {
    pub fn new(nsp: &str) -> Self {
        LocalAdapter {
            nsp: nsp.into(),
            sockets: RwLock::new(HashMap::new()),
            rooms: RwLock::new(Rooms::default()),
            server_events: RwLock::new(HashMap::new()),
            recovery: None,
            room_hook: std::sync::OnceLock::new(),
        }
    }

    /// A local adapter with connection state recovery; with `memory_log`, its log and
    /// sessions live in this process (the single-node store).
    pub fn with_recovery(nsp: &str, cfg: RecoveryConfig, memory_log: bool) -> Self {
        let memory = memory_log.then(|| Arc::new(MemoryRecovery::new(cfg.clone())));
        let store = std::sync::OnceLock::new();
        if let Some(m) = &memory {
            let _ = store.set(m.clone() as Arc<dyn SessionStore>);
        }
        LocalAdapter {
            recovery: Some(Recovery { cfg, memory, store }),
            ..Self::new(nsp)
        }
    }

    /// The recovery options, when recovery is on.
    pub fn recovery(&self) -> Option<&RecoveryConfig> {
        self.recovery.as_ref().map(|r| &r.cfg)
    }

    /// The in-memory log and sessions, if this namespace uses them.
    pub fn memory_recovery(&self) -> Option<&Arc<MemoryRecovery>> {
        self.recovery.as_ref()?.memory.as_ref()
    }

    /// Sets the store sessions are written to (a cluster adapter's own).
    pub fn set_session_store(&self, store: Arc<dyn SessionStore>) {
        if let Some(r) = &self.recovery {
            let _ = r.store.set(store);
        }
    }

    pub fn session_store(&self) -> Option<&Arc<dyn SessionStore>> {
        self.recovery.as_ref()?.store.get()
    }

    /// The session of a local socket as it stands.
    pub fn session_record(&self, s: &SocketRef, connected: bool) -> Option<SessionRecord> {
        let pid = s.pid.as_ref()?;
        Some(SessionRecord {
            sid: s.id().to_string(),
            pid: pid.to_string(),
            rooms: self.socket_rooms(s.id()),
            data: s.data(),
            nsp: Some(self.nsp.to_string()),
            offset: s.start.as_deref().map(str::to_owned),
            seen: Some(now_ms()),
            owner: Some(format!("{:016x}", s.owner)),
            connected,
            node: None,
        })
    }

    /// Every connected local session (a cluster store refreshes them so that a node
    /// that dies leaves them recoverable for the full duration).
    pub fn session_records(&self) -> Vec<SessionRecord> {
        let sockets: Vec<SocketRef> = self.sockets.read().values().cloned().collect();
        sockets
            .iter()
            .filter_map(|s| self.session_record(s, true))
            .collect()
    }

    /// Writes a local socket's session after a change; the socket's packets wait for
    /// the write (see `socketio::gate`).
    pub fn persist(&self, sid: Sid) {
        if let Some(s) = self.get(sid) {
            self.persist_socket(&s);
        }
    }

    /// [`LocalAdapter::persist`] for a socket that may not be registered yet.
    pub(crate) fn persist_socket(&self, s: &SocketRef) {
        let Some(store) = self.session_store() else {
            return;
        };
        if let Some(rec) = self.session_record(s, true) {
            s.hold_until(store.save(&rec));
        }
    }

    /// A socket leaves: its session stays recoverable if the reason allows it.
    pub(crate) fn end_session(&self, s: &SocketRef, reason: DisconnectReason) {
        let Some(store) = self.session_store() else {
            return;
        };
        let Some(rec) = self.session_record(s, false) else {
            return;
        };
        if reason.is_recoverable() {
            // The socket is gone: nothing of it waits for this write.
            let _ = store.save(&rec);
        } else {
            store.discard(&rec);
        }
    }

    /// Registers the handler of a server-side event (replacing any previous one).
    pub fn on_server_event(&self, event: &str, f: ServerEventHandler) {
        self.server_events.write().insert(event.to_owned(), f);
    }

    /// Delivers a server-side event from another node. Without a handler, an ack is
    /// dropped: the sender counts that node as not answering.
    pub fn server_event(&self, event: &str, data: Data, ack: Option<ServerAck>) {
        let h = self.server_events.read().get(event).cloned();
        match h {
            Some(h) => h(data, ack),
            None => tracing::debug!(nsp = %self.nsp, event, "server-side event with no handler"),
        }
    }

    /// Whether a room has a local member (a socket id counts as its own room).
    pub fn has_room(&self, room: &str) -> bool {
        if self.rooms.read().members.contains_key(room) {
            return true;
        }
        room.parse::<Sid>()
            .is_ok_and(|sid| self.sockets.read().contains_key(&sid))
    }

    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    pub(crate) fn insert(&self, s: SocketRef) {
        self.sockets.write().insert(s.id(), s);
    }

    pub(crate) fn remove(&self, sid: Sid) {
        self.sockets.write().remove(&sid);
    }

    pub fn get(&self, sid: Sid) -> Option<SocketRef> {
        self.sockets.read().get(&sid).cloned()
    }

    pub fn len(&self) -> usize {
        self.sockets.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn add_all(&self, s: &SocketRef, rooms: &[Room]) {
        self.add_rooms(s, rooms);
        self.persist_socket(s);
    }

    /// Joins rooms without writing the session.
    pub(crate) fn add_rooms(&self, s: &SocketRef, rooms: &[Room]) {
        let sid = s.id();
        let mut created = Vec::new();
        {
            let mut r = self.rooms.write();
            for room in rooms {
                if room.parse::<Sid>() == Ok(sid) {
                    continue;
                }
                let set = r.members.entry(room.clone()).or_default();
                if set.is_empty() {
                    created.push(room.clone());
                }
                if set.insert(sid, s.clone()).is_none() {
                    r.of_socket.entry(sid).or_default().push(room.clone());
                }
            }
        }
        self.rooms_changed(&created, true);
    }

    /// Calls `hook` when a room gains its first local member (`true`) or loses its last
    /// one (`false`): what a node receives may depend on it (a cluster adapter).
    pub fn on_room_change(&self, hook: RoomHook) {
        let _ = self.room_hook.set(hook);
    }

    fn rooms_changed(&self, rooms: &[Room], member: bool) {
        if let Some(h) = self.room_hook.get() {
            for r in rooms {
                h(r, member);
            }
        }
    }

    pub fn del(&self, sid: Sid, room: &str) {
        self.del_room(sid, room);
        self.persist(sid);
    }

    fn del_room(&self, sid: Sid, room: &str) {
        let mut emptied = Vec::new();
        {
            let mut r = self.rooms.write();
            let Rooms { members, of_socket } = &mut *r;
            if let Some(set) = members.get_mut(room) {
                set.remove(&sid);
                if set.is_empty() {
                    if let Some((name, _)) = members.remove_entry(room) {
                        emptied.push(name);
                    }
                }
            }
            if let Some(list) = of_socket.get_mut(&sid) {
                list.retain(|x| &**x != room);
                if list.is_empty() {
                    of_socket.remove(&sid);
                }
            }
        }
        self.rooms_changed(&emptied, false);
    }

    pub fn del_all(&self, sid: Sid) {
        let mut emptied = Vec::new();
        {
            let mut r = self.rooms.write();
            let Rooms { members, of_socket } = &mut *r;
            for room in of_socket.remove(&sid).unwrap_or_default() {
                if let Some(set) = members.get_mut(&room) {
                    set.remove(&sid);
                    if set.is_empty() {
                        members.remove(&room);
                        emptied.push(room);
                    }
                }
            }
        }
        self.rooms_changed(&emptied, false);
    }

    /// The rooms of a local socket, its own id first.
    pub fn socket_rooms(&self, sid: Sid) -> Vec<String> {
        let mut v = vec![sid.to_string()];
        if let Some(list) = self.rooms.read().of_socket.get(&sid) {
            v.extend(list.iter().map(|r| r.to_string()));
        }
        v
    }

    /// Every local room: explicit ones and each socket's own.
    pub fn rooms(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rooms
            .read()
            .members
            .keys()
            .map(|r| r.to_string())
            .collect();
        v.extend(self.sockets.read().keys().map(|s| s.to_string()));
        v
    }

    /// Calls `f` once for each local socket the options target.
    pub fn apply(&self, opts: &BroadcastOptions, mut f: impl FnMut(&SocketRef)) {
        let rooms = self.rooms.read();
        let sockets = self.sockets.read();
        let room_members = |room: &Room, out: &mut dyn FnMut(&SocketRef)| {
            if let Some(set) = rooms.members.get(room) {
                set.values().for_each(&mut *out);
            }
            if let Some(s) = room.parse::<Sid>().ok().and_then(|sid| sockets.get(&sid)) {
                out(s);
            }
        };
        let mut except = HashSet::new();
        for r in &opts.except {
            room_members(r, &mut |s| {
                except.insert(s.id());
            });
        }
        if opts.rooms.is_empty() {
            for (sid, s) in sockets.iter() {
                if !except.contains(sid) {
                    f(s);
                }
            }
            return;
        }
        // The common case, one room and no except: nothing to look up per member.
        if let ([room], true) = (&opts.rooms[..], except.is_empty()) {
            room_members(room, &mut f);
            return;
        }
        // With several rooms a socket may be in more than one: deliver once.
        let mut seen = HashSet::new();
        let single = opts.rooms.len() == 1;
        for r in &opts.rooms {
            room_members(r, &mut |s| {
                let sid = s.id();
                if except.contains(&sid) || (!single && !seen.insert(sid)) {
                    return;
                }
                f(s);
            });
        }
    }

    fn targets(&self, opts: &BroadcastOptions) -> Vec<SocketRef> {
        let mut v = Vec::new();
        self.apply(opts, |s| v.push(s.clone()));
        v
    }

    /// Delivers an event to the targeted local sockets. The packet is encoded once.
    /// With the in-memory recovery log, a packet that is not volatile is logged first and
    /// carries its offset.
    pub fn broadcast(&self, packet: &EventPacket, opts: &BroadcastOptions) {
        if let (Some(mem), false) = (self.memory_recovery(), opts.flags.volatile) {
            let mut log = mem.lock();
            log.append(packet, opts);
            if let Some(logged) = log.last() {
                let enc = encode_event(&self.nsp, &logged.event, &logged.data, None);
                self.apply(opts, |s| s.send_encoded(&enc, false));
            }
            return;
        }
        let enc = encode_event(&self.nsp, &packet.event, &packet.data, None);
        let volatile = opts.flags.volatile;
        self.apply(opts, |s| s.send_encoded(&enc, volatile));
    }

    /// Delivers an event logged elsewhere (a cluster's log) with its offset appended to
    /// its arguments.
    pub fn broadcast_logged(&self, packet: EventPacket, opts: &BroadcastOptions, offset: &str) {
        let data = with_offset(packet.data, offset);
        let enc = encode_event(&self.nsp, &packet.event, &data, None);
        self.apply(opts, |s| s.send_encoded(&enc, false));
    }

    /// Delivers an event that each client acks into `tx`; returns how many clients got it.
    pub fn broadcast_with_ack(
        &self,
        packet: &EventPacket,
        opts: &BroadcastOptions,
        tx: mpsc::UnboundedSender<AckEvent>,
    ) -> usize {
        let targets = self.targets(opts);
        let Some(first) = targets.first() else {
            return 0;
        };
        let id = first.ns().next_ack_id();
        let enc = encode_event(&self.nsp, &packet.event, &packet.data, Some(id));
        for s in &targets {
            s.expect_broadcast_ack(id, tx.clone());
            s.send_encoded(&enc, opts.flags.volatile);
        }
        targets.len()
    }

    /// Starts the ack stream of a broadcast with acks with this node's part: the event is
    /// delivered here and this node's count is already on the stream. A cluster adapter
    /// feeds the other nodes' counts and acks through the returned sender and raises
    /// `nodes`.
    pub fn ack_stream(
        &self,
        packet: &EventPacket,
        opts: &BroadcastOptions,
        node: String,
    ) -> (mpsc::UnboundedSender<AckEvent>, super::AckStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        let count = self.broadcast_with_ack(packet, opts, tx.clone());
        let _ = tx.send(AckEvent::Count { node, count });
        (tx, super::AckStream::new(1, rx))
    }

    pub fn fetch_sockets(&self, opts: &BroadcastOptions) -> Vec<SocketInfo> {
        self.targets(opts).iter().map(|s| s.info()).collect()
    }

    pub fn add_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for s in self.targets(opts) {
            self.add_rooms(&s, rooms);
            self.persist_socket(&s);
        }
    }

    pub fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for s in self.targets(opts) {
            for r in rooms {
                self.del_room(s.id(), r);
            }
            self.persist(s.id());
        }
    }

    pub fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) {
        for s in self.targets(opts) {
            s.disconnect_with(close, DisconnectReason::ServerNamespaceDisconnect);
        }
    }
}
