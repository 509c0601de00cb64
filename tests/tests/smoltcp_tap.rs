//! The same core on smoltcp, against a real mosquitto, through a Linux TAP device.
//!
//! Arrangement: a network namespace of our own (`satmqtt-tap-<pid>-<random>`) holding a TAP
//! device whose kernel side is 10.77.0.1/24; mosquitto listens on that address inside the
//! namespace; `smoltcp-publisher` attaches to the TAP and runs its own TCP/IP stack as
//! 10.77.0.2, exactly as a microcontroller would; `mosquitto_sub`, inside the namespace too, is
//! the independent witness. No address outside the namespace is used, and the namespace (with
//! the TAP in it) is deleted afterwards, on failure too.
//!
//! Two runs, each in a namespace of its own.
//!
//! `--auth sat`: token rotation, 21 times — more than smoltcp-nal's 16 socket handles, with
//! only 2 TCP sockets in the stack — so every connection must give its socket back. mosquitto
//! holds one password per user and a SIGHUP drops clients whose password no longer matches, so
//! each rotation goes:
//! 1. the new token is written into the password file (not loaded yet) and the token file;
//! 2. SIGUSR1: the publisher's driver re-reads the file, drains its in-flight messages, sends
//!    DISCONNECT and closes, then connects with the new token;
//! 3. once the broker has logged `Received DISCONNECT from <id>`, it is told to reload
//!    (SIGHUP): the old connection is already gone, so nobody is dropped. (`Client <id>
//!    disconnected.` is no proof of a client DISCONNECT, so the test counts `Received
//!    DISCONNECT` lines instead.);
//! 4. the publisher's first CONNECT with the new token may beat the reload and be refused
//!    (CONNACK 0x87): the core backs off and retries. Those refusals are counted and reported,
//!    and each one is a connection whose socket must come back too.
//!
//! `--auth k8s-sat` (mosquitto with the tests' K8S-SAT auth plugin, see
//! `satmqtt_tests::plugin`): the same 21 rotations, each presented in band: the new token is
//! made valid at the plugin, written to the token file, SIGUSR1; the driver sends AUTH 0x19 and
//! keeps publishing; once the plugin has logged the accepted re-authentication the old token is
//! revoked. One connection for the whole run, one socket, and the subscriber sees no gap and no
//! duplicate.
//!
//! So the `sat` assertions are strict: every counter arrives once, in order, with no gap and no
//! duplicate (rotations drain; refused sessions publish nothing); every accepted session ends
//! with the client's DISCONNECT; no connection is ever dropped without one; the publisher's own
//! socket accounting shows every socket back in the pool with its closing handshake finished.
//! The publisher's 32-bit millisecond clock starts 2 s before its wrap, so the run also crosses
//! it.
//!
//! Needs root and /dev/net/tun: without either the test fails, naming what is missing.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use satmqtt_tests::plugin::{k8s_sat_plugin, token_tag};
use satmqtt_tests::tools::{
    find_program, is_root, random_hex, run_bounded, signal_child, terminate,
};
use satmqtt_tests::wait::wait_until;
use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, BrokerLog, Sequence, SAT_USERNAME, SUBSCRIBER_PASSWORD,
    SUBSCRIBER_USERNAME,
};
use tempfile::TempDir;

/// The kernel's side of the TAP: the broker's address.
const BROKER_IP: &str = "10.77.0.1";
const BROKER_CIDR: &str = "10.77.0.1/24";
/// smoltcp's side.
const PUBLISHER_CIDR: &str = "10.77.0.2/24";
const PORT: u16 = 1883;
const TAP: &str = "tap0";
const TOPIC: &str = "sampletopic";
const PREFIX: &str = "samplepayload";
const CLIENT_ID: &str = "smoltcp-tap";

/// Token rotations: more than smoltcp-nal's pool of 16 socket handles.
const ROTATIONS: u64 = 21;
/// TCP sockets in the publisher's smoltcp socket set.
const TCP_SOCKETS: u64 = 2;
/// Messages in the run, and the subscriber count at which rotation k is handed in (k·STEP).
const COUNT: u64 = 600;
const STEP: u64 = COUNT / (ROTATIONS + 3);
const INTERVAL_MS: u64 = 5;
/// The publisher's clock starts this close to its 32-bit wrap.
const CLOCK_START_MS: u32 = u32::MAX - 2_000;

const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(5);
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Fails (never skips) when the test cannot run here; returns the `ip` program.
fn require_tap_privileges() -> PathBuf {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push(
            "root: creating a network namespace and a TAP device needs CAP_NET_ADMIN; run the \
             tests as root (CI does)"
                .to_string(),
        );
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push(
            "/dev/net/tun: the TUN/TAP driver is not available; `modprobe tun`, or start the \
             container with `--device /dev/net/tun`"
                .to_string(),
        );
    }
    let ip = find_program("ip");
    if ip.is_none() {
        missing.push("`ip`: install iproute2 (apt-get install -y iproute2)".to_string());
    }
    assert!(
        missing.is_empty(),
        "the smoltcp TAP test cannot run on this machine; missing:\n  - {}",
        missing.join("\n  - ")
    );
    ip.unwrap()
}

/// A network namespace with a TAP device in it; deleted (with the TAP) on drop.
struct Namespace {
    name: String,
    ip: PathBuf,
}

impl Namespace {
    fn create(ip: &Path) -> Namespace {
        let name = format!("satmqtt-tap-{}-{}", std::process::id(), random_hex(6));
        let ns = Namespace {
            name,
            ip: ip.to_path_buf(),
        };
        ns.ip(&["netns", "add", &ns.name]);
        // From here on, drop deletes it.
        ns.exec_ip(&["link", "set", "lo", "up"]);
        ns.exec_ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
        ns.exec_ip(&["addr", "add", BROKER_CIDR, "dev", TAP]);
        ns.exec_ip(&["link", "set", TAP, "up"]);
        ns
    }

    /// `ip netns exec <name> <program>`: the program runs inside the namespace (ip execs it,
    /// so the child's pid is the program's).
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(&self.ip);
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .stdin(Stdio::null());
        command
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut command = self.command(&self.ip);
        command.args(args);
        check(
            &mut command,
            &format!("ip netns exec {} ip {}", self.name, args.join(" ")),
        );
    }

    fn ip(&self, args: &[&str]) {
        let mut command = Command::new(&self.ip);
        command.args(args);
        check(&mut command, &format!("ip {}", args.join(" ")));
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let mut command = Command::new(&self.ip);
        command.args(["netns", "delete", &self.name]);
        let output = run_bounded(&mut command, COMMAND_TIMEOUT);
        if !output.status.success() {
            eprintln!(
                "warning: `ip netns delete {}` failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

fn check(command: &mut Command, shown: &str) {
    let output = run_bounded(command, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "`{shown}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// mosquitto inside the namespace on 10.77.0.1, `$sat` with one token at a time; with the
/// K8S-SAT plugin too when asked, its valid tokens one file each in `k8s-sat-tokens/`.
struct NsBroker {
    child: Child,
    dir: TempDir,
    mosquitto_passwd: PathBuf,
}

const K8S_TOKENS_DIR: &str = "k8s-sat-tokens";

impl NsBroker {
    fn start(ns: &Namespace, token: &str) -> NsBroker {
        NsBroker::launch(ns, token, false)
    }

    /// With the K8S-SAT plugin; no K8S-SAT token is valid until [`NsBroker::allow_k8s_token`].
    fn start_k8s_sat(ns: &Namespace, token: &str) -> NsBroker {
        NsBroker::launch(ns, token, true)
    }

    fn launch(ns: &Namespace, token: &str, k8s_sat: bool) -> NsBroker {
        let mosquitto = required("mosquitto");
        let mosquitto_passwd = required("mosquitto_passwd");
        let dir = tempfile::Builder::new()
            .prefix("satmqtt-tap-broker-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("mosquitto.conf");
        let mut plugin = String::new();
        if k8s_sat {
            let tokens = dir.path().join(K8S_TOKENS_DIR);
            fs::create_dir(&tokens).unwrap();
            plugin = format!(
                "plugin {}\nplugin_opt_tokens_dir {}\n",
                k8s_sat_plugin().display(),
                tokens.display()
            );
        }
        fs::write(
            &config,
            format!(
                // Global security settings: mosquitto 2.0.11 only ticks plugins without
                // per-listener settings.
                "{global}listener {PORT} {BROKER_IP}\n\
                 allow_anonymous false\n\
                 password_file {dir}/passwd\n\
                 log_dest file {dir}/mosquitto.log\n\
                 log_type all\n\
                 connection_messages true\n\
                 persistence false\n\
                 user root\n{plugin}",
                dir = dir.path().display(),
                global = if k8s_sat {
                    "per_listener_settings false\n"
                } else {
                    ""
                },
            ),
        )
        .unwrap();
        let broker_files = (dir, mosquitto_passwd);
        write_password_file(
            &broker_files.1,
            &broker_files.0.path().join("passwd"),
            token,
        );
        let stderr = fs::File::create(broker_files.0.path().join("mosquitto.stderr")).unwrap();
        let child = ns
            .command(&mosquitto)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut broker = NsBroker {
            child,
            dir: broker_files.0,
            mosquitto_passwd: broker_files.1,
        };
        let running = wait_until(START_TIMEOUT, || {
            if broker
                .log()
                .messages()
                .any(|m| m.contains("mosquitto version") && m.ends_with(" running"))
            {
                return Some(Ok(()));
            }
            match broker.child.try_wait() {
                Ok(None) => None,
                other => Some(Err(format!("mosquitto exited: {other:?}"))),
            }
        });
        match running {
            Some(Ok(())) => broker,
            problem => panic!(
                "mosquitto did not come up in the namespace: {problem:?}\n--- log ---\n{}\n\
                 --- stderr ---\n{}",
                broker.log().text(),
                read_lossy(&broker.dir.path().join("mosquitto.stderr"))
            ),
        }
    }

    fn log(&self) -> BrokerLog {
        BrokerLog::new(read_lossy(&self.dir.path().join("mosquitto.log")))
    }

    /// Writes `token` as `$sat`'s password into the file, without telling mosquitto yet.
    fn stage_password(&self, token: &str) {
        let staged = self.dir.path().join("passwd.new");
        let _ = fs::remove_file(&staged);
        write_password_file(&self.mosquitto_passwd, &staged, token);
        fs::rename(&staged, self.dir.path().join("passwd")).unwrap();
    }

    /// Makes `token` valid for K8S-SAT from the next authentication on (renamed into place, so
    /// the plugin never reads half of it).
    fn allow_k8s_token(&self, token: &str) {
        let dir = self.dir.path().join(K8S_TOKENS_DIR);
        let name = k8s_token_file(token);
        let staged = dir.join(format!(".{name}.tmp"));
        fs::write(&staged, token).unwrap();
        fs::rename(&staged, dir.join(name)).unwrap();
    }

    /// Makes `token` invalid for K8S-SAT from the next authentication on.
    fn revoke_k8s_token(&self, token: &str) {
        let path = self
            .dir
            .path()
            .join(K8S_TOKENS_DIR)
            .join(k8s_token_file(token));
        fs::remove_file(path).unwrap();
    }

    /// SIGHUP, and wait for mosquitto to log the reload.
    fn reload(&self) {
        let before = self.log().reloads();
        signal_child(&self.child, Signal::SIGHUP);
        assert!(
            wait_until(START_TIMEOUT, || (self.log().reloads() > before)
                .then_some(()))
            .is_some(),
            "mosquitto did not reload after SIGHUP\n--- log ---\n{}",
            self.log().text()
        );
    }
}

impl Drop for NsBroker {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
    }
}

/// A token's file name at the plugin: derived from it, never the token itself.
fn k8s_token_file(token: &str) -> String {
    format!(
        "token-{}",
        token_tag(token.as_bytes()).replace([':', ','], "-")
    )
}

fn write_password_file(mosquitto_passwd: &Path, file: &Path, token: &str) {
    let file = file.to_str().unwrap();
    for args in [
        ["-b", "-c", file, SAT_USERNAME, token],
        ["-b", file, SUBSCRIBER_USERNAME, SUBSCRIBER_PASSWORD, ""],
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let output = run_bounded(Command::new(mosquitto_passwd).args(&args), COMMAND_TIMEOUT);
        // The password stays out of the message.
        assert!(
            output.status.success(),
            "mosquitto_passwd {} failed: {}",
            args[..args.len() - 1].join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `mosquitto_sub` inside the namespace: what the broker really delivered, line by line.
struct NsSubscriber {
    child: Child,
    client_id: String,
    received: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

const SYNC_PREFIX: &str = "satmqtt-tap-sync-";

impl NsSubscriber {
    fn start(ns: &Namespace, broker: &NsBroker) -> NsSubscriber {
        let client_id = format!("satmqtt-tap-sub-{}", random_hex(8));
        let mut child = ns
            .command(&required("mosquitto_sub"))
            .args(["-h", BROKER_IP, "-p", &PORT.to_string(), "-V", "mqttv5"])
            .args(["-u", SUBSCRIBER_USERNAME, "-P", SUBSCRIBER_PASSWORD])
            .args(["-q", "1", "-t", TOPIC, "-i", &client_id])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lock(&sink).push(line);
            }
        });
        let subscriber = NsSubscriber {
            child,
            client_id,
            received,
            reader: Some(reader),
        };
        let suback = format!("Sending SUBACK to {}", subscriber.client_id);
        assert!(
            wait_until(START_TIMEOUT, || broker
                .log()
                .messages()
                .any(|m| m == suback)
                .then_some(()))
            .is_some(),
            "the subscriber was not subscribed within {START_TIMEOUT:?}\n--- broker log ---\n{}",
            broker.log().text()
        );
        subscriber
    }

    fn payloads(&self) -> Vec<String> {
        lock(&self.received)
            .iter()
            .filter(|p| !p.starts_with(SYNC_PREFIX))
            .cloned()
            .collect()
    }

    /// Everything the broker routed here before this call: publishes a marker and waits for it
    /// (the broker delivers to one subscriber in the order it received the messages).
    fn sync(&self, ns: &Namespace) -> Vec<String> {
        let marker = format!("{SYNC_PREFIX}{}", random_hex(12));
        let mut publish = ns.command(&required("mosquitto_pub"));
        publish
            .args(["-h", BROKER_IP, "-p", &PORT.to_string(), "-V", "mqttv5"])
            .args(["-u", SUBSCRIBER_USERNAME, "-P", SUBSCRIBER_PASSWORD])
            .args(["-q", "1", "-t", TOPIC, "-m", &marker])
            .args(["-i", &format!("{}-sync", self.client_id)]);
        let output = run_bounded(&mut publish, COMMAND_TIMEOUT);
        assert!(
            output.status.success(),
            "mosquitto_pub of the sync marker failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let arrived = wait_until(COMMAND_TIMEOUT, || {
            lock(&self.received).contains(&marker).then_some(())
        });
        assert!(arrived.is_some(), "the sync marker never arrived");
        self.payloads()
    }
}

impl Drop for NsSubscriber {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn lock(v: &Mutex<Vec<String>>) -> MutexGuard<'_, Vec<String>> {
    v.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `smoltcp-publisher` inside the namespace; its output captured to files; killed on drop.
struct NsPublisher {
    child: Child,
    dir: TempDir,
    status: Option<ExitStatus>,
}

impl NsPublisher {
    fn spawn(ns: &Namespace, binary: &Path, args: &[String]) -> NsPublisher {
        let dir = tempfile::Builder::new()
            .prefix("satmqtt-tap-publisher-")
            .tempdir()
            .unwrap();
        let mut command = ns.command(binary);
        // The test sets every flag; nothing may come in through the environment.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("SATMQTT_")) {
                command.env_remove(&key);
            }
        }
        let child = command
            .args(args)
            .stdout(fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        NsPublisher {
            child,
            dir,
            status: None,
        }
    }

    fn output(&self) -> String {
        read_lossy(&self.dir.path().join("stdout")) + &read_lossy(&self.dir.path().join("stderr"))
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.exited())
    }
}

impl Drop for NsPublisher {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn required(name: &str) -> PathBuf {
    satmqtt_tests::tools::require_program(name)
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Replaces the token file atomically (a reader never sees half a token).
fn write_token(path: &Path, token: &str) {
    let staged = path.with_extension("new");
    fs::write(&staged, token).unwrap();
    fs::rename(&staged, path).unwrap();
}

/// Builds `smoltcp-publisher` and returns the executable's path (cargo's JSON messages).
fn build_publisher() -> PathBuf {
    const PACKAGE: &str = "smoltcp-publisher";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let logs = tempfile::tempdir().unwrap();
    let mut child = Command::new(&cargo)
        .args(["build", "-q", "-p", PACKAGE, "--bin", PACKAGE])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .stdout(fs::File::create(logs.path().join("stdout")).unwrap())
        .stderr(fs::File::create(logs.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_until(BUILD_TIMEOUT, || child.try_wait().ok().flatten());
    let stderr = read_lossy(&logs.path().join("stderr"));
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("`cargo build -p {PACKAGE}` failed ({status}):\n{stderr}"),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`cargo build -p {PACKAGE}` took longer than {BUILD_TIMEOUT:?}");
        }
    }
    read_lossy(&logs.path().join("stdout"))
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == PACKAGE)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("`cargo build -p {PACKAGE}` reported no executable\n{stderr}"))
}

/// The numbers in a `socket returned: ...` line of the publisher's log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SocketLine {
    in_use: u64,
    pool: u64,
    closing: u64,
    opened: u64,
    closed: u64,
    settled: u64,
    lingered: u64,
}

impl SocketLine {
    /// `socket returned: 0 of 2 TCP sockets in use, 0 closing; opened 3, closed 3, handshakes
    /// finished 3, lingered out 0 (waited 0 ms)`
    fn parse(line: &str) -> Option<SocketLine> {
        let rest = &line[line.find("socket returned: ")? + "socket returned: ".len()..];
        let numbers: Vec<u64> = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        match numbers[..] {
            [in_use, pool, closing, opened, closed, settled, lingered, _waited] => {
                Some(SocketLine {
                    in_use,
                    pool,
                    closing,
                    opened,
                    closed,
                    settled,
                    lingered,
                })
            }
            _ => None,
        }
    }
}

/// The number after `key ` in the publisher's `finished: ...` line.
fn finished_field(output: &str, key: &str) -> Option<u64> {
    let line = output.lines().find(|l| l.contains(" finished: "))?;
    let at = line.find(&format!("{key} "))? + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_core_on_smoltcp_over_a_tap_rotates_its_token_21_times_with_no_gap_and_no_leaked_socket() {
    let ip = require_tap_privileges();
    let binary = build_publisher();

    // Declared first, dropped last: every process below is gone before the namespace is.
    let ns = Namespace::create(&ip);
    let mut tokens = vec![fake_jwt(3600)];
    let broker = NsBroker::start(&ns, &tokens[0]);
    let subscriber = NsSubscriber::start(&ns, &broker);
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    write_token(&token_file, &tokens[0]);

    let args = publisher_args(&token_file, "sat");
    let started = Instant::now();
    let mut publisher = NsPublisher::spawn(&ns, &binary, &args);

    // Fails with everything known so far.
    let diagnose = |publisher: &NsPublisher, what: &str| -> String {
        format!(
            "{what}\n--- subscriber: {} payloads ---\n--- publisher output ---\n{}\n\
             --- broker log (last 60 lines) ---\n{}",
            subscriber.payloads().len(),
            publisher.output(),
            last_lines(broker.log().text(), 60)
        )
    };
    let connects = || broker.log().connects(CLIENT_ID).len() as u64;
    let disconnects = || client_disconnects(&broker.log());

    assert!(
        wait_until(STEP_TIMEOUT, || (connects() >= 1).then_some(())).is_some(),
        "{}",
        diagnose(&publisher, "the publisher never connected")
    );
    for k in 1..=ROTATIONS {
        // Publishing goes on between rotations.
        let want = (k * STEP) as usize;
        if wait_until(STEP_TIMEOUT, || {
            (subscriber.payloads().len() >= want).then_some(())
        })
        .is_none()
        {
            panic!(
                "{}",
                diagnose(
                    &publisher,
                    &format!("rotation {k}: fewer than {want} messages arrived")
                )
            );
        }
        assert!(
            publisher.exited().is_none(),
            "{}",
            diagnose(
                &publisher,
                &format!("the publisher exited before rotation {k}")
            )
        );
        let token = fake_jwt(3600);
        assert!(!tokens.contains(&token));
        broker.stage_password(&token);
        write_token(&token_file, &token);
        tokens.push(token);
        signal_child(&publisher.child, Signal::SIGUSR1);
        // Not `Client <id> disconnected.`: mosquitto also logs that when a reload drops the
        // offline session left by the last rotation (minimq asks for session expiry u32::MAX).
        if wait_until(STEP_TIMEOUT, || (disconnects() >= k).then_some(())).is_none() {
            panic!(
                "{}",
                diagnose(
                    &publisher,
                    &format!("rotation {k}: no DISCONNECT from the publisher")
                )
            );
        }
        broker.reload();
        if wait_until(STEP_TIMEOUT, || (connects() > k).then_some(())).is_none() {
            panic!(
                "{}",
                diagnose(
                    &publisher,
                    &format!("rotation {k}: no connection with the new token")
                )
            );
        }
    }
    let status = publisher.wait(EXIT_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        diagnose(
            &publisher,
            &format!("the publisher did not exit 0 within {EXIT_TIMEOUT:?}: {status:?}")
        )
    );
    let elapsed = started.elapsed();

    let payloads = subscriber.sync(&ns);
    let sequence = Sequence::parse(PREFIX, &payloads);
    let log = broker.log();
    let output = publisher.output();
    let refused = log.auth_rejections() as u64;
    let accepted = log.connects(CLIENT_ID).len() as u64;
    let sockets: Vec<SocketLine> = output.lines().filter_map(SocketLine::parse).collect();
    eprintln!(
        "smoltcp TAP run: {COUNT} messages in {elapsed:.1?}; {ROTATIONS} rotations; sessions \
         accepted {accepted}, refused before the reload {refused}; subscriber: {} payloads, \
         duplicates {}, gaps {:?}; socket lines {}",
        sequence.count,
        sequence.duplicates,
        sequence.gaps,
        sockets.len()
    );

    // What the subscriber saw: everything, once, in order.
    sequence.assert_contiguous(0, COUNT);

    // What the broker saw: one session per token, each ended by the client's DISCONNECT (a
    // session the broker dropped at a reload would lack it), none taken over.
    assert_eq!(
        accepted,
        ROTATIONS + 1,
        "{}",
        diagnose(&publisher, "accepted sessions")
    );
    assert_eq!(
        client_disconnects(&log),
        ROTATIONS + 1,
        "{}",
        diagnose(
            &publisher,
            "every accepted session ends with the client's DISCONNECT"
        )
    );
    assert_eq!(log.closed_without_disconnect(CLIENT_ID), 0);
    assert!(
        !log.messages().any(|m| m.contains("already connected")),
        "a session was taken over: its DISCONNECT never arrived"
    );
    // ... and the publisher agrees: its sessions ended by rotation, by completion, or by a
    // token the broker had not loaded yet; never by the broker closing or anything else.
    let ends: Vec<&str> = output
        .lines()
        .filter_map(|l| Some(&l[l.find("session ended: ")? + "session ended: ".len()..]))
        .collect();
    let expected_end = |e: &&str| {
        e.starts_with("token rotation; DISCONNECT sent")
            || e.starts_with("all messages published; DISCONNECT sent")
            || e.starts_with("token rejected: CONNACK 0x87")
    };
    assert!(
        ends.iter().all(expected_end),
        "unexpected session ends: {:?}",
        ends.iter().filter(|e| !expected_end(e)).collect::<Vec<_>>()
    );
    assert_eq!(ends.len() as u64, accepted + refused, "{ends:#?}");

    // What the publisher's stack saw: every session's socket back in the pool, its closing
    // handshake finished; more sessions than smoltcp-nal has handles.
    let sessions = accepted + refused;
    assert_eq!(
        sockets.len() as u64,
        sessions,
        "{}",
        diagnose(&publisher, "one `socket returned` line per session")
    );
    for (i, line) in sockets.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(
            *line,
            SocketLine {
                in_use: 0,
                pool: TCP_SOCKETS,
                closing: 0,
                opened: n,
                closed: n,
                settled: n,
                lingered: 0,
            },
            "after session {n}"
        );
    }
    assert!(sessions > 16, "{sessions} sessions");

    // The publisher's own account agrees, and its 32-bit clock wrapped during the run.
    assert_eq!(finished_field(&output, "sent"), Some(COUNT), "{output}");
    assert_eq!(finished_field(&output, "duplicates"), Some(0), "{output}");
    assert_eq!(
        finished_field(&output, "sessions"),
        Some(sessions),
        "{output}"
    );
    assert_eq!(
        finished_field(&output, "rotations"),
        Some(ROTATIONS),
        "{output}"
    );
    let clock_now = finished_field(&output, "now").unwrap_or(u64::MAX);
    assert!(
        clock_now < u64::from(CLOCK_START_MS),
        "the clock should have wrapped: it started at {CLOCK_START_MS} and ended at {clock_now}"
    );
    for token in &tokens {
        assert_no_token_leak("smoltcp-publisher output", &output, token);
    }
}

/// The publisher's flags: a QoS 1 run of [`COUNT`] messages from 0 with login `auth`.
fn publisher_args(token_file: &Path, auth: &str) -> Vec<String> {
    [
        ["--tap", TAP],
        ["--address", PUBLISHER_CIDR],
        ["--host", BROKER_IP],
        ["--port", &PORT.to_string()],
        ["--client-id", CLIENT_ID],
        ["--topic", TOPIC],
        ["--payload-prefix", PREFIX],
        ["--token-file", token_file.to_str().unwrap()],
        ["--auth", auth],
        ["--qos", "1"],
        ["--interval-ms", &INTERVAL_MS.to_string()],
        ["--count", &COUNT.to_string()],
        ["--start", "0"],
        ["--tcp-sockets", &TCP_SOCKETS.to_string()],
        // A refused CONNECT (see the module doc) is retried within 20..200 ms.
        ["--backoff-floor-ms", "20"],
        ["--backoff-cap-ms", "200"],
        ["--clock-start-ms", &CLOCK_START_MS.to_string()],
    ]
    .iter()
    .flatten()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn with_k8s_sat_the_core_on_smoltcp_reauthenticates_21_times_on_one_connection() {
    let ip = require_tap_privileges();
    let binary = build_publisher();

    // Declared first, dropped last: every process below is gone before the namespace is.
    let ns = Namespace::create(&ip);
    let mut tokens = vec![fake_jwt(3600)];
    // The `$sat` password is only the subscriber's broker's default; the publisher uses K8S-SAT.
    let broker = NsBroker::start_k8s_sat(&ns, &fake_jwt(3600));
    broker.allow_k8s_token(&tokens[0]);
    let subscriber = NsSubscriber::start(&ns, &broker);
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    write_token(&token_file, &tokens[0]);

    let started = Instant::now();
    let mut publisher = NsPublisher::spawn(&ns, &binary, &publisher_args(&token_file, "k8s-sat"));
    let diagnose = |publisher: &NsPublisher, what: &str| -> String {
        format!(
            "{what}\n--- subscriber: {} payloads ---\n--- publisher output ---\n{}\n\
             --- broker log (last 60 lines) ---\n{}",
            subscriber.payloads().len(),
            publisher.output(),
            last_lines(broker.log().text(), 60)
        )
    };
    let reauths = || {
        broker
            .log()
            .k8s_sat_decisions()
            .iter()
            .filter(|d| d.reauth && d.accepted && d.client_id == CLIENT_ID)
            .count() as u64
    };
    assert!(
        wait_until(STEP_TIMEOUT, || (!broker
            .log()
            .connects(CLIENT_ID)
            .is_empty())
        .then_some(()))
        .is_some(),
        "{}",
        diagnose(&publisher, "the publisher never connected")
    );
    for k in 1..=ROTATIONS {
        let want = (k * STEP) as usize;
        if wait_until(STEP_TIMEOUT, || {
            (subscriber.payloads().len() >= want).then_some(())
        })
        .is_none()
        {
            panic!(
                "{}",
                diagnose(
                    &publisher,
                    &format!("rotation {k}: fewer than {want} messages arrived")
                )
            );
        }
        assert!(
            publisher.exited().is_none(),
            "{}",
            diagnose(
                &publisher,
                &format!("the publisher exited before rotation {k}")
            )
        );
        let token = fake_jwt(3600);
        assert!(!tokens.contains(&token));
        broker.allow_k8s_token(&token);
        write_token(&token_file, &token);
        tokens.push(token);
        signal_child(&publisher.child, Signal::SIGUSR1);
        if wait_until(STEP_TIMEOUT, || (reauths() >= k).then_some(())).is_none() {
            panic!(
                "{}",
                diagnose(
                    &publisher,
                    &format!("rotation {k}: no accepted re-authentication")
                )
            );
        }
        // From here on only the new token gets in: a reconnect could not hide behind the old.
        broker.revoke_k8s_token(&tokens[tokens.len() - 2]);
    }
    let status = publisher.wait(EXIT_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        diagnose(
            &publisher,
            &format!("the publisher did not exit 0 within {EXIT_TIMEOUT:?}: {status:?}")
        )
    );
    let elapsed = started.elapsed();

    let payloads = subscriber.sync(&ns);
    let sequence = Sequence::parse(PREFIX, &payloads);
    let log = broker.log();
    let output = publisher.output();
    let decisions: Vec<_> = log
        .k8s_sat_decisions()
        .into_iter()
        .filter(|d| d.client_id == CLIENT_ID)
        .collect();
    let sockets: Vec<SocketLine> = output.lines().filter_map(SocketLine::parse).collect();
    eprintln!(
        "smoltcp TAP k8s-sat run: {COUNT} messages in {elapsed:.1?}; {ROTATIONS} rotations; \
         broker: {} connection(s), {} K8S-SAT decisions ({} re-authentications accepted); \
         subscriber: {} payloads, duplicates {}, gaps {:?}; socket lines {}",
        log.connects(CLIENT_ID).len(),
        decisions.len(),
        decisions.iter().filter(|d| d.reauth && d.accepted).count(),
        sequence.count,
        sequence.duplicates,
        sequence.gaps,
        sockets.len()
    );

    // The subscriber: everything, once, in order.
    sequence.assert_contiguous(0, COUNT);

    // The broker: one connection, one accepted CONNECT and 21 accepted AUTH, nothing refused,
    // each AUTH with the token handed in for it; the one connection ended by the client.
    assert_eq!(
        log.connects(CLIENT_ID).len(),
        1,
        "{}",
        diagnose(&publisher, "one connection")
    );
    let tags: Vec<String> = tokens.iter().map(|t| token_tag(t.as_bytes())).collect();
    let seen: Vec<(bool, bool, Option<String>)> = decisions
        .iter()
        .map(|d| (d.reauth, d.accepted, d.token_tag.clone()))
        .collect();
    let expected: Vec<(bool, bool, Option<String>)> = tags
        .iter()
        .enumerate()
        .map(|(i, tag)| (i > 0, true, Some(tag.clone())))
        .collect();
    assert_eq!(
        seen, expected,
        "K8S-SAT decisions: CONNECT, then one AUTH per rotation"
    );
    assert!(decisions.iter().all(|d| d.method == "K8S-SAT"));
    assert_eq!(
        client_disconnects(&log),
        1,
        "{}",
        diagnose(&publisher, "DISCONNECT")
    );
    assert_eq!(log.closed_without_disconnect(CLIENT_ID), 0);
    assert_eq!(log.k8s_sat_kicks(CLIENT_ID), 0);

    // The publisher: one connection ended by completion, its one socket back with its closing
    // handshake finished, 21 rotations by re-authentication, nothing sent twice.
    let ends: Vec<&str> = output
        .lines()
        .filter_map(|l| Some(&l[l.find("session ended: ")? + "session ended: ".len()..]))
        .collect();
    assert_eq!(
        ends,
        ["all messages published; DISCONNECT sent"],
        "{output}"
    );
    assert_eq!(
        sockets,
        [SocketLine {
            in_use: 0,
            pool: TCP_SOCKETS,
            closing: 0,
            opened: 1,
            closed: 1,
            settled: 1,
            lingered: 0,
        }],
        "{output}"
    );
    for (key, want) in [
        ("sent", COUNT),
        ("duplicates", 0),
        ("sessions", 1),
        ("connections", 1),
        ("re-authentications", ROTATIONS),
        ("rotations", ROTATIONS),
        ("refused", 0),
    ] {
        assert_eq!(finished_field(&output, key), Some(want), "{key}\n{output}");
    }
    let clock_now = finished_field(&output, "now").unwrap_or(u64::MAX);
    assert!(
        clock_now < u64::from(CLOCK_START_MS),
        "the clock should have wrapped: it started at {CLOCK_START_MS} and ended at {clock_now}"
    );
    for token in &tokens {
        assert_no_token_leak("smoltcp-publisher output", &output, token);
    }
}

/// DISCONNECT packets the broker received from the publisher.
fn client_disconnects(log: &BrokerLog) -> u64 {
    let wanted = format!("Received DISCONNECT from {CLIENT_ID}");
    log.messages().filter(|m| *m == wanted).count() as u64
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
