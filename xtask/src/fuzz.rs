//! `cargo xtask fuzz [--seconds N] [TARGET]`: runs the cargo-fuzz targets in `fuzz/` (all three,
//! one after the other, unless one is named) for N seconds each (default 60).
//!
//! libFuzzer needs nightly Rust and cargo-fuzz; both are checked first, and a missing one is
//! named with the command that installs it. New inputs libFuzzer finds go to
//! `fuzz/corpus/<target>/` (git ignores their hash names); a crash is saved under
//! `fuzz/artifacts/<target>/` and belongs, once fixed, in `fuzz/regressions/<target>/`, which
//! the stable replay test (`fuzz-harness/tests/replay.rs`) runs in `cargo xtask test`.

use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::cmd;

/// The targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 3] = ["wire_parse", "connection", "token"];

/// How long each target runs when `--seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 60;

/// Runs `target` (all of [`TARGETS`] when `None`) for `seconds` each.
pub fn run(seconds: u64, target: Option<&str>) -> anyhow::Result<()> {
    let targets: Vec<&str> = match target {
        Some(name) => vec![name],
        None => TARGETS.to_vec(),
    };
    check_tools()?;
    for target in targets {
        // `cargo` from PATH (the rustup proxy): `+nightly` means nothing to a toolchain's own
        // cargo, which is what $CARGO points at.
        let mut command = Command::new("cargo");
        command
            // -O: optimized without debug assertions, the build docs/robustness.md reports on
            // (the harness's invariants are assert!, always on).
            .args(["+nightly", "fuzz", "run", "-O", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .current_dir(cmd::root());
        cmd::run(&mut command).with_context(|| {
            format!(
                "If libFuzzer found a crash, its input is in fuzz/artifacts/{target}/: fix \
                 the bug, then copy the input to fuzz/regressions/{target}/ so the stable replay \
                 test keeps it fixed."
            )
        })?;
    }
    Ok(())
}

/// Nightly and cargo-fuzz are there, or an error saying how to get them.
fn check_tools() -> anyhow::Result<()> {
    let works = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .current_dir(cmd::root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&["+nightly", "--version"]) {
        bail!(
            "the nightly toolchain is missing (libFuzzer needs nightly Rust's \
                    sanitizer support); install it with `rustup toolchain install nightly`"
        );
    }
    if !works(&["+nightly", "fuzz", "--version"]) {
        bail!(
            "cargo-fuzz is missing; install it with `cargo install cargo-fuzz` \
                    (libFuzzer itself is built from source with the C++ compiler)"
        );
    }
    Ok(())
}
