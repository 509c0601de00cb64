//! Where each connection setting comes from.
//!
//! Besides its own flags and their `SATMQTT_*` variables, the publisher reads the connection
//! variables that Azure IoT Operations SDK workloads use (`AIO_BROKER_HOSTNAME`, ...), so a pod
//! spec written for such a workload runs it unchanged. Precedence, per setting:
//!
//! 1. the command-line flag,
//! 2. its `SATMQTT_*` variable (clap's `env`: these two are clap's business),
//! 3. the `AIO_*` variable, applied here only when clap reports neither of the above
//!    ([`clap::ArgMatches::value_source`]),
//! 4. the default. One AIO-specific default: when the host comes from `AIO_BROKER_HOSTNAME`
//!    and nothing says whether to use TLS, TLS is on, as in the AIO SDKs (whose `UseTls`
//!    defaults to `true`); the port then defaults to 8883, which is also the SDKs' default.
//!
//! Every resolved value keeps its [`Source`], so the start-up log says where it came from. An
//! `AIO_*` value that does not parse is a configuration error naming the variable (exit 2); an
//! empty one counts as unset.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::Args;

/// One setting that an `AIO_*` variable can supply.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    /// clap's id of the argument (the field name).
    pub id: &'static str,
    /// The flag.
    pub flag: &'static str,
    /// The flag's own environment variable.
    pub own_env: &'static str,
    /// The Azure IoT Operations SDK variable.
    pub aio_env: &'static str,
}

const fn mapping(
    id: &'static str,
    flag: &'static str,
    own_env: &'static str,
    aio_env: &'static str,
) -> Mapping {
    Mapping {
        id,
        flag,
        own_env,
        aio_env,
    }
}

/// Every `AIO_*` variable the publisher understands, and the flag it stands for.
pub const MAPPINGS: [Mapping; 9] = [
    mapping("host", "--host", "SATMQTT_HOST", "AIO_BROKER_HOSTNAME"),
    mapping("port", "--port", "SATMQTT_PORT", "AIO_BROKER_TCP_PORT"),
    mapping("tls", "--tls", "SATMQTT_TLS", "AIO_MQTT_USE_TLS"),
    mapping("ca_file", "--ca-file", "SATMQTT_CA_FILE", "AIO_TLS_CA_FILE"),
    mapping(
        "client_cert",
        "--client-cert",
        "SATMQTT_CLIENT_CERT",
        "AIO_TLS_CERT_FILE",
    ),
    mapping(
        "client_key",
        "--client-key",
        "SATMQTT_CLIENT_KEY",
        "AIO_TLS_KEY_FILE",
    ),
    mapping(
        "token_file",
        "--token-file",
        "SATMQTT_TOKEN_FILE",
        "AIO_SAT_FILE",
    ),
    mapping(
        "client_id",
        "--client-id",
        "SATMQTT_CLIENT_ID",
        "AIO_MQTT_CLIENT_ID",
    ),
    mapping(
        "keepalive_s",
        "--keepalive-s",
        "SATMQTT_KEEPALIVE_S",
        "AIO_MQTT_KEEP_ALIVE",
    ),
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

/// How clap says an argument was given (a default is "not given").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// On the command line.
    Flag,
    /// In its `SATMQTT_*` variable.
    Env,
}

impl Given {
    /// What clap's [`ArgMatches`] say about argument `id`.
    pub fn from_matches(matches: &ArgMatches, id: &str) -> Option<Given> {
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Some(Given::Flag),
            Some(ValueSource::EnvVariable) => Some(Given::Env),
            _ => None,
        }
    }
}

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The command-line flag.
    Flag(&'static str),
    /// The flag's `SATMQTT_*` variable.
    Env(&'static str),
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
            Source::Flag(name) | Source::Env(name) | Source::Aio(name) | Source::Fallback(name) => {
                f.write_str(name)
            }
            Source::Default => f.write_str("default"),
            Source::AioDefault => f.write_str("AIO SDK default with AIO_BROKER_HOSTNAME"),
        }
    }
}

/// The source of every setting an `AIO_*` variable can supply, and what to warn about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    /// `--host`.
    pub host: Source,
    /// `--port`.
    pub port: Source,
    /// `--tls`.
    pub tls: Source,
    /// `--ca-file`.
    pub ca_file: Source,
    /// `--client-cert`.
    pub client_cert: Source,
    /// `--client-key`.
    pub client_key: Source,
    /// `--token-file`.
    pub token_file: Source,
    /// `--client-id`.
    pub client_id: Source,
    /// `--keepalive-s`.
    pub keepalive_s: Source,
    /// Set but ignored variables, with the reason (for warnings).
    pub warnings: Vec<String>,
}

impl Origins {
    /// One line for the start-up log: each value and where it came from.
    pub fn describe(&self, args: &Args) -> String {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
        };
        let port = args.port.unwrap_or(if args.tls { 8883 } else { 1883 });
        format!(
            "host {} ({}), port {port} ({}), TLS {} ({}), CA file {} ({}), client certificate \
             {} ({}), client key {} ({}), token file {} ({}), client id {} ({}), keep-alive {} s \
             ({})",
            args.host,
            self.host,
            self.port,
            if args.tls { "on" } else { "off" },
            self.tls,
            path(&args.ca_file),
            self.ca_file,
            path(&args.client_cert),
            self.client_cert,
            path(&args.client_key),
            self.client_key,
            args.token_file.display(),
            self.token_file,
            args.client_id.as_deref().unwrap_or("?"),
            self.client_id,
            args.keepalive_s,
            self.keepalive_s,
        )
    }
}

/// An `AIO_*` variable whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What it should have been.
    pub expected: &'static str,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value {:?} in the environment variable {}: expected {}",
            self.value, self.variable, self.expected
        )
    }
}

impl std::error::Error for SettingsError {}

/// What a boolean variable accepts (the same words as clap's `BoolishValueParser`, so
/// `SATMQTT_TLS` and `AIO_MQTT_USE_TLS` take the same values).
pub const BOOLEAN_WORDS: &str = "true/false, yes/no, on/off, y/n, t/f or 1/0 (any case)";

/// Parses a boolean word, case-insensitively; `None` if it is none of [`BOOLEAN_WORDS`].
pub fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: [&str; 6] = ["true", "yes", "on", "y", "t", "1"];
    const FALSE: [&str; 6] = ["false", "no", "off", "n", "f", "0"];
    if TRUE.iter().any(|w| value.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if FALSE.iter().any(|w| value.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// Applies the `AIO_*` layer to `args` (already parsed by clap from flags and `SATMQTT_*`).
///
/// `given` tells how clap got each argument; `env` looks a variable up. The client id is always
/// resolved (also on error), so the caller can log the error under it.
pub fn resolve(
    args: &mut Args,
    given: &dyn Fn(&str) -> Option<Given>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Origins, SettingsError> {
    // Empty counts as unset, as the AIO SDK samples do ("set it empty to skip").
    let aio = |name: &str| env(name).filter(|v| !v.is_empty());
    let layer = |m: &Mapping| match given(m.id) {
        Some(Given::Flag) => Some(Source::Flag(m.flag)),
        Some(Given::Env) => Some(Source::Env(m.own_env)),
        None => None,
    };
    let [host, port, tls, ca_file, client_cert, client_key, token_file, client_id, keepalive_s] =
        MAPPINGS;

    // The client id first: it names every log line, including an error's.
    let client_id_source = match layer(&client_id) {
        Some(source) => source,
        None => {
            let (value, source) = if let Some(v) = aio(client_id.aio_env) {
                (v, Source::Aio(client_id.aio_env))
            } else if let Some(v) = env("POD_NAME").filter(|v| !v.is_empty()) {
                (v, Source::Fallback("POD_NAME"))
            } else if let Some(v) = env("HOSTNAME").filter(|v| !v.is_empty()) {
                (v, Source::Fallback("HOSTNAME"))
            } else {
                ("sampleid".to_owned(), Source::Default)
            };
            args.client_id = Some(value);
            source
        }
    };

    let mut warnings = Vec::new();
    let apply = |m: &Mapping, set: &mut dyn FnMut(String) -> Result<(), SettingsError>| {
        if let Some(source) = layer(m) {
            return Ok(source);
        }
        match aio(m.aio_env) {
            Some(value) => {
                set(value)?;
                Ok(Source::Aio(m.aio_env))
            }
            None => Ok(Source::Default),
        }
    };
    let host_source = apply(&host, &mut |v| {
        args.host = v;
        Ok(())
    })?;
    let port_source = apply(&port, &mut |v| {
        args.port = Some(parse_port(port.aio_env, &v)?);
        Ok(())
    })?;
    let mut tls_source = apply(&tls, &mut |v| {
        args.tls = parse_bool(&v).ok_or(SettingsError {
            variable: tls.aio_env,
            value: v,
            expected: BOOLEAN_WORDS,
        })?;
        Ok(())
    })?;
    if tls_source == Source::Default && matches!(host_source, Source::Aio(_)) {
        args.tls = true;
        tls_source = Source::AioDefault;
    }
    let ca_file_source = apply(&ca_file, &mut |v| {
        args.ca_file = Some(v.into());
        Ok(())
    })?;
    let client_cert_source = apply(&client_cert, &mut |v| {
        args.client_cert = Some(v.into());
        Ok(())
    })?;
    let client_key_source = apply(&client_key, &mut |v| {
        args.client_key = Some(v.into());
        Ok(())
    })?;
    let token_file_source = apply(&token_file, &mut |v| {
        args.token_file = v.into();
        Ok(())
    })?;
    let keepalive_source = apply(&keepalive_s, &mut |v| {
        args.keepalive_s = v.parse().map_err(|_| SettingsError {
            variable: keepalive_s.aio_env,
            value: v,
            expected: "a whole number of seconds from 0 to 65535",
        })?;
        Ok(())
    })?;

    if token_file_source == Source::Default && env(token_file.aio_env).is_some_and(|v| v.is_empty())
    {
        warnings.push(format!(
            "{} is empty (AIO workloads use that to turn token authentication off): this \
             publisher always logs in with a token, read from the default {}",
            token_file.aio_env,
            args.token_file.display()
        ));
    }
    for (variable, why) in UNSUPPORTED {
        if aio(variable).is_some() {
            warnings.push(format!("{variable} is set but ignored: {why}"));
        }
    }

    Ok(Origins {
        host: host_source,
        port: port_source,
        tls: tls_source,
        ca_file: ca_file_source,
        client_cert: client_cert_source,
        client_key: client_key_source,
        token_file: token_file_source,
        client_id: client_id_source,
        keepalive_s: keepalive_source,
        warnings,
    })
}

fn parse_port(variable: &'static str, value: &str) -> Result<u16, SettingsError> {
    value
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| SettingsError {
            variable,
            value: value.to_owned(),
            expected: "a TCP port number from 1 to 65535",
        })
}

/// The `--help` epilogue: the AIO variables and the precedence.
fn aio_help() -> String {
    let mut text = String::from(
        "Azure IoT Operations SDK variables are read too, so a pod spec written for an AIO \
         workload runs this publisher unchanged. Each applies only when neither the flag nor its \
         SATMQTT_* variable is given (precedence: flag > SATMQTT_* > AIO_* > default); empty \
         counts as unset:\n",
    );
    for m in MAPPINGS {
        text.push_str(&format!("  {:<22} {}\n", m.aio_env, m.flag));
    }
    text.push_str(
        "When the host comes from AIO_BROKER_HOSTNAME, TLS defaults to on (the AIO SDKs' \
         default). Booleans take ",
    );
    text.push_str(BOOLEAN_WORDS);
    text.push_str(".\nIgnored, with a warning: ");
    text.push_str(&UNSUPPORTED.map(|(name, _)| name).join(", "));
    text.push('.');
    text
}

/// The command line and `SATMQTT_*` variables, parsed by clap; exits 2 on an invalid value, and
/// names the variable when the value came from one (clap's message only names the flag).
pub fn parse() -> (Args, ArgMatches) {
    let command = Args::command().after_help(aio_help());
    let argv: Vec<OsString> = std::env::args_os().collect();
    let matches = match command.clone().try_get_matches_from(&argv) {
        Ok(matches) => matches,
        Err(e) => {
            let variable = env_origin(&e, &command, &argv);
            // Printing to a closed stderr has nowhere better to be reported.
            let _ = e.print();
            if let Some(variable) = variable {
                eprintln!(
                    "note: the value comes from the environment variable {variable}, not from \
                     the command line"
                );
            }
            std::process::exit(e.exit_code());
        }
    };
    match Args::from_arg_matches(&matches) {
        Ok(args) => (args, matches),
        Err(e) => e.exit(),
    }
}

/// The environment variable an invalid value came from, if it did not come from `argv`.
fn env_origin(error: &clap::Error, command: &clap::Command, argv: &[OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8
    ) {
        return None;
    }
    // e.g. "--tls" or "--qos <QOS>".
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = shown.strip_prefix("--")?.split([' ', '=']).next()?;
    let arg = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?;
    let variable = arg.get_env()?.to_str()?.to_owned();
    let flag = format!("--{long}");
    let on_command_line = argv.iter().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
    });
    (!on_command_line && std::env::var_os(&variable).is_some()).then_some(variable)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Parses `flags` with clap and resolves with `env` as the whole environment; arguments in
    /// `from_own_env` are reported as coming from their `SATMQTT_*` variable.
    fn run(
        flags: &[&str],
        from_own_env: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<(Args, Origins), SettingsError> {
        let argv = std::iter::once("pod-publisher").chain(flags.iter().copied());
        let matches = Args::command().try_get_matches_from(argv).unwrap();
        let mut args = Args::from_arg_matches(&matches).unwrap();
        // What clap would have set from SATMQTT_* (the process environment is left alone).
        for (id, value) in from_own_env {
            let argv = [
                "pod-publisher",
                &format!("--{}", id.replace('_', "-")),
                value,
            ];
            let parsed = Args::command().try_get_matches_from(argv).unwrap();
            let parsed = Args::from_arg_matches(&parsed).unwrap();
            match *id {
                "host" => args.host = parsed.host,
                "port" => args.port = parsed.port,
                "client_id" => args.client_id = parsed.client_id,
                "token_file" => args.token_file = parsed.token_file,
                other => panic!("no test setter for {other}"),
            }
        }
        let own: Vec<&str> = from_own_env.iter().map(|(id, _)| *id).collect();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let given = |id: &str| {
            if own.contains(&id) {
                Some(Given::Env)
            } else {
                Given::from_matches(&matches, id)
            }
        };
        let lookup = |name: &str| env.get(name).cloned();
        let origins = resolve(&mut args, &given, &lookup)?;
        Ok((args, origins))
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
        let (args, origins) = run(&[], &[], ALL_AIO).unwrap();
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
        assert_eq!(args.client_id.as_deref(), Some("aio-client"));
        assert_eq!(args.keepalive_s, 30);
        for (source, (name, _)) in [
            origins.host,
            origins.port,
            origins.tls,
            origins.ca_file,
            origins.client_cert,
            origins.client_key,
            origins.token_file,
            origins.client_id,
            origins.keepalive_s,
        ]
        .into_iter()
        .zip(ALL_AIO)
        {
            assert_eq!(source, Source::Aio(name));
        }
        assert!(origins.warnings.is_empty());
    }

    #[test]
    fn a_flag_beats_the_aio_variable() {
        let (args, origins) = run(
            &[
                "--host",
                "flag-host",
                "--keepalive-s",
                "10",
                "--client-id",
                "flag-id",
            ],
            &[],
            ALL_AIO,
        )
        .unwrap();
        assert_eq!(args.host, "flag-host");
        assert_eq!(origins.host, Source::Flag("--host"));
        assert_eq!(args.keepalive_s, 10);
        assert_eq!(origins.keepalive_s, Source::Flag("--keepalive-s"));
        assert_eq!(args.client_id.as_deref(), Some("flag-id"));
        assert_eq!(origins.client_id, Source::Flag("--client-id"));
        // The others still come from AIO_*.
        assert_eq!(args.port, Some(18883));
        assert_eq!(origins.port, Source::Aio("AIO_BROKER_TCP_PORT"));
    }

    #[test]
    fn an_own_variable_beats_the_aio_variable() {
        let (args, origins) = run(
            &[],
            &[
                ("host", "own-host"),
                ("port", "1884"),
                ("client_id", "own-id"),
                ("token_file", "/own/token"),
            ],
            ALL_AIO,
        )
        .unwrap();
        assert_eq!(args.host, "own-host");
        assert_eq!(origins.host, Source::Env("SATMQTT_HOST"));
        assert_eq!(args.port, Some(1884));
        assert_eq!(origins.port, Source::Env("SATMQTT_PORT"));
        assert_eq!(args.client_id.as_deref(), Some("own-id"));
        assert_eq!(args.token_file, PathBuf::from("/own/token"));
        assert_eq!(origins.token_file, Source::Env("SATMQTT_TOKEN_FILE"));
    }

    #[test]
    fn without_any_variable_the_defaults_stay() {
        let (args, origins) = run(&[], &[], &[]).unwrap();
        assert_eq!(args.host, "localhost");
        assert_eq!(args.port, None);
        assert!(!args.tls);
        assert_eq!(args.keepalive_s, 60);
        assert_eq!(
            args.token_file,
            PathBuf::from("/var/run/secrets/tokens/mqtt-client-token")
        );
        assert_eq!(args.client_id.as_deref(), Some("sampleid"));
        assert_eq!(origins.host, Source::Default);
        assert_eq!(origins.tls, Source::Default);
        assert_eq!(origins.client_id, Source::Default);
    }

    #[test]
    fn the_client_id_falls_back_to_pod_name_then_hostname_after_aio() {
        let pod = [("POD_NAME", "pod-1"), ("HOSTNAME", "host-1")];
        let (args, origins) = run(&[], &[], &pod).unwrap();
        assert_eq!(args.client_id.as_deref(), Some("pod-1"));
        assert_eq!(origins.client_id, Source::Fallback("POD_NAME"));
        let (args, _) = run(&[], &[], &[("HOSTNAME", "host-1"), ("POD_NAME", "")]).unwrap();
        assert_eq!(args.client_id.as_deref(), Some("host-1"));
        let with_aio = [pod[0], pod[1], ("AIO_MQTT_CLIENT_ID", "aio-id")];
        let (args, _) = run(&[], &[], &with_aio).unwrap();
        assert_eq!(args.client_id.as_deref(), Some("aio-id"));
    }

    #[test]
    fn tls_defaults_to_on_only_when_the_host_comes_from_aio() {
        let (args, origins) = run(&[], &[], &[("AIO_BROKER_HOSTNAME", "aio-broker")]).unwrap();
        assert!(args.tls);
        assert_eq!(origins.tls, Source::AioDefault);
        assert!(origins.describe(&args).contains("port 8883 (default)"));

        let (args, origins) = run(
            &[],
            &[],
            &[("AIO_BROKER_HOSTNAME", "b"), ("AIO_MQTT_USE_TLS", "FALSE")],
        )
        .unwrap();
        assert!(!args.tls);
        assert_eq!(origins.tls, Source::Aio("AIO_MQTT_USE_TLS"));

        let (args, origins) = run(&["--host", "h"], &[], &[("AIO_BROKER_HOSTNAME", "b")]).unwrap();
        assert!(!args.tls);
        assert_eq!(origins.tls, Source::Default);
    }

    #[test]
    fn the_tls_flag_beats_aio_use_tls() {
        let (args, origins) = run(&["--tls"], &[], &[("AIO_MQTT_USE_TLS", "no")]).unwrap();
        assert!(args.tls);
        assert_eq!(origins.tls, Source::Flag("--tls"));
    }

    #[test]
    fn booleans_are_words_in_any_case() {
        for word in ["true", "TRUE", "True", "yes", "YES", "1", "on", "y", "T"] {
            assert_eq!(parse_bool(word), Some(true), "{word}");
        }
        for word in ["false", "False", "no", "NO", "0", "off", "n", "F"] {
            assert_eq!(parse_bool(word), Some(false), "{word}");
        }
        for word in ["", "2", "maybe", "tru", " true", "yes please"] {
            assert_eq!(parse_bool(word), None, "{word:?}");
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
        ];
        for (variable, value) in cases {
            let error = run(&[], &[], &[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable);
            let text = error.to_string();
            assert!(text.contains(variable) && text.contains(value), "{text}");
        }
    }

    #[test]
    fn an_invalid_aio_value_is_ignored_when_a_flag_overrides_it() {
        let (args, _) = run(&["--port", "1883"], &[], &[("AIO_BROKER_TCP_PORT", "x")]).unwrap();
        assert_eq!(args.port, Some(1883));
    }

    #[test]
    fn empty_aio_variables_count_as_unset() {
        let (args, origins) = run(
            &[],
            &[],
            &[("AIO_BROKER_HOSTNAME", ""), ("AIO_SAT_FILE", "")],
        )
        .unwrap();
        assert_eq!(args.host, "localhost");
        assert_eq!(origins.host, Source::Default);
        assert_eq!(origins.token_file, Source::Default);
        assert_eq!(origins.warnings.len(), 1, "{:?}", origins.warnings);
        assert!(origins.warnings[0].contains("AIO_SAT_FILE is empty"));
    }

    #[test]
    fn unsupported_aio_variables_are_warned_about() {
        let (_, origins) = run(
            &[],
            &[],
            &[
                ("AIO_MQTT_USERNAME", "someone"),
                ("AIO_MQTT_CLEAN_START", ""),
            ],
        )
        .unwrap();
        assert_eq!(origins.warnings.len(), 1, "{:?}", origins.warnings);
        assert!(origins.warnings[0].starts_with("AIO_MQTT_USERNAME is set but ignored"));
    }

    #[test]
    fn the_mapping_table_matches_the_flags_and_their_variables() {
        let command = Args::command();
        for m in MAPPINGS {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == m.id)
                .unwrap_or_else(|| panic!("no argument {}", m.id));
            assert_eq!(
                arg.get_long().map(|l| format!("--{l}")).as_deref(),
                Some(m.flag)
            );
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(m.own_env));
        }
    }

    #[test]
    fn the_start_up_line_names_each_source() {
        let (args, origins) = run(
            &["--keepalive-s", "15"],
            &[],
            &[
                ("AIO_BROKER_HOSTNAME", "aio-broker"),
                ("AIO_BROKER_TCP_PORT", "18883"),
                ("POD_NAME", "pod-7"),
            ],
        )
        .unwrap();
        let line = origins.describe(&args);
        for part in [
            "host aio-broker (AIO_BROKER_HOSTNAME)",
            "port 18883 (AIO_BROKER_TCP_PORT)",
            "TLS on (AIO SDK default with AIO_BROKER_HOSTNAME)",
            "CA file none (default)",
            "client id pod-7 (POD_NAME)",
            "keep-alive 15 s (--keepalive-s)",
            "token file /var/run/secrets/tokens/mqtt-client-token (default)",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
    }

    #[test]
    fn an_invalid_value_from_an_own_variable_is_traced_to_it() {
        let command = Args::command();
        let argv: Vec<OsString> = vec!["pod-publisher".into(), "--qos".into(), "7".into()];
        let error = command.clone().try_get_matches_from(&argv).unwrap_err();
        // Given on the command line: clap's message is enough.
        assert_eq!(env_origin(&error, &command, &argv), None);
    }

    #[test]
    fn help_lists_every_aio_variable() {
        let help = aio_help();
        for m in MAPPINGS {
            assert!(help.contains(m.aio_env), "{}", m.aio_env);
        }
    }
}
