//! Lines the server writes for its operator outside tracing (where it listens, where the admin password is, that it
//! is shutting down). With `--log-format json` they are JSON objects shaped like the tracing lines (`timestamp`,
//! `level`, `target`, `message`), so that every line on stderr parses.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Called once at start by the binary, with the log format it chose.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes `message` on stderr: as it is, or as one JSON object.
pub fn say(message: impl std::fmt::Display) {
    say_at("INFO", message)
}

/// [`say`] at `level` (`INFO`, `ERROR`).
pub fn say_at(level: &str, message: impl std::fmt::Display) {
    if json() {
        let line = serde_json::json!({
            "timestamp": moat_store::time_fmt::now(),
            "level": level,
            "target": "moat",
            "message": message.to_string(),
        });
        eprintln!("{line}");
    } else {
        eprintln!("{message}");
    }
}
