//! Writes the seed corpora of `fuzz/corpus/{wire_parse,connection,token}` that are built rather
//! than captured: `cargo run -p fuzz-harness --example write_seeds`. Files are named after what
//! they exercise; the replay test runs them all.

use std::fs;
use std::path::{Path, PathBuf};

use fuzz_harness::connection::{Script, Setup, Step};

/// CONNACK as mosquitto 2.0.11 sends it: Topic Alias Maximum 10, Receive Maximum 20.
const CONNACK: &[u8] = &[
    0x20, 0x09, 0x00, 0x00, 0x06, 0x22, 0x00, 0x0a, 0x21, 0x00, 0x14,
];
/// CONNACK refusing with 0x87 Not authorized, as mosquitto 2.0.11 sends it.
const CONNACK_REFUSED: &[u8] = &[0x20, 0x03, 0x00, 0x87, 0x00];
/// PUBACK for packet 1 with 0x10 No matching subscribers, as mosquitto 2.0.11 sends it.
const PUBACK: &[u8] = &[0x40, 0x03, 0x00, 0x01, 0x10];
/// DISCONNECT 0x94 Topic Alias invalid, as mosquitto 2.0.11 sends it.
const DISCONNECT: &[u8] = &[0xe0, 0x01, 0x94];
/// AUTH 0x00 Success with Authentication Method K8S-SAT (the in-band re-authentication answer).
const AUTH_OK: &[u8] = &[
    0xf0, 0x0c, 0x00, 0x0a, 0x15, 0x00, 0x07, b'K', b'8', b'S', b'-', b'S', b'A', b'T',
];

fn dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    fs::create_dir_all(&d).expect("create the corpus directory");
    d
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    fs::write(dir(target).join(name), bytes).expect("write a seed");
}

fn qos1(count: u8) -> Setup {
    Setup {
        qos1: true,
        window_cap: 4,
        count,
        keepalive_s: 2,
        ..Setup::default()
    }
}

fn script(name: &str, setup: Setup, steps: Vec<Step>) {
    let s = Script { setup, steps };
    write("connection", name, &s.encode());
}

fn main() {
    use Step::*;
    let unlimited = WriteCap(3);
    let ack = AckNext { reason: 0 };

    // wire_parse: the unit tests' edge cases (the mosquitto captures are committed already).
    for (name, bytes) in [
        ("puback-short-2", &[0x40, 0x02, 0x00, 0x01][..]),
        (
            "puback-reason-string",
            &[0x40, 0x08, 0x00, 0x02, 0x80, 0x04, 0x1f, 0x00, 0x01, b'x'],
        ),
        ("puback-packet-id-0", &[0x40, 0x02, 0x00, 0x00]),
        ("pingresp", &[0xd0, 0x00]),
        ("pingreq", &[0xc0, 0x00]),
        (
            "remaining-length-5-bytes",
            &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        ("remaining-length-not-minimal", &[0xd0, 0x80, 0x00]),
        ("remaining-length-max", &[0x30, 0xff, 0xff, 0xff, 0x7f]),
        ("auth-empty", &[0xf0, 0x00]),
        ("auth-lone-reason", &[0xf0, 0x01, 0x00]),
        ("auth-k8s-sat-success", AUTH_OK),
        ("disconnect-empty", &[0xe0, 0x00]),
        (
            "disconnect-reason-string",
            &[
                0xe0, 0x09, 0x8b, 0x07, 0x1f, 0x00, 0x04, b'b', b'y', b'e', 0x1b,
            ],
        ),
        (
            "connack-user-property",
            &[
                0x20, 0x0a, 0x00, 0x00, 0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
            ],
        ),
        (
            "connack-duplicate-property",
            &[
                0x20, 0x09, 0x00, 0x00, 0x06, 0x21, 0x00, 0x01, 0x21, 0x00, 0x01,
            ],
        ),
        (
            "connack-receive-maximum-0",
            &[0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00],
        ),
        (
            "connack-session-present-refused",
            &[0x20, 0x03, 0x01, 0x87, 0x00],
        ),
        (
            "connack-unknown-property",
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x7f, 0x00],
        ),
        (
            "connack-utf8-nul",
            &[0x20, 0x08, 0x00, 0x00, 0x05, 0x1f, 0x00, 0x02, b'a', 0x00],
        ),
        (
            "publish-qos1-alias",
            &[
                0x32, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x03, 0x23, 0x00, 0x01, b'p', b'7',
            ],
        ),
        ("publish-qos3", &[0x36, 0x02, 0x00, 0x00]),
        ("publish-wildcard", &[0x30, 0x04, 0x00, 0x01, b'#', 0x00]),
        ("subscribe-not-parsed", &[0x82, 0x02, 0x00, 0x01]),
        (
            "two-packets",
            &[0x40, 0x02, 0x00, 0x01, 0x40, 0x02, 0x00, 0x02],
        ),
    ] {
        write("wire_parse", name, bytes);
    }

    // connection: scripts around the mosquitto captures.
    script(
        "qos1-five-acked",
        qos1(5),
        vec![
            unlimited.clone(),
            Poll,
            Bytes(CONNACK.to_vec()),
            Poll,
            Bytes(PUBACK.to_vec()),
            Poll,
            ack.clone(),
            ack.clone(),
            Poll,
            ack.clone(),
            Poll,
            ack.clone(),
            Poll,
        ],
    );
    script(
        "qos1-stop-while-in-flight",
        qos1(0),
        vec![
            Poll,
            Bytes(CONNACK.to_vec()),
            Poll,
            ack.clone(),
            Stop,
            Poll,
            ack.clone(),
            Poll,
            AdvanceSeconds(1),
            Poll,
        ],
    );
    script(
        "write-capacity-0-and-1",
        qos1(3),
        vec![
            WriteCap(1),
            Poll,
            Poll,
            Bytes(CONNACK.to_vec()),
            WriteCap(0),
            Poll,
            WriteCap(1),
            Poll,
            Poll,
            Poll,
            WriteCap(2 | (7 << 2)),
            Poll,
            ack.clone(),
            Poll,
        ],
    );
    script(
        "broker-disconnect-then-reconnect",
        qos1(4),
        vec![
            Bytes(CONNACK.to_vec()),
            Poll,
            Bytes(DISCONNECT.to_vec()),
            Poll,
            Advance(200),
            Poll,
            Bytes(CONNACK.to_vec()),
            Poll,
            ack.clone(),
            ack.clone(),
            Poll,
        ],
    );
    script(
        "connack-refused-backoff",
        qos1(2),
        vec![
            Bytes(CONNACK_REFUSED.to_vec()),
            Poll,
            Advance(50),
            Poll,
            Advance(500),
            Poll,
            Bytes(CONNACK.to_vec()),
            Poll,
        ],
    );
    script(
        "connack-split-then-eof",
        qos1(2),
        vec![
            Bytes(CONNACK[..4].to_vec()),
            Poll,
            Bytes(CONNACK[4..].to_vec()),
            Poll,
            Bytes(PUBACK[..2].to_vec()),
            Eof,
            Poll,
            Advance(100),
            Poll,
        ],
    );
    script(
        "keepalive-ping",
        Setup {
            keepalive_s: 1,
            ..qos1(0)
        },
        vec![
            Bytes(CONNACK.to_vec()),
            Poll,
            AdvanceSeconds(1),
            Poll,
            Pingresp,
            Poll,
            AdvanceSeconds(1),
            Poll,
            AdvanceSeconds(1),
            Poll,
        ],
    );
    script(
        "k8s-sat-reauth-success",
        Setup {
            k8s_sat: true,
            wall_clock: true,
            first_token_exp_s: Some(3_600),
            ..qos1(0)
        },
        vec![
            Bytes(CONNACK.to_vec()),
            Poll,
            Token {
                fill: 1,
                len: 40,
                exp_s: Some(7_200),
            },
            Poll,
            Bytes(AUTH_OK.to_vec()),
            Poll,
            ack.clone(),
            Poll,
        ],
    );
    script(
        "k8s-sat-auth-deferred-then-unasked-auth",
        Setup {
            k8s_sat: true,
            ..qos1(0)
        },
        vec![
            Bytes(CONNACK.to_vec()),
            Poll,
            Token {
                fill: 2,
                len: 30,
                exp_s: None,
            },
            Poll,
            Auth {
                reason: 1,
                method: true,
            },
            Poll,
            Auth {
                reason: 0,
                method: true,
            },
            Poll,
        ],
    );
    script(
        "sat-token-rotation",
        Setup {
            wall_clock: true,
            first_token_exp_s: Some(20),
            ..qos1(0)
        },
        vec![
            Bytes(CONNACK.to_vec()),
            Poll,
            Token {
                fill: 3,
                len: 50,
                exp_s: Some(3_600),
            },
            Poll,
            ack.clone(),
            Poll,
            Advance(100),
            Bytes(CONNACK.to_vec()),
            Poll,
            AdvanceSeconds(30),
            Poll,
        ],
    );
    script(
        "qos0-interval-and-send-error",
        Setup {
            interval_ms: 1,
            count: 6,
            ..Setup::default()
        },
        vec![
            Bytes(CONNACK.to_vec()),
            Poll,
            Advance(10),
            Poll,
            WriteCap(0),
            Advance(10),
            Poll,
            SendError,
            WriteCap(3),
            Poll,
            Advance(100),
            Poll,
            Bytes(CONNACK.to_vec()),
            Advance(100),
            Poll,
        ],
    );
    script(
        "session-present-resume",
        Setup {
            session: true,
            ..qos1(6)
        },
        vec![
            Bytes(CONNACK.to_vec()),
            Poll,
            ack.clone(),
            Eof,
            Poll,
            Advance(200),
            Poll,
            Connack {
                session_present: true,
                reason: 0,
                receive_maximum: Some(2),
                maximum_packet_size: None,
                server_keep_alive: None,
                topic_alias_maximum: Some(5),
                maximum_qos_0: None,
            },
            Poll,
            ack.clone(),
            ack.clone(),
            Poll,
        ],
    );
    script(
        "puback-out-of-order-and-garbage",
        qos1(0),
        vec![
            Bytes(CONNACK.to_vec()),
            Poll,
            Ack(3),
            Poll,
            Advance(100),
            Poll,
            Bytes(CONNACK.iter().chain(&[0xff, 0xff, 0xff]).copied().collect()),
            Poll,
        ],
    );
    script(
        "connack-timeout-and-token-failure",
        qos1(1),
        vec![
            TokenFails,
            AdvanceSeconds(2),
            Poll,
            AdvanceSeconds(2),
            Poll,
            Token {
                fill: 4,
                len: 10,
                exp_s: None,
            },
            Advance(100),
            Poll,
        ],
    );

    // token: file contents.
    let jwt = |claims: &str| {
        format!(
            "{}.{}.c2ln",
            b64(br#"{"alg":"RS256","kid":"k"}"#),
            b64(claims.as_bytes())
        )
    };
    for (name, bytes) in [
        ("plain", b"s3cr3t-DISTINCTIVE-t0ken".to_vec()),
        ("trailing-newline", b"s3cr3t-DISTINCTIVE-t0ken\n".to_vec()),
        ("crlf-and-spaces", b"tok en\r\n \t".to_vec()),
        ("empty", Vec::new()),
        ("whitespace-only", b" \n\t\r\n".to_vec()),
        ("not-utf8", b"abc\xff\xfedef".to_vec()),
        ("leading-space-kept", b" token".to_vec()),
        (
            "jwt-exp",
            jwt(r#"{"exp":1700003600,"iat":1700000000}"#).into_bytes(),
        ),
        ("jwt-exp-float", jwt(r#"{"exp":1.7e9}"#).into_bytes()),
        ("jwt-exp-negative", jwt(r#"{"exp":-5}"#).into_bytes()),
        ("jwt-exp-huge", jwt(r#"{"exp":1e300}"#).into_bytes()),
        ("jwt-exp-string", jwt(r#"{"exp":"soon"}"#).into_bytes()),
        ("jwt-payload-array", jwt("[1,2]").into_bytes()),
        ("jwt-four-parts", format!("{}.x", jwt("{}")).into_bytes()),
        ("claims-json", br#"{"exp":1700000000}"#.to_vec()),
    ] {
        write("token", name, &bytes);
    }
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}
