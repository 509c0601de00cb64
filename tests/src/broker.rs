//! A private mosquitto broker per test, and a reader for what it logs.
//!
//! Facts about mosquitto 2.0.11's log that the tests rely on, verified on Debian 12 with
//! `log_type all` and `connection_messages true` (each line is prefixed with `<unix time>: `):
//!
//! | event | line |
//! |---|---|
//! | listener is open | `mosquitto version 2.0.11 running` |
//! | accepted CONNECT | `New client connected from 127.0.0.1:60690 as good (p5, c1, k60, u'$sat').` (`p5` = MQTT v5, `p2` = v3.1.1) |
//! | wrong password | `Sending CONNACK to 127.0.0.1 (0, 135)` then `Client <unknown> disconnected, not authorised.` (no client id) |
//! | client sent DISCONNECT | `Received DISCONNECT from good` then `Client good disconnected.` |
//! | client closed TCP without DISCONNECT | `Client bare closed its connection.` |
//! | SIGHUP | `Reloading config.` |
//! | port taken | `Error: Address already in use` |

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::tls_certs::TlsListener;
use crate::tools::{is_root, require_program, signal_child, terminate};
use crate::wait::wait_until;
use crate::{SAT_USERNAME, SUBSCRIBER_PASSWORD, SUBSCRIBER_USERNAME};

// Stop, restart on the same port, persistence: `Broker::start_persistent`, `stop`, `resume`.
mod restart;

/// How long a broker may take to open its listener.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a start is retried when another process grabbed the chosen port first.
const PORT_ATTEMPTS: usize = 5;
/// How long mosquitto gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running mosquitto on `127.0.0.1` and a free ephemeral port, with its files in a temp dir.
///
/// Anonymous clients are refused. The password file knows two users: [`SAT_USERNAME`] with the token
/// given to [`Broker::start`] as password, and [`SUBSCRIBER_USERNAME`]/[`SUBSCRIBER_PASSWORD`] for the
/// independent subscriber. Persistence is off: every broker starts empty. The broker is stopped
/// (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Broker {
    child: Child,
    dir: TempDir,
    port: u16,
    tls_port: Option<u16>,
    mosquitto_passwd: PathBuf,
}

enum StartOutcome {
    Running,
    PortTaken,
}

impl Broker {
    /// The address the broker listens on.
    pub const HOST: &'static str = "127.0.0.1";

    /// Starts a broker whose `$sat` user has `sat_token` as password and waits until it listens.
    ///
    /// # Panics
    /// If mosquitto is not installed (the message says what to install), or the broker does not come
    /// up within 5 s (the message contains its log).
    pub fn start(sat_token: &str) -> Broker {
        Broker::launch(sat_token, None, false)
    }

    /// Like [`Broker::start`], plus the K8S-SAT auth plugin ([`crate::plugin`]) with
    /// `per_listener_settings false` (its expiry kicks need the tick event). Clients that send
    /// Authentication Method `K8S-SAT` are checked against the tokens in [`Broker::k8s_tokens_dir`]
    /// (none at first: see [`Broker::allow_k8s_token`]); clients without an Authentication Method
    /// still log in with the password file (the subscriber, `$sat`).
    ///
    /// # Panics
    /// As [`Broker::start`], and if the plugin cannot be built (the message names the packages).
    pub fn start_k8s_sat(sat_token: &str) -> Broker {
        Broker::launch(sat_token, None, true)
    }

    /// Like [`Broker::start`], plus a TLS listener on another free port of [`Broker::HOST`]
    /// ([`Broker::tls_port`]); the plain listener ([`Broker::port`]) stays for the subscriber.
    /// Both share the password file.
    ///
    /// # Panics
    /// As [`Broker::start`], e.g. when mosquitto cannot load the listener's certificates.
    pub fn start_tls(sat_token: &str, tls: &TlsListener) -> Broker {
        Broker::launch(sat_token, Some(tls), false)
    }

    /// [`Broker::start_tls`] and [`Broker::start_k8s_sat`] together: the TLS listener, and the
    /// K8S-SAT plugin on both listeners.
    ///
    /// # Panics
    /// As [`Broker::start_tls`] and [`Broker::start_k8s_sat`].
    pub fn start_tls_k8s_sat(sat_token: &str, tls: &TlsListener) -> Broker {
        Broker::launch(sat_token, Some(tls), true)
    }

    fn launch(sat_token: &str, tls: Option<&TlsListener>, k8s_sat: bool) -> Broker {
        let mosquitto = require_program("mosquitto");
        let mosquitto_passwd = require_program("mosquitto_passwd");
        let dir = tempfile::Builder::new()
            .prefix("satmqtt-broker-")
            .tempdir()
            .expect("creating the broker's temp dir");
        let password_file = dir.path().join("passwd");
        write_password_file(&mosquitto_passwd, &password_file, sat_token);
        let plugin = k8s_sat.then(|| {
            fs::create_dir(dir.path().join(K8S_TOKENS_DIR)).expect("creating the tokens dir");
            crate::plugin::k8s_sat_plugin()
        });

        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let tls_port = tls.map(|_| (0..8).map(|_| free_port()).find(|p| *p != port));
            let tls_port = tls_port.map(|p| p.expect("a second free port"));
            let mut text = config_text(dir.path(), port, plugin);
            if let (Some(tls), Some(tls_port)) = (tls, tls_port) {
                text.push_str(&format!("listener {tls_port} {}\n", Broker::HOST));
                text.push_str(&tls.config_lines());
            }
            let config = dir.path().join("mosquitto.conf");
            fs::write(&config, text).expect("writing mosquitto.conf");
            let _ = fs::remove_file(dir.path().join("mosquitto.log"));
            let stderr = fs::File::create(dir.path().join("mosquitto.stderr"))
                .expect("creating mosquitto.stderr");
            let mut child = Command::new(&mosquitto)
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", mosquitto.display()));
            match wait_until_running(&mut child, dir.path()) {
                Ok(StartOutcome::Running) => {
                    return Broker {
                        child,
                        dir,
                        port,
                        tls_port,
                        mosquitto_passwd,
                    }
                }
                // Another process took the port between our probe and mosquitto's bind; mosquitto
                // has exited. Try another port.
                Ok(StartOutcome::PortTaken) => terminate(&mut child, STOP_GRACE),
                Err(message) => {
                    terminate(&mut child, STOP_GRACE);
                    panic!("mosquitto failed to start: {message}");
                }
            }
        }
        panic!("mosquitto could not bind a free port in {PORT_ATTEMPTS} attempts");
    }

    /// The port the broker listens on (on [`Broker::HOST`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener's port, for a broker made by [`Broker::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The broker's temp dir (config, password file, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The K8S-SAT plugin's tokens directory (for a broker made by [`Broker::start_k8s_sat`]):
    /// every file in it not starting with `.` is one valid token.
    pub fn k8s_tokens_dir(&self) -> PathBuf {
        self.dir.path().join(K8S_TOKENS_DIR)
    }

    /// Makes `token` valid for K8S-SAT from the next authentication on (until its JWT `exp`, if it
    /// has one). Written atomically (a dot file renamed into place), so the plugin never reads half.
    pub fn allow_k8s_token(&self, token: &str) {
        let dir = self.k8s_tokens_dir();
        assert!(
            dir.is_dir(),
            "allow_k8s_token needs a broker made by Broker::start_k8s_sat"
        );
        let name = token_file_name(token);
        let staged = dir.join(format!(".{name}.tmp"));
        fs::write(&staged, token).expect("writing a K8S-SAT token file");
        fs::rename(&staged, dir.join(name)).expect("renaming a K8S-SAT token file into place");
    }

    /// Makes `token` invalid for K8S-SAT from the next authentication on (a client already in stays).
    pub fn revoke_k8s_token(&self, token: &str) {
        let path = self.k8s_tokens_dir().join(token_file_name(token));
        fs::remove_file(&path).unwrap_or_else(|e| panic!("revoking a K8S-SAT token: {e}"));
    }

    /// Path of the broker's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// The broker's log so far (`log_type all`).
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The broker's log so far, parsed.
    pub fn events(&self) -> BrokerLog {
        BrokerLog::new(self.log())
    }

    /// Polls the log until `condition` holds; `false` if it did not within `timeout`.
    pub fn wait_for_log(&self, timeout: Duration, condition: impl Fn(&BrokerLog) -> bool) -> bool {
        wait_until(timeout, || condition(&self.events()).then_some(())).is_some()
    }

    /// Replaces the `$sat` password (the subscriber's stays) and makes mosquitto reload it.
    ///
    /// The new file is renamed into place, then mosquitto gets SIGHUP; returns once the broker has
    /// logged the reload. mosquitto then drops connected clients whose password no longer matches.
    ///
    /// # Panics
    /// If the reload is not logged within 5 s.
    pub fn set_sat_password(&self, new_token: &str) {
        let staged = self.dir.path().join("passwd.new");
        let _ = fs::remove_file(&staged);
        write_password_file(&self.mosquitto_passwd, &staged, new_token);
        fs::rename(&staged, self.dir.path().join("passwd")).expect("replacing the password file");
        let reloads_before = self.events().reloads();
        signal_child(&self.child, Signal::SIGHUP);
        assert!(
            self.wait_for_log(START_TIMEOUT, |log| log.reloads() > reloads_before),
            "mosquitto did not log `Reloading config.` within {START_TIMEOUT:?} after SIGHUP.\n--- log ---\n{}",
            self.log()
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        terminate(&mut self.child, STOP_GRACE);
    }
}

/// Waits for mosquitto's `running` line. The listener is open once it is logged; probing the port
/// with a TCP connect instead would add a connection to the log that tests count.
fn wait_until_running(child: &mut Child, dir: &Path) -> Result<StartOutcome, String> {
    let read = |name: &str| {
        fs::read(dir.join(name))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    let outcome = wait_until(START_TIMEOUT, || {
        let log = read("mosquitto.log");
        if log
            .lines()
            .any(|l| l.contains("mosquitto version") && l.ends_with(" running"))
        {
            return Some(Ok(StartOutcome::Running));
        }
        match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => {
                let stderr = read("mosquitto.stderr");
                if log.contains("Address already in use")
                    || stderr.contains("Address already in use")
                {
                    Some(Ok(StartOutcome::PortTaken))
                } else {
                    Some(Err(format!(
                        "mosquitto exited with {status}.\n--- log ---\n{log}\n--- stderr ---\n{stderr}"
                    )))
                }
            }
            Err(e) => Some(Err(format!("waiting for mosquitto: {e}"))),
        }
    });
    outcome.unwrap_or_else(|| {
        Err(format!(
            "mosquitto did not open its listener within {START_TIMEOUT:?}.\n--- log ---\n{}",
            read("mosquitto.log")
        ))
    })
}

fn free_port() -> u16 {
    TcpListener::bind((Broker::HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// Name of the K8S-SAT tokens directory inside the broker's temp dir.
const K8S_TOKENS_DIR: &str = "k8s-sat-tokens";

/// A token's file name in the tokens dir: derived from the token, so revoking finds it, and never
/// the token itself.
fn token_file_name(token: &str) -> String {
    format!(
        "token-{}",
        crate::plugin::token_tag(token.as_bytes()).replace([':', ','], "-")
    )
}

/// `max_queued_messages 0` (no limit): mosquitto's default queues at most 1000 QoS 1 messages for a
/// subscriber that is behind and drops the rest, which a flat-out publisher with a 20-message
/// window outruns on a loaded machine: the broker would lose messages it acknowledged.
fn config_text(dir: &Path, port: u16, plugin: Option<&Path>) -> String {
    let mut config = String::new();
    if plugin.is_some() {
        // Global security settings: 2.0.11 only fires MOSQ_EVT_TICK without per-listener settings.
        config.push_str("per_listener_settings false\n");
    }
    config += &format!(
        "listener {port} {host}\n\
         allow_anonymous false\n\
         password_file {dir}/passwd\n\
         log_dest file {dir}/mosquitto.log\n\
         log_type all\n\
         connection_messages true\n\
         persistence false\n\
         max_queued_messages 0\n",
        host = Broker::HOST,
        dir = dir.display(),
    );
    if let Some(plugin) = plugin {
        config.push_str(&format!(
            "plugin {}\nplugin_opt_tokens_dir {}/{K8S_TOKENS_DIR}\n",
            plugin.display(),
            dir.display()
        ));
    }
    if is_root() {
        // Started as root, mosquitto switches to the `mosquitto` user, which cannot read or write our
        // private temp dir. Staying root is fine for a throwaway test broker.
        config.push_str("user root\n");
    }
    config
}

fn write_password_file(mosquitto_passwd: &Path, file: &Path, sat_token: &str) {
    let run = |args: &[&str]| {
        let output = Command::new(mosquitto_passwd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", mosquitto_passwd.display()));
        // The password is deliberately left out of the message.
        assert!(
            output.status.success(),
            "mosquitto_passwd {} {} <user> failed: {}",
            args[0],
            args[1],
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let file = file.to_str().expect("temp dir path is UTF-8");
    run(&["-b", "-c", file, SAT_USERNAME, sat_token]);
    run(&["-b", file, SUBSCRIBER_USERNAME, SUBSCRIBER_PASSWORD]);
}

/// One accepted CONNECT as mosquitto logs it:
/// `New client connected from 127.0.0.1:60690 as good (p5, c1, k60, u'$sat').`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The client id.
    pub client_id: String,
    /// Protocol as mosquitto prints it: `p5` for MQTT v5, `p2` for v3.1.1.
    pub protocol: String,
    /// The Clean Start (v5) / Clean Session (v3) flag.
    pub clean_start: bool,
    /// Keep alive in seconds.
    pub keepalive_s: u32,
    /// The username, if the client sent one.
    pub username: Option<String>,
}

impl Connect {
    /// Whether the client spoke MQTT v5.
    pub fn is_mqtt5(&self) -> bool {
        self.protocol == "p5"
    }

    fn parse(message: &str) -> Option<Connect> {
        let rest = message.strip_prefix("New client connected from ")?;
        let (_, rest) = rest.split_once(" as ")?;
        let open = rest.rfind(" (")?;
        let client_id = &rest[..open];
        let fields = rest[open + 2..].strip_suffix(").")?;
        let (flags, username) = match fields.split_once(", u'") {
            Some((flags, user)) => (flags, Some(user.strip_suffix('\'')?.to_string())),
            None => (fields, None),
        };
        let mut protocol = None;
        let mut clean_start = None;
        let mut keepalive_s = None;
        for flag in flags.split(", ") {
            match flag.split_at_checked(1)? {
                ("p", _) => protocol = Some(flag.to_string()),
                ("c", v) => clean_start = Some(v == "1"),
                ("k", v) => keepalive_s = v.parse().ok(),
                _ => {}
            }
        }
        Some(Connect {
            client_id: client_id.to_string(),
            protocol: protocol?,
            clean_start: clean_start?,
            keepalive_s: keepalive_s?,
            username,
        })
    }
}

/// A mosquitto log, with queries for the events the tests assert on.
#[derive(Debug, Clone)]
pub struct BrokerLog {
    text: String,
}

impl BrokerLog {
    /// Wraps a log's text.
    pub fn new(text: impl Into<String>) -> BrokerLog {
        BrokerLog { text: text.into() }
    }

    /// The raw text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Each line without its `<unix time>: ` prefix.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        self.text.lines().map(|line| match line.split_once(": ") {
            Some((stamp, message)) if stamp.bytes().all(|b| b.is_ascii_digit()) => message,
            _ => line,
        })
    }

    fn count(&self, wanted: &str) -> usize {
        self.messages().filter(|m| *m == wanted).count()
    }

    /// Every accepted CONNECT, in order.
    pub fn all_connects(&self) -> Vec<Connect> {
        self.messages().filter_map(Connect::parse).collect()
    }

    /// The accepted CONNECTs of `client_id`, in order.
    pub fn connects(&self, client_id: &str) -> Vec<Connect> {
        self.all_connects()
            .into_iter()
            .filter(|c| c.client_id == client_id)
            .collect()
    }

    /// Sessions of `client_id` that ended with the client's DISCONNECT packet
    /// (`Client <id> disconnected.`).
    pub fn clean_disconnects(&self, client_id: &str) -> usize {
        self.count(&format!("Client {client_id} disconnected."))
    }

    /// Sessions of `client_id` that ended with a TCP close and no DISCONNECT
    /// (`Client <id> closed its connection.`).
    pub fn closed_without_disconnect(&self, client_id: &str) -> usize {
        self.count(&format!("Client {client_id} closed its connection."))
    }

    /// CONNECTs refused for bad credentials (CONNACK 0x87). mosquitto does not log the client id
    /// of these: they show as `Client <unknown> disconnected, not authorised.`
    pub fn auth_rejections(&self) -> usize {
        self.messages()
            .filter(|m| m.starts_with("Client ") && m.ends_with(" disconnected, not authorised."))
            .count()
    }

    /// TCP connections accepted on the listener (`New connection from ...`).
    pub fn tcp_connections(&self) -> usize {
        self.messages()
            .filter(|m| m.starts_with("New connection from "))
            .count()
    }

    /// Configuration reloads (SIGHUP).
    pub fn reloads(&self) -> usize {
        self.count("Reloading config.")
    }

    /// Every decision the K8S-SAT plugin logged, in order (see [`crate::plugin`]).
    pub fn k8s_sat_decisions(&self) -> Vec<SatDecision> {
        self.messages().filter_map(SatDecision::parse).collect()
    }

    /// How many times the K8S-SAT plugin kicked `client_id` because its token's `exp` passed.
    pub fn k8s_sat_kicks(&self, client_id: &str) -> usize {
        let prefix = format!("k8s-sat: kick {client_id} exp=");
        self.messages().filter(|m| m.starts_with(&prefix)).count()
    }
}

/// One authentication decision of the K8S-SAT plugin, e.g.
/// `k8s-sat: reauth pod-1 method=K8S-SAT token=len:310,fnv:1a2b3c4d accept exp=1795990000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SatDecision {
    /// `true` for an AUTH 0x19 of a connected client, `false` for a CONNECT.
    pub reauth: bool,
    /// The client id (empty if mosquitto had none yet).
    pub client_id: String,
    /// The Authentication Method the client sent.
    pub method: String,
    /// How the token was logged, [`crate::plugin::token_tag`]; `None` for a deferred method.
    pub token_tag: Option<String>,
    /// Whether the plugin accepted.
    pub accepted: bool,
    /// Why, when refused: `unknown`, `expired`, or `defer` for a method other than K8S-SAT.
    pub refusal: Option<String>,
    /// The accepted token's `exp` (0: never expires).
    pub exp: Option<i64>,
}

impl SatDecision {
    fn parse(message: &str) -> Option<SatDecision> {
        let rest = message.strip_prefix("k8s-sat: ")?;
        let mut words = rest.split(' ');
        let reauth = match words.next()? {
            "connect" => false,
            "reauth" => true,
            _ => return None,
        };
        let client_id = words.next()?.to_string();
        let method = words.next()?.strip_prefix("method=")?.to_string();
        let mut token_tag = None;
        let mut accepted = false;
        let mut refusal = None;
        let mut exp = None;
        let mut last = None;
        for word in words {
            if let Some(tag) = word.strip_prefix("token=") {
                token_tag = Some(tag.to_string());
            } else if let Some(v) = word.strip_prefix("exp=") {
                exp = v.parse().ok();
            } else if word == "accept" {
                accepted = true;
            } else if word == "defer" {
                refusal = Some("defer".to_string());
            } else if last == Some("refuse") {
                refusal = Some(word.to_string());
            }
            last = Some(word);
        }
        Some(SatDecision {
            reauth,
            client_id,
            method,
            token_tag,
            accepted,
            refusal,
            exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines captured from mosquitto 2.0.11 on Debian 12.
    const LOG: &str = "\
1795605010: mosquitto version 2.0.11 running
1795605011: New connection from 127.0.0.1:60690 on port 18830.
1795605011: New client connected from 127.0.0.1:60690 as good (p5, c1, k60, u'$sat').
1795605011: Received DISCONNECT from good
1795605011: Client good disconnected.
1795605011: New connection from 127.0.0.1:60694 on port 18830.
1795605011: Sending CONNACK to 127.0.0.1 (0, 135)
1795605011: Client <unknown> disconnected, not authorised.
1795605011: New connection from 127.0.0.1:60700 on port 18830.
1795605011: New client connected from 127.0.0.1:60700 as v311 (p2, c0, k30).
1795605011: Client v311 closed its connection.
1795605092: Reloading config.
";

    #[test]
    fn parses_connect_lines() {
        let log = BrokerLog::new(LOG);
        assert_eq!(
            log.connects("good"),
            vec![Connect {
                client_id: "good".into(),
                protocol: "p5".into(),
                clean_start: true,
                keepalive_s: 60,
                username: Some("$sat".into()),
            }]
        );
        let v311 = &log.connects("v311")[0];
        assert!(!v311.is_mqtt5());
        assert!(!v311.clean_start);
        assert_eq!(v311.keepalive_s, 30);
        assert_eq!(v311.username, None);
        assert_eq!(log.all_connects().len(), 2);
    }

    #[test]
    fn tells_disconnect_from_bare_close() {
        let log = BrokerLog::new(LOG);
        assert_eq!(log.clean_disconnects("good"), 1);
        assert_eq!(log.closed_without_disconnect("good"), 0);
        assert_eq!(log.clean_disconnects("v311"), 0);
        assert_eq!(log.closed_without_disconnect("v311"), 1);
    }

    #[test]
    fn counts_rejections_connections_and_reloads() {
        let log = BrokerLog::new(LOG);
        assert_eq!(log.auth_rejections(), 1);
        assert_eq!(log.tcp_connections(), 3);
        assert_eq!(log.reloads(), 1);
    }

    #[test]
    fn parses_the_plugin_decisions() {
        let log = BrokerLog::new(
            "1: k8s-sat: connect p1 method=K8S-SAT token=len:3,fnv:0011aabb accept exp=0\n\
             2: k8s-sat: reauth p1 method=K8S-SAT token=len:4,fnv:0011aabc refuse unknown\n\
             3: k8s-sat: connect p2 method=OTHER defer (not K8S-SAT)\n\
             4: k8s-sat: kick p1 exp=5\n",
        );
        let d = log.k8s_sat_decisions();
        assert_eq!(d.len(), 3);
        assert!(!d[0].reauth && d[0].accepted && d[0].exp == Some(0));
        assert_eq!(d[0].token_tag.as_deref(), Some("len:3,fnv:0011aabb"));
        assert!(d[1].reauth && !d[1].accepted);
        assert_eq!(d[1].refusal.as_deref(), Some("unknown"));
        assert_eq!(
            (d[2].method.as_str(), d[2].refusal.as_deref()),
            ("OTHER", Some("defer"))
        );
        assert_eq!(log.k8s_sat_kicks("p1"), 1);
    }

    #[test]
    fn a_client_id_that_prefixes_another_is_not_confused_with_it() {
        let log = BrokerLog::new("1: Client good disconnected.\n2: Client goodbye disconnected.\n");
        assert_eq!(log.clean_disconnects("good"), 1);
    }
}
