//! Metric points (migration 0022): one-minute aggregates per (registry, metric, dimensions), folded from the audit
//! log by the `metrics` consumer, read by the Azure Monitor metrics API, metric alerts and the metrics archive.

use super::MetadataStore;
use crate::error::Result;
use sqlx::Row;

/// One metric's aggregate over one minute (for `StorageUsed`, one hour) of one registry.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoint {
    pub metric: String,
    /// (name, value) pairs sorted by name; empty for a metric without dimensions.
    pub dimensions: Vec<(String, String)>,
    /// Unix seconds, the start of the minute.
    pub minute: i64,
    pub count: i64,
    pub total: f64,
    pub minimum: f64,
    pub maximum: f64,
}

impl MetricPoint {
    /// A point of one sample `value`.
    pub fn sample(
        metric: &str,
        dimensions: Vec<(String, String)>,
        minute: i64,
        value: f64,
    ) -> MetricPoint {
        MetricPoint {
            metric: metric.to_string(),
            dimensions,
            minute,
            count: 1,
            total: value,
            minimum: value,
            maximum: value,
        }
    }

    /// Folds another point of the same series and minute into this one.
    pub fn merge(&mut self, other: &MetricPoint) {
        self.count += other.count;
        self.total += other.total;
        self.minimum = self.minimum.min(other.minimum);
        self.maximum = self.maximum.max(other.maximum);
    }
}

fn dims_json(dims: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = dims.iter().collect();
    sorted.sort();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "[]".into())
}

fn dims_of(text: &str) -> Vec<(String, String)> {
    serde_json::from_str(text).unwrap_or_default()
}

async fn series_id(
    conn: &mut crate::meta::Conn,
    registry: &str,
    metric: &str,
    dims: &str,
) -> Result<i64> {
    if let Some(id) = sqlx::query_scalar(
        "SELECT id FROM metric_series WHERE registry = $1 AND metric = $2 AND dimensions = $3",
    )
    .bind(registry)
    .bind(metric)
    .bind(dims)
    .fetch_optional(&mut *conn)
    .await?
    {
        return Ok(id);
    }
    Ok(sqlx::query_scalar(
        "INSERT INTO metric_series(registry, metric, dimensions) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(registry)
    .bind(metric)
    .bind(dims)
    .fetch_one(&mut *conn)
    .await?)
}

/// How a stored point takes a new one: added (aggregates of events) or replaced (a sample of a level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointWrite {
    Add,
    Replace,
}

async fn write_point(
    conn: &mut crate::meta::Conn,
    registry: &str,
    p: &MetricPoint,
    how: PointWrite,
) -> Result<()> {
    let series = series_id(conn, registry, &p.metric, &dims_json(&p.dimensions)).await?;
    let sql = match how {
        PointWrite::Add => {
            "INSERT INTO metric_points(series, minute, count, total, minimum, maximum) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT(series, minute) DO UPDATE SET count = metric_points.count + excluded.count,
                 total = metric_points.total + excluded.total,
                 minimum = CASE WHEN metric_points.minimum <= excluded.minimum THEN metric_points.minimum ELSE excluded.minimum END,
                 maximum = CASE WHEN metric_points.maximum >= excluded.maximum THEN metric_points.maximum ELSE excluded.maximum END"
        }
        PointWrite::Replace => {
            "INSERT INTO metric_points(series, minute, count, total, minimum, maximum) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT(series, minute) DO UPDATE SET count = excluded.count, total = excluded.total,
                 minimum = excluded.minimum, maximum = excluded.maximum"
        }
    };
    sqlx::query(sql)
        .bind(series)
        .bind(p.minute)
        .bind(p.count)
        .bind(p.total)
        .bind(p.minimum)
        .bind(p.maximum)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl MetadataStore {
    /// Adds `points` (registry, point) to the stored aggregates and moves `consumer`'s cursor on `log` to `seq` in
    /// the same transaction: a crash before the commit takes nothing, after it takes everything, so every event
    /// is counted exactly once.
    pub async fn fold_metric_points(
        &self,
        consumer: &str,
        log: &str,
        seq: i64,
        points: &[(String, MetricPoint)],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for (registry, p) in points {
            write_point(&mut tx, &registry.to_ascii_lowercase(), p, PointWrite::Add).await?;
        }
        super::consumers::set_consumer_seq_on(&mut tx, consumer, log, None, seq).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a sampled point (`StorageUsed`), replacing the sample of the same minute.
    pub async fn put_metric_sample(&self, registry: &str, point: &MetricPoint) -> Result<()> {
        let mut conn = self.writer().acquire().await?;
        write_point(
            &mut conn,
            &registry.to_ascii_lowercase(),
            point,
            PointWrite::Replace,
        )
        .await
    }

    /// The stored points of `registry` (lower-case name), of one metric or all, whose minute is in
    /// `[from_minute, to_minute_exclusive)`, ordered by metric, series and minute.
    pub async fn metric_points(
        &self,
        registry: &str,
        metric: Option<&str>,
        from_minute: i64,
        to_minute_exclusive: i64,
    ) -> Result<Vec<MetricPoint>> {
        let rows = sqlx::query(
            "SELECT s.metric, s.dimensions, p.minute, p.count, p.total, p.minimum, p.maximum
             FROM metric_points p JOIN metric_series s ON s.id = p.series
             WHERE s.registry = $1 AND ($2 IS NULL OR s.metric = $2) AND p.minute >= $3 AND p.minute < $4
             ORDER BY s.metric, s.id, p.minute",
        )
        .bind(registry.to_ascii_lowercase())
        .bind(metric)
        .bind(from_minute)
        .bind(to_minute_exclusive)
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| MetricPoint {
                metric: r.get(0),
                dimensions: dims_of(r.get::<&str, _>(1)),
                minute: r.get(2),
                count: r.get(3),
                total: r.get(4),
                minimum: r.get(5),
                maximum: r.get(6),
            })
            .collect())
    }

    /// Durable jobs waiting or running, by kind and state (the Prometheus `moat_job_queue_depth` gauge).
    pub async fn job_queue_depths(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, state, COUNT(*) FROM jobs WHERE state IN ('queued', 'running')
             GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Deletes points older than `before_minute` and the series left without points (retention: 93 days).
    /// Returns the number of points deleted.
    pub async fn prune_metric_points(&self, before_minute: i64) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM metric_points WHERE minute < $1")
            .bind(before_minute)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            sqlx::query(
                "DELETE FROM metric_series WHERE NOT EXISTS
                     (SELECT 1 FROM metric_points p WHERE p.series = metric_series.id)",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn folds_add_per_series_and_minute_and_move_the_cursor_with_them() {
        let db = crate::testing::test_db().await;
        let meta = db.open().await;
        let a = MetricPoint::sample(
            "PulledBytes",
            dims(&[("Repository", "r"), ("Identity", "alice")]),
            60,
            10.0,
        );
        let b = MetricPoint::sample(
            "PulledBytes",
            dims(&[("Identity", "alice"), ("Repository", "r")]),
            60,
            30.0,
        );
        let c = MetricPoint::sample(
            "PulledBytes",
            dims(&[("Identity", "bob"), ("Repository", "r")]),
            120,
            5.0,
        );
        meta.fold_metric_points(
            "metrics",
            "audit",
            3,
            &[("App".into(), a), ("app".into(), b)],
        )
        .await
        .unwrap();
        meta.fold_metric_points("metrics", "audit", 4, &[("app".into(), c)])
            .await
            .unwrap();
        assert_eq!(meta.consumer_seq("metrics", "audit").await.unwrap(), 4);
        let pts = meta
            .metric_points("app", Some("PulledBytes"), 0, 180)
            .await
            .unwrap();
        assert_eq!(pts.len(), 2);
        assert_eq!(
            pts[0].dimensions,
            dims(&[("Identity", "alice"), ("Repository", "r")])
        );
        assert_eq!(
            (pts[0].count, pts[0].total, pts[0].minimum, pts[0].maximum),
            (2, 40.0, 10.0, 30.0)
        );
        assert_eq!((pts[1].minute, pts[1].total), (120, 5.0));
        assert!(meta
            .metric_points("app", Some("PulledBytes"), 61, 120)
            .await
            .unwrap()
            .is_empty());
        assert!(meta
            .metric_points("other", None, 0, 180)
            .await
            .unwrap()
            .is_empty());
        // A sample replaces the minute's previous sample.
        meta.put_metric_sample("app", &MetricPoint::sample("StorageUsed", vec![], 0, 7.0))
            .await
            .unwrap();
        meta.put_metric_sample("app", &MetricPoint::sample("StorageUsed", vec![], 0, 9.0))
            .await
            .unwrap();
        let s = meta
            .metric_points("app", Some("StorageUsed"), 0, 1)
            .await
            .unwrap();
        assert_eq!((s.len(), s[0].count, s[0].total), (1, 1, 9.0));
        assert_eq!(meta.prune_metric_points(61).await.unwrap(), 2);
        assert_eq!(
            meta.metric_points("app", None, 0, 1000)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
