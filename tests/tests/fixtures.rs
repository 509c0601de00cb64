//! The fixtures themselves, with hand-encoded MQTT v5 bytes (no satmqtt code involved): the K8S-SAT
//! plugin in a real mosquitto, and the scripted fake broker. If these fail, the K8S-SAT and
//! hostile-broker scenarios cannot be trusted either way.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use satmqtt_tests::fake_broker::{tamper, FakeBroker, Step};
use satmqtt_tests::mqtt::{
    self, auth, connack, connect, connect_k8s_sat, prop, puback, publish, read_packet,
    ConnackProps, Packet, PacketType, Property,
};
use satmqtt_tests::plugin::token_tag;
use satmqtt_tests::{assert_no_token_leak, fake_jwt, jwt_exp, Broker, Subscriber, SAT_USERNAME};

const READ: Duration = Duration::from_secs(5);

fn dial(port: u16) -> TcpStream {
    let stream = TcpStream::connect((Broker::HOST, port)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).unwrap();
}

fn next(stream: &mut TcpStream) -> Packet {
    read_packet(stream, READ).unwrap_or_else(|e| panic!("reading a packet: {e}"))
}

/// The next read gives EOF or a reset (the peer closed), within [`READ`].
fn assert_closed(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(READ)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to be closed, got {other:?} ({byte:?})"),
    }
}

/// A K8S-SAT CONNECT of `client_id` with `token`, and the broker's answer.
fn k8s_connect(broker: &Broker, client_id: &str, token: &str) -> (TcpStream, Packet) {
    let mut stream = dial(broker.port());
    send(
        &mut stream,
        &connect_k8s_sat(client_id, 60, token.as_bytes()),
    );
    let answer = next(&mut stream);
    (stream, answer)
}

fn reauth(token: &str) -> Vec<u8> {
    auth(0x19, Some("K8S-SAT"), Some(token.as_bytes()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn plugin_accepts_a_valid_token_and_echoes_the_method() {
    let broker = Broker::start_k8s_sat(&fake_jwt(3600));
    let token = fake_jwt(3600);
    broker.allow_k8s_token(&token);
    let (_stream, answer) = k8s_connect(&broker, "k8s-good", &token);
    assert_eq!(answer.kind(), PacketType::Connack, "{answer:?}");
    assert_eq!(answer.reason(), 0x00);
    assert_eq!(
        answer.string_property(prop::AUTH_METHOD).as_deref(),
        Some("K8S-SAT")
    );
    assert!(broker.wait_for_log(READ, |log| !log.connects("k8s-good").is_empty()));
    let log = broker.events();
    let decisions = log.k8s_sat_decisions();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let d = &decisions[0];
    assert!(d.accepted && !d.reauth && d.client_id == "k8s-good" && d.method == "K8S-SAT");
    assert_eq!(d.token_tag, Some(token_tag(token.as_bytes())));
    assert_eq!(d.exp, jwt_exp(&token));
    assert_no_token_leak("the broker log", log.text(), &token);
}

#[test]
fn plugin_refuses_an_unknown_token_with_connack_0x87() {
    let broker = Broker::start_k8s_sat(&fake_jwt(3600));
    broker.allow_k8s_token(&fake_jwt(3600));
    let wrong = fake_jwt(3600);
    let (mut stream, answer) = k8s_connect(&broker, "k8s-wrong", &wrong);
    assert_eq!(
        (answer.kind(), answer.reason()),
        (PacketType::Connack, 0x87)
    );
    assert_closed(&mut stream);
    let d = broker.events().k8s_sat_decisions();
    assert_eq!(d.len(), 1);
    assert!(
        !d[0].accepted && d[0].refusal.as_deref() == Some("unknown"),
        "{d:?}"
    );
    assert_no_token_leak("the broker log", &broker.log(), &wrong);
}

#[test]
fn plugin_refuses_an_expired_token_and_a_revoked_one() {
    let broker = Broker::start_k8s_sat(&fake_jwt(3600));
    let expired = fake_jwt(-10);
    broker.allow_k8s_token(&expired);
    let (_s, answer) = k8s_connect(&broker, "k8s-expired", &expired);
    assert_eq!(
        (answer.kind(), answer.reason()),
        (PacketType::Connack, 0x87)
    );

    let revoked = fake_jwt(3600);
    broker.allow_k8s_token(&revoked);
    let (_s, answer) = k8s_connect(&broker, "k8s-revoked", &revoked);
    assert_eq!(answer.reason(), 0x00);
    broker.revoke_k8s_token(&revoked);
    let (_s, answer) = k8s_connect(&broker, "k8s-revoked-2", &revoked);
    assert_eq!(
        (answer.kind(), answer.reason()),
        (PacketType::Connack, 0x87)
    );

    let refusals: Vec<_> = broker
        .events()
        .k8s_sat_decisions()
        .into_iter()
        .map(|d| (d.client_id, d.refusal))
        .collect();
    assert_eq!(
        refusals,
        vec![
            ("k8s-expired".to_string(), Some("expired".to_string())),
            ("k8s-revoked".to_string(), None),
            ("k8s-revoked-2".to_string(), Some("unknown".to_string())),
        ]
    );
}

#[test]
fn plugin_defers_other_methods_so_mosquitto_answers_0x8c() {
    let broker = Broker::start_k8s_sat(&fake_jwt(3600));
    let mut stream = dial(broker.port());
    let props = [Property::Str(prop::AUTH_METHOD, "SCRAM-SHA-1".into())];
    send(&mut stream, &connect("k8s-other", 60, None, None, &props));
    let answer = next(&mut stream);
    assert_eq!(
        (answer.kind(), answer.reason()),
        (PacketType::Connack, 0x8C)
    );
}

#[test]
fn plugin_accepts_a_reauth_with_another_valid_token_and_the_connection_stays() {
    let broker = Broker::start_k8s_sat(&fake_jwt(3600));
    let first = fake_jwt(3600);
    let second = fake_jwt(7200);
    broker.allow_k8s_token(&first);
    broker.allow_k8s_token(&second);
    let (mut stream, answer) = k8s_connect(&broker, "k8s-reauth", &first);
    assert_eq!(answer.reason(), 0x00);

    send(&mut stream, &reauth(&second));
    let answer = next(&mut stream);
    assert_eq!(
        (answer.kind(), answer.reason()),
        (PacketType::Auth, 0x00),
        "{answer:?}"
    );
    assert_eq!(
        answer.string_property(prop::AUTH_METHOD).as_deref(),
        Some("K8S-SAT")
    );
    // Still the same session: a QoS 1 PUBLISH is acknowledged.
    send(&mut stream, &publish("fixtures/reauth", b"after", 1, 7));
    let ack = next(&mut stream);
    assert_eq!(
        (ack.kind(), &ack.raw[2..4]),
        (PacketType::Puback, &[0u8, 7][..])
    );

    let d = broker.events().k8s_sat_decisions();
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[1].reauth && d[1].accepted && d[1].client_id == "k8s-reauth");
    assert_eq!(d[1].token_tag, Some(token_tag(second.as_bytes())));
    assert_eq!(d[1].exp, jwt_exp(&second));
    assert_eq!(broker.events().connects("k8s-reauth").len(), 1);
}

#[test]
fn plugin_refuses_a_reauth_with_a_bad_token_and_closes() {
    let broker = Broker::start_k8s_sat(&fake_jwt(3600));
    let good = fake_jwt(3600);
    broker.allow_k8s_token(&good);
    let (mut stream, answer) = k8s_connect(&broker, "k8s-badreauth", &good);
    assert_eq!(answer.reason(), 0x00);

    send(&mut stream, &reauth(&fake_jwt(3600)));
    let answer = next(&mut stream);
    // mosquitto 2.0.11 answers a failed re-auth with CONNACK 0x87 (2.0.13+: DISCONNECT 0x87).
    assert!(
        matches!(
            (answer.kind(), answer.reason()),
            (PacketType::Connack, 0x87) | (PacketType::Disconnect, 0x87)
        ),
        "{answer:?}"
    );
    assert_closed(&mut stream);
    let d = broker.events().k8s_sat_decisions();
    assert!(d[1].reauth && !d[1].accepted, "{d:?}");
}

#[test]
fn plugin_kicks_a_client_whose_token_expires_while_connected() {
    let broker = Broker::start_k8s_sat(&fake_jwt(3600));
    let token = fake_jwt(2);
    let exp = jwt_exp(&token).unwrap();
    broker.allow_k8s_token(&token);
    let (mut stream, answer) = k8s_connect(&broker, "k8s-expiring", &token);
    assert_eq!(answer.reason(), 0x00);

    let answer = read_packet(&mut stream, Duration::from_secs(6)).unwrap();
    let at = unix_now();
    assert_eq!(
        (answer.kind(), answer.reason()),
        (PacketType::Disconnect, 0x98)
    );
    assert!(
        (exp..=exp + 2).contains(&at),
        "kicked at {at}, the token's exp is {exp}"
    );
    assert_closed(&mut stream);
    assert_eq!(broker.events().k8s_sat_kicks("k8s-expiring"), 1);
}

#[test]
fn password_clients_still_log_in_next_to_the_plugin() {
    let broker = Broker::start_k8s_sat(&fake_jwt(3600));
    let subscriber = Subscriber::start(&broker, "fixtures/mixed");
    let token = fake_jwt(3600);
    broker.allow_k8s_token(&token);
    let (mut stream, answer) = k8s_connect(&broker, "k8s-pub", &token);
    assert_eq!(answer.reason(), 0x00);
    send(
        &mut stream,
        &publish("fixtures/mixed", b"via-k8s-sat", 1, 1),
    );
    assert_eq!(next(&mut stream).kind(), PacketType::Puback);
    assert_eq!(subscriber.sync(READ), vec!["via-k8s-sat".to_string()]);
    // The plugin only saw the K8S-SAT client: password clients never reach EXT_AUTH.
    let d = broker.events().k8s_sat_decisions();
    assert_eq!(d.len(), 1, "{d:?}");
}

// ---- the fake broker ----

fn connack_ok() -> Vec<u8> {
    connack(0, false, &ConnackProps::default())
}

#[test]
fn fake_broker_answers_connack_then_closes_and_records_the_connect() {
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            Step::Send(connack_ok()),
            Step::Close,
        ]
    });
    let mut stream = dial(fake.port());
    let hello = connect_k8s_sat("fake-1", 30, b"tok");
    send(&mut stream, &hello);
    let answer = next(&mut stream);
    assert_eq!(answer.raw, connack_ok());
    assert_closed(&mut stream);
    drop(stream);
    assert_eq!(fake.wait_for_script(0, READ), Ok(()));
    let log = fake.connection(0).unwrap();
    assert_eq!(log.packets.len(), 1);
    assert_eq!(log.packets[0].packet.raw, hello);
    assert!(fake.wait_for_client_close(0, READ).is_some());
}

#[test]
fn fake_broker_keeps_recording_after_the_script_ends() {
    // "CONNACK never sent": the script ends after the CONNECT, the connection stays open.
    let fake = FakeBroker::start_same(|| vec![Step::Expect(PacketType::Connect)]);
    let mut stream = dial(fake.port());
    send(&mut stream, &connect_k8s_sat("fake-silent", 30, b"tok"));
    assert_eq!(fake.wait_for_script(0, READ), Ok(()));
    send(&mut stream, &[0xC0, 0x00]);
    let ping = fake.wait_for_client_packet(0, PacketType::Pingreq, READ);
    assert_eq!(ping.map(|p| p.packet.raw), Some(vec![0xC0, 0x00]));
    assert_eq!(fake.connection(0).unwrap().client_closed_at, None);
    drop(stream);
    assert!(fake.wait_for_client_close(0, READ).is_some());
}

#[test]
fn fake_broker_reports_an_unexpected_packet() {
    let fake = FakeBroker::start_same(|| vec![Step::Expect(PacketType::Connect)]);
    let mut stream = dial(fake.port());
    send(&mut stream, &mqtt::pingresp());
    let error = fake.wait_for_script(0, READ).unwrap_err();
    assert!(error.contains("expected Connect, got Pingresp"), "{error}");
}

#[test]
fn fake_broker_resets_mid_packet() {
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            Step::Send(connack_ok()[..2].to_vec()),
            Step::Reset,
        ]
    });
    let mut stream = dial(fake.port());
    send(&mut stream, &connect_k8s_sat("fake-rst", 30, b"tok"));
    let error = read_packet(&mut stream, READ).unwrap_err();
    assert!(error.contains("Connection reset"), "{error}");
}

#[test]
fn fake_broker_trickles_one_byte_per_delay() {
    let delay = Duration::from_millis(100);
    let fake = FakeBroker::start_same(move || {
        vec![
            Step::Expect(PacketType::Connect),
            Step::Trickle {
                bytes: connack_ok(),
                delay,
            },
        ]
    });
    let mut stream = dial(fake.port());
    send(&mut stream, &connect_k8s_sat("fake-slow", 30, b"tok"));
    stream.set_read_timeout(Some(READ)).unwrap();
    let mut arrivals = Vec::new();
    let mut got = Vec::new();
    while got.len() < connack_ok().len() {
        let mut chunk = [0u8; 16];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "EOF during the trickle");
        got.extend_from_slice(&chunk[..n]);
        arrivals.push((Instant::now(), n));
    }
    assert_eq!(got, connack_ok());
    assert!(arrivals.iter().all(|(_, n)| *n == 1), "{arrivals:?}");
    let spread = arrivals.last().unwrap().0 - arrivals[0].0;
    let gaps = u32::try_from(connack_ok().len() - 1).unwrap();
    assert!(spread >= delay * gaps, "the bytes came within {spread:?}");
}

#[test]
fn fake_broker_counts_connections_and_stops_when_dropped() {
    let fake = FakeBroker::start_same(|| vec![Step::Close]);
    for _ in 0..3 {
        let mut stream = dial(fake.port());
        assert_closed(&mut stream);
    }
    assert!(fake.wait_for_connections(3, READ));
    let times = fake.accept_times();
    assert_eq!(times.len(), 3);
    assert!(times.windows(2).all(|w| w[0] <= w[1]));

    // A script that would wait for a minute does not hold up the drop.
    let slow = FakeBroker::start_same(|| vec![Step::Wait(Duration::from_secs(60))]);
    let _stream = dial(slow.port());
    assert!(slow.wait_for_connections(1, READ));
    let start = Instant::now();
    drop(slow);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn fake_broker_forwards_to_mosquitto_and_tampers_on_the_way() {
    let token = fake_jwt(3600);
    let broker = Broker::start(&token);
    let subscriber = Subscriber::start(&broker, "fixtures/mitm");
    let upstream = format!("{}:{}", Broker::HOST, broker.port())
        .parse()
        .unwrap();
    let fake = FakeBroker::start(move |n| {
        let tamper = match n {
            0 => tamper::insert_after_first(PacketType::Connack, puback(77, 0)),
            _ => tamper::swap_first_two_pubacks(),
        };
        vec![Step::Proxy {
            upstream,
            tamper: Some(tamper),
        }]
    });
    let hello = |id: &str| connect(id, 60, Some(SAT_USERNAME), Some(token.as_bytes()), &[]);

    // Connection 0: a PUBACK for nothing in flight right after the real CONNACK.
    let mut stream = dial(fake.port());
    send(&mut stream, &hello("mitm-0"));
    let answer = next(&mut stream);
    assert_eq!((answer.kind(), answer.reason()), (PacketType::Connack, 0));
    assert_eq!(next(&mut stream).raw, puback(77, 0));
    send(
        &mut stream,
        &publish("fixtures/mitm", b"through-the-proxy", 1, 1),
    );
    assert_eq!(next(&mut stream).kind(), PacketType::Puback);
    drop(stream);

    // Connection 1: the real PUBACKs of 1 and 2 arrive as 2, 1.
    let mut stream = dial(fake.port());
    send(&mut stream, &hello("mitm-1"));
    assert_eq!(next(&mut stream).kind(), PacketType::Connack);
    send(&mut stream, &publish("fixtures/mitm", b"first", 1, 1));
    send(&mut stream, &publish("fixtures/mitm", b"second", 1, 2));
    let ids: Vec<u8> = (0..2).map(|_| next(&mut stream).raw[3]).collect();
    assert_eq!(ids, vec![2, 1]);

    assert_eq!(
        subscriber.sync(READ),
        vec!["through-the-proxy", "first", "second"]
    );
    let log = fake.connection(1).unwrap();
    let kinds: Vec<PacketType> = log.packets.iter().map(|p| p.kind()).collect();
    assert_eq!(
        kinds,
        vec![
            PacketType::Connect,
            PacketType::Publish,
            PacketType::Publish
        ]
    );
    assert_eq!(broker.events().connects("mitm-0").len(), 1);
    assert_eq!(fake.script_errors(), vec![]);
}
