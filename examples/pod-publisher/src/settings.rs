//! Where each connection setting comes from.
//!
//! Besides its own flags and their `SATMQTT_*` variables, the publisher reads the connection
//! variables that Azure IoT Operations SDK workloads use (`AIO_BROKER_HOSTNAME`, ...), so a pod
//! spec written for such a workload runs it unchanged. Precedence, per setting: the flag, its
//! `SATMQTT_*` variable, the `AIO_*` variable, the default. All of it is clap's: a set `AIO_*`
//! variable becomes its argument's default when the `SATMQTT_*` one is unset ([`command`]), and
//! clap already puts the flag and `env` above a default.
//!
//! One AIO-specific default: when the host comes from `AIO_BROKER_HOSTNAME` and nothing says
//! whether to use TLS, TLS is on, as in the AIO SDKs (whose `UseTls` defaults to `true`); the
//! port then defaults to 8883, which is also the SDKs' default.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory};

use crate::Args;

/// Every `AIO_*` variable the publisher understands, and the clap id of the argument it
/// stands for.
pub const AIO: [(&str, &str); 9] = [
    ("host", "AIO_BROKER_HOSTNAME"),
    ("port", "AIO_BROKER_TCP_PORT"),
    ("tls", "AIO_MQTT_USE_TLS"),
    ("ca_file", "AIO_TLS_CA_FILE"),
    ("client_cert", "AIO_TLS_CERT_FILE"),
    ("client_key", "AIO_TLS_KEY_FILE"),
    ("token_file", "AIO_SAT_FILE"),
    ("client_id", "AIO_MQTT_CLIENT_ID"),
    ("keepalive_s", "AIO_MQTT_KEEP_ALIVE"),
];

/// AIO SDK variables this publisher does not support, and why they are ignored.
pub const UNSUPPORTED: [(&str, &str); 5] = [
    (
        "AIO_MQTT_USERNAME",
        "the publisher always logs in as $sat with the service-account token",
    ),
    (
        "AIO_MQTT_PASSWORD_FILE",
        "the publisher always logs in as $sat with the service-account token",
    ),
    (
        "AIO_TLS_KEY_PASSWORD_FILE",
        "encrypted private keys are not supported: mount an unencrypted key",
    ),
    (
        "AIO_MQTT_CLEAN_START",
        "every connection starts a clean session (minimq 0.10)",
    ),
    (
        "AIO_MQTT_SESSION_EXPIRY",
        "every connection starts a clean session (minimq 0.10)",
    ),
];

/// What a boolean takes: clap's `BoolishValueParser` words.
const BOOLEAN_WORDS: &str = "expected true/false, yes/no, on/off, y/n, t/f or 1/0 (any case)";

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The command-line flag.
    Flag(String),
    /// The flag's `SATMQTT_*` variable.
    Env(String),
    /// An Azure IoT Operations SDK variable.
    Aio(&'static str),
    /// The built-in default (possibly none, for optional settings).
    Default,
    /// The AIO SDKs' default, because the host came from `AIO_BROKER_HOSTNAME`.
    AioDefault,
    /// Another variable the default is taken from (`POD_NAME`, `HOSTNAME`).
    Fallback(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) | Source::Env(name) => f.write_str(name),
            Source::Aio(name) | Source::Fallback(name) => f.write_str(name),
            Source::Default => f.write_str("default"),
            Source::AioDefault => f.write_str("AIO SDK default with AIO_BROKER_HOSTNAME"),
        }
    }
}

/// The parsed arguments, where the connection settings came from, and what to warn about.
#[derive(Debug)]
pub struct Settings {
    /// Every setting, resolved.
    pub args: Args,
    /// The source of each argument an `AIO_*` variable can supply, by clap id.
    sources: Vec<(&'static str, Source)>,
    /// Set but ignored variables, with the reason.
    pub warnings: Vec<String>,
}

impl Settings {
    pub fn source(&self, id: &str) -> &Source {
        self.sources
            .iter()
            .find_map(|(i, s)| (*i == id).then_some(s))
            .unwrap_or(&Source::Default)
    }

    /// One line for the start-up log: each connection value and where it came from.
    pub fn describe(&self) -> String {
        let args = &self.args;
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
        };
        format!(
            "host {} ({}), port {} ({}), TLS {} ({}), CA file {} ({}), client certificate \
             {} ({}), client key {} ({}), token file {} ({}), client id {} ({}), keep-alive {} s \
             ({})",
            args.host,
            self.source("host"),
            args.port(),
            self.source("port"),
            if args.tls { "on" } else { "off" },
            self.source("tls"),
            path(&args.ca_file),
            self.source("ca_file"),
            path(&args.client_cert),
            self.source("client_cert"),
            path(&args.client_key),
            self.source("client_key"),
            args.token_file.display(),
            self.source("token_file"),
            args.job.client_id,
            self.source("client_id"),
            args.job.keepalive_s,
            self.source("keepalive_s"),
        )
    }
}

/// The command line, `SATMQTT_*` and `AIO_*` variables, parsed; exits 2 with a message naming
/// the flag or variable on an invalid value.
pub fn parse() -> Settings {
    let env = |name: &str| std::env::var(name).ok();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (command, aio) = command(&env);
    let (args, matches) = satmqtt_cli::parse::<Args>(command.clone(), &argv, |error| {
        env_value_error(error, command, &aio, &argv, &env)
    });
    resolve(args, &matches, &aio, &env)
}

/// The publisher's command with the `AIO_*` layer: each set `AIO_*` variable whose argument's
/// `SATMQTT_*` variable is unset becomes that argument's default. Also returns those, as
/// `(clap id, variable, value)`.
pub fn command(
    env: &dyn Fn(&str) -> Option<String>,
) -> (Command, Vec<(&'static str, &'static str, String)>) {
    let mut command = Args::command().after_help(aio_help());
    let mut applied = Vec::new();
    for (id, variable) in AIO {
        // Empty counts as unset, as the AIO SDK samples do ("set it empty to skip").
        let Some(value) = env(variable).filter(|v| !v.is_empty()) else {
            continue;
        };
        let own_set = command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env())
            .and_then(|own| own.to_str())
            .is_some_and(|own| env(own).is_some());
        if !own_set {
            let default = value.clone();
            command = command.mut_arg(id, |a| a.default_value(default));
            applied.push((id, variable, value));
        }
    }
    (command, applied)
}

/// When a value that came from an environment variable is what clap refused: the message
/// naming the variable (clap's names the flag only).
fn env_value_error(
    error: &clap::Error,
    command: Command,
    aio: &[(&'static str, &'static str, String)],
    argv: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    use clap::error::ErrorKind;
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8
    ) {
        return None;
    }
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        let given = argv.iter().skip(1).any(|a| {
            a.to_str()
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        });
        if given {
            continue;
        }
        let own = arg
            .get_env()
            .and_then(|v| v.to_str())
            .and_then(|v| Some((v.to_owned(), env(v)?)));
        let from_aio = aio
            .iter()
            .find(|(id, ..)| arg.get_id() == *id)
            .map(|(_, variable, value)| ((*variable).to_owned(), value.clone()));
        let Some((variable, value)) = own.or(from_aio) else {
            continue;
        };
        // The value alone, as a default (which clap parses like any value): the error, if
        // any, is this value's.
        let alone =
            Command::new("check").arg(arg.clone().env(None::<&str>).default_value(value.clone()));
        if let Err(e) = alone.try_get_matches_from(["check"]) {
            let why = if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                BOOLEAN_WORDS.to_owned()
            } else {
                std::error::Error::source(&e)
                    .map_or_else(|| satmqtt_cli::logger::clap_text(&e), |s| s.to_string())
            };
            return Some(format!(
                "invalid value {value:?} in the environment variable {variable} (for {flag}): \
                 {why}"
            ));
        }
    }
    None
}

/// Where each setting came from, the AIO TLS default, and the warnings.
pub fn resolve(
    mut args: Args,
    matches: &ArgMatches,
    aio: &[(&'static str, &'static str, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Settings {
    let command = Args::command();
    let source = |id: &'static str| -> Source {
        let arg = command.get_arguments().find(|a| a.get_id() == id);
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag(format!(
                "--{}",
                arg.and_then(|a| a.get_long()).unwrap_or(id)
            )),
            Some(ValueSource::EnvVariable) => Source::Env(
                arg.and_then(|a| a.get_env())
                    .map_or_else(String::new, |e| e.to_string_lossy().into_owned()),
            ),
            _ => match aio.iter().find(|(i, ..)| *i == id) {
                Some((_, variable, _)) => Source::Aio(variable),
                None if id == "client_id" => match satmqtt_cli::client_id_fallback(env).1 {
                    "default" => Source::Default,
                    name => Source::Fallback(name),
                },
                None => Source::Default,
            },
        }
    };
    let mut tls = source("tls");
    if matches!(source("host"), Source::Aio(_)) && tls == Source::Default {
        args.tls = true;
        tls = Source::AioDefault;
    }
    let sources: Vec<(&'static str, Source)> = AIO
        .iter()
        .map(|(id, _)| {
            (
                *id,
                if *id == "tls" {
                    tls.clone()
                } else {
                    source(id)
                },
            )
        })
        .collect();

    let mut warnings = Vec::new();
    if source("token_file") == Source::Default && env("AIO_SAT_FILE").is_some_and(|v| v.is_empty())
    {
        warnings.push(format!(
            "AIO_SAT_FILE is empty (AIO workloads use that to turn token authentication off): \
             this publisher always logs in with a token, read from the default {}",
            args.token_file.display()
        ));
    }
    for (variable, why) in UNSUPPORTED {
        if env(variable).is_some_and(|v| !v.is_empty()) {
            warnings.push(format!("{variable} is set but ignored: {why}"));
        }
    }
    Settings {
        args,
        sources,
        warnings,
    }
}

/// The `--help` epilogue: the AIO variables and the precedence.
fn aio_help() -> String {
    let mut text = String::from(
        "Azure IoT Operations SDK variables are read too, so a pod spec written for an AIO \
         workload runs this publisher unchanged. Each applies only when neither the flag nor its \
         SATMQTT_* variable is given (precedence: flag > SATMQTT_* > AIO_* > default); empty \
         counts as unset:\n",
    );
    let command = Args::command();
    for (id, variable) in AIO {
        let long = command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_long())
            .unwrap_or(id);
        text.push_str(&format!("  {variable:<22} --{long}\n"));
    }
    text.push_str(
        "When the host comes from AIO_BROKER_HOSTNAME, TLS defaults to on (the AIO SDKs' \
         default). Booleans take true/false, yes/no, on/off, y/n, t/f or 1/0 (any case).\n\
         Ignored, with a warning: ",
    );
    text.push_str(&UNSUPPORTED.map(|(name, _)| name).join(", "));
    text.push('.');
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::FromArgMatches;
    use std::collections::HashMap;

    /// Parses `flags` with `env` standing for the whole environment (the process's own
    /// `SATMQTT_*` variables, which clap reads itself, are assumed unset).
    fn run(flags: &[&str], env: &[(&str, &str)]) -> Result<Settings, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |name: &str| env.get(name).cloned();
        let (command, aio) = command(&lookup);
        let argv: Vec<OsString> = std::iter::once("pod-publisher")
            .chain(flags.iter().copied())
            .map(OsString::from)
            .collect();
        let matches = match command.clone().try_get_matches_from(&argv) {
            Ok(m) => m,
            Err(e) => {
                return Err(env_value_error(&e, command, &aio, &argv, &lookup)
                    .unwrap_or_else(|| e.to_string()))
            }
        };
        let args = Args::from_arg_matches(&matches).unwrap();
        Ok(resolve(args, &matches, &aio, &lookup))
    }

    const ALL_AIO: &[(&str, &str)] = &[
        ("AIO_BROKER_HOSTNAME", "aio-broker"),
        ("AIO_BROKER_TCP_PORT", "18883"),
        ("AIO_MQTT_USE_TLS", "true"),
        ("AIO_TLS_CA_FILE", "/var/run/certs/ca.crt"),
        ("AIO_TLS_CERT_FILE", "/var/run/client/tls.crt"),
        ("AIO_TLS_KEY_FILE", "/var/run/client/tls.key"),
        ("AIO_SAT_FILE", "/var/run/secrets/tokens/broker-sat"),
        ("AIO_MQTT_CLIENT_ID", "aio-client"),
        ("AIO_MQTT_KEEP_ALIVE", "30"),
    ];

    #[test]
    fn aio_variables_alone_configure_every_connection_setting() {
        let s = run(&[], ALL_AIO).unwrap();
        let args = &s.args;
        assert_eq!(args.host, "aio-broker");
        assert_eq!(args.port, Some(18883));
        assert!(args.tls);
        assert_eq!(args.ca_file, Some("/var/run/certs/ca.crt".into()));
        assert_eq!(args.client_cert, Some("/var/run/client/tls.crt".into()));
        assert_eq!(args.client_key, Some("/var/run/client/tls.key".into()));
        assert_eq!(
            args.token_file,
            PathBuf::from("/var/run/secrets/tokens/broker-sat")
        );
        assert_eq!(args.job.client_id, "aio-client");
        assert_eq!(args.job.keepalive_s, 30);
        for ((id, variable), (_, value)) in AIO.iter().zip(ALL_AIO) {
            assert_eq!(s.source(id), &Source::Aio(variable), "{id} = {value}");
        }
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn a_flag_beats_the_aio_variable() {
        let flags = [
            "--host",
            "flag-host",
            "--keepalive-s",
            "10",
            "--client-id",
            "flag-id",
        ];
        let s = run(&flags, ALL_AIO).unwrap();
        assert_eq!(s.args.host, "flag-host");
        assert_eq!(s.source("host"), &Source::Flag("--host".into()));
        assert_eq!(s.args.job.keepalive_s, 10);
        assert_eq!(s.args.job.client_id, "flag-id");
        assert_eq!(s.source("client_id"), &Source::Flag("--client-id".into()));
        // The others still come from AIO_*.
        assert_eq!(s.args.port, Some(18883));
        assert_eq!(s.source("port"), &Source::Aio("AIO_BROKER_TCP_PORT"));
    }

    #[test]
    fn without_any_variable_the_defaults_stay() {
        let s = run(&[], &[]).unwrap();
        assert_eq!(s.args.host, "localhost");
        assert_eq!(s.args.port, None);
        assert!(!s.args.tls);
        assert_eq!(s.args.job.keepalive_s, 60);
        assert_eq!(
            s.args.token_file,
            PathBuf::from("/var/run/secrets/tokens/mqtt-client-token")
        );
        assert_eq!(s.source("host"), &Source::Default);
        assert_eq!(s.source("tls"), &Source::Default);
    }

    #[test]
    fn aio_client_id_comes_before_pod_name() {
        let pod = [("POD_NAME", "pod-1"), ("AIO_MQTT_CLIENT_ID", "aio-id")];
        let s = run(&[], &pod).unwrap();
        assert_eq!(s.args.job.client_id, "aio-id");
        assert_eq!(s.source("client_id"), &Source::Aio("AIO_MQTT_CLIENT_ID"));
    }

    #[test]
    fn tls_defaults_to_on_only_when_the_host_comes_from_aio() {
        let s = run(&[], &[("AIO_BROKER_HOSTNAME", "aio-broker")]).unwrap();
        assert!(s.args.tls);
        assert_eq!(s.source("tls"), &Source::AioDefault);
        assert!(s.describe().contains("port 8883 (default)"));

        let s = run(
            &[],
            &[("AIO_BROKER_HOSTNAME", "b"), ("AIO_MQTT_USE_TLS", "FALSE")],
        )
        .unwrap();
        assert!(!s.args.tls);
        assert_eq!(s.source("tls"), &Source::Aio("AIO_MQTT_USE_TLS"));

        let s = run(&["--host", "h"], &[("AIO_BROKER_HOSTNAME", "b")]).unwrap();
        assert!(!s.args.tls);
        assert_eq!(s.source("tls"), &Source::Default);
    }

    #[test]
    fn the_tls_flag_beats_aio_use_tls() {
        let s = run(&["--tls"], &[("AIO_MQTT_USE_TLS", "no")]).unwrap();
        assert!(s.args.tls);
        assert_eq!(s.source("tls"), &Source::Flag("--tls".into()));
    }

    #[test]
    fn aio_booleans_are_clap_words_in_any_case() {
        for (word, tls) in [("TRUE", true), ("yes", true), ("1", true), ("Off", false)] {
            let s = run(&["--host", "h"], &[("AIO_MQTT_USE_TLS", word)]).unwrap();
            assert_eq!(s.args.tls, tls, "{word}");
        }
    }

    #[test]
    fn invalid_aio_values_name_the_variable() {
        let cases = [
            ("AIO_MQTT_USE_TLS", "maybe"),
            ("AIO_BROKER_TCP_PORT", "eighty"),
            ("AIO_BROKER_TCP_PORT", "0"),
            ("AIO_BROKER_TCP_PORT", "65536"),
            ("AIO_MQTT_KEEP_ALIVE", "70000"),
            ("AIO_MQTT_KEEP_ALIVE", "-1"),
            ("AIO_BROKER_HOSTNAME", "a b"),
        ];
        for (variable, value) in cases {
            let text = run(&[], &[(variable, value)]).unwrap_err();
            assert!(
                text.starts_with(&format!(
                    "invalid value {value:?} in the environment variable {variable} (for --"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn an_invalid_aio_value_is_ignored_when_a_flag_overrides_it() {
        let s = run(&["--port", "1883"], &[("AIO_BROKER_TCP_PORT", "x")]).unwrap();
        assert_eq!(s.args.port, Some(1883));
    }

    #[test]
    fn empty_aio_variables_count_as_unset() {
        let s = run(&[], &[("AIO_BROKER_HOSTNAME", ""), ("AIO_SAT_FILE", "")]).unwrap();
        assert_eq!(s.args.host, "localhost");
        assert_eq!(s.source("host"), &Source::Default);
        assert_eq!(s.source("token_file"), &Source::Default);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("AIO_SAT_FILE is empty"));
    }

    #[test]
    fn unsupported_aio_variables_are_warned_about() {
        let env = [
            ("AIO_MQTT_USERNAME", "someone"),
            ("AIO_MQTT_CLEAN_START", ""),
        ];
        let s = run(&[], &env).unwrap();
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].starts_with("AIO_MQTT_USERNAME is set but ignored"));
    }

    #[test]
    fn the_start_up_line_names_each_source() {
        let env = [
            ("AIO_BROKER_HOSTNAME", "aio-broker"),
            ("AIO_BROKER_TCP_PORT", "18883"),
            ("POD_NAME", "pod-7"),
        ];
        let line = run(&["--keepalive-s", "15"], &env).unwrap().describe();
        for part in [
            "host aio-broker (AIO_BROKER_HOSTNAME)",
            "port 18883 (AIO_BROKER_TCP_PORT)",
            "TLS on (AIO SDK default with AIO_BROKER_HOSTNAME)",
            "CA file none (default)",
            "keep-alive 15 s (--keepalive-s)",
            "token file /var/run/secrets/tokens/mqtt-client-token (default)",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
    }

    #[test]
    fn help_lists_every_aio_variable_with_its_flag() {
        let help = aio_help();
        for (_, variable) in AIO {
            assert!(help.contains(variable), "{variable}");
        }
        assert!(help.contains("AIO_BROKER_HOSTNAME    --host\n"), "{help}");
    }
}
