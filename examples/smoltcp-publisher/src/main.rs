//! `smoltcp-publisher`: the satmqtt core on smoltcp over a Linux TAP device, exactly as it runs
//! on a microcontroller — a userspace TCP/IP stack with a static IPv4 address, a 32-bit
//! millisecond clock, fixed socket storage, and a token read as firmware reads it from flash:
//! before every connection, and when told a new one is there. It publishes `samplepayload<N>`,
//! logging in as `$sat` (`--auth sat`) or with MQTT v5 enhanced authentication `K8S-SAT`
//! (`--auth k8s-sat`).
//!
//! A new token is handed in with SIGUSR1: the core re-reads `--token-file`, and if the token
//! changed it re-authenticates in band (`k8s-sat`: AUTH 0x19, same connection, publishing goes
//! on), or drains in-flight QoS 1 messages, sends DISCONNECT, closes and logs in again with the
//! new token (`sat`). SIGTERM/SIGINT drain, DISCONNECT and exit 0.
//!
//! The TAP device must exist and be up on the kernel side (`ip tuntap add dev tap0 mode tap`,
//! `ip addr add 10.77.0.1/24 dev tap0`, `ip link set tap0 up`); opening it needs
//! CAP_NET_ADMIN and /dev/net/tun.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::CommandFactory;
use log::{debug, error, info, warn};
use satmqtt::{Auth, Buffers, Config, Driver, End, Event, Token, TokenSource};
use satmqtt_cli::{JobArgs, LogArgs, EXIT_CONFIG};
use satmqtt_smoltcp::{Millis, Note, Outcome, Platform, SmolStack};
use satmqtt_std::{TokenError, TokenFile};
use smoltcp::iface::{self, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{Medium, TunTapInterface};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpCidr};
use zeroize::Zeroizing;

/// Per-socket receive buffer: MQTT acknowledgements are tiny.
const TCP_RX: usize = 2048;
/// Per-socket transmit buffer: holds a CONNECT with a large token in one go.
const TCP_TX: usize = 8192;

/// Publishes `<prefix><N>` over MQTT v5 with a service-account token, on smoltcp over a TAP
/// device.
#[derive(clap::Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TAP device to attach to (it must exist; the kernel side holds the broker's network).
    #[arg(long, env = "SATMQTT_TAP", default_value = "tap0")]
    tap: String,
    /// This stack's IPv4 address with prefix length, e.g. 10.77.0.2/24.
    #[arg(long, env = "SATMQTT_ADDRESS", value_parser = parse_cidr)]
    address: (Ipv4Addr, u8),
    /// Default gateway, when the broker is not on the TAP's subnet.
    #[arg(long, env = "SATMQTT_GATEWAY")]
    gateway: Option<Ipv4Addr>,
    /// Broker IPv4 address (smoltcp-nal connects over IPv4 only; no DNS).
    #[arg(long, env = "SATMQTT_HOST")]
    host: Ipv4Addr,
    /// Broker TCP port.
    #[arg(long, env = "SATMQTT_PORT", default_value_t = 1883)]
    port: u16,
    /// Token file, read before every connection and again on every SIGUSR1.
    #[arg(long, env = "SATMQTT_TOKEN_FILE")]
    token_file: PathBuf,
    /// How the token logs in: `sat` (user name `$sat`, token as password: Azure IoT MQ preview)
    /// or `k8s-sat` (MQTT v5 enhanced authentication with in-band re-authentication: Azure IoT
    /// Operations).
    #[arg(long, env = "SATMQTT_AUTH", value_enum, default_value_t = AuthArg::Sat)]
    auth: AuthArg,
    /// Longest token accepted; the core's buffers are sized for it once, as firmware would.
    #[arg(long, env = "SATMQTT_MAX_TOKEN_LEN", default_value_t = 4096)]
    max_token_len: usize,
    #[command(flatten)]
    job: JobArgs,
    /// TCP sockets in smoltcp's socket set (smoltcp-nal manages at most 16).
    #[arg(long, env = "SATMQTT_TCP_SOCKETS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    tcp_sockets: u8,
    /// Longest wait for a closed socket's closing handshake, in milliseconds.
    #[arg(long, env = "SATMQTT_LINGER_MS", default_value_t = satmqtt_smoltcp::LINGER_MS)]
    linger_ms: u32,
    /// Value of the 32-bit millisecond clock at start; e.g. 4294964296 crosses the wrap 3 s in.
    #[arg(long, env = "SATMQTT_CLOCK_START_MS", default_value_t = 0)]
    clock_start_ms: u32,
    #[command(flatten)]
    log: LogArgs,
}

/// `--auth` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthArg {
    /// User name `$sat`, the token as password.
    Sat,
    /// MQTT v5 enhanced authentication, method K8S-SAT.
    K8sSat,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not an IPv4 address with a prefix length (a.b.c.d/n)"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|e| format!("`{addr}` is not an IPv4 address: {e}"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("`{len}` is not a prefix length (0..=32)"))?;
    Ok((addr, len))
}

/// The 32-bit millisecond tick counter an MCU timer would keep: `--clock-start-ms` plus the
/// milliseconds since start, wrapping.
static ORIGIN: OnceLock<Instant> = OnceLock::new();
static CLOCK_START: AtomicU32 = AtomicU32::new(0);

fn ticks() -> u32 {
    let elapsed = ORIGIN.get_or_init(Instant::now).elapsed().as_millis();
    // Truncation is the wrap a 32-bit hardware counter has.
    CLOCK_START
        .load(Ordering::Relaxed)
        .wrapping_add(elapsed as u32)
}

/// Why the token file cannot be used: the std adapter's reader said so, or the token is longer
/// than the buffers were sized for. Names the path, never the content.
#[derive(Debug)]
enum TokenProblem {
    File(TokenError),
    TooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
}

impl std::fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenProblem::File(e) => e.fmt(f),
            TokenProblem::TooLong { path, len, max } => write!(
                f,
                "token in {} is {len} bytes, more than --max-token-len {max}",
                path.display()
            ),
        }
    }
}

/// The token file as the core's token source: read (by the std adapter's [`TokenFile`]) before
/// every connection, and again when SIGUSR1 says a new token is there (the core compares it
/// with the one in use).
struct FileToken {
    file: TokenFile,
    max_len: usize,
    reload: Arc<AtomicBool>,
}

impl FileToken {
    /// The current token, or why it cannot be used.
    fn read(&self) -> Result<satmqtt_std::Token, TokenProblem> {
        let token = self.file.load().map_err(TokenProblem::File)?;
        if token.len() > self.max_len {
            return Err(TokenProblem::TooLong {
                path: self.file.path().to_owned(),
                len: token.len(),
                max: self.max_len,
            });
        }
        Ok(token)
    }
}

impl TokenSource for FileToken {
    type Error = TokenProblem;

    fn load(&mut self, buf: &mut [u8]) -> Result<Token, TokenProblem> {
        let token = self.read().inspect_err(|e| warn!("{e}"))?;
        let bytes = token.as_str().as_bytes();
        let room = buf.len();
        let dst = buf
            .get_mut(..bytes.len())
            .ok_or_else(|| TokenProblem::TooLong {
                path: self.file.path().to_owned(),
                len: bytes.len(),
                max: room,
            })?;
        dst.copy_from_slice(bytes);
        Ok(Token {
            len: bytes.len(),
            exp: None,
        })
    }

    fn changed(&mut self) -> bool {
        let reload = self.reload.swap(false, Ordering::SeqCst);
        if reload {
            info!("SIGUSR1: re-reading {}", self.file.path().display());
        }
        reload
    }
}

/// What the TAP program gives the driver: sleeping on the TAP descriptor, signals, logging.
struct Tap {
    fd: RawFd,
    stop: Arc<AtomicBool>,
    pool: usize,
    auth: Auth,
    attempts: u64,
    rotations: u32,
    rejected_tokens: u32,
}

impl Platform for Tap {
    fn wait(&mut self, ms: u32) {
        // Wakes on a frame from the kernel, the timeout, or a signal (EINTR): all fine.
        let _ = smoltcp::phy::wait(
            self.fd,
            Some(smoltcp::time::Duration::from_millis(u64::from(ms))),
        );
    }

    fn stop_requested(&mut self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn note(&mut self, note: Note) {
        match note {
            Note::Event(event) => self.event(&event),
            Note::SocketReturned { stats, waited_ms } => info!(
                "socket returned: {} of {} TCP sockets in use, {} closing; opened {}, closed {}, \
                 handshakes finished {}, lingered out {} (waited {waited_ms} ms)",
                stats.in_use,
                self.pool,
                stats.closing,
                stats.opened,
                stats.closed,
                stats.settled,
                stats.lingered
            ),
            Note::ClockError => error!("the stack's clock failed (smoltcp-nal poll)"),
        }
    }
}

impl Tap {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Connecting { .. } => {
                self.attempts += 1;
                debug!("{event}");
            }
            Event::Published { .. } | Event::Acked { .. } => {
                debug!("{event}")
            }
            Event::PublishRejected { .. }
            | Event::ReauthDeferred { .. }
            | Event::TokenUnavailable { .. }
            | Event::TokenExpired { .. }
            | Event::TokenExpiring { .. } => warn!("{event}"),
            Event::TokenChanged { .. } => {
                self.rotations += 1;
                let how = match self.auth {
                    Auth::K8sSat => "re-authenticating in band",
                    Auth::Sat => "rotating: draining, then DISCONNECT",
                };
                info!("new token handed in: rotation {}, {how}", self.rotations);
            }
            Event::Disconnected {
                why,
                disconnect_sent,
                retry_in_ms,
                ..
            } => {
                let sent = if *disconnect_sent {
                    "DISCONNECT sent"
                } else {
                    "no DISCONNECT"
                };
                if let End::TokenRejected(_) = why {
                    self.rejected_tokens += 1;
                    warn!(
                        "session ended: {why}; {sent}; retrying in {retry_in_ms} ms (SIGUSR1 \
                         hands in a new token)"
                    );
                } else if why.is_failure() {
                    warn!("session ended: {why}; {sent}; retrying in {retry_in_ms} ms");
                } else {
                    info!("session ended: {why}; {sent}");
                }
            }
            // Summed up when the run returns.
            Event::Finished { .. } => {}
            _ => info!("{event}"),
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (args, _) = satmqtt_cli::parse::<Args>(Args::command(), &argv, |_| None);
    CLOCK_START.store(args.clock_start_ms, Ordering::Relaxed);
    let _ = ticks();
    args.log.init(&args.job.client_id);
    if let Err(e) = args.job.check() {
        error!("invalid configuration: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }

    // Signals first: SIGUSR1's default action would kill the process.
    let reload = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let handlers = [
        (signal_hook::consts::SIGUSR1, &reload),
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGINT, &stop),
    ];
    for (signal, flag) in handlers {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(flag)) {
            error!("cannot install the handler for signal {signal}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }

    // Checked once at start, so a missing or bad file is a start-up error and not a retry loop;
    // the core reads it again before every connection and on SIGUSR1.
    let tokens = FileToken {
        file: TokenFile::new(&args.token_file),
        max_len: args.max_token_len,
        reload,
    };
    let token_len = match tokens.read() {
        Ok(token) => token.len(),
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let auth = match args.auth {
        AuthArg::Sat => Auth::Sat,
        AuthArg::K8sSat => Auth::K8sSat,
    };
    let broker = SocketAddr::from((args.host, args.port));
    let config = Config {
        broker,
        auth,
        ..Config::from(&args.job)
    };
    if let Err(e) = satmqtt_cli::validate(&config) {
        error!("{e}");
        return ExitCode::from(EXIT_CONFIG);
    }

    // The device, as an MCU's Ethernet driver.
    let mut device = match TunTapInterface::new(&args.tap, Medium::Ethernet) {
        Ok(device) => device,
        Err(e) => {
            error!(
                "cannot attach to TAP device {}: {e} (it must exist, and this needs \
                 CAP_NET_ADMIN and /dev/net/tun)",
                args.tap
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let fd = device.as_raw_fd();
    let seed = satmqtt_cli::seed(&args.job.client_id);

    // The interface: a MAC made from the address (locally administered), a static IPv4.
    let (address, prefix) = args.address;
    let [a, b, c, d] = address.octets();
    let mac = EthernetAddress([0x02, 0x00, a, b, c, d]);
    let mut iface_config = iface::Config::new(mac.into());
    iface_config.random_seed = seed;
    let mut interface = Interface::new(
        iface_config,
        &mut device,
        smoltcp::time::Instant::from_millis(0),
    );
    let cidr = IpCidr::new(address.into(), prefix);
    interface.update_ip_addrs(|addrs| {
        if addrs.push(cidr).is_err() {
            unreachable!("a fresh interface has room for one address");
        }
    });
    if let Some(gateway) = args.gateway {
        if let Err(e) = interface.routes_mut().add_default_ipv4_route(gateway) {
            error!("cannot add the default route: {e:?}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }

    // Socket storage: fixed, as it would be in static memory on an MCU.
    let pool = usize::from(args.tcp_sockets);
    let mut storage: Vec<SocketStorage<'_>> = (0..pool).map(|_| SocketStorage::EMPTY).collect();
    let mut rx_buffers = vec![[0u8; TCP_RX]; pool];
    let mut tx_buffers = vec![[0u8; TCP_TX]; pool];
    let mut sockets = SocketSet::new(&mut storage[..]);
    for (rx, tx) in rx_buffers.iter_mut().zip(tx_buffers.iter_mut()) {
        sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(&mut rx[..]),
            tcp::SocketBuffer::new(&mut tx[..]),
        ));
    }

    let clock = Millis::new(ticks);
    let mut stack =
        SmolStack::new(interface, device, sockets, clock).with_linger_ms(args.linger_ms);
    stack.seed_random_port(&seed.to_le_bytes());
    // The core's memory, sized once for the longest token accepted; the two that hold the
    // token (CONNECT, AUTH) are zeroed when dropped.
    let mut rx = vec![0u8; satmqtt::RX_MIN.max(TCP_RX)];
    let mut tx = Zeroizing::new(vec![
        0u8;
        satmqtt::tx_len(
            args.max_token_len,
            args.job.client_id.len(),
            args.job.topic.len(),
            args.job.payload_prefix.len(),
        )
    ]);
    let mut token_buffer = Zeroizing::new(vec![0u8; args.max_token_len]);
    let buffer_len = rx.len() + tx.len() + token_buffer.len();
    let buffers = Buffers {
        rx: &mut rx,
        tx: &mut tx,
        token: &mut token_buffer,
    };
    let mut driver = match Driver::new(&config, stack, clock, tokens, buffers, seed) {
        Ok(driver) => driver,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    info!(
        "publishing {prefix}<N> to {topic} on {broker} at QoS {qos}, every {interval} ms, {count}; \
         login {auth}; smoltcp on {tap} as {address}/{len}{gateway}, {pool} TCP socket(s); \
         clock starts at {clock_start} ms; token file {path} ({token_len} bytes, buffers \
         {buffer_len} bytes)",
        prefix = args.job.payload_prefix,
        topic = args.job.topic,
        qos = args.job.qos,
        interval = args.job.interval_ms,
        count = args.job.count_text(),
        tap = args.tap,
        len = prefix,
        gateway = args
            .gateway
            .map(|g| format!(" via {g}"))
            .unwrap_or_default(),
        clock_start = args.clock_start_ms,
        path = args.token_file.display(),
    );

    let mut tap = Tap {
        fd,
        stop,
        pool,
        auth,
        attempts: 0,
        rotations: 0,
        rejected_tokens: 0,
    };
    let outcome = satmqtt_smoltcp::run(&mut driver, &mut tap);
    let summary = |how: &str, p: satmqtt::Progress| {
        info!(
            "{how}: sent {}, acknowledged {}, duplicates {}, rejected {}, next {}; sessions {}, \
             connections {}, re-authentications {}, rotations {}, tokens refused {}; clock now {} \
             ms",
            p.sent,
            p.acked,
            p.duplicates,
            p.rejected,
            p.next,
            tap.attempts,
            p.connections,
            p.reauths,
            tap.rotations,
            tap.rejected_tokens,
            ticks()
        )
    };
    match outcome {
        Ok(Outcome::Finished(p)) => {
            summary("finished", p);
            ExitCode::SUCCESS
        }
        Ok(Outcome::Stopped(p)) => {
            summary("stopped by signal", p);
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
