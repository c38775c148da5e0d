//! What emitting and acking can fail with, and the sender of a client's ack.

use tokio::sync::{mpsc, oneshot};

use super::packet::encode_ack;
use super::socket::SocketRef;
use super::Data;
use crate::adapter::AckEvent;

pub(crate) enum AckWaiter {
    One(oneshot::Sender<Data>),
    Many(mpsc::UnboundedSender<AckEvent>),
}

/// An ack did not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("operation has timed out")]
    Timeout,
    #[error("socket disconnected")]
    Disconnected,
}

/// An emit that could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("\"{0}\" is a reserved event name")]
    Reserved(String),
    #[error("socket disconnected")]
    Disconnected,
    #[error(transparent)]
    Adapter(#[from] crate::adapter::AdapterError),
}

pub(crate) fn check_event(event: &str) -> Result<(), EmitError> {
    if super::packet::is_reserved(event) {
        return Err(EmitError::Reserved(event.to_owned()));
    }
    Ok(())
}

/// Answers a client's ack; dropping it without sending leaves the client waiting.
pub struct AckSender {
    pub(crate) socket: SocketRef,
    pub(crate) id: u64,
}

impl std::fmt::Debug for AckSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckSender").field("id", &self.id).finish()
    }
}

impl AckSender {
    pub fn send(self, data: Data) {
        let enc = encode_ack(self.socket.nsp(), self.id, &data);
        self.socket.send_encoded(&enc, false);
    }
}
