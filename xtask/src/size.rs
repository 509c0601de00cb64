//! `cargo xtask size`: what the core costs a microcontroller in flash and static RAM.
//!
//! Flash: `nostd-check/` is built three times as a `#![no_std]` staticlib with the MCU profile
//! (opt-level "s", fat LTO, one codegen unit, panic = "abort"), one entry point each: the core
//! alone on a stack that refuses everything, the core on smoltcp through `satmqtt_smoltcp::run`,
//! and the same smoltcp stack driven by a plain TCP client with no MQTT. Each archive is linked
//! with `ld --gc-sections` from its entry point into a small ELF, so only reachable code counts,
//! and its sections are read with the `object` crate. `.text` is split by crate through the DWARF
//! line table (built with `debug = "line-tables-only"`, which does not go to flash), read with the
//! `addr2line` crate: every byte of code is
//! charged to the source file it was generated from, so code LTO inlined across crates still
//! lands where it was written, and `core` counts the library code instantiated for us.
//!
//! RAM: `size_of` of the core's state and of the smoltcp adapter's, plus the buffers the caller
//! provides, printed by `adapters/smoltcp/examples/footprint.rs`.
//!
//! There is no embedded target installed here, so this is x86_64 code: an ARM Thumb-2 build is
//! usually smaller, and on a 32-bit MCU every pointer, slice and `usize` in the state is half as
//! big. The table goes to stdout and to docs/footprint.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _};
use object::{Object as _, ObjectSection as _};
use satmqtt_tests::tools::find_program;

use crate::cmd;

/// Aim for the core's state (the Driver with its Connection, without the stack and the buffers).
const RAM_AIM: u64 = 1024;
/// Aim for what the core adds to firmware that already has smoltcp (`.text`).
const TEXT_AIM: u64 = 16 * 1024;
/// The minimq 0.10 + guard core's figures (docs/footprint.md at 9f1a035), for comparison.
const BEFORE_ADDED_TEXT: u64 = 30_214;
/// The same core's state (Publisher + Session).
const BEFORE_STATE: u64 = 1_992;

/// One configuration of `nostd-check`.
struct Build {
    /// Short name, also the target directory's.
    name: &'static str,
    /// What it measures.
    what: &'static str,
    feature: &'static str,
    entry: &'static str,
}

const BUILDS: &[Build] = &[
    Build {
        name: "core",
        what: "core alone (a stack that refuses everything)",
        feature: "no-network",
        entry: "satmqtt_nostd_publish",
    },
    Build {
        name: "smoltcp",
        what: "core on smoltcp (`satmqtt_smoltcp::run`)",
        feature: "smoltcp",
        entry: "satmqtt_nostd_smoltcp",
    },
    Build {
        name: "baseline",
        what: "smoltcp baseline (the same stack, a plain TCP client, no MQTT)",
        feature: "smoltcp-baseline",
        entry: "satmqtt_nostd_smoltcp_baseline",
    },
];

/// What one linked build measured.
struct Measured {
    sections: BTreeMap<String, u64>,
    /// `.text` bytes per crate (by line table).
    text_by_crate: BTreeMap<String, u64>,
}

impl Measured {
    fn section(&self, name: &str) -> u64 {
        self.sections.get(name).copied().unwrap_or(0)
    }

    fn crate_text(&self, name: &str) -> u64 {
        self.text_by_crate.get(name).copied().unwrap_or(0)
    }
}

pub fn run() -> anyhow::Result<()> {
    let ld = find_program("ld")
        .context("`ld` not found: install binutils (apt-get install -y binutils)")?;
    let root = cmd::root();

    let mut measured = Vec::new();
    for build in BUILDS {
        let archive = build_archive(&root, build)?;
        measured.push(measure(&ld, build, &archive)?);
    }
    let ram = ram_rows()?;

    let report = render(&measured, &ram);
    print!("{report}");
    let out = root.join("docs/footprint.md");
    std::fs::create_dir_all(root.join("docs")).context("creating docs/")?;
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("size: wrote {}", out.display());
    Ok(())
}

/// Builds `nostd-check` with one feature into its own target directory; returns the archive.
fn build_archive(root: &Path, build: &Build) -> anyhow::Result<PathBuf> {
    let dir = root.join("nostd-check");
    let target = dir.join("target").join(format!("size-{}", build.name));
    let mut cargo = cmd::cargo([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
    ]);
    cargo
        .args(["--no-default-features", "--features", build.feature])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        // Line tables for the per-crate split; they stay out of the linked sections we count.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only")
        .current_dir(&dir)
        .stderr(Stdio::inherit());
    println!("$ {}", cmd::display(&cargo));
    let output = cargo.output().context("could not run cargo")?;
    if !output.status.success() {
        bail!(
            "building nostd-check ({}) failed ({})",
            build.feature,
            output.status
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| msg["filenames"].as_array().cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "a"))
        .ok_or_else(|| anyhow!("nostd-check ({}) produced no .a", build.feature))
}

fn run_tool(command: &mut Command) -> anyhow::Result<String> {
    let shown = cmd::display(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Links the archive from its entry point with section garbage collection, then reads the
/// sections and splits `.text` by crate.
fn measure(ld: &Path, build: &Build, archive: &Path) -> anyhow::Result<Measured> {
    let elf = archive.with_file_name(format!("{}.elf", build.entry));
    // memcpy and friends come from libc on a host and from compiler_builtins or the HAL on an
    // MCU: left undefined, they are not counted.
    run_tool(
        Command::new(ld)
            .args([
                "-static",
                "--gc-sections",
                "--unresolved-symbols=ignore-all",
            ])
            .args(["-e", build.entry, "-u", build.entry, "-o"])
            .arg(&elf)
            .arg(archive),
    )?;
    let bytes = std::fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
    let file =
        object::File::parse(&*bytes).with_context(|| format!("parsing {}", elf.display()))?;
    let sections: BTreeMap<String, u64> = file
        .sections()
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.size())))
        .filter(|(name, _)| name.starts_with('.'))
        .collect();
    let text = file
        .section_by_name(".text")
        .ok_or_else(|| anyhow!("{}: no .text section", elf.display()))?;
    let text_range = (text.address(), text.address() + text.size());

    // Line-table rows in address order; each row's bytes run to the next row.
    let lines = addr2line::Loader::new(&elf)
        .map_err(|e| anyhow!("reading the line table of {}: {e}", elf.display()))?;
    let mut rows: Vec<(u64, String)> = lines
        .find_location_range(text_range.0, text_range.1)
        .map_err(|e| anyhow!("reading the line table of {}: {e}", elf.display()))?
        .map(|(addr, _, location)| (addr, location.file.unwrap_or("??").to_string()))
        .collect();
    rows.sort_unstable_by_key(|(addr, _)| *addr);
    rows.dedup_by_key(|(addr, _)| *addr);

    let mut text_by_crate: BTreeMap<String, u64> = BTreeMap::new();
    let first = rows.first().map_or(text_range.1, |(addr, _)| *addr);
    *text_by_crate.entry(NO_LINE_INFO.into()).or_default() += first - text_range.0;
    for (i, (addr, file)) in rows.iter().enumerate() {
        let end = rows.get(i + 1).map_or(text_range.1, |(next, _)| *next);
        *text_by_crate.entry(crate_of(file)).or_default() += end - addr;
    }
    Ok(Measured {
        sections,
        text_by_crate,
    })
}

const NO_LINE_INFO: &str = "(no line info: compiler_builtins, padding)";

/// The crate a source file belongs to.
fn crate_of(file: &str) -> String {
    if file.starts_with("??") || file.is_empty() {
        return NO_LINE_INFO.into();
    }
    if file.starts_with("/rustc/") {
        // /rustc/<hash>/library/<crate>/src/...
        let name = file.split('/').nth(4).unwrap_or("core");
        return format!("{name} (Rust library)");
    }
    if let Some(rest) = file.split("/registry/src/").nth(1) {
        // <index>/<name>-<version>/src/...
        let dir = rest.split('/').nth(1).unwrap_or(rest);
        let name = dir
            .rsplit_once('-')
            .filter(|(_, v)| v.starts_with(|c: char| c.is_ascii_digit()))
            .map_or(dir, |(n, _)| n);
        return name.to_string();
    }
    // The workspace's own crates, wherever the workspace is checked out.
    let local = [
        ("/core/src/", "satmqtt"),
        ("/adapters/smoltcp/src/", "satmqtt-smoltcp"),
        (
            "/nostd-check/src/",
            "nostd-check (entry point, test device)",
        ),
    ];
    for (dir, name) in local {
        if file.contains(dir) {
            return name.to_string();
        }
    }
    "(other: LTO glue)".into()
}

/// One line of the footprint example: key, bytes, description.
struct RamRow {
    key: String,
    bytes: u64,
    what: String,
}

fn ram_rows() -> anyhow::Result<Vec<RamRow>> {
    let mut example = cmd::cargo([
        "run",
        "-q",
        "--release",
        "-p",
        "satmqtt-smoltcp",
        "--example",
        "footprint",
    ]);
    example.stderr(Stdio::inherit());
    println!("$ {}", cmd::display(&example));
    let text = run_tool(&mut example)?;
    let rows: Vec<RamRow> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            Some(RamRow {
                key: parts.next()?.to_string(),
                bytes: parts.next()?.parse().ok()?,
                what: parts.next()?.to_string(),
            })
        })
        .collect();
    if rows.is_empty() {
        bail!("the footprint example printed nothing");
    }
    Ok(rows)
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn verdict(value: u64, aim: u64) -> String {
    if value <= aim {
        format!(
            "within the aim of {} ({} to spare)",
            kib(aim),
            kib(aim - value)
        )
    } else {
        format!("misses the aim of {} by {}", kib(aim), kib(value - aim))
    }
}

fn render(measured: &[Measured], ram: &[RamRow]) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Footprint\n");
    let _ = writeln!(
        w,
        "Generated by `cargo xtask size`. x86_64 code (no embedded target is installed on the \
         machine that produced it): an ARM Thumb-2 build is usually smaller, and on a 32-bit \
         MCU every pointer, slice and `usize` in the RAM figures is half as big.\n"
    );
    let _ = writeln!(w, "## Flash\n");
    let _ = writeln!(
        w,
        "`nostd-check/` built as a `#![no_std]` staticlib with `opt-level = \"s\"`, fat LTO, one \
         codegen unit and `panic = \"abort\"`, one entry point per build, linked with \
         `ld --gc-sections` from that entry point so only reachable code counts. `memcpy`, \
         `memset` and friends are left undefined (libc on a host, compiler_builtins or the HAL \
         on an MCU). `.eh_frame` is listed apart: MCU targets do not emit it.\n"
    );
    let _ = writeln!(
        w,
        "| build | `.text` | `.rodata` | `.data*`+`.bss` | `.eh_frame` |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for (build, m) in BUILDS.iter().zip(measured) {
        let data: u64 = m
            .sections
            .iter()
            .filter(|(n, _)| n.starts_with(".data") || n.starts_with(".bss") || *n == ".got")
            .map(|(_, s)| s)
            .sum();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            build.what,
            m.section(".text"),
            m.section(".rodata"),
            data,
            m.section(".eh_frame")
        );
    }
    let (core, smol, base) = (&measured[0], &measured[1], &measured[2]);
    let added_text = smol.section(".text").saturating_sub(base.section(".text"));
    let added_rodata = smol
        .section(".rodata")
        .saturating_sub(base.section(".rodata"));
    let _ = writeln!(
        w,
        "\nWhat the core adds to firmware that already has smoltcp: **{added_text} B `.text`, \
         {added_rodata} B `.rodata`** (core on smoltcp minus the baseline).\n"
    );

    let _ = writeln!(w, "### `.text` by crate\n");
    let _ = writeln!(
        w,
        "Split through the DWARF line table: every byte is charged to the source file it was \
         generated from, so code inlined across crates by LTO stays with the crate that wrote \
         it, and `core` is the library code instantiated for the others (slices, `Option`, \
         formatting).\n"
    );
    let mut crates: Vec<&String> = measured
        .iter()
        .flat_map(|m| m.text_by_crate.keys())
        .collect();
    crates.sort();
    crates.dedup();
    crates.sort_by_key(|c| std::cmp::Reverse(smol.crate_text(c).max(core.crate_text(c))));
    let _ = write!(w, "| crate |");
    for build in BUILDS {
        let _ = write!(w, " {} |", build.name);
    }
    let _ = writeln!(w, "\n|---|{}", "---:|".repeat(BUILDS.len()));
    for c in &crates {
        let _ = write!(w, "| {c} |");
        for m in measured {
            let _ = write!(w, " {} |", m.crate_text(c));
        }
        let _ = writeln!(w);
    }
    let ours = |m: &Measured| m.crate_text("satmqtt");
    let _ = writeln!(
        w,
        "\n**What the core adds on smoltcp: {added_text} B `.text`** — {}; the minimq 0.10 + \
         guard core added {BEFORE_ADDED_TEXT} B. Of it, the satmqtt crate's own code is {} B on \
         smoltcp ({} B in the core-alone build, where a stack that refuses every write lets LTO \
         drop paths a real stack reaches); the rest is the Rust library code and heapless it \
         instantiates.\n",
        verdict(added_text, TEXT_AIM),
        ours(smol),
        ours(core),
    );

    let _ = writeln!(w, "## Static RAM\n");
    let _ = writeln!(
        w,
        "`core::mem::size_of`, from `adapters/smoltcp/examples/footprint.rs`. The core's state \
         is measured over a stack and a clock that hold nothing, so it is the core's own.\n"
    );
    let _ = writeln!(w, "| state or buffer | bytes | what |");
    let _ = writeln!(w, "|---|---:|---|");
    for row in ram {
        let _ = writeln!(w, "| `{}` | {} | {} |", row.key, row.bytes, row.what);
    }
    let get = |key: &str| ram.iter().find(|r| r.key == key).map_or(0, |r| r.bytes);
    let core_state = get("core.driver");
    let _ = writeln!(
        w,
        "\n**Core state (Driver, the live Connection inside it): {core_state} B** — {}; the \
         minimq 0.10 + guard core's was {BEFORE_STATE} B. Add the \
         caller's buffers (`satmqtt::Buffers`: rx `RX_MIN`, tx `tx_len(..)`, the token; {} B \
         for a 1.5 KiB token), and on smoltcp the stack ({} B, inside the Driver), one socket \
         slot and socket state per TCP socket ({} + {} B) and its rx/tx buffers (the \
         firmware's choice, e.g. 1 KiB + 2 KiB).",
        verdict(core_state, RAM_AIM),
        get("buffer.1536"),
        get("smoltcp.stack"),
        get("smoltcp.socket_storage"),
        get("smoltcp.tcp_socket"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_to_their_crates() {
        let reg = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        assert_eq!(
            crate_of(&format!("{reg}/smoltcp-nal-0.7.0/src/lib.rs")),
            "smoltcp-nal"
        );
        assert_eq!(
            crate_of(&format!("{reg}/heapless-0.8.0/src/deque.rs")),
            "heapless"
        );
        assert_eq!(
            crate_of("/rustc/5980/library/core/src/option.rs"),
            "core (Rust library)"
        );
        assert_eq!(crate_of("/work/main/core/src/driver.rs"), "satmqtt");
        assert_eq!(
            crate_of("/work/main/adapters/smoltcp/src/stack.rs"),
            "satmqtt-smoltcp"
        );
        assert_eq!(crate_of("??"), NO_LINE_INFO);
    }
}
