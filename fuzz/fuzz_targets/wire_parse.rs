//! `wire_parse`: see fuzz_harness::wire for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_harness::wire::run(data));
