//! MQTT v5 wire framing: the fixed header, and checked views of the few packets the guard reads.
//!
//! Every function here takes untrusted broker bytes and answers without panicking: a view is
//! built with a `parse` that validates lengths once, so its accessors cannot go out of bounds.

/// Largest value a Remaining Length varint can carry (MQTT v5 §1.5.5).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Control packet types the client may meet (MQTT v5 §2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// 1: client → server connection request.
    Connect,
    /// 2: server's answer to CONNECT.
    ConnAck,
    /// 3: application message.
    Publish,
    /// 4: QoS 1 acknowledgement.
    PubAck,
    /// 5..=7: the QoS 2 handshake, never used by this client.
    QoS2(u8),
    /// 8..=11: subscriptions, never used by this client.
    Subscription(u8),
    /// 12: keepalive request.
    PingReq,
    /// 13: keepalive answer.
    PingResp,
    /// 14: orderly end of a connection.
    Disconnect,
    /// 15: enhanced authentication.
    Auth,
}

impl PacketType {
    /// The type named by the high nibble of a fixed header's first byte; 0 is reserved.
    pub fn from_first_byte(byte: u8) -> Option<Self> {
        Some(match byte >> 4 {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            t @ 5..=7 => Self::QoS2(t),
            t @ 8..=11 => Self::Subscription(t),
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }
}

/// What is wrong with bytes that claim to be MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Packet type 0 is reserved.
    ReservedType,
    /// The fixed-header flags are not the ones MQTT v5 §2.1.3 requires for this type.
    BadFlags(u8),
    /// The Remaining Length varint runs past four bytes.
    LengthTooLong,
    /// A length inside the packet points past its end.
    Truncated,
    /// A property identifier MQTT v5 does not define.
    UnknownProperty(u8),
    /// The Remaining Length is below what the packet type needs.
    TooShort,
}

/// Result of reading a fixed header from the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// More bytes are needed to know the packet's length.
    Incomplete,
    /// A complete fixed header.
    Packet {
        /// The first byte: type and flags.
        first: u8,
        /// Bytes taken by the fixed header (2..=5).
        header_len: usize,
        /// Bytes in the whole packet, header included.
        total_len: usize,
    },
    /// Not MQTT.
    Malformed(Malformed),
}

/// Reads a fixed header: type byte, then the Remaining Length varint (MQTT v5 §2.1.4).
pub fn parse_header(bytes: &[u8]) -> Header {
    let Some(&first) = bytes.first() else {
        return Header::Incomplete;
    };
    if first >> 4 == 0 {
        return Header::Malformed(Malformed::ReservedType);
    }
    match read_varint(&bytes[1..]) {
        Varint::Incomplete => Header::Incomplete,
        Varint::TooLong => Header::Malformed(Malformed::LengthTooLong),
        Varint::Value { value, len } => Header::Packet {
            first,
            header_len: 1 + len,
            total_len: 1 + len + value,
        },
    }
}

enum Varint {
    Incomplete,
    TooLong,
    Value { value: usize, len: usize },
}

fn read_varint(bytes: &[u8]) -> Varint {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(4) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Varint::Value { value, len: i + 1 };
        }
    }
    if bytes.len() >= 4 {
        Varint::TooLong
    } else {
        Varint::Incomplete
    }
}

/// A cursor over a packet's bytes whose reads fail instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self.bytes.split_first().ok_or(Malformed::Truncated)?;
        self.bytes = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.bytes.len() {
            return Err(Malformed::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<usize, Malformed> {
        match read_varint(self.bytes) {
            Varint::Value { value, len } => {
                self.bytes = &self.bytes[len..];
                Ok(value)
            }
            Varint::Incomplete => Err(Malformed::Truncated),
            Varint::TooLong => Err(Malformed::LengthTooLong),
        }
    }
}

/// Splits a complete packet into its first byte and its body, checking the type's fixed flags.
fn body(packet: &[u8], expected_first: u8) -> Result<&[u8], Malformed> {
    match parse_header(packet) {
        Header::Packet {
            first,
            header_len,
            total_len,
        } => {
            if first != expected_first {
                return Err(Malformed::BadFlags(first));
            }
            packet
                .get(header_len..total_len)
                .ok_or(Malformed::Truncated)
        }
        Header::Incomplete => Err(Malformed::Truncated),
        Header::Malformed(m) => Err(m),
    }
}

/// The CONNACK fields the client acts on (MQTT v5 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Connect Reason Code: below 0x80 is success.
    pub reason: u8,
    /// Receive Maximum property; 65 535 when absent (§3.2.2.3.3).
    pub receive_maximum: u16,
    /// Maximum QoS property; 2 when absent.
    pub maximum_qos: u8,
    /// Whether properties were cut off by the capture limit before they could all be read.
    pub properties_truncated: bool,
}

impl ConnAck {
    /// Reads a CONNACK from `packet`, which may be cut short after the reason code: properties
    /// past the cut are reported as truncated, not as malformed.
    pub fn parse(packet: &[u8], full_len: usize) -> Result<Self, Malformed> {
        let truncated = packet.len() < full_len;
        let body = match body(packet, 0x20) {
            Ok(body) => body,
            Err(Malformed::Truncated) if truncated => {
                packet.get(2..).ok_or(Malformed::Truncated)?
            }
            Err(e) => return Err(e),
        };
        let mut r = Reader { bytes: body };
        let flags = r.u8().map_err(|_| Malformed::TooShort)?;
        let reason = r.u8().map_err(|_| Malformed::TooShort)?;
        let mut ack = ConnAck {
            session_present: flags & 1 == 1,
            reason,
            receive_maximum: u16::MAX,
            maximum_qos: 2,
            properties_truncated: false,
        };
        if flags & 0xfe != 0 {
            return Err(Malformed::BadFlags(flags));
        }
        if r.bytes.is_empty() && !truncated {
            // A v5 CONNACK always has a property length, but a refusal may omit it (§3.2.2.3).
            return Ok(ack);
        }
        let props = match r.varint().and_then(|n| r.take(n)) {
            Ok(props) => props,
            Err(Malformed::Truncated) if truncated => {
                ack.properties_truncated = true;
                r.bytes
            }
            Err(e) => return Err(e),
        };
        let mut p = Reader { bytes: props };
        while !p.bytes.is_empty() {
            match read_property(&mut p) {
                Ok(Property::ReceiveMaximum(v)) => ack.receive_maximum = v,
                Ok(Property::MaximumQos(v)) => ack.maximum_qos = v,
                Ok(Property::Other) => {}
                Err(Malformed::Truncated) if truncated => {
                    ack.properties_truncated = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ack)
    }
}

enum Property {
    ReceiveMaximum(u16),
    MaximumQos(u8),
    Other,
}

/// Reads one property, skipping the ones the client ignores by their wire type (MQTT v5 §2.2.2.2).
fn read_property(r: &mut Reader<'_>) -> Result<Property, Malformed> {
    let id = r.varint()?;
    let id = u8::try_from(id).map_err(|_| Malformed::UnknownProperty(0xff))?;
    match id {
        0x21 => return Ok(Property::ReceiveMaximum(r.u16()?)),
        0x24 => return Ok(Property::MaximumQos(r.u8()?)),
        // Byte.
        0x01 | 0x17 | 0x19 | 0x25 | 0x28 | 0x29 | 0x2a => {
            r.u8()?;
        }
        // Two-byte integer.
        0x13 | 0x22 | 0x23 => {
            r.u16()?;
        }
        // Four-byte integer.
        0x02 | 0x11 | 0x18 | 0x27 => {
            r.take(4)?;
        }
        // Variable byte integer.
        0x0b => {
            r.varint()?;
        }
        // UTF-8 string or binary data: two-byte length, then bytes.
        0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => {
            let n = r.u16()?;
            r.take(usize::from(n))?;
        }
        // User property: a string pair.
        0x26 => {
            for _ in 0..2 {
                let n = r.u16()?;
                r.take(usize::from(n))?;
            }
        }
        other => return Err(Malformed::UnknownProperty(other)),
    }
    Ok(Property::Other)
}

/// A PUBACK (MQTT v5 §3.4): which packet, and the broker's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubAck {
    /// Packet Identifier of the acknowledged PUBLISH.
    pub packet_id: u16,
    /// Reason code; 0x00 when the short form omits it. 0x10 "no matching subscribers" is success.
    pub reason: u8,
}

impl PubAck {
    /// Reads a PUBACK's identifier and reason (properties are ignored).
    pub fn parse(packet: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader {
            bytes: body(packet, 0x40)?,
        };
        let packet_id = r.u16().map_err(|_| Malformed::TooShort)?;
        let reason = r.u8().unwrap_or(0);
        Ok(PubAck { packet_id, reason })
    }
}

/// Reads a server DISCONNECT's reason code (MQTT v5 §3.14); the two-byte form means 0x00.
pub fn parse_disconnect(packet: &[u8]) -> Result<u8, Malformed> {
    let mut r = Reader {
        bytes: body(packet, 0xe0)?,
    };
    Ok(r.u8().unwrap_or(0))
}

/// The QoS and Packet Identifier of an outgoing PUBLISH (MQTT v5 §3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishHead {
    /// QoS from the fixed-header flags.
    pub qos: u8,
    /// Packet Identifier; present only when QoS > 0.
    pub packet_id: Option<u16>,
}

impl PublishHead {
    /// Reads the head of a PUBLISH from its first bytes (the payload may be absent).
    pub fn parse(packet: &[u8]) -> Result<Self, Malformed> {
        let Header::Packet {
            first, header_len, ..
        } = parse_header(packet)
        else {
            return Err(Malformed::Truncated);
        };
        if first >> 4 != 3 {
            return Err(Malformed::BadFlags(first));
        }
        let qos = (first >> 1) & 3;
        if qos == 3 {
            return Err(Malformed::BadFlags(first));
        }
        let mut r = Reader {
            bytes: packet.get(header_len..).ok_or(Malformed::Truncated)?,
        };
        let topic_len = r.u16()?;
        r.take(usize::from(topic_len))?;
        let packet_id = if qos > 0 { Some(r.u16()?) } else { None };
        Ok(PublishHead { qos, packet_id })
    }
}

/// Returns whether a reason code is a success (MQTT v5 §2.4: below 0x80).
pub fn is_success(reason: u8) -> bool {
    reason < 0x80
}

/// Human name of the reason codes a publisher meets, for events and logs.
pub fn reason_name(reason: u8) -> &'static str {
    match reason {
        0x00 => "Success",
        0x04 => "Disconnect with Will Message",
        0x10 => "No matching subscribers",
        0x80 => "Unspecified error",
        0x81 => "Malformed Packet",
        0x82 => "Protocol Error",
        0x83 => "Implementation specific error",
        0x84 => "Unsupported Protocol Version",
        0x85 => "Client Identifier not valid",
        0x86 => "Bad User Name or Password",
        0x87 => "Not authorized",
        0x88 => "Server unavailable",
        0x89 => "Server busy",
        0x8a => "Banned",
        0x8b => "Server shutting down",
        0x8c => "Bad authentication method",
        0x8d => "Keep Alive timeout",
        0x8e => "Session taken over",
        0x90 => "Topic Name invalid",
        0x93 => "Receive Maximum exceeded",
        0x95 => "Packet too large",
        0x97 => "Quota exceeded",
        0x98 => "Administrative action",
        0x99 => "Payload format invalid",
        0x9c => "Use another server",
        0x9d => "Server moved",
        0xa0 => "Maximum connect time",
        _ => "unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_type_and_complete_varint() {
        assert_eq!(parse_header(&[]), Header::Incomplete);
        assert_eq!(parse_header(&[0x40]), Header::Incomplete);
        assert_eq!(parse_header(&[0x30, 0x80]), Header::Incomplete);
        assert_eq!(
            parse_header(&[0x40, 0x02]),
            Header::Packet {
                first: 0x40,
                header_len: 2,
                total_len: 4
            }
        );
        // 321 = 0xC1 0x02 (§1.5.5 example).
        assert_eq!(
            parse_header(&[0x30, 0xc1, 0x02]),
            Header::Packet {
                first: 0x30,
                header_len: 3,
                total_len: 324
            }
        );
    }

    #[test]
    fn header_rejects_reserved_type_and_five_byte_length() {
        assert_eq!(
            parse_header(&[0x00, 0x00]),
            Header::Malformed(Malformed::ReservedType)
        );
        assert_eq!(
            parse_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Header::Malformed(Malformed::LengthTooLong)
        );
        assert_eq!(
            parse_header(&[0x30, 0xff, 0xff, 0xff, 0x7f]),
            Header::Packet {
                first: 0x30,
                header_len: 5,
                total_len: 5 + MAX_REMAINING_LENGTH
            }
        );
    }

    #[test]
    fn connack_reads_reason_and_receive_maximum_among_other_properties() {
        let packet = [
            0x20, 0x13, // CONNACK, remaining length 19
            0x00, // no session present
            0x00, // success
            0x10, // properties: 16 bytes
            0x22, 0x00, 0x0a, // Topic Alias Maximum 10
            0x12, 0x00, 0x03, b'a', b'b', b'c', // Assigned Client Identifier "abc"
            0x21, 0x00, 0x14, // Receive Maximum 20
            0x24, 0x01, // Maximum QoS 1
            0x25, 0x01, // Retain Available
        ];
        let ack = ConnAck::parse(&packet, packet.len()).expect("valid CONNACK");
        assert_eq!(ack.reason, 0);
        assert_eq!(ack.receive_maximum, 20);
        assert_eq!(ack.maximum_qos, 1);
        assert!(!ack.session_present);
        assert!(!ack.properties_truncated);
    }

    #[test]
    fn connack_without_properties_defaults_receive_maximum() {
        let ack = ConnAck::parse(&[0x20, 0x03, 0x00, 0x87, 0x00], 5).expect("valid");
        assert_eq!(ack.reason, 0x87);
        assert_eq!(ack.receive_maximum, u16::MAX);
        // The refusal form without a property length.
        let ack = ConnAck::parse(&[0x20, 0x02, 0x00, 0x86], 4).expect("valid");
        assert_eq!(ack.reason, 0x86);
    }

    #[test]
    fn connack_cut_short_by_capture_keeps_what_it_read() {
        let packet = [
            0x20, 0x0a, 0x00, 0x00, 0x07, 0x21, 0x00, 0x02, 0x1f, 0x00, 0x09,
        ];
        // The capture kept 11 of 12 bytes; the reason string runs past it.
        let ack = ConnAck::parse(&packet, 12).expect("reads up to the cut");
        assert_eq!(ack.receive_maximum, 2);
        assert!(ack.properties_truncated);
    }

    #[test]
    fn connack_with_bad_flags_or_unknown_property_is_malformed() {
        assert_eq!(
            ConnAck::parse(&[0x21, 0x02, 0x00, 0x00], 4),
            Err(Malformed::BadFlags(0x21))
        );
        assert_eq!(
            ConnAck::parse(&[0x20, 0x02, 0x02, 0x00], 4),
            Err(Malformed::BadFlags(0x02))
        );
        assert_eq!(
            ConnAck::parse(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x7e, 0x00], 7),
            Err(Malformed::UnknownProperty(0x7e))
        );
        assert_eq!(
            ConnAck::parse(&[0x20, 0x04, 0x00, 0x00, 0x03, 0x21], 6),
            Err(Malformed::Truncated)
        );
        assert_eq!(ConnAck::parse(&[0x20, 0x00], 2), Err(Malformed::TooShort));
    }

    #[test]
    fn puback_short_and_long_forms() {
        assert_eq!(
            PubAck::parse(&[0x40, 0x02, 0x00, 0x07]),
            Ok(PubAck {
                packet_id: 7,
                reason: 0
            })
        );
        assert_eq!(
            PubAck::parse(&[0x40, 0x04, 0x01, 0x00, 0x10, 0x00]),
            Ok(PubAck {
                packet_id: 256,
                reason: 0x10
            })
        );
        assert_eq!(PubAck::parse(&[0x40, 0x01, 0x00]), Err(Malformed::TooShort));
        assert_eq!(
            PubAck::parse(&[0x42, 0x02, 0x00, 0x01]),
            Err(Malformed::BadFlags(0x42))
        );
        assert!(is_success(0x10));
        assert!(!is_success(0x87));
    }

    #[test]
    fn disconnect_two_byte_form_is_normal() {
        assert_eq!(parse_disconnect(&[0xe0, 0x00]), Ok(0));
        assert_eq!(parse_disconnect(&[0xe0, 0x02, 0x8b, 0x00]), Ok(0x8b));
        assert_eq!(
            parse_disconnect(&[0xe1, 0x00]),
            Err(Malformed::BadFlags(0xe1))
        );
    }

    #[test]
    fn publish_head_reads_qos_and_packet_id() {
        let packet = [
            0x32, 0x0a, // PUBLISH QoS 1, remaining length 10
            0x00, 0x01, b't', // topic "t"
            0x00, 0x05, // packet id 5
            0x00, // no properties
            b'p', b'0', b'0', b'0',
        ];
        assert_eq!(
            PublishHead::parse(&packet),
            Ok(PublishHead {
                qos: 1,
                packet_id: Some(5)
            })
        );
        assert_eq!(
            PublishHead::parse(&[0x30, 0x04, 0x00, 0x01, b't', 0x00]),
            Ok(PublishHead {
                qos: 0,
                packet_id: None
            })
        );
        assert_eq!(
            PublishHead::parse(&[0x36, 0x00]),
            Err(Malformed::BadFlags(0x36))
        );
    }

    #[test]
    fn every_prefix_of_every_packet_parses_without_panicking() {
        let packets: [&[u8]; 4] = [
            &[0x20, 0x08, 0x00, 0x00, 0x05, 0x21, 0x00, 0x02, 0x24, 0x01],
            &[0x40, 0x03, 0x00, 0x01, 0x10],
            &[0xe0, 0x01, 0x8e],
            &[0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x01, 0x00],
        ];
        for p in packets {
            for cut in 0..=p.len() {
                let bytes = &p[..cut];
                let _ = parse_header(bytes);
                let _ = ConnAck::parse(bytes, p.len());
                let _ = PubAck::parse(bytes);
                let _ = parse_disconnect(bytes);
                let _ = PublishHead::parse(bytes);
            }
        }
    }
}
