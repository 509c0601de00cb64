//! `token`: see fuzz_harness::token for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_harness::token::run(data));
