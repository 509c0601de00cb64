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
/// 10 messages 200 ms apart take 2 s; the rest is margin for a slow machine.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run() -> anyhow::Result<()> {
    install::ensure(install::MOSQUITTO)?;

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

    let broker = Broker::start(&token);
    println!(
        "==> broker: mosquitto on {}:{} (`$sat` + token; log: {})",
        Broker::HOST,
        broker.port(),
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
            &COUNT.to_string(),
            "--interval-ms",
            "200",
            "--qos",
            "1",
        ])
        .stdin(Stdio::null());
    println!("==> publisher log ($ {}):", cmd::display(&publisher));
    let child = publisher
        .spawn()
        .map_err(|e| anyhow!("could not start pod-publisher: {e}"))?;
    let mut publisher = ChildGuard(child);
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
    if !sequence.is_contiguous(0, COUNT) {
        return Err(anyhow!(sequence.report(0, COUNT)));
    }
    println!(
        "==> demo OK: samplepayload0 ..= samplepayload{} arrived in order, once each",
        COUNT - 1
    );
    Ok(())
}
