//! `pod-publisher`: the Kubernetes pod program. Logs in to an MQTT v5 broker as `$sat` with the
//! pod's projected service-account token and publishes `samplepayload<N>` to `sampletopic`,
//! re-reading the token before every connection.

mod heartbeat;
mod settings;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use log::{debug, error, info, trace, warn};
use satmqtt::embedded_nal::TcpClientStack;
use satmqtt::{Auth, Config, End, Event, Progress};
use satmqtt_cli::{check, JobArgs, LogArgs, EXIT_CONFIG};
use satmqtt_std::{
    wait_readable, Note, Outcome, RunOptions, StdStack, TlsConfig, TlsStack, TokenFile, Waitable,
};

/// Longest delay between two attempts to resolve the broker's host name.
const DNS_RETRY_CAP: Duration = Duration::from_secs(30);

/// Publishes `<prefix><N>` over MQTT v5 as `$sat` with a Kubernetes service-account token.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Broker host name or IP address.
    #[arg(long, env = "SATMQTT_HOST", default_value = "localhost", value_parser = check::host)]
    host: String,
    /// Broker TCP port [default: 1883, or 8883 with --tls].
    #[arg(long, env = "SATMQTT_PORT", value_parser = check::port)]
    port: Option<u16>,
    /// Connect with TLS 1.2/1.3.
    #[arg(long, env = "SATMQTT_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    tls: bool,
    /// PEM bundle of the CA certificate(s) the broker's certificate must chain to (with --tls)
    /// [default: the system trust store].
    #[arg(long, env = "SATMQTT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Name checked against the broker's certificate and sent as SNI (with --tls)
    /// [default: --host].
    #[arg(long, env = "SATMQTT_SERVER_NAME")]
    server_name: Option<String>,
    /// Client certificate (PEM) for mutual TLS; needs --client-key.
    #[arg(long, env = "SATMQTT_CLIENT_CERT")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "SATMQTT_CLIENT_KEY")]
    client_key: Option<PathBuf>,
    /// Service-account token file (the projected volume path), re-read before every connect.
    #[arg(
        long,
        env = "SATMQTT_TOKEN_FILE",
        default_value = "/var/run/secrets/tokens/mqtt-client-token"
    )]
    token_file: PathBuf,
    #[command(flatten)]
    job: JobArgs,
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
    /// Re-authenticate (k8s-sat) or rotate (sat) to a new token this many seconds before the
    /// current one's `exp`.
    #[arg(long, env = "SATMQTT_EXPIRY_MARGIN_S", default_value_t = 60)]
    expiry_margin_s: u64,
    /// Re-stat period of the token file, for file systems without inotify events.
    #[arg(long, env = "SATMQTT_TOKEN_RESTAT_S", default_value_t = 5)]
    token_restat_s: u64,
    /// Seconds between rate summaries at info level; 0 = none.
    #[arg(long, env = "SATMQTT_STATS_INTERVAL_S", default_value_t = 30)]
    stats_interval_s: u64,
    #[command(flatten)]
    log: LogArgs,
    /// File refreshed (at most once a second) while the publisher makes progress or retries,
    /// for a liveness probe; put it on a writable volume such as an emptyDir.
    #[arg(long, env = "SATMQTT_HEARTBEAT_FILE")]
    heartbeat_file: Option<PathBuf>,
    /// Probe mode: exit 0 if FILE (a --heartbeat-file) was refreshed within --max-age-s, else
    /// 1; publishes nothing. For an exec liveness probe (no shell needed).
    #[arg(long, value_name = "FILE")]
    check_heartbeat: Option<PathBuf>,
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

    /// The port, defaulting by `--tls`.
    fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 8883 } else { 1883 })
    }
}

fn main() -> ExitCode {
    let settings = settings::parse();
    let args = &settings.args;
    if let Some(file) = &args.check_heartbeat {
        return heartbeat::check(file, args.max_age_s);
    }
    args.log.init(&args.job.client_id);
    info!("configuration: {}", settings.describe());
    for warning in &settings.warnings {
        warn!("{warning}");
    }
    if let Err(e) = args.job.check() {
        error!("invalid configuration: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let (auth, why) = match args.auth {
        Some(AuthArg::Sat) => (Auth::Sat, "--auth/SATMQTT_AUTH"),
        Some(AuthArg::K8sSat) => (Auth::K8sSat, "--auth/SATMQTT_AUTH"),
        None if matches!(settings.source("token_file"), settings::Source::Aio(_)) => {
            (Auth::K8sSat, "the token file comes from AIO_SAT_FILE")
        }
        None => (Auth::Sat, "the default"),
    };
    info!("login scheme {auth} ({why})");
    let mut heartbeat = None;
    if let Some(path) = &args.heartbeat_file {
        match heartbeat::Heartbeat::start(path) {
            Ok(started) => {
                let bound = heartbeat::quiet_bound(
                    args.job.interval_ms,
                    args.job.backoff_cap_ms,
                    args.job.connect_timeout_ms,
                    args.job.keepalive_s,
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
    let tokens = TokenFile::new(&args.token_file).with_hint_report(|path, hints| {
        for hint in hints {
            warn!("token file {}: {hint}", path.display());
        }
    });
    let token_len = match tokens.load() {
        Ok(token) => token.len(),
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    // TLS files are read before anything waits on the network: a bad path fails at once.
    let connect_timeout = Duration::from_millis(args.job.connect_timeout_ms.max(1));
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
    let Some(broker) = resolve(&args.host, args.port(), &stop, &mut || {
        if let Some(heartbeat) = &mut heartbeat {
            heartbeat.beat();
        }
    }) else {
        info!("stopped before the broker address was known");
        return ExitCode::SUCCESS;
    };
    let config = Config {
        broker,
        auth,
        window_cap: args.window_cap,
        session_expiry_s: args.session_expiry_s,
        expiry_margin_s: args.expiry_margin_s,
        ..Config::from(&args.job)
    };
    if let Err(e) = satmqtt_cli::validate(&config) {
        error!("{e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let report = Report::new(args, broker, auth, heartbeat);
    match tls {
        Some(stack) => {
            info!("{}", stack.describe());
            drive(stack, config, args, tokens, token_len, &stop, report)
        }
        None => drive(
            StdStack::new(),
            config,
            args,
            tokens,
            token_len,
            &stop,
            report,
        ),
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
    mut report: Report,
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
        prefix = args.job.payload_prefix,
        topic = args.job.topic,
        qos = args.job.qos,
        interval = args.job.interval_ms,
        count = args.job.count_text(),
        path = args.token_file.display(),
    );

    let options = RunOptions {
        restat_every: Duration::from_secs(args.token_restat_s.max(1)),
    };
    let outcome = satmqtt_std::run(
        &config,
        stack,
        tokens,
        options,
        satmqtt_cli::seed(config.client_id),
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
    fn new(
        args: &Args,
        broker: SocketAddr,
        auth: Auth,
        heartbeat: Option<heartbeat::Heartbeat>,
    ) -> Self {
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
            heartbeat,
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
