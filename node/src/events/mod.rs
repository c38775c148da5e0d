//! The gRPC API's event router: client events that no application handler takes go to
//! one `Subscribe` stream, on this node or another (`hub`); the nodes tell each other
//! about their subscribers and forward events and acks between them (`relay`); a
//! subscriber's stream and its filter (`subscription`). The API service (`crate::grpc`)
//! is only one user of it.

mod hub;
mod relay;
mod subscription;

pub use hub::{parse_id, AckOutcome, Hub, ACK_TIMEOUT};
pub use relay::RESERVED_PREFIX;
pub use subscription::{Filter, SubStream};
