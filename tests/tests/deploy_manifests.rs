//! The Kubernetes manifests in `deploy/`, checked without a cluster:
//!
//! - every manifest is valid for Kubernetes 1.31 and 1.37 (`kubernetes-validate --strict`), and
//!   so is what `kubectl kustomize` renders of `deploy/` and of the Azure IoT Operations overlay
//!   `deploy/aio/`;
//! - the manifests name only flags and variables the binary knows, their environment is
//!   accepted by the real binary, and their paths, audience, probe, grace period and security
//!   context agree with the binary and the Dockerfile.
//!
//! Needs: python3 with `kubernetes-validate`, kubectl (for `kubectl kustomize`). A missing one
//! fails the test that needs it, naming it; nothing is skipped.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;

use satmqtt_tests::deploy::*;
use satmqtt_tests::static_build;
use serde_json::Value;
use tempfile::TempDir;

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
    let deployment = fs::read_to_string(base_dir().join("deployment.yaml")).unwrap();
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
    let base = yaml_documents(&base_dir().join("kustomization.yaml"));
    let listed: BTreeSet<String> = resources(&base[0]);
    let files: BTreeSet<String> = manifest_files()
        .iter()
        .filter(|f| f.parent() == Some(base_dir().as_path()))
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, files, "deploy/base/kustomization.yaml resources");
    let top = yaml_documents(&deploy_dir().join("kustomization.yaml"));
    assert_eq!(
        resources(&top[0]),
        BTreeSet::from(["base".to_owned()]),
        "deploy/kustomization.yaml"
    );

    let dir = TempDir::new().unwrap();
    let rendered = kustomize(&deploy_dir(), &dir);
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

fn resources(kustomization: &Value) -> BTreeSet<String> {
    kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "resource").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The Azure IoT Operations overlay.

/// The token path the AIO overlay's pod reads.
const AIO_TOKEN: &str = "/var/run/secrets/tokens/mqtt-client-token";

/// `kubectl kustomize deploy/aio/`: the rendered file and its documents.
fn aio_rendered(dir: &TempDir) -> (std::path::PathBuf, Vec<Value>) {
    let rendered = kustomize(&aio_dir(), dir);
    let docs = yaml_documents(&rendered);
    (rendered, docs)
}

#[test]
fn the_aio_overlay_renders_valid_objects_in_the_aio_namespace() {
    let dir = TempDir::new().unwrap();
    let (rendered, docs) = aio_rendered(&dir);
    let objects: BTreeSet<(&str, &str, &str)> = docs
        .iter()
        .map(|d| {
            (
                str_of(&d["kind"], "kind"),
                str_of(&d["metadata"]["name"], "name"),
                str_of(&d["metadata"]["namespace"], "namespace"),
            )
        })
        .collect();
    // The trust bundle ConfigMap exists only there, and a pod mounts ConfigMaps of its own
    // namespace.
    assert_eq!(
        objects,
        BTreeSet::from([
            ("Deployment", "mqtt-client", "azure-iot-operations"),
            ("ServiceAccount", "mqtt-client", "azure-iot-operations")
        ])
    );
    for version in KUBERNETES_VERSIONS {
        assert_valid(std::slice::from_ref(&rendered), docs.len(), version);
    }
}

#[test]
fn the_aio_overlay_logs_in_with_k8s_sat_and_an_aio_internal_token() {
    let dir = TempDir::new().unwrap();
    let (_, docs) = aio_rendered(&dir);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let spec = pod_spec(deployment).unwrap();
    let container = &containers(spec)[0];
    let env = container_env(container);
    assert_eq!(env.get("SATMQTT_AUTH").map(String::as_str), Some("k8s-sat"));
    assert_eq!(env.get("AIO_SAT_FILE").map(String::as_str), Some(AIO_TOKEN));
    assert!(
        !env.contains_key("SATMQTT_TOKEN_FILE"),
        "the token path comes from AIO_SAT_FILE alone"
    );
    let (mount, read_only, volume) = mounts(spec, container)
        .into_iter()
        .find(|(path, _, _)| AIO_TOKEN.starts_with(&format!("{path}/")))
        .unwrap_or_else(|| panic!("nothing is mounted at {AIO_TOKEN}"));
    assert!(read_only);
    let sources = volume["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{sources:?}");
    let token = &sources[0]["serviceAccountToken"];
    assert_eq!(token["audience"], "aio-internal");
    assert_eq!(token["expirationSeconds"], 86400);
    assert_eq!(
        format!("{mount}/{}", str_of(&token["path"], "path")),
        AIO_TOKEN
    );
}

#[test]
fn the_aio_overlay_trusts_the_aio_ca_bundle_on_the_default_listener() {
    let dir = TempDir::new().unwrap();
    let (_, docs) = aio_rendered(&dir);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let spec = pod_spec(deployment).unwrap();
    let container = &containers(spec)[0];
    let env = container_env(container);
    let get = |name: &str| env.get(name).map(String::as_str);
    assert_eq!(get("SATMQTT_HOST"), Some("aio-broker"));
    assert_eq!(get("SATMQTT_PORT"), Some("18883"));
    assert_eq!(get("SATMQTT_TLS"), Some("true"));
    let ca_file = get("SATMQTT_CA_FILE").expect("SATMQTT_CA_FILE");
    let (mount, read_only, volume) = mounts(spec, container)
        .into_iter()
        .find(|(path, _, _)| ca_file.starts_with(&format!("{path}/")))
        .unwrap_or_else(|| panic!("nothing is mounted at {ca_file}"));
    assert!(read_only);
    let config_map = &volume["configMap"];
    assert_eq!(
        config_map["name"],
        "azure-iot-operations-aio-ca-trust-bundle"
    );
    let item = &config_map["items"][0];
    assert_eq!(item["key"], "ca.crt");
    assert_eq!(
        format!("{mount}/{}", str_of(&item["path"], "path")),
        ca_file
    );
}

#[test]
fn the_binary_reads_the_aio_overlays_environment() {
    let dir = TempDir::new().unwrap();
    let (_, docs) = aio_rendered(&dir);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = container_env(&containers(pod_spec(deployment).unwrap())[0]);
    let run = run_with_manifest_env(&env);
    // Past the configuration, stopped by the missing token: exit 2, naming its path.
    assert_eq!(run.status.code(), Some(2), "{}", run.log);
    let configuration = configuration(&env);
    assert_eq!(
        setting(&configuration, "token file"),
        AIO_TOKEN,
        "{configuration}"
    );
    assert!(
        configuration.contains(&format!("token file {AIO_TOKEN} (AIO_SAT_FILE)")),
        "{configuration}"
    );
    assert_eq!(setting(&configuration, "CA file"), "/var/run/certs/ca.crt");
    assert!(run.log.contains(AIO_TOKEN), "{}", run.log);
}

/// Fails until the binary has `--auth` (env `SATMQTT_AUTH`): the overlay depends on it.
#[test]
fn the_aio_overlay_names_only_variables_the_binary_knows() {
    let help = help();
    let dir = TempDir::new().unwrap();
    let (_, docs) = aio_rendered(&dir);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = container_env(&containers(pod_spec(deployment).unwrap())[0]);
    for name in env.keys() {
        let known = help.env_flags.contains_key(name)
            || help.aio.contains(name)
            || name == "POD_NAME" && help.text.contains("$POD_NAME");
        assert!(
            known,
            "deploy/aio: env {name} is not in `pod-publisher --help`"
        );
    }
    assert_eq!(
        help.env_flags.get("SATMQTT_AUTH").map(String::as_str),
        Some("--auth"),
        "SATMQTT_AUTH must stand for --auth"
    );
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
            // The audience follows the login scheme: K8S-SAT (`SATMQTT_AUTH=k8s-sat`, or
            // AIO_SAT_FILE without SATMQTT_AUTH) is Azure IoT Operations' `aio-internal`;
            // `$sat` is Azure IoT MQ's `azedge-dmqtt`.
            let env = container_env(container);
            let k8s_sat = match env.get("SATMQTT_AUTH") {
                Some(auth) => auth == "k8s-sat",
                None => env.contains_key("AIO_SAT_FILE"),
            };
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
    let docs = yaml_documents(&base_dir().join("deployment.yaml"));
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
    let docs = yaml_documents(&base_dir().join("deployment.yaml"));
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
fn the_dockerfile_builds_a_static_binary_into_a_non_root_scratch_image() {
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
    assert!(last.starts_with("FROM scratch"), "final stage: {last}");
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
