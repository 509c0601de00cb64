//! The command line every bench client takes (a subset of `pod-publisher`'s flags, same names).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// One client's job.
#[derive(Debug, Clone, Parser)]
#[command(about = "A measured bench client: publish <prefix><N> for N in 0..count")]
pub struct ClientArgs {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// File holding the `$sat` password.
    #[arg(long, default_value = "/var/run/secrets/tokens/mqtt-client-token")]
    pub token_file: PathBuf,
    /// MQTT client id (default: bench-<pid>).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Topic.
    #[arg(long, default_value = "sampletopic")]
    pub topic: String,
    /// Payload prefix; the counter follows in decimal.
    #[arg(long = "payload-prefix", default_value = "samplepayload")]
    pub prefix: String,
    /// 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Messages to send.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Milliseconds between publishes; 0 is as fast as possible.
    #[arg(long = "interval-ms", default_value_t = 0)]
    pub interval_ms: u64,
    /// Most QoS 1 messages in flight (capped by the broker's Receive Maximum; default: it).
    #[arg(long)]
    pub window: Option<u16>,
}

impl ClientArgs {
    /// Parses the process's arguments; prints usage and exits on an error, as clap does.
    pub fn from_env() -> ClientArgs {
        ClientArgs::parse()
    }

    /// The client id, `bench-<pid>` when none was given.
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("bench-{}", std::process::id()))
    }

    /// Time between publishes; zero is as fast as possible.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The token, read and checked as pod-publisher reads it (the std adapter's `TokenFile`).
    pub fn token(&self) -> anyhow::Result<String> {
        let token = satmqtt_std::TokenFile::new(&self.token_file).load()?;
        Ok(token.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pod_publisher_style_flags() {
        let a = ClientArgs::try_parse_from([
            "raw-pub", "--port", "1884", "--qos", "0", "--count", "7", "--window", "20",
        ])
        .expect("valid flags");
        assert_eq!((a.port, a.qos, a.count, a.window), (1884, 0, 7, Some(20)));
        assert!(ClientArgs::try_parse_from(["raw-pub", "--qos", "2"]).is_err());
        assert!(ClientArgs::try_parse_from(["raw-pub", "--nonsense", "1"]).is_err());
    }
}
