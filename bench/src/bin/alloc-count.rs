//! `alloc-count`: heap allocations per published message in satmqtt's steady state.
//!
//! The same stack as `pod-publisher` (StdStack, StdClock, the token file, `satmqtt_std::run`)
//! with a counting global allocator. The allocator's counters are read when message `count/10`
//! and message `count - count/10` are published, so connecting, the first messages and the
//! drain at the end are left out: what remains is the publish loop a pod runs all day.
//! Prints `key value` lines.

use std::alloc::System;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use satmqtt::{Config, Event, Publisher, Qos};
use satmqtt_bench::args::ClientArgs;
use satmqtt_std::{Note, RunOptions, StdClock, StdStack, TokenFile};
use stats_alloc::{Stats, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alloc-count: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let a = ClientArgs::from_env();
    let broker: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .context("broker address")?;
    let client_id = a.client_id();
    let mut config = Config::new(broker);
    config.client_id = &client_id;
    config.topic = &a.topic;
    config.payload_prefix = &a.prefix;
    config.qos = if a.qos == 0 {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    };
    config.interval_ms = a.interval_ms;
    config.count = a.count;
    let tokens = TokenFile::new(&a.token_file);
    let mut publisher = Publisher::new(
        StdStack::new(Duration::from_secs(5)),
        StdClock::new(),
        config,
        1,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let stop = AtomicBool::new(false);
    let (from, to) = (a.count / 10, a.count - a.count / 10);
    let mut marks: [Option<Stats>; 2] = [None, None];
    let before = GLOBAL.stats();
    let outcome = satmqtt_std::run(
        &mut publisher,
        &tokens,
        RunOptions::default(),
        &stop,
        |note| {
            if let Note::Event(Event::Published { n, .. }) = note {
                if n == from {
                    marks[0] = Some(GLOBAL.stats());
                } else if n == to {
                    marks[1] = Some(GLOBAL.stats());
                }
            }
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let whole = GLOBAL.stats() - before;
    let (Some(start), Some(end)) = (marks[0], marks[1]) else {
        anyhow::bail!("the run ended early: {outcome:?}");
    };
    let steady = end - start;
    println!("messages {}", to - from);
    println!("allocations {}", steady.allocations);
    println!("reallocations {}", steady.reallocations);
    println!("bytes {}", steady.bytes_allocated);
    println!("run_allocations {}", whole.allocations);
    println!("run_bytes {}", whole.bytes_allocated);
    Ok(())
}
