//! Byte-level tests, written like the specification: annotated hex in, reprs out, and back.

use super::codec::{put_varint, varint, Counter};
use super::*;

/// Parses `bytes`, which must be exactly one packet.
fn one(bytes: &[u8]) -> Packet<'_> {
    match parse(bytes) {
        Ok(Some((p, n))) if n == bytes.len() => p,
        other => panic!("{bytes:02x?} did not parse as one packet: {other:?}"),
    }
}

/// Emits `p` into a fresh buffer.
fn bytes_of(p: &Packet<'_>) -> Vec<u8> {
    let len = encoded_len(p).expect("encoded_len");
    let mut buf = vec![0u8; len];
    assert_eq!(emit(p, &mut buf), Ok(len), "emit length for {p:?}");
    buf
}

// ---- captured from mosquitto 2.0.11 ----
//
// Captured once by hand: `mosquitto -c m.conf` with `listener 18839 127.0.0.1`,
// `allow_anonymous true` (and, for the refusal, `allow_anonymous false`), a raw TCP client
// sending `CONNECT_SENT` below, then a QoS 1 PUBLISH to "t/a" (no subscriber), a PINGREQ and a
// PUBLISH with Topic Alias 11. The answers are the bytes in these constants.

/// The CONNECT we sent (emitted by `connect_emits_the_bytes_sent_to_mosquitto`).
const CONNECT_SENT: &[u8] = &[
    0x10, 0x1d, // CONNECT, remaining length 29
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x05, // protocol level 5
    0x02, // connect flags: Clean Start
    0x00, 0x3c, // keep alive 60 s
    0x08, // properties: 8 bytes
    0x21, 0x00, 0x40, // Receive Maximum 64
    0x27, 0x00, 0x00, 0x10, 0x00, // Maximum Packet Size 4096
    0x00, 0x08, b'w', b'i', b'r', b'e', b'-', b'c', b'a', b'p', // client id "wire-cap"
];

/// mosquitto 2.0.11's CONNACK to `CONNECT_SENT`.
const CONNACK_MOSQUITTO: &[u8] = &[
    0x20, 0x09, // CONNACK, remaining length 9
    0x00, // acknowledge flags: no session present
    0x00, // reason: Success
    0x06, // properties: 6 bytes
    0x22, 0x00, 0x0a, // Topic Alias Maximum 10
    0x21, 0x00, 0x14, // Receive Maximum 20
];

/// mosquitto 2.0.11 with `allow_anonymous false`, to the same CONNECT.
const CONNACK_REFUSED_MOSQUITTO: &[u8] = &[
    0x20, 0x03, // CONNACK, remaining length 3
    0x00, // acknowledge flags
    0x87, // reason: Not authorized
    0x00, // properties: none
];

/// mosquitto 2.0.11's PUBACK to a QoS 1 PUBLISH (packet id 1) nobody subscribed to.
const PUBACK_MOSQUITTO: &[u8] = &[
    0x40, 0x03, // PUBACK, remaining length 3
    0x00, 0x01, // packet id 1
    0x10, // reason: No matching subscribers; no property length
];

/// mosquitto 2.0.11's PINGRESP.
const PINGRESP_MOSQUITTO: &[u8] = &[0xd0, 0x00];

/// mosquitto 2.0.11's answer to a PUBLISH with Topic Alias 11 (it advertised 10).
const DISCONNECT_MOSQUITTO: &[u8] = &[
    0xe0, 0x01, // DISCONNECT, remaining length 1
    0x94, // reason: Topic Alias invalid; no property length
];

#[test]
fn connect_emits_the_bytes_sent_to_mosquitto() {
    let c = Connect {
        clean_start: true,
        keep_alive: 60,
        receive_maximum: Some(64),
        maximum_packet_size: Some(4096),
        client_id: "wire-cap",
        ..Connect::default()
    };
    assert_eq!(bytes_of(&Packet::Connect(c)), CONNECT_SENT);
    assert_eq!(one(CONNECT_SENT), Packet::Connect(c));
}

#[test]
fn connack_from_mosquitto_carries_receive_and_topic_alias_maximum() {
    assert_eq!(
        one(CONNACK_MOSQUITTO),
        Packet::Connack(Connack {
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            ..Connack::default()
        })
    );
}

#[test]
fn refused_connack_from_mosquitto_is_not_authorized() {
    let Packet::Connack(c) = one(CONNACK_REFUSED_MOSQUITTO) else {
        panic!("not a CONNACK");
    };
    assert_eq!((c.reason, c.session_present), (0x87, false));
    assert!(is_failure(c.reason));
    assert_eq!(reason_name(c.reason), "Not authorized");
    assert_eq!(bytes_of(&Packet::Connack(c)), CONNACK_REFUSED_MOSQUITTO);
}

#[test]
fn puback_without_property_length_from_mosquitto() {
    let p = Puback {
        packet_id: 1,
        reason: 0x10,
        reason_string: None,
    };
    assert_eq!(one(PUBACK_MOSQUITTO), Packet::Puback(p));
    // Emit drops the property length too when there are no properties.
    assert_eq!(bytes_of(&Packet::Puback(p)), PUBACK_MOSQUITTO);
    assert_eq!(reason_name(0x10), "No matching subscribers");
    assert!(!is_failure(0x10));
}

#[test]
fn pingresp_and_disconnect_from_mosquitto() {
    assert_eq!(one(PINGRESP_MOSQUITTO), Packet::Pingresp);
    let d = Disconnect {
        reason: 0x94,
        ..Disconnect::default()
    };
    assert_eq!(one(DISCONNECT_MOSQUITTO), Packet::Disconnect(d));
    assert_eq!(bytes_of(&Packet::Disconnect(d)), DISCONNECT_MOSQUITTO);
    assert_eq!(reason_name(0x94), "Topic Alias invalid");
}

#[test]
fn the_fuzz_seed_corpus_holds_the_mosquitto_captures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/wire_parse/");
    for (name, bytes) in [
        ("connect-satmqtt-wire", CONNECT_SENT),
        ("connack-mosquitto-2.0.11", CONNACK_MOSQUITTO),
        (
            "connack-refused-mosquitto-2.0.11",
            CONNACK_REFUSED_MOSQUITTO,
        ),
        ("puback-mosquitto-2.0.11", PUBACK_MOSQUITTO),
        ("pingresp-mosquitto-2.0.11", PINGRESP_MOSQUITTO),
        ("disconnect-mosquitto-2.0.11", DISCONNECT_MOSQUITTO),
    ] {
        let path = format!("{dir}{name}");
        let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(file, bytes, "{path}");
    }
}

// ---- exact bytes of each packet type ----

#[test]
fn connect_with_credentials_and_enhanced_auth() {
    let c = Connect {
        clean_start: true,
        keep_alive: 30,
        session_expiry: 0x0102_0304,
        receive_maximum: None,
        maximum_packet_size: None,
        topic_alias_maximum: Some(5),
        auth_method: Some("K8S-SAT"),
        auth_data: Some(b"tok"),
        client_id: "c",
        username: Some("$sat"),
        password: Some(b"pw"),
    };
    let expected: &[u8] = &[
        0x10, 0x30, // CONNECT, remaining length 48
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // "MQTT" level 5
        0xc2, // flags: user name, password, Clean Start
        0x00, 0x1e, // keep alive 30
        0x18, // properties: 24 bytes
        0x11, 0x01, 0x02, 0x03, 0x04, // Session Expiry Interval
        0x22, 0x00, 0x05, // Topic Alias Maximum 5
        0x15, 0x00, 0x07, b'K', b'8', b'S', b'-', b'S', b'A', b'T', // Authentication Method
        0x16, 0x00, 0x03, b't', b'o', b'k', // Authentication Data
        0x00, 0x01, b'c', // client id
        0x00, 0x04, b'$', b's', b'a', b't', // user name
        0x00, 0x02, b'p', b'w', // password
    ];
    assert_eq!(bytes_of(&Packet::Connect(c)), expected);
    assert_eq!(one(expected), Packet::Connect(c));
}

#[test]
fn connect_auth_data_without_method_is_skipped_on_emit_and_refused_on_parse() {
    let c = Connect {
        auth_data: Some(b"x"),
        client_id: "c",
        ..Connect::default()
    };
    let emitted = bytes_of(&Packet::Connect(c));
    let Packet::Connect(back) = one(&emitted) else {
        panic!("not a CONNECT");
    };
    assert_eq!(back.auth_data, None);
    let bad: &[u8] = &[
        0x10, 0x11, // CONNECT, remaining length 17
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x00, 0x00, 0x00, // header, no flags
        0x04, 0x16, 0x00, 0x01, b'x', // properties: Authentication Data only
        0x00, 0x00, // empty client id
    ];
    assert_eq!(parse(bad), Err(Malformed::PropertyValue(0x16)));
}

#[test]
fn publish_qos0_and_qos1_with_topic_alias() {
    let q0 = Publish {
        topic: "a/b",
        payload: b"hi",
        ..Publish::default()
    };
    let q0_bytes: &[u8] = &[
        0x30, 0x08, // PUBLISH QoS 0, remaining length 8
        0x00, 0x03, b'a', b'/', b'b', // topic
        0x00, // properties: none
        b'h', b'i', // payload
    ];
    assert_eq!(bytes_of(&Packet::Publish(q0)), q0_bytes);
    assert_eq!(one(q0_bytes), Packet::Publish(q0));

    let q1 = Publish {
        dup: true,
        qos: 1,
        retain: true,
        topic: "",
        packet_id: Some(0x1234),
        topic_alias: Some(1),
        payload: b"7",
    };
    let q1_bytes: &[u8] = &[
        0x3b, // PUBLISH, DUP, QoS 1, RETAIN
        0x09, // remaining length 9
        0x00, 0x00, // empty topic (alias in use)
        0x12, 0x34, // packet id
        0x03, 0x23, 0x00, 0x01, // properties: Topic Alias 1
        b'7', // payload
    ];
    assert_eq!(bytes_of(&Packet::Publish(q1)), q1_bytes);
    assert_eq!(one(q1_bytes), Packet::Publish(q1));
}

#[test]
fn publish_validated_properties_are_accepted_but_not_kept() {
    let bytes: &[u8] = &[
        0x32, 0x20, // PUBLISH QoS 1, remaining length 32
        0x00, 0x01, b't', // topic
        0x00, 0x05, // packet id 5
        0x19, // properties: 25 bytes
        0x01, 0x01, // Payload Format Indicator: UTF-8
        0x02, 0x00, 0x00, 0x00, 0x3c, // Message Expiry Interval 60
        0x0b, 0x01, // Subscription Identifier 1
        0x0b, 0x80, 0x01, // Subscription Identifier 128 (repeatable)
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property k=v
        0x26, 0x00, 0x01, b'k', 0x00, 0x00, // User Property k="" (repeatable)
        b'p', // payload
    ];
    assert_eq!(
        one(bytes),
        Packet::Publish(Publish {
            qos: 1,
            topic: "t",
            packet_id: Some(5),
            payload: b"p",
            ..Publish::default()
        })
    );
}

#[test]
fn puback_forms() {
    let plain: &[u8] = &[0x40, 0x02, 0x00, 0x01]; // PUBACK id 1, reason and properties left out
    let p = Puback {
        packet_id: 1,
        ..Puback::default()
    };
    assert_eq!(bytes_of(&Packet::Puback(p)), plain);
    assert_eq!(one(plain), Packet::Puback(p));
    // Reason 0 and an empty property block is the same PUBACK.
    assert_eq!(
        one(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00]),
        Packet::Puback(p)
    );

    let with_string = Puback {
        packet_id: 2,
        reason: 0x87,
        reason_string: Some("no"),
    };
    let bytes: &[u8] = &[
        0x40, 0x09, // PUBACK, remaining length 9
        0x00, 0x02, // packet id 2
        0x87, // Not authorized
        0x05, 0x1f, 0x00, 0x02, b'n', b'o', // Reason String "no"
    ];
    assert_eq!(bytes_of(&Packet::Puback(with_string)), bytes);
    assert_eq!(one(bytes), Packet::Puback(with_string));
}

#[test]
fn pingreq_and_pingresp() {
    assert_eq!(bytes_of(&Packet::Pingreq), [0xc0, 0x00]);
    assert_eq!(bytes_of(&Packet::Pingresp), [0xd0, 0x00]);
    assert_eq!(one(&[0xc0, 0x00]), Packet::Pingreq);
    assert_eq!(parse(&[0xc0, 0x01, 0x00]), Err(Malformed::TrailingBytes));
}

#[test]
fn disconnect_forms() {
    assert_eq!(
        bytes_of(&Packet::Disconnect(Disconnect::default())),
        [0xe0, 0x00]
    );
    assert_eq!(
        one(&[0xe0, 0x00]),
        Packet::Disconnect(Disconnect::default())
    );
    let d = Disconnect {
        reason: 0x8b,
        session_expiry: Some(0),
        reason_string: Some("bye"),
        server_reference: Some("s"),
    };
    let bytes: &[u8] = &[
        0xe0, 0x11, // DISCONNECT, remaining length 17
        0x8b, // Server shutting down
        0x0f, // properties: 15 bytes
        0x11, 0x00, 0x00, 0x00, 0x00, // Session Expiry Interval 0
        0x1f, 0x00, 0x03, b'b', b'y', b'e', // Reason String "bye"
        0x1c, 0x00, 0x01, b's', // Server Reference "s"
    ];
    assert_eq!(bytes_of(&Packet::Disconnect(d)), bytes);
    assert_eq!(one(bytes), Packet::Disconnect(d));
}

#[test]
fn auth_forms_and_debug_hides_data() {
    assert_eq!(bytes_of(&Packet::Auth(Auth::default())), [0xf0, 0x00]);
    assert_eq!(one(&[0xf0, 0x00]), Packet::Auth(Auth::default()));
    let a = Auth {
        reason: 0x19,
        method: Some("K8S-SAT"),
        data: Some(b"secret-token"),
        reason_string: None,
    };
    let bytes: &[u8] = &[
        0xf0, 0x1b, // AUTH, remaining length 27
        0x19, // Re-authenticate
        0x19, // properties: 25 bytes
        0x15, 0x00, 0x07, b'K', b'8', b'S', b'-', b'S', b'A', b'T', // Authentication Method
        0x16, 0x00, 0x0c, b's', b'e', b'c', b'r', b'e', b't', b'-', b't', b'o', b'k', b'e',
        b'n', // Authentication Data
    ];
    assert_eq!(bytes_of(&Packet::Auth(a)), bytes);
    assert_eq!(one(bytes), Packet::Auth(a));
    let debug = format!("{:?}", Packet::Auth(a));
    assert!(!debug.contains("secret"), "{debug}");
    assert!(!debug.contains("115"), "byte values leak: {debug}");
    assert!(debug.contains("data: Some(<12 bytes>)"), "{debug}");
    // A lone reason byte lacks its property length.
    assert_eq!(parse(&[0xf0, 0x01, 0x18]), Err(Malformed::Truncated));
}

#[test]
fn debug_of_connect_and_connack_prints_lengths_not_secrets() {
    let c = Connect {
        client_id: "c",
        username: Some("$sat"),
        password: Some(b"eyJhbGciOi-token"),
        auth_method: Some("K8S-SAT"),
        auth_data: Some(b"eyJhbGciOi-token"),
        ..Connect::default()
    };
    let debug = format!("{c:?}");
    assert!(!debug.contains("eyJ"), "{debug}");
    assert!(debug.contains("password: Some(<16 bytes>)"), "{debug}");
    assert!(debug.contains("auth_data: Some(<16 bytes>)"), "{debug}");
    let k = Connack {
        auth_data: Some(b"challenge"),
        ..Connack::default()
    };
    let debug = format!("{k:?}");
    assert!(!debug.contains("99"), "{debug}");
    assert!(debug.contains("auth_data: Some(<9 bytes>)"), "{debug}");
    assert!(format!("{:?}", Connect::default()).contains("password: None"));
}

#[test]
fn connack_with_every_property_round_trips() {
    let c = Connack {
        session_present: true,
        reason: 0,
        session_expiry: Some(10),
        receive_maximum: Some(65_535),
        maximum_qos: Some(0),
        retain_available: Some(false),
        maximum_packet_size: Some(1 << 20),
        assigned_client_id: Some("auto-1"),
        topic_alias_maximum: Some(0),
        reason_string: Some("ok"),
        wildcard_available: Some(true),
        subscription_ids_available: Some(false),
        shared_available: Some(true),
        server_keep_alive: Some(120),
        response_information: Some("r"),
        server_reference: Some("other:1883"),
        auth_method: Some("K8S-SAT"),
        auth_data: Some(b"x"),
    };
    assert_eq!(one(&bytes_of(&Packet::Connack(c))), Packet::Connack(c));
}

/// Valid packets of every type, with and without properties.
fn samples() -> Vec<Packet<'static>> {
    vec![
        Packet::Connect(Connect {
            client_id: "",
            ..Connect::default()
        }),
        Packet::Connect(Connect {
            clean_start: true,
            keep_alive: 65_535,
            session_expiry: u32::MAX,
            receive_maximum: Some(1),
            maximum_packet_size: Some(u32::MAX),
            topic_alias_maximum: Some(65_535),
            auth_method: Some("K8S-SAT"),
            auth_data: Some(&[0, 1, 2, 255]),
            client_id: "pod-7d9f",
            username: Some("$sat"),
            password: Some(b""),
        }),
        Packet::Connect(Connect {
            client_id: "c",
            password: Some(b"pw-without-user"),
            ..Connect::default()
        }),
        Packet::Connack(Connack::default()),
        Packet::Connack(Connack {
            reason: 0x9c,
            server_reference: Some("elsewhere"),
            reason_string: Some("moved"),
            ..Connack::default()
        }),
        Packet::Connack(Connack {
            session_present: true,
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            maximum_qos: Some(1),
            retain_available: Some(true),
            server_keep_alive: Some(5),
            ..Connack::default()
        }),
        Packet::Publish(Publish {
            topic: "t",
            ..Publish::default()
        }),
        Packet::Publish(Publish {
            qos: 1,
            topic: "sensors/ünïcode",
            packet_id: Some(65_535),
            topic_alias: Some(65_535),
            payload: &[0; 300],
            ..Publish::default()
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: 2,
            retain: true,
            topic: "",
            packet_id: Some(1),
            topic_alias: Some(3),
            payload: b"",
        }),
        Packet::Puback(Puback {
            packet_id: 9,
            ..Puback::default()
        }),
        Packet::Puback(Puback {
            packet_id: 9,
            reason: 0x97,
            reason_string: None,
        }),
        Packet::Puback(Puback {
            packet_id: 9,
            reason: 0,
            reason_string: Some("fine"),
        }),
        Packet::Pingreq,
        Packet::Pingresp,
        Packet::Disconnect(Disconnect::default()),
        Packet::Disconnect(Disconnect {
            reason: 0x82,
            ..Disconnect::default()
        }),
        Packet::Disconnect(Disconnect {
            reason: 0,
            session_expiry: Some(30),
            ..Disconnect::default()
        }),
        Packet::Auth(Auth::default()),
        Packet::Auth(Auth {
            reason: 0x19,
            ..Auth::default()
        }),
        Packet::Auth(Auth {
            reason: 0x18,
            method: Some("K8S-SAT"),
            data: None,
            reason_string: Some("more"),
        }),
    ]
}

#[test]
fn every_sample_round_trips_and_encoded_len_is_exact() {
    for p in samples() {
        let bytes = bytes_of(&p);
        assert_eq!(parse(&bytes), Ok(Some((p, bytes.len()))), "{bytes:02x?}");
        // Followed by another packet, only the first is taken.
        let mut two = bytes.clone();
        two.extend_from_slice(&[0xc0, 0x00]);
        assert_eq!(parse(&two), Ok(Some((p, bytes.len()))));
        let h = header(&bytes).expect("header").expect("complete header");
        assert_eq!(h.packet_len, bytes.len());
        assert_eq!(h.first, bytes[0]);
    }
}

#[test]
fn every_strict_prefix_of_a_valid_packet_needs_more() {
    let mut all: Vec<Vec<u8>> = samples().iter().map(bytes_of).collect();
    for capture in [
        CONNECT_SENT,
        CONNACK_MOSQUITTO,
        CONNACK_REFUSED_MOSQUITTO,
        PUBACK_MOSQUITTO,
        PINGRESP_MOSQUITTO,
        DISCONNECT_MOSQUITTO,
    ] {
        all.push(capture.to_vec());
    }
    for bytes in all {
        for k in 0..bytes.len() {
            assert_eq!(parse(&bytes[..k]), Ok(None), "prefix {k} of {bytes:02x?}");
        }
    }
}

#[test]
fn emit_into_every_smaller_buffer_is_too_small() {
    for p in samples() {
        let len = encoded_len(&p).expect("encoded_len");
        for size in 0..len {
            let mut buf = vec![0u8; size];
            assert_eq!(
                emit(&p, &mut buf),
                Err(EmitError::TooSmall { needed: len }),
                "{p:?} into {size}"
            );
        }
    }
}

#[test]
fn emit_publish_concatenates_parts_like_one_payload() {
    let p = Publish {
        qos: 1,
        topic: "count",
        packet_id: Some(3),
        payload: b"ignored",
        ..Publish::default()
    };
    let parts: [&[u8]; 3] = [b"msg-", b"", b"12345"];
    let whole = Publish {
        payload: b"msg-12345",
        ..p
    };
    let expected = bytes_of(&Packet::Publish(whole));
    assert_eq!(publish_len(&p, 9), Ok(expected.len()));
    let mut buf = [0u8; 64];
    assert_eq!(emit_publish(&p, &parts, &mut buf), Ok(expected.len()));
    assert_eq!(&buf[..expected.len()], expected.as_slice());
    let mut small = [0u8; 20];
    assert_eq!(
        emit_publish(&p, &parts, &mut small),
        Err(EmitError::TooSmall {
            needed: expected.len()
        })
    );
}

#[test]
fn fields_and_packets_too_long_for_mqtt_are_refused() {
    let long = "x".repeat(65_536);
    let p = Packet::Publish(Publish {
        topic: &long,
        ..Publish::default()
    });
    assert_eq!(encoded_len(&p), Err(EmitError::TooLong));
    assert_eq!(emit(&p, &mut [0u8; 16]), Err(EmitError::TooLong));
    let ok = Publish {
        topic: "t",
        ..Publish::default()
    };
    // 4 bytes of topic and property length plus this payload is one past the maximum.
    assert_eq!(
        publish_len(&ok, MAX_REMAINING as usize - 3),
        Err(EmitError::TooLong)
    );
    assert_eq!(
        publish_len(&ok, MAX_REMAINING as usize - 4),
        Ok(1 + 4 + MAX_REMAINING as usize)
    );
    assert_eq!(publish_len(&ok, usize::MAX), Err(EmitError::TooLong));
}

#[test]
fn variable_byte_integer_boundaries() {
    for (value, encoded) in [
        (0usize, &[0x00][..]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xff, 0x7f]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xff, 0xff, 0x7f]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
    ] {
        let mut buf = [0u8; 4];
        let mut w = super::codec::Writer {
            buf: &mut buf,
            pos: 0,
            needed: 4,
        };
        put_varint(&mut w, value).expect("fits");
        assert_eq!(&buf[..encoded.len()], encoded, "{value}");
        assert_eq!(
            varint(encoded),
            Ok(Some((value as u32, encoded.len()))),
            "{value}"
        );
    }
    assert_eq!(
        put_varint(&mut Counter::default(), 268_435_456),
        Err(EmitError::TooLong)
    );
}

// ---- every Malformed variant, byte by byte ----

#[test]
fn malformed_packets_name_their_cause() {
    use Malformed::*;
    let cases: &[(&str, &[u8], Malformed)] = &[
        (
            "5-byte remaining length",
            &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            VarIntTooLong,
        ),
        (
            "remaining length 0x80 0x00",
            &[0xc0, 0x80, 0x00],
            VarIntNotMinimal,
        ),
        (
            "property length 0x80 0x00",
            &[0x20, 0x04, 0x00, 0x00, 0x80, 0x00],
            VarIntNotMinimal,
        ),
        ("packet type 0", &[0x00, 0x00], PacketType(0)),
        ("SUBSCRIBE", &[0x82, 0x00], PacketType(8)),
        ("PUBREC", &[0x50, 0x02, 0x00, 0x01], PacketType(5)),
        (
            "CONNACK flags 0x1",
            &[0x21, 0x03, 0x00, 0x00, 0x00],
            Flags { kind: 2, flags: 1 },
        ),
        (
            "PINGREQ flags 0x8",
            &[0xc8, 0x00],
            Flags { kind: 12, flags: 8 },
        ),
        (
            "CONNECT with a Will",
            &[
                0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x00, 0x00, 0x00,
                0x00,
            ],
            Flags {
                kind: 1,
                flags: 0x06,
            },
        ),
        ("PUBACK missing half its id", &[0x40, 0x01, 0x00], Truncated),
        (
            "string past the packet",
            &[0x30, 0x04, 0x00, 0x05, b'a', b'b'],
            Truncated,
        ),
        (
            "property past its block",
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x21, 0x00],
            Truncated,
        ),
        (
            "PUBACK properties past the packet",
            &[0x40, 0x04, 0x00, 0x01, 0x00, 0x03],
            Truncated,
        ),
        (
            "CONNACK without property length",
            &[0x20, 0x02, 0x00, 0x00],
            Truncated,
        ),
        (
            "CONNACK with a byte more",
            &[0x20, 0x04, 0x00, 0x00, 0x00, 0x00],
            TrailingBytes,
        ),
        ("topic 0xff", &[0x30, 0x04, 0x00, 0x01, 0xff, 0x00], Utf8),
        (
            "topic U+0000",
            &[0x30, 0x05, 0x00, 0x02, b'a', 0x00, 0x00],
            Utf8,
        ),
        (
            "reason string with a lone surrogate's bytes",
            &[
                0x40, 0x0a, 0x00, 0x01, 0x80, 0x06, 0x1f, 0x00, 0x03, 0xed, 0xa0, 0x80,
            ],
            Utf8,
        ),
        (
            "unknown property 0x7f",
            &[0x20, 0x04, 0x00, 0x00, 0x01, 0x7f],
            UnknownProperty(0x7f),
        ),
        (
            "property id with continuation bit",
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x80, 0x01],
            UnknownProperty(0x80),
        ),
        (
            "Authentication Method in PUBACK",
            &[0x40, 0x08, 0x00, 0x01, 0x00, 0x04, 0x15, 0x00, 0x01, b'm'],
            PropertyNotAllowed { kind: 4, id: 0x15 },
        ),
        (
            "Will Delay Interval in CONNACK",
            &[0x20, 0x08, 0x00, 0x00, 0x05, 0x18, 0x00, 0x00, 0x00, 0x01],
            PropertyNotAllowed { kind: 2, id: 0x18 },
        ),
        (
            "Receive Maximum twice",
            &[
                0x20, 0x09, 0x00, 0x00, 0x06, 0x21, 0x00, 0x14, 0x21, 0x00, 0x14,
            ],
            DuplicateProperty(0x21),
        ),
        (
            "Receive Maximum 0",
            &[0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00],
            PropertyValue(0x21),
        ),
        (
            "Maximum Packet Size 0",
            &[0x20, 0x08, 0x00, 0x00, 0x05, 0x27, 0x00, 0x00, 0x00, 0x00],
            PropertyValue(0x27),
        ),
        (
            "Maximum QoS 2",
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02],
            PropertyValue(0x24),
        ),
        (
            "Retain Available 2",
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x02],
            PropertyValue(0x25),
        ),
        (
            "Topic Alias 0",
            &[0x30, 0x07, 0x00, 0x01, b't', 0x03, 0x23, 0x00, 0x00],
            PropertyValue(0x23),
        ),
        (
            "Subscription Identifier 0",
            &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x0b, 0x00],
            PropertyValue(0x0b),
        ),
        (
            "Payload Format Indicator 2",
            &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x01, 0x02],
            PropertyValue(0x01),
        ),
        ("PUBLISH QoS 3", &[0x36, 0x00], Qos),
        ("PUBLISH DUP on QoS 0", &[0x38, 0x00], Qos),
        (
            "CONNACK reason 0x10",
            &[0x20, 0x03, 0x00, 0x10, 0x00],
            ReasonCode {
                kind: 2,
                code: 0x10,
            },
        ),
        (
            "PUBACK reason 0x8b",
            &[0x40, 0x03, 0x00, 0x01, 0x8b],
            ReasonCode {
                kind: 4,
                code: 0x8b,
            },
        ),
        (
            "DISCONNECT reason 0x10",
            &[0xe0, 0x01, 0x10],
            ReasonCode {
                kind: 14,
                code: 0x10,
            },
        ),
        (
            "AUTH reason 0x87",
            &[0xf0, 0x02, 0x87, 0x00],
            ReasonCode {
                kind: 15,
                code: 0x87,
            },
        ),
        (
            "protocol name MQIsdp",
            &[
                0x10, 0x0f, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x00,
                0x00, 0x00, 0x00,
            ],
            Protocol,
        ),
        (
            "protocol level 4",
            &[
                0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
            ],
            Protocol,
        ),
        (
            "CONNECT reserved flag",
            &[
                0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x03, 0x00, 0x00, 0x00, 0x00,
                0x00,
            ],
            Protocol,
        ),
        (
            "PUBLISH packet id 0",
            &[0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x00, 0x00],
            PacketId,
        ),
        ("PUBACK packet id 0", &[0x40, 0x02, 0x00, 0x00], PacketId),
        (
            "topic with #",
            &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00],
            Topic,
        ),
        (
            "topic with +",
            &[0x30, 0x06, 0x00, 0x03, b'+', b'/', b'a', 0x00],
            Topic,
        ),
        (
            "empty topic without alias",
            &[0x30, 0x03, 0x00, 0x00, 0x00],
            Topic,
        ),
        (
            "CONNACK flags 0x02",
            &[0x20, 0x03, 0x02, 0x00, 0x00],
            ConnackFlags,
        ),
        (
            "session present with 0x87",
            &[0x20, 0x03, 0x01, 0x87, 0x00],
            ConnackFlags,
        ),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(parse(bytes), Err(*want), "{what}: {bytes:02x?}");
        // The cause says itself in words.
        assert!(!format!("{want}").is_empty());
    }
    assert_eq!(
        format!("{VarIntNotMinimal}"),
        "variable byte integer not in its shortest form [MQTT-1.5.5-1]"
    );
}

#[test]
fn header_rejects_early_and_needs_more_late() {
    assert_eq!(header(&[]), Ok(None));
    assert_eq!(header(&[0x30]), Ok(None));
    assert_eq!(header(&[0x30, 0xff, 0xff]), Ok(None));
    assert_eq!(
        header(&[0x30, 0xff, 0xff, 0xff, 0x7f]),
        Ok(Some(Header {
            first: 0x30,
            header_len: 5,
            packet_len: 5 + MAX_REMAINING as usize,
        }))
    );
    assert_eq!(header(&[0x70]), Err(Malformed::PacketType(7)));
    // A caller can refuse a too-large packet from its first bytes alone.
    assert_eq!(
        header(&[0x30, 0x80, 0x80, 0x01]).map(|h| h.map(|h| h.packet_len)),
        Ok(Some(16_388))
    );
}

// ---- the §2.2.2.2 table, property by property ----

/// Which packets (of those parsed here) may carry each property, transcribed from §2.2.2.2.
const PROPERTY_TABLE: &[(u8, &[u8])] = &[
    (0x01, &[kind::PUBLISH]),
    (0x02, &[kind::PUBLISH]),
    (0x03, &[kind::PUBLISH]),
    (0x08, &[kind::PUBLISH]),
    (0x09, &[kind::PUBLISH]),
    (0x0B, &[kind::PUBLISH]),
    (0x11, &[kind::CONNECT, kind::CONNACK, kind::DISCONNECT]),
    (0x12, &[kind::CONNACK]),
    (0x13, &[kind::CONNACK]),
    (0x15, &[kind::CONNECT, kind::CONNACK, kind::AUTH]),
    (0x16, &[kind::CONNECT, kind::CONNACK, kind::AUTH]),
    (0x17, &[kind::CONNECT]),
    (0x18, &[]),
    (0x19, &[kind::CONNECT]),
    (0x1A, &[kind::CONNACK]),
    (0x1C, &[kind::CONNACK, kind::DISCONNECT]),
    (
        0x1F,
        &[kind::CONNACK, kind::PUBACK, kind::DISCONNECT, kind::AUTH],
    ),
    (0x21, &[kind::CONNECT, kind::CONNACK]),
    (0x22, &[kind::CONNECT, kind::CONNACK]),
    (0x23, &[kind::PUBLISH]),
    (0x24, &[kind::CONNACK]),
    (0x25, &[kind::CONNACK]),
    (
        0x26,
        &[
            kind::CONNECT,
            kind::CONNACK,
            kind::PUBLISH,
            kind::PUBACK,
            kind::DISCONNECT,
            kind::AUTH,
        ],
    ),
    (0x27, &[kind::CONNECT, kind::CONNACK]),
    (0x28, &[kind::CONNACK]),
    (0x29, &[kind::CONNACK]),
    (0x2A, &[kind::CONNACK]),
];

/// One property with a valid value of its type.
fn property(id: u8) -> Vec<u8> {
    let value: &[u8] = match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => &[0x01],
        0x13 | 0x21 | 0x22 | 0x23 => &[0x00, 0x01],
        0x02 | 0x11 | 0x18 | 0x27 => &[0x00, 0x00, 0x00, 0x01],
        0x0B => &[0x01],
        0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F | 0x09 | 0x16 => &[0x00, 0x01, b'a'],
        0x26 => &[0x00, 0x01, b'k', 0x00, 0x01, b'v'],
        _ => &[],
    };
    let mut p = vec![id];
    p.extend_from_slice(value);
    p
}

/// A packet of type `kind` whose property block is `props`.
fn with_properties(kind: u8, props: &[u8]) -> Vec<u8> {
    let (first, before, after): (u8, &[u8], &[u8]) = match kind {
        kind::CONNECT => (
            0x10,
            &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c],
            &[0x00, 0x00],
        ),
        kind::CONNACK => (0x20, &[0x00, 0x00], &[]),
        kind::PUBLISH => (0x30, &[0x00, 0x01, b't'], &[]),
        kind::PUBACK => (0x40, &[0x00, 0x01, 0x00], &[]),
        kind::DISCONNECT => (0xe0, &[0x00], &[]),
        _ => (0xf0, &[0x00], &[]),
    };
    let mut body = before.to_vec();
    body.push(u8::try_from(props.len()).expect("short"));
    body.extend_from_slice(props);
    body.extend_from_slice(after);
    let mut packet = vec![first, u8::try_from(body.len()).expect("short")];
    packet.extend_from_slice(&body);
    packet
}

#[test]
fn each_packet_accepts_exactly_the_properties_of_the_spec_table() {
    let kinds = [
        kind::CONNECT,
        kind::CONNACK,
        kind::PUBLISH,
        kind::PUBACK,
        kind::DISCONNECT,
        kind::AUTH,
    ];
    for id in 0u8..=0x7f {
        let row = PROPERTY_TABLE.iter().find(|(i, _)| *i == id);
        for kind in kinds {
            let bytes = with_properties(kind, &property(id));
            let got = parse(&bytes).map(|o| o.map(|(_, n)| n));
            let want = match row {
                None => Err(Malformed::UnknownProperty(id)),
                Some((_, kinds)) if !kinds.contains(&kind) => {
                    Err(Malformed::PropertyNotAllowed { kind, id })
                }
                // Authentication Data alone in CONNECT lacks its method.
                Some(_) if kind == kind::CONNECT && id == 0x16 => {
                    Err(Malformed::PropertyValue(0x16))
                }
                Some(_) => Ok(Some(bytes.len())),
            };
            assert_eq!(
                got, want,
                "property {id:#04x} in packet type {kind}: {bytes:02x?}"
            );
            // And twice: only User Property and Subscription Identifier may repeat.
            if want.is_ok() {
                let mut twice = property(id);
                twice.extend_from_slice(&property(id));
                let got = parse(&with_properties(kind, &twice)).map(|o| o.is_some());
                let want = if id == 0x26 || id == 0x0B {
                    Ok(true)
                } else {
                    Err(Malformed::DuplicateProperty(id))
                };
                assert_eq!(got, want, "property {id:#04x} twice in packet type {kind}");
            }
        }
    }
}

#[test]
fn reason_codes_accepted_per_packet_follow_the_spec_tables() {
    let connack: &[u8] = &[
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    let puback: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    let disconnect: &[u8] = &[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    let auth: &[u8] = &[0x00, 0x18, 0x19];
    for code in 0u8..=255 {
        let check = |kind: u8, table: &[u8], bytes: &[u8]| {
            let want = if table.contains(&code) {
                Ok(true)
            } else {
                Err(Malformed::ReasonCode { kind, code })
            };
            assert_eq!(parse(bytes).map(|o| o.is_some()), want, "{bytes:02x?}");
            if table.contains(&code) {
                assert_ne!(reason_name(code), "unknown", "{code:#04x}");
            }
        };
        check(kind::CONNACK, connack, &[0x20, 0x03, 0x00, code, 0x00]);
        check(kind::PUBACK, puback, &[0x40, 0x03, 0x00, 0x01, code]);
        check(kind::DISCONNECT, disconnect, &[0xe0, 0x01, code]);
        check(kind::AUTH, auth, &[0xf0, 0x02, code, 0x00]);
    }
    assert_eq!(reason_name(0x03), "unknown");
}

// ---- deterministic pseudo-random inputs ----

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Checks every property the parser promises about `input`.
fn check_input(input: &[u8]) {
    match parse(input) {
        Ok(Some((p, n))) => {
            assert!(n <= input.len());
            let bytes = bytes_of(&p);
            assert_eq!(
                parse(&bytes),
                Ok(Some((p, bytes.len()))),
                "re-emit of {input:02x?}"
            );
            // Whatever follows the packet does not change it.
            let mut more = input[..n].to_vec();
            more.push(0xff);
            assert_eq!(parse(&more), Ok(Some((p, n))));
        }
        Ok(None) => {
            for k in 0..input.len() {
                assert_eq!(parse(&input[..k]), Ok(None), "prefix {k} of {input:02x?}");
            }
        }
        Err(e) => {
            // A verdict from the bytes present: more bytes never overturn it.
            let mut more = input.to_vec();
            more.extend_from_slice(&[0x00, 0x01]);
            assert_eq!(parse(&more), Err(e), "{input:02x?}");
        }
    }
}

#[test]
fn pseudo_random_and_mutated_inputs_never_break_the_parser() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let valid: Vec<Vec<u8>> = samples()
        .iter()
        .map(bytes_of)
        .chain(
            [
                CONNECT_SENT,
                CONNACK_MOSQUITTO,
                PUBACK_MOSQUITTO,
                DISCONNECT_MOSQUITTO,
            ]
            .iter()
            .map(|b| b.to_vec()),
        )
        .collect();
    let firsts = [0x10, 0x20, 0x30, 0x32, 0x3b, 0x40, 0xc0, 0xd0, 0xe0, 0xf0];
    let (mut parsed, mut need_more, mut malformed) = (0u32, 0u32, 0u32);
    for round in 0..200_000u32 {
        let input: Vec<u8> = if round % 2 == 0 {
            // Random bytes behind a plausible first byte and a short remaining length.
            let len = rng.below(24);
            let mut v = vec![firsts[rng.below(firsts.len())], len as u8];
            v.extend((0..len + rng.below(3)).map(|_| rng.byte()));
            v
        } else {
            let mut v = valid[rng.below(valid.len())].clone();
            for _ in 0..1 + rng.below(3) {
                if v.is_empty() {
                    break;
                }
                let at = rng.below(v.len());
                match rng.below(4) {
                    0 => v[at] = rng.byte(),
                    1 => v[at] ^= 1 << rng.below(8),
                    2 => v.truncate(at),
                    _ => v.insert(at, rng.byte()),
                }
            }
            v
        };
        match parse(&input) {
            Ok(Some(_)) => parsed += 1,
            Ok(None) => need_more += 1,
            Err(_) => malformed += 1,
        }
        check_input(&input);
    }
    // The generator reaches all three answers, so the checks above were exercised.
    assert!(
        parsed > 1_000 && need_more > 1_000 && malformed > 1_000,
        "{parsed} {need_more} {malformed}"
    );
}
