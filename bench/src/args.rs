//! The command line every bench client takes (a subset of `pod-publisher`'s flags, same names).

use std::path::PathBuf;
use std::time::Duration;

/// One client's job.
#[derive(Debug, Clone)]
pub struct ClientArgs {
    /// Broker address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// File holding the `$sat` password.
    pub token_file: PathBuf,
    /// MQTT client id.
    pub client_id: String,
    /// Topic.
    pub topic: String,
    /// Payload prefix; the counter follows in decimal.
    pub prefix: String,
    /// 0 or 1.
    pub qos: u8,
    /// Messages to send.
    pub count: u64,
    /// Time between publishes; zero is as fast as possible.
    pub interval: Duration,
    /// Most QoS 1 messages in flight (capped by the broker's Receive Maximum).
    pub window: Option<u16>,
}

impl ClientArgs {
    /// Parses `--flag value` pairs; unknown flags are an error.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<ClientArgs, String> {
        let mut a = ClientArgs {
            host: "127.0.0.1".into(),
            port: 1883,
            token_file: PathBuf::from("/var/run/secrets/tokens/mqtt-client-token"),
            client_id: format!("bench-{}", std::process::id()),
            topic: "sampletopic".into(),
            prefix: "samplepayload".into(),
            qos: 1,
            count: 100_000,
            interval: Duration::ZERO,
            window: None,
        };
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--host" => a.host = value,
                "--port" => a.port = value.parse().map_err(|e| bad(&e))?,
                "--token-file" => a.token_file = value.into(),
                "--client-id" => a.client_id = value,
                "--topic" => a.topic = value,
                "--payload-prefix" => a.prefix = value,
                "--qos" => {
                    a.qos = value.parse().map_err(|e| bad(&e))?;
                    if a.qos > 1 {
                        return Err(bad(&"QoS must be 0 or 1"));
                    }
                }
                "--count" => a.count = value.parse().map_err(|e| bad(&e))?,
                "--interval-ms" => {
                    a.interval = Duration::from_millis(value.parse().map_err(|e| bad(&e))?)
                }
                "--window" => a.window = Some(value.parse().map_err(|e| bad(&e))?),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(a)
    }

    /// The token, trailing whitespace trimmed (as pod-publisher does).
    pub fn token(&self) -> Result<String, String> {
        std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim_end().to_owned())
            .map_err(|e| format!("reading {}: {e}", self.token_file.display()))
    }
}
