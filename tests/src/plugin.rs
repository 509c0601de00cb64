//! The K8S-SAT auth plugin for mosquitto (`tests/plugin/k8s_sat_auth.c`), compiled on demand.
//!
//! The C source is embedded in this crate; [`k8s_sat_plugin`] compiles it with
//! `gcc -fPIC -shared` once per test process into the system temp dir, under a name that contains a
//! hash of the source, so processes share one build and an edited source gets a new one.
//!
//! What the plugin logs (prefix `k8s-sat: `, parsed by [`crate::BrokerLog::k8s_sat_decisions`]):
//!
//! | event | line |
//! |---|---|
//! | accepted CONNECT | `k8s-sat: connect <id> method=K8S-SAT token=len:<n>,fnv:<hash> accept exp=<unix s, 0 = never>` |
//! | accepted AUTH 0x19 | `k8s-sat: reauth <id> method=K8S-SAT token=... accept exp=...` |
//! | refused | `... token=... refuse unknown` or `... refuse expired exp=...` |
//! | other method | `k8s-sat: connect <id> method=<m> defer (not K8S-SAT)` (mosquitto: CONNACK 0x8C) |
//! | expired while connected | `k8s-sat: kick <id> exp=...` (DISCONNECT 0x98, then close) |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::tools::{find_program, run_bounded};

/// The plugin's C source.
pub const PLUGIN_SOURCE: &str = include_str!("../plugin/k8s_sat_auth.c");
/// Debian packages the plugin build needs.
pub const PLUGIN_PACKAGES: &str = "mosquitto-dev libmosquitto-dev gcc";
/// The headers the build needs, each with the package that ships it.
const HEADERS: &[(&str, &str)] = &[
    ("/usr/include/mosquitto_broker.h", "mosquitto-dev"),
    ("/usr/include/mosquitto_plugin.h", "mosquitto-dev"),
    ("/usr/include/mosquitto.h", "libmosquitto-dev"),
];
/// How long gcc may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// FNV-1a (32 bit): the hash the plugin logs instead of a token.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(16_777_619)
    })
}

/// How the plugin names `token` in its log: `len:<n>,fnv:<8 hex digits>`.
pub fn token_tag(token: &[u8]) -> String {
    format!("len:{},fnv:{:08x}", token.len(), fnv1a(token))
}

/// The path of the compiled plugin, building it on first use in this process.
///
/// # Panics
/// If gcc or the mosquitto headers are missing (the message names the packages to install), or the
/// build fails (the message has gcc's output).
pub fn k8s_sat_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build).as_path()
}

fn install_hint() -> String {
    format!(
        "install them with:\n    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {PLUGIN_PACKAGES}\n\
         (or run `cargo xtask test`, which installs them when run as root)"
    )
}

fn build() -> PathBuf {
    let gcc = find_program("gcc").unwrap_or_else(|| {
        panic!(
            "`gcc` was not found: the K8S-SAT tests compile a mosquitto auth plugin; {}",
            install_hint()
        )
    });
    let missing: Vec<String> = HEADERS
        .iter()
        .filter(|(header, _)| !Path::new(header).exists())
        .map(|(header, package)| format!("{header} (package {package})"))
        .collect();
    assert!(
        missing.is_empty(),
        "the K8S-SAT tests compile a mosquitto auth plugin, and these headers are missing: {}; {}",
        missing.join(", "),
        install_hint()
    );
    let dir = std::env::temp_dir();
    let stem = format!(
        "satmqtt-k8s-sat-auth-{:08x}",
        fnv1a(PLUGIN_SOURCE.as_bytes())
    );
    let so = dir.join(format!("{stem}.so"));
    if so.exists() {
        return so;
    }
    // Build under this process's own names, then rename: a parallel test process never loads a
    // half-written library.
    let pid = std::process::id();
    let source = dir.join(format!("{stem}.{pid}.c"));
    let partial = dir.join(format!("{stem}.{pid}.so"));
    std::fs::write(&source, PLUGIN_SOURCE).expect("writing the plugin source to the temp dir");
    let output = run_bounded(
        Command::new(gcc)
            .args(["-fPIC", "-shared", "-Wall", "-O2", "-o"])
            .arg(&partial)
            .arg(&source),
        BUILD_TIMEOUT,
    );
    let _ = std::fs::remove_file(&source);
    assert!(
        output.status.success(),
        "gcc could not build the K8S-SAT plugin ({}): {}{}\nIf headers are missing, {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        install_hint()
    );
    std::fs::rename(&partial, &so).expect("moving the built plugin into place");
    so
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // Test vectors of the FNV reference implementation.
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
        assert_eq!(token_tag(b"a"), "len:1,fnv:e40c292c");
    }
}
