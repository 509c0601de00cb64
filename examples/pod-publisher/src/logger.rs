//! One line per record on stderr: time, level, client id, message. The token is never passed
//! to a log call, and minimq's own `logging` feature stays off (it would print CONNECT bytes).

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct Logger {
    level: LevelFilter,
    client_id: String,
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
        // A failed write to stderr has nowhere better to be reported.
        let _ = writeln!(
            std::io::stderr().lock(),
            "{now} {:<5} [{}] {}",
            record.level(),
            self.client_id,
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Installs the logger; every line carries `client_id`.
pub fn init(level: LevelFilter, client_id: &str) {
    let logger = Logger {
        level,
        client_id: client_id.to_owned(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
