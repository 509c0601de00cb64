//! `Connection` alone: broker bytes in by hand, client bytes out, compared byte for byte.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::config::{Auth, Config, Qos};
use crate::connection::{Connection, Resume, Why};
use crate::event::{End, Event, Progress, ProtocolError};

/// Our receive buffer, advertised as Maximum Packet Size 256 (`0x27, 0x00, 0x00, 0x01, 0x00`).
const RX: usize = 256;

/// Client id `c1`, topic `t`, payload `p<N>`, as fast as allowed, forever.
fn cfg(auth: Auth, qos: Qos) -> Config<'static> {
    Config {
        client_id: "c1",
        topic: "t",
        payload_prefix: "p",
        qos,
        interval_ms: 0,
        auth,
        ..Config::default()
    }
}

fn resume(cfg: &Config<'_>) -> Resume {
    Resume {
        progress: Progress {
            next: cfg.start,
            acked_next: cfg.start,
            sent_high: cfg.start,
            ..Progress::default()
        },
        pid_origin: cfg.start,
        resume_session: false,
        next_due_ms: 0,
        rx_capacity: RX,
        connack_deadline_ms: cfg.connect_timeout_ms,
    }
}

/// A connection and what crossed its boundary.
struct H<'c> {
    conn: Connection<'c>,
    now: u64,
    /// Broker bytes not consumed yet (a partial packet).
    pending: Vec<u8>,
    events: Vec<Event>,
}

impl<'c> H<'c> {
    /// Writes CONNECT with token `tok`; returns its bytes too.
    fn connect(cfg: &'c Config<'c>) -> (Self, Vec<u8>) {
        let mut conn = Connection::new(cfg, resume(cfg));
        let mut buf = [0u8; 512];
        let n = conn.connect(b"tok", &mut buf, 0).expect("CONNECT fits");
        let h = H {
            conn,
            now: 0,
            pending: Vec::new(),
            events: Vec::new(),
        };
        (h, buf[..n].to_vec())
    }

    /// Connected with `connack`; the CONNECT is dropped.
    fn live(cfg: &'c Config<'c>, connack: &[u8]) -> Self {
        let mut h = H::connect(cfg).0;
        h.input(connack);
        assert!(h.conn.is_connected(), "not connected: {:?}", h.conn.end());
        h
    }

    fn input(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let used = self.conn.handle_input(&self.pending, self.now);
        self.pending.drain(..used);
        self.collect();
    }

    /// One `poll_transmit` into a buffer of `cap` bytes, all of it then handed to the stack.
    fn tx(&mut self, cap: usize) -> Vec<u8> {
        let mut buf = vec![0u8; cap];
        let n = self.conn.poll_transmit(self.now, &mut buf);
        self.conn.flushed();
        self.collect();
        buf.truncate(n);
        buf
    }

    fn at(&mut self, now: u64) {
        self.now = now;
        self.conn.handle_timeout(now);
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
        }
    }
}

/// QoS 1 PUBLISH of `p<n>` (n < 10) to `t` with packet id `id`, no properties.
fn publish1(n: u8, id: u8) -> [u8; 10] {
    [
        0x32,
        0x08, // PUBLISH QoS 1, remaining length 8
        0x00,
        0x01,
        b't', // topic "t"
        0x00,
        id,   // packet id
        0x00, // no properties
        b'p',
        b'0' + n, // payload "p<n>"
    ]
}

#[test]
fn connect_with_sat_is_user_sat_and_token_password_clean_start_no_session_expiry() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let (_, bytes) = H::connect(&cfg);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x10, 0x1f, // CONNECT, remaining length 31
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x05, // protocol level 5
        0xc2, // flags: user name, password, Clean Start
        0x00, 0x3c, // keepalive 60 s
        0x05, // properties, 5 bytes (no Session Expiry Interval: 0)
        0x27, 0x00, 0x00, 0x01, 0x00, // Maximum Packet Size 256 = our receive buffer
        0x00, 0x02, b'c', b'1', // client id "c1"
        0x00, 0x04, b'$', b's', b'a', b't', // user name "$sat"
        0x00, 0x03, b't', b'o', b'k', // password: the token
    ];
    assert_eq!(bytes, expected);
}

#[test]
fn connect_with_k8s_sat_carries_method_and_token_as_data_and_no_user_or_password() {
    let cfg = cfg(Auth::K8sSat, Qos::AtLeastOnce);
    let (_, bytes) = H::connect(&cfg);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x10, 0x24, // CONNECT, remaining length 36
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // "MQTT", level 5
        0x02, // flags: Clean Start only
        0x00, 0x3c, // keepalive 60 s
        0x15, // properties, 21 bytes
        0x27, 0x00, 0x00, 0x01, 0x00, // Maximum Packet Size 256
        0x15, 0x00, 0x07, b'K', b'8', b'S', b'-', b'S', b'A', b'T', // Authentication Method
        0x16, 0x00, 0x03, b't', b'o', b'k', // Authentication Data: the token
        0x00, 0x02, b'c', b'1', // client id "c1"
    ];
    assert_eq!(bytes, expected);
}

#[test]
fn a_configured_session_expiry_is_sent_and_still_starts_clean() {
    let cfg = Config {
        session_expiry_s: 3_600,
        ..cfg(Auth::Sat, Qos::AtLeastOnce)
    };
    let (_, bytes) = H::connect(&cfg);
    let [Sent::Connect {
        clean_start,
        session_expiry,
        ..
    }] = whole(&bytes)[..]
    else {
        panic!("not one CONNECT");
    };
    assert!(clean_start);
    assert_eq!(session_expiry, 3_600);
}

#[test]
fn the_window_follows_receive_maximum_and_never_exceeds_the_cap() {
    for (rm, cap, window) in [
        (Some(1), 64, 1),
        (Some(5), 64, 5),
        (Some(20), 64, 20),
        (Some(65_535), 64, 64),
        (None, 64, 64),
        (Some(20), 10, 10),
    ] {
        let cfg = Config {
            window_cap: cap,
            ..cfg(Auth::Sat, Qos::AtLeastOnce)
        };
        let connack = rm.map_or(CONNACK_OK.to_vec(), connack_rm);
        let mut h = H::live(&cfg, &connack);
        let sent = counters(&whole(&h.tx(1 << 16)));
        assert_eq!(sent.len(), window, "receive maximum {rm:?}, cap {cap}");
        assert_eq!(h.conn.in_flight(), window as u64);
        assert!(h.tx(1 << 16).is_empty(), "a full window writes nothing");
        // One acknowledgement opens exactly one slot.
        h.input(&puback(1));
        assert_eq!(counters(&whole(&h.tx(1 << 16))), [window as u64]);
    }
}

#[test]
fn one_poll_transmit_writes_several_whole_publishes() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, &connack_rm(3));
    let bytes = h.tx(100);
    let mut expected = Vec::new();
    for n in 0..3 {
        expected.extend_from_slice(&publish1(n, n + 1));
    }
    assert_eq!(bytes, expected);
    assert_eq!(
        h.events.last(),
        Some(&Event::Published {
            first: 0,
            last: 2,
            duplicates: 0
        })
    );
}

#[test]
fn a_buffer_too_small_for_the_next_publish_gets_only_whole_packets() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, &connack_rm(3));
    // 25 bytes: two 10-byte PUBLISHes, never half of the third.
    assert_eq!(h.tx(25).len(), 20);
    assert_eq!(h.conn.progress().next, 2);
    assert_eq!(h.tx(9), Vec::<u8>::new());
    assert_eq!(h.tx(10), publish1(2, 3));
}

#[test]
fn topic_alias_is_used_after_the_first_publish_when_offered() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    #[rustfmt::skip]
    let connack: &[u8] = &[
        0x20, 0x06, // CONNACK, remaining length 6
        0x00, 0x00, // Success
        0x03, 0x22, 0x00, 0x01, // properties: Topic Alias Maximum 1
    ];
    let mut h = H::live(&cfg, connack);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x32, 0x0b, // PUBLISH QoS 1, remaining length 11
        0x00, 0x01, b't', // topic "t"
        0x00, 0x01, // packet id 1
        0x03, 0x23, 0x00, 0x01, // properties: Topic Alias 1
        b'p', b'0',
        0x32, 0x0a, // PUBLISH QoS 1, remaining length 10
        0x00, 0x00, // empty topic: the alias stands for it
        0x00, 0x02, // packet id 2
        0x03, 0x23, 0x00, 0x01, // Topic Alias 1
        b'p', b'1',
    ];
    assert_eq!(h.tx(27), expected);
    assert!(matches!(
        h.events[0],
        Event::Connected {
            topic_alias: true,
            ..
        }
    ));
}

#[test]
fn topic_alias_is_not_used_when_not_offered() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, &connack_rm(2));
    let mut expected = publish1(0, 1).to_vec();
    expected.extend_from_slice(&publish1(1, 2));
    assert_eq!(h.tx(100), expected);
}

#[test]
fn maximum_packet_size_smaller_than_one_publish_is_a_clear_error_at_connack() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::connect(&cfg).0;
    #[rustfmt::skip]
    h.input(&[
        0x20, 0x08, // CONNACK, remaining length 8
        0x00, 0x00, // Success
        0x05, 0x27, 0x00, 0x00, 0x00, 0x0a, // Maximum Packet Size 10
    ]);
    // The largest PUBLISH of a job "forever" carries u64::MAX - 1: 29 bytes.
    assert_eq!(
        h.conn.end(),
        Some(&End::PublishTooLarge { len: 29, max: 10 })
    );
    assert!(h.conn.end().expect("ended").is_fatal());
    assert_eq!(h.tx(100), DISCONNECT_NORMAL);
    assert!(h.conn.is_closed());
}

#[test]
fn server_keep_alive_overrides_ours_and_paces_pingreq() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::connect(&cfg).0;
    #[rustfmt::skip]
    h.input(&[
        0x20, 0x09, // CONNACK, remaining length 9
        0x00, 0x00, // Success
        0x06, 0x13, 0x00, 0x05, // properties: Server Keep Alive 5 s (we asked for 60)
        0x21, 0x00, 0x01, // Receive Maximum 1
    ]);
    assert!(matches!(
        h.events[0],
        Event::Connected {
            keep_alive_s: 5,
            ..
        }
    ));
    assert_eq!(counters(&whole(&h.tx(100))), [0]);
    assert_eq!(h.conn.poll_timeout(), Some(5_000));
    h.at(4_999);
    assert_eq!(h.tx(100), Vec::<u8>::new());
    h.at(5_000);
    assert_eq!(h.tx(100), [0xc0, 0x00]); // PINGREQ, remaining length 0
    assert_eq!(h.conn.poll_timeout(), Some(10_000));
    h.input(PINGRESP);
    h.at(10_000);
    assert!(h.conn.is_connected(), "the answered ping keeps the link");
    assert_eq!(
        h.tx(100),
        [0xc0, 0x00],
        "and the next one is due 5 s after the last"
    );
}

#[test]
fn an_unanswered_ping_ends_the_connection_as_link_lost() {
    let cfg = Config {
        keepalive_s: 2,
        count: 1,
        ..cfg(Auth::Sat, Qos::AtLeastOnce)
    };
    let mut h = H::live(&cfg, CONNACK_OK);
    assert_eq!(whole(&h.tx(100)).len(), 1);
    h.at(2_000);
    assert_eq!(h.tx(100), [0xc0, 0x00]); // PINGREQ
    h.at(3_999);
    assert!(h.conn.is_connected());
    h.at(4_000);
    assert_eq!(h.conn.end(), Some(&End::LinkLost));
    assert_eq!(h.tx(100), DISCONNECT_NORMAL);
}

#[test]
fn no_connack_within_the_timeout_is_connect_timeout() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::connect(&cfg).0;
    assert_eq!(h.conn.poll_timeout(), Some(5_000));
    h.at(4_999);
    assert_eq!(h.conn.end(), None);
    h.at(5_000);
    assert_eq!(h.conn.end(), Some(&End::ConnectTimeout));
    assert_eq!(h.tx(100), DISCONNECT_NORMAL);
    assert!(h.conn.is_closed());
}

#[test]
fn session_present_on_a_clean_start_is_a_protocol_error_with_disconnect_0x82() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::connect(&cfg).0;
    #[rustfmt::skip]
    h.input(&[
        0x20, 0x03, // CONNACK, remaining length 3
        0x01, 0x00, // Session Present, Success
        0x00, // no properties
    ]);
    assert_eq!(
        h.conn.end(),
        Some(&End::Protocol(ProtocolError::SessionPresentOnCleanStart))
    );
    assert_eq!(h.tx(100), [0xe0, 0x01, 0x82]); // DISCONNECT, Protocol Error
    assert_eq!(h.conn.progress().connections, 0);
}

#[test]
fn a_puback_out_of_order_ends_with_disconnect_0x82() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, &connack_rm(3));
    h.tx(100);
    h.input(&puback(2));
    assert_eq!(
        h.conn.end(),
        Some(&End::Protocol(ProtocolError::PubackOutOfOrder {
            expected: 1,
            got: 2
        }))
    );
    assert_eq!(h.tx(100), [0xe0, 0x01, 0x82]);
    assert_eq!(
        h.conn.progress().acked_next,
        0,
        "nothing counted as acknowledged"
    );
}

#[test]
fn a_puback_for_nothing_in_flight_ends_with_disconnect_0x82() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, &connack_rm(1));
    h.tx(100);
    h.input(&[puback(1), puback(1)].concat());
    assert_eq!(
        h.conn.end(),
        Some(&End::Protocol(ProtocolError::PubackNothingInFlight {
            id: 1
        }))
    );
    assert_eq!(h.conn.progress().acked_next, 1);
    assert_eq!(h.tx(100), [0xe0, 0x01, 0x82]);
}

#[test]
fn puback_failure_reasons_are_counted_reported_and_not_resent() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, &connack_rm(3));
    h.tx(100);
    // 0x10 No matching subscribers is a success; 0x87 Not authorized twice is not.
    h.input(
        &[
            puback_reason(1, 0x10),
            puback_reason(2, 0x87),
            puback_reason(3, 0x87),
        ]
        .concat(),
    );
    assert!(
        h.conn.is_connected(),
        "a refused message does not stop the loop"
    );
    let p = h.conn.progress();
    assert_eq!((p.acked_next, p.acked, p.rejected), (3, 3, 2));
    assert!(h.events.contains(&Event::PublishRejected {
        n: 1,
        reason: 0x87,
        count: 2
    }));
    // What comes next is new: 3, 4, 5, not 1 or 2 again.
    assert_eq!(counters(&whole(&h.tx(100))), [3, 4, 5]);
}

#[test]
fn refused_connack_names_the_token_or_the_method() {
    for (reason, end) in [
        (0x86, End::TokenRejected(0x86)),
        (0x87, End::TokenRejected(0x87)),
        (0x8c, End::BadAuthMethod),
        (0x88, End::Refused(0x88)),
    ] {
        let cfg = cfg(Auth::K8sSat, Qos::AtLeastOnce);
        let mut h = H::connect(&cfg).0;
        h.input(&connack_refused(reason));
        assert_eq!(h.conn.end(), Some(&end));
        assert!(
            h.conn.is_closed(),
            "the broker closes; we owe no DISCONNECT"
        );
        assert_eq!(h.tx(100), Vec::<u8>::new());
        assert!(!h.conn.disconnect_sent());
        assert!(end.is_failure());
    }
}

#[test]
fn server_disconnect_is_reported_with_its_reason_string_sanitized() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, CONNACK_OK);
    #[rustfmt::skip]
    h.input(&[
        0xe0, 0x0c, // DISCONNECT, remaining length 12
        0x8b, // Server shutting down
        0x0a, 0x1f, 0x00, 0x07, b'b', b'y', b'e', b'\n', b'n', b'o', b'w', // Reason String
    ]);
    let Some(End::ServerDisconnect { reason, text }) = h.conn.end() else {
        panic!("{:?}", h.conn.end());
    };
    assert_eq!(*reason, 0x8b);
    assert_eq!(
        text.as_str(),
        "bye?now",
        "a control character cannot forge a log line"
    );
    assert!(h.conn.is_closed());
    assert_eq!(h.tx(100), Vec::<u8>::new());
}

#[test]
fn a_long_server_reason_string_is_bounded() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, CONNACK_OK);
    let mut d = vec![
        0xe0, 0xce, 0x01, // DISCONNECT, remaining length 206
        0x80, // Unspecified error
        0xcb, 0x01, 0x1f, 0x00, 0xc8, // properties 203 bytes: Reason String, 200 bytes
    ];
    d.extend_from_slice(&[b'x'; 200]);
    h.input(&d);
    let Some(End::ServerDisconnect { text, .. }) = h.conn.end() else {
        panic!("{:?}", h.conn.end());
    };
    assert_eq!(text.as_str().len(), crate::event::TEXT_MAX);
    assert!(std::format!("{text}").ends_with('…'));
}

#[test]
fn an_auth_challenge_in_answer_to_connect_is_an_error() {
    let cfg = cfg(Auth::K8sSat, Qos::AtLeastOnce);
    let mut h = H::connect(&cfg).0;
    h.input(&auth(0x18));
    assert_eq!(h.conn.end(), Some(&End::AuthChallenge));
    assert_eq!(h.tx(100), DISCONNECT_NORMAL);
}

/// Live `K8S-SAT` connection with window 4 that has written AUTH 0x19 with token `tok2`.
fn reauthenticating<'c>(cfg: &'c Config<'c>) -> (H<'c>, Vec<u8>) {
    let mut h = H::live(cfg, &connack_rm(4));
    let mut buf = [0u8; 128];
    let n = h
        .conn
        .reauthenticate(b"tok2", Some(1_000), &mut buf, h.now)
        .expect("AUTH written");
    h.collect();
    (h, buf[..n].to_vec())
}

#[test]
fn reauthentication_writes_auth_0x19_with_method_and_new_token() {
    let cfg = cfg(Auth::K8sSat, Qos::AtLeastOnce);
    let (h, bytes) = reauthenticating(&cfg);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0xf0, 0x13, // AUTH, remaining length 19
        0x19, // Re-authenticate
        0x11, // properties, 17 bytes
        0x15, 0x00, 0x07, b'K', b'8', b'S', b'-', b'S', b'A', b'T', // Authentication Method
        0x16, 0x00, 0x04, b't', b'o', b'k', b'2', // Authentication Data: the new token
    ];
    assert_eq!(bytes, expected);
    assert!(h.conn.reauth_pending());
    assert!(h
        .events
        .contains(&Event::Reauthenticating { exp: Some(1_000) }));
}

#[test]
fn sat_connections_and_pending_reauthentications_refuse_another_auth() {
    use crate::connection::ReauthError;
    let sat = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&sat, CONNACK_OK);
    let mut buf = [0u8; 64];
    assert_eq!(
        h.conn.reauthenticate(b"t", None, &mut buf, 0),
        Err(ReauthError::NotEnhanced)
    );
    let k8s = cfg(Auth::K8sSat, Qos::AtLeastOnce);
    let (mut h, _) = reauthenticating(&k8s);
    assert_eq!(
        h.conn.reauthenticate(b"t", None, &mut buf, 0),
        Err(ReauthError::NotNow)
    );
}

/// How the broker answers a pending re-authentication.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Success,
    Continue,
    Disconnect,
    Connack87,
    Eof,
    Timeout,
}

/// Every answer at every point of the send path: before any PUBLISH after the AUTH, with
/// PUBLISHes in flight, in the same read as PUBACKs (before and after them), with a full window.
#[test]
fn every_answer_to_a_pending_reauthentication_at_every_point_of_the_send_path() {
    use Answer::*;
    let cfg = cfg(Auth::K8sSat, Qos::AtLeastOnce);
    for answer in [Success, Continue, Disconnect, Connack87, Eof, Timeout] {
        for point in 0..5 {
            let (mut h, _) = reauthenticating(&cfg);
            // Publishing goes on while the broker decides.
            let first = counters(&whole(&h.tx(1_000)));
            assert_eq!(
                first,
                [0, 1, 2, 3],
                "{answer:?} at {point}: window of 4 written"
            );
            let answer_bytes: Vec<u8> = match answer {
                Success => auth(0x00),
                Continue => auth(0x18),
                Disconnect => vec![0xe0, 0x01, 0x87], // DISCONNECT, Not authorized
                Connack87 => connack_refused(0x87),   // mosquitto 2.0.11
                Eof | Timeout => vec![],
            };
            let acks: Vec<u8> = [puback(1), puback(2)].concat();
            let chunk = match point {
                0 => answer_bytes.clone(),
                1 => [acks.clone(), answer_bytes.clone()].concat(),
                2 => [answer_bytes.clone(), acks.clone()].concat(),
                3 => [puback(1), answer_bytes.clone(), puback(2)].concat(),
                _ => {
                    // Answer split across two reads, after the window refilled.
                    h.input(&acks);
                    assert_eq!(counters(&whole(&h.tx(1_000))), [4, 5]);
                    answer_bytes.clone()
                }
            };
            let mid = chunk.len() / 2;
            h.input(&chunk[..mid]);
            h.input(&chunk[mid..]);
            let acked = h.conn.progress().acked_next;
            match answer {
                Success => {
                    assert!(h.conn.is_connected());
                    assert!(!h.conn.reauth_pending());
                    assert!(h
                        .events
                        .contains(&Event::Reauthenticated { exp: Some(1_000) }));
                    assert_eq!(h.conn.progress().reauths, 1);
                    // And the next acknowledgement opens the window as before.
                    h.tx(1_000);
                    h.input(&puback(acked as u16 + 1));
                    assert_eq!(whole(&h.tx(1_000)).len(), 1);
                }
                Continue => {
                    assert!(h.conn.is_connected());
                    assert!(!h.conn.reauth_pending());
                    assert!(h.conn.take_reauth_deferred(), "{point}");
                    assert!(!h.conn.take_reauth_deferred(), "read once");
                    assert_eq!(h.conn.progress().reauths, 0);
                }
                Disconnect => {
                    assert!(matches!(
                        h.conn.end(),
                        Some(End::ServerDisconnect { reason: 0x87, .. })
                    ));
                    assert_eq!(h.tx(1_000), Vec::<u8>::new());
                }
                Connack87 => {
                    assert_eq!(h.conn.end(), Some(&End::ReauthRefused(0x87)));
                    assert!(h.conn.is_closed());
                    assert_eq!(h.tx(1_000), Vec::<u8>::new());
                }
                Eof => {
                    h.conn.abort(End::PeerClosed);
                    assert_eq!(h.conn.end(), Some(&End::PeerClosed));
                    assert_eq!(h.tx(1_000), Vec::<u8>::new());
                }
                Timeout => {
                    assert_eq!(h.conn.poll_timeout(), Some(10_000));
                    h.at(9_999);
                    assert!(h.conn.is_connected());
                    h.at(10_000);
                    assert_eq!(h.conn.end(), Some(&End::ReauthTimeout));
                    assert!(!End::ReauthTimeout.is_failure());
                    assert_eq!(h.tx(1_000), DISCONNECT_NORMAL);
                }
            }
            // Acknowledgements read with the answer are never lost; those after an end are moot.
            let expected_acked = match (point, answer) {
                (0, _) | (2, Disconnect | Connack87) => 0,
                (3, Disconnect | Connack87) => 1,
                _ => 2,
            };
            assert_eq!(acked, expected_acked, "{answer:?} at point {point}");
        }
    }
}

#[test]
fn qos0_messages_written_but_not_flushed_are_reported_for_resending() {
    let cfg = Config {
        count: 5,
        ..cfg(Auth::Sat, Qos::AtMostOnce)
    };
    let mut h = H::live(&cfg, CONNACK_OK);
    let mut buf = [0u8; 20];
    let n = h.conn.poll_transmit(0, &mut buf);
    assert_eq!(n, 16, "two QoS 0 PUBLISHes of 8 bytes");
    #[rustfmt::skip]
    assert_eq!(&buf[..8], &[
        0x30, 0x06, // PUBLISH QoS 0, remaining length 6
        0x00, 0x01, b't', // topic "t"
        0x00, // no properties
        b'p', b'0',
    ]);
    // Not handed to the stack yet: not counted as sent.
    assert_eq!(h.conn.unflushed_from(), Some(0));
    assert_eq!(h.conn.progress().acked_next, 0);
    assert!(!h.conn.made_progress());
    h.conn.flushed();
    assert_eq!(h.conn.unflushed_from(), None);
    assert_eq!(h.conn.progress().acked_next, 2);
    assert!(h.conn.made_progress());
}

#[test]
fn drain_waits_for_pubacks_then_writes_disconnect() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, &connack_rm(3));
    h.tx(100);
    h.conn.drain(Why::Stop, 5_000);
    assert_eq!(h.tx(100), Vec::<u8>::new(), "no new PUBLISH while draining");
    h.input(&puback(1));
    h.input(&puback(2));
    assert!(h.conn.is_connected());
    h.input(&puback(3));
    assert_eq!(h.conn.end(), Some(&End::Stopped));
    assert_eq!(h.tx(100), DISCONNECT_NORMAL);
    assert!(h.conn.disconnect_sent() && h.conn.is_closed());
    assert_eq!(h.conn.progress().acked_next, 3);
}

#[test]
fn drain_gives_up_at_its_deadline() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, &connack_rm(3));
    h.tx(100);
    h.conn.drain(Why::Stop, 5_000);
    h.input(&puback(1));
    assert_eq!(h.conn.poll_timeout(), Some(5_000));
    h.at(4_999);
    assert!(h.conn.is_connected());
    h.at(5_000);
    assert_eq!(h.conn.end(), Some(&End::Stopped));
    assert_eq!(h.tx(100), DISCONNECT_NORMAL);
    assert_eq!(h.conn.progress().acked_next, 1);
}

#[test]
fn a_disconnect_that_does_not_fit_is_written_whole_on_the_next_call() {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::live(&cfg, CONNACK_OK);
    h.conn.drain(Why::Stop, 0);
    assert_eq!(h.tx(1), Vec::<u8>::new());
    assert!(!h.conn.is_closed());
    assert_eq!(h.tx(2), DISCONNECT_NORMAL);
}

/// What the broker sends once PUBLISH 0..=2 are in flight (window 3): acknowledgements
/// interleaved with a rejection and a PINGRESP.
#[rustfmt::skip]
fn session_bytes() -> Vec<u8> {
    [
        puback(1),
        puback_reason(2, 0x97), // Quota exceeded
        PINGRESP.to_vec(),
        puback(3),
    ]
    .concat()
}

/// CONNACK (window 3, topic alias), the first window, then `chunks` one at a time with a
/// transmit after each, then a DISCONNECT 0x8b "!"; returns what a caller sees.
fn run_chunks(chunks: &[&[u8]]) -> (Vec<u8>, Progress, Option<End>) {
    let cfg = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::connect(&cfg).0;
    #[rustfmt::skip]
    h.input(&[
        0x20, 0x09, 0x00, 0x00, // CONNACK, remaining length 9, Success
        0x06, 0x21, 0x00, 0x03, 0x22, 0x00, 0x02, // Receive Maximum 3, Topic Alias Maximum 2
    ]);
    let mut out = h.tx(1_000);
    for c in chunks {
        h.input(c);
        out.extend(h.tx(1_000));
    }
    h.input(&[0xe0, 0x06, 0x8b, 0x04, 0x1f, 0x00, 0x01, b'!']);
    (out, h.conn.progress(), h.conn.end().cloned())
}

#[test]
fn broker_bytes_split_at_any_byte_give_the_same_result() {
    let bytes = session_bytes();
    let reference = run_chunks(&[&bytes]);
    assert!(matches!(
        reference.2,
        Some(End::ServerDisconnect { reason: 0x8b, .. })
    ));
    assert_eq!(counters(&whole(&reference.0)), [0, 1, 2, 3, 4, 5]);
    assert_eq!((reference.1.acked_next, reference.1.rejected), (3, 1));
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(run_chunks(&[a, b]), reference, "split at byte {cut}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run_chunks(&singles), reference, "one byte per read");
}

#[test]
fn maximum_qos_0_is_a_clear_error_for_a_qos1_job_and_fine_for_qos0() {
    #[rustfmt::skip]
    let connack: &[u8] = &[
        0x20, 0x05, // CONNACK, remaining length 5
        0x00, 0x00, // Success
        0x02, 0x24, 0x00, // properties: Maximum QoS 0
    ];
    let cfg1 = cfg(Auth::Sat, Qos::AtLeastOnce);
    let mut h = H::connect(&cfg1).0;
    h.input(connack);
    assert_eq!(h.conn.end(), Some(&End::QosNotSupported));
    assert!(End::QosNotSupported.is_fatal());
    assert_eq!(h.tx(100), DISCONNECT_NORMAL);
    let cfg0 = cfg(Auth::Sat, Qos::AtMostOnce);
    let h = H::live(&cfg0, connack);
    assert!(h.conn.is_connected());
}
