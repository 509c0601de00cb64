//! `cargo xtask`: the project's developer commands.
//!
//! - `demo`  — a broker, a token, the pod publisher and an independent subscriber, end to end.
//! - `test`  — everything CI runs: fmt, clippy, the test suite, doc tests, the no_std check.
//! - `nostd` — builds `nostd-check` (the core as a `#![no_std]` staticlib) and proves it links no
//!   allocator.
//! - `size`  — flash and static RAM of the core (x86_64 build), written to docs/footprint.md.
//! - `fuzz`  — the cargo-fuzz targets (nightly), N seconds each.
//! - `bench` — satmqtt against the wire limit and its peers; docs/benchmarks.md, docs/bench.svg.
//! - `image` — the container image, built offline with podman or docker.
//!
//! Commands that need mosquitto install it with apt when run as root, and otherwise print the
//! command to run.

mod bench;
mod cmd;
mod demo;
mod fuzz;
mod image;
mod install;
mod nostd;
mod pipeline;
mod size;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo    run mosquitto, the pod publisher (10 messages, QoS 1) and a subscriber; check what arrived
  test    cargo fmt --check, clippy -D warnings, the workspace tests, doc tests, then `nostd`
  nostd   build nostd-check/ (no_std staticlib) and check with nm that no allocator is linked
  size    flash and static RAM of the core; writes docs/footprint.md
  bench   throughput, CPU, RSS, allocations vs the raw limit, rumqttc, Paho C, mosquitto_pub;
          writes docs/benchmarks.md and docs/bench.svg (about 5 minutes); extra arguments go
          to `satmqtt-bench run` (e.g. --variant before=PATH, --reps 5; --only TLS runs just
          the matching throughput rows and leaves the docs alone)
  image   the container image (FROM scratch, static binary, CA bundle, user 65532), built offline
          with podman or docker; --tag NAME (default docker.io/satmqtt/pod-publisher:0.1.0)
  fuzz    [--seconds N] [TARGET]: run the cargo-fuzz targets (wire_parse, connection, token)
          N seconds each (default 60); needs nightly and cargo-fuzz
  help    this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["demo"] => demo::run(),
        ["test"] => pipeline::run(),
        ["nostd"] => nostd::run(),
        ["size"] => size::run(),
        ["bench", ref extra @ ..] => bench::run(extra),
        ["image", ref extra @ ..] => image::run(extra),
        ["fuzz", ref extra @ ..] => fuzz::run(extra),
        ["help"] | ["--help"] | ["-h"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [] => Err(format!("no command given\n\n{USAGE}")),
        _ => Err(format!("unknown arguments: {}\n\n{USAGE}", args.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}
