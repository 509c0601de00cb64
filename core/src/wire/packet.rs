//! Packet reprs, their parsers (checked, zero-copy) and emitters (length first, then bytes).

use core::fmt;

use super::codec::{
    put_bin, put_properties, put_str, put_u16, put_u32, put_varint, varint, varint_len, Counter,
    Out, Reader, Value, Writer, MAX_REMAINING_LEN,
};
use super::kind::{self, *};
use super::{EmitError, Malformed};

/// The fixed header: first byte, its length (2..=5) and the whole packet's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The first byte: packet type and flags.
    pub first: u8,
    /// Bytes taken by the fixed header (first byte plus remaining length).
    pub header_len: usize,
    /// Bytes taken by the whole packet.
    pub packet_len: usize,
}

impl Header {
    /// The packet type (upper nibble of the first byte).
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

/// Checks the first byte: a type this module parses, with the flags §2.1.3 requires.
fn check_first(first: u8) -> Result<(), Malformed> {
    let kind = first >> 4;
    let flags = first & 0x0f;
    match kind {
        CONNECT | CONNACK | PUBACK | PINGREQ | PINGRESP | DISCONNECT | AUTH => {
            if flags != 0 {
                return Err(Malformed::Flags { kind, flags });
            }
        }
        PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 || (qos == 0 && flags & 0x08 != 0) {
                return Err(Malformed::Qos);
            }
        }
        _ => return Err(Malformed::PacketType(kind)),
    }
    Ok(())
}

/// Reads only the fixed header: Ok(None) = need more bytes. Lets a caller reject a packet
/// larger than its buffer before it arrives (the Connection advertises Maximum Packet Size).
pub fn header(buf: &[u8]) -> Result<Option<Header>, Malformed> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first(first)?;
    let Some((remaining, n)) = varint(buf.get(1..).unwrap_or(&[]))? else {
        return Ok(None);
    };
    // Four varint bytes at most, so these cannot overflow a usize of 32 bits or more; on a
    // 16-bit target a packet that large could never be buffered anyway.
    let header_len = n.checked_add(1).ok_or(Malformed::Truncated)?;
    let remaining = usize::try_from(remaining).map_err(|_| Malformed::Truncated)?;
    let packet_len = header_len
        .checked_add(remaining)
        .ok_or(Malformed::Truncated)?;
    Ok(Some(Header {
        first,
        header_len,
        packet_len,
    }))
}

/// Parses one whole packet from the front of `buf`: Ok(Some((packet, len))), Ok(None) = need
/// more bytes (every strict prefix of a valid packet answers this), Err = malformed.
/// It parses both directions (CONNECT too: the fuzzer and tests parse what we emit).
pub fn parse(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, Malformed> {
    let Some(h) = header(buf)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(h.header_len..h.packet_len) else {
        return Ok(None);
    };
    let mut r = Reader::new(body);
    let packet = match h.kind() {
        CONNECT => Packet::Connect(parse_connect(&mut r)?),
        CONNACK => Packet::Connack(parse_connack(&mut r)?),
        PUBLISH => Packet::Publish(parse_publish(h.first, &mut r)?),
        PUBACK => Packet::Puback(parse_puback(&mut r)?),
        PINGREQ => Packet::Pingreq,
        PINGRESP => Packet::Pingresp,
        DISCONNECT => Packet::Disconnect(parse_disconnect(&mut r)?),
        AUTH => Packet::Auth(parse_auth(&mut r)?),
        // check_first already refused every other type.
        other => return Err(Malformed::PacketType(other)),
    };
    r.finish()?;
    Ok(Some((packet, h.packet_len)))
}

/// One MQTT v5 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNECT (§3.1).
    Connect(Connect<'a>),
    /// CONNACK (§3.2).
    Connack(Connack<'a>),
    /// PUBLISH (§3.3).
    Publish(Publish<'a>),
    /// PUBACK (§3.4).
    Puback(Puback<'a>),
    /// PINGREQ (§3.12).
    Pingreq,
    /// PINGRESP (§3.13).
    Pingresp,
    /// DISCONNECT (§3.14).
    Disconnect(Disconnect<'a>),
    /// AUTH (§3.15).
    Auth(Auth<'a>),
}

/// Prints `Some(<N bytes>)` instead of bytes that may be a token.
struct Redacted(Option<usize>);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "Some(<{n} bytes>)"),
            None => f.write_str("None"),
        }
    }
}

/// CONNECT (§3.1) without a Will.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Connect<'a> {
    /// Clean Start flag.
    pub clean_start: bool,
    /// Keep Alive in seconds.
    pub keep_alive: u16,
    /// Session Expiry Interval (0x11), emitted only when != 0 (absent means 0).
    pub session_expiry: u32,
    /// Receive Maximum (0x21).
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size (0x27).
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum (0x22); emitted only when Some and != 0, parsed as None when 0.
    pub topic_alias_maximum: Option<u16>,
    /// Authentication Method (0x15).
    pub auth_method: Option<&'a str>,
    /// Authentication Data (0x16), only together with `auth_method`.
    pub auth_data: Option<&'a [u8]>,
    /// Client Identifier.
    pub client_id: &'a str,
    /// User Name.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a [u8]>,
}

impl fmt::Debug for Connect<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("session_expiry", &self.session_expiry)
            .field("receive_maximum", &self.receive_maximum)
            .field("maximum_packet_size", &self.maximum_packet_size)
            .field("topic_alias_maximum", &self.topic_alias_maximum)
            .field("auth_method", &self.auth_method)
            .field("auth_data", &Redacted(self.auth_data.map(<[u8]>::len)))
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &Redacted(self.password.map(<[u8]>::len)))
            .finish()
    }
}

/// CONNACK (§3.2).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Connack<'a> {
    /// Session Present.
    pub session_present: bool,
    /// Connect Reason Code (§3.2.2.2).
    pub reason: u8,
    /// Session Expiry Interval (0x11).
    pub session_expiry: Option<u32>,
    /// Receive Maximum (0x21); None means 65 535, not substituted here.
    pub receive_maximum: Option<u16>,
    /// Maximum QoS (0x24).
    pub maximum_qos: Option<u8>,
    /// Retain Available (0x25).
    pub retain_available: Option<bool>,
    /// Maximum Packet Size (0x27).
    pub maximum_packet_size: Option<u32>,
    /// Assigned Client Identifier (0x12).
    pub assigned_client_id: Option<&'a str>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Reason String (0x1F).
    pub reason_string: Option<&'a str>,
    /// Wildcard Subscription Available (0x28).
    pub wildcard_available: Option<bool>,
    /// Subscription Identifiers Available (0x29).
    pub subscription_ids_available: Option<bool>,
    /// Shared Subscription Available (0x2A).
    pub shared_available: Option<bool>,
    /// Server Keep Alive (0x13).
    pub server_keep_alive: Option<u16>,
    /// Response Information (0x1A).
    pub response_information: Option<&'a str>,
    /// Server Reference (0x1C).
    pub server_reference: Option<&'a str>,
    /// Authentication Method (0x15).
    pub auth_method: Option<&'a str>,
    /// Authentication Data (0x16).
    pub auth_data: Option<&'a [u8]>,
}

impl fmt::Debug for Connack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connack")
            .field("session_present", &self.session_present)
            .field("reason", &self.reason)
            .field("session_expiry", &self.session_expiry)
            .field("receive_maximum", &self.receive_maximum)
            .field("maximum_qos", &self.maximum_qos)
            .field("retain_available", &self.retain_available)
            .field("maximum_packet_size", &self.maximum_packet_size)
            .field("assigned_client_id", &self.assigned_client_id)
            .field("topic_alias_maximum", &self.topic_alias_maximum)
            .field("reason_string", &self.reason_string)
            .field("wildcard_available", &self.wildcard_available)
            .field(
                "subscription_ids_available",
                &self.subscription_ids_available,
            )
            .field("shared_available", &self.shared_available)
            .field("server_keep_alive", &self.server_keep_alive)
            .field("response_information", &self.response_information)
            .field("server_reference", &self.server_reference)
            .field("auth_method", &self.auth_method)
            .field("auth_data", &Redacted(self.auth_data.map(<[u8]>::len)))
            .finish()
    }
}

/// PUBLISH (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Publish<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS: 0 or 1 (parse accepts 2 too).
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name; may be "" when `topic_alias` is Some.
    pub topic: &'a str,
    /// Packet Identifier: Some (nonzero) iff qos > 0.
    pub packet_id: Option<u16>,
    /// Topic Alias (0x23).
    pub topic_alias: Option<u16>,
    /// Payload.
    pub payload: &'a [u8],
}

/// PUBACK (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Puback<'a> {
    /// Packet Identifier.
    pub packet_id: u16,
    /// PUBACK Reason Code (§3.4.2.1).
    pub reason: u8,
    /// Reason String (0x1F).
    pub reason_string: Option<&'a str>,
}

/// DISCONNECT (§3.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Disconnect<'a> {
    /// Disconnect Reason Code (§3.14.2.1).
    pub reason: u8,
    /// Session Expiry Interval (0x11).
    pub session_expiry: Option<u32>,
    /// Reason String (0x1F).
    pub reason_string: Option<&'a str>,
    /// Server Reference (0x1C).
    pub server_reference: Option<&'a str>,
}

/// AUTH (§3.15).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Auth<'a> {
    /// Authenticate Reason Code: 0x00, 0x18 or 0x19.
    pub reason: u8,
    /// Authentication Method (0x15).
    pub method: Option<&'a str>,
    /// Authentication Data (0x16).
    pub data: Option<&'a [u8]>,
    /// Reason String (0x1F).
    pub reason_string: Option<&'a str>,
}

impl fmt::Debug for Auth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("reason", &self.reason)
            .field("method", &self.method)
            .field("data", &Redacted(self.data.map(<[u8]>::len)))
            .field("reason_string", &self.reason_string)
            .finish()
    }
}

// Reason codes each packet may carry.
const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

fn reason(kind: u8, code: u8) -> Result<u8, Malformed> {
    let table = match kind {
        CONNACK => CONNACK_REASONS,
        PUBACK => PUBACK_REASONS,
        DISCONNECT => DISCONNECT_REASONS,
        _ => AUTH_REASONS,
    };
    if table.contains(&code) {
        Ok(code)
    } else {
        Err(Malformed::ReasonCode { kind, code })
    }
}

fn str_of(v: Value<'_>) -> Option<&str> {
    match v {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn bin_of(v: Value<'_>) -> Option<&[u8]> {
    match v {
        Value::Bin(b) => Some(b),
        _ => None,
    }
}

fn u16_of(v: Value<'_>) -> Option<u16> {
    match v {
        Value::Two(n) => Some(n),
        _ => None,
    }
}

fn u32_of(v: Value<'_>) -> Option<u32> {
    match v {
        Value::Int(n) => Some(n),
        _ => None,
    }
}

fn bool_of(v: Value<'_>) -> Option<bool> {
    match v {
        Value::Byte(b) => Some(b == 1),
        _ => None,
    }
}

fn parse_connect<'a>(r: &mut Reader<'a>) -> Result<Connect<'a>, Malformed> {
    if r.str()? != "MQTT" || r.u8()? != 5 {
        return Err(Malformed::Protocol);
    }
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(Malformed::Protocol);
    }
    // Will flag, Will QoS, Will Retain: this module carries no Will.
    if flags & 0x3c != 0 {
        return Err(Malformed::Flags {
            kind: CONNECT,
            flags,
        });
    }
    let mut c = Connect {
        clean_start: flags & 0x02 != 0,
        keep_alive: r.u16()?,
        ..Connect::default()
    };
    let mut props = r.properties()?;
    let mut seen = 0u64;
    while let Some((id, v)) = props.next_for(CONNECT, &mut seen)? {
        match id {
            0x11 => c.session_expiry = u32_of(v).unwrap_or(0),
            0x21 => c.receive_maximum = u16_of(v),
            0x27 => c.maximum_packet_size = u32_of(v),
            // 0 and absent mean the same (no aliases); one form keeps emit(parse(x)) stable.
            0x22 => c.topic_alias_maximum = u16_of(v).filter(|&n| n != 0),
            0x15 => c.auth_method = str_of(v),
            0x16 => c.auth_data = bin_of(v),
            _ => {}
        }
    }
    if c.auth_data.is_some() && c.auth_method.is_none() {
        return Err(Malformed::PropertyValue(0x16));
    }
    c.client_id = r.str()?;
    if flags & 0x80 != 0 {
        c.username = Some(r.str()?);
    }
    if flags & 0x40 != 0 {
        c.password = Some(r.bin()?);
    }
    Ok(c)
}

fn parse_connack<'a>(r: &mut Reader<'a>) -> Result<Connack<'a>, Malformed> {
    let flags = r.u8()?;
    let code = r.u8()?;
    let code = reason(CONNACK, code)?;
    if flags & 0xfe != 0 || (flags & 0x01 != 0 && super::is_failure(code)) {
        return Err(Malformed::ConnackFlags);
    }
    let mut c = Connack {
        session_present: flags & 0x01 != 0,
        reason: code,
        ..Connack::default()
    };
    let mut props = r.properties()?;
    let mut seen = 0u64;
    while let Some((id, v)) = props.next_for(CONNACK, &mut seen)? {
        match id {
            0x11 => c.session_expiry = u32_of(v),
            0x21 => c.receive_maximum = u16_of(v),
            0x24 => {
                c.maximum_qos = match v {
                    Value::Byte(b) => Some(b),
                    _ => None,
                }
            }
            0x25 => c.retain_available = bool_of(v),
            0x27 => c.maximum_packet_size = u32_of(v),
            0x12 => c.assigned_client_id = str_of(v),
            0x22 => c.topic_alias_maximum = u16_of(v),
            0x1F => c.reason_string = str_of(v),
            0x28 => c.wildcard_available = bool_of(v),
            0x29 => c.subscription_ids_available = bool_of(v),
            0x2A => c.shared_available = bool_of(v),
            0x13 => c.server_keep_alive = u16_of(v),
            0x1A => c.response_information = str_of(v),
            0x1C => c.server_reference = str_of(v),
            0x15 => c.auth_method = str_of(v),
            0x16 => c.auth_data = bin_of(v),
            _ => {}
        }
    }
    Ok(c)
}

fn parse_publish<'a>(first: u8, r: &mut Reader<'a>) -> Result<Publish<'a>, Malformed> {
    let qos = (first >> 1) & 0x03;
    let mut p = Publish {
        dup: first & 0x08 != 0,
        qos,
        retain: first & 0x01 != 0,
        topic: r.str()?,
        ..Publish::default()
    };
    if p.topic.contains(['+', '#']) {
        return Err(Malformed::Topic);
    }
    if qos > 0 {
        match r.u16()? {
            0 => return Err(Malformed::PacketId),
            id => p.packet_id = Some(id),
        }
    }
    let mut props = r.properties()?;
    let mut seen = 0u64;
    while let Some((id, v)) = props.next_for(PUBLISH, &mut seen)? {
        if id == 0x23 {
            p.topic_alias = u16_of(v);
        }
    }
    if p.topic.is_empty() && p.topic_alias.is_none() {
        return Err(Malformed::Topic);
    }
    p.payload = r.rest();
    Ok(p)
}

fn parse_puback<'a>(r: &mut Reader<'a>) -> Result<Puback<'a>, Malformed> {
    let packet_id = r.u16()?;
    if packet_id == 0 {
        return Err(Malformed::PacketId);
    }
    let mut p = Puback {
        packet_id,
        ..Puback::default()
    };
    // Reason Code and Property Length may each be left out (§3.4.2.1, §3.4.2.2.1).
    if r.remaining() == 0 {
        return Ok(p);
    }
    p.reason = reason(PUBACK, r.u8()?)?;
    if r.remaining() == 0 {
        return Ok(p);
    }
    let mut props = r.properties()?;
    let mut seen = 0u64;
    while let Some((id, v)) = props.next_for(PUBACK, &mut seen)? {
        if id == 0x1F {
            p.reason_string = str_of(v);
        }
    }
    Ok(p)
}

fn parse_disconnect<'a>(r: &mut Reader<'a>) -> Result<Disconnect<'a>, Malformed> {
    let mut d = Disconnect::default();
    // Remaining length 0: reason 0; 1: no properties (§3.14.2.1, §3.14.2.2.1).
    if r.remaining() == 0 {
        return Ok(d);
    }
    d.reason = reason(DISCONNECT, r.u8()?)?;
    if r.remaining() == 0 {
        return Ok(d);
    }
    let mut props = r.properties()?;
    let mut seen = 0u64;
    while let Some((id, v)) = props.next_for(DISCONNECT, &mut seen)? {
        match id {
            0x11 => d.session_expiry = u32_of(v),
            0x1F => d.reason_string = str_of(v),
            0x1C => d.server_reference = str_of(v),
            _ => {}
        }
    }
    Ok(d)
}

fn parse_auth<'a>(r: &mut Reader<'a>) -> Result<Auth<'a>, Malformed> {
    let mut a = Auth::default();
    // Only both Reason Code and Property Length may be left out (§3.15.2.1), so a lone
    // reason byte is a truncated packet.
    if r.remaining() == 0 {
        return Ok(a);
    }
    a.reason = reason(AUTH, r.u8()?)?;
    let mut props = r.properties()?;
    let mut seen = 0u64;
    while let Some((id, v)) = props.next_for(AUTH, &mut seen)? {
        match id {
            0x15 => a.method = str_of(v),
            0x16 => a.data = bin_of(v),
            0x1F => a.reason_string = str_of(v),
            _ => {}
        }
    }
    Ok(a)
}

// ---- emit ----

type Res = Result<(), EmitError>;

fn prop_u8(o: &mut dyn Out, id: u8, v: u8) -> Res {
    o.put(&[id, v])
}

fn prop_u16(o: &mut dyn Out, id: u8, v: u16) -> Res {
    o.put(&[id])?;
    put_u16(o, v)
}

fn prop_u32(o: &mut dyn Out, id: u8, v: u32) -> Res {
    o.put(&[id])?;
    put_u32(o, v)
}

fn prop_str(o: &mut dyn Out, id: u8, v: &str) -> Res {
    o.put(&[id])?;
    put_str(o, v)
}

fn prop_bin(o: &mut dyn Out, id: u8, v: &[u8]) -> Res {
    o.put(&[id])?;
    put_bin(o, v)
}

fn connect_props(c: &Connect<'_>, o: &mut dyn Out) -> Res {
    if c.session_expiry != 0 {
        prop_u32(o, 0x11, c.session_expiry)?;
    }
    if let Some(v) = c.receive_maximum {
        prop_u16(o, 0x21, v)?;
    }
    if let Some(v) = c.maximum_packet_size {
        prop_u32(o, 0x27, v)?;
    }
    if let Some(v) = c.topic_alias_maximum.filter(|&n| n != 0) {
        prop_u16(o, 0x22, v)?;
    }
    if let Some(m) = c.auth_method {
        prop_str(o, 0x15, m)?;
        if let Some(d) = c.auth_data {
            prop_bin(o, 0x16, d)?;
        }
    }
    Ok(())
}

fn connack_props(c: &Connack<'_>, o: &mut dyn Out) -> Res {
    let b = u8::from;
    if let Some(v) = c.session_expiry {
        prop_u32(o, 0x11, v)?;
    }
    if let Some(v) = c.receive_maximum {
        prop_u16(o, 0x21, v)?;
    }
    if let Some(v) = c.maximum_qos {
        prop_u8(o, 0x24, v)?;
    }
    if let Some(v) = c.retain_available {
        prop_u8(o, 0x25, b(v))?;
    }
    if let Some(v) = c.maximum_packet_size {
        prop_u32(o, 0x27, v)?;
    }
    if let Some(v) = c.assigned_client_id {
        prop_str(o, 0x12, v)?;
    }
    if let Some(v) = c.topic_alias_maximum {
        prop_u16(o, 0x22, v)?;
    }
    if let Some(v) = c.reason_string {
        prop_str(o, 0x1F, v)?;
    }
    if let Some(v) = c.wildcard_available {
        prop_u8(o, 0x28, b(v))?;
    }
    if let Some(v) = c.subscription_ids_available {
        prop_u8(o, 0x29, b(v))?;
    }
    if let Some(v) = c.shared_available {
        prop_u8(o, 0x2A, b(v))?;
    }
    if let Some(v) = c.server_keep_alive {
        prop_u16(o, 0x13, v)?;
    }
    if let Some(v) = c.response_information {
        prop_str(o, 0x1A, v)?;
    }
    if let Some(v) = c.server_reference {
        prop_str(o, 0x1C, v)?;
    }
    if let Some(v) = c.auth_method {
        prop_str(o, 0x15, v)?;
    }
    if let Some(v) = c.auth_data {
        prop_bin(o, 0x16, v)?;
    }
    Ok(())
}

fn disconnect_props(d: &Disconnect<'_>, o: &mut dyn Out) -> Res {
    if let Some(v) = d.session_expiry {
        prop_u32(o, 0x11, v)?;
    }
    if let Some(v) = d.reason_string {
        prop_str(o, 0x1F, v)?;
    }
    if let Some(v) = d.server_reference {
        prop_str(o, 0x1C, v)?;
    }
    Ok(())
}

fn auth_props(a: &Auth<'_>, o: &mut dyn Out) -> Res {
    if let Some(v) = a.method {
        prop_str(o, 0x15, v)?;
    }
    if let Some(v) = a.data {
        prop_bin(o, 0x16, v)?;
    }
    if let Some(v) = a.reason_string {
        prop_str(o, 0x1F, v)?;
    }
    Ok(())
}

/// The first byte of `packet`.
fn first_byte(packet: &Packet<'_>) -> u8 {
    let k = match packet {
        Packet::Connect(_) => CONNECT,
        Packet::Connack(_) => CONNACK,
        Packet::Publish(p) => {
            return (PUBLISH << 4)
                | (u8::from(p.dup) << 3)
                | ((p.qos & 0x03) << 1)
                | u8::from(p.retain);
        }
        Packet::Puback(_) => PUBACK,
        Packet::Pingreq => PINGREQ,
        Packet::Pingresp => PINGRESP,
        Packet::Disconnect(_) => DISCONNECT,
        Packet::Auth(_) => kind::AUTH,
    };
    k << 4
}

/// Writes everything after the fixed header except a PUBLISH payload.
fn body(packet: &Packet<'_>, o: &mut dyn Out) -> Res {
    match packet {
        Packet::Connect(c) => {
            put_str(o, "MQTT")?;
            let flags = (u8::from(c.username.is_some()) << 7)
                | (u8::from(c.password.is_some()) << 6)
                | (u8::from(c.clean_start) << 1);
            o.put(&[5, flags])?;
            put_u16(o, c.keep_alive)?;
            put_properties(o, &|o| connect_props(c, o))?;
            put_str(o, c.client_id)?;
            if let Some(u) = c.username {
                put_str(o, u)?;
            }
            if let Some(p) = c.password {
                put_bin(o, p)?;
            }
            Ok(())
        }
        Packet::Connack(c) => {
            o.put(&[u8::from(c.session_present), c.reason])?;
            put_properties(o, &|o| connack_props(c, o))
        }
        Packet::Publish(p) => {
            put_str(o, p.topic)?;
            if p.qos > 0 {
                // emit trusts its input; a missing id is written as 0, which parse refuses.
                put_u16(o, p.packet_id.unwrap_or(0))?;
            }
            put_properties(o, &|o| match p.topic_alias {
                Some(a) => prop_u16(o, 0x23, a),
                None => Ok(()),
            })
        }
        Packet::Puback(p) => {
            put_u16(o, p.packet_id)?;
            match (p.reason, p.reason_string) {
                (0, None) => Ok(()),
                (r, None) => o.put(&[r]),
                (r, Some(s)) => {
                    o.put(&[r])?;
                    put_properties(o, &|o| prop_str(o, 0x1F, s))
                }
            }
        }
        Packet::Pingreq | Packet::Pingresp => Ok(()),
        Packet::Disconnect(d) => {
            let mut c = Counter::default();
            disconnect_props(d, &mut c)?;
            match (d.reason, c.len) {
                (0, 0) => Ok(()),
                (r, 0) => o.put(&[r]),
                (r, _) => {
                    o.put(&[r])?;
                    put_properties(o, &|o| disconnect_props(d, o))
                }
            }
        }
        Packet::Auth(a) => {
            let mut c = Counter::default();
            auth_props(a, &mut c)?;
            if a.reason == 0 && c.len == 0 {
                return Ok(());
            }
            o.put(&[a.reason])?;
            put_properties(o, &|o| auth_props(a, o))
        }
    }
}

/// Body length (without payload) and whole length of a packet whose payload is `payload_len`.
fn lengths(packet: &Packet<'_>, payload_len: usize) -> Result<(usize, usize), EmitError> {
    let mut c = Counter::default();
    body(packet, &mut c)?;
    let remaining = c.len.checked_add(payload_len).ok_or(EmitError::TooLong)?;
    if remaining > MAX_REMAINING_LEN {
        return Err(EmitError::TooLong);
    }
    let total = varint_len(remaining)?
        .checked_add(1)
        .and_then(|h| h.checked_add(remaining))
        .ok_or(EmitError::TooLong)?;
    Ok((remaining, total))
}

/// Writes the fixed header, the body, then `parts` (the payload pieces).
fn write(packet: &Packet<'_>, parts: &[&[u8]], buf: &mut [u8]) -> Result<usize, EmitError> {
    let mut payload_len: usize = 0;
    for part in parts {
        payload_len = payload_len
            .checked_add(part.len())
            .ok_or(EmitError::TooLong)?;
    }
    let (remaining, total) = lengths(packet, payload_len)?;
    if buf.len() < total {
        return Err(EmitError::TooSmall { needed: total });
    }
    let mut w = Writer {
        buf,
        pos: 0,
        needed: total,
    };
    w.put(&[first_byte(packet)])?;
    put_varint(&mut w, remaining)?;
    body(packet, &mut w)?;
    for part in parts {
        w.put(part)?;
    }
    Ok(w.pos)
}

/// Exact encoded length of `packet` (coreMQTT's GetPacketSize), or TooLong.
pub fn encoded_len(packet: &Packet<'_>) -> Result<usize, EmitError> {
    let payload_len = match packet {
        Packet::Publish(p) => p.payload.len(),
        _ => 0,
    };
    lengths(packet, payload_len).map(|(_, total)| total)
}

/// Writes `packet` to the front of `buf`; returns its length.
pub fn emit(packet: &Packet<'_>, buf: &mut [u8]) -> Result<usize, EmitError> {
    match packet {
        Packet::Publish(p) => write(packet, &[p.payload], buf),
        _ => write(packet, &[], buf),
    }
}

/// A PUBLISH whose payload is the concatenation of `parts` (the publisher writes prefix + decimal
/// counter without a temporary buffer); `p.payload` is ignored. Same errors as emit.
pub fn emit_publish(p: &Publish<'_>, parts: &[&[u8]], buf: &mut [u8]) -> Result<usize, EmitError> {
    write(&Packet::Publish(*p), parts, buf)
}

/// Its length: the encoded length of a PUBLISH like `p` with a payload of `payload_len` bytes.
pub fn publish_len(p: &Publish<'_>, payload_len: usize) -> Result<usize, EmitError> {
    lengths(&Packet::Publish(*p), payload_len).map(|(_, total)| total)
}
