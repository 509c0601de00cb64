//! `cargo xtask bench`: satmqtt against the wire limit and its peers; writes docs/benchmarks.md
//! and docs/bench.svg.
//!
//! This prepares the machine and hands over to `satmqtt-bench run` (bench/), which does the
//! measuring: mosquitto and its clients (installed with apt when run as root, as for `test`),
//! the peers when possible (Paho C's `libpaho-mqtt-dev` and gcc to compile `bench/c/paho_pub.c`,
//! strace for the system-call counts, `mosquitto-dev` and `libmosquitto-dev` to compile the
//! token-rotation auth plugin `bench/c/sat_tokens_auth.c`; each is reported as not measured, or
//! measured the weaker way, when it cannot be installed), a release build of `pod-publisher` and the bench binaries, then the run. Extra
//! arguments are passed to `satmqtt-bench run` (see bench/src/main.rs).

use anyhow::{anyhow, bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use satmqtt_tests::tools::{find_program, is_root};

use crate::cmd;
use crate::install;

/// Where Debian's libpaho-mqtt-dev puts the synchronous client's header.
const PAHO_HEADER: &str = "/usr/include/MQTTClient.h";
/// mosquitto's plugin API (Debian package mosquitto-dev).
const PLUGIN_HEADER: &str = "/usr/include/mosquitto_plugin.h";
/// libmosquitto's header, which the plugin API includes (Debian package libmosquitto-dev).
const LIBMOSQUITTO_HEADER: &str = "/usr/include/mosquitto.h";

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    install::ensure(install::MOSQUITTO)?;
    let mut notes = Vec::new();
    let mut wanted = Vec::new();
    if !Path::new(PAHO_HEADER).exists() {
        wanted.push("libpaho-mqtt-dev");
    }
    if find_program("gcc").is_none() {
        wanted.push("gcc");
    }
    if find_program("strace").is_none() {
        wanted.push("strace");
    }
    if !Path::new(PLUGIN_HEADER).exists() {
        wanted.push("mosquitto-dev");
    }
    if !Path::new(LIBMOSQUITTO_HEADER).exists() {
        wanted.push("libmosquitto-dev");
    }
    if !wanted.is_empty() {
        if let Err(e) = apt_install(&wanted) {
            notes.push(format!("could not install {}: {e}", wanted.join(" ")));
        }
    }

    println!("==> building pod-publisher and the bench clients (release)");
    cmd::run(&mut cmd::cargo([
        "build",
        "--release",
        "-q",
        "-p",
        "pod-publisher",
        "-p",
        "satmqtt-bench",
    ]))?;

    let paho = match compile_paho() {
        Ok(path) => Some(path),
        Err(e) => {
            notes.push(format!("Paho C not measured: {e}"));
            None
        }
    };
    let sat_plugin = match compile_sat_plugin() {
        Ok(path) => Some(path),
        Err(e) => {
            notes.push(format!(
                "token-rotation auth plugin not compiled ({e}): that broker accepts any password"
            ));
            None
        }
    };
    let mut bench = cmd::cargo([
        "run",
        "--release",
        "-q",
        "-p",
        "satmqtt-bench",
        "--bin",
        "satmqtt-bench",
        "--",
        "run",
    ]);
    bench.arg("--root").arg(cmd::root());
    if let Some(paho) = &paho {
        bench.arg("--paho").arg(paho);
    }
    if let Some(plugin) = &sat_plugin {
        bench.arg("--sat-plugin").arg(plugin);
    }
    for note in &notes {
        bench.args(["--note", note]);
    }
    bench.args(extra);
    cmd::run(&mut bench)
}

/// apt-get install, as root only; an error says what to run otherwise.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let list = packages.join(" ");
    if !is_root() || find_program("apt-get").is_none() {
        return Err(anyhow!(
            "not root or no apt-get: run `apt-get install -y {list}`"
        ));
    }
    println!("==> installing {list}");
    let install = || {
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y"])
                .args(packages),
        )
    };
    if install().is_err() {
        cmd::run(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    Ok(())
}

/// `target/bench`, where the C programs go.
fn c_out_dir() -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::root().join("target"));
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Compiles bench/c/sat_tokens_auth.c into a mosquitto plugin; returns the shared object.
fn compile_sat_plugin() -> anyhow::Result<PathBuf> {
    for (header, package) in [
        (PLUGIN_HEADER, "mosquitto-dev"),
        (LIBMOSQUITTO_HEADER, "libmosquitto-dev"),
    ] {
        if !Path::new(header).exists() {
            bail!("{header} missing (Debian package {package})");
        }
    }
    let gcc = find_program("gcc").context("gcc is not installed")?;
    let out = c_out_dir()?.join("sat_tokens_auth.so");
    cmd::run(
        Command::new(gcc)
            .args(["-O2", "-Wall", "-Wextra", "-fPIC", "-shared", "-o"])
            .arg(&out)
            .arg(cmd::root().join("bench/c/sat_tokens_auth.c")),
    )?;
    Ok(out)
}

/// Compiles bench/c/paho_pub.c against the system's Paho C; returns the executable.
fn compile_paho() -> anyhow::Result<PathBuf> {
    if !Path::new(PAHO_HEADER).exists() {
        return Err(anyhow!(
            "{PAHO_HEADER} missing (Debian package libpaho-mqtt-dev)"
        ));
    }
    let gcc = find_program("gcc").context("gcc is not installed")?;
    let dir = c_out_dir()?;
    let out = dir.join("paho-pub");
    cmd::run(
        Command::new(gcc)
            .args(["-O2", "-Wall", "-Wextra", "-o"])
            .arg(&out)
            .arg(cmd::root().join("bench/c/paho_pub.c"))
            .args(["-lpaho-mqtt3c", "-lpthread"]),
    )?;
    Ok(out)
}
