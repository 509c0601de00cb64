//! The container image, built offline: `FROM scratch`, the static `pod-publisher`, a CA bundle and
//! a numeric non-root user, with whichever of podman or docker can actually build here. Shared by
//! `cargo xtask image` and tests/tests/image.rs, so the test checks the image xtask builds.
//!
//! deploy/Dockerfile builds the same final stage from registry images (a Rust build stage); the
//! test compares the two layouts by parsing that file. The offline build needs no registry: the
//! binary comes from [`crate::static_build`], the CA bundle from the build machine's
//! [`HOST_CA_BUNDLE`] (Debian's `ca-certificates`, the file the Dockerfile copies out of its
//! Debian build stage).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::tools::find_program;
use crate::wait::wait_until;

/// The tag `cargo xtask image` gives the image by default: the name deploy/base/deployment.yaml uses
/// (`satmqtt/pod-publisher:0.1.0`), spelled out with its registry so that podman does not file it
/// under `localhost/`, which a cluster loading the saved archive would not match.
pub const DEFAULT_TAG: &str = "docker.io/satmqtt/pod-publisher:0.1.0";
/// The image's numeric user and group (distroless's "nonroot" uid), the Deployment's `runAsUser`.
pub const USER: &str = "65532:65532";
/// The binary's path in the image, and the entrypoint.
pub const BINARY_PATH: &str = "/pod-publisher";
/// Where the CA bundle goes in the image: the first file rustls-native-certs (through
/// openssl-probe) looks for, as on Debian.
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The build machine's CA bundle (Debian/Ubuntu `ca-certificates`), copied into the image.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Mode of the binary in the image.
pub const BINARY_MODE: u32 = 0o755;
/// Mode of the CA bundle in the image.
pub const CA_BUNDLE_MODE: u32 = 0o644;
/// Bound for one engine command (build, inspect, save, rm).
const ENGINE_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound for `<engine> info`, which tells whether the engine can work at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The build file the offline build uses: the final stage of deploy/Dockerfile, with the files
/// taken from the build context instead of the build stage.
pub fn containerfile() -> String {
    format!(
        "FROM scratch\n\
         COPY --chmod={CA_BUNDLE_MODE:04o} ca-certificates.crt {CA_BUNDLE_PATH}\n\
         COPY --chmod={BINARY_MODE:04o} pod-publisher {BINARY_PATH}\n\
         USER {USER}\n\
         ENTRYPOINT [\"{BINARY_PATH}\"]\n"
    )
}

/// Which container engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Podman (daemonless; Debian's `podman` package).
    Podman,
    /// Docker (client and a reachable engine).
    Docker,
}

/// A container engine that answered `info`, so it can build here.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Which engine.
    pub kind: EngineKind,
    /// Its client program.
    pub program: PathBuf,
}

/// What an image's configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// Image id (`sha256:...`).
    pub id: String,
    /// Size as the engine reports it, in bytes.
    pub size: u64,
    /// `USER`.
    pub user: String,
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
    /// `ENV`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WORKDIR` (empty if none).
    pub working_dir: String,
}

/// The kind of an entry in an image's file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, FIFO, hard link).
    Other,
}

/// One entry of an image's flattened file system.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageEntry {
    /// Absolute path in the image (`/pod-publisher`).
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`0o755`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// The content of a regular file.
    pub content: Vec<u8>,
}

impl Engine {
    /// The first engine that can build here: docker if its engine answers, else podman. Having
    /// the docker client is not enough (a client without a daemon is common), so each candidate
    /// must answer `info`.
    ///
    /// # Errors
    /// Names each engine tried and why it cannot be used.
    pub fn detect() -> Result<Engine, String> {
        let mut problems = Vec::new();
        for kind in [EngineKind::Docker, EngineKind::Podman] {
            match Engine::usable(kind) {
                Ok(engine) => return Ok(engine),
                Err(problem) => problems.push(problem),
            }
        }
        Err(format!(
            "no container engine can build here:\n  {}\ninstall podman \
             (apt-get install -y podman runc) or start a docker engine",
            problems.join("\n  ")
        ))
    }

    /// `kind` if its client is installed and `info` succeeds.
    ///
    /// # Errors
    /// What is missing: the program, or the engine (with `info`'s error output).
    pub fn usable(kind: EngineKind) -> Result<Engine, String> {
        let name = kind.name();
        let program =
            find_program(name).ok_or_else(|| format!("{name}: not installed (not on PATH)"))?;
        let engine = Engine { kind, program };
        let output =
            run(engine.command().arg("info"), PROBE_TIMEOUT).map_err(|e| format!("{name}: {e}"))?;
        if output.status.success() {
            Ok(engine)
        } else {
            Err(format!(
                "{name}: `{name} info` failed ({}), so it cannot build or run containers here: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// The engine's name (`podman`, `docker`).
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// A command running the engine's client.
    pub fn command(&self) -> Command {
        Command::new(&self.program)
    }

    /// Builds the image from `binary` and [`HOST_CA_BUNDLE`] with [`containerfile`], tags it
    /// `tag`, and returns its configuration.
    ///
    /// # Errors
    /// A missing input file, or the build's failure with its output.
    pub fn build(&self, binary: &Path, tag: &str) -> Result<ImageConfig, String> {
        let context = tempfile::Builder::new()
            .prefix("satmqtt-image-")
            .tempdir()
            .map_err(|e| format!("creating the build context: {e}"))?;
        stage(binary, &context.path().join("pod-publisher"), BINARY_MODE)?;
        stage(
            Path::new(HOST_CA_BUNDLE),
            &context.path().join("ca-certificates.crt"),
            CA_BUNDLE_MODE,
        )
        .map_err(|e| {
            format!("{e} (the image's CA bundle comes from Debian's ca-certificates package)")
        })?;
        let file = context.path().join("Containerfile");
        fs::write(&file, containerfile())
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        let mut build = self.command();
        build.arg("build");
        if self.kind == EngineKind::Podman {
            // Never reach for a registry: FROM scratch needs none.
            build.arg("--pull=never");
        }
        build
            .arg("-f")
            .arg(&file)
            .args(["-t", tag])
            .arg(context.path());
        let output = run(&mut build, ENGINE_TIMEOUT)?;
        if !output.status.success() {
            return Err(format!(
                "`{} build` failed ({}):\n{}{}",
                self.name(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        self.inspect(tag)
    }

    /// The configuration of image `image`.
    ///
    /// # Errors
    /// If the engine does not know it, or its answer does not parse.
    pub fn inspect(&self, image: &str) -> Result<ImageConfig, String> {
        let output = run(
            self.command().args(["image", "inspect", image]),
            ENGINE_TIMEOUT,
        )?;
        if !output.status.success() {
            return Err(format!(
                "`{} image inspect {image}` failed: {}",
                self.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let parsed: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("`image inspect` output is not JSON: {e}"))?;
        let image = &parsed[0];
        let config = &image["Config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let id = text(&image["Id"]);
        Ok(ImageConfig {
            id: if id.starts_with("sha256:") {
                id
            } else {
                format!("sha256:{id}")
            },
            size: image["Size"].as_u64().unwrap_or_default(),
            user: text(&config["User"]),
            entrypoint: strings(&config["Entrypoint"]),
            cmd: strings(&config["Cmd"]),
            env: strings(&config["Env"]),
            working_dir: text(&config["WorkingDir"]),
        })
    }

    /// Every entry of image `image`'s file system, its layers applied in order, sorted by path.
    /// Read from `<engine> save` (a docker-archive: `manifest.json` names the layer tars).
    ///
    /// # Errors
    /// If the save fails or the archive is not as expected.
    pub fn entries(&self, image: &str) -> Result<Vec<ImageEntry>, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
        let archive = dir.path().join("image.tar");
        let mut save = self.command();
        save.arg("save");
        if self.kind == EngineKind::Podman {
            save.args(["--format", "docker-archive"]);
        }
        save.arg("-o").arg(&archive).arg(image);
        let output = run(&mut save, ENGINE_TIMEOUT)?;
        if !output.status.success() {
            return Err(format!(
                "`{} save {image}` failed: {}",
                self.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let unpacked = dir.path().join("unpacked");
        tar::Archive::new(
            fs::File::open(&archive).map_err(|e| format!("opening the saved image: {e}"))?,
        )
        .unpack(&unpacked)
        .map_err(|e| format!("unpacking the saved image: {e}"))?;
        let manifest: Value = serde_json::from_slice(
            &fs::read(unpacked.join("manifest.json"))
                .map_err(|e| format!("the saved image has no manifest.json: {e}"))?,
        )
        .map_err(|e| format!("manifest.json: {e}"))?;
        let layers = manifest[0]["Layers"]
            .as_array()
            .ok_or("manifest.json has no Layers")?;
        let mut entries: std::collections::BTreeMap<String, ImageEntry> = Default::default();
        for layer in layers {
            let name = layer.as_str().ok_or("a layer name is not a string")?;
            read_layer(&unpacked.join(name), &mut entries)?;
        }
        Ok(entries.into_values().collect())
    }

    /// Removes image `image` (errors ignored: it may already be gone).
    pub fn remove_image(&self, image: &str) {
        let _ = run(
            self.command().args(["image", "rm", "--force", image]),
            ENGINE_TIMEOUT,
        );
    }
}

impl EngineKind {
    /// The client program's name.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }
}

/// Copies `from` to `to` with permission bits `mode`.
fn stage(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    fs::copy(from, to).map_err(|e| format!("copying {}: {e}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("setting the mode of {}: {e}", to.display()))
}

/// Applies one layer tar to `entries` (whiteouts remove what earlier layers added).
fn read_layer(
    path: &Path,
    entries: &mut std::collections::BTreeMap<String, ImageEntry>,
) -> Result<(), String> {
    let shown = path.display();
    let file = fs::File::open(path).map_err(|e| format!("opening layer {shown}: {e}"))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive
        .entries()
        .map_err(|e| format!("reading layer {shown}: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("reading layer {shown}: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("a path in layer {shown}: {e}"))?
            .to_string_lossy()
            .into_owned();
        let relative = raw.trim_start_matches("./").trim_matches('/');
        if relative.is_empty() || relative == "." {
            continue;
        }
        let absolute = format!("/{relative}");
        let (parent, file_name) = absolute.rsplit_once('/').unwrap_or(("", &absolute));
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            if hidden == ".wh..opq" {
                let prefix = format!("{parent}/");
                entries.retain(|p, _| !p.starts_with(&prefix));
            } else {
                let gone = format!("{parent}/{hidden}");
                let prefix = format!("{gone}/");
                entries.retain(|p, _| *p != gone && !p.starts_with(&prefix));
            }
            continue;
        }
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        let mode = header.mode().map_err(|e| format!("{absolute}: {e}"))? & 0o7777;
        let uid = header.uid().map_err(|e| format!("{absolute}: {e}"))?;
        let gid = header.gid().map_err(|e| format!("{absolute}: {e}"))?;
        let mut content = Vec::new();
        if kind == EntryKind::File {
            std::io::Read::read_to_end(&mut entry, &mut content)
                .map_err(|e| format!("reading {absolute} from layer {shown}: {e}"))?;
        }
        entries.insert(
            absolute.clone(),
            ImageEntry {
                path: absolute,
                kind,
                mode,
                uid,
                gid,
                content,
            },
        );
    }
    Ok(())
}

/// Runs `command` to completion with a deadline; stdout and stderr go through temp files, so a
/// talkative build cannot fill a pipe.
///
/// # Errors
/// If it cannot start or outlives `timeout` (it is killed).
pub fn run(command: &mut Command, timeout: Duration) -> Result<Output, String> {
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
    let create = |name: &str| {
        fs::File::create(dir.path().join(name)).map_err(|e| format!("creating {name}: {e}"))
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(create("stdout")?)
        .stderr(create("stderr")?)
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let Some(status) = wait_until(timeout, || child.try_wait().ok().flatten()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("`{shown}` did not finish within {timeout:?}"));
    };
    let read = |name: &str| fs::read(dir.path().join(name)).unwrap_or_default();
    Ok(Output {
        status,
        stdout: read("stdout"),
        stderr: read("stderr"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_containerfile_is_scratch_plus_two_files_a_numeric_user_and_the_binary() {
        assert_eq!(
            containerfile(),
            "FROM scratch\n\
             COPY --chmod=0644 ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n\
             COPY --chmod=0755 pod-publisher /pod-publisher\n\
             USER 65532:65532\n\
             ENTRYPOINT [\"/pod-publisher\"]\n"
        );
    }
}
