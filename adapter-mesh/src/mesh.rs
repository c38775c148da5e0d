//! [`Mesh`]: one node's handle on the cluster.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::batch::IndexBatcher;
use crate::config::{Identity, MeshConfig};
use crate::core::{BusSink, Core};
use crate::error::MeshError;
use crate::log_store::LogStore;
use crate::metrics::{self, MeshMetrics};
use crate::network::{Auth, Network, Peers};
use crate::sm_store::StateMachine;
use crate::state::{Addresses, ClusterState, Command, IndexChange, Member, NodeState};
use crate::{control, server};

/// A running mesh node: its Raft, its mesh port, and its membership tasks.
pub struct Mesh {
    core: Arc<Core>,
    local_addr: SocketAddr,
    joined: watch::Receiver<bool>,
    stop_server: Mutex<Option<oneshot::Sender<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node", &self.core.id.node)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Mesh {
    /// Binds `config.listen` and starts the node. It joins the cluster in the
    /// background: [`Mesh::joined`] waits for that.
    pub async fn start(config: MeshConfig) -> Result<Mesh, MeshError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| MeshError::Bind(format!("{}: {e}", config.listen)))?;
        Mesh::start_on(config, listener).await
    }

    /// Starts the node on a listener bound by the caller (`config.listen` is ignored).
    pub async fn start_on(config: MeshConfig, listener: TcpListener) -> Result<Mesh, MeshError> {
        config.validate()?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| MeshError::Bind(e.to_string()))?;
        let mesh_addr =
            match &config.advertise {
                Some(a) => a.clone(),
                None if local_addr.ip().is_unspecified() => return Err(MeshError::Config(
                    "the mesh port listens on an unspecified address: set the address to advertise"
                        .into(),
                )),
                None => local_addr.to_string(),
            };
        let id = Identity::load_or_create(&config.data_dir, config.node_id.as_deref())?;
        let storage =
            |e: std::io::Error| MeshError::Storage(format!("{}: {e}", config.data_dir.display()));
        let log = LogStore::open(&config.data_dir).map_err(storage)?;
        let sm = StateMachine::open(&config.data_dir).map_err(storage)?;
        let published = sm.published();

        let auth = Auth::new(&config.secret).map_err(MeshError::Config)?;
        let peers = Arc::new(Peers::new(auth.clone(), config.rpc_timeout));
        let raft_config = openraft::Config {
            cluster_name: "skein-mesh".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.election_timeout_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_logs,
            // Entries travel as JSON: keep one AppendEntries and one snapshot chunk
            // well under the message bound.
            max_payload_entries: 64,
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MeshError::Config(e.to_string()))?;
        let network = Network {
            peers: peers.clone(),
        };
        let raft = openraft::Raft::new(id.raft_id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| MeshError::Raft(e.to_string()))?;

        let addresses = Addresses {
            socketio: config.socketio_addr.clone(),
            api: config.api_addr.clone(),
            mesh: mesh_addr,
        };
        let (admissions, _) = watch::channel(0);
        let core = Arc::new(Core {
            id,
            incarnation: rand::random::<u64>(),
            addresses,
            config,
            raft,
            published,
            peers,
            stopped: Default::default(),
            state: Mutex::new(NodeState::Joining),
            admissions,
            bus: Default::default(),
            halted: watch::channel(false).0,
        });

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = {
            let core = core.clone();
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop_rx.await;
                };
                if let Err(e) = server::serve(core, auth, listener, shutdown).await {
                    tracing::error!("mesh: server stopped: {e}");
                }
            })
        };
        let (joined_tx, joined) = watch::channel(false);
        let tasks = vec![
            server,
            tokio::spawn(control::join_loop(core.clone(), joined_tx)),
            tokio::spawn(control::leader_loop(core.clone())),
            tokio::spawn(crate::metrics::log_leader_changes(core.clone())),
        ];
        tracing::info!(node = %core.id.node, mesh = %core.addresses.mesh, "mesh: started");
        Ok(Mesh {
            core,
            local_addr,
            joined,
            stop_server: Mutex::new(Some(stop_tx)),
            tasks: Mutex::new(tasks),
        })
    }

    /// Where the frames other nodes stream to this one go (set once; frames that come
    /// earlier are dropped).
    pub fn set_bus_sink(&self, sink: BusSink) {
        let _ = self.core.bus.set(sink);
    }

    /// This process's incarnation (random per start), as its member record lists it.
    pub fn incarnation(&self) -> u64 {
        self.core.incarnation
    }

    /// The cluster secret's interceptor and the bound of one call, for the bus client.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.core.id.node
    }

    /// The address the mesh port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until this node is admitted (listed, live, and in Raft's membership).
    pub async fn joined(&self, timeout: Duration) -> Result<(), MeshError> {
        let mut rx = self.joined.clone();
        let result = match tokio::time::timeout(timeout, rx.wait_for(|j| *j)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(MeshError::Stopped),
            Err(_) => Err(MeshError::JoinTimeout(timeout)),
        };
        result
    }

    /// Whether this node has been admitted (it may have been declared gone since).
    pub fn is_joined(&self) -> bool {
        *self.joined.borrow()
    }

    /// Counts this node's admissions. It changes when the node is admitted again after
    /// it was declared gone (a partition outlasted `gone_after`): its index entries were
    /// removed then, so the adapter republishes its rooms.
    pub fn admissions(&self) -> watch::Receiver<u64> {
        self.core.admissions.subscribe()
    }

    /// The replicated state as this node last applied it: members and room index.
    /// Never waits for Raft.
    pub fn view(&self) -> Arc<ClusterState> {
        self.core.published.view()
    }

    /// Every member, gone ones included.
    pub fn members(&self) -> Vec<Member> {
        self.core
            .published
            .view()
            .members()
            .values()
            .cloned()
            .collect()
    }

    /// Commits a batch of index changes as one log entry; returns its log index once the
    /// leader applied it. It is visible on other nodes only after [`Mesh::wait_visible`].
    pub async fn apply_changes(&self, changes: Vec<IndexChange>) -> Result<u64, MeshError> {
        self.core.propose(Command::Index(changes)).await
    }

    /// Returns once every live member has applied the log up to `index` (the join
    /// promise), or `NotVisible` naming those that had not within `timeout`.
    pub async fn wait_visible(&self, index: u64, timeout: Duration) -> Result<(), MeshError> {
        self.core.wait_visible(index, timeout).await
    }

    /// A batcher of index changes: see [`IndexBatcher`]. `window` is how long it
    /// collects after a first change; `visible_timeout` bounds each join's wait.
    pub fn batcher(&self, window: Duration, visible_timeout: Duration) -> IndexBatcher {
        IndexBatcher::spawn(self.core.clone(), window, visible_timeout)
    }

    /// Changes this node's state (serving once it accepts clients, draining on
    /// SIGTERM). Kept and retried until it commits; returns the first try's result.
    pub async fn set_state(&self, state: NodeState) -> Result<u64, MeshError> {
        *self.core.state.lock() = state;
        let command = Command::SetState {
            node: self.core.id.node.clone(),
            state,
        };
        self.core.propose(command).await
    }

    pub fn metrics(&self) -> MeshMetrics {
        metrics::collect(&self.core)
    }

    /// Leaves: the node is listed as gone (out of the room index at once, rather than
    /// after `gone_after`), then stops. It keeps its Raft seat: a restart from the same
    /// data directory takes it back.
    pub async fn shutdown(&self) {
        *self.core.state.lock() = NodeState::Gone;
        let command = Command::SetState {
            node: self.core.id.node.clone(),
            state: NodeState::Gone,
        };
        let leave = self.core.propose(command);
        if let Ok(Err(e)) = tokio::time::timeout(self.core.config.propose_timeout, leave).await {
            tracing::warn!("mesh: leaving: {e}");
        }
        self.halt().await;
    }

    /// [`Mesh::shutdown`], with the leave bounded by `bound` (a node left without a
    /// quorum does not wait the whole propose timeout to exit).
    pub async fn shutdown_within(&self, bound: Duration) {
        *self.core.state.lock() = NodeState::Gone;
        let command = Command::SetState {
            node: self.core.id.node.clone(),
            state: NodeState::Gone,
        };
        if let Ok(Err(e)) = tokio::time::timeout(bound, self.core.propose(command)).await {
            tracing::warn!("mesh: leaving: {e}");
        }
        self.halt().await;
    }

    /// Stops at once without telling the cluster, as a crash would: the others declare
    /// it gone after `gone_after`.
    pub async fn halt(&self) {
        self.core.stopped.store(true, Ordering::Release);
        self.core.halted.send_replace(true);
        if let Some(tx) = self.stop_server.lock().take() {
            let _ = tx.send(());
        }
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!("mesh: raft shutdown: {e}");
        }
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}
