//! How `moat` writes its logs: the format (`--log-format text|json`) and, for `moat serve`, the access log
//! (`--access-log`). Both also come from the configuration file (`log_format`, `access_log`); a flag wins.

use moat_server::config::{ConfigFile, LogFormat};
use std::io::IsTerminal;
use std::path::Path;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// `time LEVEL target: message key=value …`
    Text,
    /// JSON lines: one object per line (`timestamp`, `level`, `target`, the fields, `message`).
    Json,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct LogArgs {
    /// Log one line per request (time, listener, client address, method, path with query values hidden, status,
    /// bytes, duration) on the `moat::access` target.
    #[arg(long, env = "MOAT_ACCESS_LOG")]
    pub access_log: bool,
    /// The format of every log line on stderr (default text, or the configuration file's `log_format`).
    #[arg(long, env = "MOAT_LOG_FORMAT", value_enum)]
    pub log_format: Option<FormatArg>,
}

/// What `moat serve` logs, from its flags and its configuration file (a file that does not load is reported
/// later, by the command that needs it).
pub fn settings(args: &LogArgs, config_file: Option<&Path>) -> (LogFormat, bool) {
    let file = config_file.and_then(|p| ConfigFile::load(p).ok());
    let format = match args.log_format {
        Some(FormatArg::Json) => LogFormat::Json,
        Some(FormatArg::Text) => LogFormat::Text,
        None => file.as_ref().and_then(|f| f.log_format).unwrap_or_default(),
    };
    let access = args.access_log || file.and_then(|f| f.access_log).unwrap_or(false);
    (format, access)
}

/// Installs the log writer: `MOAT_LOG`'s filter (default `warn`), plus the access log when it is on.
pub fn init(format: LogFormat, access_log: bool) {
    let mut filter = EnvFilter::try_from_env("MOAT_LOG").unwrap_or_else(|_| "warn".into());
    if access_log {
        if let Ok(d) = format!("{}=info", moat_server::access_log::TARGET).parse() {
            filter = filter.add_directive(d);
        }
    }
    moat_server::notice::set_json(format == LogFormat::Json);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
