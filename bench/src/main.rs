//! `satmqtt-bench`: runs every measurement of `cargo xtask bench` and writes the report.
//!
//! ```text
//! satmqtt-bench run [--count N] [--reps R] [--paho PATH] [--note TEXT]... [--root DIR]
//!                   [--variant LABEL=PATH]... [--only-throughput] [--only TEXT]
//! satmqtt-bench rusage FILE -- PROGRAM ARGS...      (the measuring wrapper, see `proc`)
//! ```
//!
//! The clients (`pod-publisher`, `raw-pub`, `rumqttc-pub`, `alloc-count`) are looked up next to
//! this executable, so build them in the same profile first (xtask does). `--variant` adds
//! throughput rows for another `pod-publisher` binary (e.g. a build of an older commit), for
//! before/after comparisons; `--only-throughput` skips everything else. `--only TEXT` runs just
//! the throughput rows whose label or key contains TEXT (case-insensitive), prints them and
//! leaves the docs alone (e.g. `--only TLS --reps 1`).

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use satmqtt_bench::mosq::Mosquitto;
use satmqtt_bench::proc::{self, cpu_ns};
use satmqtt_bench::report::{
    self, Allocs, Meta, RateRow, RateSample, Restart, Results, Rotation, Syscalls, Throughput,
    TpSample,
};
use satmqtt_bench::subscriber::Subscriber;
use satmqtt_tests::tools::find_program;
use satmqtt_tests::{
    fake_jwt, Broker, TestPki, TokenDir, SUBSCRIBER_PASSWORD, SUBSCRIBER_USERNAME,
};

const PREFIX: &str = "samplepayload";
/// Longest a single throughput run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("rusage") => proc::wrapper_main(&args[1..]),
        Some("run") => match Options::parse(&args[1..]).and_then(run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("satmqtt-bench: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: satmqtt-bench run [--count N] [--reps R] [--paho PATH] [--note TEXT]... \
                 [--root DIR] [--variant LABEL=PATH]... [--only-throughput] [--only TEXT]"
            );
            ExitCode::from(2)
        }
    }
}

struct Options {
    count: u64,
    reps: usize,
    paho: Option<PathBuf>,
    notes: Vec<String>,
    root: PathBuf,
    variants: Vec<(String, PathBuf)>,
    only_throughput: bool,
    /// Run only the throughput rows matching this (lowercased), and write no docs.
    only: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut o = Options {
            count: 100_000,
            reps: 3,
            paho: None,
            notes: Vec::new(),
            root: manifest.parent().unwrap_or(manifest).to_path_buf(),
            variants: Vec::new(),
            only_throughput: false,
            only: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--only-throughput" {
                o.only_throughput = true;
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--count" => o.count = value.parse().map_err(|e| format!("--count: {e}"))?,
                "--reps" => o.reps = value.parse().map_err(|e| format!("--reps: {e}"))?,
                "--paho" => o.paho = Some(value.into()),
                "--note" => o.notes.push(value.clone()),
                "--root" => o.root = value.into(),
                "--only" => o.only = Some(value.to_lowercase()),
                "--variant" => {
                    let (label, path) = value
                        .split_once('=')
                        .ok_or("--variant takes LABEL=PATH to a pod-publisher binary")?;
                    o.variants.push((label.to_owned(), path.into()));
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if o.count < 100 || o.reps == 0 {
            return Err("--count must be at least 100 and --reps at least 1".into());
        }
        Ok(o)
    }
}

/// Paths and shared state of one bench run.
struct Env {
    wrapper: PathBuf,
    bin_dir: PathBuf,
    paho: Option<PathBuf>,
    mosquitto_pub: Option<PathBuf>,
    work: tempfile::TempDir,
    token: String,
    tokens: TokenDir,
    /// `samplepayload0\n..` for mosquitto_pub -l.
    lines: PathBuf,
    /// The tests' certificates; the broker's TLS listener uses them.
    pki: TestPki,
    /// The broker's TLS listener (server certificate for localhost), once it runs.
    tls_port: Option<u16>,
}

impl Env {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

/// The measured clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Satmqtt,
    /// pod-publisher over TLS to the broker's TLS listener (the subscriber stays on plain).
    SatmqttTls,
    Raw,
    Rumqttc,
    Paho,
    MosquittoPub,
}

/// One throughput configuration.
#[derive(Clone)]
struct Client {
    key: &'static str,
    label: &'static str,
    kind: Kind,
    qos: u8,
    window: Option<u16>,
    shown_window: &'static str,
    /// Another pod-publisher binary (a `--variant`).
    program: Option<PathBuf>,
}

const CLIENTS: &[Client] = &[
    Client {
        key: "satmqtt-q0",
        label: "satmqtt pod-publisher",
        kind: Kind::Satmqtt,
        qos: 0,
        window: None,
        shown_window: "—",
        program: None,
    },
    Client {
        key: "satmqtt-tls-q0",
        label: "satmqtt pod-publisher (TLS)",
        kind: Kind::SatmqttTls,
        qos: 0,
        window: None,
        shown_window: "—",
        program: None,
    },
    Client {
        key: "raw-q0",
        label: "raw (the limit)",
        kind: Kind::Raw,
        qos: 0,
        window: None,
        shown_window: "—",
        program: None,
    },
    Client {
        key: "rumqttc-q0",
        label: "rumqttc",
        kind: Kind::Rumqttc,
        qos: 0,
        window: None,
        shown_window: "—",
        program: None,
    },
    Client {
        key: "paho-q0",
        label: "Paho C (MQTTClient)",
        kind: Kind::Paho,
        qos: 0,
        window: None,
        shown_window: "—",
        program: None,
    },
    Client {
        key: "mosquitto_pub-q0",
        label: "mosquitto_pub -l",
        kind: Kind::MosquittoPub,
        qos: 0,
        window: None,
        shown_window: "—",
        program: None,
    },
    Client {
        key: "satmqtt-q1",
        label: "satmqtt pod-publisher",
        kind: Kind::Satmqtt,
        qos: 1,
        window: None,
        shown_window: "10",
        program: None,
    },
    Client {
        key: "satmqtt-tls-q1",
        label: "satmqtt pod-publisher (TLS)",
        kind: Kind::SatmqttTls,
        qos: 1,
        window: None,
        shown_window: "10",
        program: None,
    },
    Client {
        key: "raw-q1",
        label: "raw (the limit)",
        kind: Kind::Raw,
        qos: 1,
        window: None,
        shown_window: "20 (RM)",
        program: None,
    },
    Client {
        key: "raw-q1-w10",
        label: "raw, window 10",
        kind: Kind::Raw,
        qos: 1,
        window: Some(10),
        shown_window: "10",
        program: None,
    },
    Client {
        key: "rumqttc-q1",
        label: "rumqttc",
        kind: Kind::Rumqttc,
        qos: 1,
        window: None,
        shown_window: "20 (RM)",
        program: None,
    },
    Client {
        key: "paho-q1",
        label: "Paho C (MQTTClient)",
        kind: Kind::Paho,
        qos: 1,
        window: Some(20),
        shown_window: "20",
        program: None,
    },
    Client {
        key: "mosquitto_pub-q1",
        label: "mosquitto_pub -l",
        kind: Kind::MosquittoPub,
        qos: 1,
        window: None,
        shown_window: "20",
        program: None,
    },
];

/// A job for one client process.
struct Job<'a> {
    port: u16,
    topic: &'a str,
    client_id: &'a str,
    qos: u8,
    count: u64,
    interval_ms: u64,
    window: Option<u16>,
}

/// The command line for `kind` doing `job`, and its stdin; None when the client is missing.
fn command(
    env: &Env,
    kind: Kind,
    program: Option<&Path>,
    job: &Job<'_>,
) -> Option<(Command, Stdio)> {
    let token_file = env.tokens.path();
    // The TLS rows dial the broker's TLS listener; everything else (and every subscriber) the
    // plain one.
    let port = match kind {
        Kind::SatmqttTls => env.tls_port?,
        _ => job.port,
    };
    let common = |program: PathBuf| {
        let mut c = Command::new(program);
        c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--token-file")
            .arg(&token_file)
            .args(["--client-id", job.client_id, "--topic", job.topic])
            .args([
                "--qos",
                &job.qos.to_string(),
                "--count",
                &job.count.to_string(),
            ])
            .args(["--interval-ms", &job.interval_ms.to_string()]);
        c
    };
    let mut c = match kind {
        Kind::Satmqtt => {
            let mut c = common(program.map_or_else(|| env.bin("pod-publisher"), Path::to_path_buf));
            c.args(["--stats-interval-s", "0"]);
            c
        }
        Kind::SatmqttTls => {
            let mut c = common(env.bin("pod-publisher"));
            // Trusting the tests' CA; its server certificate names localhost and 127.0.0.1.
            c.arg("--tls")
                .arg("--ca-file")
                .arg(env.pki.ca_file())
                .args(["--server-name", "localhost", "--stats-interval-s", "0"]);
            c
        }
        Kind::Raw => common(env.bin("raw-pub")),
        Kind::Rumqttc => common(env.bin("rumqttc-pub")),
        Kind::Paho => common(env.paho.clone()?),
        Kind::MosquittoPub => {
            // Lines come through a pipe the bench keeps open until everything is delivered:
            // at end of input mosquitto_pub 2.0.11 disconnects with QoS 1 messages still
            // queued (measured: 34 467 of 100 000 delivered).
            let mut c = Command::new(env.mosquitto_pub.clone()?);
            c.args([
                "-h",
                "127.0.0.1",
                "-p",
                &job.port.to_string(),
                "-V",
                "mqttv5",
            ])
            .args(["-u", "$sat", "-P", &env.token, "-i", job.client_id])
            .args(["-t", job.topic, "-q", &job.qos.to_string(), "-l"]);
            return Some((c, Stdio::piped()));
        }
    };
    if let Some(w) = job.window {
        c.args(["--window", &w.to_string()]);
    }
    Some((c, Stdio::null()))
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn broker_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn sub_auth() -> (&'static str, &'static str) {
    (SUBSCRIBER_USERNAME, SUBSCRIBER_PASSWORD)
}

fn throughput_run(
    env: &Env,
    port: u16,
    client: &Client,
    rep: usize,
    count: u64,
) -> Result<TpSample, String> {
    let topic = format!("bench/{}/{rep}", client.key);
    let client_id = format!("bench-{}-{rep}", client.key);
    let job = Job {
        port,
        topic: &topic,
        client_id: &client_id,
        qos: client.qos,
        count,
        interval_ms: 0,
        window: client.window,
    };
    let (cmd, stdin) =
        command(env, client.kind, client.program.as_deref(), &job).ok_or("client not installed")?;
    let sub = Subscriber::start(
        broker_addr(port),
        sub_auth(),
        &topic,
        client.qos,
        PREFIX,
        count,
    )
    .map_err(|e| format!("subscriber: {e}"))?;
    let log = env.file(&format!("{}-{rep}.log", client.key));
    let stderr = fs::File::create(&log).map_err(|e| e.to_string())?;
    let usage_file = env.file(&format!("{}-{rep}.usage", client.key));
    let m = proc::spawn(
        &env.wrapper,
        &usage_file,
        &cmd,
        [stdin, Stdio::null(), Stdio::from(stderr)],
        client.label,
    )
    .map_err(|e| format!("spawn: {e}"))?;
    let mut m = m;
    let started = m.started();
    if let Some(mut stdin) = m.stdin.take() {
        // mosquitto_pub -l: feed the lines, close stdin only once everything arrived.
        let lines = fs::read(&env.lines).map_err(|e| e.to_string())?;
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&lines);
            stdin
        });
        sub.wait_for(count, Duration::from_secs(5), RUN_TIMEOUT);
        drop(feeder.join());
    }
    let (exited, usage) = m.wait(RUN_TIMEOUT)?;
    if usage.code != 0 {
        return Err(format!("exit code {}: {}", usage.code, tail(&log)));
    }
    sub.wait_for(count, Duration::from_secs(2), Duration::from_secs(60));
    let tally = sub.finish().map_err(|e| format!("subscriber: {e}"))?;
    let last = tally.last.unwrap_or(exited).max(started);
    let e2e_s = last.duration_since(started).as_secs_f64().max(1e-9);
    Ok(TpSample {
        e2e: tally.distinct as f64 / e2e_s,
        client: count as f64 / exited.duration_since(started).as_secs_f64().max(1e-9),
        cpu_s: usage.cpu().as_secs_f64(),
        rss_kib: usage.max_rss_kib,
        delivered: tally.distinct,
        duplicates: tally.duplicates,
        count,
    })
}

/// Fixed-rate runs: three clients at 100/s and at 1/s, all six at once (the load is tiny),
/// QoS 1. CPU is sampled from the scheduler after start-up and again near the end.
fn rate_round(env: &Env, port: u16, rep: usize, rows: &mut [RateRow]) {
    struct Live {
        row: usize,
        sub: Subscriber,
        m: proc::Measured,
        pid: Option<u32>,
        first: Option<(u64, u64)>,
        last: Option<(u64, u64)>,
        count: u64,
        end_at: Duration,
    }
    const WARM: Duration = Duration::from_millis(2_500);
    let mut live = Vec::new();
    for (i, row) in rows.iter_mut().enumerate() {
        let kind = match row.key {
            "satmqtt" => Kind::Satmqtt,
            "rumqttc" => Kind::Rumqttc,
            _ => Kind::Paho,
        };
        // 100/s for 10 s; 1/s for 21 messages (20 s), so the process still runs at 19.5 s.
        let (interval_ms, count, end_at) = if row.rate == 100 {
            (10, 1_000, Duration::from_millis(9_500))
        } else {
            (1_000, 21, Duration::from_millis(19_500))
        };
        let topic = format!("bench/rate/{}/{}/{rep}", row.key, row.rate);
        let client_id = format!("bench-rate-{}-{}-{rep}", row.key, row.rate);
        let job = Job {
            port,
            topic: &topic,
            client_id: &client_id,
            qos: 1,
            count,
            interval_ms,
            window: None,
        };
        let Some((cmd, stdin)) = command(env, kind, None, &job) else {
            continue;
        };
        let sub = match Subscriber::start(broker_addr(port), sub_auth(), &topic, 1, PREFIX, count) {
            Ok(s) => s,
            Err(e) => {
                row.errors.push(format!("subscriber: {e}"));
                continue;
            }
        };
        let name = format!("{}-{}-{rep}", row.key, row.rate);
        let stderr = match fs::File::create(env.file(&format!("rate-{name}.log"))) {
            Ok(f) => f,
            Err(e) => {
                row.errors.push(e.to_string());
                continue;
            }
        };
        match proc::spawn(
            &env.wrapper,
            &env.file(&format!("rate-{name}.usage")),
            &cmd,
            [stdin, Stdio::null(), Stdio::from(stderr)],
            row.label,
        ) {
            Ok(m) => live.push(Live {
                row: i,
                sub,
                m,
                pid: None,
                first: None,
                last: None,
                count,
                end_at,
            }),
            Err(e) => row.errors.push(format!("spawn: {e}")),
        }
    }
    let t0 = live.iter().map(|l| l.m.started()).min();
    let Some(t0) = t0 else {
        return;
    };
    for l in &mut live {
        l.pid = l.m.pid();
    }
    let sample = |l: &Live| Some((cpu_ns(l.pid?)?, l.sub.distinct()));
    sleep_until(t0 + WARM);
    for l in &mut live {
        l.first = sample(l);
    }
    let mut ends: Vec<Duration> = live.iter().map(|l| l.end_at).collect();
    ends.sort();
    ends.dedup();
    for end in ends {
        sleep_until(t0 + end);
        for l in live.iter_mut().filter(|l| l.end_at == end) {
            l.last = sample(l);
        }
    }
    for l in live {
        let row = &mut rows[l.row];
        let finished = l.m.wait(Duration::from_secs(30));
        l.sub
            .wait_for(l.count, Duration::from_secs(2), Duration::from_secs(10));
        let tally = l.sub.finish();
        let result = (|| -> Result<RateSample, String> {
            let (_, usage) = finished?;
            if usage.code != 0 {
                return Err(format!(
                    "{} at {}/s exited {}",
                    row.label, row.rate, usage.code
                ));
            }
            let tally = tally.map_err(|e| e.to_string())?;
            if tally.distinct != l.count {
                return Err(format!(
                    "{} at {}/s: {} of {} delivered",
                    row.label, row.rate, tally.distinct, l.count
                ));
            }
            let ((c0, d0), (c1, d1)) = l.first.zip(l.last).ok_or("no CPU samples")?;
            if d1 <= d0 {
                return Err("no messages between the CPU samples".into());
            }
            Ok(RateSample {
                steady: (c1 - c0) as f64 / 1e9 / (d1 - d0) as f64 * 1000.0,
                total: usage.cpu().as_secs_f64() / l.count as f64 * 1000.0,
                rss_kib: usage.max_rss_kib,
            })
        })();
        match result {
            Ok(s) => row.samples.push(s),
            Err(e) => row.errors.push(e),
        }
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn alloc_run(env: &Env, port: u16, qos: u8, count: u64) -> Result<Allocs, String> {
    let client_id = format!("bench-alloc-q{qos}");
    let out = Command::new(env.bin("alloc-count"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--token-file")
        .arg(env.tokens.path())
        .args(["--client-id", &client_id, "--topic", "bench/alloc"])
        .args(["--qos", &qos.to_string(), "--count", &count.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("alloc-count: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "alloc-count failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("alloc-count printed no `{key}`"))
    };
    Ok(Allocs {
        qos,
        messages: get("messages ")?,
        allocations: get("allocations ")?,
        bytes: get("bytes ")?,
        run_allocations: get("run_allocations ")?,
    })
}

/// pod-publisher's log lines: (UTC time, message).
fn log_lines(path: &Path) -> Vec<(SystemTime, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (stamp, rest) = l.split_once(' ')?;
            Some((humantime::parse_rfc3339(stamp).ok()?, rest.to_owned()))
        })
        .collect()
}

fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn rotation(env: &Env) -> Result<Rotation, String> {
    let broker = Mosquitto::start("")?;
    let tokens = TokenDir::new();
    tokens.write(&fake_jwt(3600));
    let count = 450;
    let topic = "bench/rotation";
    let sub = Subscriber::start(
        broker_addr(broker.port()),
        ("any", "any"),
        topic,
        1,
        PREFIX,
        count,
    )
    .map_err(|e| format!("subscriber: {e}"))?;
    let log = env.file("rotation.log");
    let child = Command::new(env.bin("pod-publisher"))
        .args(["--host", "127.0.0.1", "--port", &broker.port().to_string()])
        .arg("--token-file")
        .arg(tokens.path())
        .args([
            "--client-id",
            "bench-rotation",
            "--topic",
            topic,
            "--qos",
            "1",
        ])
        .args(["--interval-ms", "10", "--count", &count.to_string()])
        .args(["--stats-interval-s", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("pod-publisher: {e}"))?;
    let mut child = Reaped(child);
    let start = Instant::now();
    let mut written = Vec::new();
    for k in 1..=3u64 {
        sleep_until(start + Duration::from_millis(1_000 * k));
        tokens.write(&fake_jwt(3600));
        written.push(SystemTime::now());
    }
    let status = wait_child(&mut child.0, Duration::from_secs(30))?;
    if !status.success() {
        return Err(format!("pod-publisher exited {status}: {}", tail(&log)));
    }
    sub.wait_for(count, Duration::from_secs(2), Duration::from_secs(10));
    let tally = sub.finish().map_err(|e| e.to_string())?;
    let mut r = Rotation {
        count,
        delivered: tally.distinct,
        duplicates: tally.duplicates,
        ..Rotation::default()
    };
    let resumed: Vec<(SystemTime, f64)> = log_lines(&log)
        .into_iter()
        .filter_map(|(at, msg)| {
            let ms = msg
                .split("publishing resumed after ")
                .nth(1)?
                .trim_end_matches(" ms")
                .parse()
                .ok()?;
            Some((at, ms))
        })
        .collect();
    for (i, w) in written.iter().enumerate() {
        let next = written.get(i + 1).copied();
        if let Some((at, gap)) = resumed
            .iter()
            .find(|(at, _)| *at >= *w - Duration::from_millis(1) && next.is_none_or(|n| *at < n))
        {
            r.gap_ms.push(*gap);
            r.write_to_publish_ms.push(ms_between(*w, *at));
        }
    }
    if r.gap_ms.len() != written.len() {
        return Err(format!(
            "{} token writes but {} rotations logged: {}",
            written.len(),
            r.gap_ms.len(),
            tail(&log)
        ));
    }
    Ok(r)
}

fn restart(env: &Env) -> Result<Restart, String> {
    let mut broker = Mosquitto::start("")?;
    let tokens = TokenDir::new();
    tokens.write(&fake_jwt(3600));
    let count = 600;
    let log = env.file("restart.log");
    let child = Command::new(env.bin("pod-publisher"))
        .args(["--host", "127.0.0.1", "--port", &broker.port().to_string()])
        .arg("--token-file")
        .arg(tokens.path())
        .args([
            "--client-id",
            "bench-restart",
            "--topic",
            "bench/restart",
            "--qos",
            "1",
        ])
        .args(["--interval-ms", "10", "--count", &count.to_string()])
        .args(["--stats-interval-s", "0", "--log-level", "trace"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("pod-publisher: {e}"))?;
    let mut child = Reaped(child);
    let start = Instant::now();
    let mut events = Vec::new();
    for k in 0..3u64 {
        sleep_until(start + Duration::from_millis(1_000 + 1_500 * k));
        let down = SystemTime::now();
        broker.restart()?;
        events.push((down, SystemTime::now()));
    }
    let status = wait_child(&mut child.0, Duration::from_secs(60))?;
    let lines = log_lines(&log);
    let acked = lines
        .iter()
        .rev()
        .find_map(|(_, m)| {
            m.split("acknowledged ")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    if !status.success() {
        return Err(format!("pod-publisher exited {status}: {}", tail(&log)));
    }
    let mut r = Restart {
        acked,
        count,
        ..Restart::default()
    };
    for (down, up) in events {
        let first_ack = lines
            .iter()
            .find(|(at, m)| *at >= up && m.contains("acknowledged through"))
            .map(|(at, _)| *at);
        if let Some(at) = first_ack {
            r.up_to_ack_ms.push(ms_between(up, at));
            r.down_to_ack_ms.push(ms_between(down, at));
        }
    }
    Ok(r)
}

/// Kills and reaps on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus, String> {
    satmqtt_tests::wait::wait_until(timeout, || child.try_wait().ok().flatten())
        .ok_or_else(|| format!("still running after {timeout:?}"))
}

/// `strace -f -c` of one flat-out run per client and QoS.
fn syscalls(env: &Env, port: u16, strace: &Path, count: u64) -> Vec<Syscalls> {
    let mut out = Vec::new();
    for (kind, label) in [
        (Kind::Satmqtt, "satmqtt pod-publisher"),
        (Kind::Raw, "raw (the limit)"),
        (Kind::Rumqttc, "rumqttc"),
        (Kind::Paho, "Paho C (MQTTClient)"),
    ] {
        for qos in [0, 1] {
            let topic = format!("bench/strace/{label}/{qos}");
            let id = format!("bench-strace-{qos}");
            let job = Job {
                port,
                topic: &topic,
                client_id: &id,
                qos,
                count,
                interval_ms: 0,
                window: if kind == Kind::Paho && qos == 1 {
                    Some(20)
                } else {
                    None
                },
            };
            let Some((cmd, _)) = command(env, kind, None, &job) else {
                continue;
            };
            let report = env.file(&format!("strace-{kind:?}-{qos}.txt"));
            let status = Command::new(strace)
                .args(["-f", "-c", "-o"])
                .arg(&report)
                .arg("--")
                .arg(cmd.get_program())
                .args(cmd.get_args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                continue;
            }
            let mut calls: Vec<(String, u64)> = fs::read_to_string(&report)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // % time, seconds, usecs/call, calls, [errors], syscall
                    if f.len() < 5 || f[0].parse::<f64>().is_err() {
                        return None;
                    }
                    let name = *f.last()?;
                    if name == "total" {
                        return None;
                    }
                    Some((name.to_owned(), f[3].parse().ok()?))
                })
                .collect();
            calls.sort_by_key(|c| std::cmp::Reverse(c.1));
            out.push(Syscalls {
                label,
                qos,
                messages: count,
                calls,
            });
        }
    }
    out
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            Some(l.split_once(':')?.1.trim().to_owned()).filter(|_| l.starts_with("model name"))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(find_program(program)?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_owned())
}

fn lock_version(root: &Path, name: &str) -> Option<String> {
    let lock = fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{name}\"") {
            return lines
                .next()?
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_owned);
        }
    }
    None
}

fn utc_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn versions(root: &Path) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some(r) = first_line("rustc", &["-V"]) {
        v.push(("rustc".into(), r.trim_start_matches("rustc ").to_owned()));
    }
    for name in ["minimq", "rumqttc", "tokio"] {
        if let Some(ver) = lock_version(root, name) {
            v.push((name.into(), ver));
        }
    }
    let dpkg = |pkg: &str| first_line("dpkg-query", &["-W", "-f", "${Version}", pkg]);
    if let Some(m) = dpkg("mosquitto") {
        v.push(("mosquitto".into(), m));
    }
    if let Some(m) = dpkg("libpaho-mqtt-dev") {
        v.push(("Paho C (libpaho-mqtt-dev)".into(), m));
    }
    if let Some(m) = dpkg("mosquitto-clients") {
        v.push(("mosquitto_pub (mosquitto-clients)".into(), m));
    }
    if let Some(g) = first_line("gcc", &["--version"]) {
        v.push(("gcc".into(), g));
    }
    v
}

fn run(o: Options) -> Result<(), String> {
    let began = Instant::now();
    let wrapper = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin_dir = wrapper
        .parent()
        .ok_or("executable has no directory")?
        .to_path_buf();
    for name in ["pod-publisher", "raw-pub", "rumqttc-pub", "alloc-count"] {
        if !bin_dir.join(name).exists() {
            return Err(format!(
                "{} is missing: build it first (cargo build --release -p pod-publisher -p satmqtt-bench)",
                bin_dir.join(name).display()
            ));
        }
    }
    let mut notes = o.notes.clone();
    let mosquitto_pub = find_program("mosquitto_pub");
    if mosquitto_pub.is_none() {
        notes.push("mosquitto_pub not installed: its rows are empty".into());
    }
    if o.paho.is_none() {
        notes.push("Paho C was not compiled: its rows are empty".into());
    }
    let token = fake_jwt(3600);
    let tokens = TokenDir::new();
    tokens.write(&token);
    let work = tempfile::Builder::new()
        .prefix("satmqtt-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let lines = work.path().join("lines.txt");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&lines).map_err(|e| e.to_string())?);
        for n in 0..o.count {
            writeln!(f, "{PREFIX}{n}").map_err(|e| e.to_string())?;
        }
        f.flush().map_err(|e| e.to_string())?;
    }
    let mut env = Env {
        wrapper,
        bin_dir,
        paho: o.paho.clone(),
        mosquitto_pub,
        work,
        token,
        tokens,
        lines,
        pki: TestPki::new(),
        tls_port: None,
    };

    // The main broker: the tests' launcher ($sat + token in a password file). Its config has
    // no queue limit knob, so one is appended and loaded with a SIGHUP (the reload that
    // `set_sat_password` performs): unlimited queues, so a QoS 1 burst is never dropped for a
    // subscriber that is a moment behind. max_inflight_messages stays at its default, 20,
    // which is also the Receive Maximum mosquitto advertises to publishers.
    // It also has a TLS listener (the tests' certificates) for the TLS rows.
    let broker = Broker::start_tls(&env.token, &env.pki.listener(false));
    env.tls_port = broker.tls_port();
    let conf = broker.dir().join("mosquitto.conf");
    let mut text = fs::read_to_string(&conf).map_err(|e| e.to_string())?;
    text.push_str("max_queued_messages 0\n");
    fs::write(&conf, text).map_err(|e| e.to_string())?;
    broker.set_sat_password(&env.token);
    let port = broker.port();
    println!(
        "==> mosquitto on 127.0.0.1:{port} ($sat + token, max_queued_messages 0); {} messages per run, {} repetitions",
        o.count, o.reps
    );

    let mut results = Results {
        meta: Meta {
            date: utc_now(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: cpu_model(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            versions: versions(&o.root),
            count: o.count,
            reps: o.reps,
            elapsed: Duration::ZERO,
            notes,
        },
        ..Results::default()
    };
    let mut clients: Vec<Client> = CLIENTS.to_vec();
    for (name, path) in &o.variants {
        // Labels live for the whole run; leaking a few short strings keeps the tables `&'static`.
        let label: &'static str = Box::leak(format!("satmqtt ({name})").into_boxed_str());
        for qos in [0, 1] {
            // The key becomes part of MQTT topics: no wildcards, no spaces.
            let safe: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let key: &'static str = Box::leak(format!("variant-{safe}-q{qos}").into_boxed_str());
            let at = clients
                .iter()
                .rposition(|c| c.qos == qos && c.kind == Kind::Satmqtt)
                .map_or(clients.len(), |i| i + 1);
            clients.insert(
                at,
                Client {
                    key,
                    label,
                    kind: Kind::Satmqtt,
                    qos,
                    window: None,
                    shown_window: if qos == 1 { "10" } else { "—" },
                    program: Some(path.clone()),
                },
            );
        }
    }
    if let Some(only) = &o.only {
        clients.retain(|c| {
            c.label.to_lowercase().contains(only.as_str()) || c.key.contains(only.as_str())
        });
        if clients.is_empty() {
            return Err(format!("--only {only}: no throughput row matches"));
        }
    }
    results.throughput = clients
        .iter()
        .map(|c| Throughput {
            key: c.key,
            label: c.label,
            qos: c.qos,
            window: c.shown_window.to_owned(),
            samples: Vec::new(),
            errors: Vec::new(),
        })
        .collect();

    // Throughput: repetitions interleaved, so a noisy minute hits every client alike.
    for rep in 0..o.reps {
        for (i, client) in clients.iter().enumerate() {
            let missing = match client.kind {
                Kind::Paho => env.paho.is_none(),
                Kind::MosquittoPub => env.mosquitto_pub.is_none(),
                _ => false,
            };
            if missing {
                continue;
            }
            print!(
                "==> [{}/{}] {} QoS {} ... ",
                rep + 1,
                o.reps,
                client.label,
                client.qos
            );
            let _ = std::io::stdout().flush();
            match throughput_run(&env, port, client, rep, o.count) {
                Ok(s) => {
                    println!(
                        "{:.0} msg/s delivered ({} of {}), {:.0} ms CPU, {:.1} MiB",
                        s.e2e,
                        s.delivered,
                        s.count,
                        s.cpu_s * 1e3,
                        s.rss_kib as f64 / 1024.0
                    );
                    results.throughput[i].samples.push(s);
                }
                Err(e) => {
                    println!("failed: {e}");
                    results.throughput[i]
                        .errors
                        .push(format!("run {}: {e}", rep + 1));
                }
            }
        }
    }

    if o.only.is_some() {
        // A partial run: print it, keep docs/benchmarks.md and docs/bench.svg as they are.
        drop(broker);
        results.meta.elapsed = began.elapsed();
        print!("{}", report::text(&results));
        return Ok(());
    }
    if o.only_throughput {
        drop(broker);
        return finish(results, began, &o.root);
    }

    // CPU at a fixed rate.
    let mut rates = Vec::new();
    for rate in [100, 1] {
        rates.push(RateRow {
            key: "satmqtt",
            label: "satmqtt pod-publisher",
            rate,
            samples: Vec::new(),
            errors: Vec::new(),
        });
        rates.push(RateRow {
            key: "rumqttc",
            label: "rumqttc",
            rate,
            samples: Vec::new(),
            errors: Vec::new(),
        });
        if env.paho.is_some() {
            rates.push(RateRow {
                key: "paho",
                label: "Paho C (MQTTClient)",
                rate,
                samples: Vec::new(),
                errors: Vec::new(),
            });
        }
    }
    for rep in 0..o.reps {
        println!(
            "==> [{}/{}] fixed rate, QoS 1: 100 msg/s for 10 s and 1 msg/s for 20 s, all clients at once",
            rep + 1,
            o.reps
        );
        rate_round(&env, port, rep, &mut rates);
    }
    results.rates = rates;

    println!("==> heap allocations per message (alloc-count)");
    for (qos, count) in [(0, o.count * 2), (1, o.count / 2)] {
        match alloc_run(&env, port, qos, count) {
            Ok(a) => results.allocs.push(a),
            Err(e) => results.errors.push(format!("allocations, QoS {qos}: {e}")),
        }
    }
    println!("==> token rotation (a second mosquitto that accepts any password)");
    match rotation(&env) {
        Ok(r) => results.rotation = Some(r),
        Err(e) => results.errors.push(format!("rotation: {e}")),
    }
    println!("==> broker restart on the same port");
    match restart(&env) {
        Ok(r) => results.restart = Some(r),
        Err(e) => results.errors.push(format!("restart: {e}")),
    }
    match find_program("strace") {
        Some(strace) => {
            println!("==> system calls per message (strace -f -c)");
            results.syscalls = syscalls(&env, port, &strace, (o.count / 5).max(100));
        }
        None => results
            .meta
            .notes
            .push("strace not installed: no system call counts".into()),
    }
    drop(broker);
    finish(results, began, &o.root)
}

/// Prints the tables and writes docs/benchmarks.md and docs/bench.svg under `root`.
fn finish(mut results: Results, began: Instant, root: &Path) -> Result<(), String> {
    results.meta.elapsed = began.elapsed();
    print!("{}", report::text(&results));

    let docs = root.join("docs");
    fs::create_dir_all(&docs).map_err(|e| e.to_string())?;
    let svg = docs.join("bench.svg");
    satmqtt_bench::plot::write_svg(&results, &svg)?;
    let md_path = docs.join("benchmarks.md");
    let generated = report::markdown(&results);
    let existing = fs::read_to_string(&md_path).ok();
    fs::write(
        &md_path,
        satmqtt_bench::doc::splice(existing.as_deref(), &generated),
    )
    .map_err(|e| format!("writing {}: {e}", md_path.display()))?;
    println!("==> wrote {} and {}", md_path.display(), svg.display());
    Ok(())
}
