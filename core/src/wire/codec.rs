//! MQTT v5 data representations (§1.5): variable byte integer, two- and four-byte integers,
//! UTF-8 strings, binary data, and the property block (§2.2.2) — a reader over received bytes
//! and a writer that can also just count (so a packet's length is known before it is written).

use super::{EmitError, Malformed, MAX_REMAINING};

/// [`MAX_REMAINING`] as a `usize` (saturating on targets whose `usize` is narrower).
pub const MAX_REMAINING_LEN: usize = if usize::BITS >= 32 {
    MAX_REMAINING as usize
} else {
    usize::MAX
};

/// Decodes a variable byte integer from the front of `buf` (§1.5.5).
///
/// `Ok(None)` means `buf` ends before the integer does; every error is decided by bytes present,
/// so a prefix of a valid integer never answers `Err`.
pub fn varint(buf: &[u8]) -> Result<Option<(u32, usize)>, Malformed> {
    let mut value: u32 = 0;
    for (i, shift) in [0u32, 7, 14, 21].into_iter().enumerate() {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            // A zero final byte after a continuation adds nothing: a shorter form existed.
            if i > 0 && b == 0 {
                return Err(Malformed::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(Malformed::VarIntTooLong)
}

/// Bytes a variable byte integer of `value` takes (1..=4), or `TooLong` above [`MAX_REMAINING`].
pub fn varint_len(value: usize) -> Result<usize, EmitError> {
    match value {
        0..=127 => Ok(1),
        128..=16_383 => Ok(2),
        16_384..=2_097_151 => Ok(3),
        2_097_152..=268_435_455 => Ok(4),
        _ => Err(EmitError::TooLong),
    }
}

/// Property identifiers this module knows (§2.2.2.2), with their data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Byte.
    Byte,
    /// Two Byte Integer.
    Two,
    /// Four Byte Integer.
    Four,
    /// Variable Byte Integer.
    Var,
    /// UTF-8 Encoded String.
    Str,
    /// Binary Data.
    Bin,
    /// UTF-8 String Pair.
    Pair,
}

/// The data type of property `id`, `None` for an identifier MQTT v5 does not define.
pub fn property_type(id: u8) -> Option<Type> {
    Some(match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Type::Byte,
        0x13 | 0x21 | 0x22 | 0x23 => Type::Two,
        0x02 | 0x11 | 0x18 | 0x27 => Type::Four,
        0x0B => Type::Var,
        0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Type::Str,
        0x09 | 0x16 => Type::Bin,
        0x26 => Type::Pair,
        _ => return None,
    })
}

/// Whether packet type `kind` may carry property `id` (§2.2.2.2 table; Will Properties and the
/// packets this module does not parse are left out).
pub fn property_allowed(kind: u8, id: u8) -> bool {
    use super::kind::*;
    match id {
        0x26 => matches!(
            kind,
            CONNECT | CONNACK | PUBLISH | PUBACK | DISCONNECT | AUTH
        ),
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 | 0x0B | 0x23 => kind == PUBLISH,
        0x11 => matches!(kind, CONNECT | CONNACK | DISCONNECT),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => kind == CONNACK,
        0x15 | 0x16 => matches!(kind, CONNECT | CONNACK | AUTH),
        0x17 | 0x19 => kind == CONNECT,
        0x1C => matches!(kind, CONNACK | DISCONNECT),
        0x1F => matches!(kind, CONNACK | PUBACK | DISCONNECT | AUTH),
        0x21 | 0x22 | 0x27 => matches!(kind, CONNECT | CONNACK),
        // 0x18 Will Delay Interval lives only in Will Properties, which this module rejects.
        _ => false,
    }
}

/// A cursor over the bytes of one packet; running past its end is [`Malformed::Truncated`].
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(Malformed::Truncated)?;
        self.buf = tail;
        Ok(head)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// `TrailingBytes` unless everything was read.
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed::TrailingBytes)
        }
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        match self.take(1)? {
            [b] => Ok(*b),
            _ => Err(Malformed::Truncated),
        }
    }

    /// A Two Byte Integer (big-endian).
    pub fn u16(&mut self) -> Result<u16, Malformed> {
        match self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(Malformed::Truncated),
        }
    }

    /// A Four Byte Integer (big-endian).
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        match self.take(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => Err(Malformed::Truncated),
        }
    }

    /// A Variable Byte Integer.
    pub fn varint(&mut self) -> Result<u32, Malformed> {
        let (value, len) = varint(self.buf)?.ok_or(Malformed::Truncated)?;
        self.take(len)?;
        Ok(value)
    }

    /// Binary Data: a two-byte length, then that many bytes.
    pub fn bin(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String: valid UTF-8 without U+0000 (§1.5.4).
    pub fn str(&mut self) -> Result<&'a str, Malformed> {
        let s = core::str::from_utf8(self.bin()?).map_err(|_| Malformed::Utf8)?;
        if s.contains('\0') {
            return Err(Malformed::Utf8);
        }
        Ok(s)
    }

    /// A property block: its length, then a reader over exactly those bytes.
    pub fn properties(&mut self) -> Result<Properties<'a>, Malformed> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| Malformed::Truncated)?;
        Ok(Properties {
            r: Reader::new(self.take(len)?),
        })
    }
}

/// A property value as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Byte.
    Byte(u8),
    /// Two Byte Integer.
    Two(u16),
    /// Four Byte Integer or Variable Byte Integer.
    Int(u32),
    /// UTF-8 Encoded String.
    Str(&'a str),
    /// Binary Data.
    Bin(&'a [u8]),
    /// UTF-8 String Pair (User Property).
    Pair(&'a str, &'a str),
}

impl Value<'_> {
    /// The value as an integer, if it is one.
    pub fn int(&self) -> Option<u32> {
        match *self {
            Value::Byte(v) => Some(u32::from(v)),
            Value::Two(v) => Some(u32::from(v)),
            Value::Int(v) => Some(v),
            _ => None,
        }
    }
}

/// The properties of one block, each read and range-checked (§3.x per-property rules) as it is
/// taken; which packet may carry which id, and duplicates, are checked by [`Properties::next_for`].
#[derive(Debug, Clone, Copy)]
pub struct Properties<'a> {
    r: Reader<'a>,
}

impl<'a> Properties<'a> {
    /// The next property of a block in a packet of type `kind`; `seen` records ids already
    /// found (one bit per id) to reject duplicates.
    pub fn next_for(
        &mut self,
        kind: u8,
        seen: &mut u64,
    ) -> Result<Option<(u8, Value<'a>)>, Malformed> {
        if self.r.remaining() == 0 {
            return Ok(None);
        }
        // The identifier is formally a variable byte integer, but every v5 id fits in one byte:
        // anything with the continuation bit is an id this version does not define.
        let id = self.r.u8()?;
        let ty = property_type(id).ok_or(Malformed::UnknownProperty(id))?;
        if !property_allowed(kind, id) {
            return Err(Malformed::PropertyNotAllowed { kind, id });
        }
        // User Property and Subscription Identifier may repeat (§3.3.2.3.8, §3.1.2.11.8).
        if id != 0x26 && id != 0x0B {
            let bit = 1u64.checked_shl(u32::from(id)).unwrap_or(0);
            if *seen & bit != 0 {
                return Err(Malformed::DuplicateProperty(id));
            }
            *seen |= bit;
        }
        let value = match ty {
            Type::Byte => Value::Byte(self.r.u8()?),
            Type::Two => Value::Two(self.r.u16()?),
            Type::Four => Value::Int(self.r.u32()?),
            Type::Var => Value::Int(self.r.varint()?),
            Type::Str => Value::Str(self.r.str()?),
            Type::Bin => Value::Bin(self.r.bin()?),
            Type::Pair => {
                let k = self.r.str()?;
                Value::Pair(k, self.r.str()?)
            }
        };
        let bad = match (id, value.int()) {
            // Receive Maximum, Maximum Packet Size, Topic Alias, Subscription Identifier: 0 is a
            // protocol error (§3.1.2.11.3, §3.1.2.11.4, §3.3.2.3.4, §3.3.2.3.8).
            (0x21 | 0x27 | 0x23 | 0x0B, Some(0)) => true,
            // Maximum QoS and every boolean-like byte: only 0 or 1.
            (0x24 | 0x25 | 0x28 | 0x29 | 0x2A | 0x01 | 0x17 | 0x19, Some(v)) => v > 1,
            _ => false,
        };
        if bad {
            return Err(Malformed::PropertyValue(id));
        }
        Ok(Some((id, value)))
    }
}

/// Where emitted bytes go: a buffer, or a counter that only measures.
pub trait Out {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]) -> Result<(), EmitError>;
}

/// Counts bytes instead of writing them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counter {
    /// Bytes counted so far.
    pub len: usize,
}

impl Out for Counter {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EmitError> {
        self.len = self
            .len
            .checked_add(bytes.len())
            .ok_or(EmitError::TooLong)?;
        Ok(())
    }
}

/// Writes into a buffer the caller already checked is large enough (`needed` is reported if
/// that check was wrong, rather than writing past the end).
#[derive(Debug)]
pub struct Writer<'b> {
    /// The destination.
    pub buf: &'b mut [u8],
    /// Bytes written so far.
    pub pos: usize,
    /// The whole packet's length, for the error.
    pub needed: usize,
}

impl Out for Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EmitError> {
        let too_small = EmitError::TooSmall {
            needed: self.needed,
        };
        let end = self.pos.checked_add(bytes.len()).ok_or(too_small)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(too_small)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// Writes a Variable Byte Integer.
pub fn put_varint(o: &mut dyn Out, value: usize) -> Result<(), EmitError> {
    if value > MAX_REMAINING_LEN {
        return Err(EmitError::TooLong);
    }
    let mut bytes = [0u8; 4];
    let mut v = value;
    let mut n = 0;
    for slot in bytes.iter_mut() {
        // Truncation is the point: the low seven bits.
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        *slot = b;
        n += 1;
        if v == 0 {
            break;
        }
    }
    o.put(bytes.get(..n).ok_or(EmitError::TooLong)?)
}

/// Writes a Two Byte Integer.
pub fn put_u16(o: &mut dyn Out, v: u16) -> Result<(), EmitError> {
    o.put(&v.to_be_bytes())
}

/// Writes a Four Byte Integer.
pub fn put_u32(o: &mut dyn Out, v: u32) -> Result<(), EmitError> {
    o.put(&v.to_be_bytes())
}

/// Writes Binary Data; `TooLong` over 65 535 bytes.
pub fn put_bin(o: &mut dyn Out, b: &[u8]) -> Result<(), EmitError> {
    let len = u16::try_from(b.len()).map_err(|_| EmitError::TooLong)?;
    put_u16(o, len)?;
    o.put(b)
}

/// Writes a UTF-8 Encoded String; `TooLong` over 65 535 bytes.
pub fn put_str(o: &mut dyn Out, s: &str) -> Result<(), EmitError> {
    put_bin(o, s.as_bytes())
}

/// Writes a property block: its length, measured by running `props` on a [`Counter`], then
/// the properties themselves.
pub fn put_properties(
    o: &mut dyn Out,
    props: &dyn Fn(&mut dyn Out) -> Result<(), EmitError>,
) -> Result<(), EmitError> {
    let mut c = Counter::default();
    props(&mut c)?;
    put_varint(o, c.len)?;
    props(o)
}
