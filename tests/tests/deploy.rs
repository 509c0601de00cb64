//! The Kubernetes deployment in `deploy/`, checked without a cluster:
//!
//! - every manifest is valid for Kubernetes 1.31 and 1.37 (`kubernetes-validate --strict`), and
//!   so is what `kubectl kustomize deploy/` renders;
//! - the manifests name only flags and variables the binary knows, their environment is
//!   accepted by the real binary, and their paths, audience, probe, grace period and security
//!   context agree with the binary and the Dockerfile;
//! - the binary built as the Dockerfile builds it is static, and runs from an empty root (only
//!   the binary, the token and a CA file, as user 65532) against a real mosquitto, resolving the
//!   broker's name through `/etc/resolv.conf` (a DNS responder in this test answers like a
//!   cluster's) or `/etc/hosts`, as it must in a distroless image;
//! - the liveness heartbeat stays fresh while the publisher publishes or retries, and goes stale
//!   when its loop is wedged (SIGSTOP).
//!
//! Needs: mosquitto, python3 with `kubernetes-validate` (which brings PyYAML), kubectl (for
//! `kubectl kustomize`) and root (chroot, a DNS responder on port 53). A missing one fails the
//! test that needs it, naming it; nothing is skipped. Docker is not needed: the image itself is
//! not built here.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use satmqtt_tests::static_build;
use satmqtt_tests::tools::{find_program, is_root, random_bytes, run_bounded};
use satmqtt_tests::wait::wait_until;
use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, Broker, Publisher, Sequence, Subscriber, TestBed, TestPki,
};
use serde_json::Value;
use tempfile::TempDir;

/// Kubernetes versions the manifests are validated against: the oldest we support and the
/// newest `kubernetes-validate` 1.37 knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.31.0", "1.37.0"];
const VALIDATE_INSTALL_HINT: &str = "python3 -m pip install 'kubernetes-validate==1.37.0'";
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the static release build (LTO; about a minute here when cold).
const STATIC_BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// The image's user (deploy/Dockerfile `USER`, the Deployment's `runAsUser`).
const IMAGE_UID: u32 = 65532;
/// Where the image puts the binary.
const IMAGE_BINARY: &str = "/pod-publisher";

fn repo() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap().to_path_buf()
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

/// Every manifest: the top-level resources and the examples.
fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [deploy_dir(), deploy_dir().join("examples")] {
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

fn require(program: &str, why: &str, install: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!("`{program}` is not installed; {why}. Install it with:\n    {install}")
    })
}

// ---------------------------------------------------------------------------------------------
// YAML, through PyYAML (it comes with kubernetes-validate, which these tests need anyway).

const YAML_TO_JSON: &str = "import json, sys, yaml\n\
with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
json.dump(docs, sys.stdout)\n";

fn yaml_documents(path: &Path) -> Vec<Value> {
    let python = require(
        "python3",
        "it reads the manifests (PyYAML) and runs kubernetes-validate",
        "apt-get install -y python3 python3-pip",
    );
    let output = run_bounded(
        Command::new(python).args(["-c", YAML_TO_JSON]).arg(path),
        TOOL_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "reading {} as YAML failed (PyYAML comes with kubernetes-validate: {VALIDATE_INSTALL_HINT}):\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("unexpected YAML conversion result {other}"),
    }
}

/// Every `(file, document)` of every manifest.
fn all_documents() -> Vec<(PathBuf, Value)> {
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
fn pod_spec(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "Pod" => Some(&doc["spec"]),
        "Deployment" => Some(&doc["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// `(file, pod spec)` of every Pod and Deployment.
fn pod_specs() -> Vec<(PathBuf, Value)> {
    let specs: Vec<_> = all_documents()
        .into_iter()
        .filter_map(|(file, doc)| pod_spec(&doc).cloned().map(|spec| (file, spec)))
        .collect();
    assert!(specs.len() >= 3, "expected the Deployment and two examples");
    specs
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

/// A container's `env`, with `valueFrom.fieldRef` shown as `<fieldRef:path>`.
fn container_env(container: &Value) -> BTreeMap<String, String> {
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
fn mounts<'a>(spec: &'a Value, container: &'a Value) -> Vec<(&'a str, bool, &'a Value)> {
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

fn containers(spec: &Value) -> &Vec<Value> {
    spec["containers"].as_array().unwrap()
}

// ---------------------------------------------------------------------------------------------
// What the binary says about itself.

struct Help {
    text: String,
    flags: BTreeSet<String>,
    /// Own variable -> flag.
    env_flags: BTreeMap<String, String>,
    /// Flag -> default.
    defaults: BTreeMap<String, String>,
    /// The AIO_* variables the help names.
    aio: BTreeSet<String>,
}

impl Help {
    /// The default of the flag that `variable` stands for.
    fn default_of(&self, variable: &str) -> Option<&str> {
        self.defaults
            .get(self.env_flags.get(variable)?)
            .map(String::as_str)
    }
}

fn help() -> &'static Help {
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
fn kubernetes_validate() -> Command {
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

fn validate(files: &[PathBuf], version: &str) -> Output {
    let mut command = kubernetes_validate();
    command.args(["--strict", "--kubernetes-version", version]);
    command.args(files);
    run_bounded(&mut command, TOOL_TIMEOUT)
}

/// Asserts that every document of `files` passed validation against `version`, and that the
/// tool warned about nothing (it only warns, and exits 0, on an unknown kind or apiVersion).
#[track_caller]
fn assert_valid(files: &[PathBuf], documents: usize, version: &str) {
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

#[test]
fn every_manifest_is_valid_for_kubernetes() {
    let files = manifest_files();
    let documents = files.iter().map(|f| yaml_documents(f).len()).sum();
    for version in KUBERNETES_VERSIONS {
        assert_valid(&files, documents, version);
    }
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    // So that a passing validation means something: an unknown field (strict), and a kind
    // that does not exist (only a warning, which assert_valid turns into a failure).
    let dir = TempDir::new().unwrap();
    let deployment = fs::read_to_string(deploy_dir().join("deployment.yaml")).unwrap();
    let typo = dir.path().join("typo.yaml");
    fs::write(
        &typo,
        deployment.replace(
            "terminationGracePeriodSeconds:",
            "terminationGracePeriodSecond:",
        ),
    )
    .unwrap();
    let output = validate(std::slice::from_ref(&typo), KUBERNETES_VERSIONS[0]);
    assert!(
        !output.status.success(),
        "an unknown field passed strict validation: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let kind = dir.path().join("kind.yaml");
    fs::write(
        &kind,
        deployment.replace("kind: Deployment", "kind: Deploymnet"),
    )
    .unwrap();
    let caught = std::panic::catch_unwind(|| assert_valid(&[kind], 1, KUBERNETES_VERSIONS[0]));
    assert!(caught.is_err(), "an unknown kind passed validation");
}

#[test]
fn the_kustomization_lists_every_resource_and_renders_valid_objects() {
    let kustomization = yaml_documents(&deploy_dir().join("kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "resource").to_owned())
        .collect();
    let top_level: BTreeSet<String> = manifest_files()
        .iter()
        .filter(|f| f.parent() == Some(deploy_dir().as_path()))
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, top_level, "deploy/kustomization.yaml resources");

    let kubectl = require(
        "kubectl",
        "it renders deploy/kustomization.yaml (kubectl kustomize, offline)",
        "see https://kubernetes.io/docs/tasks/tools/",
    );
    let output = run_bounded(
        Command::new(kubectl).arg("kustomize").arg(deploy_dir()),
        TOOL_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/ failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = TempDir::new().unwrap();
    let rendered = dir.path().join("rendered.yaml");
    fs::write(&rendered, &output.stdout).unwrap();
    let docs = yaml_documents(&rendered);
    let kinds: BTreeSet<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                str_of(&d["kind"], "kind"),
                str_of(&d["metadata"]["name"], "name"),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            ("Deployment", "mqtt-client"),
            ("ServiceAccount", "mqtt-client")
        ])
    );
    for version in KUBERNETES_VERSIONS {
        assert_valid(std::slice::from_ref(&rendered), docs.len(), version);
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests against the binary and the Dockerfile.

#[test]
fn manifests_name_only_flags_and_variables_the_binary_knows() {
    let help = help();
    for (file, spec) in pod_specs() {
        for container in containers(&spec) {
            for name in container_env(container).keys() {
                let known = help.env_flags.contains_key(name)
                    || help.aio.contains(name)
                    || ["POD_NAME", "HOSTNAME"].contains(&name.as_str())
                        && help.text.contains(&format!("${name}"));
                assert!(
                    known,
                    "{}: env {name} is not in `pod-publisher --help`",
                    file.display()
                );
            }
            let mut words: Vec<&str> = Vec::new();
            for key in ["command", "args"] {
                words.extend(
                    container[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|w| str_of(w, key)),
                );
            }
            if let Some(probe) = container["livenessProbe"]["exec"]["command"].as_array() {
                let probe: Vec<&str> = probe.iter().map(|w| str_of(w, "probe")).collect();
                assert_eq!(probe[0], IMAGE_BINARY, "{}: probe binary", file.display());
                words.extend(&probe[1..]);
            }
            for word in words.iter().filter(|w| w.starts_with("--")) {
                let flag = word.split('=').next().unwrap();
                assert!(
                    help.flags.contains(flag),
                    "{}: {flag} is not a flag of pod-publisher",
                    file.display()
                );
            }
            let image = str_of(&container["image"], "image");
            assert_eq!(
                image,
                format!("satmqtt/pod-publisher:{}", pod_publisher_version()),
                "{}: the image tag follows the pod-publisher version",
                file.display()
            );
        }
    }
}

fn pod_publisher_version() -> String {
    let manifest = fs::read_to_string(repo().join("examples/pod-publisher/Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

/// The value the binary would use for `own` (or its AIO twin `aio`) in `env`.
fn effective<'a>(
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

#[test]
fn the_projected_token_is_where_the_binary_reads_it() {
    let service_accounts: BTreeSet<String> = all_documents()
        .iter()
        .filter(|(_, d)| d["kind"] == "ServiceAccount")
        .map(|(_, d)| str_of(&d["metadata"]["name"], "name").to_owned())
        .collect();
    for (file, spec) in pod_specs() {
        let shown = file.display();
        assert_eq!(spec["serviceAccountName"], "mqtt-client", "{shown}");
        assert!(service_accounts.contains("mqtt-client"));
        for container in containers(&spec) {
            let configuration = configuration(&container_env(container));
            let token_file = setting(&configuration, "token file");
            let (mount, read_only, volume) = mounts(&spec, container)
                .into_iter()
                .find(|(path, _, _)| token_file.starts_with(&format!("{path}/")))
                .unwrap_or_else(|| panic!("{shown}: nothing is mounted at {token_file}"));
            assert!(read_only, "{shown}: the token volume should be read-only");
            assert_eq!(mount, "/var/run/secrets/tokens", "{shown}");
            let source = &volume["projected"]["sources"][0]["serviceAccountToken"];
            assert_eq!(source["path"], "mqtt-client-token", "{shown}");
            // The audience follows the login scheme: AIO_SAT_FILE (without SATMQTT_AUTH)
            // implies K8S-SAT, Azure IoT Operations' `aio-internal`; otherwise `$sat`, Azure IoT
            // MQ's `azedge-dmqtt`.
            let env = container_env(container);
            let k8s_sat = env.contains_key("AIO_SAT_FILE") && !env.contains_key("SATMQTT_AUTH");
            let audience = if k8s_sat {
                "aio-internal"
            } else {
                "azedge-dmqtt"
            };
            assert_eq!(source["audience"], audience, "{shown}");
            assert_eq!(source["expirationSeconds"], 86400, "{shown}");
            assert_eq!(
                format!("{mount}/{}", str_of(&source["path"], "path")),
                token_file,
                "{shown}"
            );
        }
    }
}

#[test]
fn the_deployment_gives_every_replica_its_own_client_id() {
    let docs = yaml_documents(&deploy_dir().join("deployment.yaml"));
    let spec = pod_spec(&docs[0]).unwrap();
    let env = container_env(&containers(spec)[0]);
    assert_eq!(
        env.get("POD_NAME").map(String::as_str),
        Some("<fieldRef:metadata.name>")
    );
    assert!(
        !env.contains_key("SATMQTT_CLIENT_ID") && !env.contains_key("AIO_MQTT_CLIENT_ID"),
        "a fixed client id would make replicas disconnect each other"
    );
    // The AIO example takes the pod name too.
    let docs = yaml_documents(&deploy_dir().join("examples/aio-sdk-env.yaml"));
    let env = container_env(&containers(pod_spec(&docs[0]).unwrap())[0]);
    assert_eq!(
        env.get("AIO_MQTT_CLIENT_ID").map(String::as_str),
        Some("<fieldRef:metadata.name>")
    );
}

#[test]
fn with_tls_the_ca_bundle_comes_from_a_mounted_config_map() {
    for (file, spec) in pod_specs() {
        for container in containers(&spec) {
            let configuration = configuration(&container_env(container));
            if setting(&configuration, "TLS") == "off" {
                continue;
            }
            // An in-cluster broker's certificate comes from a private CA: the system trust
            // store would not do.
            let ca_file = setting(&configuration, "CA file");
            let (mount, read_only, volume) = mounts(&spec, container)
                .into_iter()
                .find(|(path, _, _)| ca_file.starts_with(&format!("{path}/")))
                .unwrap_or_else(|| panic!("{}: nothing is mounted at {ca_file}", file.display()));
            assert!(read_only);
            let items = volume["configMap"]["items"].as_array().unwrap();
            let item_path = format!("{mount}/{}", str_of(&items[0]["path"], "item path"));
            assert_eq!(item_path, ca_file, "{}", file.display());
        }
    }
}

#[test]
fn the_liveness_probe_checks_the_heartbeat_on_a_writable_volume_with_enough_slack() {
    let docs = yaml_documents(&deploy_dir().join("deployment.yaml"));
    let spec = pod_spec(&docs[0]).unwrap();
    let container = &containers(spec)[0];
    let env = container_env(container);
    let heartbeat = env
        .get("SATMQTT_HEARTBEAT_FILE")
        .expect("SATMQTT_HEARTBEAT_FILE");
    let probe: Vec<&str> = container["livenessProbe"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| str_of(w, "probe"))
        .collect();
    assert_eq!(probe[1..3], ["--check-heartbeat", heartbeat.as_str()]);
    assert_eq!(probe[3], "--max-age-s");
    let max_age_s: u64 = probe[4].parse().unwrap();

    // The only writable place in a read-only root: an emptyDir.
    let (_, read_only, volume) = mounts(spec, container)
        .into_iter()
        .find(|(path, _, _)| heartbeat.starts_with(&format!("{path}/")))
        .unwrap_or_else(|| panic!("nothing is mounted at {heartbeat}"));
    assert!(!read_only && volume.get("emptyDir").is_some(), "{volume}");

    // The binary states its longest healthy silence for this configuration.
    let run = run_with_manifest_env(&env);
    let bound: u64 = run
        .log
        .split("at least every ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no heartbeat bound in the log:\n{}", run.log));
    assert!(
        max_age_s > bound,
        "--max-age-s {max_age_s} is not above the publisher's longest healthy silence, {bound} s"
    );
    let period = container["livenessProbe"]["periodSeconds"]
        .as_u64()
        .unwrap();
    assert!(period < max_age_s);
}

#[test]
fn the_grace_period_covers_the_drain_timeout() {
    let help = help();
    for (file, spec) in pod_specs() {
        let grace_s = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
        for container in containers(&spec) {
            let env = container_env(container);
            let drain_ms: u64 = effective(help, &env, "SATMQTT_DRAIN_TIMEOUT_MS", "-")
                .parse()
                .unwrap();
            // The drain, then DISCONNECT and exit: 2 s for those is generous.
            assert!(
                grace_s * 1000 >= drain_ms + 2000,
                "{}: grace {grace_s} s for a {drain_ms} ms drain",
                file.display()
            );
            assert!(
                grace_s * 1000 <= drain_ms + 30_000,
                "{}: grace far too long",
                file.display()
            );
        }
    }
}

#[test]
fn pods_run_non_root_read_only_without_privileges_or_capabilities() {
    for (file, spec) in pod_specs() {
        let shown = file.display();
        let pod = &spec["securityContext"];
        assert_eq!(pod["runAsNonRoot"], true, "{shown}");
        assert_eq!(pod["runAsUser"], IMAGE_UID, "{shown}");
        assert_eq!(pod["runAsGroup"], IMAGE_UID, "{shown}");
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{shown}");
        assert_eq!(spec["automountServiceAccountToken"], false, "{shown}");
        for container in containers(&spec) {
            let sc = &container["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{shown}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{shown}");
            assert_eq!(sc["privileged"], false, "{shown}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{shown}"
            );
            assert!(sc["capabilities"].get("add").is_none(), "{shown}");
            let resources = &container["resources"];
            for key in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        resources[key][resource].is_string(),
                        "{shown}: {key}.{resource} missing"
                    );
                }
            }
        }
    }
}

#[test]
fn the_dockerfile_builds_a_static_binary_into_a_non_root_distroless_image() {
    let dockerfile = fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let instructions: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].contains("bookworm"),
        "the build stage's glibc is what the tests check"
    );
    let last = froms.last().unwrap();
    assert!(
        last.starts_with("FROM scratch") || last.starts_with("FROM gcr.io/distroless/static"),
        "final stage: {last}"
    );
    let build = instructions
        .iter()
        .find(|l| l.starts_with("RUN ") && l.contains("cargo build"))
        .expect("a RUN cargo build line");
    // The Dockerfile builds exactly what `static_build::command` (xtask, these tests) builds.
    assert!(build.contains("cargo build"), "{build}");
    for part in static_build::ARGS
        .iter()
        .chain(["RUSTFLAGS='-C target-feature=+crt-static'"].iter())
    {
        assert!(build.contains(part), "{part:?} missing from {build}");
    }
    assert!(build.contains("-unknown-linux-gnu"), "{build}");
    let after_last_from = &instructions[instructions.iter().position(|l| l == *last).unwrap()..];
    let user = after_last_from
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the final stage");
    assert_eq!(
        user,
        format!("{IMAGE_UID}:{IMAGE_UID}"),
        "numeric, non-root"
    );
    let entrypoint = after_last_from
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    assert_eq!(entrypoint, format!("[\"{IMAGE_BINARY}\"]"));
    assert!(deploy_dir().join("Dockerfile.dockerignore").exists());
}

/// What a manifest's environment does to the real binary: it runs with exactly that
/// environment (field references filled in, the heartbeat in a temp dir) and stops at the
/// token, which does not exist here.
struct ManifestRun {
    status: ExitStatus,
    log: String,
}

/// The binary's `configuration:` line for a manifest's environment.
fn configuration(env: &BTreeMap<String, String>) -> String {
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
fn setting(configuration: &str, name: &str) -> String {
    configuration
        .split(&format!("{name} "))
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no {name} in {configuration}"))
        .to_owned()
}

fn run_with_manifest_env(env: &BTreeMap<String, String>) -> ManifestRun {
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

#[test]
fn the_binary_accepts_every_manifests_environment() {
    for (file, spec) in pod_specs() {
        for container in containers(&spec) {
            let env = container_env(container);
            let run = run_with_manifest_env(&env);
            let shown = file.display();
            // Past the configuration, stopped by the missing token: exit 2, naming its path.
            assert_eq!(run.status.code(), Some(2), "{shown}:\n{}", run.log);
            assert!(run.log.contains("configuration: "), "{shown}:\n{}", run.log);
            assert!(
                run.log
                    .contains("/var/run/secrets/tokens/mqtt-client-token"),
                "{shown}:\n{}",
                run.log
            );
            assert!(!run.log.contains("invalid value"), "{shown}:\n{}", run.log);
            let client_id = if env.contains_key("SATMQTT_CLIENT_ID") {
                "client id sampleid (SATMQTT_CLIENT_ID)"
            } else if env.contains_key("AIO_MQTT_CLIENT_ID") {
                "client id manifest-pod-0 (AIO_MQTT_CLIENT_ID)"
            } else {
                "client id manifest-pod-0 (POD_NAME)"
            };
            assert!(
                run.log.contains(client_id),
                "{shown}: {client_id}\n{}",
                run.log
            );
            if env.contains_key("SATMQTT_LOG_FORMAT") {
                for line in run.log.lines() {
                    let _: Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{shown}: not JSON ({e}): {line}"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The static binary, as the Dockerfile builds it.

fn static_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_static)
}

/// `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target
/// <arch>-unknown-linux-gnu -p pod-publisher`, into `target/static` so the main build's cache
/// stays valid. `cargo xtask test` runs the same build as a step before the tests, so here it is
/// normally a no-op.
fn build_static() -> PathBuf {
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

/// Program header types and dynamic tags the check needs (ELF specification).
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

/// `(has PT_INTERP, number of DT_NEEDED entries)` of a 64-bit little-endian ELF file.
fn elf_linkage(bytes: &[u8]) -> (bool, usize) {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    assert_eq!(bytes[5], 1, "not little-endian");
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36) as usize, u16_at(0x38));
    let mut interp = false;
    let mut needed = 0;
    for i in 0..usize::from(phnum) {
        let header = phoff + i * phentsize;
        match u32_at(header) {
            PT_INTERP => interp = true,
            PT_DYNAMIC => {
                let (offset, size) = (u64_at(header + 8) as usize, u64_at(header + 32) as usize);
                for entry in (offset..offset + size).step_by(16) {
                    match u64_at(entry) {
                        DT_NULL => break,
                        DT_NEEDED => needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (interp, needed)
}

#[test]
fn elf_linkage_tells_a_dynamic_executable() {
    // The dynamically linked debug build: an interpreter, and libc among its needs.
    let bytes = fs::read(Publisher::binary()).unwrap();
    let (interp, needed) = elf_linkage(&bytes);
    assert!(interp && needed >= 1, "interp {interp}, needed {needed}");
}

#[test]
fn the_static_binary_needs_no_interpreter_and_no_shared_library() {
    let bytes = fs::read(static_binary()).unwrap();
    assert_eq!(
        elf_linkage(&bytes),
        (false, 0),
        "{}",
        static_binary().display()
    );
}

/// A root directory holding nothing but the static binary and the files a test adds, readable
/// by the image's user.
struct EmptyRoot {
    dir: TempDir,
    output: TempDir,
}

impl EmptyRoot {
    fn new() -> EmptyRoot {
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

    fn add(&self, path: &str, contents: &[u8], mode: u32) {
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
    fn files(&self) -> Vec<String> {
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
    fn run(&self, args: &[&str]) -> (ExitStatus, String) {
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

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The token the pod sees, at the projected volume's path (the binary's default).
const POD_TOKEN: &str = "/var/run/secrets/tokens/mqtt-client-token";
/// Messages per empty-root run.
const ROOT_COUNT: u64 = 5;

#[test]
fn the_static_binary_publishes_over_tls_from_an_empty_root() {
    let pki = TestPki::new();
    let token = fake_jwt(3600);
    let broker = Broker::start_tls(&token, &pki.listener(false));
    let subscriber = Subscriber::start(&broker, "sampletopic");
    let root = EmptyRoot::new();
    root.add(POD_TOKEN, token.as_bytes(), 0o644);
    root.add(
        "/var/run/certs/ca.crt",
        &fs::read(pki.ca_file()).unwrap(),
        0o644,
    );
    assert_eq!(
        root.files(),
        [IMAGE_BINARY, "/var/run/certs/ca.crt", POD_TOKEN],
        "the root holds nothing else"
    );

    let port = broker.tls_port().unwrap().to_string();
    let count = ROOT_COUNT.to_string();
    let (status, log) = root.run(&[
        "--host",
        Broker::HOST,
        "--port",
        &port,
        "--tls",
        "--ca-file",
        "/var/run/certs/ca.crt",
        "--server-name",
        "localhost",
        "--client-id",
        "static-tls",
        "--count",
        &count,
        "--interval-ms",
        "0",
    ]);
    assert!(status.success(), "{status}\n{log}");
    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT))
        .assert_contiguous(0, ROOT_COUNT);
    assert_eq!(broker.events().connects("static-tls").len(), 1);
    assert_no_token_leak("the static binary's log", &log, &token);
}

/// A DNS responder on `127.a.b.c:53` that answers A queries for one name with 127.0.0.1,
/// AAAA queries for it with no address, and anything else with NXDOMAIN, as a cluster's DNS
/// answers for a Service. Stopped on drop.
struct DnsResponder {
    address: Ipv4Addr,
    queries: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsResponder {
    fn start(name: &str) -> DnsResponder {
        // A random loopback address: no clash with a local resolver or a parallel test.
        let socket = (0..16)
            .find_map(|_| {
                let r = random_bytes(3);
                let address = Ipv4Addr::new(127, r[0].max(1), r[1], r[2].clamp(1, 254));
                UdpSocket::bind(SocketAddr::from((address, 53))).ok()
            })
            .expect("binding a DNS responder on 127.x.y.z:53 (root is needed for port 53)");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let address = match socket.local_addr().unwrap() {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => unreachable!(),
        };
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped, name) = (Arc::clone(&queries), Arc::clone(&stop), name.to_owned());
        let thread = std::thread::spawn(move || {
            let mut packet = [0u8; 512];
            while !stopped.load(Ordering::SeqCst) {
                let (len, from) = match socket.recv_from(&mut packet) {
                    Ok(received) => received,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue
                    }
                    Err(e) => panic!("DNS responder: {e}"),
                };
                if let Some((answer, query)) = dns_answer(&packet[..len], &name) {
                    seen.lock().unwrap().push(query);
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        DnsResponder {
            address,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The response to one query, and the query as `"<type> <name>"`; `None` if malformed.
fn dns_answer(query: &[u8], known: &str) -> Option<(Vec<u8>, String)> {
    const TYPE_A: u16 = 1;
    const TYPE_AAAA: u16 = 28;
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    while *query.get(at)? != 0 {
        let len = usize::from(query[at]);
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let name = labels.join(".");
    let found = name.eq_ignore_ascii_case(known);
    let answers = u16::from(found && qtype == TYPE_A);
    // QR, opcode 0, RD copied, RA; rcode 3 (NXDOMAIN) for an unknown name.
    let flags = 0x8080 | (u16::from(query[2] & 1) << 8) | if found { 0 } else { 3 };
    let mut answer = Vec::new();
    answer.extend_from_slice(&query[..2]);
    answer.extend_from_slice(&flags.to_be_bytes());
    answer.extend_from_slice(&[0, 1]); // one question
    answer.extend_from_slice(&answers.to_be_bytes());
    answer.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional records
    answer.extend_from_slice(query.get(12..question_end)?);
    if answers == 1 {
        answer.extend_from_slice(&[0xc0, 0x0c]); // the name: pointer to the question's
        answer.extend_from_slice(&TYPE_A.to_be_bytes());
        answer.extend_from_slice(&[0, 1]); // class IN
        answer.extend_from_slice(&30u32.to_be_bytes()); // TTL
        answer.extend_from_slice(&[0, 4, 127, 0, 0, 1]);
    }
    let kind = match qtype {
        TYPE_A => "A",
        TYPE_AAAA => "AAAA",
        _ => "other",
    };
    Some((answer, format!("{kind} {name}")))
}

#[test]
fn the_static_binary_resolves_a_service_name_through_resolv_conf_in_an_empty_root() {
    // What the kubelet writes into every container, pod in namespace `satmqtt-test`.
    const FQDN: &str = "mqtt-broker.satmqtt-test.svc.cluster.local";
    let dns = DnsResponder::start(FQDN);
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let root = EmptyRoot::new();
    root.add(POD_TOKEN, bed.token.as_bytes(), 0o644);
    let resolv_conf = format!(
        "search satmqtt-test.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver {}\noptions ndots:5\n",
        dns.address
    );
    root.add("/etc/resolv.conf", resolv_conf.as_bytes(), 0o644);

    let port = bed.broker.port().to_string();
    let count = ROOT_COUNT.to_string();
    let (status, log) = root.run(&[
        "--host",
        "mqtt-broker",
        "--port",
        &port,
        "--client-id",
        "static-dns",
        "--count",
        &count,
        "--interval-ms",
        "0",
    ]);
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains(&format!("on 127.0.0.1:{port}")), "{log}");
    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT))
        .assert_contiguous(0, ROOT_COUNT);
    let queries = dns.queries();
    assert!(queries.contains(&format!("A {FQDN}")), "{queries:?}");
}

#[test]
fn the_static_binary_resolves_a_name_from_etc_hosts_in_an_empty_root() {
    // Kubernetes `hostAliases` end up in /etc/hosts; the DNS server does not know the name.
    let dns = DnsResponder::start("unrelated.example");
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let root = EmptyRoot::new();
    root.add(POD_TOKEN, bed.token.as_bytes(), 0o644);
    root.add("/etc/hosts", b"127.0.0.1\tbroker.hosts.test\n", 0o644);
    root.add(
        "/etc/resolv.conf",
        format!("nameserver {}\n", dns.address).as_bytes(),
        0o644,
    );

    let port = bed.broker.port().to_string();
    let count = ROOT_COUNT.to_string();
    let (status, log) = root.run(&[
        "--host",
        "broker.hosts.test",
        "--port",
        &port,
        "--client-id",
        "static-hosts",
        "--count",
        &count,
        "--interval-ms",
        "0",
    ]);
    assert!(status.success(), "{status}\n{log}");
    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT))
        .assert_contiguous(0, ROOT_COUNT);
}

// ---------------------------------------------------------------------------------------------
// Liveness.

/// `pod-publisher --check-heartbeat <file> --max-age-s <max_age_s>`: exit code and output.
fn check_heartbeat(file: &Path, max_age_s: u64) -> (Option<i32>, String) {
    let output = run_bounded(
        Command::new(Publisher::binary())
            .env_clear()
            .arg("--check-heartbeat")
            .arg(file)
            .args(["--max-age-s", &max_age_s.to_string()]),
        TOOL_TIMEOUT,
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn heartbeat_value(file: &Path) -> Option<u64> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
fn the_heartbeat_is_fresh_while_publishing_and_goes_stale_when_the_loop_is_wedged() {
    let bed = TestBed::new();
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("heartbeat");
    let mut publisher = bed
        .publisher("heartbeat-live")
        .args(["--interval-ms", "100"])
        .arg("--heartbeat-file")
        .arg(&file)
        .spawn();
    // It keeps being refreshed: the content (unix seconds) moves on.
    let first = wait_until(RUN_TIMEOUT, || heartbeat_value(&file))
        .unwrap_or_else(|| panic!("no heartbeat\n{}", publisher.describe()));
    assert!(
        wait_until(RUN_TIMEOUT, || (heartbeat_value(&file)? >= first + 2)
            .then_some(()))
        .is_some(),
        "the heartbeat was not refreshed\n{}",
        publisher.describe()
    );
    let (code, output) = check_heartbeat(&file, 5);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("alive"), "{output}");
    assert!(publisher.stderr().contains("connected to"));

    // A stopped process is what a wedged loop looks like from outside.
    signal_child_pid(&publisher, Signal::SIGSTOP);
    let stale = wait_until(Duration::from_secs(10), || {
        let (code, output) = check_heartbeat(&file, 1);
        (code == Some(1)).then_some(output)
    });
    signal_child_pid(&publisher, Signal::SIGCONT);
    let output = stale.expect("the heartbeat stayed fresh while the publisher was stopped");
    assert!(output.contains("made no progress"), "{output}");
    publisher.signal(Signal::SIGTERM);
    publisher.wait_for_success(RUN_TIMEOUT);
}

fn signal_child_pid(publisher: &Publisher, signal: Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(publisher.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

#[test]
fn the_heartbeat_stays_fresh_while_retrying_an_absent_broker() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("heartbeat");
    let tokens = satmqtt_tests::TokenDir::new();
    tokens.write("token");
    let port = {
        let listener = std::net::TcpListener::bind((Broker::HOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut publisher = Publisher::builder()
        .args(["--host", Broker::HOST, "--port", &port.to_string()])
        .token_file(tokens.path())
        .client_id("heartbeat-retry")
        .args(["--backoff-floor-ms", "100", "--backoff-cap-ms", "400"])
        .arg("--heartbeat-file")
        .arg(&file)
        .spawn();
    let first = wait_until(RUN_TIMEOUT, || heartbeat_value(&file)).expect("no heartbeat");
    assert!(
        wait_until(RUN_TIMEOUT, || (heartbeat_value(&file)? >= first + 2)
            .then_some(()))
        .is_some(),
        "the heartbeat was not refreshed while retrying\n{}",
        publisher.describe()
    );
    let (code, output) = check_heartbeat(&file, 5);
    assert_eq!(code, Some(0), "{output}");
    let log = publisher.stderr();
    assert!(log.contains("reconnecting in"), "{log}");
    assert!(!log.contains("connected to"), "{log}");
    publisher.signal(Signal::SIGTERM);
    publisher.wait_for_success(RUN_TIMEOUT);
}

#[test]
fn the_heartbeat_check_fails_for_a_missing_or_old_file_and_passes_for_a_fresh_one() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("heartbeat");
    let (code, output) = check_heartbeat(&file, 120);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("cannot read the heartbeat"), "{output}");

    fs::write(&file, "0\n").unwrap();
    let set_mtime = |age_s: i64| {
        let now = SystemTime::now();
        let at = if age_s >= 0 {
            now - Duration::from_secs(age_s.unsigned_abs())
        } else {
            now + Duration::from_secs(age_s.unsigned_abs())
        };
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(at)
            .unwrap();
    };
    set_mtime(600);
    let (code, output) = check_heartbeat(&file, 120);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("s old (limit 120 s)"), "{output}");
    set_mtime(10);
    assert_eq!(check_heartbeat(&file, 120).0, Some(0));
    // A clock stepped back: counted as fresh rather than restarting the pod.
    set_mtime(-3600);
    assert_eq!(check_heartbeat(&file, 120).0, Some(0));
}

#[test]
fn an_unwritable_heartbeat_file_is_a_configuration_error() {
    let bed = TestBed::new();
    let mut publisher = bed
        .publisher("heartbeat-unwritable")
        .args([
            "--heartbeat-file",
            "/nonexistent-satmqtt/heartbeat",
            "--count",
            "1",
        ])
        .spawn();
    let status = publisher.wait_timeout(RUN_TIMEOUT).expect("still running");
    assert_eq!(status.code(), Some(2), "{}", publisher.describe());
    assert!(
        publisher
            .stderr()
            .contains("cannot write the heartbeat file /nonexistent-satmqtt/heartbeat"),
        "{}",
        publisher.describe()
    );
    assert!(bed.broker.events().all_connects().is_empty());
}
