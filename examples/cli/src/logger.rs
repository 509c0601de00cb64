//! One line per record on stderr: time, level, client id, message. The token is never passed
//! to a log call.
//!
//! Two formats: human-readable text (the default), or one JSON object per line for cluster log
//! pipelines: `{"ts":"2025-01-02T15:04:05.123Z","level":"info","client_id":"...","msg":"..."}`.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `<time> <LEVEL> [<client id>] <message>`.
    Text,
    /// One JSON object per line with the fields `ts`, `level`, `client_id` and `msg`.
    Json,
}

/// The logging flags, the same in both binaries.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "SATMQTT_LOG", default_value = "info")]
    pub log_level: LevelFilter,
    /// Log format: text (for people) or json (one object per line: ts, level, client_id, msg).
    #[arg(long, env = "SATMQTT_LOG_FORMAT", value_enum, default_value_t = Format::Text)]
    pub log_format: Format,
}

impl LogArgs {
    /// Installs the logger; every line carries `client_id`.
    pub fn init(&self, client_id: &str) {
        let logger = Logger {
            level: self.log_level,
            client_id: client_id.to_owned(),
            format: self.log_format,
        };
        if log::set_boxed_logger(Box::new(logger)).is_ok() {
            log::set_max_level(self.log_level);
        }
    }
}

struct Logger {
    level: LevelFilter,
    client_id: String,
    format: Format,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            emit(
                self.format,
                record.level(),
                &self.client_id,
                &record.args().to_string(),
            );
        }
    }

    fn flush(&self) {}
}

/// Writes one log line to stderr, also before (or without) the logger being installed.
pub fn emit(format: Format, level: Level, client_id: &str, msg: &str) {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let line = match format {
        Format::Text => format!("{now} {level:<5} [{client_id}] {msg}"),
        Format::Json => json_line(&now, level, client_id, msg),
    };
    // A failed write to stderr has nowhere better to be reported.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn json_line(ts: &str, level: Level, client_id: &str, msg: &str) -> String {
    serde_json::json!({
        "ts": ts,
        "level": level.as_str().to_ascii_lowercase(),
        "client_id": client_id,
        "msg": msg,
    })
    .to_string()
}

/// Clap's message for `error` on one line: without the `error: ` label, the usage and the
/// "try --help" hint, which are for a terminal.
pub fn clap_text(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let text: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let text = text.join(" ");
    text.strip_prefix("error: ").unwrap_or(&text).to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_has_the_four_fields_and_escapes_the_message() {
        let line = json_line(
            "2025-01-02T15:04:05.123Z",
            Level::Warn,
            "pod-1",
            "quote \" and\nnewline",
        );
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "ts": "2025-01-02T15:04:05.123Z",
                "level": "warn",
                "client_id": "pod-1",
                "msg": "quote \" and\nnewline",
            })
        );
    }

    #[test]
    fn clap_errors_become_one_line() {
        #[derive(clap::Parser, Debug)]
        struct Args {
            #[arg(long)]
            port: u16,
        }
        let error = <Args as clap::Parser>::try_parse_from(["x", "--port", "nine"]).unwrap_err();
        let text = clap_text(&error);
        assert!(!text.contains('\n') && !text.starts_with("error"), "{text}");
        assert!(
            text.contains("invalid value 'nine' for '--port <PORT>'"),
            "{text}"
        );
    }
}
