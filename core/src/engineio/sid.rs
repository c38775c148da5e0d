//! Session and socket identifiers.
//!
//! Both Engine.IO session ids and Socket.IO socket ids are 20 URL-safe characters,
//! like the reference server's `base64id`. They are stored inline (no heap) because
//! every room membership and every session map entry holds one.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

/// A 20-character URL-safe identifier, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; 20]);

impl Sid {
    /// A new random id (120 bits of entropy).
    pub fn new() -> Self {
        let raw: [u8; 15] = rand::random();
        let mut out = [0u8; 20];
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .expect("15 bytes encode to exactly 20");
        Sid(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from base64url characters (ASCII), see `new` and `from_str`.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl Default for Sid {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

/// The string is not a 20-character URL-safe id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid id")]
pub struct InvalidSid;

impl FromStr for Sid {
    type Err = InvalidSid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 20
            || !b
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        {
            return Err(InvalidSid);
        }
        let mut out = [0u8; 20];
        out.copy_from_slice(b);
        Ok(Sid(out))
    }
}

impl serde::Serialize for Sid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Sid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let a = Sid::new();
        assert_eq!(a.as_str().len(), 20);
        assert_eq!(a.as_str().parse::<Sid>().unwrap(), a);
        assert_ne!(a, Sid::new());
    }

    #[test]
    fn rejects_bad() {
        assert!("short".parse::<Sid>().is_err());
        assert!("aaaaaaaaaaaaaaaaaaa/".parse::<Sid>().is_err());
    }
}
