//! Flat-out throughput: one client process publishes `count` messages as fast as it can while
//! the counting subscriber verifies delivery.
//!
//! Two rates come out of every run. Publisher-side: from spawn to the client's exit, which at
//! QoS 1 comes right after its last PUBACK (every client here waits for it, then disconnects).
//! End to end: from spawn to the subscriber's last arrival. On one machine the end-to-end path
//! is bound by the broker's delivery to the subscriber, so it hides a publisher's own limit:
//! the QoS 1 figure the report leads with is publisher-side, with delivery still checked.

use std::fs;
use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::clients::{
    broker_addr, command, logged_window, sub_auth, tail, Client, Env, Job, PREFIX, RUN_TIMEOUT,
};
use crate::proc;
use crate::report::{Throughput, TpSample};
use crate::subscriber::Subscriber;

/// Every client of `clients` (those that can run here) `reps` times, repetitions interleaved so
/// a noisy minute hits every client alike; prints a line per run.
pub fn measure(env: &Env, clients: &[Client], reps: usize, count: u64) -> Vec<Throughput> {
    let mut rows: Vec<Throughput> = clients
        .iter()
        .map(|c| Throughput {
            key: c.key.clone(),
            label: c.label.clone(),
            qos: c.qos,
            window: c.shown_window.clone(),
            samples: Vec::new(),
            errors: Vec::new(),
        })
        .collect();
    for rep in 0..reps {
        for (client, row) in clients.iter().zip(&mut rows) {
            if !client.kind.available(env) {
                continue;
            }
            print!(
                "==> [{}/{reps}] {} QoS {} ... ",
                rep + 1,
                client.label,
                client.qos
            );
            let _ = std::io::stdout().flush();
            match run_once(env, client, rep, count) {
                Ok(s) => {
                    println!(
                        "{:.0} msg/s publisher-side, {:.0} end to end ({} of {} delivered), {:.0} ms CPU, {:.1} MiB",
                        s.client,
                        s.e2e,
                        s.delivered,
                        s.count,
                        s.cpu_s * 1e3,
                        s.rss_kib as f64 / 1024.0
                    );
                    if let Some(w) = s.window {
                        row.window = w.to_string();
                    }
                    row.samples.push(s);
                }
                Err(e) => {
                    println!("failed: {e:#}");
                    row.errors.push(format!("run {}: {e:#}", rep + 1));
                }
            }
        }
    }
    rows
}

/// One run of one client.
pub fn run_once(env: &Env, client: &Client, rep: usize, count: u64) -> anyhow::Result<TpSample> {
    let topic = format!("bench/{}/{rep}", client.key);
    let client_id = format!("bench-{}-{rep}", client.key);
    let job = Job {
        port: env.port,
        topic: &topic,
        client_id: &client_id,
        qos: client.qos,
        count,
        interval_ms: 0,
        window: client.window,
    };
    let (cmd, stdin) = command(env, client.kind, client.program.as_deref(), &job)?;
    let sub = Subscriber::start(
        broker_addr(env.port),
        sub_auth(),
        &topic,
        client.qos,
        PREFIX,
        count,
    )
    .context("subscriber")?;
    let log = env.file(&format!("{}-{rep}.log", client.key));
    let stderr = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let usage_file = env.file(&format!("{}-{rep}.usage", client.key));
    let mut m = proc::spawn(
        &env.wrapper,
        &usage_file,
        &cmd,
        [stdin, Stdio::null(), Stdio::from(stderr)],
        &client.label,
    )
    .context("spawn")?;
    let started = m.started();
    if let Some(mut stdin) = m.stdin.take() {
        // mosquitto_pub -l: feed the lines, close stdin only once everything arrived.
        let lines = fs::read(&env.lines).context("reading the payload lines")?;
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&lines);
            stdin
        });
        sub.wait_for(count, Duration::from_secs(5), RUN_TIMEOUT);
        drop(feeder.join());
    }
    let (exited, usage) = m.wait(RUN_TIMEOUT)?;
    if usage.code != 0 {
        bail!("exit code {}: {}", usage.code, tail(&log));
    }
    sub.wait_for(count, Duration::from_secs(2), Duration::from_secs(60));
    let tally = sub.finish().context("subscriber")?;
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
        window: if client.qos == 1 {
            logged_window(&log)
        } else {
            None
        },
    })
}
