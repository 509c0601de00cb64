//! `cargo xtask nostd`: the core really is `no_std` without `alloc`.
//!
//! `nostd-check/` is a `#![no_std]` staticlib with its own panic handler that uses the core. It is
//! outside the workspace (it needs `panic = "abort"`). Building it proves there is no `std`; `nm`
//! on the archive proves there is no allocator: any `__rust_alloc` (the global allocator entry),
//! `__rg_alloc`/`__rdl_alloc` (the allocator shims) or the shim marker means `alloc` is linked.
//! Substring matching also catches the v0-mangled forms recent compilers emit
//! (`_RNv..___rustc12___rust_alloc`).

use std::process::Command;

use satmqtt_tests::tools::find_program;

use crate::cmd;

/// Symbols that exist only if `alloc` is linked.
const ALLOC_SYMBOLS: &[&str] = &[
    "__rust_alloc",
    "__rg_alloc",
    "__rdl_alloc",
    "__rust_no_alloc_shim_is_unstable",
];

pub fn run() -> Result<(), String> {
    let dir = cmd::root().join("nostd-check");
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(format!(
            "{} does not exist: the no_std proof crate (a #![no_std] staticlib using the core, with its \
             own panic handler) has not been written yet",
            manifest.display()
        ));
    }
    let nm = find_program("nm")
        .ok_or("`nm` not found: install binutils (apt-get install -y binutils)")?;

    // Run from inside nostd-check/ so its own .cargo/config.toml (target, flags) applies.
    let mut build = cmd::cargo([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
        "--manifest-path",
    ]);
    build.arg(&manifest).current_dir(&dir);
    println!("$ {}", cmd::display(&build));
    let output = build
        .output()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(format!("building nostd-check failed ({})", output.status));
    }
    let archives: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| msg["filenames"].as_array().cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .filter(|f| f.ends_with(".a"))
        .collect();
    if archives.is_empty() {
        return Err(
            "nostd-check produced no .a: it must be a staticlib (crate-type = [\"staticlib\"])"
                .into(),
        );
    }

    for archive in &archives {
        let mut list = Command::new(&nm);
        list.arg("-A").arg(archive);
        println!("$ {}", cmd::display(&list));
        let listed = list
            .output()
            .map_err(|e| format!("could not run nm: {e}"))?;
        if !listed.status.success() {
            return Err(format!(
                "nm {archive} failed: {}",
                String::from_utf8_lossy(&listed.stderr)
            ));
        }
        let symbols = String::from_utf8_lossy(&listed.stdout);
        let offending: Vec<&str> = symbols
            .lines()
            .filter(|line| ALLOC_SYMBOLS.iter().any(|s| line.contains(s)))
            .collect();
        if !offending.is_empty() {
            return Err(format!(
                "alloc is linked into {archive}:\n    {}",
                offending.join("\n    ")
            ));
        }
        println!(
            "nostd: {archive}: {} symbols, no allocator",
            symbols.lines().count()
        );
    }
    Ok(())
}
