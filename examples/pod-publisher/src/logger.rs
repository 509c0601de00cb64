//! One line per record on stderr: time, level, client id, message. The token is never passed
//! to a log call, and minimq's own `logging` feature stays off (it would print CONNECT bytes).
//!
//! Two formats: human-readable text (the default), or one JSON object per line for cluster log
//! pipelines: `{"ts":"2025-01-02T15:04:05.123Z","level":"info","client_id":"...","msg":"..."}`.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `<time> <LEVEL> [<client id>] <message>`.
    Text,
    /// One JSON object per line with the fields `ts`, `level`, `client_id` and `msg`.
    Json,
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
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let line = match self.format {
            Format::Text => format!(
                "{now} {:<5} [{}] {}",
                record.level(),
                self.client_id,
                record.args()
            ),
            Format::Json => json_line(&now.to_string(), record, &self.client_id),
        };
        // A failed write to stderr has nowhere better to be reported.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn flush(&self) {}
}

fn json_line(ts: &str, record: &Record<'_>, client_id: &str) -> String {
    serde_json::json!({
        "ts": ts,
        "level": record.level().as_str().to_ascii_lowercase(),
        "client_id": client_id,
        "msg": record.args().to_string(),
    })
    .to_string()
}

/// Installs the logger; every line carries `client_id`.
pub fn init(level: LevelFilter, client_id: &str, format: Format) {
    let logger = Logger {
        level,
        client_id: client_id.to_owned(),
        format,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_has_the_four_fields_and_escapes_the_message() {
        let line = json_line(
            "2025-01-02T15:04:05.123Z",
            &Record::builder()
                .level(log::Level::Warn)
                .args(format_args!("quote \" and\nnewline"))
                .build(),
            "pod-1",
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
}
