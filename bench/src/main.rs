//! `satmqtt-bench`: runs every measurement of `cargo xtask bench` and writes the report.
//!
//! The clients (`pod-publisher`, `raw-pub`, `rumqttc-pub`, `alloc-count`) are looked up next to
//! this executable, so build them in the same profile first (xtask does). See `--help` of `run`
//! for the options; `rusage` is the measuring wrapper every client runs under (see `proc`).

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use satmqtt_bench::clients::{self, Client, Env, PREFIX};
use satmqtt_bench::measure::rotation::{BrokerSetup, Scenario};
use satmqtt_bench::measure::{allocs, rate, restart, rotation, syscalls, throughput};
use satmqtt_bench::report::{self, Meta, Results};
use satmqtt_bench::{meta, proc};
use satmqtt_tests::tools::find_program;
use satmqtt_tests::{fake_jwt, Broker, TestPki, TokenDir};

#[derive(Debug, Parser)]
#[command(
    name = "satmqtt-bench",
    about = "satmqtt against the wire limit, rumqttc, Paho C and mosquitto_pub on one local mosquitto"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every measurement; print the tables and write docs/benchmarks.md and docs/bench.svg.
    Run(RunArgs),
    /// The measuring wrapper: run PROGRAM, write its pid, then its CPU time and peak RSS, to FILE.
    Rusage {
        /// Where the results go.
        file: PathBuf,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Messages per throughput run.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    count: u64,
    /// Repetitions of each configuration (interleaved).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// The compiled Paho C client (bench/c/paho_pub.c); its rows are empty without it.
    #[arg(long)]
    paho: Option<PathBuf>,
    /// The compiled auth plugin bench/c/sat_tokens_auth.c for the token-rotation measurement;
    /// without it that broker accepts any password (and the report says so).
    #[arg(long)]
    sat_plugin: Option<PathBuf>,
    /// A line for the report's notes (repeatable).
    #[arg(long = "note")]
    notes: Vec<String>,
    /// The repository; docs/ under it is written.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Throughput rows for another pod-publisher binary, LABEL=PATH (e.g. a build of an older
    /// commit, for before/after comparisons; repeatable).
    #[arg(long = "variant", value_name = "LABEL=PATH", value_parser = parse_variant)]
    variants: Vec<(String, PathBuf)>,
    /// Measure throughput only (still writes the docs).
    #[arg(long)]
    only_throughput: bool,
    /// Run only the token-rotation rows, print them and leave the docs alone.
    #[arg(long, conflicts_with_all = ["only", "only_throughput"])]
    only_rotation: bool,
    /// Run only the throughput rows whose label or key contains TEXT (case-insensitive), print
    /// them and leave the docs alone (e.g. `--only TLS --reps 1`).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

fn parse_variant(value: &str) -> Result<(String, PathBuf), String> {
    let (label, path) = value
        .split_once('=')
        .ok_or("takes LABEL=PATH to a pod-publisher binary")?;
    if label.is_empty() || path.is_empty() {
        return Err("takes LABEL=PATH to a pod-publisher binary".into());
    }
    Ok((label.to_owned(), path.into()))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Rusage { file, command } => match command.split_first() {
            Some((program, args)) => proc::wrapper_main(&file, program, args),
            None => ExitCode::from(2),
        },
        Cmd::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("satmqtt-bench: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(o: RunArgs) -> anyhow::Result<()> {
    let began = Instant::now();
    let root = o.root.clone().unwrap_or_else(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.parent().unwrap_or(manifest).to_path_buf()
    });
    let reps = o.reps as usize;
    let mut notes = o.notes.clone();
    let (env, broker) = prepare(&o, &mut notes)?;
    println!(
        "==> mosquitto on 127.0.0.1:{} ($sat + token, max_queued_messages 0); {} messages per run, {reps} repetitions",
        env.port, o.count
    );
    let versions = meta::versions(&root, &mut notes);
    let mut results = Results {
        meta: Meta {
            date: meta::utc_now(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: meta::cpu_model(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            versions,
            count: o.count,
            reps,
            elapsed: Duration::ZERO,
            notes,
        },
        ..Results::default()
    };

    if o.only_rotation {
        results.rotation = rotations(&env, &o, &mut results.errors)?;
        drop(broker);
        results.meta.elapsed = began.elapsed();
        print!("{}", report::text(&results));
        return Ok(());
    }
    let table = throughput_table(&o)?;
    results.throughput = throughput::measure(&env, &table, reps, o.count);
    if o.only.is_some() {
        // A partial run: print it, keep docs/benchmarks.md and docs/bench.svg as they are.
        drop(broker);
        results.meta.elapsed = began.elapsed();
        print!("{}", report::text(&results));
        return Ok(());
    }
    if !o.only_throughput {
        results.rates = rate::measure(&env, reps);

        println!("==> heap allocations per message (alloc-count)");
        results.allocs = allocs::measure(&env, o.count, &mut results.errors);

        results.rotation = rotations(&env, &o, &mut results.errors)?;

        println!("==> broker restart on the same port");
        match restart::measure(&env) {
            Ok(r) => results.restart = Some(r),
            Err(e) => results.errors.push(format!("restart: {e:#}")),
        }

        match find_program("strace") {
            Some(strace) => {
                println!("==> system calls per message (strace -f -c)");
                results.syscalls =
                    syscalls::measure(&env, &strace, (o.count / 5).max(100), &mut results.errors);
            }
            None => results
                .meta
                .notes
                .push("strace not installed: no system call counts".into()),
        }
    }
    drop(broker);
    finish(results, began, &root)
}

/// Checks the client binaries, writes the token and the payload lines, and starts the main
/// broker: the tests' launcher ($sat + token in a password file) with a TLS listener (the
/// tests' certificates) for the TLS rows.
fn prepare(o: &RunArgs, notes: &mut Vec<String>) -> anyhow::Result<(Env, Broker)> {
    let wrapper = std::env::current_exe().context("finding this executable")?;
    let bin_dir = wrapper
        .parent()
        .context("this executable has no directory")?
        .to_path_buf();
    for name in ["pod-publisher", "raw-pub", "rumqttc-pub", "alloc-count"] {
        if !bin_dir.join(name).exists() {
            bail!(
                "{} is missing: build it first (cargo build --release -p pod-publisher -p satmqtt-bench)",
                bin_dir.join(name).display()
            );
        }
    }
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
        .context("creating the work directory")?;
    let lines = work.path().join("lines.txt");
    {
        let mut f = std::io::BufWriter::new(
            fs::File::create(&lines).with_context(|| format!("creating {}", lines.display()))?,
        );
        for n in 0..o.count {
            writeln!(f, "{PREFIX}{n}")?;
        }
        f.flush()?;
    }
    let pki = TestPki::new();

    // The tests' launcher has no queue limit knob, so one is appended and loaded with a SIGHUP
    // (the reload that `set_sat_password` performs): unlimited queues, so a QoS 1 burst is
    // never dropped for a subscriber that is a moment behind. max_inflight_messages stays at
    // its default, 20, which is also the Receive Maximum mosquitto advertises to publishers.
    let broker = Broker::start_tls(&token, &pki.listener(false));
    let conf = broker.dir().join("mosquitto.conf");
    let mut text =
        fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
    text.push_str("max_queued_messages 0\n");
    fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
    broker.set_sat_password(&token);
    let env = Env {
        wrapper,
        bin_dir,
        paho: o.paho.clone(),
        mosquitto_pub,
        work,
        token,
        tokens,
        lines,
        pki,
        port: broker.port(),
        tls_port: broker.tls_port(),
    };
    Ok((env, broker))
}

/// The throughput table with `--variant` rows after satmqtt's, filtered by `--only`.
fn throughput_table(o: &RunArgs) -> anyhow::Result<Vec<Client>> {
    let mut table = clients::table();
    for (name, path) in &o.variants {
        for qos in [0, 1] {
            let at = table
                .iter()
                .rposition(|c| c.qos == qos && c.kind == clients::Kind::Satmqtt)
                .map_or(table.len(), |i| i + 1);
            table.insert(at, Client::variant(name, path, qos));
        }
    }
    if let Some(only) = &o.only {
        let only = only.to_lowercase();
        table.retain(|c| c.label.to_lowercase().contains(&only) || c.key.contains(&only));
        if table.is_empty() {
            bail!("--only {only}: no throughput row matches");
        }
    }
    Ok(table)
}

/// Every rotation scenario once; failures go to `errors`.
fn rotations(
    env: &Env,
    o: &RunArgs,
    errors: &mut Vec<String>,
) -> anyhow::Result<Vec<report::Rotation>> {
    let mut out = Vec::new();
    for scenario in rotation_scenarios(env, o.sat_plugin.as_deref())? {
        println!(
            "==> token rotation, {}: 200 msg/s QoS 1, three kubelet-style rotations",
            scenario.label
        );
        match rotation::measure(env, &scenario) {
            Ok(r) => out.push(r),
            Err(e) => errors.push(format!("rotation, {}: {e:#}", scenario.label)),
        }
    }
    Ok(out)
}

/// The token-rotation rows. Today: `$sat`, where a rotation is a new connection. A
/// `--auth k8s-sat` row (in-band re-authentication) is one more [`Scenario`] with
/// `publisher_args: ["--auth", "k8s-sat"]` and a [`BrokerSetup`] loading the K8S-SAT plugin.
fn rotation_scenarios(env: &Env, sat_plugin: Option<&Path>) -> anyhow::Result<Vec<Scenario>> {
    let broker = match sat_plugin {
        Some(plugin) => BrokerSetup::sat_tokens_plugin(plugin, &env.file("valid-tokens"))?,
        None => BrokerSetup::any_password(),
    };
    let k8s = BrokerSetup::k8s_sat_plugin(
        satmqtt_tests::plugin::k8s_sat_plugin(),
        &env.file("k8s-sat-tokens"),
    )?;
    Ok(vec![
        Scenario {
            label: "`$sat` (reconnect)".into(),
            publisher_args: Vec::new(),
            broker,
        },
        Scenario {
            label: "`K8S-SAT` (re-authentication)".into(),
            publisher_args: vec!["--auth".into(), "k8s-sat".into()],
            broker: k8s,
        },
    ])
}

/// Prints the tables and writes docs/benchmarks.md and docs/bench.svg under `root`.
fn finish(mut results: Results, began: Instant, root: &Path) -> anyhow::Result<()> {
    results.meta.elapsed = began.elapsed();
    print!("{}", report::text(&results));

    let docs = root.join("docs");
    fs::create_dir_all(&docs).with_context(|| format!("creating {}", docs.display()))?;
    let svg = docs.join("bench.svg");
    satmqtt_bench::plot::write_svg(&results, &svg)?;
    let md_path = docs.join("benchmarks.md");
    let generated = report::markdown(&results);
    let existing = fs::read_to_string(&md_path).ok();
    fs::write(
        &md_path,
        satmqtt_bench::doc::splice(existing.as_deref(), &generated),
    )
    .with_context(|| format!("writing {}", md_path.display()))?;
    println!("==> wrote {} and {}", md_path.display(), svg.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rusage_takes_the_program_after_a_double_dash() {
        let cli = Cli::try_parse_from([
            "satmqtt-bench",
            "rusage",
            "/tmp/u",
            "--",
            "raw-pub",
            "--qos",
            "1",
        ])
        .expect("valid");
        let Cmd::Rusage { file, command } = cli.command else {
            panic!("not rusage");
        };
        assert_eq!(file, PathBuf::from("/tmp/u"));
        assert_eq!(command, ["raw-pub", "--qos", "1"].map(OsString::from));
    }

    #[test]
    fn variants_need_a_label_and_a_path() {
        let cli = Cli::try_parse_from([
            "satmqtt-bench",
            "run",
            "--variant",
            "before=/bin/pp",
            "--reps",
            "1",
        ])
        .expect("valid");
        let Cmd::Run(o) = cli.command else {
            panic!("not run");
        };
        assert_eq!(
            o.variants,
            [("before".to_owned(), PathBuf::from("/bin/pp"))]
        );
        assert!(Cli::try_parse_from(["satmqtt-bench", "run", "--variant", "nolabel"]).is_err());
        assert!(Cli::try_parse_from(["satmqtt-bench", "run", "--count", "10"]).is_err());
    }
}
