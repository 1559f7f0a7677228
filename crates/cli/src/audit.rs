//! `moat audit`: the data-plane events and the activity log (management changes and refusals) of a data
//! directory. Stored text may carry what a client sent, so every cell of the table is printed with its control
//! characters escaped; JSON output is exact (JSON escaping makes any text inert).

use moat_model::activity::ActivityEvent;
use moat_model::audit::AuditEvent;
use moat_model::text::escape;
use moat_store::meta::{ActivityFilter, AuditFilter};
use moat_store::MetadataStore;

/// Which log `moat audit` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Log {
    /// Data-plane events: pushes, pulls, logins, denials (ACR's repository and login events).
    Data,
    /// The activity log: management changes and refused management requests.
    Activity,
    /// Both, in time order.
    All,
}

/// One row of either log.
pub enum Row {
    Data(AuditEvent),
    Activity(ActivityEvent),
}

impl Row {
    fn time(&self) -> &str {
        match self {
            Row::Data(e) => &e.time_generated,
            Row::Activity(e) => &e.time,
        }
    }

    /// The row's JSON: each log keeps its own field names (ACR's columns, the Activity Log's fields).
    pub fn json(&self) -> serde_json::Result<String> {
        match self {
            Row::Data(e) => serde_json::to_string(e),
            Row::Activity(e) => serde_json::to_string(e),
        }
    }

    /// The table cells: time, log, result, operation, resource, caller, caller address, status, detail.
    fn cells(&self) -> [String; 9] {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        match self {
            Row::Data(e) => [
                e.time_generated.clone(),
                "data".into(),
                e.result_type.clone(),
                e.operation_name.clone(),
                opt(&e.repository),
                opt(&e.identity),
                opt(&e.caller_ip_address),
                e.result_description.clone(),
                e.tag
                    .clone()
                    .or(e.digest.clone())
                    .unwrap_or_else(|| "-".into()),
            ],
            Row::Activity(e) => [
                e.time.clone(),
                "activity".into(),
                e.status.as_str().into(),
                e.operation_name.clone(),
                e.resource_id.clone(),
                e.caller.clone(),
                e.caller_ip_address.clone(),
                format!("{} {}", e.http_status_code, e.sub_status),
                format!("correlation {}", e.correlation_id),
            ],
        }
    }
}

pub const HEADER: [&str; 9] = [
    "TIME",
    "LOG",
    "RESULT",
    "OPERATION",
    "RESOURCE",
    "CALLER",
    "CALLER IP",
    "STATUS",
    "DETAIL",
];

/// One table line; every cell escaped, so no stored text can end the line or drive the terminal.
pub fn table_line(cells: &[String]) -> String {
    let widths = [27, 8, 9, 12, 24, 12, 15, 8];
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        let c = escape(c);
        match widths.get(i) {
            Some(w) => line.push_str(&format!("{c:<w$} ")),
            None => line.push_str(&c),
        }
    }
    line.trim_end().to_string()
}

pub fn render_row(row: &Row) -> String {
    table_line(&row.cells())
}

/// The rows `filter` selects from `log`, oldest first.
pub async fn rows(
    meta: &MetadataStore,
    log: Log,
    filter: &AuditFilter,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    if log != Log::Activity {
        rows.extend(meta.audit_events(filter).await?.into_iter().map(Row::Data));
    }
    // Activity rows name resources, not repositories: a repository filter selects data events only.
    if log != Log::Data && filter.repository.is_none() {
        let f = ActivityFilter {
            registry: filter.registry.clone(),
            operation: filter.operation.clone(),
            since: filter.since.clone(),
            until: filter.until.clone(),
            limit: filter.limit,
        };
        rows.extend(
            meta.activity_events(&f)
                .await?
                .into_iter()
                .map(Row::Activity),
        );
    }
    // Both logs are in commit order and share one time format; a stable sort keeps ties in that order.
    rows.sort_by(|a, b| a.time().cmp(b.time()));
    if let Some(limit) = filter.limit.filter(|l| *l >= 0) {
        rows.truncate(limit as usize);
    }
    Ok(rows)
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
            result_description: "401 bad alg 'x\n2026-01-01T00:00:01Z Success Pull\x1b[2J'".into(),
            user_agent: Some("ua\r\x1b]0;t\x07".into()),
            ..Default::default()
        };
        let line = render_row(&Row::Data(e));
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
