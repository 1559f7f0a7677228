//! Azure Monitor alerts as Moat serves them: action groups (webhook receivers only), metric alert rules with static
//! thresholds, activity-log alert rules; how a rule is evaluated; and Azure's common alert schema that a firing
//! alert posts. Pure: the server stores rules, reads metric points and the activity log, and delivers payloads.

pub mod activity_rule;
pub mod evaluate;
pub mod metric_rule;
pub mod rules;
pub mod schema;

pub use activity_rule::{parse_activity_log_alert, ActivityLeaf, ActivityLogAlert};
pub use evaluate::{evaluate_criterion, DimensionKey, PointView};
pub use metric_rule::{parse_metric_alert, DimensionFilter, MetricAlert, MetricCriterion};
pub use rules::{parse_action_group, redact_uri, ActionGroup, RuleAction, WebhookReceiver};

/// Why a rule or an action group was refused. `code` is the ARM error code, `target` the property at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AlertError {
    pub code: &'static str,
    pub message: String,
    pub target: Option<String>,
}

impl AlertError {
    pub fn new(code: &'static str, message: impl Into<String>) -> AlertError {
        AlertError {
            code,
            message: message.into(),
            target: None,
        }
    }

    pub fn at(mut self, target: impl Into<String>) -> AlertError {
        self.target = Some(target.into());
        self
    }
}

/// The three resource types, by their ARM type segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    ActionGroup,
    MetricAlert,
    ActivityLogAlert,
}

impl AlertKind {
    /// The (lower-case) path segment.
    pub fn from_segment(s: &str) -> Option<AlertKind> {
        match s.to_ascii_lowercase().as_str() {
            "actiongroups" => Some(AlertKind::ActionGroup),
            "metricalerts" => Some(AlertKind::MetricAlert),
            "activitylogalerts" => Some(AlertKind::ActivityLogAlert),
            _ => None,
        }
    }

    /// ARM's type segment as Azure spells it.
    pub fn segment(self) -> &'static str {
        match self {
            AlertKind::ActionGroup => "actionGroups",
            AlertKind::MetricAlert => "metricAlerts",
            AlertKind::ActivityLogAlert => "activityLogAlerts",
        }
    }

    /// The resource's `type`.
    pub fn arm_type(self) -> &'static str {
        match self {
            AlertKind::ActionGroup => "Microsoft.Insights/ActionGroups",
            AlertKind::MetricAlert => "Microsoft.Insights/metricAlerts",
            AlertKind::ActivityLogAlert => "Microsoft.Insights/ActivityLogAlerts",
        }
    }

    /// What the store calls it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ActionGroup => "actionGroup",
            AlertKind::MetricAlert => "metricAlert",
            AlertKind::ActivityLogAlert => "activityLogAlert",
        }
    }
}

/// Seconds of an ISO 8601 duration as Azure writes them (`PT5M`, `PT1H`, `P1D`, `PT30S`); `None` when malformed.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_uppercase();
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut secs: i64 = 0;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut num = String::new();
        let mut unit_idx = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let pos = units[unit_idx..].iter().position(|(u, _)| *u == c)? + unit_idx;
            let n: i64 = num.parse().ok()?;
            secs = secs.checked_add(n.checked_mul(units[pos].1)?)?;
            num.clear();
            unit_idx = pos + 1;
            any = true;
        }
        num.is_empty().then_some(())
    };
    take(date, &[('W', 7 * 86400), ('D', 86400)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        take(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    any.then_some(secs)
}

/// Azure's spelling of a duration in seconds (`PT5M`, `PT1H`, `P1D`).
pub fn format_duration(secs: i64) -> String {
    if secs > 0 && secs % 86400 == 0 {
        return format!("P{}D", secs / 86400);
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out += &format!("{h}H");
    }
    if m > 0 {
        out += &format!("{m}M");
    }
    if s > 0 || out == "PT" {
        out += &format!("{s}S");
    }
    out
}

/// The window sizes Azure accepts for a metric alert.
pub const WINDOW_SIZES: [i64; 8] = [60, 300, 900, 1800, 3600, 6 * 3600, 12 * 3600, 86400];
/// The evaluation frequencies Azure accepts.
pub const FREQUENCIES: [i64; 5] = [60, 300, 900, 1800, 3600];

/// The metrics a rule may name and their dimensions: the registry's metric definitions
/// (`az monitor metrics list-definitions`).
pub fn metric_dimensions(metric: &str) -> Option<(&'static str, &'static [&'static str])> {
    super::metric::find(metric).map(|d| (d.name, d.dimensions))
}

/// The namespace of every registry metric.
pub const METRIC_NAMESPACE: &str = "Microsoft.ContainerRegistry/registries";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_azure_writes_parse_and_round_trip() {
        for (s, n) in [
            ("PT1M", 60),
            ("PT5M", 300),
            ("PT1H", 3600),
            ("P1D", 86400),
            ("PT30S", 30),
            ("PT1H30M", 5400),
        ] {
            assert_eq!(parse_duration(s), Some(n), "{s}");
            assert_eq!(parse_duration(&format_duration(n)), Some(n));
        }
        assert_eq!(format_duration(300), "PT5M");
        assert_eq!(format_duration(86400), "P1D");
        for bad in ["", "P", "PT", "5M", "PTM", "PT5", "PT5X", "PT1M1H", "P1DT"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn metric_names_are_the_definitions_in_any_case() {
        assert_eq!(metric_dimensions("pulledbytes").unwrap().0, "PulledBytes");
        assert_eq!(
            metric_dimensions("PulledBytes").unwrap().1,
            &["Identity", "Repository"]
        );
        assert!(metric_dimensions("CpuPercent").is_none());
    }
}
