//! `smoltcp-publisher`: the satmqtt core on smoltcp over a Linux TAP device, exactly as it runs
//! on a microcontroller — a userspace TCP/IP stack with a static IPv4 address, a 32-bit
//! millisecond clock, fixed socket storage, and a token read once at start (as firmware reads
//! it from flash). It publishes `samplepayload<N>` as `$sat`.
//!
//! A new token is handed in with SIGUSR1: the program re-reads `--token-file`, and if the
//! token changed the session rotates (drain in-flight QoS 1 messages, DISCONNECT, close) and
//! the next one logs in with the new token. SIGTERM/SIGINT stop it the same way and exit 0.
//!
//! The TAP device must exist and be up on the kernel side (`ip tuntap add dev tap0 mode tap`,
//! `ip addr add 10.77.0.1/24 dev tap0`, `ip link set tap0 up`); opening it needs
//! CAP_NET_ADMIN and /dev/net/tun.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::Parser;
use log::{debug, error, info, warn};
use satmqtt::{Config, End, Event, Publisher};
use satmqtt_cli::{check, JobArgs, LogArgs, EXIT_CONFIG};
use satmqtt_smoltcp::{Millis, Note, Outcome, Platform, SmolStack, TokenUnavailable};
use satmqtt_std::{Token, TokenFile};
use smoltcp::iface::{self, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{Medium, TunTapInterface};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpCidr};
use zeroize::Zeroizing;

/// Per-socket receive buffer: MQTT acknowledgements are tiny.
const TCP_RX: usize = 2048;
/// Per-socket transmit buffer: holds a CONNECT with a large token in one go.
const TCP_TX: usize = 8192;

/// Publishes `<prefix><N>` over MQTT v5 as `$sat`, on smoltcp over a TAP device.
#[derive(Parser, Debug)]
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
    #[arg(long, env = "SATMQTT_PORT", default_value_t = 1883, value_parser = check::port)]
    port: u16,
    /// Token file, read once at start and again on every SIGUSR1.
    #[arg(long, env = "SATMQTT_TOKEN_FILE")]
    token_file: PathBuf,
    /// Longest token accepted; minimq's buffer is sized for it once, as firmware would.
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

/// Reads the token file with the std adapter's reader, plus this program's own limit.
fn read_token(tokens: &TokenFile, max: usize) -> Result<Token, String> {
    let token = tokens.load().map_err(|e| e.to_string())?;
    if token.len() > max {
        return Err(format!(
            "token in {} is {} bytes, more than --max-token-len {max}",
            tokens.path().display(),
            token.len()
        ));
    }
    Ok(token)
}

/// What the TAP program gives the driver: sleeping on the TAP descriptor, the token, signals.
struct Tap {
    fd: RawFd,
    token: Token,
    tokens: TokenFile,
    max_token_len: usize,
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    pool: usize,
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

    fn token(&mut self) -> Result<&str, TokenUnavailable> {
        Ok(self.token.as_str())
    }

    fn token_changed(&mut self) -> bool {
        if !self.reload.swap(false, Ordering::SeqCst) {
            return false;
        }
        match read_token(&self.tokens, self.max_token_len) {
            Ok(token) if token == self.token => {
                info!("SIGUSR1: the token is unchanged; no rotation");
                false
            }
            Ok(token) => {
                self.rotations += 1;
                info!(
                    "SIGUSR1: new token ({} bytes) handed in: rotation {}",
                    token.len(),
                    self.rotations
                );
                self.token = token;
                true
            }
            Err(e) => {
                warn!("SIGUSR1: {e}; keeping the current token");
                false
            }
        }
    }

    fn stop_requested(&mut self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn note(&mut self, note: Note) {
        match note {
            Note::Event(event) => self.event(event),
            Note::Rotating => info!("rotating: draining, then DISCONNECT"),
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
            Note::TokenUnavailable { retry_in_ms } => {
                warn!("no token; retrying in {retry_in_ms} ms")
            }
            Note::ClockError => error!("the stack's clock failed (smoltcp-nal poll)"),
        }
    }
}

impl Tap {
    fn event(&mut self, event: Event) {
        match event {
            Event::Connected {
                receive_maximum,
                window,
                ..
            } => info!("connected (receive maximum {receive_maximum}, QoS 1 window {window})"),
            Event::Republishing { from, count } => {
                info!("resending {count} unacknowledged message(s) from {from}")
            }
            Event::Published { n, duplicate } => {
                debug!("published {n}{}", if duplicate { " again" } else { "" })
            }
            Event::Acked { through } => debug!("acknowledged through {through}"),
            Event::PublishRejected { n, reason } => warn!(
                "broker refused message {n}: PUBACK 0x{reason:02x} {}",
                satmqtt::frame::reason_name(reason)
            ),
            Event::TokenRejected { .. } => self.rejected_tokens += 1,
            Event::Disconnected {
                why,
                disconnect_sent,
                retry_in_ms,
            } => {
                let sent = if disconnect_sent {
                    "DISCONNECT sent"
                } else {
                    "no DISCONNECT"
                };
                if let End::TokenRejected(_) = why {
                    warn!(
                        "session ended: {why}; {sent}; retrying in {retry_in_ms} ms with the \
                         token in memory (SIGUSR1 hands in a new one)"
                    );
                } else if why.is_failure() {
                    warn!("session ended: {why}; {sent}; retrying in {retry_in_ms} ms");
                } else {
                    info!("session ended: {why}; {sent}");
                }
            }
            // Summed up when the run returns.
            Event::Finished { .. } => {}
            // Events added to the core later are not this program's business.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (args, _) =
        satmqtt_cli::parse::<Args>(<Args as clap::CommandFactory>::command(), &argv, |_| None);
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

    // Read once, as firmware reads its flash; SIGUSR1 reads it again.
    let tokens = TokenFile::new(&args.token_file).with_hint_report(|path, hints| {
        for hint in hints {
            warn!("token file {}: {hint}", path.display());
        }
    });
    let token = match read_token(&tokens, args.max_token_len) {
        Ok(token) => token,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    let broker = SocketAddr::from((args.host, args.port));
    let config = Config {
        broker,
        ..Config::from(&args.job)
    };

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
    let mut publisher = match Publisher::new(stack, clock, config, seed) {
        Ok(publisher) => publisher,
        Err(e) => {
            error!(
                "invalid configuration: {}",
                satmqtt_cli::config_error_text(&e)
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // minimq's memory, sized once for the longest token accepted; zeroed when dropped.
    let mut buffer = Zeroizing::new(vec![0u8; config.buffer_len(args.max_token_len)]);

    info!(
        "publishing {prefix}<N> to {topic} on {broker} at QoS {qos}, every {interval} ms, {count}; \
         smoltcp on {tap} as {address}/{len}{gateway}, {pool} TCP socket(s); clock starts at \
         {clock_start} ms; token file {path} ({token_len} bytes, buffer {buffer_len} bytes)",
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
        token_len = token.len(),
        buffer_len = buffer.len(),
    );

    let mut tap = Tap {
        fd,
        token,
        tokens,
        max_token_len: args.max_token_len,
        reload,
        stop,
        pool,
        rotations: 0,
        rejected_tokens: 0,
    };
    let outcome = satmqtt_smoltcp::run(&mut publisher, &mut buffer, &mut tap);
    let summary = |how: &str, p: satmqtt::Progress| {
        info!(
            "{how}: sent {}, acknowledged {}, duplicates {}, rejected {}, next {}; sessions {}, \
             rotations {}, tokens refused {}; clock now {} ms",
            p.sent,
            p.acked,
            p.duplicates,
            p.rejected,
            p.next,
            p.sessions,
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
