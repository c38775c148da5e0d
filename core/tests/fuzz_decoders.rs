//! Bounded fuzzing of every decoder that reads client bytes: Engine.IO polling payloads
//! and text packets, WebSocket frames, and Socket.IO packets.
//!
//! The machine's toolchain is stable Rust, where `cargo fuzz` cannot run, so this is a
//! mutation fuzzer in a plain test: it starts from valid samples, mutates them (bit
//! flips, insertions, deletions, splices, special bytes) and checks that decoding never
//! panics and that what decodes re-encodes to the same packet. Each target runs for
//! `SKEIN_FUZZ_SECS` seconds (default 3) or `SKEIN_FUZZ_ITERS` inputs, whichever ends
//! first; the seed is printed and can be replayed with `SKEIN_FUZZ_SEED`.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skein::engineio::ws::Decoder;
use skein::engineio::Packet as EioPacket;
use skein::socketio::packet::{encode_event, Packet, PacketKind};
use skein::Data;

struct Budget {
    until: Instant,
    left: u64,
}

impl Budget {
    fn new() -> Self {
        let secs = std::env::var("SKEIN_FUZZ_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let iters = std::env::var("SKEIN_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000_000);
        Budget {
            until: Instant::now() + Duration::from_secs(secs),
            left: iters,
        }
    }

    fn next(&mut self) -> bool {
        self.left = self.left.saturating_sub(1);
        self.left > 0 && (!self.left.is_multiple_of(256) || Instant::now() < self.until)
    }
}

fn rng(name: &str) -> StdRng {
    let seed = std::env::var("SKEIN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{name}: seed {seed}");
    StdRng::seed_from_u64(seed)
}

const SPECIAL: &[u8] = b"0123456789[]{}\",:/-\x1eb\\_placeholder\x00\xff\xc3";

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..rng.random_range(1..5) {
        let len = input.len();
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..=len);
                input.insert(i, SPECIAL[rng.random_range(0..SPECIAL.len())]);
            }
            2 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(8));
                input.drain(i..i + n);
            }
            3 => {
                let other = &pool[rng.random_range(0..pool.len())];
                let i = rng.random_range(0..=len);
                let cut = rng.random_range(0..=other.len());
                input.splice(i..i, other[..cut].iter().copied());
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = rng.random();
            }
            _ => input.truncate(rng.random_range(0..=len)),
        }
    }
}

fn eio_seeds() -> Vec<Vec<u8>> {
    [
        &b"4hello"[..],
        b"2probe",
        b"3",
        b"5",
        b"6",
        b"1",
        b"42[\"a\",1]\x1e3\x1ebAQID",
        b"bAAECAw==",
        b"451-[\"x\",{\"_placeholder\":true,\"num\":0}]\x1ebAQ==",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

fn sio_seeds() -> Vec<Vec<u8>> {
    [
        &b"0"[..],
        b"0/admin,{\"token\":\"abc\"}",
        b"1/admin,",
        b"2[\"event\",{\"a\":[1,2,{\"b\":null}]},\"s\"]",
        b"2/chat,42[\"ev\",1.5e3,true]",
        b"3/chat,7[\"ok\"]",
        b"4{\"message\":\"no\"}",
        b"52-[\"b\",{\"_placeholder\":true,\"num\":0},[{\"_placeholder\":true,\"num\":1}]]",
        b"61-/n,3[{\"_placeholder\":true,\"num\":0}]",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

#[test]
fn engineio_payloads_never_panic() {
    let mut rng = rng("engineio");
    let pool = eio_seeds();
    let mut budget = Budget::new();
    let mut decoded = 0u64;
    while budget.next() {
        let mut input = pool[rng.random_range(0..pool.len())].clone();
        mutate(&mut rng, &mut input, &pool);
        let bytes = Bytes::from(input);
        decoded += EioPacket::decode_payload(bytes.clone())
            .filter(Result::is_ok)
            .count() as u64;
        let _ = EioPacket::decode_text(bytes);
    }
    assert!(decoded > 0, "the fuzzer never produced a valid packet");
}

#[test]
fn socketio_packets_never_panic_and_roundtrip() {
    let mut rng = rng("socketio");
    let pool = sio_seeds();
    let mut budget = Budget::new();
    let mut events = 0u64;
    while budget.next() {
        let mut input = pool[rng.random_range(0..pool.len())].clone();
        mutate(&mut rng, &mut input, &pool);
        let Ok(text) = String::from_utf8(input) else {
            continue;
        };
        let Ok(p) = Packet::decode(&text) else {
            continue;
        };
        if p.kind == PacketKind::Event {
            // What decodes as an event re-encodes to an event that decodes the same.
            let (nsp, id) = (p.nsp.clone(), p.id);
            let Some((name, args)) = p.into_event() else {
                continue;
            };
            let enc = encode_event(&nsp, &name, &Data::new(args.clone()), id);
            let again = std::str::from_utf8(&enc.text.payload()[1..])
                .unwrap()
                .to_owned();
            let q = Packet::decode(&again).expect("our own encoding decodes");
            assert_eq!(
                (q.nsp.as_str(), q.id),
                (nsp.as_str(), id),
                "{text} -> {again}"
            );
            let (name2, args2) = q.into_event().expect("still an event");
            assert_eq!(name2, name);
            assert_eq!(args2, args);
            events += 1;
        }
    }
    assert!(events > 0, "the fuzzer never produced a valid event");
}

fn frame(rng: &mut StdRng, opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rng.random();
    let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
    let n = payload.len();
    if n < 126 {
        v.push(0x80 | n as u8);
    } else {
        v.push(0x80 | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    v
}

#[test]
fn websocket_frames_never_panic() {
    let mut rng = rng("websocket");
    let mut budget = Budget::new();
    let mut messages = 0u64;
    while budget.next() {
        // A stream of plausible frames, then mutated, fed in random chunk sizes.
        let mut stream = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            let len = rng.random_range(0..300);
            let payload: Vec<u8> = (0..len).map(|_| rng.random_range(b' '..=b'~')).collect();
            let opcode = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3][rng.random_range(0..7)];
            let fin = rng.random_bool(0.8);
            stream.extend(frame(&mut rng, opcode, fin, &payload));
        }
        if rng.random_bool(0.5) {
            let pool = vec![stream.clone()];
            mutate(&mut rng, &mut stream, &pool);
        }
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut need = 0;
        let mut pos = 0;
        'feed: while pos < stream.len() {
            let n = rng.random_range(1..=stream.len() - pos);
            buf.extend_from_slice(&stream[pos..pos + n]);
            pos += n;
            loop {
                match d.decode(&mut buf, 200, &mut need) {
                    Ok(Some(_)) => messages += 1,
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
    assert!(messages > 0, "the fuzzer never produced a valid message");
}
