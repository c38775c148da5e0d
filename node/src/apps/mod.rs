//! Applications the node can run on top of the library: the test contract, the bench
//! contract and the chat demo.

pub mod demo;
pub mod test_app;

use std::sync::Arc;

use serde_json::Value;
use skein::SocketRef;

/// Runs first for every socket of every namespace an application registers: the node
/// installs the gRPC hub's fallback there (events the application does not handle go
/// to the API's subscribers).
pub type Hook = Arc<dyn Fn(&SocketRef) + Send + Sync>;

/// A hook that does nothing (the API is off).
pub fn no_hook() -> Hook {
    Arc::new(|_| {})
}

/// Room names given as a string, an array of strings, or nothing.
pub fn rooms_of(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|r| match r {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}
