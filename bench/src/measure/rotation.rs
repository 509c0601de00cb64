//! Token rotation under load: `pod-publisher` at a fixed rate (200 msg/s, QoS 1) against its own
//! mosquitto while the token is rotated kubelet-style (a new `..data` directory swapped in by
//! rename) three times; the figure is the largest publishing pause around each rotation, seen by
//! the counting subscriber (the gap between two consecutive arrivals), next to the largest gap
//! anywhere else in the run (the noise floor) and to the publisher's own
//! `publishing resumed after N ms` log line where it prints one.
//!
//! A [`Scenario`] is the publisher's extra arguments plus a [`BrokerSetup`], so another way of
//! logging in (e.g. `--auth k8s-sat` with a K8S-SAT auth plugin, where a rotation is an in-band
//! re-authentication and the pause should be 0) is one more scenario with its own broker.
//!
//! During a real rotation the old and the new token are both valid: the old one until its
//! `exp`, the new one from the moment it is issued. mosquitto keeps one password per user, so
//! the `$sat` scenario cannot use a password file (the integration tests act a rotation out in
//! two steps, refusing the new token until they reload the password, which would put the
//! test's own reaction time into the pause). Instead mosquitto loads `bench/c/sat_tokens_auth.c`,
//! a small auth plugin that accepts `$sat` with any token listed in a file; the bench appends
//! each new token to that file before the kubelet-style write, and the old one stays listed.
//! Without the plugin (not compiled) the fallback is a broker that accepts any password, named
//! as such in the report.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use satmqtt_tests::{fake_jwt, TokenDir, SUBSCRIBER_PASSWORD, SUBSCRIBER_USERNAME};

use crate::clients::{
    broker_addr, log_lines, ms_between, sleep_until, sub_auth, tail, Env, Reaped, PREFIX,
};
use crate::mosq::Mosquitto;
use crate::report::Rotation;
use crate::subscriber::Subscriber;

/// Publishing rate: one message per this many milliseconds (200 msg/s).
const INTERVAL_MS: u64 = 5;
/// Length of the run.
const RUN: Duration = Duration::from_secs(8);
/// Rotations at these offsets from the publisher's start.
const ROTATE_AT: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(6),
];
/// A pause belongs to a rotation when it ends within this long after the token write.
const AROUND: Duration = Duration::from_millis(1_500);

/// Makes a token valid at a scenario's broker.
pub type Admit = Box<dyn Fn(&str) -> anyhow::Result<()>>;

/// How the scenario's mosquitto accepts the old and the new token.
pub struct BrokerSetup {
    /// For the report: how the broker checks tokens.
    pub method: String,
    /// mosquitto configuration lines, appended to an `allow_anonymous true` listener (which
    /// accepts any user and password unless a plugin decides).
    pub config: String,
    /// Makes `token` valid at the broker; called for the first token and before each rotation.
    pub admit: Admit,
}

impl BrokerSetup {
    /// `bench/c/sat_tokens_auth.c` compiled to `plugin`: `$sat` + any token listed in
    /// `tokens_file` (created empty here; [`BrokerSetup::admit`] appends), the tests' subscriber
    /// by its password, nobody else.
    pub fn sat_tokens_plugin(plugin: &Path, tokens_file: &Path) -> anyhow::Result<BrokerSetup> {
        fs::write(tokens_file, "")
            .with_context(|| format!("creating {}", tokens_file.display()))?;
        let file: PathBuf = tokens_file.to_path_buf();
        Ok(BrokerSetup {
            method: "auth plugin bench/c/sat_tokens_auth.c: `$sat` with any token issued so far \
                     (old and new both valid, as during a real rotation)"
                .into(),
            config: format!(
                "plugin {}\nplugin_opt_tokens_file {}\nplugin_opt_subscriber_username {SUBSCRIBER_USERNAME}\n\
                 plugin_opt_subscriber_password {SUBSCRIBER_PASSWORD}\n",
                plugin.display(),
                tokens_file.display()
            ),
            admit: Box::new(move |token| {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(&file)
                    .with_context(|| format!("opening {}", file.display()))?;
                writeln!(f, "{token}").context("admitting a token")?;
                Ok(())
            }),
        })
    }

    /// tests/plugin/k8s_sat_auth.c compiled to `plugin`: method `K8S-SAT` with any token in
    /// `tokens_dir` (old and new both valid during a rotation); others connect anonymously.
    pub fn k8s_sat_plugin(plugin: &Path, tokens_dir: &Path) -> anyhow::Result<BrokerSetup> {
        fs::create_dir_all(tokens_dir)
            .with_context(|| format!("creating {}", tokens_dir.display()))?;
        let dir: PathBuf = tokens_dir.to_path_buf();
        let issued = std::sync::atomic::AtomicUsize::new(0);
        Ok(BrokerSetup {
            method: "auth plugin tests/plugin/k8s_sat_auth.c: `K8S-SAT` with any token issued so \
                     far"
            .into(),
            config: format!(
                "per_listener_settings false\nplugin {}\nplugin_opt_tokens_dir {}\n",
                plugin.display(),
                tokens_dir.display()
            ),
            admit: Box::new(move |token| {
                let n = issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = dir.join(format!("token-{n}"));
                fs::write(&path, token).with_context(|| format!("writing {}", path.display()))
            }),
        })
    }

    /// A broker that accepts any user and password (`allow_anonymous true`, no password file):
    /// the fallback when the plugin is not available. Tokens are not checked at all.
    pub fn any_password() -> BrokerSetup {
        BrokerSetup {
            method: "`allow_anonymous true` without a password file (accepts any password; the \
                     auth plugin was not available)"
                .into(),
            config: String::new(),
            admit: Box::new(|_| Ok(())),
        }
    }
}

/// One rotation measurement: a row of the report.
pub struct Scenario {
    /// Row name, e.g. "`$sat`, reconnect".
    pub label: String,
    /// Extra `pod-publisher` arguments (e.g. `--auth k8s-sat`).
    pub publisher_args: Vec<String>,
    /// The broker.
    pub broker: BrokerSetup,
}

/// Runs `scenario` once.
pub fn measure(env: &Env, scenario: &Scenario) -> anyhow::Result<Rotation> {
    let broker = Mosquitto::start(&scenario.broker.config)?;
    let tokens = TokenDir::new();
    let first = fake_jwt(3600);
    (scenario.broker.admit)(&first)?;
    tokens.write(&first);
    let count = RUN.as_millis() as u64 / INTERVAL_MS;
    let client_id = "bench-rotation";
    let topic = "bench/rotation";
    let sub = Subscriber::start_recording(
        broker_addr(broker.port()),
        sub_auth(),
        topic,
        1,
        PREFIX,
        count,
    )
    .context("subscriber")?;
    let log = env.file(&format!("rotation-{}.log", sanitize(&scenario.label)));
    let child = Command::new(env.bin("pod-publisher"))
        .args(["--host", "127.0.0.1", "--port", &broker.port().to_string()])
        .arg("--token-file")
        .arg(tokens.path())
        .args(["--client-id", client_id, "--topic", topic, "--qos", "1"])
        .args([
            "--interval-ms",
            &INTERVAL_MS.to_string(),
            "--count",
            &count.to_string(),
        ])
        .args(["--stats-interval-s", "0"])
        .args(&scenario.publisher_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("starting pod-publisher")?;
    let mut child = Reaped(child);
    let start = Instant::now();
    let mut written = Vec::new();
    for at in ROTATE_AT {
        sleep_until(start + at);
        let fresh = fake_jwt(3600);
        (scenario.broker.admit)(&fresh)?;
        tokens.write(&fresh);
        written.push((Instant::now(), SystemTime::now()));
    }
    let status = child.wait(RUN + Duration::from_secs(60))?;
    if !status.success() {
        bail!("pod-publisher exited {status}: {}", tail(&log));
    }
    sub.wait_for(count, Duration::from_secs(2), Duration::from_secs(10));
    let tally = sub.finish().context("subscriber")?;

    let writes: Vec<Instant> = written.iter().map(|w| w.0).collect();
    let (pause_ms, elsewhere_ms) = pauses(&tally.arrivals, &writes);
    let (gap_ms, write_to_publish_ms) = logged_gaps(&log, &written);
    let broker_log = broker.log();
    let connected = format!(" as {client_id} (");
    Ok(Rotation {
        label: scenario.label.clone(),
        method: scenario.broker.method.clone(),
        rate: 1000 / INTERVAL_MS,
        rotations: ROTATE_AT.len(),
        pause_ms,
        elsewhere_ms,
        gap_ms,
        write_to_publish_ms,
        connections: broker_log
            .lines()
            .filter(|l| l.contains("New client connected") && l.contains(&connected))
            .count(),
        refused: broker_log
            .lines()
            .filter(|l| l.contains(&format!("Client {client_id} disconnected, not authorised")))
            .count(),
        count,
        delivered: tally.distinct,
        duplicates: tally.duplicates,
    })
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// For each token write: the longest gap between two consecutive arrivals that ends within
/// [`AROUND`] after it; and the longest gap elsewhere (after the first arrival), in ms.
fn pauses(arrivals: &[(u64, Instant)], writes: &[Instant]) -> (Vec<f64>, Option<f64>) {
    let mut around = vec![0.0f64; writes.len()];
    let mut elsewhere: Option<f64> = None;
    for pair in arrivals.windows(2) {
        let (a, b) = (pair[0].1, pair[1].1);
        let gap = b.duration_since(a).as_secs_f64() * 1e3;
        match writes.iter().position(|&w| b > w && b <= w + AROUND) {
            Some(i) => around[i] = around[i].max(gap),
            None => elsewhere = Some(elsewhere.map_or(gap, |e| e.max(gap))),
        }
    }
    (around, elsewhere)
}

/// The publisher's `publishing resumed after N ms` lines, matched to the token writes: (N, token
/// write → that line). A scenario without a reconnect logs none.
fn logged_gaps(log: &Path, written: &[(Instant, SystemTime)]) -> (Vec<f64>, Vec<f64>) {
    let resumed: Vec<(SystemTime, f64)> = log_lines(log)
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
    let (mut gaps, mut delays) = (Vec::new(), Vec::new());
    for (i, (_, w)) in written.iter().enumerate() {
        let next = written.get(i + 1).map(|n| n.1);
        // Log stamps have millisecond resolution: allow one millisecond of rounding.
        if let Some((at, gap)) = resumed
            .iter()
            .find(|(at, _)| *at >= *w - Duration::from_millis(1) && next.is_none_or(|n| *at < n))
        {
            gaps.push(*gap);
            delays.push(ms_between(*w, *at));
        }
    }
    (gaps, delays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_attributed_to_the_rotation_they_follow() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Every 5 ms, except a 120 ms hole right after the write at 100 ms and a 30 ms hole
        // at 2 000 ms (noise, past the window after the write).
        let mut arrivals = Vec::new();
        let mut t = 0;
        for n in 0..400u64 {
            arrivals.push((n, at(t)));
            t += match t {
                105 => 120,
                2_000 => 30,
                _ => 5,
            };
        }
        let (around, elsewhere) = pauses(&arrivals, &[at(100)]);
        assert_eq!(around.len(), 1);
        assert!((around[0] - 120.0).abs() < 0.01, "{around:?}");
        assert!((elsewhere.expect("gaps elsewhere") - 30.0).abs() < 0.01);
    }
}
