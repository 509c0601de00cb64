//! `cargo xtask nostd`: the core really is `no_std` without `alloc`.
//!
//! `nostd-check/` is a `#![no_std]` staticlib with its own panic handler that uses the core. It is
//! outside the workspace (it needs `panic = "abort"`). Building it proves there is no `std`; the
//! archive's symbol tables (read with the `object` crate) prove there is no allocator: any `__rust_alloc` (the global allocator entry),
//! `__rg_alloc`/`__rdl_alloc` (the allocator shims) or the shim marker means `alloc` is linked.
//! Substring matching also catches the v0-mangled forms recent compilers emit
//! (`_RNv..___rustc12___rust_alloc`).

use anyhow::{anyhow, bail, Context as _};
use object::read::archive::ArchiveFile;
use object::{Object as _, ObjectSymbol as _};

use crate::cmd;

/// Symbols that exist only if `alloc` is linked.
const ALLOC_SYMBOLS: &[&str] = &[
    "__rust_alloc",
    "__rg_alloc",
    "__rdl_alloc",
    "__rust_no_alloc_shim_is_unstable",
];

pub fn run() -> anyhow::Result<()> {
    let dir = cmd::root().join("nostd-check");
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(anyhow!(
            "{} does not exist: the no_std proof crate (a #![no_std] staticlib using the core, with its \
             own panic handler) has not been written yet",
            manifest.display()
        ));
    }
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
        .map_err(|e| anyhow!("could not run cargo: {e}"))?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(anyhow!("building nostd-check failed ({})", output.status));
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
        return Err(anyhow!(
            "nostd-check produced no .a: it must be a staticlib (crate-type = [\"staticlib\"])"
        ));
    }

    for archive in &archives {
        let symbols = archive_symbols(archive)?;
        let offending: Vec<&String> = symbols
            .iter()
            .filter(|name| ALLOC_SYMBOLS.iter().any(|s| name.contains(s)))
            .collect();
        if !offending.is_empty() {
            bail!(
                "alloc is linked into {archive}:\n    {}",
                offending
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n    ")
            );
        }
        println!("nostd: {archive}: {} symbols, no allocator", symbols.len());
    }
    Ok(())
}

/// Every symbol (defined or not) of every object file in a static archive, as `member: name`.
fn archive_symbols(archive: &str) -> anyhow::Result<Vec<String>> {
    let data = std::fs::read(archive).with_context(|| format!("reading {archive}"))?;
    let ar = ArchiveFile::parse(&*data).with_context(|| format!("{archive} is not an archive"))?;
    let mut symbols = Vec::new();
    for member in ar.members() {
        let member = member.with_context(|| format!("reading {archive}"))?;
        let name = String::from_utf8_lossy(member.name()).into_owned();
        let bytes = member
            .data(&*data)
            .with_context(|| format!("reading {name} in {archive}"))?;
        let file = object::File::parse(bytes)
            .with_context(|| format!("{name} in {archive} is not an object file"))?;
        for symbol in file.symbols() {
            if let Ok(symbol_name) = symbol.name() {
                symbols.push(format!("{name}: {symbol_name}"));
            }
        }
    }
    Ok(symbols)
}
