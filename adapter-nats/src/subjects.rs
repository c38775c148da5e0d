//! Subject names. A namespace, a room or a node id may hold any character, and NATS
//! gives `.`, `*`, `>` and whitespace a meaning in a subject: each name becomes one
//! subject token, in base64url (whose alphabet has none of them). A name whose token
//! would be longer than [`MAX_TOKEN`] becomes `~` and a hash of it instead, so that a
//! subject stays well under the server's limits whatever the application names; two
//! names with one hash would only share a subject, never a delivery (the receiving node
//! checks the rooms of every broadcast against its own members).
//!
//! - `<prefix>.sync.<id>`: nobody's (a node's round trip to the server);
//! - `<prefix>.heartbeat`: heartbeats, goodbyes (node-level, every node);
//! - `<prefix>.node.<id>`: one node (answers, node-to-node events, the presence probe);
//! - `<prefix>.<nsp>.all`: every node serving the namespace (broadcasts that are not to
//!   exactly one room, socket management, requests);
//! - `<prefix>.<nsp>.room.<room>`: the nodes that hold a member of the room.
//!
//! A namespace always starts with `/`, so its token starts with `L` and never equals
//! `node`, `sync` or `heartbeat`.

use base64::Engine;
use sha1::{Digest, Sha1};

/// Longest token kept as base64url (192 characters: a name of 144 bytes).
pub const MAX_TOKEN: usize = 192;

/// The subject token of a name.
pub fn token(name: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name.as_bytes());
    if b64.len() <= MAX_TOKEN {
        return b64;
    }
    let digest = Sha1::digest(name.as_bytes());
    let mut out = String::with_capacity(41);
    out.push('~');
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The subjects of one cluster (one prefix).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Subjects {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn heartbeat(&self) -> String {
        format!("{}.heartbeat", self.prefix)
    }

    pub fn node(&self, id: &str) -> String {
        format!("{}.node.{}", self.prefix, token(id))
    }

    /// Nobody subscribes to it: a request there is a round trip to the server.
    pub fn sync(&self, id: &str) -> String {
        format!("{}.sync.{}", self.prefix, token(id))
    }

    pub fn all(&self, nsp: &str) -> String {
        format!("{}.{}.all", self.prefix, token(nsp))
    }

    pub fn room(&self, nsp: &str, room: &str) -> String {
        format!("{}.{}.room.{}", self.prefix, token(nsp), token(room))
    }
}

/// Whether a prefix can start subjects: dot-separated tokens, none empty, no wildcard
/// nor whitespace.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| !c.is_whitespace() && c != '*' && c != '>' && !c.is_control())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_single_safe_tokens() {
        let s = Subjects::new("skein");
        assert_eq!(s.all("/"), "skein.Lw.all");
        assert_eq!(s.heartbeat(), "skein.heartbeat");
        assert_eq!(s.node("A-1"), "skein.node.QS0x");
        let room = s.room("/chat", "a.b *>\tc");
        let tok = room.rsplit('.').next().unwrap();
        assert!(room.starts_with("skein.L2NoYXQ.room."), "{room}");
        assert_eq!(room.matches('.').count(), 3, "{room}");
        assert!(tok
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        // Distinct names, distinct tokens; a long one is hashed to a short token.
        assert_ne!(token("a"), token("b"));
        let long = "x".repeat(1000);
        let t = token(&long);
        assert!(t.starts_with('~') && t.len() == 41, "{t}");
        assert_ne!(t, token(&"x".repeat(999)));
        assert_eq!(
            token(&"y".repeat(144)).len(),
            192,
            "144 bytes stay readable"
        );
        assert!(token(&"y".repeat(145)).starts_with('~'));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("skein"));
        assert!(valid_prefix("app.skein-1"));
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "x\ny"] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }
}
