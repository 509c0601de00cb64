//! MQTT v5 packets as raw bytes: a framer, a property reader, and builders for the packets the
//! fixtures send (server packets for the fake broker, a CONNECT and AUTH for raw clients).
//!
//! Written here rather than taken from satmqtt on purpose: the tests crate must judge satmqtt's
//! bytes with code that shares nothing with it.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// MQTT control packet types (the high nibble of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// 1
    Connect,
    /// 2
    Connack,
    /// 3
    Publish,
    /// 4
    Puback,
    /// 5
    Pubrec,
    /// 6
    Pubrel,
    /// 7
    Pubcomp,
    /// 8
    Subscribe,
    /// 9
    Suback,
    /// 10
    Unsubscribe,
    /// 11
    Unsuback,
    /// 12
    Pingreq,
    /// 13
    Pingresp,
    /// 14
    Disconnect,
    /// 15
    Auth,
    /// 0: reserved, never valid.
    Reserved,
}

impl PacketType {
    /// The type of a packet whose first byte is `first`.
    pub fn of(first: u8) -> PacketType {
        use PacketType::*;
        [
            Reserved,
            Connect,
            Connack,
            Publish,
            Puback,
            Pubrec,
            Pubrel,
            Pubcomp,
            Subscribe,
            Suback,
            Unsubscribe,
            Unsuback,
            Pingreq,
            Pingresp,
            Disconnect,
            Auth,
        ][usize::from(first >> 4)]
    }
}

/// Property identifiers the fixtures use.
pub mod prop {
    /// Session Expiry Interval (four-byte integer).
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// Assigned Client Identifier (UTF-8 string).
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    /// Server Keep Alive (two-byte integer).
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// Authentication Method (UTF-8 string).
    pub const AUTH_METHOD: u8 = 0x15;
    /// Authentication Data (binary data).
    pub const AUTH_DATA: u8 = 0x16;
    /// Reason String (UTF-8 string).
    pub const REASON_STRING: u8 = 0x1F;
    /// Receive Maximum (two-byte integer).
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Topic Alias Maximum (two-byte integer).
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// User Property (UTF-8 string pair).
    pub const USER_PROPERTY: u8 = 0x26;
    /// Maximum Packet Size (four-byte integer).
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
}

/// Encodes a Remaining Length / Variable Byte Integer.
///
/// # Panics
/// If `n` exceeds the four-byte maximum, 268 435 455.
pub fn encode_varint(mut n: usize) -> Vec<u8> {
    assert!(n <= 268_435_455, "variable byte integer {n} is too large");
    let mut out = Vec::with_capacity(4);
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// Decodes a Variable Byte Integer at the start of `bytes`: `Ok(Some((value, length)))`, `Ok(None)`
/// if more bytes are needed, `Err` if a fifth byte would be needed (malformed).
pub fn decode_varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().enumerate() {
        if i == 4 {
            return Err("variable byte integer longer than 4 bytes".into());
        }
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err("variable byte integer longer than 4 bytes".into());
    }
    Ok(None)
}

/// The length of the first complete packet in `buf`: `Ok(None)` if it is not complete yet.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    Ok(decode_varint(&buf[1..])?.map(|(remaining, len)| 1 + len + remaining))
}

/// A packet made of its first byte and its body (everything after the remaining length).
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(encode_varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// One property, encoded (identifier + value), for the builders below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    /// A two-byte integer property.
    U16(u8, u16),
    /// A four-byte integer property.
    U32(u8, u32),
    /// A UTF-8 string property.
    Str(u8, String),
    /// A binary data property.
    Bin(u8, Vec<u8>),
    /// A UTF-8 string pair (User Property, 0x26).
    Pair(u8, String, String),
}

impl Property {
    /// Its identifier.
    pub fn id(&self) -> u8 {
        match self {
            Property::U16(id, _)
            | Property::U32(id, _)
            | Property::Str(id, _)
            | Property::Bin(id, _)
            | Property::Pair(id, _, _) => *id,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.id());
        match self {
            Property::U16(_, v) => out.extend(v.to_be_bytes()),
            Property::U32(_, v) => out.extend(v.to_be_bytes()),
            Property::Str(_, s) => put_binary(out, s.as_bytes()),
            Property::Bin(_, b) => put_binary(out, b),
            Property::Pair(_, k, v) => {
                put_binary(out, k.as_bytes());
                put_binary(out, v.as_bytes());
            }
        }
    }
}

fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("MQTT strings and binary data are < 64 KiB");
    out.extend(len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A property block: its length as a variable byte integer, then the properties.
pub fn properties(props: &[Property]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in props {
        p.encode(&mut body);
    }
    let mut out = encode_varint(body.len());
    out.extend(body);
    out
}

/// Reads the property block at the start of `bytes`: the properties and the bytes consumed.
///
/// Identifiers are typed by the MQTT v5 table (byte, two-byte, four-byte, varint, string, binary,
/// string pair). A one-byte or varint property is returned as [`Property::U32`].
pub fn parse_properties(bytes: &[u8]) -> Result<(Vec<Property>, usize), String> {
    let (len, len_len) = decode_varint(bytes)?.ok_or("truncated property length")?;
    let end = len_len + len;
    let block = bytes
        .get(len_len..end)
        .ok_or("property block runs past the packet")?;
    let mut props = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = block.get(*i..*i + n).ok_or("truncated property")?;
        *i += n;
        Ok(s)
    };
    let take_bin = |i: &mut usize| -> Result<Vec<u8>, String> {
        let n = take(i, 2)?;
        let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
        Ok(take(i, n)?.to_vec())
    };
    let string = |b: Vec<u8>| String::from_utf8(b).map_err(|_| "property string is not UTF-8");
    while i < block.len() {
        let id = take(&mut i, 1)?[0];
        let p = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                Property::U32(id, u32::from(take(&mut i, 1)?[0]))
            }
            0x13 | 0x21 | 0x22 | 0x23 => {
                let b = take(&mut i, 2)?;
                Property::U16(id, u16::from_be_bytes([b[0], b[1]]))
            }
            0x02 | 0x11 | 0x18 | 0x27 => {
                let b = take(&mut i, 4)?;
                Property::U32(id, u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            0x0B => {
                let (v, n) = decode_varint(&block[i..])?.ok_or("truncated varint property")?;
                i += n;
                Property::U32(id, u32::try_from(v).map_err(|_| "varint too large")?)
            }
            0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                Property::Str(id, string(take_bin(&mut i)?)?)
            }
            0x09 | 0x16 => Property::Bin(id, take_bin(&mut i)?),
            0x26 => {
                let key = string(take_bin(&mut i)?)?;
                Property::Pair(id, key, string(take_bin(&mut i)?)?)
            }
            other => return Err(format!("unknown property identifier 0x{other:02X}")),
        };
        props.push(p);
    }
    Ok((props, end))
}

/// One complete packet as received, with accessors for the fields the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The whole packet, fixed header included.
    pub raw: Vec<u8>,
}

impl Packet {
    /// Its type.
    pub fn kind(&self) -> PacketType {
        PacketType::of(self.raw[0])
    }

    /// Everything after the fixed header.
    pub fn body(&self) -> &[u8] {
        let (_, n) = decode_varint(&self.raw[1..])
            .ok()
            .flatten()
            .expect("a framed packet has a remaining length");
        &self.raw[1 + n..]
    }

    /// The reason code of a CONNACK, PUBACK, DISCONNECT or AUTH (0x00 when omitted, as MQTT v5 says).
    pub fn reason(&self) -> u8 {
        let body = self.body();
        match self.kind() {
            PacketType::Connack => body.get(1).copied().unwrap_or(0),
            PacketType::Puback => body.get(2).copied().unwrap_or(0),
            _ => body.first().copied().unwrap_or(0),
        }
    }

    /// The properties of a CONNACK, PUBACK, DISCONNECT or AUTH (empty when the block is absent).
    pub fn properties(&self) -> Result<Vec<Property>, String> {
        let body = self.body();
        let at = match self.kind() {
            PacketType::Connack => 2,
            PacketType::Puback => 3,
            PacketType::Disconnect | PacketType::Auth => 1,
            other => return Err(format!("properties of {other:?} are not decoded here")),
        };
        if body.len() <= at {
            return Ok(Vec::new());
        }
        parse_properties(&body[at..]).map(|(props, _)| props)
    }

    /// The first string property with identifier `id`.
    pub fn string_property(&self, id: u8) -> Option<String> {
        self.properties().ok()?.into_iter().find_map(|p| match p {
            Property::Str(i, s) if i == id => Some(s),
            _ => None,
        })
    }
}

/// Reads one packet from `stream` within `timeout`. `Err` names what happened: EOF (with how many
/// bytes of a partial packet), a reset, a timeout or malformed framing.
pub fn read_packet(stream: &mut TcpStream, timeout: Duration) -> Result<Packet, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    loop {
        if let Some(len) = frame_len(&buf)? {
            if buf.len() >= len {
                return Ok(Packet { raw: buf });
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete packet within {timeout:?} ({} bytes)",
                buf.len()
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        // One byte at a time never reads past the packet, so the next call starts at a boundary.
        let want = match frame_len(&buf)? {
            Some(len) => len - buf.len(),
            None => 1,
        };
        let mut chunk = vec![0u8; want];
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("EOF after {} bytes of a packet", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
}

/// Server-side properties of a CONNACK; `None` fields are left out.
#[derive(Debug, Clone, Default)]
pub struct ConnackProps {
    /// Receive Maximum (0x21).
    pub receive_maximum: Option<u16>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Maximum Packet Size (0x27).
    pub maximum_packet_size: Option<u32>,
    /// Server Keep Alive (0x13).
    pub server_keep_alive: Option<u16>,
    /// Authentication Method (0x15).
    pub auth_method: Option<String>,
    /// Authentication Data (0x16).
    pub auth_data: Option<Vec<u8>>,
    /// Reason String (0x1F).
    pub reason_string: Option<String>,
    /// Assigned Client Identifier (0x12).
    pub assigned_client_id: Option<String>,
    /// Any further properties, appended as given (e.g. a 256 KiB block of user properties).
    pub extra: Vec<Property>,
}

impl ConnackProps {
    /// The properties, in a fixed order.
    pub fn to_list(&self) -> Vec<Property> {
        let mut list = Vec::new();
        let mut push = |p: Option<Property>| list.extend(p);
        push(
            self.receive_maximum
                .map(|v| Property::U16(prop::RECEIVE_MAXIMUM, v)),
        );
        push(
            self.topic_alias_maximum
                .map(|v| Property::U16(prop::TOPIC_ALIAS_MAXIMUM, v)),
        );
        push(
            self.maximum_packet_size
                .map(|v| Property::U32(prop::MAXIMUM_PACKET_SIZE, v)),
        );
        push(
            self.server_keep_alive
                .map(|v| Property::U16(prop::SERVER_KEEP_ALIVE, v)),
        );
        push(
            self.auth_method
                .clone()
                .map(|v| Property::Str(prop::AUTH_METHOD, v)),
        );
        push(
            self.auth_data
                .clone()
                .map(|v| Property::Bin(prop::AUTH_DATA, v)),
        );
        push(
            self.reason_string
                .clone()
                .map(|v| Property::Str(prop::REASON_STRING, v)),
        );
        push(
            self.assigned_client_id
                .clone()
                .map(|v| Property::Str(prop::ASSIGNED_CLIENT_ID, v)),
        );
        list.extend(self.extra.iter().cloned());
        list
    }
}

/// CONNACK with `reason`, the Session Present flag and `props`.
pub fn connack(reason: u8, session_present: bool, props: &ConnackProps) -> Vec<u8> {
    let mut body = vec![u8::from(session_present), reason];
    body.extend(properties(&props.to_list()));
    packet(0x20, &body)
}

/// PUBACK for packet id `id` with `reason` (the full four-byte form, empty property block).
pub fn puback(id: u16, reason: u8) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend([reason, 0]);
    packet(0x40, &body)
}

/// DISCONNECT with `reason` and an optional Reason String.
pub fn disconnect(reason: u8, reason_string: Option<&str>) -> Vec<u8> {
    let props: Vec<Property> = reason_string
        .map(|s| Property::Str(prop::REASON_STRING, s.into()))
        .into_iter()
        .collect();
    let mut body = vec![reason];
    body.extend(properties(&props));
    packet(0xE0, &body)
}

/// AUTH with `reason` (0x00 success, 0x18 continue, 0x19 re-authenticate) and optional method and
/// data.
pub fn auth(reason: u8, method: Option<&str>, data: Option<&[u8]>) -> Vec<u8> {
    let mut props = Vec::new();
    props.extend(method.map(|m| Property::Str(prop::AUTH_METHOD, m.into())));
    props.extend(data.map(|d| Property::Bin(prop::AUTH_DATA, d.to_vec())));
    let mut body = vec![reason];
    body.extend(properties(&props));
    packet(0xF0, &body)
}

/// PINGRESP.
pub fn pingresp() -> Vec<u8> {
    vec![0xD0, 0x00]
}

/// A QoS 0 or 1 PUBLISH (for a QoS 1, `id` is the packet id), no properties.
pub fn publish(topic: &str, payload: &[u8], qos: u8, id: u16) -> Vec<u8> {
    let mut body = Vec::new();
    put_binary(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend(id.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// An MQTT v5 CONNECT with Clean Start, `keep_alive_s`, `client_id`, optional user name and password,
/// and `props` (e.g. Authentication Method and Data).
pub fn connect(
    client_id: &str,
    keep_alive_s: u16,
    username: Option<&str>,
    password: Option<&[u8]>,
    props: &[Property],
) -> Vec<u8> {
    let mut body = Vec::new();
    put_binary(&mut body, b"MQTT");
    body.push(5);
    let mut flags = 0x02;
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend(keep_alive_s.to_be_bytes());
    body.extend(properties(props));
    put_binary(&mut body, client_id.as_bytes());
    if let Some(u) = username {
        put_binary(&mut body, u.as_bytes());
    }
    if let Some(p) = password {
        put_binary(&mut body, p);
    }
    packet(0x10, &body)
}

/// A K8S-SAT CONNECT: Authentication Method `K8S-SAT`, the token as Authentication Data, no user name
/// or password.
pub fn connect_k8s_sat(client_id: &str, keep_alive_s: u16, token: &[u8]) -> Vec<u8> {
    connect(
        client_id,
        keep_alive_s,
        None,
        None,
        &[
            Property::Str(prop::AUTH_METHOD, "K8S-SAT".into()),
            Property::Bin(prop::AUTH_DATA, token.to_vec()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_boundaries() {
        for n in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let bytes = encode_varint(n);
            assert_eq!(decode_varint(&bytes), Ok(Some((n, bytes.len()))), "{n}");
            assert_eq!(decode_varint(&bytes[..bytes.len() - 1]), Ok(None), "{n}");
        }
        assert!(decode_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
    }

    #[test]
    fn builders_make_the_bytes_of_the_spec() {
        assert_eq!(puback(0x1234, 0x10), [0x40, 4, 0x12, 0x34, 0x10, 0]);
        assert_eq!(pingresp(), [0xD0, 0]);
        assert_eq!(disconnect(0x8E, None), [0xE0, 2, 0x8E, 0]);
        assert_eq!(
            auth(0x18, Some("K"), Some(b"d")),
            [0xF0, 10, 0x18, 8, 0x15, 0, 1, b'K', 0x16, 0, 1, b'd']
        );
        let c = connack(
            0,
            true,
            &ConnackProps {
                receive_maximum: Some(1),
                ..ConnackProps::default()
            },
        );
        assert_eq!(c, [0x20, 6, 1, 0, 3, 0x21, 0, 1]);
        let p = Packet { raw: c };
        assert_eq!(p.kind(), PacketType::Connack);
        assert_eq!(p.properties(), Ok(vec![Property::U16(0x21, 1)]));
    }

    #[test]
    fn a_256_kib_property_block_round_trips() {
        let value = "v".repeat(60_000);
        let props = ConnackProps {
            extra: (0..5)
                .map(|i| Property::Pair(prop::USER_PROPERTY, format!("k{i}"), value.clone()))
                .collect(),
            ..ConnackProps::default()
        };
        let c = connack(0, false, &props);
        assert!(c.len() > 256 * 1024 - 20_000 && c.len() < 512 * 1024);
        assert_eq!(frame_len(&c), Ok(Some(c.len())));
        assert_eq!(Packet { raw: c }.properties(), Ok(props.to_list()));
    }

    #[test]
    fn a_k8s_sat_connect_carries_method_and_data() {
        let c = connect_k8s_sat("id", 30, b"tok");
        assert_eq!(frame_len(&c), Ok(Some(c.len())));
        let body = &Packet { raw: c.clone() }.body().to_vec();
        // "MQTT", version 5, clean start only, keep alive 30, then the property block.
        assert_eq!(&body[..10], &[0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30]);
        let (props, used) = parse_properties(&body[10..]).unwrap();
        assert_eq!(
            props,
            vec![
                Property::Str(prop::AUTH_METHOD, "K8S-SAT".into()),
                Property::Bin(prop::AUTH_DATA, b"tok".to_vec())
            ]
        );
        assert_eq!(&body[10 + used..], &[0, 2, b'i', b'd']);
    }
}
