//! Where and with what the bench ran: CPU, versions (crates from `cargo metadata`, system
//! packages from dpkg), the date.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{bail, Context as _};
use satmqtt_tests::tools::find_program;

/// The crates whose versions the report names (those in the workspace's dependency graph).
const CRATES: &[&str] = &["rumqttc", "tokio", "rustls"];

/// `model name` from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            Some(l.split_once(':')?.1.trim().to_owned()).filter(|_| l.starts_with("model name"))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The current UTC time, RFC 3339, seconds.
pub fn utc_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(find_program(program)?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_owned())
}

/// (crate, version) for each of `names` in the resolved dependency graph of the workspace at
/// `root`, from `cargo metadata` (offline: the lock file decides).
pub fn crate_versions(root: &Path, names: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata's JSON")?;
    Ok(versions_in(&meta, names))
}

fn versions_in(meta: &serde_json::Value, names: &[&str]) -> Vec<(String, String)> {
    let packages = meta["packages"].as_array().map_or(&[][..], Vec::as_slice);
    let mut out = Vec::new();
    for name in names {
        let mut found: Vec<&str> = packages
            .iter()
            .filter(|p| p["name"] == *name)
            .filter_map(|p| p["version"].as_str())
            .collect();
        found.sort_unstable();
        found.dedup();
        if !found.is_empty() {
            out.push(((*name).to_owned(), found.join(" and ")));
        }
    }
    out
}

/// Versions of rustc, the crates in [`CRATES`], mosquitto, Paho C, mosquitto_pub and gcc;
/// what cannot be found is left out (a failed `cargo metadata` goes to `notes`).
pub fn versions(root: &Path, notes: &mut Vec<String>) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some(r) = first_line("rustc", &["-V"]) {
        v.push(("rustc".into(), r.trim_start_matches("rustc ").to_owned()));
    }
    match crate_versions(root, CRATES) {
        Ok(found) => v.extend(found),
        Err(e) => notes.push(format!("crate versions unknown: {e:#}")),
    }
    let dpkg = |pkg: &str| first_line("dpkg-query", &["-W", "-f", "${Version}", pkg]);
    for (name, pkg) in [
        ("mosquitto", "mosquitto"),
        ("Paho C (libpaho-mqtt-dev)", "libpaho-mqtt-dev"),
        ("mosquitto_pub (mosquitto-clients)", "mosquitto-clients"),
    ] {
        if let Some(m) = dpkg(pkg) {
            v.push((name.into(), m));
        }
    }
    if let Some(g) = first_line("gcc", &["--version"]) {
        v.push(("gcc".into(), g));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_versions_by_package_name() {
        let meta = serde_json::json!({"packages": [
            {"name": "tokio", "version": "1.40.0"},
            {"name": "rumqttc", "version": "0.25.0"},
            {"name": "tokio-util", "version": "0.7.0"},
        ]});
        assert_eq!(
            versions_in(&meta, &["rumqttc", "tokio"]),
            vec![
                ("rumqttc".to_owned(), "0.25.0".to_owned()),
                ("tokio".to_owned(), "1.40.0".to_owned())
            ]
        );
    }
}
