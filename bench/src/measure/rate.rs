//! CPU at a fixed rate (QoS 1): three clients at 100/s and at 1/s, all six at once (the load is
//! tiny). CPU is sampled from the scheduler after start-up and again near the end, so the
//! steady-state figure leaves out connecting.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::clients::{broker_addr, command, sleep_until, sub_auth, Env, Job, Kind, PREFIX};
use crate::proc::{self, cpu_ns};
use crate::report::{RateRow, RateSample};
use crate::subscriber::Subscriber;

/// After start-up: the first CPU sample.
const WARM: Duration = Duration::from_millis(2_500);

/// `reps` rounds of the fixed-rate runs.
pub fn measure(env: &Env, reps: usize) -> Vec<RateRow> {
    let mut rows = Vec::new();
    for rate in [100, 1] {
        for (key, label, kind) in [
            ("satmqtt", "satmqtt pod-publisher", Kind::Satmqtt),
            ("rumqttc", "rumqttc", Kind::Rumqttc),
            ("paho", "Paho C (MQTTClient)", Kind::Paho),
        ] {
            if kind.available(env) {
                rows.push(RateRow {
                    key,
                    label,
                    rate,
                    samples: Vec::new(),
                    errors: Vec::new(),
                });
            }
        }
    }
    for rep in 0..reps {
        println!(
            "==> [{}/{reps}] fixed rate, QoS 1: 100 msg/s for 10 s and 1 msg/s for 20 s, all clients at once",
            rep + 1,
        );
        round(env, rep, &mut rows);
    }
    rows
}

fn kind_of(key: &str) -> Kind {
    match key {
        "satmqtt" => Kind::Satmqtt,
        "rumqttc" => Kind::Rumqttc,
        _ => Kind::Paho,
    }
}

/// One client of a round, running.
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

fn start(env: &Env, rep: usize, row_index: usize, row: &RateRow) -> anyhow::Result<Live> {
    // 100/s for 10 s; 1/s for 21 messages (20 s), so the process still runs at 19.5 s.
    let (interval_ms, count, end_at) = if row.rate == 100 {
        (10, 1_000, Duration::from_millis(9_500))
    } else {
        (1_000, 21, Duration::from_millis(19_500))
    };
    let topic = format!("bench/rate/{}/{}/{rep}", row.key, row.rate);
    let client_id = format!("bench-rate-{}-{}-{rep}", row.key, row.rate);
    let job = Job {
        port: env.port,
        topic: &topic,
        client_id: &client_id,
        qos: 1,
        count,
        interval_ms,
        window: None,
    };
    let (cmd, stdin) = command(env, kind_of(row.key), None, &job)?;
    let sub = Subscriber::start(broker_addr(env.port), sub_auth(), &topic, 1, PREFIX, count)
        .context("subscriber")?;
    let name = format!("{}-{}-{rep}", row.key, row.rate);
    let stderr = fs::File::create(env.file(&format!("rate-{name}.log")))?;
    let m = proc::spawn(
        &env.wrapper,
        &env.file(&format!("rate-{name}.usage")),
        &cmd,
        [stdin, Stdio::null(), Stdio::from(stderr)],
        row.label,
    )
    .context("spawn")?;
    Ok(Live {
        row: row_index,
        sub,
        m,
        pid: None,
        first: None,
        last: None,
        count,
        end_at,
    })
}

fn round(env: &Env, rep: usize, rows: &mut [RateRow]) {
    let mut live = Vec::new();
    for (i, row) in rows.iter_mut().enumerate() {
        match start(env, rep, i, row) {
            Ok(l) => live.push(l),
            Err(e) => row.errors.push(format!("{e:#}")),
        }
    }
    let Some(t0) = live.iter().map(|l| l.m.started()).min() else {
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
        match finish(l, row) {
            Ok(s) => row.samples.push(s),
            Err(e) => row.errors.push(format!("{e:#}")),
        }
    }
}

fn finish(l: Live, row: &RateRow) -> anyhow::Result<RateSample> {
    let finished = l.m.wait(Duration::from_secs(30));
    l.sub
        .wait_for(l.count, Duration::from_secs(2), Duration::from_secs(10));
    let tally = l.sub.finish();
    let (_, usage) = finished?;
    if usage.code != 0 {
        bail!("{} at {}/s exited {}", row.label, row.rate, usage.code);
    }
    let tally = tally.context("subscriber")?;
    if tally.distinct != l.count {
        bail!(
            "{} at {}/s: {} of {} delivered",
            row.label,
            row.rate,
            tally.distinct,
            l.count
        );
    }
    let ((c0, d0), (c1, d1)) = l.first.zip(l.last).context("no CPU samples")?;
    if d1 <= d0 {
        bail!("no messages between the CPU samples");
    }
    Ok(RateSample {
        steady: (c1 - c0) as f64 / 1e9 / (d1 - d0) as f64 * 1000.0,
        total: usage.cpu().as_secs_f64() / l.count as f64 * 1000.0,
        rss_kib: usage.max_rss_kib,
    })
}
