//! What the engine tells its caller: [`Event`]s, why a connection ended ([`End`]), and how the
//! broker broke the protocol ([`ProtocolError`]). All `Display` in words, so every program logs
//! the same sentences; none ever holds token bytes.

use core::fmt;

use crate::wire::{self, Malformed};

/// Longest broker-supplied text kept (reason strings, assigned client ids); longer ones are cut.
pub const TEXT_MAX: usize = 64;

/// Text from the broker, bounded to [`TEXT_MAX`] bytes and with control characters replaced,
/// so a hostile reason string can neither grow memory nor forge log lines.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text {
    buf: heapless::String<TEXT_MAX>,
    cut: bool,
}

impl Text {
    /// Copies `s`, sanitized and bounded.
    pub fn new(s: &str) -> Self {
        let mut text = Text::default();
        for c in s.chars() {
            let c = if c.is_control() { '?' } else { c };
            if text.buf.push(c).is_err() {
                text.cut = true;
                break;
            }
        }
        text
    }

    /// The kept text.
    pub fn as_str(&self) -> &str {
        &self.buf
    }

    /// Whether nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.buf)?;
        if self.cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// How the broker broke MQTT v5; ends the connection with DISCONNECT 0x81 (malformed), 0x95
/// (too large) or 0x82 (everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Bytes that are not a valid packet.
    Malformed(Malformed),
    /// A packet larger than the Maximum Packet Size we advertised.
    PacketTooLarge {
        /// Its length.
        len: usize,
        /// Our limit.
        max: usize,
    },
    /// A packet type a publisher never receives at this point (e.g. PUBLISH, a second CONNACK).
    Unexpected {
        /// Its packet type number.
        kind: u8,
    },
    /// A PUBACK while nothing is in flight.
    PubackNothingInFlight {
        /// Its packet identifier.
        id: u16,
    },
    /// A PUBACK that is not for the oldest message in flight (MQTT v5 §4.6).
    PubackOutOfOrder {
        /// The identifier expected.
        expected: u16,
        /// The identifier received.
        got: u16,
    },
    /// CONNACK says Session Present although we asked for a clean start [MQTT-3.2.2-2].
    SessionPresentOnCleanStart,
    /// An AUTH when no authentication exchange was under way, or with another method.
    UnexpectedAuth {
        /// Its reason code.
        reason: u8,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtocolError::Malformed(m) => write!(f, "malformed packet: {m}"),
            ProtocolError::PacketTooLarge { len, max } => {
                write!(f, "a {len}-byte packet, over our Maximum Packet Size {max}")
            }
            ProtocolError::Unexpected { kind } => {
                write!(f, "unexpected {} packet", kind_name(kind))
            }
            ProtocolError::PubackNothingInFlight { id } => {
                write!(f, "PUBACK for id {id} while nothing was in flight")
            }
            ProtocolError::PubackOutOfOrder { expected, got } => write!(
                f,
                "PUBACK for id {got} out of order (expected {expected}; MQTT v5 §4.6)"
            ),
            ProtocolError::SessionPresentOnCleanStart => {
                f.write_str("CONNACK with Session Present on a clean start")
            }
            ProtocolError::UnexpectedAuth { reason } => {
                write!(f, "AUTH 0x{reason:02x} nobody asked for")
            }
        }
    }
}

impl ProtocolError {
    /// The DISCONNECT reason code we answer it with.
    pub fn reason(&self) -> u8 {
        match self {
            ProtocolError::Malformed(_) => 0x81,
            ProtocolError::PacketTooLarge { .. } => 0x95,
            _ => 0x82,
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// `count` messages were published (and acknowledged at QoS 1).
    Completed,
    /// The caller asked to stop.
    Stopped,
    /// A new token needs a new connection (`$sat`, or a failed re-authentication).
    Rotation,
    /// The token in use is about to expire; a new connection presents the newer one.
    TokenExpiring,
    /// CONNACK 0x86 (bad user name or password) or 0x87 (not authorized): the token.
    TokenRejected(u8),
    /// CONNACK 0x8C: the broker does not accept this authentication method.
    BadAuthMethod,
    /// CONNACK refused with another reason code.
    Refused(u8),
    /// The broker answered CONNECT with an AUTH challenge (0x18); `K8S-SAT` has no second step.
    AuthChallenge,
    /// The broker refused a re-authentication (mosquitto 2.0.11 answers CONNACK 0x87).
    ReauthRefused(u8),
    /// No answer to a re-authentication within the timeout.
    ReauthTimeout,
    /// The broker closed TCP.
    PeerClosed,
    /// The broker sent DISCONNECT.
    ServerDisconnect {
        /// Its reason code.
        reason: u8,
        /// Its reason string, if any (sanitized, bounded).
        text: Text,
    },
    /// The broker broke the protocol.
    Protocol(ProtocolError),
    /// No CONNACK within the connect timeout.
    ConnectTimeout,
    /// A keepalive ping went unanswered.
    LinkLost,
    /// The network stack failed.
    Network(embedded_nal::TcpErrorKind),
    /// One PUBLISH of this job is larger than the broker's Maximum Packet Size.
    PublishTooLarge {
        /// Bytes of the largest PUBLISH.
        len: usize,
        /// The broker's limit.
        max: u32,
    },
    /// The broker's Maximum QoS is 0 and the job publishes at QoS 1.
    QosNotSupported,
}

impl End {
    /// Whether the connection ended because of a problem (the next attempt backs off).
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            End::Completed | End::Stopped | End::Rotation | End::TokenExpiring | End::ReauthTimeout
        )
    }

    /// Whether retrying cannot help: the configuration does not fit this broker.
    pub fn is_fatal(&self) -> bool {
        matches!(self, End::PublishTooLarge { .. } | End::QosNotSupported)
    }

    /// Whether the broker says a packet of ours was wrong (0x81 malformed, 0x82 protocol
    /// error, 0x93 receive maximum exceeded, 0x95 too large, 0x99 payload format): a second one
    /// in a row is a configuration error, not a reason to retry forever. Gives the reason code.
    pub fn blames_us(&self) -> Option<u8> {
        match self {
            End::ServerDisconnect { reason, .. } | End::Refused(reason)
                if matches!(reason, 0x81 | 0x82 | 0x93 | 0x95 | 0x99) =>
            {
                Some(*reason)
            }
            _ => None,
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = wire::reason_name;
        match self {
            End::Completed => f.write_str("all messages published"),
            End::Stopped => f.write_str("stopped on request"),
            End::Rotation => f.write_str("token rotation"),
            End::TokenExpiring => f.write_str("the token in use is about to expire"),
            End::TokenRejected(r) => write!(f, "token rejected: CONNACK 0x{r:02x} {}", name(*r)),
            End::BadAuthMethod => f.write_str(
                "CONNACK 0x8c Bad authentication method: this broker does not take this login \
                 scheme (try the other --auth)",
            ),
            End::Refused(r) => write!(f, "connection refused: CONNACK 0x{r:02x} {}", name(*r)),
            End::AuthChallenge => f.write_str(
                "the broker answered CONNECT with an AUTH challenge (0x18); K8S-SAT has no \
                 second step",
            ),
            End::ReauthRefused(r) => write!(
                f,
                "re-authentication refused: 0x{r:02x} {}; the next connection presents the new token",
                name(*r)
            ),
            End::ReauthTimeout => f.write_str("no answer to the re-authentication"),
            End::PeerClosed => f.write_str("broker closed the connection"),
            End::ServerDisconnect { reason, text } => {
                write!(f, "broker sent DISCONNECT 0x{reason:02x} {}", name(*reason))?;
                if !text.is_empty() {
                    write!(f, " ({text:?})")?;
                }
                Ok(())
            }
            End::Protocol(e) => write!(f, "broker broke the protocol: {e}"),
            End::ConnectTimeout => f.write_str("no CONNACK within the connect timeout"),
            End::LinkLost => f.write_str("link lost: keepalive ping unanswered"),
            End::Network(kind) => write!(f, "network error ({kind:?})"),
            End::PublishTooLarge { len, max } => write!(
                f,
                "a PUBLISH of this job is {len} bytes, over the broker's Maximum Packet Size \
                 {max}: shorten the topic or payload prefix"
            ),
            End::QosNotSupported => {
                f.write_str("the broker's Maximum QoS is 0; publish with QoS 0")
            }
        }
    }
}

/// Counters that survive across connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Next counter value to publish.
    pub next: u64,
    /// Every message below this one has been acknowledged (QoS 1) or sent (QoS 0).
    pub acked_next: u64,
    /// One past the highest counter ever written; a write below it is a duplicate.
    pub sent_high: u64,
    /// PUBLISH packets written, duplicates included.
    pub sent: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Messages written more than once (resent after a reconnect).
    pub duplicates: u64,
    /// PUBACKs with a failure reason code.
    pub rejected: u64,
    /// Connections that reached CONNACK success.
    pub connections: u32,
    /// Successful in-band re-authentications.
    pub reauths: u32,
}

/// What the engine reports; the program decides what to log or count.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A TCP connection is being opened.
    Connecting {
        /// Attempt number since the last connection that made progress (1 = first).
        attempt: u32,
    },
    /// CONNACK success.
    Connected {
        /// Session Present flag from the broker.
        session_present: bool,
        /// The broker's Receive Maximum (65 535 when it sent none).
        receive_maximum: u16,
        /// QoS 1 messages this connection keeps in flight: min(cap, Receive Maximum).
        window: u16,
        /// Keepalive in force, seconds (the broker's Server Keep Alive wins).
        keep_alive_s: u16,
        /// Whether PUBLISHes use a Topic Alias.
        topic_alias: bool,
        /// The client id the broker assigned (when ours was empty).
        assigned_client_id: Option<Text>,
    },
    /// Messages written before, not acknowledged, are being sent again.
    Republishing {
        /// First counter value resent.
        from: u64,
        /// How many.
        count: u64,
        /// Sent with DUP=1 and their old packet identifiers (a resumed session).
        dup: bool,
    },
    /// PUBLISH packets were written: counters `first..=last`.
    Published {
        /// First counter value.
        first: u64,
        /// Last counter value.
        last: u64,
        /// How many of them were written before.
        duplicates: u64,
    },
    /// Every message up to and including `through` is acknowledged.
    Acked {
        /// Highest acknowledged counter value.
        through: u64,
    },
    /// PUBACKs carried a failure reason code: the broker will not deliver those messages.
    PublishRejected {
        /// Counter value of the first such message since the last report.
        n: u64,
        /// Its reason code.
        reason: u8,
        /// How many were rejected since the last report.
        count: u64,
    },
    /// A re-authentication (AUTH 0x19) with a new token was sent; publishing goes on.
    Reauthenticating {
        /// `exp` of the new token (Unix seconds), if known.
        exp: Option<u64>,
    },
    /// The broker accepted the new token (AUTH 0x00).
    Reauthenticated {
        /// `exp` of the token now in force, if known.
        exp: Option<u64>,
    },
    /// The broker asked to try the re-authentication later (AUTH 0x18).
    ReauthDeferred {
        /// Milliseconds until the next try.
        retry_in_ms: u64,
    },
    /// The token source failed; the next attempt is in `retry_in_ms`.
    TokenUnavailable {
        /// Milliseconds before the next attempt.
        retry_in_ms: u64,
    },
    /// The token on hand is past its `exp`; no connection is attempted with it.
    TokenExpired {
        /// Seconds since `exp`.
        ago_s: u64,
        /// Milliseconds before the source is read again.
        retry_in_ms: u64,
    },
    /// The token in use is inside its expiry margin and no newer one has appeared.
    TokenExpiring {
        /// Seconds left before `exp`.
        expires_in_s: u64,
    },
    /// The token source holds a new token; with `$sat` the connection rotates to it.
    TokenChanged {
        /// `exp` of the new token, if known.
        exp: Option<u64>,
    },
    /// A connection ended.
    Disconnected {
        /// Why.
        why: End,
        /// Whether a DISCONNECT packet was written before closing the socket.
        disconnect_sent: bool,
        /// Milliseconds before the next attempt (0 for planned ends).
        retry_in_ms: u64,
        /// Failed attempts in a row, this one included (0 for planned ends).
        failures: u32,
    },
    /// The first publish after a reconnect-based rotation: publishing paused for `gap_ms`.
    Rotated {
        /// Milliseconds from the start of the rotation to this publish.
        gap_ms: u64,
    },
    /// All `count` messages are published (and acknowledged at QoS 1).
    Finished {
        /// Counters at the end.
        progress: Progress,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connecting { attempt } => write!(f, "connecting (attempt {attempt})"),
            Event::Connected {
                receive_maximum,
                window,
                keep_alive_s,
                topic_alias,
                assigned_client_id,
                ..
            } => {
                write!(
                    f,
                    "connected (receive maximum {receive_maximum}, QoS 1 window {window}, \
                     keepalive {keep_alive_s} s, topic alias {})",
                    if *topic_alias { "on" } else { "off" }
                )?;
                if let Some(id) = assigned_client_id {
                    write!(f, "; the broker assigned client id {id:?}")?;
                }
                Ok(())
            }
            Event::Republishing { from, count, dup } => write!(
                f,
                "resending {count} unacknowledged message(s) from {from}{}",
                if *dup { " (DUP, resumed session)" } else { "" }
            ),
            Event::Published {
                first,
                last,
                duplicates,
            } => {
                if first == last {
                    write!(f, "published {first}")?;
                } else {
                    write!(f, "published {first}..={last}")?;
                }
                if *duplicates > 0 {
                    write!(f, " ({duplicates} again)")?;
                }
                Ok(())
            }
            Event::Acked { through } => write!(f, "acknowledged through {through}"),
            Event::PublishRejected { n, reason, count } => write!(
                f,
                "broker refused {count} message(s) from {n}: PUBACK 0x{reason:02x} {}",
                wire::reason_name(*reason)
            ),
            Event::Reauthenticating { exp } => {
                f.write_str("re-authenticating with the new token")?;
                write_exp(f, *exp)
            }
            Event::Reauthenticated { exp } => {
                f.write_str("re-authenticated: the broker took the new token")?;
                write_exp(f, *exp)
            }
            Event::ReauthDeferred { retry_in_ms } => write!(
                f,
                "the broker asked to re-authenticate later (AUTH 0x18); retrying in \
                 {retry_in_ms} ms"
            ),
            Event::TokenUnavailable { retry_in_ms } => {
                write!(f, "no token available; retrying in {retry_in_ms} ms")
            }
            Event::TokenExpired { ago_s, retry_in_ms } => write!(
                f,
                "the token expired {ago_s} s ago: not connecting with it; next look in \
                 {retry_in_ms} ms"
            ),
            Event::TokenExpiring { expires_in_s } => write!(
                f,
                "the token in use expires in {expires_in_s} s and no new one has appeared"
            ),
            Event::TokenChanged { exp } => {
                f.write_str("new token")?;
                write_exp(f, *exp)
            }
            Event::Disconnected {
                why,
                disconnect_sent,
                retry_in_ms,
                failures,
            } => {
                write!(f, "disconnected: {why}")?;
                if *disconnect_sent {
                    f.write_str(", DISCONNECT sent")?;
                }
                if why.is_failure() {
                    write!(
                        f,
                        "; reconnecting in {retry_in_ms} ms (attempt {})",
                        failures + 1
                    )?;
                }
                Ok(())
            }
            Event::Rotated { gap_ms } => write!(
                f,
                "rotated to the new token: publishing resumed after {gap_ms} ms"
            ),
            Event::Finished { progress } => write!(
                f,
                "finished: sent {}, acknowledged {}, duplicates {}, rejected {}, next {}",
                progress.sent,
                progress.acked,
                progress.duplicates,
                progress.rejected,
                progress.next
            ),
        }
    }
}

fn write_exp(f: &mut fmt::Formatter<'_>, exp: Option<u64>) -> fmt::Result {
    match exp {
        Some(exp) => write!(f, " (exp {exp})"),
        None => Ok(()),
    }
}

/// The name of an MQTT packet type number.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        15 => "AUTH",
        _ => "reserved",
    }
}
