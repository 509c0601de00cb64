//! `wire_parse`: every parser of `satmqtt::wire` on arbitrary bytes.
//!
//! Invariants: no panic; a parsed packet re-emits (at exactly [`encoded_len`] bytes) to bytes
//! that parse to the same value; every strict prefix of a parsed packet answers "need more";
//! an answer other than "need more" does not change when bytes are appended; [`header`] agrees
//! with [`parse`] on the packet's length.

use satmqtt::wire::{self, emit, emit_publish, encoded_len, header, parse, EmitError, Packet};

/// Runs every check on `data`; panics on a broken invariant.
pub fn run(bytes: &[u8]) {
    let whole = parse(bytes);
    check_header(bytes, &whole);
    let len = bytes.len();
    // The tail after each cut plays the bytes that arrive later.
    for cut in [
        0,
        1,
        2,
        3,
        4,
        5,
        len / 3,
        len / 2,
        len * 2 / 3,
        len.saturating_sub(1),
    ] {
        match parse(&bytes[..cut.min(len)]) {
            // "Need more" may become anything once bytes arrive.
            Ok(None) => {}
            Ok(Some(front)) => assert_eq!(
                whole,
                Ok(Some(front)),
                "a parsed packet changed when bytes were appended"
            ),
            Err(e) => assert_eq!(
                whole.map(|_| ()),
                Err(e),
                "an error changed when bytes were appended"
            ),
        }
    }
    if let Ok(Some((packet, len))) = whole {
        assert!(
            len <= bytes.len() && len >= 2,
            "packet length {len} out of range"
        );
        // Every strict prefix for small packets, a sample for large ones (keeps runs fast).
        let step = (len / 256).max(1);
        for k in (0..len).step_by(step).chain([len - 1]) {
            assert_eq!(
                parse(&bytes[..k]),
                Ok(None),
                "strict prefix of {k} bytes of a {len}-byte packet is not \"need more\""
            );
        }
        round_trip(&packet);
    }
    // Everything after the first packet is parsed too, as a stream would be.
    let mut at = 0;
    for _ in 0..64 {
        match parse(bytes.get(at..).unwrap_or_default()) {
            Ok(Some((packet, len))) => {
                round_trip(&packet);
                at += len;
            }
            _ => break,
        }
    }
}

fn check_header(bytes: &[u8], whole: &Result<Option<(Packet<'_>, usize)>, wire::Malformed>) {
    match header(bytes) {
        Ok(Some(h)) => {
            assert!(
                (2..=5).contains(&h.header_len),
                "header length {}",
                h.header_len
            );
            assert!(h.packet_len >= h.header_len);
            if let Ok(Some((_, len))) = whole {
                assert_eq!(
                    h.packet_len, *len,
                    "header and parse disagree on the length"
                );
            }
        }
        Ok(None) => assert!(
            matches!(whole, Ok(None)),
            "header needs more bytes but parse answered {whole:?}"
        ),
        Err(e) => assert_eq!(whole.map(|_| ()), Err(e), "header and parse disagree"),
    }
}

/// `packet` emits to bytes that parse back to it; a buffer one byte short is refused.
pub fn round_trip(packet: &Packet<'_>) {
    let len = encoded_len(packet).expect("a parsed packet has an encoded length");
    let mut buf = vec![0u8; len];
    let written = emit(packet, &mut buf).expect("emit into a buffer of encoded_len bytes");
    assert_eq!(written, len, "emit wrote a length other than encoded_len");
    let (back, used) = parse(&buf)
        .unwrap_or_else(|e| panic!("re-emitted {packet:?} does not parse: {e}"))
        .unwrap_or_else(|| panic!("re-emitted {packet:?} parses as \"need more\""));
    assert_eq!(used, len);
    assert_eq!(&back, packet, "round trip changed the packet");
    let mut short = vec![0u8; len - 1];
    assert_eq!(
        emit(packet, &mut short),
        Err(EmitError::TooSmall { needed: len }),
        "a buffer one byte short must be refused"
    );
    if let Packet::Publish(p) = packet {
        // The publisher writes payloads in pieces (prefix, counter): same bytes.
        let (a, b) = p.payload.split_at(p.payload.len() / 2);
        let mut pieces = vec![0u8; len];
        let n = emit_publish(p, &[a, b], &mut pieces).expect("emit_publish in pieces");
        assert_eq!(&pieces[..n], &buf[..], "emit_publish differs from emit");
        assert_eq!(wire::publish_len(p, p.payload.len()), Ok(len));
    }
}
