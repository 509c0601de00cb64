//! `raw-pub`: the wire limit. A hand-encoded CONNECT, then every PUBLISH encoded up front into
//! one buffer and written in large writes. At QoS 1 it keeps `min(--window, Receive Maximum)`
//! publishes in flight and reads PUBACKs in bulk (the bench runs it at windows 10 and 20 and
//! without `--window`, i.e. at the broker's Receive Maximum). No MQTT library, no per-message
//! syscall. Exits once the broker closed after its DISCONNECT, so at QoS 1 the process ends
//! right after the last PUBACK: its lifetime is the publisher-side rate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};

use satmqtt_bench::args::ClientArgs;
use satmqtt_bench::wire::{self, kind};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw-pub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let a = ClientArgs::from_env();
    if a.interval_ms != 0 {
        bail!("raw-pub only publishes flat out (--interval-ms 0)");
    }
    let token = a.token()?;

    // Every packet, encoded before connecting; `ends[i]` is where packet i ends.
    let count = usize::try_from(a.count).context("--count")?;
    let mut packets = Vec::with_capacity(count * (a.topic.len() + a.prefix.len() + 30));
    let mut ends = Vec::with_capacity(count);
    let mut payload = Vec::with_capacity(a.prefix.len() + 20);
    for n in 0..a.count {
        payload.clear();
        payload.extend_from_slice(a.prefix.as_bytes());
        payload.extend_from_slice(n.to_string().as_bytes());
        let id = (n % 65_535) as u16 + 1;
        wire::put_publish(&mut packets, &a.topic, &payload, a.qos, id);
        ends.push(packets.len());
    }

    let mut stream = TcpStream::connect((a.host.as_str(), a.port)).context("connect")?;
    stream.set_nodelay(true).context("nodelay")?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .context("timeout")?;
    let connect = wire::connect(&a.client_id(), "$sat", token.as_bytes(), 60, None);
    stream.write_all(&connect).context("CONNECT")?;

    let mut rx = vec![0u8; 64 * 1024];
    let mut have = 0;
    let mut receive_maximum = None;
    while receive_maximum.is_none() {
        let n = stream.read(&mut rx[have..]).context("CONNACK")?;
        if n == 0 {
            bail!("broker closed before CONNACK");
        }
        have += n;
        let mut refused = None;
        let used = wire::split(&rx[..have], |p| {
            if p.kind() == kind::CONNACK {
                match p.body.get(1) {
                    Some(0) => receive_maximum = Some(connack_receive_maximum(p.body)),
                    other => refused = Some(other.copied().unwrap_or(0xff)),
                }
            }
        });
        if let Some(r) = refused {
            bail!("CONNACK 0x{r:02x}");
        }
        rx.copy_within(used..have, 0);
        have -= used;
    }
    let receive_maximum = usize::from(receive_maximum.unwrap_or(u16::MAX));

    if a.qos == 0 {
        stream.write_all(&packets).context("PUBLISH")?;
    } else {
        let window = a
            .window
            .map_or(receive_maximum, usize::from)
            .min(receive_maximum)
            .max(1);
        let (mut sent, mut acked) = (0usize, 0usize);
        while acked < count {
            let limit = (acked + window).min(count);
            if sent < limit {
                let from = if sent == 0 { 0 } else { ends[sent - 1] };
                stream
                    .write_all(&packets[from..ends[limit - 1]])
                    .context("PUBLISH")?;
                sent = limit;
            }
            let n = stream.read(&mut rx[have..]).context("PUBACK")?;
            if n == 0 {
                bail!("broker closed after {acked} PUBACKs");
            }
            have += n;
            let used = wire::split(&rx[..have], |p| {
                if p.kind() == kind::PUBACK {
                    acked += 1;
                }
            });
            rx.copy_within(used..have, 0);
            have -= used;
        }
        eprintln!("raw-pub: {acked} acknowledged, window {window}");
    }
    stream.write_all(&wire::DISCONNECT).context("DISCONNECT")?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Wait for the broker to close: everything written has been read by then.
    let _ = stream.read(&mut rx);
    Ok(())
}

/// Receive Maximum (property 0x21) from a CONNACK body; 65 535 when absent.
fn connack_receive_maximum(body: &[u8]) -> u16 {
    let Some((len, used)) = body.get(2..).and_then(wire::varint) else {
        return u16::MAX;
    };
    let Some(mut props) = body.get(2 + used..2 + used + len) else {
        return u16::MAX;
    };
    while let Some((&id, rest)) = props.split_first() {
        let size = match id {
            0x21 | 0x13 | 0x22 => 2,
            0x11 | 0x27 => 4,
            0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => match rest.get(..2) {
                Some(l) => 2 + usize::from(u16::from_be_bytes([l[0], l[1]])),
                None => return u16::MAX,
            },
            0x26 => {
                // User property: two strings.
                let first = match rest.get(..2) {
                    Some(l) => 2 + usize::from(u16::from_be_bytes([l[0], l[1]])),
                    None => return u16::MAX,
                };
                match rest.get(first..first + 2) {
                    Some(l) => first + 2 + usize::from(u16::from_be_bytes([l[0], l[1]])),
                    None => return u16::MAX,
                }
            }
            _ => return u16::MAX,
        };
        if id == 0x21 {
            return rest
                .get(..2)
                .map_or(u16::MAX, |v| u16::from_be_bytes([v[0], v[1]]));
        }
        props = rest.get(size..).unwrap_or(&[]);
    }
    u16::MAX
}
