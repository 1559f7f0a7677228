//! One criterion over one window of minute points: which dimension combinations meet it, with what value.
//! Every dimension a criterion names splits the series (Azure monitors each value of a split dimension as its
//! own time series): `Include ["*"]` takes every value, `Include [a, b]` only those, `Exclude [a]` all but.

use super::metric_rule::{DimensionFilter, MetricCriterion};
use std::collections::BTreeMap;

/// A dimension combination: (dimension name as the rule spells it, value), in the rule's order.
pub type DimensionKey = Vec<(String, String)>;

/// What evaluation needs of one stored minute point.
#[derive(Clone, Copy, Debug)]
pub struct PointView<'a> {
    pub metric: &'a str,
    pub dimensions: &'a [(String, String)],
    pub count: i64,
    pub total: f64,
    pub minimum: f64,
    pub maximum: f64,
}

fn value_of<'a>(p: &'a PointView, dim: &str) -> &'a str {
    p.dimensions
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(dim))
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn admitted(f: &DimensionFilter, value: &str) -> bool {
    let listed = f
        .values
        .iter()
        .any(|v| v == "*" || v.eq_ignore_ascii_case(value));
    if f.operator == "Exclude" {
        !listed
    } else {
        listed
    }
}

#[derive(Default)]
struct Acc {
    count: i64,
    total: f64,
    min: Option<f64>,
    max: Option<f64>,
}

/// The criterion's aggregate per dimension combination over `points` (already limited to its window), and
/// whether each meets the threshold. A combination without points in the window is absent.
pub fn evaluate_criterion<'a>(
    c: &MetricCriterion,
    points: impl IntoIterator<Item = PointView<'a>>,
) -> BTreeMap<DimensionKey, (f64, bool)> {
    let mut acc: BTreeMap<DimensionKey, Acc> = BTreeMap::new();
    for p in points {
        if !p.metric.eq_ignore_ascii_case(&c.metric_name) {
            continue;
        }
        let mut key = Vec::with_capacity(c.dimensions.len());
        let mut ok = true;
        for f in &c.dimensions {
            let v = value_of(&p, &f.name);
            if !admitted(f, v) {
                ok = false;
                break;
            }
            key.push((f.name.clone(), v.to_string()));
        }
        if !ok {
            continue;
        }
        let a = acc.entry(key).or_default();
        a.count += p.count;
        a.total += p.total;
        a.min = Some(a.min.map_or(p.minimum, |m| m.min(p.minimum)));
        a.max = Some(a.max.map_or(p.maximum, |m| m.max(p.maximum)));
    }
    acc.into_iter()
        .map(|(k, a)| {
            let v = match c.time_aggregation.as_str() {
                "Count" => a.count as f64,
                "Average" if a.count > 0 => a.total / a.count as f64,
                "Average" => 0.0,
                "Minimum" => a.min.unwrap_or(0.0),
                "Maximum" => a.max.unwrap_or(0.0),
                _ => a.total,
            };
            (k, (v, meets(&c.operator, v, c.threshold)))
        })
        .collect()
}

/// `value {operator} threshold`.
pub fn meets(operator: &str, value: f64, threshold: f64) -> bool {
    match operator {
        "GreaterThan" => value > threshold,
        "GreaterThanOrEqual" => value >= threshold,
        "LessThan" => value < threshold,
        "LessThanOrEqual" => value <= threshold,
        "Equals" => (value - threshold).abs() < f64::EPSILON * value.abs().max(1.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crit(agg: &str, dims: Vec<DimensionFilter>) -> MetricCriterion {
        MetricCriterion {
            name: "c".into(),
            metric_name: "PulledBytes".into(),
            operator: "GreaterThan".into(),
            threshold: 1000.0,
            time_aggregation: agg.into(),
            dimensions: dims,
        }
    }

    fn dim(op: &str, values: &[&str]) -> DimensionFilter {
        DimensionFilter {
            name: "Identity".into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn split_by_identity_sums_each_identity_over_the_window() {
        let a = vec![
            ("Identity".to_string(), "alice".to_string()),
            ("Repository".to_string(), "r1".to_string()),
        ];
        let a2 = vec![
            ("Identity".to_string(), "alice".to_string()),
            ("Repository".to_string(), "r2".to_string()),
        ];
        let b = vec![
            ("Identity".to_string(), "bob".to_string()),
            ("Repository".to_string(), "r1".to_string()),
        ];
        let pts = [
            PointView {
                metric: "PulledBytes",
                dimensions: &a,
                count: 2,
                total: 600.0,
                minimum: 100.0,
                maximum: 500.0,
            },
            PointView {
                metric: "PulledBytes",
                dimensions: &a2,
                count: 1,
                total: 700.0,
                minimum: 700.0,
                maximum: 700.0,
            },
            PointView {
                metric: "PulledBytes",
                dimensions: &b,
                count: 1,
                total: 900.0,
                minimum: 900.0,
                maximum: 900.0,
            },
            PointView {
                metric: "PushedBytes",
                dimensions: &b,
                count: 1,
                total: 9e9,
                minimum: 0.0,
                maximum: 0.0,
            },
        ];
        let r = evaluate_criterion(&crit("Total", vec![dim("Include", &["*"])]), pts);
        let alice = vec![("Identity".to_string(), "alice".to_string())];
        let bob = vec![("Identity".to_string(), "bob".to_string())];
        assert_eq!(r[&alice], (1300.0, true));
        assert_eq!(r[&bob], (900.0, false));
        let r = evaluate_criterion(&crit("Total", vec![dim("Exclude", &["ALICE"])]), pts);
        assert_eq!(r.len(), 1);
        assert!(r.contains_key(&bob));
        let r = evaluate_criterion(&crit("Total", vec![]), pts);
        assert_eq!(r[&vec![]], (2200.0, true));
        assert_eq!(
            evaluate_criterion(&crit("Maximum", vec![]), pts)[&vec![]].0,
            900.0
        );
        assert_eq!(
            evaluate_criterion(&crit("Minimum", vec![]), pts)[&vec![]].0,
            100.0
        );
        assert_eq!(
            evaluate_criterion(&crit("Count", vec![]), pts)[&vec![]].0,
            4.0
        );
        assert_eq!(
            evaluate_criterion(&crit("Average", vec![]), pts)[&vec![]].0,
            550.0
        );
    }

    #[test]
    fn operators_compare_as_named() {
        assert!(meets("GreaterThanOrEqual", 5.0, 5.0) && !meets("GreaterThan", 5.0, 5.0));
        assert!(meets("LessThan", 4.0, 5.0) && meets("LessThanOrEqual", 5.0, 5.0));
        assert!(meets("Equals", 5.0, 5.0) && !meets("Equals", 5.1, 5.0));
    }
}
