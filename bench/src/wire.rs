//! Just enough MQTT v5 to be the wire limit: hand-encoded CONNECT, PUBLISH, SUBSCRIBE, PUBACK and
//! DISCONNECT, and a framer that splits an inbound byte stream into packets.
//!
//! Nothing here is general: no properties beyond Receive Maximum, no QoS 2, no will. The point
//! is that the raw client and the counting subscriber spend as little CPU as a client can.

/// MQTT control packet types (the high nibble of the first byte).
pub mod kind {
    /// CONNACK.
    pub const CONNACK: u8 = 2;
    /// PUBLISH.
    pub const PUBLISH: u8 = 3;
    /// PUBACK.
    pub const PUBACK: u8 = 4;
    /// SUBACK.
    pub const SUBACK: u8 = 9;
    /// DISCONNECT.
    pub const DISCONNECT: u8 = 14;
}

/// DISCONNECT with reason 0 (normal).
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// Appends the variable-length encoding of `n` (MQTT's "remaining length").
pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// CONNECT (MQTT v5, Clean Start) with user name and password; `receive_maximum` adds that
/// property (a subscriber that wants many QoS 1 deliveries in flight).
pub fn connect(
    client_id: &str,
    user: &str,
    password: &[u8],
    keepalive_s: u16,
    receive_maximum: Option<u16>,
) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(5); // protocol level
    body.push(0x80 | 0x40 | 0x02); // user name, password, clean start
    body.extend_from_slice(&keepalive_s.to_be_bytes());
    match receive_maximum {
        Some(max) => {
            body.push(3); // properties length
            body.push(0x21); // Receive Maximum
            body.extend_from_slice(&max.to_be_bytes());
        }
        None => body.push(0),
    }
    put_str(&mut body, client_id.as_bytes());
    put_str(&mut body, user.as_bytes());
    put_str(&mut body, password);
    packet(0x10, &body)
}

/// Appends one PUBLISH (no properties) to `out`; `packet_id` is used when `qos` is 1.
pub fn put_publish(out: &mut Vec<u8>, topic: &str, payload: &[u8], qos: u8, packet_id: u16) {
    let id_len = if qos > 0 { 2 } else { 0 };
    let remaining = 2 + topic.len() + id_len + 1 + payload.len();
    out.push(0x30 | (qos << 1));
    put_varint(out, remaining);
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    out.push(0); // properties length
    out.extend_from_slice(payload);
}

/// SUBSCRIBE to one topic filter at `qos`.
pub fn subscribe(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.push(0); // properties length
    put_str(&mut body, filter.as_bytes());
    body.push(qos);
    packet(0x82, &body)
}

/// Appends PUBACK (success, reason code omitted) for `packet_id`.
pub fn put_puback(out: &mut Vec<u8>, packet_id: u16) {
    out.extend_from_slice(&[0x40, 0x02]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// One inbound packet: its first byte and its body (everything after the remaining length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The fixed header's first byte.
    pub first: u8,
    /// The variable header and payload.
    pub body: &'a [u8],
}

impl<'a> Packet<'a> {
    /// The packet type.
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// The packet identifier of a PUBACK (the first two body bytes).
    pub fn packet_id(&self) -> Option<u16> {
        Some(u16::from_be_bytes([
            *self.body.first()?,
            *self.body.get(1)?,
        ]))
    }

    /// For a PUBLISH: (QoS, packet id, payload).
    pub fn publish(&self) -> Option<(u8, Option<u16>, &'a [u8])> {
        let body: &'a [u8] = self.body;
        let qos = (self.first >> 1) & 3;
        let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let mut at = 2 + topic_len;
        let id = if qos > 0 {
            let id = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
            at += 2;
            Some(id)
        } else {
            None
        };
        let (props, used) = varint(body.get(at..)?)?;
        at += used + props;
        Some((qos, id, body.get(at..)?))
    }
}

/// Decodes a variable-length integer: (value, bytes used), or None if incomplete or too long.
pub fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Splits `buf` into whole packets; returns how many bytes they used (the rest is a partial
/// packet to keep for the next read).
pub fn split<'a>(buf: &'a [u8], mut each: impl FnMut(Packet<'a>)) -> usize {
    let mut at = 0;
    while let Some(&first) = buf.get(at) {
        let Some((len, used)) = buf.get(at + 1..).and_then(varint) else {
            break;
        };
        let start = at + 1 + used;
        let Some(body) = buf.get(start..start + len) else {
            break;
        };
        each(Packet { first, body });
        at = start + len;
    }
    at
}

/// The counter at the end of `<prefix><N>`.
pub fn counter(payload: &[u8], prefix: &[u8]) -> Option<u64> {
    let digits = payload.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_the_framer() {
        let mut bytes = Vec::new();
        put_publish(&mut bytes, "sampletopic", b"samplepayload7", 1, 9);
        put_publish(&mut bytes, "sampletopic", b"samplepayload8", 0, 0);
        let mut seen = Vec::new();
        let used = split(&bytes, |p| seen.push(p.publish()));
        assert_eq!(used, bytes.len());
        assert_eq!(
            seen,
            vec![
                Some((1, Some(9), &b"samplepayload7"[..])),
                Some((0, None, &b"samplepayload8"[..]))
            ]
        );
    }

    #[test]
    fn a_partial_packet_is_left_for_the_next_read() {
        let mut bytes = Vec::new();
        put_publish(&mut bytes, "t", b"samplepayload1", 0, 0);
        let whole = bytes.len();
        put_publish(&mut bytes, "t", b"samplepayload2", 0, 0);
        assert_eq!(split(&bytes[..whole + 3], |_| ()), whole);
    }

    #[test]
    fn connect_is_mqtt5_with_credentials() {
        let c = connect("id", "$sat", b"tok", 60, Some(65535));
        // CONNECT, remaining length 30: "MQTT" v5, flags c2, keepalive 60, props [21 ffff],
        // then "id", "$sat", "tok".
        assert_eq!(c[0], 0x10);
        assert_eq!(usize::from(c[1]), c.len() - 2);
        assert_eq!(&c[2..10], b"\x00\x04MQTT\x05\xc2");
        assert_eq!(&c[10..16], b"\x00\x3c\x03\x21\xff\xff");
    }

    #[test]
    fn varint_encodes_and_decodes() {
        for n in [0, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(varint(&out), Some((n, out.len())));
        }
    }

    #[test]
    fn counter_reads_the_decimal_suffix() {
        assert_eq!(counter(b"samplepayload42", b"samplepayload"), Some(42));
        assert_eq!(counter(b"samplepayload", b"samplepayload"), None);
        assert_eq!(counter(b"other42", b"samplepayload"), None);
        assert_eq!(counter(b"samplepayload4x", b"samplepayload"), None);
    }
}
