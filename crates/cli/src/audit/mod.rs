//! `moat audit`: the data-plane events and the activity log (management changes and refusals) of a data
//! directory, for people: filters in any case that refuse what cannot match, the newest rows first, a table
//! that stays aligned, JSON lines for programs, and `--follow` to watch rows as they are written.

mod filter;
mod table;
mod verify;

pub use verify::TrailFlags;

use crate::{emit, Common, Output};
use anyhow::Context;
use filter::{Asked, Filters};
use moat_model::activity::ActivityEvent;
use moat_model::audit::AuditEvent;
use moat_store::MetadataStore;
use std::time::Duration;
use table::{Cells, Layout};

/// Which log `moat audit` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Log {
    /// Data-plane events: pushes, pulls, logins, denials (ACR's repository and login events).
    Data,
    /// The activity log: management changes and refused management requests.
    Activity,
    /// Both, merged by time.
    All,
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit trail's hash chains and check their heads and signed checkpoints: exit 0 when the
    /// trail is intact, else name the first edited, deleted or reordered record of each broken chain.
    Verify(verify::VerifyArgs),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    #[command(flatten)]
    common: Common,
    /// Only this registry's rows (any case; a deleted registry's trail is still found by its name).
    #[arg(long)]
    registry: Option<String>,
    /// Only this repository's data-plane events.
    #[arg(long)]
    repository: Option<String>,
    /// Only this identity's data-plane events (any case).
    #[arg(long)]
    identity: Option<String>,
    /// Only this operation, in any case: Login, Push, Pull, Mount, Delete, Untag, DeleteRepository,
    /// ListRepositories, ListTags, ListReferrers, ListManifests, ShowRepository, ShowTag, ShowManifest,
    /// UpdateAttributes, Import, Export (the same name whether it succeeded or was refused), or a management
    /// operation such as Microsoft.ContainerRegistry/registries/write.
    #[arg(long)]
    operation: Option<String>,
    /// Only this result, in any case: Success, Failure, Denied (data-plane events) or Started, Succeeded,
    /// Failed (activity log).
    #[arg(long)]
    result: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long, conflicts_with = "follow")]
    until: Option<String>,
    /// At most N rows: the newest N (with --oldest-first, the oldest N; with --follow, default 10).
    #[arg(long, short = 'n', value_name = "N")]
    limit: Option<u64>,
    /// Oldest rows first (default: newest first).
    #[arg(long, conflicts_with = "follow")]
    oldest_first: bool,
    /// Print the newest rows (oldest of them first), then each new row as it is written, until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Which log: data-plane events, the activity log of management changes and refusals, or both.
    #[arg(long, value_enum, default_value_t = Log::All)]
    log: Log,
    /// table: aligned columns, text escaped. json: JSON lines, one object per line (a data-plane event with
    /// ACR's column names, an activity record with the Activity Log's field names), text exactly as stored.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// One row of either log, with its place in its log.
pub enum Row {
    Data(i64, AuditEvent),
    Activity(i64, ActivityEvent),
}

impl Row {
    fn time(&self) -> &str {
        match self {
            Row::Data(_, e) => &e.time_generated,
            Row::Activity(_, e) => &e.time,
        }
    }

    /// The row's JSON: each log keeps its own field names (ACR's columns, the Activity Log's fields).
    pub fn json(&self) -> serde_json::Result<String> {
        match self {
            Row::Data(_, e) => serde_json::to_string(e),
            Row::Activity(_, e) => serde_json::to_string(e),
        }
    }

    /// The table cells, in [`table::HEADER`]'s order.
    fn cells(&self) -> Cells {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        match self {
            Row::Data(_, e) => {
                // `201`, or `403: <why>`: the status in its column, the reason with the details.
                let (status, why) = match e.result_description.split_once(':') {
                    Some((s, why)) => (s.trim().to_string(), Some(why.trim().to_string())),
                    None => (e.result_description.clone(), None),
                };
                let detail: Vec<String> = [e.tag.clone().or(e.digest.clone()), why]
                    .into_iter()
                    .flatten()
                    .collect();
                [
                    e.time_generated.clone(),
                    "data".into(),
                    e.result_type.clone(),
                    e.operation_name.clone(),
                    e.registry.clone(),
                    opt(&e.repository),
                    opt(&e.identity),
                    opt(&e.caller_ip_address),
                    opt(&e.endpoint),
                    status,
                    if detail.is_empty() {
                        "-".into()
                    } else {
                        detail.join("  ")
                    },
                ]
            }
            Row::Activity(_, e) => [
                e.time.clone(),
                "activity".into(),
                e.status.as_str().into(),
                e.operation_name.clone(),
                opt(&e.registry),
                e.resource_id.clone(),
                e.caller.clone(),
                e.caller_ip_address.clone(),
                // Operator commands act on the data directory; everything else came through the API.
                if e.caller.starts_with("local:") || e.caller.starts_with("moat:") {
                    "local".into()
                } else {
                    "managementApi".into()
                },
                e.http_status_code.to_string(),
                format!("{} correlation {}", e.sub_status, e.correlation_id),
            ],
        }
    }
}

/// The rows `filters` select, in the asked order, at most `limit` of them (the first in that order).
async fn read(
    meta: &MetadataStore,
    filters: &Filters,
    newest_first: bool,
    limit: Option<u64>,
    after: Cursor,
) -> anyhow::Result<Vec<Row>> {
    let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut rows = Vec::new();
    if let Some(f) = &filters.data {
        let mut f = f.clone();
        (f.newest_first, f.limit, f.after_seq) = (newest_first, limit, after.data);
        rows.extend(
            meta.audit_rows(&f)
                .await?
                .into_iter()
                .map(|(s, e)| Row::Data(s, e)),
        );
    }
    if let Some(f) = &filters.activity {
        let mut f = f.clone();
        (f.newest_first, f.limit, f.after_seq) = (newest_first, limit, after.activity);
        rows.extend(
            meta.activity_rows(&f)
                .await?
                .into_iter()
                .map(|(s, e)| Row::Activity(s, e)),
        );
    }
    // Each log comes in write order and both share one time format; a stable sort keeps ties in that order.
    if newest_first {
        rows.sort_by(|a, b| b.time().cmp(a.time()));
    } else {
        rows.sort_by(|a, b| a.time().cmp(b.time()));
    }
    if let Some(limit) = limit {
        rows.truncate(limit as usize);
    }
    Ok(rows)
}

/// The last row seen of each log (`--follow` reads what comes after).
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    data: Option<i64>,
    activity: Option<i64>,
}

impl Cursor {
    fn advance(&mut self, rows: &[Row]) {
        for r in rows {
            match r {
                Row::Data(s, _) => self.data = Some(self.data.unwrap_or(0).max(*s)),
                Row::Activity(s, _) => self.activity = Some(self.activity.unwrap_or(0).max(*s)),
            }
        }
    }
}

fn print(rows: &[Row], output: Output, layout: &Layout) -> anyhow::Result<()> {
    for row in rows {
        match output {
            Output::Json => emit(format_args!("{}", row.json()?)),
            Output::Table => emit(format_args!("{}", layout.line(&row.cells()))),
        }
    }
    Ok(())
}

/// `-o json` of data-plane events alone: streamed from the store in write order (newest first unless
/// `--oldest-first`), each line written from the stored form without building an event (the export path).
async fn export(
    meta: &MetadataStore,
    f: &moat_store::meta::AuditFilter,
    newest_first: bool,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let mut f = f.clone();
    f.newest_first = newest_first;
    f.limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut out = std::io::stdout().lock();
    match meta.audit_export(&f, &mut out).await {
        Ok(_) => Ok(()),
        // The reader has gone (`moat audit -o json | head`): end quietly, as `emit` does.
        Err(e) if e.to_string().contains("Broken pipe") => std::process::exit(0),
        Err(e) => Err(e.into()),
    }
}

/// How often `--follow` looks for new rows.
const POLL: Duration = Duration::from_millis(400);

pub async fn run(a: AuditArgs) -> anyhow::Result<()> {
    if let Some(AuditCommand::Verify(v)) = a.command {
        let dd = moat_server::operator::open(crate::config(&a.common)).await?;
        return verify::run(&dd.meta, &dd.config.data_dir, v).await;
    }
    let parse_time = |s: Option<String>| -> anyhow::Result<Option<String>> {
        s.map(|s| {
            moat_store::time_fmt::parse_user(&s).with_context(|| {
                format!("'{s}' is not an RFC 3339 time, e.g. 2026-11-25T08:00:00Z")
            })
        })
        .transpose()
    };
    let asked = Asked {
        log: Some(a.log),
        registry: a.registry,
        repository: a.repository,
        identity: a.identity,
        operation: a.operation,
        result: a.result,
        since: parse_time(a.since)?,
        until: parse_time(a.until)?,
    };
    let meta = moat_server::operator::open(crate::config(&a.common))
        .await?
        .meta;
    let filters = filter::resolve(&meta, &asked).await?;
    if !a.follow && a.output == Output::Json && filters.activity.is_none() {
        if let Some(f) = &filters.data {
            return export(&meta, f, !a.oldest_first, a.limit).await;
        }
    }
    if !a.follow {
        let rows = read(&meta, &filters, !a.oldest_first, a.limit, Cursor::default()).await?;
        let cells: Vec<Cells> = rows.iter().map(Row::cells).collect();
        let layout = Layout::fit(&cells);
        if a.output == Output::Table {
            emit(format_args!("{}", layout.header()));
        }
        return print(&rows, a.output, &layout);
    }
    // Rows written from now on are after these; the newest `limit` rows before them are shown first.
    let mut cursor = Cursor {
        data: Some(meta.audit_max_seq().await?),
        activity: Some(meta.activity_max_seq().await?),
    };
    let mut backlog = read(
        &meta,
        &filters,
        true,
        Some(a.limit.unwrap_or(10)),
        Cursor::default(),
    )
    .await?;
    backlog.reverse();
    cursor.advance(&backlog);
    let cells: Vec<Cells> = backlog.iter().map(Row::cells).collect();
    let layout = Layout::following(&cells);
    if a.output == Output::Table {
        emit(format_args!("{}", layout.header()));
    }
    print(&backlog, a.output, &layout)?;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(POLL) => {
                let rows = read(&meta, &filters, false, None, cursor).await?;
                cursor.advance(&rows);
                print(&rows, a.output, &layout)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_newline_or_escape_cannot_forge_a_row() {
        let e = AuditEvent {
            time_generated: "2026-01-01T00:00:00Z".into(),
            result_type: "Failure".into(),
            operation_name: "Login".into(),
            result_description: "401: bad alg 'x\n2026-01-01T00:00:01Z Success Pull\x1b[2J'".into(),
            user_agent: Some("ua\r\x1b]0;t\x07".into()),
            ..Default::default()
        };
        let cells = Row::Data(1, e).cells();
        let line = Layout::fit([&cells]).line(&cells);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            !line.chars().any(moat_model::text::is_dangerous),
            "{line:?}"
        );
        assert!(
            line.contains("\\n2026-01-01T00:00:01Z Success Pull\\x1b[2J"),
            "{line}"
        );
    }
}
