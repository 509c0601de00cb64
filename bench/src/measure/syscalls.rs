//! System calls per message: `strace -f -c` of one flat-out run per client and QoS.
//!
//! strace slows the client down a lot, but the counts are what matter: a client that coalesces
//! its sends makes few calls per message however slow it runs. Start-up calls (a few hundred)
//! are included; over thousands of messages they add little.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::clients::{command, Env, Job, Kind};
use crate::report::Syscalls;

/// satmqtt, raw, rumqttc and Paho C at QoS 0 and 1, `count` messages each; a client that cannot
/// run or be traced is left out, with the reason in `errors`.
pub fn measure(env: &Env, strace: &Path, count: u64, errors: &mut Vec<String>) -> Vec<Syscalls> {
    let mut out = Vec::new();
    for (kind, label) in [
        (Kind::Satmqtt, "satmqtt pod-publisher"),
        (Kind::Raw, "raw (the limit)"),
        (Kind::Rumqttc, "rumqttc"),
        (Kind::Paho, "Paho C (MQTTClient)"),
    ] {
        if !kind.available(env) {
            continue;
        }
        for qos in [0, 1] {
            match trace(env, strace, kind, qos, count) {
                Ok(calls) => out.push(Syscalls {
                    label: label.to_owned(),
                    qos,
                    messages: count,
                    calls,
                }),
                Err(e) => errors.push(format!("strace of {label} at QoS {qos}: {e:#}")),
            }
        }
    }
    out
}

fn trace(
    env: &Env,
    strace: &Path,
    kind: Kind,
    qos: u8,
    count: u64,
) -> anyhow::Result<Vec<(String, u64)>> {
    let topic = format!("bench/strace/{kind:?}/{qos}");
    let id = format!("bench-strace-{kind:?}-{qos}");
    let job = Job {
        port: env.port,
        topic: &topic,
        client_id: &id,
        qos,
        count,
        interval_ms: 0,
        // Paho C's synchronous client has no window of its own; the bench's C client keeps 20.
        window: (kind == Kind::Paho && qos == 1).then_some(20),
    };
    let (cmd, _) = command(env, kind, None, &job)?;
    let report = env.file(&format!("strace-{kind:?}-{qos}.txt"));
    let log = env.file(&format!("strace-{kind:?}-{qos}.log"));
    let status = Command::new(strace)
        .args(["-f", "-c", "-o"])
        .arg(&report)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .status()
        .context("running strace")?;
    if !status.success() {
        bail!("exited {status}: {}", crate::clients::tail(&log));
    }
    let text =
        fs::read_to_string(&report).with_context(|| format!("reading {}", report.display()))?;
    let mut calls = parse(&text);
    if calls.is_empty() {
        bail!("no counts in {}", report.display());
    }
    calls.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(calls)
}

/// (syscall, calls) from `strace -c` output.
fn parse(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors], syscall
            if f.len() < 5 || f[0].parse::<f64>().is_err() {
                return None;
            }
            let name = *f.last()?;
            if name == "total" {
                return None;
            }
            Some((name.to_owned(), f[3].parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strace_summary() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                     60.00    0.000600          10        60           sendto\n\
                     40.00    0.000400           4       100        99 recvfrom\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    0.001000           6       160        99 total\n";
        assert_eq!(
            parse(text),
            vec![("sendto".to_owned(), 60), ("recvfrom".to_owned(), 100)]
        );
    }
}
