//! The container image, built offline as `cargo xtask image` builds it, and run the way
//! deploy/base/deployment.yaml runs it:
//!
//! - its final layout (files, modes, owners, user, entrypoint) is the one deploy/Dockerfile's final
//!   stage describes, read from the image itself (`podman image inspect`, `podman save`);
//! - run as the Deployment runs it: the image's numeric non-root user, read-only root file system,
//!   no capabilities, no privilege escalation, the token directory mounted read-only in the
//!   kubelet's layout, the heartbeat on a memory-backed volume, the CA bundle mounted as the
//!   ConfigMap is, and the Deployment's environment (broker host and port pointed at a mosquitto on
//!   this host, with a TLS listener signed by the test's own CA), it publishes under the pod's
//!   client id, picks up a kubelet-style token rotation done on the host with no gap, answers the
//!   manifest's liveness probe through `podman exec`, and on `podman stop` with the manifest's
//!   grace period drains, sends DISCONNECT and exits 0 inside the grace period;
//! - the same probe turns unhealthy once the broker has been gone long enough;
//! - deploy/examples/aio-sdk-env.yaml (`AIO_*` variables only) runs from the same image;
//! - the CA bundle in the image is the trust store for `--tls` without `--ca-file`.
//!
//! Needs root, podman and runc (`apt-get install -y podman runc`) and mosquitto. A missing one
//! fails the test, naming it.
//!
//! Host-specific podman flags, none of which a cluster needs: `--runtime runc --cgroup-manager
//! cgroupfs` (crun, Debian's default, refuses hybrid cgroup hierarchies), `--ulimit
//! nofile=1024:1024 --ulimit nproc=1024:1024` (podman's default limits cannot be set inside these
//! machines' sandboxes) and `--network host` (the broker listens on this host's 127.0.0.1).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use satmqtt_tests::deploy::{self, repo};
use satmqtt_tests::image::{self, Engine, EngineKind, EntryKind, ImageConfig};
use satmqtt_tests::static_build;
use satmqtt_tests::tools::{find_program, is_root, random_hex};
use satmqtt_tests::wait::wait_until;
use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, Broker, Sequence, Subscriber, TestPki, TlsListener, TokenDir,
};
use serde_json::Value;

const INSTALL: &str = "apt-get install -y podman runc";
/// Upper bound for the static release build (a no-op after `cargo xtask test`'s static step).
const STATIC_BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Bound for one podman command (run, exec, inspect, logs, rm).
const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for one step of a scenario (connected, messages arrived, rotation noticed).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);
const TOPIC: &str = "sampletopic";
const PREFIX: &str = "samplepayload";

// ---------------------------------------------------------------------------------------------
// podman, the image, a container.

/// podman, checked to be able to build and run containers here; panics naming what is missing.
fn podman() -> Engine {
    assert!(
        is_root(),
        "tests/tests/image.rs needs root: it runs containers with podman as the kubelet would \
         (bind mounts of the token directory, a tmpfs, host networking)"
    );
    for program in ["podman", "runc"] {
        assert!(
            find_program(program).is_some(),
            "`{program}` is not installed; the image test builds and runs the container image \
             with podman and runc. Install them with:\n    {INSTALL}\n(or run `cargo xtask test` \
             as root, which does)"
        );
    }
    Engine::usable(EngineKind::Podman).unwrap_or_else(|problem| {
        panic!("podman cannot work on this machine: {problem}\n(install: {INSTALL})")
    })
}

/// `podman` with the host-specific global flags (see the module doc).
fn podman_command(engine: &Engine) -> Command {
    let mut command = engine.command();
    command.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    command
}

fn run(command: &mut Command) -> Output {
    image::run(command, PODMAN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The static binary, as deploy/Dockerfile's build stage and `cargo xtask image` build it.
fn static_binary() -> PathBuf {
    let root = repo();
    let mut build = static_build::command(&root);
    build.arg("-q");
    let output = image::run(&mut build, STATIC_BUILD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "the static build failed ({}); is the {triple} target installed (rustup target add \
         {triple})?\n{}",
        output.status,
        text(&output.stderr),
        triple = static_build::triple()
    );
    static_build::binary(&root)
}

/// The image, built as `cargo xtask image` builds it under a tag unique to this run; removed on
/// drop, whatever happened.
struct TestImage {
    engine: Engine,
    tag: String,
    config: ImageConfig,
    binary: PathBuf,
}

impl TestImage {
    fn build(engine: &Engine) -> TestImage {
        let binary = static_binary();
        let tag = format!("localhost/satmqtt-test/pod-publisher:{}", random_hex(12));
        let config = engine.build(&binary, &tag).unwrap_or_else(|e| {
            // A build that failed late may have tagged the image already.
            engine.remove_image(&tag);
            panic!("building the image: {e}")
        });
        TestImage {
            engine: engine.clone(),
            tag,
            config,
            binary,
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        self.engine.remove_image(&self.tag);
    }
}

/// A detached container, force-removed on drop.
struct Container {
    engine: Engine,
    name: String,
}

impl Container {
    /// `podman run -d --name <unique> <args> <image> <command>`.
    fn start(engine: &Engine, args: &[String], image: &TestImage, command: &[&str]) -> Container {
        let name = format!("satmqtt-test-{}", random_hex(10));
        let output = run(podman_command(engine)
            .args(["run", "-d", "--name", &name])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(["--network", "host"])
            .args(args)
            .arg(&image.tag)
            .args(command));
        let container = Container {
            engine: engine.clone(),
            name,
        };
        assert!(
            output.status.success(),
            "podman cannot run the container ({}): {}\nIf runc is missing: {INSTALL}",
            output.status,
            text(&output.stderr)
        );
        container
    }

    fn inspect(&self, format: &str) -> String {
        let output =
            run(podman_command(&self.engine).args(["inspect", "--format", format, &self.name]));
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout).trim().to_owned()
    }

    fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// What the container wrote (stdout and stderr).
    fn logs(&self) -> String {
        let output = run(podman_command(&self.engine).args(["logs", &self.name]));
        format!("{}{}", text(&output.stdout), text(&output.stderr))
    }

    /// The `msg` of each JSON log line (other lines as they are).
    fn messages(&self) -> Vec<String> {
        self.logs()
            .lines()
            .map(|l| match serde_json::from_str::<Value>(l) {
                Ok(json) => json["msg"].as_str().unwrap_or_default().to_owned(),
                Err(_) => l.to_owned(),
            })
            .collect()
    }

    /// `podman exec <name> <command>`.
    fn exec(&self, command: &[String]) -> Output {
        run(podman_command(&self.engine)
            .args(["exec", &self.name])
            .args(command))
    }

    fn describe(&self) -> String {
        format!("--- container {} log ---\n{}", self.name, self.logs())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = image::run(
            podman_command(&self.engine).args(["rm", "--force", "--time", "0", &self.name]),
            PODMAN_TIMEOUT,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// deploy/Dockerfile's final stage.

/// One `COPY` of the final stage.
#[derive(Debug)]
struct Copy {
    from_stage: Option<String>,
    chmod: Option<u32>,
    chown: Option<String>,
    source: String,
    destination: String,
}

/// What deploy/Dockerfile's final stage makes.
#[derive(Debug)]
struct FinalStage {
    base: String,
    copies: Vec<Copy>,
    user: String,
    entrypoint: Vec<String>,
}

fn dockerfile_final_stage() -> FinalStage {
    let path = repo().join("deploy/Dockerfile");
    let dockerfile = fs::read_to_string(&path).unwrap();
    let instructions: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    let base = instructions[last_from]["FROM ".len()..].trim().to_owned();
    let (mut copies, mut user, mut entrypoint) = (Vec::new(), None, None);
    for line in &instructions[last_from + 1..] {
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        match keyword {
            "COPY" => {
                let mut copy = Copy {
                    from_stage: None,
                    chmod: None,
                    chown: None,
                    source: String::new(),
                    destination: String::new(),
                };
                let mut paths = Vec::new();
                for word in rest.split_whitespace() {
                    if let Some(v) = word.strip_prefix("--from=") {
                        copy.from_stage = Some(v.to_owned());
                    } else if let Some(v) = word.strip_prefix("--chmod=") {
                        copy.chmod = Some(u32::from_str_radix(v, 8).unwrap());
                    } else if let Some(v) = word.strip_prefix("--chown=") {
                        copy.chown = Some(v.to_owned());
                    } else if word.starts_with("--") {
                        panic!(
                            "{}: COPY flag {word} is not understood by this test",
                            path.display()
                        );
                    } else {
                        paths.push(word.to_owned());
                    }
                }
                assert_eq!(paths.len(), 2, "COPY with one source: {line}");
                copy.source = paths.remove(0);
                copy.destination = paths.remove(0);
                copies.push(copy);
            }
            "USER" => user = Some(rest.trim().to_owned()),
            "ENTRYPOINT" => entrypoint = Some(serde_json::from_str::<Vec<String>>(rest).unwrap()),
            other => panic!(
                "{}: the final stage has a {other} instruction; the offline build \
                 (tests/src/image.rs) must learn it too, and this test compare it",
                path.display()
            ),
        }
    }
    FinalStage {
        base,
        copies,
        user: user.expect("USER in the final stage"),
        entrypoint: entrypoint.expect("ENTRYPOINT in the final stage"),
    }
}

// ---------------------------------------------------------------------------------------------
// deploy/base/deployment.yaml, read with serde_yaml_ng (`satmqtt_tests::deploy`, as the deploy
// tests read it).

/// The manifest shipped as deploy/base/deployment.yaml.
const DEPLOYMENT: &str = "deploy/base/deployment.yaml";
/// The same Deployment configured with Azure IoT Operations SDK variables only.
const AIO_DEPLOYMENT: &str = "deploy/examples/aio-sdk-env.yaml";
/// Variables naming the broker host, port and CA file, in either spelling.
const HOST_VARS: &[&str] = &["SATMQTT_HOST", "AIO_BROKER_HOSTNAME"];
const PORT_VARS: &[&str] = &["SATMQTT_PORT", "AIO_BROKER_TCP_PORT"];
const CA_VARS: &[&str] = &["SATMQTT_CA_FILE", "AIO_TLS_CA_FILE"];

/// The pod spec of the Deployment in `manifest` (relative to the repository).
fn deployment_pod_spec(manifest: &str) -> Value {
    let docs = deploy::yaml_documents(&repo().join(manifest));
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("no Deployment in {manifest}"));
    deploy::pod_spec(deployment)
        .unwrap_or_else(|| panic!("{manifest}: the Deployment has no pod spec"))
        .clone()
}

/// How a Deployment's pod runs, translated into podman's terms for a broker on this host.
struct DeploymentRun {
    manifest: &'static str,
    spec: Value,
    /// Plain `value:` variables.
    env: BTreeMap<String, String>,
    /// Variables set from `fieldRef: metadata.name` (the pod's name).
    pod_name_vars: Vec<String>,
    token_mount: String,
    ca_file: String,
    probe: Option<Vec<String>>,
    grace: Duration,
}

impl DeploymentRun {
    fn read(manifest: &'static str) -> DeploymentRun {
        let spec = deployment_pod_spec(manifest);
        let container = &spec["containers"][0];
        let (mut env, mut pod_name_vars) = (BTreeMap::new(), Vec::new());
        for var in container["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap().to_owned();
            match &var["value"] {
                Value::String(v) => {
                    env.insert(name, v.clone());
                }
                _ => {
                    let field = &var["valueFrom"]["fieldRef"]["fieldPath"];
                    assert_eq!(field, "metadata.name", "{manifest}: {name}");
                    pod_name_vars.push(name);
                }
            }
        }
        let token_mount = DeploymentRun::mount_of(&spec, |v| v.get("projected").is_some())
            .unwrap_or_else(|| panic!("{manifest}: no projected token volume"));
        let ca_dir = DeploymentRun::mount_of(&spec, |v| v.get("configMap").is_some())
            .unwrap_or_else(|| panic!("{manifest}: no CA ConfigMap volume"));
        let ca_file = CA_VARS
            .iter()
            .find_map(|v| env.get(*v))
            .unwrap_or_else(|| panic!("{manifest}: no CA file variable"))
            .clone();
        assert!(
            ca_file.starts_with(&format!("{ca_dir}/")),
            "{ca_file} not in {ca_dir}"
        );
        let probe = container["livenessProbe"]["exec"]["command"]
            .as_array()
            .map(|command| {
                command
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            });
        let grace = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap());
        DeploymentRun {
            manifest,
            spec,
            env,
            pod_name_vars,
            token_mount,
            ca_file,
            probe,
            grace,
        }
    }

    /// The mount path of the first volume that `is_kind`.
    fn mount_of(spec: &Value, is_kind: impl Fn(&Value) -> bool) -> Option<String> {
        let volume = spec["volumes"].as_array()?.iter().find(|v| is_kind(v))?;
        let mount = spec["containers"][0]["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == volume["name"])?;
        Some(mount["mountPath"].as_str()?.to_owned())
    }

    fn container(&self) -> &Value {
        &self.spec["containers"][0]
    }

    /// The manifest's liveness probe command.
    fn probe(&self) -> Vec<String> {
        self.probe
            .clone()
            .unwrap_or_else(|| panic!("{}: no exec liveness probe", self.manifest))
    }

    /// `podman run` arguments for the pod `pod_name`: the Deployment's security context, volumes
    /// and environment, the broker at `localhost:<port>` (TLS as shipped, with `ca` mounted where
    /// the ConfigMap would be), and `extra_env` on top.
    fn podman_args(
        &self,
        pod_name: &str,
        tokens: &Path,
        ca: &Path,
        port: u16,
        extra_env: &[(&str, &str)],
    ) -> Vec<String> {
        let security = &self.container()["securityContext"];
        let mut args: Vec<String> = Vec::new();
        assert_eq!(
            security["readOnlyRootFilesystem"], true,
            "{}",
            self.manifest
        );
        args.push("--read-only".into());
        let drops = security["capabilities"]["drop"].as_array().unwrap();
        assert!(
            drops.iter().any(|d| d == "ALL"),
            "{}: drop ALL",
            self.manifest
        );
        args.push("--cap-drop=all".into());
        assert_eq!(
            security["allowPrivilegeEscalation"], false,
            "{}",
            self.manifest
        );
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        // No --user: the image's USER must be what the Deployment's runAsUser expects (checked
        // in the tests), as with `runAsNonRoot`.
        args.extend([
            "-v".into(),
            format!("{}:{}:ro", tokens.display(), self.token_mount),
            "-v".into(),
            format!("{}:{}:ro", ca.display(), self.ca_file),
        ]);
        // The memory-backed emptyDir (the heartbeat), if the manifest has one.
        if let Some(path) =
            DeploymentRun::mount_of(&self.spec, |v| v["emptyDir"]["medium"] == "Memory")
        {
            args.extend(["--tmpfs".into(), format!("{path}:rw,size=1m,mode=1777")]);
        }
        let mut env = self.env.clone();
        for name in &self.pod_name_vars {
            env.insert(name.clone(), pod_name.into());
        }
        let mut set = |names: &[&str], value: String| {
            let name = names
                .iter()
                .find(|n| env.contains_key(**n))
                .unwrap_or_else(|| panic!("{}: none of {names:?} is set", self.manifest));
            env.insert((*name).to_owned(), value);
        };
        set(HOST_VARS, "localhost".into());
        set(PORT_VARS, port.to_string());
        for (name, value) in extra_env {
            env.insert((*name).into(), (*value).into());
        }
        for (name, value) in env {
            args.extend(["--env".into(), format!("{name}={value}")]);
        }
        args
    }

    /// The liveness probe's command with `--max-age-s` set to `max_age_s`.
    fn probe_with_max_age(&self, max_age_s: u32) -> Vec<String> {
        let mut probe = self.probe();
        let at = probe.iter().position(|a| a == "--max-age-s").unwrap() + 1;
        probe[at] = max_age_s.to_string();
        probe
    }
}

/// A TLS broker, the test CA, the token directory the pod mounts, and a subscriber.
struct Host {
    pki: TestPki,
    token: String,
    tokens: TokenDir,
    broker: Broker,
    subscriber: Subscriber,
}

impl Host {
    fn new() -> Host {
        Host::with_broker(Broker::start_tls)
    }

    /// A host whose broker also speaks K8S-SAT (the AIO default login) and accepts the token.
    fn k8s_sat() -> Host {
        let host = Host::with_broker(Broker::start_tls_k8s_sat);
        host.broker.allow_k8s_token(&host.token);
        host
    }

    fn with_broker(start: fn(&str, &TlsListener) -> Broker) -> Host {
        let pki = TestPki::new();
        let token = fake_jwt(3600);
        let broker = start(&token, &pki.listener(false));
        let tokens = TokenDir::new();
        // The kubelet's projected volume is readable by the pod's user; a private temp dir is not.
        fs::set_permissions(tokens.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        tokens.write(&token);
        let subscriber = Subscriber::start(&broker, TOPIC);
        Host {
            pki,
            token,
            tokens,
            broker,
            subscriber,
        }
    }

    fn tls_port(&self) -> u16 {
        self.broker.tls_port().unwrap()
    }
}

fn received_disconnect(log: &satmqtt_tests::BrokerLog, id: &str) -> usize {
    let wanted = format!("Received DISCONNECT from {id}");
    log.messages().filter(|m| *m == wanted).count()
}

#[track_caller]
fn wait_log(
    host: &Host,
    pod: &Container,
    what: &str,
    condition: impl Fn(&satmqtt_tests::BrokerLog) -> bool,
) {
    assert!(
        host.broker.wait_for_log(STEP_TIMEOUT, condition),
        "{what}: not in the broker log within {STEP_TIMEOUT:?}\n--- broker log ---\n{}\n{}",
        host.broker.log(),
        pod.describe()
    );
}

#[track_caller]
fn wait_received(host: &Host, pod: &Container, n: usize) {
    let got = host.subscriber.wait_for(n, STEP_TIMEOUT).len();
    assert!(
        got >= n,
        "subscriber has {got} of {n} payloads\n{}",
        pod.describe()
    );
}

/// The uid and gid the container's main process runs as, read from the host's /proc.
fn process_ids(pod: &Container) -> (String, String) {
    let pid = pod.inspect("{{.State.Pid}}");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    (field("Uid:"), field("Gid:"))
}

/// `podman stop` with the manifest's grace period, as the kubelet stops a pod: asserts the
/// container drained (everything it sent acknowledged, the subscriber has every counter from 0
/// once), sent DISCONNECT and exited 0 inside the grace period. Returns how many it sent.
#[track_caller]
fn stop_like_the_kubelet(
    engine: &Engine,
    host: &Host,
    pod: &Container,
    pod_name: &str,
    deployment: &DeploymentRun,
) -> u64 {
    let disconnects_before = received_disconnect(&host.broker.events(), pod_name);
    let grace = deployment.grace.as_secs().to_string();
    let started = Instant::now();
    let stop = run(podman_command(engine).args(["stop", "--time", &grace, &pod.name]));
    let took = started.elapsed();
    assert!(stop.status.success(), "podman stop: {}", text(&stop.stderr));
    assert!(
        took < deployment.grace,
        "stopping took {took:?}, grace {:?}\n{}",
        deployment.grace,
        pod.describe()
    );
    assert_eq!(
        pod.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        pod.describe()
    );
    wait_log(host, pod, "DISCONNECT at the stop", |log| {
        received_disconnect(log, pod_name) > disconnects_before
    });

    // Drained: everything sent was acknowledged, and the subscriber has every counter once.
    let messages = pod.messages();
    let last = messages
        .iter()
        .rev()
        .find(|m| !m.is_empty())
        .cloned()
        .unwrap_or_default();
    // A JSON line's `msg`, or a text line (`<ts> INFO  [<id>] stopped by signal: ...`).
    let last = match last.find("stopped by signal: sent ") {
        Some(at) => last[at..].to_owned(),
        None => panic!("last line: {last}\n{}", pod.describe()),
    };
    let field = |name: &str| -> u64 {
        let rest = &last[last.find(&format!("{name} ")).unwrap() + name.len() + 1..];
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let (sent, acked) = (field("sent"), field("acknowledged"));
    assert_eq!(sent, acked, "{last}");
    let payloads = host.subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse(PREFIX, &payloads).assert_contiguous(0, sent);
    sent
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// The offline image holds exactly what deploy/Dockerfile's final stage puts in its image: the
/// same files at the same paths with the same modes and owners, the same user and entrypoint,
/// nothing else; and the files are the static binary and this machine's CA bundle.
#[test]
fn the_offline_image_has_the_final_layout_of_deploy_dockerfile() {
    let engine = podman();
    let stage = dockerfile_final_stage();
    let built = TestImage::build(&engine);
    let config = &built.config;

    assert_eq!(
        stage.base, "scratch",
        "only a scratch final stage can be compared file by file"
    );
    assert_eq!(config.user, stage.user, "USER");
    assert_eq!(config.entrypoint, stage.entrypoint, "ENTRYPOINT");
    assert!(config.cmd.is_empty(), "no CMD: {:?}", config.cmd);
    assert!(
        config.working_dir.is_empty() || config.working_dir == "/",
        "WORKDIR {}",
        config.working_dir
    );
    let (uid, gid) = stage.user.split_once(':').expect("USER uid:gid");
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0) && gid.parse::<u32>().is_ok(),
        "numeric non-root USER: {}",
        stage.user
    );
    // The Deployment's runAsUser/runAsGroup are the image's user.
    let spec = deployment_pod_spec(DEPLOYMENT);
    let security = &spec["securityContext"];
    assert_eq!(
        format!("{}:{}", security["runAsUser"], security["runAsGroup"]),
        stage.user
    );
    assert_eq!(security["runAsNonRoot"], true);
    // The default tag of `cargo xtask image` is the Deployment's image, with its registry.
    let deployment_image = spec["containers"][0]["image"].as_str().unwrap();
    assert_eq!(format!("docker.io/{deployment_image}"), image::DEFAULT_TAG);

    let entries = engine.entries(&built.tag).unwrap();
    let files: BTreeMap<&str, _> = entries
        .iter()
        .filter(|e| e.kind != EntryKind::Dir)
        .map(|e| (e.path.as_str(), e))
        .collect();
    let expected: Vec<&str> = stage
        .copies
        .iter()
        .map(|c| c.destination.as_str())
        .collect();
    assert_eq!(
        files.keys().copied().collect::<Vec<_>>(),
        {
            let mut sorted = expected.clone();
            sorted.sort_unstable();
            sorted
        },
        "the image's files (all entries: {:?})",
        entries.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
    for copy in &stage.copies {
        let file = files[copy.destination.as_str()];
        assert_eq!(file.kind, EntryKind::File, "{}", copy.destination);
        let mode = copy.chmod.unwrap_or_else(|| {
            panic!(
                "deploy/Dockerfile: COPY to {} has no --chmod",
                copy.destination
            )
        });
        assert_eq!(
            file.mode, mode,
            "mode of {}: {:o} vs {mode:o}",
            copy.destination, file.mode
        );
        assert!(
            copy.chown.is_none(),
            "the files are root's, as COPY leaves them"
        );
        assert_eq!(
            (file.uid, file.gid),
            (0, 0),
            "owner of {}",
            copy.destination
        );
        assert_eq!(copy.from_stage.as_deref(), Some("build"), "{copy:?}");
    }
    for dir in entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        assert_eq!((dir.uid, dir.gid), (0, 0), "owner of {}", dir.path);
        assert_eq!(dir.mode & 0o022, 0, "{} is writable by others", dir.path);
    }

    // What the files are: the binary is the static build, the CA bundle the one the Dockerfile
    // copies (Debian's, at the same path in its Debian build stage and here).
    let binary = files[image::BINARY_PATH];
    assert!(
        binary.content == fs::read(&built.binary).unwrap(),
        "/pod-publisher is not the static build"
    );
    let ca_copy = stage
        .copies
        .iter()
        .find(|c| c.destination == image::CA_BUNDLE_PATH)
        .expect("the Dockerfile copies the CA bundle");
    assert_eq!(ca_copy.source, image::HOST_CA_BUNDLE);
    assert!(
        files[image::CA_BUNDLE_PATH].content == fs::read(image::HOST_CA_BUNDLE).unwrap(),
        "the CA bundle is not this machine's"
    );
    assert_eq!(stage.entrypoint, [image::BINARY_PATH]);
}

/// The pod as the Deployment runs it: publishes under its pod name, follows a kubelet rotation
/// done on the host with no gap, is healthy for the manifest's probe, and on `podman stop` with
/// the manifest's grace period drains, sends DISCONNECT and exits 0 in time.
#[test]
fn the_image_runs_as_the_deployment_runs_it_rotates_and_stops_cleanly() {
    let engine = podman();
    let built = TestImage::build(&engine);
    let deployment = DeploymentRun::read(DEPLOYMENT);
    let host = Host::new();
    let pod_name = format!("mqtt-client-{}-{}", random_hex(10), random_hex(5));
    let args = deployment.podman_args(
        &pod_name,
        host.tokens.dir(),
        &host.pki.ca_file(),
        host.tls_port(),
        &[("SATMQTT_INTERVAL_MS", "20")],
    );
    let pod = Container::start(&engine, &args, &built, &[]);

    // It runs as the image's user, which the Deployment expects.
    assert!(pod.running(), "{}", pod.describe());
    let (uid, gid) = process_ids(&pod);
    assert_eq!(
        format!("{uid}:{gid}"),
        built.config.user,
        "{}",
        pod.describe()
    );

    // Messages arrive, under the pod's client id, over MQTT v5 as `$sat`.
    wait_log(&host, &pod, "a connection as the pod", |log| {
        !log.connects(&pod_name).is_empty()
    });
    let connect = &host.broker.events().connects(&pod_name)[0];
    assert!(connect.is_mqtt5(), "{connect:?}");
    assert_eq!(connect.username.as_deref(), Some("$sat"));
    wait_received(&host, &pod, 20);

    // The manifest's liveness probe, exactly, inside the container.
    let probe = pod.exec(&deployment.probe());
    assert!(
        probe.status.success(),
        "liveness probe {:?} failed: {}{}\n{}",
        deployment.probe(),
        text(&probe.stdout),
        text(&probe.stderr),
        pod.describe()
    );

    // The kubelet's rotation, on the host, while the container runs: new `..data`, swapped.
    let fresh = fake_jwt(3600);
    host.tokens.write(&fresh);
    wait_log(&host, &pod, "DISCONNECT after the token change", |log| {
        received_disconnect(log, &pod_name) >= 1
    });
    // mosquitto keeps one password per user: accept the new token now; the publisher's attempts
    // with it were refused until here, and it retries with backoff.
    host.broker.set_sat_password(&fresh);
    wait_log(&host, &pod, "a session with the new token", |log| {
        log.connects(&pod_name).len() >= 2
    });
    let before = host.subscriber.payloads().len();
    wait_received(&host, &pod, before + 20);
    assert!(
        pod.messages().iter().any(|m| m.contains("new token")),
        "the pod did not log the new token\n{}",
        pod.describe()
    );

    // `kubectl delete pod`: SIGTERM, the grace period, then SIGKILL.
    let sent = stop_like_the_kubelet(&engine, &host, &pod, &pod_name, &deployment);
    assert_eq!(
        received_disconnect(&host.broker.events(), &pod_name),
        2,
        "one DISCONNECT at the rotation, one at the stop\n{}",
        host.broker.log()
    );
    let connects = host.broker.events().connects(&pod_name).len();
    assert_eq!(connects, 2, "one session per token\n{}", host.broker.log());
    assert!(sent >= 40, "sent {sent}");

    let logs = pod.logs();
    assert_no_token_leak("the container's log", &logs, &host.token);
    assert_no_token_leak("the container's log", &logs, &fresh);
}

/// The manifest's probe says healthy while the pod publishes and unhealthy once the broker has
/// been gone longer than `--max-age-s` and no retry is due (backoff floor 30 s here).
#[test]
fn the_liveness_probe_in_the_container_fails_after_the_broker_is_gone_long_enough() {
    const MAX_AGE_S: u32 = 3;
    let engine = podman();
    let built = TestImage::build(&engine);
    let deployment = DeploymentRun::read(DEPLOYMENT);
    let mut host = Host::new();
    let pod_name = format!("mqtt-client-{}-{}", random_hex(10), random_hex(5));
    let args = deployment.podman_args(
        &pod_name,
        host.tokens.dir(),
        &host.pki.ca_file(),
        host.tls_port(),
        &[
            ("SATMQTT_INTERVAL_MS", "20"),
            ("SATMQTT_BACKOFF_FLOOR_MS", "30000"),
            ("SATMQTT_BACKOFF_CAP_MS", "60000"),
        ],
    );
    let pod = Container::start(&engine, &args, &built, &[]);
    wait_log(&host, &pod, "a connection as the pod", |log| {
        !log.connects(&pod_name).is_empty()
    });
    wait_received(&host, &pod, 20);

    let probe = deployment.probe_with_max_age(MAX_AGE_S);
    let healthy = wait_until(STEP_TIMEOUT, || {
        pod.exec(&probe).status.success().then_some(())
    });
    assert!(
        healthy.is_some(),
        "probe {probe:?} never healthy while publishing\n{}",
        pod.describe()
    );

    host.broker.stop();
    let gone = Instant::now();
    let mut last = None;
    let unhealthy = wait_until(Duration::from_secs(u64::from(MAX_AGE_S) + 20), || {
        let output = pod.exec(&probe);
        let verdict =
            (output.status.code() == Some(1)).then(|| text(&output.stdout) + &text(&output.stderr));
        last = Some(output);
        verdict
    });
    let Some(why) = unhealthy else {
        panic!(
            "probe {probe:?} still healthy {:?} after the broker stopped: {:?}\n{}",
            gone.elapsed(),
            last,
            pod.describe()
        );
    };
    assert!(why.contains(&format!("(limit {MAX_AGE_S} s)")), "{why}");
    assert!(
        pod.running(),
        "the publisher itself keeps running\n{}",
        pod.describe()
    );
    // The manifest's own limit (120 s) is still met: only the small limit fails.
    assert!(
        pod.exec(&deployment.probe()).status.success(),
        "{}",
        pod.describe()
    );
}

/// `--tls` without `--ca-file` trusts the image's CA bundle: it is loaded (no "no usable
/// certificate in the system trust store" at start-up) and checked (the test broker's private CA
/// is not in it, so its certificate is refused as UnknownIssuer).
#[test]
fn the_image_ca_bundle_is_the_trust_store_without_a_ca_file() {
    let engine = podman();
    let built = TestImage::build(&engine);
    let host = Host::new();
    let token_dir = "/var/run/secrets/tokens";
    let args = vec![
        "--read-only".to_owned(),
        "--cap-drop=all".to_owned(),
        "-v".to_owned(),
        format!("{}:{token_dir}:ro", host.tokens.dir().display()),
    ];
    let port = host.tls_port().to_string();
    let pod = Container::start(
        &engine,
        &args,
        &built,
        &[
            "--tls",
            "--host",
            "localhost",
            "--port",
            &port,
            "--client-id",
            "image-ca",
            "--count",
            "1",
        ],
    );
    let logs = wait_until(STEP_TIMEOUT, || {
        let logs = pod.logs();
        logs.contains("UnknownIssuer").then_some(logs)
    });
    let logs = logs.unwrap_or_else(|| {
        panic!(
            "no certificate verdict within {STEP_TIMEOUT:?}\n{}",
            pod.describe()
        )
    });
    assert!(logs.contains("system trust store"), "{logs}");
    assert!(!logs.contains("no usable certificate"), "{logs}");
    assert!(host.broker.events().connects("image-ca").is_empty());
}

/// deploy/examples/aio-sdk-env.yaml (Azure IoT Operations SDK variables only: `AIO_*`, the client
/// id from `AIO_MQTT_CLIENT_ID` = the pod's name) runs from the same image: it publishes under the
/// pod's name over TLS with the mounted CA, and stops cleanly.
#[test]
fn the_aio_sdk_variant_of_the_deployment_runs_from_the_same_image() {
    let engine = podman();
    let built = TestImage::build(&engine);
    let deployment = DeploymentRun::read(AIO_DEPLOYMENT);
    assert!(
        deployment.env.keys().all(|k| k.starts_with("AIO_")),
        "{:?}",
        deployment.env
    );
    // A token path from AIO_SAT_FILE means K8S-SAT, as in the AIO SDKs.
    let host = Host::k8s_sat();
    let pod_name = format!("mqtt-client-aio-env-{}-{}", random_hex(10), random_hex(5));
    let args = deployment.podman_args(
        &pod_name,
        host.tokens.dir(),
        &host.pki.ca_file(),
        host.tls_port(),
        &[("SATMQTT_INTERVAL_MS", "20")],
    );
    let pod = Container::start(&engine, &args, &built, &[]);
    wait_log(&host, &pod, "a connection as the pod", |log| {
        !log.connects(&pod_name).is_empty()
    });
    wait_received(&host, &pod, 20);
    let sent = stop_like_the_kubelet(&engine, &host, &pod, &pod_name, &deployment);
    assert!(sent >= 20, "sent {sent}");
    assert_eq!(host.broker.events().connects(&pod_name).len(), 1);
    let logins = host.broker.events().k8s_sat_decisions();
    assert!(
        logins
            .iter()
            .any(|d| !d.reauth && d.accepted && d.client_id == pod_name && d.method == "K8S-SAT"),
        "no K8S-SAT login by {pod_name}: {logins:?}"
    );
    assert_no_token_leak("the container's log", &pod.logs(), &host.token);
}
