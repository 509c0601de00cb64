//! What one `cargo xtask bench` run measured, and its text and Markdown renderings.

use std::fmt::Write as _;
use std::time::Duration;

use crate::clients::{RAW_Q0, RAW_Q1_RM, RAW_Q1_W10, RAW_Q1_W20};
use crate::stats::{thousands, Summary};

/// Where and with what the bench ran.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// UTC date and time of the run.
    pub date: String,
    /// Logical CPUs.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// (component, version).
    pub versions: Vec<(String, String)>,
    /// Messages per throughput run.
    pub count: u64,
    /// Repetitions of each configuration.
    pub reps: usize,
    /// Wall time of the whole bench.
    pub elapsed: Duration,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// One throughput run of one client.
#[derive(Debug, Clone, Copy)]
pub struct TpSample {
    /// Distinct messages delivered per second, from the client's start to the subscriber's last
    /// arrival.
    pub e2e: f64,
    /// Messages per second from the client's start to its exit.
    pub client: f64,
    /// User + system CPU seconds of the client process.
    pub cpu_s: f64,
    /// Peak RSS, KiB.
    pub rss_kib: u64,
    /// Distinct messages the subscriber received.
    pub delivered: u64,
    /// Messages it received more than once.
    pub duplicates: u64,
    /// Messages published.
    pub count: u64,
    /// The QoS 1 window the client logged, if it logs one.
    pub window: Option<u16>,
}

/// All runs of one throughput configuration.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Stable key, e.g. `satmqtt-q1`.
    pub key: String,
    /// Client name.
    pub label: String,
    /// QoS.
    pub qos: u8,
    /// QoS 1 window as shown, e.g. "10" or "RM".
    pub window: String,
    /// One per repetition that completed.
    pub samples: Vec<TpSample>,
    /// Repetitions that failed, and why.
    pub errors: Vec<String>,
}

impl Throughput {
    fn summary(&self, f: impl Fn(&TpSample) -> f64) -> Option<Summary> {
        Summary::of(&self.samples.iter().map(f).collect::<Vec<_>>())
    }

    /// Delivered messages per second, end to end (spawn → last arrival at the subscriber).
    pub fn e2e(&self) -> Option<Summary> {
        self.summary(|s| s.e2e)
    }

    /// Messages per second publisher-side (spawn → exit, i.e. after the last PUBACK at QoS 1).
    pub fn publisher(&self) -> Option<Summary> {
        self.summary(|s| s.client)
    }

    /// The figure the report leads with: end to end at QoS 0 (a QoS 0 publisher can finish
    /// before anything arrived), publisher-side at QoS 1 (end to end is bound by the broker's
    /// delivery to the subscriber and hides the publisher's limit; delivery is still checked).
    pub fn rate(&self) -> Option<Summary> {
        if self.qos == 0 {
            self.e2e()
        } else {
            self.publisher()
        }
    }

    /// CPU microseconds per message.
    pub fn cpu_us(&self) -> Option<Summary> {
        self.summary(|s| s.cpu_s * 1e6 / s.count as f64)
    }

    /// Peak RSS, MiB.
    pub fn rss_mib(&self) -> Option<Summary> {
        self.summary(|s| s.rss_kib as f64 / 1024.0)
    }

    fn delivery(&self) -> String {
        if self.samples.is_empty() {
            return "—".into();
        }
        let lost: u64 = self.samples.iter().map(|s| s.count - s.delivered).sum();
        let dup: u64 = self.samples.iter().map(|s| s.duplicates).sum();
        match (lost, dup) {
            (0, 0) => "all".into(),
            (0, d) => format!("all, {d} dup"),
            (l, 0) => format!("{l} lost"),
            (l, d) => format!("{l} lost, {d} dup"),
        }
    }
}

/// One fixed-rate run of one client.
#[derive(Debug, Clone, Copy)]
pub struct RateSample {
    /// CPU seconds per 1 000 messages between two samples taken after start-up.
    pub steady: f64,
    /// CPU seconds per 1 000 messages over the whole process (start-up included).
    pub total: f64,
    /// Peak RSS, KiB.
    pub rss_kib: u64,
}

/// All runs of one client at one rate.
#[derive(Debug, Clone)]
pub struct RateRow {
    /// Stable key, e.g. `satmqtt`.
    pub key: &'static str,
    /// Client name.
    pub label: &'static str,
    /// Messages per second.
    pub rate: u32,
    /// One per repetition.
    pub samples: Vec<RateSample>,
    /// Failures.
    pub errors: Vec<String>,
}

impl RateRow {
    /// Steady-state CPU milliseconds per 1 000 messages.
    pub fn steady_ms(&self) -> Option<Summary> {
        Summary::of(
            &self
                .samples
                .iter()
                .map(|s| s.steady * 1e3)
                .collect::<Vec<_>>(),
        )
    }

    fn total_ms(&self) -> Option<Summary> {
        Summary::of(
            &self
                .samples
                .iter()
                .map(|s| s.total * 1e3)
                .collect::<Vec<_>>(),
        )
    }
}

/// Heap allocations in satmqtt's steady state.
#[derive(Debug, Clone, Copy)]
pub struct Allocs {
    /// QoS.
    pub qos: u8,
    /// Messages in the measured window.
    pub messages: u64,
    /// Allocations in the window.
    pub allocations: u64,
    /// Bytes allocated in the window.
    pub bytes: u64,
    /// Allocations of the whole run (start-up, connect, drain included).
    pub run_allocations: u64,
}

/// Token rotation under load (one scenario, see `measure::rotation`).
#[derive(Debug, Clone, Default)]
pub struct Rotation {
    /// Scenario, e.g. "`$sat`, reconnect".
    pub label: String,
    /// How the broker accepted the old and the new token.
    pub method: String,
    /// Messages per second (QoS 1).
    pub rate: u64,
    /// Token writes during the run.
    pub rotations: usize,
    /// Per rotation: the longest gap between two arrivals at the subscriber right after the
    /// token write, ms.
    pub pause_ms: Vec<f64>,
    /// The longest gap between two arrivals anywhere else in the run (the noise floor), ms.
    pub elsewhere_ms: Option<f64>,
    /// The publisher's `publishing resumed after N ms` (from the rotation decision to the first
    /// publish on the new session), where it logged one.
    pub gap_ms: Vec<f64>,
    /// From the kubelet-style token write to that log line (inotify and drain included).
    pub write_to_publish_ms: Vec<f64>,
    /// Connections the broker accepted from the publisher.
    pub connections: usize,
    /// Connection attempts the broker refused.
    pub refused: usize,
    /// Messages published.
    pub count: u64,
    /// Distinct messages the subscriber got.
    pub delivered: u64,
    /// Duplicates.
    pub duplicates: u64,
}

/// Broker restarts under load.
#[derive(Debug, Clone, Default)]
pub struct Restart {
    /// From the new broker's listener being up to the publisher's first PUBACK.
    pub up_to_ack_ms: Vec<f64>,
    /// From SIGTERM to the old broker to that PUBACK.
    pub down_to_ack_ms: Vec<f64>,
    /// Messages acknowledged in the end, out of `count`.
    pub acked: u64,
    /// Messages published.
    pub count: u64,
}

/// System calls per message, counted with `strace -f -c`.
#[derive(Debug, Clone)]
pub struct Syscalls {
    /// Client name.
    pub label: String,
    /// QoS.
    pub qos: u8,
    /// Messages published in the traced run.
    pub messages: u64,
    /// (syscall, calls), most frequent first.
    pub calls: Vec<(String, u64)>,
}

impl Syscalls {
    fn total(&self) -> u64 {
        self.calls.iter().map(|(_, n)| n).sum()
    }

    fn per_msg(&self, n: u64) -> f64 {
        n as f64 / self.messages as f64
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Machine, versions, settings.
    pub meta: Meta,
    /// Throughput configurations, in table order.
    pub throughput: Vec<Throughput>,
    /// Fixed-rate CPU runs.
    pub rates: Vec<RateRow>,
    /// satmqtt allocation counts.
    pub allocs: Vec<Allocs>,
    /// Token rotation, one per scenario.
    pub rotation: Vec<Rotation>,
    /// Broker restart.
    pub restart: Option<Restart>,
    /// System call counts.
    pub syscalls: Vec<Syscalls>,
    /// Measurements that failed outright.
    pub errors: Vec<String>,
}

impl Results {
    /// The throughput configuration with `key`.
    pub fn tp(&self, key: &str) -> Option<&Throughput> {
        self.throughput.iter().find(|t| t.key == key)
    }

    fn rate_row(&self, key: &str, rate: u32) -> Option<&RateRow> {
        self.rates.iter().find(|r| r.key == key && r.rate == rate)
    }

    /// Ratio of the medians of the rows' leading figures ([`Throughput::rate`]).
    fn tp_ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.tp(a)?.rate()?.median / self.tp(b)?.rate()?.median)
    }

    fn cpu_ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.tp(a)?.cpu_us()?.median / self.tp(b)?.cpu_us()?.median)
    }

    fn rate_ratio(&self, a: &str, b: &str, rate: u32) -> Option<f64> {
        Some(
            self.rate_row(a, rate)?.steady_ms()?.median
                / self.rate_row(b, rate)?.steady_ms()?.median,
        )
    }

    /// The sanity line: raw window 20 ÷ raw window 10, publisher-side and end to end. A window
    /// twice as large should show (on mosquitto, well above 1×) publisher-side; end to end stays
    /// near 1× when the broker's delivery to the subscriber is the bottleneck, which is why the
    /// QoS 1 comparisons are publisher-side.
    pub fn sanity(&self) -> String {
        let ratio = |f: fn(&Throughput) -> Option<Summary>| {
            let (w20, w10) = (self.tp(RAW_Q1_W20)?, self.tp(RAW_Q1_W10)?);
            Some(f(w20)?.median / f(w10)?.median)
        };
        let show = |r: Option<f64>| r.map_or("not measured".to_owned(), |r| format!("{r:.2}×"));
        format!(
            "sanity: raw window 20 ÷ raw window 10 = {} publisher-side, {} end to end \
             (publisher-side well above 1× means the QoS 1 figures can see a publisher's window; \
             end to end near 1× means delivery to the subscriber is the bottleneck there)",
            show(ratio(Throughput::publisher)),
            show(ratio(Throughput::e2e)),
        )
    }

    fn peak_rss(&self, tls: bool) -> Option<u64> {
        let satmqtt =
            |key: &str| key.starts_with("satmqtt-") && key.starts_with("satmqtt-tls-") == tls;
        let throughput = self
            .throughput
            .iter()
            .filter(|t| satmqtt(&t.key))
            .flat_map(|t| t.samples.iter().map(|s| s.rss_kib));
        let rates = self
            .rates
            .iter()
            .filter(|r| !tls && r.key == "satmqtt")
            .flat_map(|r| r.samples.iter().map(|s| s.rss_kib));
        throughput.chain(rates).max()
    }

    /// satmqtt's system calls per message at `qos`, from the strace run.
    pub fn satmqtt_syscalls(&self, qos: u8) -> Option<f64> {
        self.syscalls
            .iter()
            .find(|s| s.label == SATMQTT_LABEL && s.qos == qos)
            .map(|s| s.per_msg(s.total()))
    }

    /// (target, measured, met) rows: the engine issue's targets first, then the older ones.
    pub fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut rows = Vec::new();
        let ratio = |r: Option<f64>| r.map_or("not measured".to_owned(), |r| format!("{r:.2}×"));
        let q0 = self.tp_ratio("satmqtt-q0", RAW_Q0);
        rows.push((
            "QoS 0 end to end ≥ 0.95× the raw limit".to_owned(),
            ratio(q0),
            q0.map(|r| r >= 0.95),
        ));
        let q1 = self.tp_ratio("satmqtt-q1", RAW_Q1_W20);
        rows.push((
            "QoS 1 publisher-side ≥ 0.95× the raw client at window 20".to_owned(),
            ratio(q1),
            q1.map(|r| r >= 0.95),
        ));
        let r = self.tp_ratio("satmqtt-q1", "rumqttc-q1");
        rows.push((
            "QoS 1 publisher-side ahead of rumqttc".to_owned(),
            ratio(r),
            r.map(|r| r > 1.0),
        ));
        for qos in [0, 1] {
            let r = self.cpu_ratio(&format!("satmqtt-q{qos}"), &format!("rumqttc-q{qos}"));
            rows.push((
                format!("CPU per message flat out at QoS {qos} ≤ rumqttc"),
                ratio(r),
                r.map(|r| r <= 1.0),
            ));
        }
        let sys = self.satmqtt_syscalls(0);
        rows.push((
            "system calls per message at QoS 0 ≤ 0.1".to_owned(),
            sys.map_or("not measured".into(), |x| format!("{x:.3}")),
            sys.map(|x| x <= 0.1),
        ));
        for (tls, what) in [(false, "plain"), (true, "TLS")] {
            let rss = self.peak_rss(tls);
            rows.push((
                format!("peak RSS ≤ 4 MiB, {what}"),
                rss.map_or("not measured".into(), |k| {
                    format!("{:.2} MiB (largest run)", k as f64 / 1024.0)
                }),
                rss.map(|k| k <= 4096),
            ));
        }
        let allocs: Option<(u64, u64)> = (!self.allocs.is_empty()).then(|| {
            self.allocs
                .iter()
                .fold((0, 0), |(a, m), x| (a + x.allocations, m + x.messages))
        });
        rows.push((
            "0 heap allocations per message".to_owned(),
            allocs.map_or("not measured".into(), |(a, m)| {
                format!("{a} in {} messages", thousands(m as f64))
            }),
            allocs.map(|(a, _)| a == 0),
        ));
        for (peer, name) in [("rumqttc-q0", "rumqttc"), ("paho-q0", "Paho C")] {
            let r = self.tp_ratio("satmqtt-q0", peer);
            rows.push((
                format!("QoS 0 ahead of {name}"),
                ratio(r),
                r.map(|r| r > 1.0),
            ));
        }
        let r = self.tp_ratio("satmqtt-q1", "paho-q1");
        rows.push((
            "QoS 1 publisher-side ahead of Paho C".to_owned(),
            ratio(r),
            r.map(|r| r > 1.0),
        ));
        for rate in [100, 1] {
            let r = self.rate_ratio("satmqtt", "rumqttc", rate);
            rows.push((
                format!("CPU per message at {rate} msg/s ≤ rumqttc"),
                ratio(r),
                r.map(|r| r <= 1.0),
            ));
        }
        rows
    }
}

/// The label of satmqtt's rows in the system-call table.
pub const SATMQTT_LABEL: &str = "satmqtt pod-publisher";

fn opt(s: Option<Summary>, f: impl Fn(f64) -> String) -> String {
    s.map_or_else(|| "—".to_owned(), |s| s.show(f))
}

fn rate_fmt(x: f64) -> String {
    thousands(x)
}

fn ratio_of(results: &Results, t: &Throughput) -> String {
    let base = if t.qos == 0 { RAW_Q0 } else { RAW_Q1_W20 };
    match (t.rate(), results.tp(base).and_then(Throughput::rate)) {
        (Some(a), Some(b)) => format!("{:.2}", a.median / b.median),
        _ => "—".into(),
    }
}

/// The throughput columns, shared by the text and Markdown tables.
fn tp_cells(results: &Results, t: &Throughput) -> [String; 9] {
    [
        t.label.clone(),
        t.qos.to_string(),
        t.window.clone(),
        opt(t.publisher(), rate_fmt),
        opt(t.e2e(), rate_fmt),
        ratio_of(results, t),
        opt(t.cpu_us(), |x| format!("{x:.2}")),
        opt(t.rss_mib(), |x| format!("{x:.1}")),
        t.delivery(),
    ]
}

const TP_HEADER: [&str; 9] = [
    "client",
    "QoS",
    "window",
    "publisher-side msg/s",
    "end-to-end msg/s",
    "÷ limit",
    "CPU µs/msg",
    "peak RSS MiB",
    "delivered",
];

fn mark(met: Option<bool>, not_met: &str) -> String {
    match met {
        Some(true) => "met".into(),
        Some(false) => not_met.into(),
        None => "?".into(),
    }
}

/// Plain-text tables for stdout.
pub fn text(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.meta;
    let _ = writeln!(
        out,
        "\nsatmqtt bench: {} messages per run, {} repetitions, median [min–max]; {} cores, {}",
        thousands(m.count as f64),
        m.reps,
        m.cores,
        m.cpu
    );
    let row = |out: &mut String, c: &[String]| {
        let _ = writeln!(
            out,
            "{:<28} {:>3} {:>7} {:>27} {:>27} {:>7} {:>20} {:>16} {:>10}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        );
    };
    if !results.throughput.is_empty() {
        let _ = writeln!(out);
        row(&mut out, &TP_HEADER.map(str::to_owned));
        for t in &results.throughput {
            row(&mut out, &tp_cells(results, t));
            for e in &t.errors {
                let _ = writeln!(out, "    ! {e}");
            }
        }
        let _ = writeln!(
            out,
            "÷ limit: QoS 0 end to end over raw's; QoS 1 publisher-side over raw at window 20"
        );
        let _ = writeln!(out, "{}", results.sanity());
    }
    if !results.rates.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>8} {:>34} {:>26} {:>14}",
            "client (QoS 1)",
            "rate",
            "CPU ms / 1000 msgs (steady)",
            "incl. start-up",
            "peak RSS MiB"
        );
        for r in &results.rates {
            let _ = writeln!(
                out,
                "{:<24} {:>6}/s {:>34} {:>26} {:>14}",
                r.label,
                r.rate,
                opt(r.steady_ms(), |x| format!("{x:.1}")),
                opt(r.total_ms(), |x| format!("{x:.0}")),
                opt(r.rss_mib(), |x| format!("{x:.1}")),
            );
            for e in &r.errors {
                let _ = writeln!(out, "    ! {e}");
            }
        }
    }
    if !results.syscalls.is_empty() {
        let _ = writeln!(out, "\nsystem calls per message (strace -f -c, flat out):");
        for s in &results.syscalls {
            let _ = writeln!(
                out,
                "  {:<24} QoS {}: {:.3} ({})",
                s.label,
                s.qos,
                s.per_msg(s.total()),
                s.top(4)
            );
        }
    }
    let _ = writeln!(out);
    for line in satmqtt_lines(results) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "\ntargets:");
    for (target, measured, met) in results.targets() {
        let _ = writeln!(out, "  {:<8} {target}: {measured}", mark(met, "NOT MET"));
    }
    for n in results.meta.notes.iter().chain(&results.errors) {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

impl RateRow {
    fn rss_mib(&self) -> Option<Summary> {
        Summary::of(
            &self
                .samples
                .iter()
                .map(|s| s.rss_kib as f64 / 1024.0)
                .collect::<Vec<_>>(),
        )
    }
}

impl Syscalls {
    fn top(&self, n: usize) -> String {
        self.calls
            .iter()
            .take(n)
            .map(|(name, c)| format!("{name} {:.2}", self.per_msg(*c)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn list(v: &[f64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn satmqtt_lines(results: &Results) -> Vec<String> {
    let mut lines = Vec::new();
    for a in &results.allocs {
        lines.push(format!(
            "satmqtt heap allocations, QoS {}: {} in {} steady-state messages ({:.4} per message, {} bytes); {} in the whole run",
            a.qos,
            a.allocations,
            thousands(a.messages as f64),
            a.allocations as f64 / a.messages as f64,
            a.bytes,
            a.run_allocations
        ));
    }
    for r in &results.rotation {
        let largest = r
            .pause_ms
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        lines.push(format!(
            "token rotation, {} ({} rotations at {} msg/s QoS 1): largest publishing pause at the \
             subscriber {} ms (each: {} ms; largest gap elsewhere in the run {} ms); publisher's \
             `publishing resumed after`: {} ms, token write → that line: {} ms; {} connection(s), \
             {} refused; {} of {} delivered, {} duplicates. Broker: {}",
            r.label,
            r.rotations,
            r.rate,
            largest.map_or("—".into(), |x| format!("{x:.0}")),
            list(&r.pause_ms),
            r.elsewhere_ms.map_or("—".into(), |x| format!("{x:.0}")),
            list(&r.gap_ms),
            list(&r.write_to_publish_ms),
            r.connections,
            r.refused,
            r.delivered,
            r.count,
            r.duplicates,
            r.method,
        ));
    }
    if let Some(r) = &results.restart {
        lines.push(format!(
            "broker restart at 100 msg/s QoS 1: listener up → first PUBACK {} ms; SIGTERM → first PUBACK {} ms; {} of {} acknowledged",
            opt(Summary::of(&r.up_to_ack_ms), |x| format!("{x:.0}")),
            opt(Summary::of(&r.down_to_ack_ms), |x| format!("{x:.0}")),
            r.acked,
            r.count
        ));
    }
    lines
}

/// The generated part of docs/benchmarks.md.
pub fn markdown(results: &Results) -> String {
    let mut md = String::new();
    let m = &results.meta;
    let tpr = |a: &str, b: &str| {
        results
            .tp_ratio(a, b)
            .map_or("—".to_owned(), |r| format!("{r:.2}×"))
    };
    let rss = results
        .tp("satmqtt-q1")
        .and_then(Throughput::rss_mib)
        .map_or("—".to_owned(), |s| format!("{:.1} MiB", s.median));
    let allocs = if results.allocs.is_empty() {
        "an unmeasured number of heap allocations per message".to_owned()
    } else if results.allocs.iter().all(|a| a.allocations == 0) {
        "no heap allocation per message".to_owned()
    } else {
        let each: Vec<String> = results
            .allocs
            .iter()
            .map(|a| {
                format!(
                    "{:.1} (QoS {})",
                    a.allocations as f64 / a.messages as f64,
                    a.qos
                )
            })
            .collect();
        format!("{} heap allocations per message", each.join(" and "))
    };
    let _ = writeln!(md, "README snippet (for the maintainers to link):\n");
    let _ = writeln!(md, "```markdown\n## Performance\n");
    let _ = writeln!(
        md,
        "On one local mosquitto (`cargo xtask bench`, {cores} cores), `pod-publisher` delivers \
         {q0}× the messages per second of a raw client writing pre-encoded packets at QoS 0 \
         ({q0r}× rumqttc, {q0p}× Paho C), and publishes {q1}× as fast as a raw client keeping 20 \
         messages in flight at QoS 1, measured until the last PUBACK ({q1r}× rumqttc, {q1p}× Paho \
         C), in {rss} of RAM and with {allocs}. See [docs/benchmarks.md](docs/benchmarks.md).\n\n\
         ![satmqtt against the wire limit and its peers](docs/bench.svg)",
        cores = m.cores,
        q0 = tpr("satmqtt-q0", RAW_Q0).trim_end_matches('×'),
        q0r = tpr("satmqtt-q0", "rumqttc-q0").trim_end_matches('×'),
        q0p = tpr("satmqtt-q0", "paho-q0").trim_end_matches('×'),
        q1 = tpr("satmqtt-q1", RAW_Q1_W20).trim_end_matches('×'),
        q1r = tpr("satmqtt-q1", "rumqttc-q1").trim_end_matches('×'),
        q1p = tpr("satmqtt-q1", "paho-q1").trim_end_matches('×'),
    );
    let _ = writeln!(md, "```\n");
    let _ = writeln!(
        md,
        "![satmqtt against the wire limit and its peers](bench.svg)\n"
    );

    let _ = writeln!(md, "## This run\n");
    let _ = writeln!(
        md,
        "- {}; {} logical CPUs, {}; Linux {}; the bench took {:.0} s.",
        m.date,
        m.cores,
        m.cpu,
        m.kernel,
        m.elapsed.as_secs_f64()
    );
    let versions: Vec<String> = m.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(md, "- Versions: {}.", versions.join(", "));
    let _ = writeln!(
        md,
        "- {} messages per throughput run, each configuration {} times, repetitions interleaved; \
         tables show median [min–max].",
        thousands(m.count as f64),
        m.reps
    );
    for n in &m.notes {
        let _ = writeln!(md, "- Note: {n}");
    }
    for e in &results.errors {
        let _ = writeln!(md, "- Failed: {e}");
    }

    let _ = writeln!(md, "\n### Throughput\n");
    let _ = writeln!(
        md,
        "| {} |\n|{}",
        TP_HEADER.join(" | "),
        "---|".repeat(TP_HEADER.len())
    );
    for t in &results.throughput {
        let _ = writeln!(md, "| {} |", tp_cells(results, t).join(" | "));
    }
    let errors: Vec<&String> = results.throughput.iter().flat_map(|t| &t.errors).collect();
    if !errors.is_empty() {
        let _ = writeln!(md);
        for e in errors {
            let _ = writeln!(md, "- Failed run: {e}");
        }
    }
    let _ = writeln!(
        md,
        "\nPublisher-side is from the client's start to its exit; every client here exits right \
         after its last PUBACK at QoS 1, so that is the publisher's own rate. End to end is from \
         the client's start to the last arrival at the counting subscriber, which also verifies \
         delivery (last column) in every run. mosquitto acknowledges a PUBLISH once it has queued \
         it, so on one machine the end-to-end QoS 1 path can be bound by the broker's delivery to \
         the subscriber and hide a publisher's limit (the sanity line below shows whether it did): \
         \"÷ limit\" is the publisher-side rate over the raw client's at window 20 at QoS 1, and \
         the end-to-end rate over the raw client's at QoS 0. \"window\" is what the client \
         logged where it logs one (RM: the broker's Receive Maximum, 20 on this mosquitto).\n\n\
         {}",
        results.sanity()
    );

    let _ = writeln!(md, "\n### Ratios (medians)\n");
    for (a, b, what) in [
        ("satmqtt-q0", RAW_Q0, "QoS 0, satmqtt ÷ raw limit"),
        ("satmqtt-q0", "rumqttc-q0", "QoS 0, satmqtt ÷ rumqttc"),
        ("satmqtt-q0", "paho-q0", "QoS 0, satmqtt ÷ Paho C"),
        (
            "satmqtt-q0",
            "mosquitto_pub-q0",
            "QoS 0, satmqtt ÷ mosquitto_pub -l",
        ),
        (
            "satmqtt-q1",
            RAW_Q1_W20,
            "QoS 1 publisher-side, satmqtt ÷ raw window 20",
        ),
        (
            "satmqtt-q1",
            RAW_Q1_RM,
            "QoS 1 publisher-side, satmqtt ÷ raw at the broker's window",
        ),
        (
            "satmqtt-q1",
            RAW_Q1_W10,
            "QoS 1 publisher-side, satmqtt ÷ raw window 10",
        ),
        (
            "satmqtt-q1",
            "rumqttc-q1",
            "QoS 1 publisher-side, satmqtt ÷ rumqttc",
        ),
        (
            "satmqtt-q1",
            "paho-q1",
            "QoS 1 publisher-side, satmqtt ÷ Paho C",
        ),
        (
            "satmqtt-q1",
            "mosquitto_pub-q1",
            "QoS 1 publisher-side, satmqtt ÷ mosquitto_pub -l",
        ),
    ] {
        let _ = writeln!(md, "- {what}: {}", tpr(a, b));
    }
    for qos in [0, 1] {
        let (tls, plain) = (format!("satmqtt-tls-q{qos}"), format!("satmqtt-q{qos}"));
        let cpu = results
            .cpu_ratio(&tls, &plain)
            .map_or("—".into(), |r| format!("{r:.2}×"));
        let _ = writeln!(
            md,
            "- QoS {qos}, satmqtt over TLS ÷ satmqtt plain: {} the messages per second, {cpu} the CPU per message",
            tpr(&tls, &plain)
        );
    }
    for (qos, peer, name) in [
        (0, "rumqttc", "rumqttc"),
        (0, "paho", "Paho C"),
        (1, "rumqttc", "rumqttc"),
        (1, "paho", "Paho C"),
    ] {
        let r = results.cpu_ratio(&format!("satmqtt-q{qos}"), &format!("{peer}-q{qos}"));
        let _ = writeln!(
            md,
            "- CPU per message flat out, QoS {qos}, satmqtt ÷ {name}: {}",
            r.map_or("—".into(), |r| format!("{r:.2}×"))
        );
    }
    for rate in [100, 1] {
        for (peer, name) in [("rumqttc", "rumqttc"), ("paho", "Paho C")] {
            let r = results.rate_ratio("satmqtt", peer, rate);
            let _ = writeln!(
                md,
                "- CPU per message at {rate} msg/s (steady), satmqtt ÷ {name}: {}",
                r.map_or("—".into(), |r| format!("{r:.2}×"))
            );
        }
    }

    if !results.rates.is_empty() {
        let _ = writeln!(md, "\n### CPU at the seed's rate (QoS 1)\n");
        let _ = writeln!(
            md,
            "| client | rate | CPU ms per 1 000 messages, steady | incl. start-up | peak RSS MiB |\n|---|---|---|---|---|"
        );
        for r in &results.rates {
            let _ = writeln!(
                md,
                "| {} | {}/s | {} | {} | {} |",
                r.label,
                r.rate,
                opt(r.steady_ms(), |x| format!("{x:.1}")),
                opt(r.total_ms(), |x| format!("{x:.0}")),
                opt(r.rss_mib(), |x| format!("{x:.1}")),
            );
        }
        let errors: Vec<&String> = results.rates.iter().flat_map(|r| &r.errors).collect();
        for e in errors {
            let _ = writeln!(md, "\n- Failed run: {e}");
        }
    }

    let _ = writeln!(md, "\n### satmqtt only\n");
    for line in satmqtt_lines(results) {
        let _ = writeln!(md, "- {line}");
    }

    if !results.syscalls.is_empty() {
        let _ = writeln!(
            md,
            "\n### System calls per message (`strace -f -c`, flat out)\n"
        );
        let _ = writeln!(
            md,
            "| client | QoS | messages | syscalls/msg | top calls per message |\n|---|---|---|---|---|"
        );
        for s in &results.syscalls {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.3} | {} |",
                s.label,
                s.qos,
                thousands(s.messages as f64),
                s.per_msg(s.total()),
                s.top(4)
            );
        }
    }

    let _ = writeln!(md, "\n### Targets (measured, not asserted)\n");
    let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
    for (target, measured, met) in results.targets() {
        let _ = writeln!(
            md,
            "| {target} | {measured} | {} |",
            mark(met, "**NOT MET**")
        );
    }
    md
}
