//! Applications the node can run on top of the library: the test contract, the bench
//! contract and the chat demo.

pub mod demo;
pub mod test_app;

use serde_json::Value;

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
