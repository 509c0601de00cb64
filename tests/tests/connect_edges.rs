//! Connection attempts as an operator sees them: one TCP connect per attempt, a stop request that
//! ends a connect stuck on a blackholed port at once, and no CPU spent while a full QoS 1 window
//! waits on a stalled broker.

use std::fs;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use satmqtt_tests::fake_broker::{FakeBroker, Step};
use satmqtt_tests::mqtt::{self, ConnackProps, PacketType};
use satmqtt_tests::{fake_jwt, Publisher, TokenDir};

const PATIENCE: Duration = Duration::from_secs(20);

fn token_dir() -> TokenDir {
    let tokens = TokenDir::new();
    tokens.write(&fake_jwt(3600));
    tokens
}

fn closed_port() -> u16 {
    // Bound, then released: nothing listens there for the rest of the test.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connect to it
/// hangs in SYN retransmissions exactly as against a blackholed address.
struct Blackhole {
    _listener: socket2::Socket,
    _queued: Vec<socket2::Socket>,
    addr: SocketAddr,
}

impl Blackhole {
    fn new() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        listener
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind");
        listener.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        // Backlog 0 still queues one; a few more make sure the queue is full.
        let mut queued = Vec::new();
        for _ in 0..4 {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            s.set_nonblocking(true).expect("nonblocking");
            let _ = s.connect(&addr.into());
            queued.push(s);
        }
        std::thread::sleep(Duration::from_millis(100));
        Blackhole {
            _listener: listener,
            _queued: queued,
            addr,
        }
    }
}

/// `connect(…)` lines for `port` in an strace output file.
fn connects_to(trace: &str, port: u16) -> usize {
    let needle = format!("sin_port=htons({port})");
    trace
        .lines()
        .filter(|l| l.contains("connect(") && l.contains(&needle))
        .count()
}

#[test]
fn every_attempt_against_a_closed_port_is_one_tcp_connect() {
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is missing: apt-get install -y strace (cargo xtask test installs it)");
    }
    let tokens = token_dir();
    let port = closed_port();
    let mut publisher = Publisher::builder()
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .token_file(tokens.path())
        .args(["--backoff-floor-ms", "50", "--backoff-cap-ms", "200"])
        .spawn();
    let trace_file = tempfile::NamedTempFile::new().expect("temp file");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=connect", "-o"])
        .arg(trace_file.path())
        .args(["-p", &publisher.id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning strace");
    std::thread::sleep(Duration::from_secs(3));
    let failures_before_stop = publisher
        .stderr()
        .lines()
        .filter(|l| l.contains("disconnected:") && l.contains("(attempt "))
        .count();
    // SIGINT makes strace detach and write out what it saw; then the publisher stops.
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();
    publisher.signal(Signal::SIGTERM);
    let status = publisher
        .wait_timeout(PATIENCE)
        .expect("publisher did not stop");
    assert!(status.success(), "{}", publisher.describe());

    let trace = fs::read_to_string(trace_file.path()).expect("reading the trace");
    let connects = connects_to(&trace, port);
    assert!(
        failures_before_stop >= 5,
        "too few attempts in 3 s with a 50 ms floor\n{}",
        publisher.describe()
    );
    // The trace starts a little after the publisher and ends a little after the count: every
    // logged attempt made one connect(2), give or take the attempts at either end. Two connects
    // per attempt (the old engine) would be twice the count.
    assert!(
        connects <= failures_before_stop + 2 && connects + 3 >= failures_before_stop,
        "{connects} connect(2) calls for {failures_before_stop} logged attempts\n{trace}\n{}",
        publisher.describe()
    );
}

#[test]
fn a_stop_request_ends_a_connect_stuck_on_a_blackholed_port_at_once() {
    let hole = Blackhole::new();
    let tokens = token_dir();
    let mut publisher = Publisher::builder()
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &hole.addr.port().to_string(),
        ])
        .token_file(tokens.path())
        .args(["--connect-timeout-ms", "30000", "--log-level", "debug"])
        .spawn();
    let deadline = Instant::now() + PATIENCE;
    while !publisher.stderr().contains("connecting to") {
        assert!(
            Instant::now() < deadline,
            "no connection attempt logged\n{}",
            publisher.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Well inside the attempt: the SYN is unanswered.
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    publisher.signal(Signal::SIGTERM);
    let status = publisher
        .wait_timeout(PATIENCE)
        .expect("publisher did not stop");
    let took = signalled.elapsed();
    eprintln!("SIGTERM during a blackholed connect: exited after {took:?}");
    assert!(status.success(), "{}", publisher.describe());
    // The shipped grace period is 10 s; a stop must not wait for the 30 s connect timeout. The
    // bound is generous for a loaded machine: the wait itself ends at the signal.
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} to stop\n{}",
        publisher.describe()
    );
    assert!(
        !publisher.stderr().contains("(attempt 2)"),
        "a new connect began after the stop\n{}",
        publisher.describe()
    );
}

/// User plus system CPU time of a process, in clock ticks (`/proc/<pid>/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> u64 {
    let mut stat = String::new();
    fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read_to_string(&mut stat))
        .unwrap_or_else(|e| match e.kind() {
            ErrorKind::NotFound => panic!("process {pid} is gone"),
            _ => panic!("reading /proc/{pid}/stat: {e}"),
        });
    // The command name may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

#[test]
fn a_full_window_on_a_stalled_broker_costs_no_cpu() {
    // CONNACK with Receive Maximum 10, then silence: the window fills and nothing ever comes.
    let broker = FakeBroker::start_same(|| {
        let props = ConnackProps {
            receive_maximum: Some(10),
            ..ConnackProps::default()
        };
        vec![
            Step::Expect(PacketType::Connect),
            Step::Send(mqtt::connack(0x00, false, &props)),
            Step::Wait(Duration::from_secs(60)),
        ]
    });
    let tokens = token_dir();
    let mut publisher = Publisher::builder()
        .args(["--host", "127.0.0.1", "--port", &broker.port().to_string()])
        .token_file(tokens.path())
        .args(["--interval-ms", "0", "--keepalive-s", "60"])
        .spawn();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let published = broker
            .connection(0)
            .map_or(0, |c| c.packets_of(PacketType::Publish).len());
        if published >= 10 {
            assert_eq!(published, 10, "more than the window in flight");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the window never filled\n{}",
            publisher.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = cpu_ticks(publisher.id());
    std::thread::sleep(Duration::from_secs(5));
    let spent = cpu_ticks(publisher.id()) - before;
    let ticks_per_s = 100; // USER_HZ on Linux
    eprintln!(
        "CPU over 5 s with a full window and a stalled broker: {} ms",
        spent * 1000 / ticks_per_s
    );
    assert!(
        spent * 1000 / ticks_per_s <= 50,
        "{spent} ticks of CPU in 5 s: busy waiting\n{}",
        publisher.describe()
    );
    let published = broker
        .connection(0)
        .map_or(0, |c| c.packets_of(PacketType::Publish).len());
    assert_eq!(
        published, 10,
        "the window grew while nothing was acknowledged"
    );
    publisher.kill();
}
