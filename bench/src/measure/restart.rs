//! Broker restarts under load: pod-publisher at 100 msg/s QoS 1, the broker restarted three
//! times on the same port; how long until the first PUBACK on the new broker.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use satmqtt_tests::{fake_jwt, TokenDir};

use crate::clients::{log_lines, ms_between, sleep_until, tail, Env, Reaped};
use crate::mosq::Mosquitto;
use crate::report::Restart;

/// Three restarts during a 6 s run.
pub fn measure(env: &Env) -> anyhow::Result<Restart> {
    let mut broker = Mosquitto::start("")?;
    let tokens = TokenDir::new();
    tokens.write(&fake_jwt(3600));
    let count = 600;
    let log = env.file("restart.log");
    let child = Command::new(env.bin("pod-publisher"))
        .args(["--host", "127.0.0.1", "--port", &broker.port().to_string()])
        .arg("--token-file")
        .arg(tokens.path())
        .args(["--client-id", "bench-restart", "--topic", "bench/restart"])
        .args([
            "--qos",
            "1",
            "--interval-ms",
            "10",
            "--count",
            &count.to_string(),
        ])
        .args(["--stats-interval-s", "0", "--log-level", "trace"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("starting pod-publisher")?;
    let mut child = Reaped(child);
    let start = Instant::now();
    let mut events = Vec::new();
    for k in 0..3u64 {
        sleep_until(start + Duration::from_millis(1_000 + 1_500 * k));
        let down = SystemTime::now();
        broker.restart()?;
        events.push((down, SystemTime::now()));
    }
    let status = child.wait(Duration::from_secs(60))?;
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
        bail!("pod-publisher exited {status}: {}", tail(&log));
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
