//! `connection`: see fuzz_harness::connection for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_harness::connection::run(data));
