//! Engine.IO options, with the reference server's defaults.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

/// A transport the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Polling,
    Websocket,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Polling => "polling",
            Self::Websocket => "websocket",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "polling" => Some(Self::Polling),
            "websocket" => Some(Self::Websocket),
            _ => None,
        }
    }
}

/// Which origins get CORS headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigin {
    /// `Access-Control-Allow-Origin: *`, or the request origin when credentials are on.
    Any,
    /// Only these origins are reflected.
    List(Vec<String>),
}

/// CORS for the long-polling transport (browsers on another origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    pub origin: CorsOrigin,
    pub credentials: bool,
}

/// The `io` cookie used by cookie-based sticky sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    pub name: String,
    pub path: String,
    pub http_only: bool,
    pub same_site: String,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "io".into(),
            path: "/".into(),
            http_only: true,
            same_site: "Lax".into(),
        }
    }
}

/// Decides whether a handshake or upgrade request is allowed; `Err` carries the message
/// sent back with code 4 (`Forbidden`).
pub type AllowRequest =
    Arc<dyn Fn(&http::request::Parts) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Engine.IO server options. Defaults are those of engine.io 6.6.
#[derive(Clone)]
pub struct EngineConfig {
    /// Path the server answers on, with a trailing slash (`/engine.io/`; Socket.IO uses `/socket.io/`).
    pub path: String,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub upgrade_timeout: Duration,
    /// Largest accepted message or polling body (`maxHttpBufferSize`), sent as `maxPayload`.
    pub max_payload: usize,
    pub transports: Vec<TransportKind>,
    pub allow_upgrades: bool,
    pub cors: Option<CorsConfig>,
    pub cookie: Option<CookieConfig>,
    pub allow_request: Option<AllowRequest>,
    /// Compress polling responses larger than this many bytes (`None`: never).
    pub http_compression_threshold: Option<usize>,
    /// Packets a session may have queued before it is closed as too slow.
    pub max_buffered_packets: usize,
    /// Time a polling POST has to deliver its whole body; a slower one gets `408` and
    /// its session closes (a trickled body would hold the request and its buffer).
    pub body_timeout: Duration,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("path", &self.path)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("upgrade_timeout", &self.upgrade_timeout)
            .field("max_payload", &self.max_payload)
            .field("transports", &self.transports)
            .field("cors", &self.cors)
            .field("cookie", &self.cookie)
            .field("max_buffered_packets", &self.max_buffered_packets)
            .field("body_timeout", &self.body_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            path: "/engine.io/".into(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_payload: 1_000_000,
            transports: vec![TransportKind::Polling, TransportKind::Websocket],
            allow_upgrades: true,
            cors: None,
            cookie: None,
            allow_request: None,
            http_compression_threshold: Some(1024),
            max_buffered_packets: 4096,
            body_timeout: Duration::from_secs(30),
        }
    }
}

impl EngineConfig {
    pub(crate) fn allows(&self, t: TransportKind) -> bool {
        self.transports.contains(&t)
    }

    /// Upgrades offered to a session opened on `t`.
    pub(crate) fn upgrades_for(&self, t: TransportKind) -> &'static [&'static str] {
        if t == TransportKind::Polling
            && self.allow_upgrades
            && self.allows(TransportKind::Websocket)
        {
            &["websocket"]
        } else {
            &[]
        }
    }
}
