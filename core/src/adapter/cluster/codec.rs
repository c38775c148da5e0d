//! The native encoding of the cluster protocol, for backends that have no other server's
//! wire format to follow (NATS, the mesh): MessagePack of the typed messages, binary
//! attachments as MessagePack `bin`, so nothing is base64-encoded on the way.

use super::message::Envelope;

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed cluster message: {0}")]
pub struct CodecError(String);

/// Encodes a message. Encoding typed values into memory does not fail.
pub fn encode(env: &Envelope) -> Vec<u8> {
    rmp_serde::to_vec_named(env).unwrap_or_default()
}

/// Decodes a message; a payload from something that is not a node is an error.
pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::cluster::message::{Message, Response, ResponseBody};
    use crate::adapter::{BroadcastOptions, EventPacket};
    use crate::socketio::Data;
    use serde_json::json;

    #[test]
    fn messages_round_trip_with_binaries_in_place() {
        let data = Data::new(vec![json!({"a": [1, "two", null]})])
            .push_binary(bytes::Bytes::from_static(&[0, 1, 255]));
        let mut opts = BroadcastOptions {
            rooms: vec!["r".into()],
            except: vec!["x".into()],
            ..Default::default()
        };
        opts.flags.volatile = true;
        opts.flags.timeout = Some(std::time::Duration::from_millis(1500));
        for msg in [
            Message::Broadcast {
                packet: EventPacket {
                    event: "ev".into(),
                    data: data.clone(),
                },
                opts: opts.clone(),
            },
            Message::Response(Response {
                req: "q".into(),
                body: ResponseBody::BroadcastAck(data.clone()),
            }),
            Message::Goodbye,
        ] {
            let env = Envelope {
                from: "n1".into(),
                nsp: "/chat".into(),
                msg,
            };
            let bytes = encode(&env);
            assert_eq!(decode(&bytes).unwrap(), env);
        }
        let raw = encode(&Envelope {
            from: "n".into(),
            nsp: "/".into(),
            msg: Message::Broadcast {
                packet: EventPacket {
                    event: "e".into(),
                    data,
                },
                opts,
            },
        });
        assert!(
            raw.windows(3).any(|w| w == [0, 1, 255]),
            "the attachment travels as raw bytes"
        );
        assert!(decode(b"\x93garbage").is_err());
        assert!(decode(&[]).is_err());
    }
}
