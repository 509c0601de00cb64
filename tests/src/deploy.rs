//! What the checks of `deploy/` share: the manifests read as YAML, what the binary says about
//! itself (`--help`, its `configuration:` line for a manifest's environment), the
//! `kubernetes-validate` and `kubectl kustomize` runs, the static build, its ELF linkage, an
//! empty root to run it in, and a DNS server (dnsmasq) answering like a cluster's.
//!
//! Every helper panics with a message naming what is missing or wrong: these are test fixtures.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;

use crate::static_build;
use crate::tools::{find_program, is_root, random_bytes, run_bounded};
use crate::wait::wait_until;
use crate::Publisher;

/// Kubernetes versions the manifests are validated against: the oldest we support and the
/// newest `kubernetes-validate` 1.37 knows.
pub const KUBERNETES_VERSIONS: &[&str] = &["1.31.0", "1.37.0"];
/// How to install the validator.
pub const VALIDATE_INSTALL_HINT: &str = "python3 -m pip install 'kubernetes-validate==1.37.0'";
/// Upper bound for one run of a tool (validator, kubectl, the binary's `--help`).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for one run of the publisher.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for the subscriber to catch up.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the static release build (LTO; about a minute here when cold).
pub const STATIC_BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// The image's user (deploy/Dockerfile `USER`, the Deployment's `runAsUser`).
pub const IMAGE_UID: u32 = 65532;
/// Where the image puts the binary.
pub const IMAGE_BINARY: &str = "/pod-publisher";

/// The repository root.
pub fn repo() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap().to_path_buf()
}

/// `deploy/`.
pub fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

/// `deploy/base/`: the manifests `deploy/` and its overlays build on.
pub fn base_dir() -> PathBuf {
    deploy_dir().join("base")
}

/// `deploy/aio/`: the Azure IoT Operations overlay.
pub fn aio_dir() -> PathBuf {
    deploy_dir().join("aio")
}

/// Every manifest: the base resources and the examples.
pub fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [base_dir(), deploy_dir().join("examples")] {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if is_yaml && path.file_name().is_some_and(|n| n != "kustomization.yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 4, "manifests not found: {files:?}");
    files
}

/// The path of `program`, or a panic saying why it is needed and how to install it.
pub fn require(program: &str, why: &str, install: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!("`{program}` is not installed; {why}. Install it with:\n    {install}")
    })
}

// ---------------------------------------------------------------------------------------------
// YAML.

/// Every non-empty YAML document of `path`, as JSON values.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Every `(file, document)` of every manifest.
pub fn all_documents() -> Vec<(PathBuf, Value)> {
    manifest_files()
        .into_iter()
        .flat_map(|file| {
            yaml_documents(&file)
                .into_iter()
                .map(move |doc| (file.clone(), doc))
        })
        .collect()
}

/// The pod spec of a Pod or Deployment.
pub fn pod_spec(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "Pod" => Some(&doc["spec"]),
        "Deployment" => Some(&doc["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// `(file, pod spec)` of every Pod and Deployment.
pub fn pod_specs() -> Vec<(PathBuf, Value)> {
    let specs: Vec<_> = all_documents()
        .into_iter()
        .filter_map(|(file, doc)| pod_spec(&doc).cloned().map(|spec| (file, spec)))
        .collect();
    assert!(specs.len() >= 3, "expected the Deployment and two examples");
    specs
}

/// `value` as a string, or a panic naming `what`.
pub fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

/// A container's `env`, with `valueFrom.fieldRef` shown as `<fieldRef:path>`.
pub fn container_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|var| {
                    let name = str_of(&var["name"], "env name").to_owned();
                    let value = match &var["value"] {
                        Value::String(s) => s.clone(),
                        Value::Null => format!(
                            "<fieldRef:{}>",
                            str_of(&var["valueFrom"]["fieldRef"]["fieldPath"], "fieldPath")
                        ),
                        other => panic!("env {name} has a non-string value {other}"),
                    };
                    (name, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `(mount path, volume)` of each of a container's mounts.
pub fn mounts<'a>(spec: &'a Value, container: &'a Value) -> Vec<(&'a str, bool, &'a Value)> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|mount| {
            let name = str_of(&mount["name"], "mount name");
            let volume = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("volume {name} is mounted but not defined"));
            (
                str_of(&mount["mountPath"], "mountPath"),
                mount["readOnly"].as_bool().unwrap_or(false),
                volume,
            )
        })
        .collect()
}

/// The containers of a pod spec.
pub fn containers(spec: &Value) -> &Vec<Value> {
    spec["containers"].as_array().unwrap()
}

// ---------------------------------------------------------------------------------------------
// What the binary says about itself.

/// What `pod-publisher --help` says about the flags and variables.
pub struct Help {
    /// The whole text.
    pub text: String,
    /// Every `--flag`.
    pub flags: BTreeSet<String>,
    /// Own variable -> flag.
    pub env_flags: BTreeMap<String, String>,
    /// Flag -> default.
    pub defaults: BTreeMap<String, String>,
    /// The AIO_* variables the help names.
    pub aio: BTreeSet<String>,
}

impl Help {
    /// The default of the flag that `variable` stands for.
    pub fn default_of(&self, variable: &str) -> Option<&str> {
        self.defaults
            .get(self.env_flags.get(variable)?)
            .map(String::as_str)
    }
}

/// `pod-publisher --help`, read once.
pub fn help() -> &'static Help {
    static HELP: OnceLock<Help> = OnceLock::new();
    HELP.get_or_init(|| {
        let output = run_bounded(
            Command::new(Publisher::binary()).arg("--help").env_clear(),
            TOOL_TIMEOUT,
        );
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        let mut help = Help {
            text: text.clone(),
            flags: BTreeSet::new(),
            env_flags: BTreeMap::new(),
            defaults: BTreeMap::new(),
            aio: BTreeSet::new(),
        };
        let mut current = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            let flag_part = trimmed.strip_prefix("-h, ").unwrap_or(trimmed);
            let flag_part = flag_part.strip_prefix("-V, ").unwrap_or(flag_part);
            if let Some(rest) = flag_part.strip_prefix("--") {
                let flag = format!("--{}", rest.split([' ', ',']).next().unwrap());
                help.flags.insert(flag.clone());
                current = Some(flag);
            } else if let (Some(rest), Some(flag)) = (trimmed.strip_prefix("[env: "), &current) {
                let name = rest.split('=').next().unwrap();
                help.env_flags.insert(name.to_owned(), flag.clone());
            } else if let (Some(rest), Some(flag)) = (trimmed.strip_prefix("[default: "), &current)
            {
                let value = rest.strip_suffix(']').unwrap();
                help.defaults.insert(flag.clone(), value.to_owned());
            }
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("AIO_") {
                    help.aio.insert(word.to_owned());
                }
            }
        }
        assert!(help.flags.contains("--host") && help.env_flags.contains_key("SATMQTT_HOST"));
        assert!(help.aio.contains("AIO_BROKER_HOSTNAME"));
        help
    })
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// The `kubernetes-validate` command: the script on PATH, else the module.
pub fn kubernetes_validate() -> Command {
    if let Some(program) = find_program("kubernetes-validate") {
        return Command::new(program);
    }
    if let Some(python) = find_program("python3") {
        let probe = run_bounded(
            Command::new(&python).args(["-c", "import kubernetes_validate"]),
            TOOL_TIMEOUT,
        );
        if probe.status.success() {
            let mut command = Command::new(python);
            command.args(["-m", "kubernetes_validate"]);
            return command;
        }
    }
    panic!(
        "kubernetes-validate is not installed: it validates deploy/ against the Kubernetes API \
         schemas. Install it with:\n    {VALIDATE_INSTALL_HINT}\n(`.ci/run` and `cargo xtask \
         test` install it)"
    )
}

/// `kubernetes-validate --strict` of `files` against Kubernetes `version`.
pub fn validate(files: &[PathBuf], version: &str) -> Output {
    let mut command = kubernetes_validate();
    command.args(["--strict", "--kubernetes-version", version]);
    command.args(files);
    run_bounded(&mut command, TOOL_TIMEOUT)
}

/// Asserts that every document of `files` passed validation against `version`, and that the
/// tool warned about nothing (it only warns, and exits 0, on an unknown kind or apiVersion).
#[track_caller]
pub fn assert_valid(files: &[PathBuf], documents: usize, version: &str) {
    let output = validate(files, version);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate {version} failed:\n{text}"
    );
    let passed = text.lines().filter(|l| l.contains(" passed for ")).count();
    let other: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" passed for "))
        .collect();
    assert!(other.is_empty(), "kubernetes-validate {version}:\n{text}");
    assert_eq!(passed, documents, "kubernetes-validate {version}:\n{text}");
}

/// `kubectl kustomize <dir>` (offline), written to a file in `into`.
pub fn kustomize(dir: &Path, into: &TempDir) -> PathBuf {
    let kubectl = require(
        "kubectl",
        "it renders deploy/'s kustomizations (kubectl kustomize, offline)",
        "apt-get install -y kubernetes-client",
    );
    let output = run_bounded(
        Command::new(kubectl).arg("kustomize").arg(dir),
        TOOL_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = into.path().join("rendered.yaml");
    fs::write(&rendered, &output.stdout).unwrap();
    rendered
}

/// The pod-publisher crate's version: the image tag.
pub fn pod_publisher_version() -> String {
    let manifest = fs::read_to_string(repo().join("examples/pod-publisher/Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

/// The value the binary would use for `own` (or its AIO twin `aio`) in `env`.
pub fn effective<'a>(
    help: &'a Help,
    env: &'a BTreeMap<String, String>,
    own: &str,
    aio: &str,
) -> &'a str {
    env.get(own)
        .or_else(|| env.get(aio))
        .map(String::as_str)
        .or_else(|| help.default_of(own))
        .unwrap_or_else(|| panic!("no value and no default for {own}"))
}

/// What a manifest's environment does to the real binary: it runs with exactly that
/// environment (field references filled in, the heartbeat in a temp dir) and stops at the
/// token, which does not exist here.
pub struct ManifestRun {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard error.
    pub log: String,
}

/// The binary's `configuration:` line for a manifest's environment.
pub fn configuration(env: &BTreeMap<String, String>) -> String {
    let run = run_with_manifest_env(env);
    run.log
        .lines()
        // A JSON line's message is its `msg` field.
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(json) => json["msg"].as_str().unwrap_or_default().to_owned(),
            Err(_) => l.to_owned(),
        })
        .find_map(|l| l.split("configuration: ").nth(1).map(str::to_owned))
        .unwrap_or_else(|| panic!("no configuration line:\n{}", run.log))
}

/// The value of `name` in a configuration line (`..., <name> <value> (<source>), ...`).
pub fn setting(configuration: &str, name: &str) -> String {
    configuration
        .split(&format!("{name} "))
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no {name} in {configuration}"))
        .to_owned()
}

/// Runs the binary with a manifest's environment; see [`ManifestRun`].
pub fn run_with_manifest_env(env: &BTreeMap<String, String>) -> ManifestRun {
    let dir = TempDir::new().unwrap();
    let mut command = Command::new(Publisher::binary());
    command.env_clear();
    for (name, value) in env {
        let value = if value == "<fieldRef:metadata.name>" {
            "manifest-pod-0".to_owned()
        } else if name == "SATMQTT_HEARTBEAT_FILE" {
            dir.path().join("heartbeat").display().to_string()
        } else {
            value.clone()
        };
        command.env(name, value);
    }
    let output = run_bounded(&mut command, RUN_TIMEOUT);
    ManifestRun {
        status: output.status,
        log: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The static binary, as the Dockerfile builds it.

// The static binary, as the Dockerfile builds it.

/// The static binary, built once per test process.
pub fn static_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_static)
}

/// `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target
/// <arch>-unknown-linux-gnu -p pod-publisher`, into `target/static` so the main build's cache
/// stays valid. `cargo xtask test` runs the same build as a step before the tests, so here it is
/// normally a no-op.
pub fn build_static() -> PathBuf {
    let root = repo();
    let triple = static_build::triple();
    let logs = TempDir::new().unwrap();
    let mut child = static_build::command(&root)
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(logs.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_until(STATIC_BUILD_TIMEOUT, || child.try_wait().ok().flatten());
    let stderr = fs::read_to_string(logs.path().join("stderr")).unwrap_or_default();
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "the static build failed ({status}); is the {triple} target installed \
             (rustup target add {triple})?\n{stderr}"
        ),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the static build took longer than {STATIC_BUILD_TIMEOUT:?}");
        }
    }
    static_build::binary(&root)
}

/// `(has an interpreter, number of needed shared libraries)` of an ELF executable.
pub fn elf_linkage(path: &Path) -> (bool, usize) {
    use object::read::elf::{Dyn as _, ElfFile64, ProgramHeader as _};
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file = ElfFile64::<object::Endianness>::parse(&*bytes)
        .unwrap_or_else(|e| panic!("{} is not a 64-bit ELF file: {e}", path.display()));
    let endian = file.endian();
    let headers = file.elf_program_headers();
    let interp = headers
        .iter()
        .any(|h| h.p_type(endian) == object::elf::PT_INTERP);
    let needed = headers
        .iter()
        .filter_map(|h| {
            h.dynamic(endian, &*bytes)
                .unwrap_or_else(|e| panic!("{}: bad dynamic segment: {e}", path.display()))
        })
        .flatten()
        .filter(|d| d.d_tag(endian) == u64::from(object::elf::DT_NEEDED))
        .count();
    (interp, needed)
}

/// A root directory holding nothing but the static binary and the files a test adds, readable
/// by the image's user.
pub struct EmptyRoot {
    dir: TempDir,
    output: TempDir,
}

#[allow(clippy::new_without_default)] // Creating one needs root and builds: not a default.
impl EmptyRoot {
    /// The root with the static binary in it, as the image has it.
    pub fn new() -> EmptyRoot {
        assert!(
            is_root(),
            "root is needed: the static binary runs under chroot (CI runs the tests as root)"
        );
        require(
            "chroot",
            "it runs the static binary in an empty root",
            "apt-get install -y coreutils",
        );
        let dir = TempDir::new().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let root = EmptyRoot {
            dir,
            output: TempDir::new().unwrap(),
        };
        root.add(IMAGE_BINARY, &fs::read(static_binary()).unwrap(), 0o755);
        root
    }

    /// Adds a file (and its directories) at `path` in the root.
    pub fn add(&self, path: &str, contents: &[u8], mode: u32) {
        let full = self.dir.path().join(path.trim_start_matches('/'));
        let mut created = self.dir.path().to_path_buf();
        for part in Path::new(path.trim_start_matches('/'))
            .parent()
            .unwrap()
            .components()
        {
            created.push(part);
            if !created.exists() {
                fs::create_dir(&created).unwrap();
                fs::set_permissions(&created, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        fs::write(&full, contents).unwrap();
        fs::set_permissions(&full, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Every file in the root, relative to it.
    pub fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    out.push(format!("/{}", path.strip_prefix(root).unwrap().display()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }

    /// Runs `/pod-publisher args` in the root as the image's user, with an empty environment,
    /// and waits (bounded) for it to exit.
    pub fn run(&self, args: &[&str]) -> (ExitStatus, String) {
        let stderr = self.output.path().join("stderr");
        let mut child = Command::new(find_program("chroot").unwrap())
            .arg(format!("--userspec={IMAGE_UID}:{IMAGE_UID}"))
            .arg(self.dir.path())
            .arg(IMAGE_BINARY)
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let status = wait_until(RUN_TIMEOUT, || child.try_wait().ok().flatten());
        let log = fs::read_to_string(&stderr).unwrap_or_default();
        match status {
            Some(status) => (status, log),
            None => {
                kill(&mut child);
                panic!("the static binary did not exit within {RUN_TIMEOUT:?}:\n{log}")
            }
        }
    }
}

/// Kills and reaps `child`.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// DNS, as a cluster's.

/// A DNS server (dnsmasq) on `127.a.b.c:53` that answers A queries for one name with
/// 127.0.0.1, AAAA queries for it with no address, and anything else with NXDOMAIN, as a
/// cluster's DNS answers for a Service. It logs every query; stopped on drop.
pub struct Dns {
    /// Where it listens (port 53).
    pub address: Ipv4Addr,
    child: Child,
    dir: TempDir,
}

impl Dns {
    /// Starts dnsmasq knowing only `name`, on a random loopback address (no clash with a local
    /// resolver or a parallel test).
    pub fn start(name: &str) -> Dns {
        let dnsmasq = require(
            "dnsmasq",
            "it answers the static binary's DNS queries as a cluster's DNS does",
            "apt-get install -y dnsmasq-base",
        );
        assert!(
            is_root(),
            "root is needed: the DNS server listens on port 53"
        );
        let dir = TempDir::new().unwrap();
        let log = dir.path().join("dnsmasq.log");
        for _ in 0..16 {
            let r = random_bytes(3);
            let address = Ipv4Addr::new(127, r[0].max(1), r[1], r[2].clamp(1, 254));
            if UdpSocket::bind((address, 53)).is_err() {
                continue;
            }
            let mut child = Command::new(&dnsmasq)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--user=root",
                ])
                // Authoritative for everything: the one name, NXDOMAIN for the rest.
                .args([
                    "--no-resolv",
                    "--no-hosts",
                    "--local=/#/",
                    "--bind-interfaces",
                ])
                .arg(format!("--host-record={name},127.0.0.1"))
                .arg(format!("--listen-address={address}"))
                .arg("--port=53")
                .arg("--log-queries")
                .arg(format!("--log-facility={}", log.display()))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.path().join("stderr")).unwrap())
                .spawn()
                .unwrap();
            // It logs `started` once its socket is bound; it exits if the bind fails.
            let started = wait_until(TOOL_TIMEOUT, || {
                if fs::read_to_string(&log).is_ok_and(|l| l.contains("started, version")) {
                    return Some(true);
                }
                child.try_wait().ok().flatten().map(|_| false)
            });
            match started {
                Some(true) => {
                    return Dns {
                        address,
                        child,
                        dir,
                    }
                }
                Some(false) => continue,
                None => {
                    kill(&mut child);
                    panic!("dnsmasq did not start within {TOOL_TIMEOUT:?}");
                }
            }
        }
        let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        panic!("dnsmasq could not listen on any 127.x.y.z:53:\n{stderr}")
    }

    /// The queries so far, as `"<type> <name>"` (e.g. `"A broker.example"`).
    pub fn queries(&self) -> Vec<String> {
        let log = fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let (_, query) = line.split_once(" query[")?;
                let (kind, rest) = query.split_once("] ")?;
                let name = rest.split(' ').next()?;
                Some(format!("{kind} {name}"))
            })
            .collect()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
