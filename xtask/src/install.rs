//! Making sure the programs the demo and tests need are installed (Debian/Ubuntu, apt).

use anyhow::anyhow;
use std::process::Command;

use satmqtt_tests::tools::{find_program, is_root};

use crate::cmd;

/// A program and the Debian package that provides it.
pub struct Tool {
    /// Executable name, or the absolute path of a file that must exist (a C header).
    pub program: &'static str,
    /// Debian package.
    pub package: &'static str,
}

/// The broker and its clients.
pub const MOSQUITTO: &[Tool] = &[
    Tool {
        program: "mosquitto",
        package: "mosquitto",
    },
    Tool {
        program: "mosquitto_passwd",
        package: "mosquitto",
    },
    Tool {
        program: "mosquitto_sub",
        package: "mosquitto-clients",
    },
    Tool {
        program: "mosquitto_pub",
        package: "mosquitto-clients",
    },
];

/// What the rest of the test suite runs: `ld` (footprint), `ip` (the smoltcp TAP test's network
/// namespace), `kubectl` (renders deploy/'s kustomizations offline; Debian's `kubernetes-client`
/// is old but its built-in kustomize is enough), `dnsmasq` (the deploy tests' cluster-like DNS),
/// `strace` (tests/tests/connect_edges.rs counts connect(2) calls with it).
pub const TEST_TOOLS: &[Tool] = &[
    Tool {
        program: "ld",
        package: "binutils",
    },
    Tool {
        program: "ip",
        package: "iproute2",
    },
    Tool {
        program: "kubectl",
        package: "kubernetes-client",
    },
    Tool {
        program: "dnsmasq",
        package: "dnsmasq-base",
    },
    Tool {
        program: "strace",
        package: "strace",
    },
];

/// What the test harness needs to compile the K8S-SAT mosquitto auth plugin
/// (`tests/plugin/k8s_sat_auth.c`, built with `gcc -fPIC -shared`).
pub const K8S_SAT_PLUGIN: &[Tool] = &[
    Tool {
        program: "gcc",
        package: "gcc",
    },
    Tool {
        program: "/usr/include/mosquitto_broker.h",
        package: "mosquitto-dev",
    },
    Tool {
        program: "/usr/include/mosquitto_plugin.h",
        package: "mosquitto-dev",
    },
    Tool {
        program: "/usr/include/mosquitto.h",
        package: "libmosquitto-dev",
    },
];

/// The container engine for `cargo xtask image` and tests/tests/image.rs: podman, and runc
/// (Debian's podman defaults to crun, which refuses hybrid cgroup hierarchies; the test runs
/// containers with `--runtime runc`).
pub const PODMAN: &[Tool] = &[
    Tool {
        program: "podman",
        package: "podman",
    },
    Tool {
        program: "runc",
        package: "runc",
    },
];

/// Python and pip, for `kubernetes-validate`.
pub const PYTHON: &[Tool] = &[
    Tool {
        program: "python3",
        package: "python3",
    },
    Tool {
        program: "pip3",
        package: "python3-pip",
    },
];

/// The Kubernetes manifest validator `tests/tests/deploy_manifests.rs` runs on `deploy/` (PyPI), pinned.
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Installs [`KUBERNETES_VALIDATE`] with pip when python3 cannot import it (Python and pip
/// themselves come from apt, see [`ensure`]).
pub fn ensure_kubernetes_validate() -> anyhow::Result<()> {
    ensure(PYTHON)?;
    let importable = || {
        Command::new("python3")
            .args(["-c", "import kubernetes_validate, yaml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable() {
        return Ok(());
    }
    println!("==> installing {KUBERNETES_VALIDATE}");
    let pip = |extra: &[&str]| {
        cmd::run(
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet"])
                .args(extra)
                .arg(KUBERNETES_VALIDATE),
        )
    };
    if pip(&[]).is_err() {
        // Debian's own python3 refuses pip installs outside a virtualenv (PEP 668).
        pip(&["--break-system-packages"])?;
    }
    if importable() {
        Ok(())
    } else {
        Err(anyhow!(
            "pip installed {KUBERNETES_VALIDATE}, but python3 still cannot import it"
        ))
    }
}

/// Installs the packages of any missing `tools` with apt when running as root; otherwise fails with
/// the exact command to run.
pub fn ensure(tools: &[Tool]) -> anyhow::Result<()> {
    let missing = missing_packages(tools);
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    if !is_root() {
        return Err(anyhow!(
            "{packages} not installed. Run:\n    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {packages}"
        ));
    }
    if find_program("apt-get").is_none() {
        return Err(anyhow!("{packages} not installed and there is no apt-get here: install them with your package manager"));
    }
    println!("==> installing {packages}");
    let install = || {
        let mut command = Command::new("apt-get");
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(&missing);
        cmd::run(&mut command)
    };
    if install().is_err() {
        // A fresh machine has no package lists yet: update them only when the install needs it.
        cmd::run(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    let still_missing = missing_packages(tools);
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "apt-get installed {packages}, but these are still missing: {}",
            still_missing.join(" ")
        ))
    }
}

fn missing_packages(tools: &[Tool]) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = Vec::new();
    for tool in tools {
        let present = if tool.program.starts_with('/') {
            std::path::Path::new(tool.program).exists()
        } else {
            find_program(tool.program).is_some()
        };
        if !present && !packages.contains(&tool.package) {
            packages.push(tool.package);
        }
    }
    packages
}
