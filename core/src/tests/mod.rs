//! Byte-level tests of the engine: [`Connection`](crate::Connection) fed broker bytes by hand
//! (`connection`), the [`Driver`](crate::Driver) over a scripted network stack (`driver`), and a
//! deterministic random walk over both (`random`). Expected bytes are written as annotated hex,
//! the way MQTT v5 lays them out.

mod connection;
mod driver;
mod mock;
mod random;

use std::string::String;
use std::vec::Vec;

use crate::wire::{self, Packet};

/// A client packet as the broker side saw it, owned so tests can keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Connect {
        clean_start: bool,
        keep_alive: u16,
        session_expiry: u32,
        username: Option<String>,
        password: Option<Vec<u8>>,
        method: Option<String>,
        data: Option<Vec<u8>>,
    },
    Publish {
        dup: bool,
        qos: u8,
        topic: String,
        id: Option<u16>,
        alias: Option<u16>,
        payload: Vec<u8>,
    },
    Pingreq,
    Disconnect(u8),
    Auth {
        reason: u8,
        method: Option<String>,
        data: Option<Vec<u8>>,
    },
    /// Anything a client never sends.
    Other,
}

impl Sent {
    /// The counter a PUBLISH payload `p<N>` carries.
    pub fn n(&self) -> Option<u64> {
        match self {
            Sent::Publish { payload, .. } => std::str::from_utf8(&payload[1..]).ok()?.parse().ok(),
            _ => None,
        }
    }
}

fn owned(p: &Packet<'_>) -> Sent {
    match *p {
        Packet::Connect(c) => Sent::Connect {
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            session_expiry: c.session_expiry,
            username: c.username.map(String::from),
            password: c.password.map(<[u8]>::to_vec),
            method: c.auth_method.map(String::from),
            data: c.auth_data.map(<[u8]>::to_vec),
        },
        Packet::Publish(p) => Sent::Publish {
            dup: p.dup,
            qos: p.qos,
            topic: String::from(p.topic),
            id: p.packet_id,
            alias: p.topic_alias,
            payload: p.payload.to_vec(),
        },
        Packet::Pingreq => Sent::Pingreq,
        Packet::Disconnect(d) => Sent::Disconnect(d.reason),
        Packet::Auth(a) => Sent::Auth {
            reason: a.reason,
            method: a.method.map(String::from),
            data: a.data.map(<[u8]>::to_vec),
        },
        _ => Sent::Other,
    }
}

/// Every whole packet in `bytes`; panics (the test fails) on malformed client bytes, and
/// returns the bytes of a trailing partial packet separately.
pub fn packets(bytes: &[u8]) -> (Vec<Sent>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        match wire::parse(&bytes[at..]) {
            Ok(Some((p, len))) => {
                out.push(owned(&p));
                at += len;
            }
            Ok(None) => return (out, bytes.len() - at),
            Err(m) => panic!("client wrote a malformed packet at byte {at}: {m}: {bytes:02x?}"),
        }
    }
}

/// Every packet in `bytes`, which must end on a packet boundary.
pub fn whole(bytes: &[u8]) -> Vec<Sent> {
    let (p, rest) = packets(bytes);
    assert_eq!(rest, 0, "a partial packet at the end of {bytes:02x?}");
    p
}

/// The counters of the PUBLISHes among `sent`.
pub fn counters(sent: &[Sent]) -> Vec<u64> {
    sent.iter().filter_map(Sent::n).collect()
}

// ---- broker packets, annotated ----

/// CONNACK success, no properties.
pub const CONNACK_OK: &[u8] = &[
    0x20, 0x03, // CONNACK, remaining length 3
    0x00, 0x00, // no Session Present, reason 0x00 Success
    0x00, // no properties
];

/// CONNACK success with Receive Maximum `rm`.
pub fn connack_rm(rm: u16) -> Vec<u8> {
    let [hi, lo] = rm.to_be_bytes();
    std::vec![
        0x20, 0x06, // CONNACK, remaining length 6
        0x00, 0x00, // no Session Present, Success
        0x03, // properties, 3 bytes
        0x21, hi, lo, // Receive Maximum
    ]
}

/// A refused CONNACK with `reason`.
pub fn connack_refused(reason: u8) -> Vec<u8> {
    std::vec![
        0x20, 0x03, // CONNACK, remaining length 3
        0x00, reason, // no Session Present, the refusal
        0x00,   // no properties
    ]
}

/// PUBACK success for `id`.
pub fn puback(id: u16) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    std::vec![0x40, 0x02, hi, lo] // PUBACK, remaining length 2, packet id
}

/// PUBACK with a reason code.
pub fn puback_reason(id: u16, reason: u8) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    std::vec![0x40, 0x03, hi, lo, reason] // PUBACK, remaining length 3, id, reason
}

/// PINGRESP.
pub const PINGRESP: &[u8] = &[0xd0, 0x00]; // PINGRESP, remaining length 0

/// AUTH from the broker with `reason` and method `K8S-SAT`.
pub fn auth(reason: u8) -> Vec<u8> {
    let mut v = std::vec![
        0xf0, 0x0c, // AUTH, remaining length 12
        reason, 0x0a, // reason code, properties 10 bytes
        0x15, 0x00, 0x07, // Authentication Method, 7 bytes:
    ];
    v.extend_from_slice(b"K8S-SAT");
    v
}

/// `E0 00`: DISCONNECT, normal disconnection.
pub const DISCONNECT_NORMAL: &[u8] = &[0xe0, 0x00];
