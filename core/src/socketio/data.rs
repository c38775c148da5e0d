//! Event arguments: JSON values plus binary attachments.
//!
//! Binary values travel as attachments; inside the JSON they stand as placeholders
//! `{"_placeholder":true,"num":N}`, exactly as on the wire. Keeping that form means an
//! event can be relayed (echoed, broadcast, sent across nodes) without rebuilding it.

use bytes::Bytes;
use serde_json::{json, Value};

/// The arguments of an event or an ack.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Data {
    /// One JSON value per argument; binary values are placeholders.
    pub args: Vec<Value>,
    /// The attachments the placeholders point to.
    pub binary: Vec<Bytes>,
}

impl Data {
    pub fn new(args: Vec<Value>) -> Self {
        Data {
            args,
            binary: Vec::new(),
        }
    }

    /// A single argument.
    pub fn one(v: Value) -> Self {
        Self::new(vec![v])
    }

    /// No arguments.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds an attachment and returns the placeholder to put where it belongs.
    pub fn attach(&mut self, b: Bytes) -> Value {
        self.binary.push(b);
        placeholder(self.binary.len() - 1)
    }

    /// Appends a binary argument.
    pub fn push_binary(mut self, b: Bytes) -> Self {
        let p = self.attach(b);
        self.args.push(p);
        self
    }

    /// The attachment a placeholder value points to, if it is one.
    pub fn binary_at(&self, v: &Value) -> Option<&Bytes> {
        placeholder_num(v).and_then(|n| self.binary.get(n))
    }

    /// Moves `other`'s attachments into this one and returns `other`'s arguments with
    /// their placeholders renumbered to match, ready to be nested in these arguments
    /// (e.g. to answer with a list of acks that each carry binaries).
    pub fn adopt(&mut self, other: Data) -> Vec<Value> {
        let offset = self.binary.len();
        self.binary.extend(other.binary);
        let mut args = other.args;
        if offset > 0 {
            args.iter_mut().for_each(|a| shift_placeholders(a, offset));
        }
        args
    }

    /// The first argument, deserialized.
    pub fn first<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        self.args
            .first()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// The placeholder for attachment `n`.
pub fn placeholder(n: usize) -> Value {
    json!({ "_placeholder": true, "num": n })
}

/// `Some(n)` if `v` is a placeholder object.
pub fn placeholder_num(v: &Value) -> Option<usize> {
    let o = v.as_object()?;
    if o.get("_placeholder")? != &Value::Bool(true) {
        return None;
    }
    o.get("num")?.as_u64().map(|n| n as usize)
}

fn shift_placeholders(v: &mut Value, by: usize) {
    if let Some(n) = placeholder_num(v) {
        *v = placeholder(n + by);
        return;
    }
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| shift_placeholders(x, by)),
        Value::Object(o) => o.values_mut().for_each(|x| shift_placeholders(x, by)),
        _ => {}
    }
}

/// Checks that every placeholder points to an existing attachment (the reference
/// throws "illegal attachments" otherwise).
pub fn placeholders_valid(v: &Value, count: usize) -> bool {
    match v {
        Value::Object(o) if o.get("_placeholder") == Some(&Value::Bool(true)) => {
            matches!(o.get("num").and_then(Value::as_u64), Some(n) if (n as usize) < count)
        }
        Value::Object(o) => o.values().all(|v| placeholders_valid(v, count)),
        Value::Array(a) => a.iter().all(|v| placeholders_valid(v, count)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopt_renumbers() {
        let mut all = Data::empty().push_binary(Bytes::from_static(b"a"));
        let other = Data {
            args: vec![json!({"x": placeholder(0)}), placeholder(1)],
            binary: vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")],
        };
        let args = all.adopt(other);
        assert_eq!(args, vec![json!({"x": placeholder(1)}), placeholder(2)]);
        assert_eq!(all.binary.len(), 3);
        assert_eq!(all.binary_at(&args[1]).unwrap(), &Bytes::from_static(b"c"));
    }

    #[test]
    fn placeholders() {
        let d = Data::new(vec![json!(1)]).push_binary(Bytes::from_static(b"x"));
        assert_eq!(d.args[1], json!({"_placeholder": true, "num": 0}));
        assert_eq!(d.binary_at(&d.args[1]).unwrap(), &Bytes::from_static(b"x"));
        assert!(placeholders_valid(&json!([{"a": [d.args[1].clone()]}]), 1));
        assert!(!placeholders_valid(&json!([placeholder(1)]), 1));
        assert!(!placeholders_valid(
            &json!({"_placeholder": true, "num": "0"}),
            1
        ));
    }
}
