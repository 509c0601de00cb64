//! The measured clients and how to start them: the throughput table's rows, the command line of
//! each client, and the paths and broker one bench run shares.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _};
use satmqtt_tests::{TestPki, TokenDir, SUBSCRIBER_PASSWORD, SUBSCRIBER_USERNAME};

/// Payload prefix of every measured message; the counter follows.
pub const PREFIX: &str = "samplepayload";
/// Longest a single throughput run may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Paths and shared state of one bench run.
pub struct Env {
    /// This executable: the `rusage` wrapper.
    pub wrapper: PathBuf,
    /// Where `pod-publisher`, `raw-pub`, `rumqttc-pub` and `alloc-count` are.
    pub bin_dir: PathBuf,
    /// The compiled Paho C client, if any.
    pub paho: Option<PathBuf>,
    /// `mosquitto_pub`, if installed.
    pub mosquitto_pub: Option<PathBuf>,
    /// Logs and usage files of this run.
    pub work: tempfile::TempDir,
    /// The `$sat` password the main broker accepts.
    pub token: String,
    /// The projected-volume directory holding `token`.
    pub tokens: TokenDir,
    /// `samplepayload0\n..` for mosquitto_pub -l.
    pub lines: PathBuf,
    /// The tests' certificates; the broker's TLS listener uses them.
    pub pki: TestPki,
    /// The main broker's plain port.
    pub port: u16,
    /// The broker's TLS listener (server certificate for localhost), once it runs.
    pub tls_port: Option<u16>,
}

impl Env {
    /// A client binary built next to this one.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A file in this run's work directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

/// The measured clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `pod-publisher`.
    Satmqtt,
    /// pod-publisher over TLS to the broker's TLS listener (the subscriber stays on plain).
    SatmqttTls,
    /// `raw-pub`, the wire limit.
    Raw,
    /// `rumqttc-pub`.
    Rumqttc,
    /// `bench/c/paho_pub.c`.
    Paho,
    /// `mosquitto_pub -l`.
    MosquittoPub,
}

impl Kind {
    /// Whether this client can run here.
    pub fn available(self, env: &Env) -> bool {
        match self {
            Kind::Paho => env.paho.is_some(),
            Kind::MosquittoPub => env.mosquitto_pub.is_some(),
            Kind::SatmqttTls => env.tls_port.is_some(),
            _ => true,
        }
    }
}

/// One throughput configuration (a row of the table).
#[derive(Debug, Clone)]
pub struct Client {
    /// Stable key; part of MQTT topics and client ids (no wildcards, no spaces).
    pub key: String,
    /// Client name as shown.
    pub label: String,
    /// Which program.
    pub kind: Kind,
    /// 0 or 1.
    pub qos: u8,
    /// `--window`, when the bench sets one.
    pub window: Option<u16>,
    /// The QoS 1 window as shown when the client does not log the one it used.
    pub shown_window: String,
    /// Another pod-publisher binary (a `--variant`).
    pub program: Option<PathBuf>,
}

impl Client {
    fn new(
        key: &str,
        label: &str,
        kind: Kind,
        qos: u8,
        window: Option<u16>,
        shown: &str,
    ) -> Client {
        Client {
            key: key.to_owned(),
            label: label.to_owned(),
            kind,
            qos,
            window,
            shown_window: shown.to_owned(),
            program: None,
        }
    }

    /// A `--variant` row: another pod-publisher binary at `qos`.
    pub fn variant(name: &str, program: &Path, qos: u8) -> Client {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Client {
            program: Some(program.to_path_buf()),
            ..Client::new(
                &format!("variant-{safe}-q{qos}"),
                &format!("satmqtt ({name})"),
                Kind::Satmqtt,
                qos,
                None,
                if qos == 1 { "its own" } else { "—" },
            )
        }
    }
}

/// Key of the raw client at QoS 0, the QoS 0 limit.
pub const RAW_Q0: &str = "raw-q0";
/// Key of the raw client at QoS 1 with the broker's Receive Maximum as its window.
pub const RAW_Q1_RM: &str = "raw-q1";
/// Key of the raw client at QoS 1, window 20: the QoS 1 limit the targets use.
pub const RAW_Q1_W20: &str = "raw-q1-w20";
/// Key of the raw client at QoS 1, window 10 (the old engine's fixed window, kept for the ratio).
pub const RAW_Q1_W10: &str = "raw-q1-w10";

/// The throughput table, in order.
pub fn table() -> Vec<Client> {
    use Kind::*;
    vec![
        Client::new("satmqtt-q0", "satmqtt pod-publisher", Satmqtt, 0, None, "—"),
        Client::new(
            "satmqtt-tls-q0",
            "satmqtt pod-publisher (TLS)",
            SatmqttTls,
            0,
            None,
            "—",
        ),
        Client::new(RAW_Q0, "raw (the limit)", Raw, 0, None, "—"),
        Client::new("rumqttc-q0", "rumqttc", Rumqttc, 0, None, "—"),
        Client::new("paho-q0", "Paho C (MQTTClient)", Paho, 0, None, "—"),
        Client::new(
            "mosquitto_pub-q0",
            "mosquitto_pub -l",
            MosquittoPub,
            0,
            None,
            "—",
        ),
        Client::new(
            "satmqtt-q1",
            "satmqtt pod-publisher",
            Satmqtt,
            1,
            None,
            "its own",
        ),
        Client::new(
            "satmqtt-tls-q1",
            "satmqtt pod-publisher (TLS)",
            SatmqttTls,
            1,
            None,
            "its own",
        ),
        Client::new(RAW_Q1_RM, "raw, broker's window", Raw, 1, None, "RM"),
        Client::new(
            RAW_Q1_W20,
            "raw, window 20 (the limit)",
            Raw,
            1,
            Some(20),
            "20",
        ),
        Client::new(RAW_Q1_W10, "raw, window 10", Raw, 1, Some(10), "10"),
        Client::new("rumqttc-q1", "rumqttc", Rumqttc, 1, None, "RM"),
        Client::new("paho-q1", "Paho C (MQTTClient)", Paho, 1, Some(20), "20"),
        Client::new(
            "mosquitto_pub-q1",
            "mosquitto_pub -l",
            MosquittoPub,
            1,
            None,
            "20",
        ),
    ]
}

/// A job for one client process.
pub struct Job<'a> {
    /// The broker's plain port (TLS clients use [`Env::tls_port`]).
    pub port: u16,
    /// Topic.
    pub topic: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// 0 or 1.
    pub qos: u8,
    /// Messages.
    pub count: u64,
    /// Milliseconds between publishes (0: flat out).
    pub interval_ms: u64,
    /// `--window`.
    pub window: Option<u16>,
}

/// The command line for `kind` doing `job`, and its stdin.
pub fn command(
    env: &Env,
    kind: Kind,
    program: Option<&Path>,
    job: &Job<'_>,
) -> anyhow::Result<(Command, Stdio)> {
    let token_file = env.tokens.path();
    // The TLS rows dial the broker's TLS listener; everything else (and every subscriber) the
    // plain one.
    let port = match kind {
        Kind::SatmqttTls => env.tls_port.context("the broker has no TLS listener")?,
        _ => job.port,
    };
    let common = |program: PathBuf| {
        let mut c = Command::new(program);
        c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--token-file")
            .arg(&token_file)
            .args(["--client-id", job.client_id, "--topic", job.topic])
            .args(["--qos", &job.qos.to_string()])
            .args(["--count", &job.count.to_string()])
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
        Kind::Paho => common(env.paho.clone().context("Paho C was not compiled")?),
        Kind::MosquittoPub => {
            // Lines come through a pipe the bench keeps open until everything is delivered:
            // at end of input mosquitto_pub 2.0.11 disconnects with QoS 1 messages still
            // queued (measured: 34 467 of 100 000 delivered).
            let program = env
                .mosquitto_pub
                .clone()
                .context("mosquitto_pub is not installed")?;
            let mut c = Command::new(program);
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
            return Ok((c, Stdio::piped()));
        }
    };
    if let Some(w) = job.window {
        c.args(["--window", &w.to_string()]);
    }
    Ok((c, Stdio::null()))
}

/// The last five lines of a log, joined, for error messages.
pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// The QoS 1 window a client logged: the number after the last `window ` in its log
/// (`pod-publisher`: "QoS 1 window 10"; `raw-pub`: "window 20").
pub fn logged_window(path: &Path) -> Option<u16> {
    let text = fs::read_to_string(path).ok()?;
    text.rsplit("window ")
        .next()
        .filter(|_| text.contains("window "))
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
}

/// `127.0.0.1:port`.
pub fn broker_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The tests' subscriber credentials.
pub fn sub_auth() -> (&'static str, &'static str) {
    (SUBSCRIBER_USERNAME, SUBSCRIBER_PASSWORD)
}

/// Sleeps until `t` (at once if it passed).
pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// pod-publisher's log lines: (UTC time, message).
pub fn log_lines(path: &Path) -> Vec<(SystemTime, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (stamp, rest) = l.split_once(' ')?;
            Some((humantime::parse_rfc3339(stamp).ok()?, rest.to_owned()))
        })
        .collect()
}

/// Milliseconds from `a` to `b` (0 when `b` is earlier).
pub fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// A child process killed and reaped on drop.
pub struct Reaped(pub std::process::Child);

impl Reaped {
    /// Waits at most `timeout` for the exit.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        satmqtt_tests::wait::wait_until(timeout, || self.0.try_wait().ok().flatten())
            .ok_or_else(|| anyhow!("still running after {timeout:?}"))
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_window_takes_the_last_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("log");
        fs::write(
            &log,
            "connected (receive maximum 20, QoS 1 window 10)\nx window 20\n",
        )
        .expect("write");
        assert_eq!(logged_window(&log), Some(20));
        fs::write(&log, "nothing here\n").expect("write");
        assert_eq!(logged_window(&log), None);
    }
}
