//! `cargo xtask test`: everything CI checks, in order, stopping at the first failure.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::install;
use crate::nostd;

enum Action {
    Run(Command),
    NoStd,
}

struct Step {
    name: &'static str,
    action: Action,
}

enum Outcome {
    Passed(Duration),
    Failed(Duration),
    NotRun,
}

pub fn run() -> anyhow::Result<()> {
    install::ensure(install::MOSQUITTO)?;
    install::ensure(install::TEST_TOOLS)?;
    install::ensure(install::K8S_SAT_PLUGIN)?;
    // tests/tests/image.rs builds and runs the container image with them.
    install::ensure(install::PODMAN)?;
    // tests/tests/deploy_manifests.rs validates deploy/ with it.
    install::ensure_kubernetes_validate()?;

    let nextest = has_nextest();
    let mut steps = vec![
        Step {
            name: "fmt",
            action: Action::Run(cmd::cargo(["fmt", "--all", "--", "--check"])),
        },
        Step {
            name: "clippy",
            action: Action::Run(cmd::cargo([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
        },
        Step {
            name: "static",
            action: Action::Run(static_build()),
        },
    ];
    if nextest {
        steps.push(Step {
            name: "tests",
            action: Action::Run(cmd::cargo(["nextest", "run", "--workspace"])),
        });
        // nextest does not run doc tests.
        steps.push(Step {
            name: "doctests",
            action: Action::Run(cmd::cargo(["test", "--workspace", "--doc"])),
        });
    } else {
        steps.push(Step {
            name: "tests",
            action: Action::Run(cmd::cargo(["test", "--workspace"])),
        });
    }
    steps.push(Step {
        name: "nostd",
        action: Action::NoStd,
    });

    let mut outcomes: Vec<(&str, String, Outcome)> = Vec::new();
    let mut failure = None;
    for step in steps {
        let shown = match &step.action {
            Action::Run(command) => cmd::display(command),
            Action::NoStd => "cargo xtask nostd".to_string(),
        };
        if failure.is_some() {
            outcomes.push((step.name, shown, Outcome::NotRun));
            continue;
        }
        println!("\n==> {}: {shown}", step.name);
        let started = Instant::now();
        let result = match step.action {
            Action::Run(mut command) => cmd::run(&mut command),
            Action::NoStd => nostd::run(),
        };
        let took = started.elapsed();
        match result {
            Ok(()) => outcomes.push((step.name, shown, Outcome::Passed(took))),
            Err(message) => {
                outcomes.push((step.name, shown, Outcome::Failed(took)));
                failure = Some(format!("step `{}` failed: {message:#}", step.name));
            }
        }
    }

    println!("\n==> summary");
    for (name, shown, outcome) in &outcomes {
        let (state, took) = match outcome {
            Outcome::Passed(d) => ("ok", format!("{:.1}s", d.as_secs_f64())),
            Outcome::Failed(d) => ("FAILED", format!("{:.1}s", d.as_secs_f64())),
            Outcome::NotRun => ("not run", String::new()),
        };
        println!("  {state:<8} {name:<9} {took:>7}  {shown}");
    }
    match failure {
        Some(message) => Err(anyhow::anyhow!(message)),
        None => {
            println!("all checks passed");
            Ok(())
        }
    }
}

/// The static `pod-publisher` build of deploy/Dockerfile. tests/tests/deploy_static_binary.rs runs the same
/// build (a no-op after this step) and checks the result; building it here keeps that minute of
/// compiling out of the timing-sensitive test run.
fn static_build() -> std::process::Command {
    satmqtt_tests::static_build::command(&cmd::root())
}

fn has_nextest() -> bool {
    cmd::cargo(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
