//! `pod-publisher`: the Kubernetes pod program. Logs in to an MQTT v5 broker as `$sat` with the
//! pod's projected service-account token and publishes `samplepayload<N>` to `sampletopic`,
//! re-reading the token before every connection.

mod heartbeat;
mod logger;
mod settings;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use log::{debug, error, info, trace, warn};
use satmqtt::embedded_nal::TcpClientStack;
use satmqtt::{Auth, BackoffConfig, Config, End, Event, Progress, Qos};
use satmqtt_std::{
    wait_readable, Note, Outcome, RunOptions, StdStack, TlsConfig, TlsStack, TokenFile, Waitable,
};

/// Exit code for a configuration or token problem found at start-up.
const EXIT_CONFIG: u8 = 2;

/// Longest delay between two attempts to resolve the broker's host name.
const DNS_RETRY_CAP: Duration = Duration::from_secs(30);

/// Publishes `<prefix><N>` over MQTT v5 as `$sat` with a Kubernetes service-account token.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Broker host name or IP address.
    #[arg(long, env = "SATMQTT_HOST", default_value = "localhost")]
    host: String,
    /// Broker TCP port [default: 1883, or 8883 with --tls].
    #[arg(long, env = "SATMQTT_PORT")]
    port: Option<u16>,
    /// Connect with TLS 1.2/1.3.
    #[arg(long, env = "SATMQTT_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    tls: bool,
    /// PEM bundle of the CA certificate(s) the broker's certificate must chain to (with --tls)
    /// [default: the system trust store].
    #[arg(long, env = "SATMQTT_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Name checked against the broker's certificate and sent as SNI (with --tls)
    /// [default: --host].
    #[arg(long, env = "SATMQTT_SERVER_NAME")]
    server_name: Option<String>,
    /// Client certificate (PEM) for mutual TLS; needs --client-key.
    #[arg(long, env = "SATMQTT_CLIENT_CERT")]
    client_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "SATMQTT_CLIENT_KEY")]
    client_key: Option<std::path::PathBuf>,
    /// MQTT client id [default: $POD_NAME, then $HOSTNAME, then "sampleid"].
    #[arg(long, env = "SATMQTT_CLIENT_ID")]
    client_id: Option<String>,
    /// Topic to publish to.
    #[arg(long, env = "SATMQTT_TOPIC", default_value = "sampletopic")]
    topic: String,
    /// Payload prefix; the counter follows in decimal.
    #[arg(long, env = "SATMQTT_PAYLOAD_PREFIX", default_value = "samplepayload")]
    payload_prefix: String,
    /// Service-account token file (the projected volume path), re-read before every connect.
    #[arg(
        long,
        env = "SATMQTT_TOKEN_FILE",
        default_value = "/var/run/secrets/tokens/mqtt-client-token"
    )]
    token_file: std::path::PathBuf,
    /// How the token logs in: `sat` (user name `$sat`, token as password: Azure IoT MQ preview)
    /// or `k8s-sat` (MQTT v5 enhanced authentication with in-band re-authentication: Azure IoT
    /// Operations) [default: k8s-sat when the token file comes from AIO_SAT_FILE, else sat].
    #[arg(long, env = "SATMQTT_AUTH", value_enum)]
    auth: Option<AuthArg>,
    /// Most QoS 1 messages in flight; the broker's Receive Maximum can lower it.
    #[arg(long, env = "SATMQTT_WINDOW_CAP", default_value_t = satmqtt::DEFAULT_WINDOW_CAP)]
    window_cap: u16,
    /// Session Expiry Interval asked of the broker, in seconds; 0 leaves no session behind and
    /// every connection starts clean (unacknowledged messages are resent by us either way).
    #[arg(long, env = "SATMQTT_SESSION_EXPIRY_S", default_value_t = 0)]
    session_expiry_s: u32,
    /// QoS of every publish: 0 or 1.
    #[arg(long, env = "SATMQTT_QOS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Milliseconds between publishes; 0 = as fast as the connection allows.
    #[arg(long, env = "SATMQTT_INTERVAL_MS", default_value_t = 1000)]
    interval_ms: u64,
    /// Messages to publish, then disconnect and exit 0; 0 = forever.
    #[arg(long, env = "SATMQTT_COUNT", default_value_t = 0)]
    count: u64,
    /// First counter value.
    #[arg(long, env = "SATMQTT_START", default_value_t = 0)]
    start: u64,
    /// MQTT keepalive in seconds.
    #[arg(long, env = "SATMQTT_KEEPALIVE_S", default_value_t = 60)]
    keepalive_s: u16,
    /// Longest wait for TCP connect plus CONNACK, in milliseconds.
    #[arg(long, env = "SATMQTT_CONNECT_TIMEOUT_MS", default_value_t = 5000)]
    connect_timeout_ms: u64,
    /// Longest wait for QoS 1 acknowledgements when stopping, in milliseconds.
    #[arg(long, env = "SATMQTT_DRAIN_TIMEOUT_MS", default_value_t = 5000)]
    drain_timeout_ms: u64,
    /// First reconnect delay in milliseconds (doubles per failure, with jitter).
    #[arg(long, env = "SATMQTT_BACKOFF_FLOOR_MS", default_value_t = 100)]
    backoff_floor_ms: u64,
    /// Longest reconnect delay in milliseconds.
    #[arg(long, env = "SATMQTT_BACKOFF_CAP_MS", default_value_t = 60_000)]
    backoff_cap_ms: u64,
    /// Rotate to a new token this many seconds before the current one's `exp`.
    #[arg(long, env = "SATMQTT_EXPIRY_MARGIN_S", default_value_t = 60)]
    expiry_margin_s: u64,
    /// Re-stat period of the token file, for file systems without inotify events.
    #[arg(long, env = "SATMQTT_TOKEN_RESTAT_S", default_value_t = 5)]
    token_restat_s: u64,
    /// Seconds between rate summaries at info level; 0 = none.
    #[arg(long, env = "SATMQTT_STATS_INTERVAL_S", default_value_t = 30)]
    stats_interval_s: u64,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "SATMQTT_LOG", default_value = "info")]
    log_level: log::LevelFilter,
    /// Log format: text (for people) or json (one object per line: ts, level, client_id, msg).
    #[arg(long, env = "SATMQTT_LOG_FORMAT", value_enum, default_value_t = logger::Format::Text)]
    log_format: logger::Format,
    /// File refreshed (at most once a second) while the publisher makes progress or retries,
    /// for a liveness probe; put it on a writable volume such as an emptyDir.
    #[arg(long, env = "SATMQTT_HEARTBEAT_FILE")]
    heartbeat_file: Option<std::path::PathBuf>,
    /// Probe mode: exit 0 if FILE (a --heartbeat-file) was refreshed within --max-age-s, else
    /// 1; publishes nothing. For an exec liveness probe (no shell needed).
    #[arg(long, value_name = "FILE")]
    check_heartbeat: Option<std::path::PathBuf>,
    /// With --check-heartbeat: the oldest heartbeat still alive, in seconds.
    #[arg(long, default_value_t = 120, requires = "check_heartbeat")]
    max_age_s: u64,
}

/// `--auth` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthArg {
    /// User name `$sat`, the token as password.
    Sat,
    /// MQTT v5 enhanced authentication, method K8S-SAT.
    K8sSat,
}

impl Args {
    fn tls_config(&self) -> TlsConfig {
        TlsConfig {
            ca_file: self.ca_file.clone(),
            server_name: self
                .server_name
                .clone()
                .unwrap_or_else(|| self.host.clone()),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }

    fn client_id(&self) -> String {
        self.client_id
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "sampleid".to_owned())
    }
}

fn main() -> ExitCode {
    let (mut args, matches) = settings::parse();
    if let Some(file) = &args.check_heartbeat {
        return heartbeat::check(file, args.max_age_s);
    }
    // Flags and SATMQTT_* are clap's; the AIO_* layer goes under them.
    let origins = settings::resolve(
        &mut args,
        &|id| settings::Given::from_matches(&matches, id),
        &|name| std::env::var(name).ok(),
    );
    let client_id = args.client_id();
    logger::init(args.log_level, &client_id, args.log_format);
    let auth = match origins {
        Ok(origins) => {
            info!("configuration: {}", origins.describe(&args));
            for warning in &origins.warnings {
                warn!("{warning}");
            }
            let (auth, why) = match args.auth {
                Some(AuthArg::Sat) => (Auth::Sat, "--auth/SATMQTT_AUTH"),
                Some(AuthArg::K8sSat) => (Auth::K8sSat, "--auth/SATMQTT_AUTH"),
                None if matches!(origins.token_file, settings::Source::Aio(_)) => {
                    (Auth::K8sSat, "the token file comes from AIO_SAT_FILE")
                }
                None => (Auth::Sat, "the default"),
            };
            info!("login scheme {auth} ({why})");
            auth
        }
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut heartbeat = None;
    if let Some(path) = &args.heartbeat_file {
        match heartbeat::Heartbeat::start(path) {
            Ok(started) => {
                let bound = heartbeat::quiet_bound(
                    args.interval_ms,
                    args.backoff_cap_ms,
                    args.connect_timeout_ms,
                    args.keepalive_s,
                );
                info!(
                    "heartbeat file {}: refreshed while publishing or retrying, at least every \
                     {} s with these settings; give the liveness probe a larger --max-age-s",
                    path.display(),
                    bound.as_secs()
                );
                heartbeat = Some(started);
            }
            Err(e) => {
                error!("cannot write the heartbeat file {}: {e}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            error!("cannot install the handler for signal {signal}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }

    // A missing or invalid token at start-up is a deployment error: say so and exit.
    let tokens = TokenFile::new(&args.token_file);
    let first = match tokens.load() {
        Ok(token) => token,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let token_len = first.len();
    drop(first);

    // TLS files are read before anything waits on the network: a bad path fails at once.
    let connect_timeout = Duration::from_millis(args.connect_timeout_ms.max(1));
    let tls = if args.tls {
        match TlsStack::new(&args.tls_config(), connect_timeout) {
            Ok(stack) => Some(stack),
            Err(e) => {
                error!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    } else {
        if args.ca_file.is_some() || args.server_name.is_some() || args.client_cert.is_some() {
            warn!("--ca-file, --server-name and --client-cert only apply with --tls");
        }
        None
    };
    let port = args.port.unwrap_or(if args.tls { 8883 } else { 1883 });
    let Some(broker) = resolve(&args.host, port, &stop, &mut || {
        if let Some(heartbeat) = &mut heartbeat {
            heartbeat.beat();
        }
    }) else {
        info!("stopped before the broker address was known");
        return ExitCode::SUCCESS;
    };
    let mut config = Config::new(broker);
    config.client_id = &client_id;
    config.topic = &args.topic;
    config.payload_prefix = &args.payload_prefix;
    config.qos = if args.qos == 0 {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    };
    config.interval_ms = args.interval_ms;
    config.start = args.start;
    config.count = args.count;
    config.keepalive_s = args.keepalive_s;
    config.connect_timeout_ms = args.connect_timeout_ms;
    config.drain_timeout_ms = args.drain_timeout_ms;
    config.backoff = BackoffConfig {
        floor_ms: args.backoff_floor_ms,
        cap_ms: args.backoff_cap_ms,
        ..BackoffConfig::default()
    };
    config.auth = auth;
    config.window_cap = args.window_cap;
    config.session_expiry_s = args.session_expiry_s;
    config.expiry_margin_s = args.expiry_margin_s;
    if let Err(e) = config.validate() {
        error!("invalid --{}: {e}", e.field().name());
        return ExitCode::from(EXIT_CONFIG);
    }

    match tls {
        Some(stack) => {
            info!("{}", stack.describe());
            drive(stack, config, &args, tokens, token_len, &stop)
        }
        None => drive(StdStack::new(), config, &args, tokens, token_len, &stop),
    }
}

/// Runs the publisher on `stack` (plain TCP, or TLS) until done or stopped.
fn drive<S>(
    stack: S,
    config: Config<'_>,
    args: &Args,
    tokens: TokenFile,
    token_len: usize,
    stop: &AtomicBool,
) -> ExitCode
where
    S: TcpClientStack,
    S::TcpSocket: Waitable,
    S::Error: std::fmt::Display,
{
    let broker = config.broker;
    info!(
        "publishing {prefix}<N> to {topic} on {broker} at QoS {qos}, every {interval} ms, {count}; \
         token file {path} ({token_len} bytes)",
        prefix = args.payload_prefix,
        topic = args.topic,
        qos = args.qos,
        interval = args.interval_ms,
        count = if args.count == 0 {
            "forever".to_owned()
        } else {
            format!("{} messages from {}", args.count, args.start)
        },
        path = args.token_file.display(),
    );

    let mut report = Report::new(args, broker, config.auth);
    let options = RunOptions {
        restat_every: Duration::from_secs(args.token_restat_s.max(1)),
    };
    let outcome = satmqtt_std::run(
        &config,
        stack,
        tokens,
        options,
        seed(config.client_id),
        stop,
        |note| report.note(note),
    );
    match outcome {
        Ok(Outcome::Finished(p)) => {
            info!("finished: {}", summary(&p));
            ExitCode::SUCCESS
        }
        Ok(Outcome::Stopped(p)) => {
            info!("stopped by signal: {}", summary(&p));
            ExitCode::SUCCESS
        }
        Err(satmqtt_std::RunError::Driver(e)) => {
            error!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn summary(p: &Progress) -> String {
    format!(
        "sent {}, acknowledged {}, duplicates {}, rejected {}, next {}",
        p.sent, p.acked, p.duplicates, p.rejected, p.next
    )
}

/// Resolves the broker, retrying with a growing delay (cluster DNS may lag pod start-up);
/// `beat` is called on every attempt (retrying is progress).
fn resolve(host: &str, port: u16, stop: &AtomicBool, beat: &mut dyn FnMut()) -> Option<SocketAddr> {
    let mut delay = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        beat();
        match (host, port).to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                if let Some(a) = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                    return Some(*a);
                }
                warn!("broker host {host} has no address; retrying in {delay:?}");
            }
            Err(e) => warn!("cannot resolve broker host {host}: {e}; retrying in {delay:?}"),
        }
        // Interruptible by SIGTERM.
        let _ = wait_readable(None, delay);
        delay = (delay * 2).min(DNS_RETRY_CAP);
    }
    None
}

/// Jitter seed that differs between replicas and restarts.
fn seed(client_id: &str) -> u64 {
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

/// Turns the driver's notes into log lines and the periodic rate summary.
struct Report {
    broker: SocketAddr,
    auth: Auth,
    token_path: String,
    stats_every: Option<Duration>,
    last_stats: Instant,
    sent_at_last_stats: u64,
    sent: u64,
    acked_through: Option<u64>,
    /// When the last CONNACK arrived, and how many connections in a row the broker ended
    /// right after it (a second client with our id takes the session over each time).
    connected_at: Option<Instant>,
    quick_ends: u32,
    /// Refreshed on every note: each one is progress, or a retry.
    heartbeat: Option<heartbeat::Heartbeat>,
}

impl Report {
    fn new(args: &Args, broker: SocketAddr, auth: Auth) -> Self {
        Report {
            broker,
            auth,
            token_path: args.token_file.display().to_string(),
            stats_every: (args.stats_interval_s > 0)
                .then(|| Duration::from_secs(args.stats_interval_s)),
            last_stats: Instant::now(),
            sent_at_last_stats: 0,
            sent: 0,
            acked_through: None,
            connected_at: None,
            quick_ends: 0,
            // main() has checked the path by writing it once; should it fail now, there is no
            // heartbeat, which is exactly what the liveness probe will report.
            heartbeat: args
                .heartbeat_file
                .as_deref()
                .and_then(|path| heartbeat::Heartbeat::start(path).ok()),
        }
    }

    fn note(&mut self, note: Note<'_>) {
        if let Some(heartbeat) = &mut self.heartbeat {
            heartbeat.beat();
        }
        match note {
            Note::Event { event, stack_error } => self.event(event, stack_error),
            Note::TokenUnavailable { error, retry_in_ms } => {
                warn!("{error}; retrying in {retry_in_ms} ms")
            }
            Note::WatchDegraded(e) => warn!(
                "cannot watch {} for token rotation ({e}); re-reading it every few seconds \
                 instead",
                self.token_path
            ),
        }
        self.stats();
    }

    fn event(&mut self, event: &Event, stack_error: Option<&dyn std::fmt::Display>) {
        match event {
            Event::Connecting { attempt } => {
                debug!("connecting to {} (attempt {attempt})", self.broker)
            }
            Event::Connected { .. } => {
                self.connected_at = Some(Instant::now());
                let text = event.to_string();
                let to = format!("connected to {}", self.broker);
                info!("{}", text.replacen("connected", &to, 1))
            }
            Event::Published { first, last, .. } => {
                self.sent += last - first + 1;
                debug!("{event}");
            }
            Event::Acked { through } => {
                self.acked_through = Some(*through);
                trace!("{event}");
            }
            Event::PublishRejected { .. }
            | Event::TokenExpiring { .. }
            | Event::TokenExpired { .. }
            | Event::ReauthDeferred { .. } => warn!("{event} ({})", self.token_path),
            Event::TokenChanged { exp } => {
                let expires = exp
                    .map(|exp| {
                        format!(
                            " (expires {})",
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + Duration::from_secs(exp)
                            )
                        )
                    })
                    .unwrap_or_default();
                let how = match self.auth {
                    Auth::Sat => "rotating the connection",
                    Auth::K8sSat => "re-authenticating in band",
                };
                info!("new token in {}{expires}: {how}", self.token_path)
            }
            Event::Disconnected { why, .. } => self.disconnected(event, why, stack_error),
            Event::Finished { .. } => {}
            _ => info!("{event}"),
        }
    }

    fn disconnected(
        &mut self,
        event: &Event,
        why: &End,
        stack_error: Option<&dyn std::fmt::Display>,
    ) {
        let Event::Disconnected {
            disconnect_sent,
            retry_in_ms,
            failures,
            ..
        } = event
        else {
            return;
        };
        let detail = stack_error.map(|e| format!(": {e}")).unwrap_or_default();
        let sent = if *disconnect_sent {
            ", DISCONNECT sent"
        } else {
            ""
        };
        let quick = self
            .connected_at
            .take()
            .is_some_and(|at| at.elapsed() < Duration::from_secs(2));
        let taken_over = matches!(why, End::PeerClosed)
            || matches!(why, End::ServerDisconnect { reason: 0x8e, .. });
        self.quick_ends = if quick && taken_over {
            self.quick_ends + 1
        } else {
            0
        };
        // Attempt numbers count failures in a row: they reset only after a connection that
        // made progress, as the backoff does.
        let attempt = failures + 1;
        if let End::TokenRejected(reason) = why {
            warn!(
                "token rejected by the broker (CONNACK 0x{reason:02x} {}): check the token's \
                 audience and ServiceAccount; re-reading {} and retrying in {retry_in_ms} ms \
                 (attempt {attempt})",
                satmqtt::wire::reason_name(*reason),
                self.token_path,
            );
        } else if why.is_failure() {
            warn!(
                "disconnected: {why}{detail}{sent}; reconnecting in {retry_in_ms} ms \
                 (attempt {attempt})"
            );
        } else {
            info!("disconnected: {why}{sent}");
        }
        if self.quick_ends >= 2 {
            warn!(
                "the broker ended {} connections in a row right after accepting them: another \
                 client with the same client id is the likely cause (each takes the session \
                 over from the other); give every publisher its own --client-id",
                self.quick_ends
            );
        }
    }

    fn stats(&mut self) {
        let Some(every) = self.stats_every else {
            return;
        };
        let elapsed = self.last_stats.elapsed();
        if elapsed < every {
            return;
        }
        let sent = self.sent - self.sent_at_last_stats;
        info!(
            "rate: {sent} message(s) in {:.1} s ({:.1}/s), acknowledged through {}",
            elapsed.as_secs_f64(),
            sent as f64 / elapsed.as_secs_f64(),
            self.acked_through
                .map_or_else(|| "none".to_owned(), |n| n.to_string())
        );
        self.last_stats = Instant::now();
        self.sent_at_last_stats = self.sent;
    }
}
