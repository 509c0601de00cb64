//! `cargo xtask demo`: the whole path on one machine, the way a pod runs it.
//!
//! A JWT-shaped token in a kubelet-style projected-volume directory, mosquitto on a free
//! 127.0.0.1 port that accepts it as the `$sat` password, `mosquitto_sub` subscribed, then
//! `pod-publisher` sends 10 messages at QoS 1, 200 ms apart. The demo passes if the subscriber got
//! exactly `samplepayload0 ..= samplepayload9`, in order. Broker, subscriber and publisher are
//! stopped and the temp dirs removed on every exit path (drop guards).

use anyhow::anyhow;
use std::process::Stdio;
use std::time::Duration;

use satmqtt_tests::wait::wait_until;
use satmqtt_tests::{fake_jwt, Broker, Sequence, Subscriber, TokenDir};

use crate::cmd::{self, ChildGuard};
use crate::install;

const COUNT: u64 = 10;
/// With `--auth k8s-sat`: long enough to rotate the token in the middle.
const K8S_COUNT: u64 = 20;
/// The messages take 2 or 4 s; the rest is margin for a slow machine.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// `k8s_sat`: K8S-SAT enhanced authentication against the plugin broker, with one rotation.
pub fn run(k8s_sat: bool) -> anyhow::Result<()> {
    install::ensure(install::MOSQUITTO)?;
    if k8s_sat {
        install::ensure(install::K8S_SAT_PLUGIN)?;
    }
    let count = if k8s_sat { K8S_COUNT } else { COUNT };

    println!("==> building pod-publisher (release)");
    cmd::run(&mut cmd::cargo([
        "build",
        "--release",
        "-q",
        "-p",
        "pod-publisher",
    ]))?;

    let token = fake_jwt(3600);
    let tokens = TokenDir::new();
    tokens.write(&token);
    println!(
        "==> token: a JWT-shaped service-account token ({} bytes), projected at {}",
        token.len(),
        tokens.path().display()
    );

    let broker = if k8s_sat {
        let broker = Broker::start_k8s_sat(&token);
        broker.allow_k8s_token(&token);
        broker
    } else {
        Broker::start(&token)
    };
    println!(
        "==> broker: mosquitto on {}:{} ({}; log: {})",
        Broker::HOST,
        broker.port(),
        if k8s_sat {
            "K8S-SAT enhanced authentication through tests/plugin/k8s_sat_auth.c"
        } else {
            "`$sat` + token"
        },
        broker.log_path().display()
    );

    let subscriber = Subscriber::start(&broker, "sampletopic");
    println!("==> subscriber: mosquitto_sub on `sampletopic` (QoS 1), subscribed");

    let port = broker.port().to_string();
    let token_file = tokens.path();
    let mut publisher = cmd::cargo(["run", "--release", "-q", "-p", "pod-publisher", "--"]);
    publisher
        .args(["--host", Broker::HOST, "--port", &port, "--token-file"])
        .arg(&token_file)
        .args([
            "--count",
            &count.to_string(),
            "--interval-ms",
            "200",
            "--qos",
            "1",
            "--client-id",
            "demo",
            "--auth",
            if k8s_sat { "k8s-sat" } else { "sat" },
        ])
        .stdin(Stdio::null());
    println!("==> publisher log ($ {}):", cmd::display(&publisher));
    let child = publisher
        .spawn()
        .map_err(|e| anyhow!("could not start pod-publisher: {e}"))?;
    let mut publisher = ChildGuard(child);
    if k8s_sat {
        // Halfway, the kubelet rotates the token: the broker knows the new one first.
        std::thread::sleep(Duration::from_millis(200 * count / 2));
        let new = fake_jwt(3600);
        broker.allow_k8s_token(&new);
        tokens.write(&new);
        println!("==> kubelet: rotated the token ({} bytes)", new.len());
    }
    let status = wait_until(PUBLISH_TIMEOUT, || publisher.0.try_wait().ok().flatten())
        .ok_or_else(|| anyhow!("pod-publisher did not finish within {PUBLISH_TIMEOUT:?}"))?;
    if !status.success() {
        return Err(anyhow!(
            "pod-publisher failed ({status}); broker log: {}",
            broker.log_path().display()
        ));
    }

    let payloads = subscriber.sync(Duration::from_secs(10));
    println!("==> the subscriber received {} messages:", payloads.len());
    for payload in &payloads {
        println!("    {payload}");
    }
    let sequence = Sequence::parse("samplepayload", &payloads);
    if !sequence.is_contiguous(0, count) {
        return Err(anyhow!(sequence.report(0, count)));
    }
    if k8s_sat {
        let log = broker.events();
        let connects = log.connects("demo").len();
        let reauths = log
            .k8s_sat_decisions()
            .iter()
            .filter(|d| d.reauth && d.accepted)
            .count();
        println!(
            "==> broker: {connects} connection(s) from `demo`, {reauths} accepted \
             re-authentication(s)"
        );
        if connects != 1 || reauths != 1 {
            return Err(anyhow!(
                "expected one connection and one re-authentication across the rotation; \
                 broker log: {}",
                broker.log_path().display()
            ));
        }
    }
    println!(
        "==> demo OK: samplepayload0 ..= samplepayload{} arrived in order, once each{}",
        count - 1,
        if k8s_sat {
            ", on one connection across a token rotation"
        } else {
            ""
        }
    );
    Ok(())
}
