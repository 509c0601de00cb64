//! The logic of the fuzz targets in `fuzz/`, kept here so an ordinary stable test
//! (`tests/replay.rs`) replays every committed corpus and regression input without nightly.
//!
//! Each target is a function from arbitrary bytes to `()` that panics when an invariant breaks;
//! libFuzzer reports the panic as a crash, the replay test as a failure naming the input file.

pub mod connection;
pub mod token;
pub mod wire;

/// A target: runs one input, panics on a broken invariant.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the names `cargo fuzz` and the corpus folders use.
pub const TARGETS: [(&str, Target); 3] = [
    ("wire_parse", wire::run),
    ("connection", connection::run),
    ("token", token::run),
];
