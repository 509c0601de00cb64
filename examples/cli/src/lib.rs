//! What `pod-publisher` and `smoltcp-publisher` share, so both read one way: the job's flags
//! ([`JobArgs`], flattened into each binary's clap `Args`) and the [`satmqtt::Config`] built from
//! them, the logger ([`logger`]), start-up checks of single values ([`check`]), the client-id
//! fallback and the jitter seed.
//!
//! Left out on purpose: how a binary reaches its broker (DNS and TLS for the pod, a TAP device
//! for smoltcp), the `AIO_*` layer (the pod's), and the driver loop (the adapters').

pub mod check;
pub mod logger;

use std::ffi::OsString;
use std::net::SocketAddr;

use clap::{ArgMatches, Command, FromArgMatches};
use satmqtt::{BackoffConfig, Config, ConfigError, Field, Qos};

pub use logger::{Format, LogArgs};

/// Exit code for a configuration, token or device problem found at start-up.
pub const EXIT_CONFIG: u8 = 2;

/// The job: what to publish, how often, and how patiently; the same flags in both binaries.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct JobArgs {
    /// MQTT client id [default: $POD_NAME, then $HOSTNAME, then "sampleid"].
    #[arg(
        long,
        env = "SATMQTT_CLIENT_ID",
        default_value_t = client_id_fallback(&|name| std::env::var(name).ok()).0,
        hide_default_value = true
    )]
    pub client_id: String,
    /// Topic to publish to.
    #[arg(long, env = "SATMQTT_TOPIC", default_value = "sampletopic")]
    pub topic: String,
    /// Payload prefix; the counter follows in decimal.
    #[arg(long, env = "SATMQTT_PAYLOAD_PREFIX", default_value = "samplepayload")]
    pub payload_prefix: String,
    /// QoS of every publish: 0 or 1.
    #[arg(long, env = "SATMQTT_QOS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Milliseconds between publishes; 0 = as fast as the connection allows.
    #[arg(long, env = "SATMQTT_INTERVAL_MS", default_value_t = 1000)]
    pub interval_ms: u64,
    /// Messages to publish, then disconnect and exit 0; 0 = forever.
    #[arg(long, env = "SATMQTT_COUNT", default_value_t = 0)]
    pub count: u64,
    /// First counter value.
    #[arg(long, env = "SATMQTT_START", default_value_t = 0)]
    pub start: u64,
    /// MQTT keepalive in seconds.
    #[arg(long, env = "SATMQTT_KEEPALIVE_S", default_value_t = 60)]
    pub keepalive_s: u16,
    /// Longest wait for TCP connect plus CONNACK, in milliseconds.
    #[arg(long, env = "SATMQTT_CONNECT_TIMEOUT_MS", default_value_t = 5000, value_parser = check::at_least_1_ms)]
    pub connect_timeout_ms: u64,
    /// Longest wait for QoS 1 acknowledgements when stopping, in milliseconds.
    #[arg(long, env = "SATMQTT_DRAIN_TIMEOUT_MS", default_value_t = 5000)]
    pub drain_timeout_ms: u64,
    /// First reconnect delay in milliseconds (doubles per failure, with jitter).
    #[arg(long, env = "SATMQTT_BACKOFF_FLOOR_MS", default_value_t = 100, value_parser = check::at_least_1_ms)]
    pub backoff_floor_ms: u64,
    /// Longest reconnect delay in milliseconds.
    #[arg(long, env = "SATMQTT_BACKOFF_CAP_MS", default_value_t = 60_000, value_parser = check::at_least_1_ms)]
    pub backoff_cap_ms: u64,
}

impl JobArgs {
    /// What clap cannot check one value at a time: the relations between values.
    pub fn check(&self) -> Result<(), String> {
        if self.backoff_cap_ms < self.backoff_floor_ms {
            return Err(format!(
                "--backoff-cap-ms is {} ms, below --backoff-floor-ms {} ms; the cap must be at \
                 least the floor",
                self.backoff_cap_ms, self.backoff_floor_ms
            ));
        }
        Ok(())
    }

    /// QoS as the core spells it (clap has already limited it to 0 or 1).
    pub fn qos(&self) -> Qos {
        if self.qos == 0 {
            Qos::AtMostOnce
        } else {
            Qos::AtLeastOnce
        }
    }

    /// `forever`, or `N messages from S`, for the start-up line.
    pub fn count_text(&self) -> String {
        if self.count == 0 {
            "forever".to_owned()
        } else {
            format!("{} messages from {}", self.count, self.start)
        }
    }
}

/// The job's settings. The broker is left at `0.0.0.0:0` (nothing answers there): how it is
/// reached is each binary's business, so each sets it, `Config { broker, ..job.into() }`.
impl<'a> From<&'a JobArgs> for Config<'a> {
    fn from(job: &'a JobArgs) -> Self {
        let mut config = Config::new(SocketAddr::from(([0, 0, 0, 0], 0)));
        config.client_id = &job.client_id;
        config.topic = &job.topic;
        config.payload_prefix = &job.payload_prefix;
        config.qos = job.qos();
        config.interval_ms = job.interval_ms;
        config.start = job.start;
        config.count = job.count;
        config.keepalive_s = job.keepalive_s;
        config.connect_timeout_ms = job.connect_timeout_ms;
        config.drain_timeout_ms = job.drain_timeout_ms;
        config.backoff = BackoffConfig {
            floor_ms: job.backoff_floor_ms,
            cap_ms: job.backoff_cap_ms,
            ..BackoffConfig::default()
        };
        config
    }
}

/// A core configuration error in words, naming the flag: `--client-id is 200 bytes; at most 64`.
pub fn config_error_text(error: &ConfigError) -> String {
    let field = error.field();
    let flag = match field {
        Field::Count => "--start and --count".to_owned(),
        other => format!("--{}", other.name()),
    };
    let text = error.to_string();
    match text.strip_prefix(field.noun()) {
        Some(rest) if field != Field::Count => format!("{flag}{rest}"),
        _ => format!("{flag}: {text}"),
    }
}

/// `config` checked by the core, or the start-up line saying what is wrong, naming the flag.
pub fn validate(config: &Config<'_>) -> Result<(), String> {
    config
        .validate()
        .map_err(|e| format!("invalid configuration: {}", config_error_text(&e)))
}

/// The default client id and where it came from: `POD_NAME` (unique per replica), else
/// `HOSTNAME`, else `sampleid`; empty counts as unset. `env` looks a variable up.
pub fn client_id_fallback(env: &dyn Fn(&str) -> Option<String>) -> (String, &'static str) {
    for name in ["POD_NAME", "HOSTNAME"] {
        if let Some(value) = env(name).filter(|v| !v.is_empty()) {
            return (value, name);
        }
    }
    ("sampleid".to_owned(), "default")
}

/// Jitter (and port) seed that differs between replicas and restarts.
pub fn seed(client_id: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    client_id
        .bytes()
        .fold(now ^ u64::from(std::process::id()), |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// Parses `argv` with `command`. `--help` and `--version` print and exit 0; any error exits 2
/// with one line in the log format the command line asks for, its text from `explain` when that
/// knows better than clap (e.g. naming the environment variable a bad value came from).
pub fn parse<T: FromArgMatches>(
    command: Command,
    argv: &[OsString],
    explain: impl FnOnce(&clap::Error) -> Option<String>,
) -> (T, ArgMatches) {
    let error = match command
        .clone()
        .try_get_matches_from(argv)
        .and_then(|m| T::from_arg_matches(&m).map(|args| (args, m)))
    {
        Ok(parsed) => return parsed,
        Err(e) => e,
    };
    if !error.use_stderr() {
        // --help, --version.
        error.exit();
    }
    // The format and the id asked for, read by hand: clap has just failed to read them.
    let format = given(argv, "--log-format", "SATMQTT_LOG_FORMAT")
        .and_then(|v| <Format as clap::ValueEnum>::from_str(&v, true).ok())
        .unwrap_or(Format::Text);
    let client_id = given(argv, "--client-id", "SATMQTT_CLIENT_ID")
        .unwrap_or_else(|| client_id_fallback(&|name| std::env::var(name).ok()).0);
    match (format, explain(&error)) {
        // Clap's own layout (usage, hints) is for people at a terminal.
        (Format::Text, None) => {
            let _ = error.print();
        }
        (format, text) => logger::emit(
            format,
            log::Level::Error,
            &client_id,
            &text.unwrap_or_else(|| logger::clap_text(&error)),
        ),
    }
    std::process::exit(i32::from(EXIT_CONFIG));
}

/// The last value of `flag` in `argv` (`--flag v` or `--flag=v`, before a `--`), else the
/// variable `env`.
fn given(argv: &[OsString], flag: &str, env: &str) -> Option<String> {
    let args: Vec<&str> = argv
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .take_while(|a| *a != "--")
        .collect();
    let prefix = format!("{flag}=");
    let from_argv = args.iter().enumerate().rev().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).map(|v| (*v).to_owned())
        } else {
            a.strip_prefix(&prefix).map(str::to_owned)
        }
    });
    from_argv.or_else(|| std::env::var(env).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_format_is_found_in_a_command_line_clap_refused() {
        let argv = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
        let find = |a: &[&str]| given(&argv(a), "--log-format", "SATMQTT_TEST_UNSET_VARIABLE");
        assert_eq!(
            find(&["x", "--host", "a b", "--log-format", "json"]).as_deref(),
            Some("json")
        );
        assert_eq!(
            find(&["x", "--log-format=json", "--port", "0"]).as_deref(),
            Some("json")
        );
        assert_eq!(
            find(&["x", "--log-format", "text", "--log-format=json"]).as_deref(),
            Some("json")
        );
        assert_eq!(find(&["x", "--", "--log-format", "json"]), None);
        assert_eq!(find(&["x", "--log-format"]), None);
    }
}
