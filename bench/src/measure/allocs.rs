//! Heap allocations per message in satmqtt's steady state (`alloc-count`, the same stack as
//! `pod-publisher` with a counting allocator).

use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::clients::Env;
use crate::report::Allocs;

/// QoS 0 with `count × 2` messages and QoS 1 with `count / 2`; failures go to `errors`.
pub fn measure(env: &Env, count: u64, errors: &mut Vec<String>) -> Vec<Allocs> {
    let mut out = Vec::new();
    for (qos, count) in [(0, count * 2), (1, count / 2)] {
        match run(env, qos, count) {
            Ok(a) => out.push(a),
            Err(e) => errors.push(format!("allocations, QoS {qos}: {e:#}")),
        }
    }
    out
}

fn run(env: &Env, qos: u8, count: u64) -> anyhow::Result<Allocs> {
    let client_id = format!("bench-alloc-q{qos}");
    let out = Command::new(env.bin("alloc-count"))
        .args(["--host", "127.0.0.1", "--port", &env.port.to_string()])
        .arg("--token-file")
        .arg(env.tokens.path())
        .args(["--client-id", &client_id, "--topic", "bench/alloc"])
        .args(["--qos", &qos.to_string(), "--count", &count.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running alloc-count")?;
    if !out.status.success() {
        bail!(
            "alloc-count failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            .with_context(|| format!("alloc-count printed no `{key}`"))
    };
    Ok(Allocs {
        qos,
        messages: get("messages ")?,
        allocations: get("allocations ")?,
        bytes: get("bytes ")?,
        run_allocations: get("run_allocations ")?,
    })
}
