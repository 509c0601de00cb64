//! The static `pod-publisher` build of deploy/Dockerfile, shared by `cargo xtask test`'s `static`
//! step and tests/tests/deploy_static_binary.rs so both run the very same build (the second is then a no-op).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables the build keeps; everything else is cleared. What cargo sets for a test process or
/// for `cargo run` (such as `CARGO_MANIFEST_DIR`) differs between the two callers, and build
/// scripts such as ring's track some of it with `rerun-if-env-changed`: with it, each caller
/// would recompile what the other built.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The glibc target of this machine's architecture, as the Dockerfile builds it.
pub fn triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// `target/static` (or under `CARGO_TARGET_DIR`): its own target dir, so the main build's cache
/// stays valid.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("static")
}

/// Where the build puts the binary.
pub fn binary(root: &Path) -> PathBuf {
    target_dir(root)
        .join(triple())
        .join("release/pod-publisher")
}

/// The arguments after `cargo`, as the tests also show them in their messages.
pub const ARGS: &[&str] = &["build", "--release", "--locked", "-p", "pod-publisher"];

/// `cargo build --release --locked -p pod-publisher --target <triple>` with
/// `-C target-feature=+crt-static`, for the workspace at `root`.
pub fn command(root: &Path) -> Command {
    let cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(ARGS)
        .args(["--target", &triple()])
        .arg("--target-dir")
        .arg(target_dir(root))
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .current_dir(root)
        .env_clear();
    for name in KEPT_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.env("RUSTFLAGS", "-C target-feature=+crt-static");
    command
}
