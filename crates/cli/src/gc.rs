//! `moat gc`: garbage collection now. It asks the server that serves the data directory (through its admin
//! socket, see `moat_server::gc`), which knows the uploads in flight and shares its writer with the pushes it
//! serves; with no server it collects on the data directory itself.

use super::{emit, Common, Output};
use anyhow::{bail, Context};
use moat_server::gc::{GcLine, GcRequest};
use moat_server::ServeConfig;
use moat_store::gc::{GcOptions, GcSummary, Removed, StoredIn};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds an item waits once nothing needs it; 0 removes all that nothing needs now (default: the server's
    /// --gc-grace-secs, or 86400 when no server runs).
    #[arg(long, value_name = "SECS")]
    pub grace: Option<u64>,
    /// Upload sessions idle this many seconds are abandoned (default: the server's --upload-ttl-secs, or 86400).
    #[arg(long, value_name = "SECS")]
    pub upload_ttl_secs: Option<u64>,
    /// Skip the walk of the blob directory for files no row knows (the slow part on a large store).
    #[arg(long)]
    pub no_sweep: bool,
    /// Judge the ages of the retention and soft-delete policies (counted in days) as if this many days later.
    /// For tests of those policies; the grace period is not shifted.
    #[arg(long, value_name = "DAYS", default_value_t = 0)]
    pub days_later: u32,
    /// `table`: one line per removal and a total; `json`: one JSON object per line, the last one the summary.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub async fn run(args: GcArgs, config: ServeConfig) -> anyhow::Result<()> {
    // The rule of every operator command: an existing data directory, never a new one.
    moat_server::operator::existing(&config)?;
    let req = GcRequest {
        dry_run: args.dry_run,
        grace_secs: args.grace,
        upload_ttl_secs: args.upload_ttl_secs,
        sweep_files: !args.no_sweep,
        days_later: args.days_later,
    };
    let printer = Printer {
        output: args.output,
        dry_run: args.dry_run,
    };
    let socket = moat_server::gc::socket_path(&config.data_dir);
    match tokio::net::UnixStream::connect(&socket).await {
        Ok(stream) => remote(stream, &req, &printer).await,
        Err(_) => local(&config, &req, &printer).await,
    }
}

async fn remote(
    stream: tokio::net::UnixStream,
    req: &GcRequest,
    printer: &Printer,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(l) = lines.next_line().await? {
        match serde_json::from_str::<GcLine>(&l)
            .with_context(|| format!("unexpected answer from the server: {l}"))?
        {
            GcLine::Removed(r) => printer.removed(&r),
            GcLine::Summary(s) => {
                printer.summary(&s);
                return Ok(());
            }
            GcLine::Error(e) => bail!("garbage collection failed in the server: {e}"),
        }
    }
    bail!("the server closed the admin socket before it finished: see its log")
}

async fn local(config: &ServeConfig, req: &GcRequest, printer: &Printer) -> anyhow::Result<()> {
    let meta = moat_server::listener::open_store(config).await?;
    // No server runs (it would have taken the request): nothing of this host listens that the check must refuse
    // besides what the operator's rules say.
    let outbound = moat_outbound::Outbound::new(config.outbound.clone(), Arc::new(Vec::new));
    let blobs = moat_server::storage::open_blobs(config, outbound)?;
    let day = Duration::from_secs(24 * 3600);
    let opts = GcOptions {
        grace: req.grace_secs.map(Duration::from_secs).unwrap_or(day),
        dry_run: req.dry_run,
        upload_ttl: req.upload_ttl_secs.map(Duration::from_secs).unwrap_or(day),
        // No server shares the writer: as fast as it goes.
        share: None,
        sweep_files: req.sweep_files,
        clock_offset: moat_server::gc::days(req.days_later),
    };
    let summary =
        moat_server::gc::run_local(meta, blobs, &opts, &mut |r| printer.removed(r)).await?;
    printer.summary(&summary);
    Ok(())
}

struct Printer {
    output: Output,
    dry_run: bool,
}

impl Printer {
    fn removed(&self, r: &Removed) {
        if self.output == Output::Json {
            emit(format_args!(
                "{}",
                serde_json::to_string(r).expect("serialisable")
            ));
            return;
        }
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let esc = moat_model::text::escape;
        let line = match r {
            Removed::Manifest {
                registry,
                repository,
                digest,
                size,
            } => format!(
                "manifest {}/{}@{} ({size} bytes, in the database)",
                esc(registry),
                esc(repository),
                esc(digest)
            ),
            Removed::Link {
                registry,
                repository,
                digest,
            } => format!(
                "link     {}/{}@{}",
                esc(registry),
                esc(repository),
                esc(digest)
            ),
            Removed::Tag {
                registry,
                repository,
                tag,
                digest,
            } => format!(
                "tag      {}/{}:{} (soft-deleted, was {})",
                esc(registry),
                esc(repository),
                esc(tag),
                esc(digest)
            ),
            Removed::Blob {
                digest,
                size,
                stored,
            } => format!(
                "blob     {} ({size} bytes, {})",
                esc(digest),
                match stored {
                    StoredIn::File => "a file",
                    StoredIn::Database => "in the database",
                    StoredIn::Nowhere => "missing already",
                }
            ),
            Removed::Upload {
                id,
                registry,
                repository,
                size,
            } => format!(
                "upload   {} to {}/{} ({size} bytes, abandoned)",
                esc(id),
                esc(registry),
                esc(repository)
            ),
            Removed::OrphanFile { digest, size } => {
                format!("file     {} ({size} bytes, no row knows it)", esc(digest))
            }
            Removed::OrphanUpload { id, size } => {
                format!("upload   {} ({size} bytes, no session owns it)", esc(id))
            }
        };
        emit(format_args!("{verb} {line}"));
    }

    fn summary(&self, s: &GcSummary) {
        if self.output == Output::Json {
            let mut v = serde_json::to_value(s).expect("serialisable");
            v["kind"] = "summary".into();
            emit(format_args!("{v}"));
            return;
        }
        let counts: Vec<String> = s
            .removed
            .iter()
            .map(|(kind, n)| format!("{n} {kind}{}", if *n == 1 { "" } else { "s" }))
            .collect();
        let what = if counts.is_empty() {
            "nothing to remove".to_string()
        } else {
            counts.join(", ")
        };
        emit(format_args!(
            "{} {} bytes: {what} ({} ms)",
            if s.dry_run {
                "would reclaim"
            } else {
                "reclaimed"
            },
            s.reclaimed_bytes,
            s.duration_ms
        ));
    }
}
