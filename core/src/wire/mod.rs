//! MQTT v5 packets a publisher needs; public for tests and fuzzing — applications use the driver.
//!
//! [`parse`] reads one packet from the front of a byte slice and answers "need more bytes",
//! "a packet of this many bytes" (a `Copy` view borrowing the input) or a precise
//! [`Malformed`] cause; [`emit`] writes a packet into a caller-owned buffer and answers its
//! length or [`EmitError::TooSmall`] without writing a partial packet anyone could send;
//! [`encoded_len`] says how large that buffer must be first. Nothing here allocates, panics or
//! uses `unsafe`, whatever the input.
//!
//! Covered: CONNECT, CONNACK, PUBLISH (QoS 0/1, and QoS 2 on parse), PUBACK, PINGREQ,
//! PINGRESP, DISCONNECT and AUTH, with every property MQTT v5 allows in them (§2.2.2.2).
//! Left out on purpose: SUBSCRIBE/SUBACK/UNSUBSCRIBE/UNSUBACK, the QoS 2 acknowledgements
//! (PUBREC/PUBREL/PUBCOMP) and Will messages — a publisher never needs them, so they parse
//! as [`Malformed::PacketType`] (or [`Malformed::Flags`] for a CONNECT with a Will).
//!
//! [`emit`] trusts its input the way smoltcp's `Repr::emit` does: a repr that [`parse`] would
//! reject (QoS 3, a QoS 1 PUBLISH without a packet id, a topic with `#`) is written as given.
//! Properties that are validated but not kept (User Property, Payload Format Indicator, …) are
//! never emitted.

mod codec;
mod packet;
#[cfg(test)]
mod tests;

use core::fmt;

pub use packet::{
    emit, emit_publish, encoded_len, header, parse, publish_len, Auth, Connack, Connect,
    Disconnect, Header, Packet, Puback, Publish,
};

/// Largest remaining length (4-byte variable byte integer).
pub const MAX_REMAINING: u32 = 268_435_455;

/// Packet type numbers (upper nibble of the first byte).
pub mod kind {
    /// Client request to connect to a server.
    pub const CONNECT: u8 = 1;
    /// Connect acknowledgment.
    pub const CONNACK: u8 = 2;
    /// Publish message.
    pub const PUBLISH: u8 = 3;
    /// Publish acknowledgment (QoS 1).
    pub const PUBACK: u8 = 4;
    /// Publish received (QoS 2 part 1).
    pub const PUBREC: u8 = 5;
    /// Publish release (QoS 2 part 2).
    pub const PUBREL: u8 = 6;
    /// Publish complete (QoS 2 part 3).
    pub const PUBCOMP: u8 = 7;
    /// Subscribe request.
    pub const SUBSCRIBE: u8 = 8;
    /// Subscribe acknowledgment.
    pub const SUBACK: u8 = 9;
    /// Unsubscribe request.
    pub const UNSUBSCRIBE: u8 = 10;
    /// Unsubscribe acknowledgment.
    pub const UNSUBACK: u8 = 11;
    /// PING request.
    pub const PINGREQ: u8 = 12;
    /// PING response.
    pub const PINGRESP: u8 = 13;
    /// Disconnect notification.
    pub const DISCONNECT: u8 = 14;
    /// Authentication exchange.
    pub const AUTH: u8 = 15;
}

/// Why bytes are not a valid packet. One variant per cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A variable byte integer would need a fifth byte (§1.5.5).
    VarIntTooLong,
    /// A variable byte integer not in its shortest form [MQTT-1.5.5-1].
    VarIntNotMinimal,
    /// Packet type 0, or one this module does not parse (PUBREC..PUBCOMP, SUBSCRIBE..UNSUBACK).
    PacketType(u8),
    /// Reserved fixed-header flag bits wrong (§2.1.3); for CONNECT also any Will bit in the
    /// Connect Flags (`flags` is then the Connect Flags byte).
    Flags {
        /// Packet type.
        kind: u8,
        /// The offending flags.
        flags: u8,
    },
    /// A field runs past the end of the packet (or of its property block).
    Truncated,
    /// Bytes left after the last field.
    TrailingBytes,
    /// A string is not UTF-8, or contains U+0000 (§1.5.4).
    Utf8,
    /// A property identifier MQTT v5 does not define.
    UnknownProperty(u8),
    /// A valid property this packet may not carry (§2.2.2.2).
    PropertyNotAllowed {
        /// Packet type.
        kind: u8,
        /// Property identifier.
        id: u8,
    },
    /// A property other than User Property or Subscription Identifier given twice.
    DuplicateProperty(u8),
    /// A property value out of its range (e.g. Receive Maximum 0, Maximum QoS 2).
    PropertyValue(u8),
    /// PUBLISH with QoS 3, or DUP set with QoS 0 [MQTT-3.3.1-2].
    Qos,
    /// A reason code this packet may not carry.
    ReasonCode {
        /// Packet type.
        kind: u8,
        /// Reason code.
        code: u8,
    },
    /// CONNECT whose protocol name is not "MQTT", level not 5, or reserved flag set.
    Protocol,
    /// Packet identifier 0 where one is required.
    PacketId,
    /// PUBLISH topic name with `+` or `#`, or empty without a Topic Alias.
    Topic,
    /// CONNACK acknowledge flags bits 7-1 set, or Session Present with a failure reason.
    ConnackFlags,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformed::VarIntTooLong => {
                f.write_str("variable byte integer longer than four bytes (§1.5.5)")
            }
            Malformed::VarIntNotMinimal => {
                f.write_str("variable byte integer not in its shortest form [MQTT-1.5.5-1]")
            }
            Malformed::PacketType(t) => write!(f, "packet type {t} not supported here"),
            Malformed::Flags { kind, flags } => write!(
                f,
                "packet type {kind}: flags {flags:#04x} not allowed (reserved bits, or a Will) [MQTT-2.1.3-1]"
            ),
            Malformed::Truncated => f.write_str("a field runs past the end of the packet"),
            Malformed::TrailingBytes => f.write_str("bytes left after the last field of the packet"),
            Malformed::Utf8 => {
                f.write_str("string is not UTF-8 or contains U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2]")
            }
            Malformed::UnknownProperty(id) => write!(f, "unknown property identifier {id:#04x}"),
            Malformed::PropertyNotAllowed { kind, id } => {
                write!(f, "property {id:#04x} not allowed in packet type {kind} [MQTT-2.2.2.2]")
            }
            Malformed::DuplicateProperty(id) => write!(f, "property {id:#04x} given more than once"),
            Malformed::PropertyValue(id) => write!(f, "property {id:#04x} has a value out of range"),
            Malformed::Qos => f.write_str("PUBLISH with QoS 3, or DUP set on QoS 0 [MQTT-3.3.1-2]"),
            Malformed::ReasonCode { kind, code } => {
                write!(f, "reason code {code:#04x} not allowed in packet type {kind}")
            }
            Malformed::Protocol => {
                f.write_str("CONNECT: protocol name not \"MQTT\", level not 5, or reserved flag set")
            }
            Malformed::PacketId => f.write_str("packet identifier 0 [MQTT-2.2.1-3]"),
            Malformed::Topic => f.write_str(
                "PUBLISH topic name contains a wildcard, or is empty without a Topic Alias [MQTT-3.3.2-2]",
            ),
            Malformed::ConnackFlags => f.write_str(
                "CONNACK acknowledge flags: reserved bits set, or Session Present with a failure reason [MQTT-3.2.2-1] [MQTT-3.2.2-6]",
            ),
        }
    }
}

/// Emit error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// `buf` is shorter than the packet; nothing useful was written (the caller must not send any of it).
    TooSmall {
        /// The packet's whole length.
        needed: usize,
    },
    /// A string/binary field longer than 65 535 bytes, or a packet over MAX_REMAINING.
    TooLong,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EmitError::TooSmall { needed } => {
                write!(f, "buffer too small: the packet needs {needed} bytes")
            }
            EmitError::TooLong => f.write_str(
                "a string or binary field over 65 535 bytes, or a packet over 268 435 455 bytes",
            ),
        }
    }
}

/// Reason code names from §2.4 (e.g. 0x87 → "Not authorized"), "unknown" otherwise.
///
/// 0x00 is "Success" (also "Normal disconnection" and "Granted QoS 0" by context).
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "Success",
        0x01 => "Granted QoS 1",
        0x02 => "Granted QoS 2",
        0x04 => "Disconnect with Will Message",
        0x10 => "No matching subscribers",
        0x11 => "No subscription existed",
        0x18 => "Continue authentication",
        0x19 => "Re-authenticate",
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
        0x8A => "Banned",
        0x8B => "Server shutting down",
        0x8C => "Bad authentication method",
        0x8D => "Keep Alive timeout",
        0x8E => "Session taken over",
        0x8F => "Topic Filter invalid",
        0x90 => "Topic Name invalid",
        0x91 => "Packet Identifier in use",
        0x92 => "Packet Identifier not found",
        0x93 => "Receive Maximum exceeded",
        0x94 => "Topic Alias invalid",
        0x95 => "Packet too large",
        0x96 => "Message rate too high",
        0x97 => "Quota exceeded",
        0x98 => "Administrative action",
        0x99 => "Payload format invalid",
        0x9A => "Retain not supported",
        0x9B => "QoS not supported",
        0x9C => "Use another server",
        0x9D => "Server moved",
        0x9E => "Shared Subscriptions not supported",
        0x9F => "Connection rate exceeded",
        0xA0 => "Maximum connect time",
        0xA1 => "Subscription Identifiers not supported",
        0xA2 => "Wildcard Subscriptions not supported",
        _ => "unknown",
    }
}

/// Whether a reason code reports a failure (§2.4: 0x80 and above).
pub fn is_failure(code: u8) -> bool {
    code >= 0x80
}
