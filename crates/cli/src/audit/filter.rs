//! What a person types after `moat audit` turned into the store's filters. Every value is read in any case;
//! a value that names nothing the logs can hold is an error that lists what it could be, so a typo never
//! prints an empty, reassuring table.

use super::Log;
use anyhow::bail;
use moat_model::activity::{canonical_operation_name, ActivityStatus};
use moat_model::audit::{Operation, ResultType};
use moat_store::meta::{ActivityFilter, AuditFilter};
use moat_store::MetadataStore;

/// What `moat audit` was asked for, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct Asked {
    pub log: Option<Log>,
    pub registry: Option<String>,
    pub repository: Option<String>,
    /// Data-plane events only.
    pub identity: Option<String>,
    pub operation: Option<String>,
    pub result: Option<String>,
    /// Stored time form (see `time_fmt`).
    pub since: Option<String>,
    pub until: Option<String>,
}

/// The filters of the logs to read; `None` for a log the request excludes.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub data: Option<AuditFilter>,
    pub activity: Option<ActivityFilter>,
}

/// Which log a value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Data,
    Activity,
}

const STATUSES: [ActivityStatus; 3] = [
    ActivityStatus::Started,
    ActivityStatus::Succeeded,
    ActivityStatus::Failed,
];

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> String {
    all.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", ")
}

/// An operation name in the spelling the logs store, and the log that holds it.
async fn operation(meta: &MetadataStore, asked: &str) -> anyhow::Result<(Side, String)> {
    if let Some(op) = Operation::parse(asked) {
        return Ok((Side::Data, op.as_str().to_string()));
    }
    if let Some(op) = canonical_operation_name(asked) {
        return Ok((Side::Activity, op));
    }
    // Names an earlier version recorded (`Connect`, `Authenticate`, …) still select their rows.
    let stored = meta.audit_operation_names().await?;
    if let Some(name) = stored.iter().find(|n| n.eq_ignore_ascii_case(asked.trim())) {
        return Ok((Side::Data, name.clone()));
    }
    let recorded = meta.activity_operation_names().await?;
    bail!(
        "unknown operation '{asked}': use a data-plane operation ({}) or a management operation ({}), in any case",
        names(&Operation::ALL, Operation::as_str),
        if recorded.is_empty() {
            "e.g. Microsoft.ContainerRegistry/registries/write".to_string()
        } else {
            format!("recorded so far: {}", recorded.join(", "))
        }
    )
}

fn result(asked: &str) -> anyhow::Result<(Side, String)> {
    if let Some(r) = ResultType::parse(asked) {
        return Ok((Side::Data, r.as_str().to_string()));
    }
    if let Some(s) = STATUSES
        .iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(asked.trim()))
    {
        return Ok((Side::Activity, s.as_str().to_string()));
    }
    bail!(
        "unknown result '{asked}': use {} (data-plane events) or {} (activity log), in any case",
        names(&ResultType::ALL, ResultType::as_str),
        names(&STATUSES, ActivityStatus::as_str)
    )
}

/// A registry that exists, or whose trail the logs still hold (it was deleted), in its stored (lower-case) form.
async fn registry(meta: &MetadataStore, asked: &str) -> anyhow::Result<String> {
    let name = asked.trim().to_ascii_lowercase();
    let registries = meta.list_registries().await?;
    if registries.iter().any(|r| r.name == name) || meta.logs_mention_registry(&name).await? {
        return Ok(name);
    }
    let mut known: Vec<&str> = registries.iter().map(|r| r.name.as_str()).collect();
    known.sort_unstable();
    bail!(
        "no registry '{asked}' and no event of one: the registries are {}",
        known.join(", ")
    )
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Data => "data-plane events (--log data)",
        Side::Activity => "the activity log (--log activity)",
    }
}

/// Checks every value and says which logs can match.
pub async fn resolve(meta: &MetadataStore, asked: &Asked) -> anyhow::Result<Filters> {
    let log = asked.log.unwrap_or(Log::All);
    let mut wanted: Vec<(&str, Side)> = Vec::new();
    let operation = match &asked.operation {
        Some(o) => {
            let (side, name) = operation(meta, o).await?;
            wanted.push(("--operation", side));
            Some(name)
        }
        None => None,
    };
    let result = match &asked.result {
        Some(r) => {
            let (side, name) = result(r)?;
            wanted.push(("--result", side));
            Some(name)
        }
        None => None,
    };
    // Activity records name resources, not repositories.
    if asked.repository.is_some() {
        wanted.push(("--repository", Side::Data));
    }
    if asked.identity.is_some() {
        wanted.push(("--identity", Side::Data));
    }
    let registry = match &asked.registry {
        Some(r) => Some(registry(meta, r).await?),
        None => None,
    };
    for pair in wanted.windows(2) {
        let ((a, sa), (b, sb)) = (pair[0], pair[1]);
        if sa != sb {
            bail!(
                "{a} selects {} and {b} {}: no row can match both; drop one of them",
                side_name(sa),
                side_name(sb)
            );
        }
    }
    let only = wanted.first().map(|(flag, side)| (*flag, *side));
    let reads = |side: Side| {
        let by_log = match log {
            Log::All => true,
            Log::Data => side == Side::Data,
            Log::Activity => side == Side::Activity,
        };
        by_log && only.is_none_or(|(_, s)| s == side)
    };
    if let Some((flag, side)) = only.filter(|(_, side)| !reads(*side)) {
        bail!(
            "{flag} selects {} but --log is {}: use --log {} or --log all",
            side_name(side),
            match log {
                Log::Data => "data",
                Log::Activity => "activity",
                Log::All => "all",
            },
            match side {
                Side::Data => "data",
                Side::Activity => "activity",
            }
        );
    }
    Ok(Filters {
        data: reads(Side::Data).then(|| AuditFilter {
            registry: registry.clone(),
            repository: asked.repository.clone(),
            identity: asked.identity.clone(),
            operation: operation.clone(),
            result: result.clone(),
            since: asked.since.clone(),
            until: asked.until.clone(),
            ..Default::default()
        }),
        activity: reads(Side::Activity).then(|| ActivityFilter {
            registry,
            operation,
            status: result,
            since: asked.since.clone(),
            until: asked.until.clone(),
            ..Default::default()
        }),
    })
}
