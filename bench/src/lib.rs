//! `cargo xtask bench`: satmqtt measured against the wire limit and against the clients a user
//! would pick instead, on one local mosquitto, with the numbers reported as ratios.
//!
//! The `satmqtt-bench` binary runs everything and writes `docs/benchmarks.md` and
//! `docs/bench.svg`; the other binaries are measured clients: `raw-pub` (hand-encoded packets,
//! large writes: the limit), `rumqttc-pub` (the Rust peer) and `alloc-count` (satmqtt with a
//! counting allocator). The Paho C client is `c/paho_pub.c`, compiled by xtask with gcc.
//!
//! Deliberately left out: brokers other than mosquitto, and any pass/fail exit status: the
//! machine is shared, so the report states ratios, marks each target met or not met, and lets
//! the reader judge. Not part of `cargo xtask test`.

pub mod args;
pub mod clients;
pub mod doc;
pub mod measure;
pub mod meta;
pub mod mosq;
pub mod plot;
pub mod proc;
pub mod report;
pub mod stats;
pub mod subscriber;
pub mod wire;
