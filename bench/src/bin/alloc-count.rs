//! `alloc-count`: heap allocations per published message in satmqtt's steady state.
//!
//! The same stack as `pod-publisher` (StdStack, the token file, `satmqtt_std::run` on the core's
//! driver) with a counting global allocator. The allocator's counters are read when message `count/10`
//! and message `count - count/10` are published, so connecting, the first messages and the
//! drain at the end are left out: what remains is the publish loop a pod runs all day.
//! Prints `key value` lines.

use std::alloc::System;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use satmqtt::{Config, Event, Qos};
use satmqtt_bench::args::ClientArgs;
use satmqtt_std::{Note, RunOptions, StdStack, TokenFile};
use stats_alloc::{Stats, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alloc-count: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let a = ClientArgs::from_env();
    let client_id = a.client_id();
    let broker: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .map_err(|e| format!("broker address: {e}"))?;
    let mut config = Config::new(broker);
    config.client_id = &client_id;
    config.topic = &a.topic;
    config.payload_prefix = &a.prefix;
    config.qos = Qos::try_from(a.qos).map_err(|e| format!("invalid --qos: {e}"))?;
    config.interval_ms = a.interval_ms;
    config.count = a.count;
    let tokens = TokenFile::new(&a.token_file);
    config
        .validate()
        .map_err(|e| format!("invalid --{}: {e}", e.field().name()))?;
    let stop = AtomicBool::new(false);
    let (from, to) = (a.count / 10, a.count - a.count / 10);
    let mut marks: [Option<Stats>; 2] = [None, None];
    let before = GLOBAL.stats();
    let outcome = satmqtt_std::run(
        &config,
        StdStack::new(),
        tokens,
        RunOptions::default(),
        1,
        &stop,
        |note| {
            // PUBLISHes are reported in batches: a mark is the batch that holds its message.
            if let Note::Event {
                event: Event::Published { first, last, .. },
                ..
            } = note
            {
                for (mark, n) in marks.iter_mut().zip([from, to]) {
                    if mark.is_none() && (*first..=*last).contains(&n) {
                        *mark = Some(GLOBAL.stats());
                    }
                }
            }
        },
    )
    .map_err(|e| e.to_string())?;
    let whole = GLOBAL.stats() - before;
    let (Some(start), Some(end)) = (marks[0], marks[1]) else {
        return Err(format!("the run ended early: {outcome:?}"));
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
