//! The retention policy's pass of a collection: untagged manifests of registries whose policy is enabled, purged
//! once `moat_model::retention` says so, each in a write transaction that re-reads its facts (a tag pushed in the
//! meantime keeps it) and records ACR's `Purge` audit event with it. What the manifest referenced is queued for
//! review by the delete trigger, so its links and bytes go with the collector's grace period like any others.

use super::review::{self, Key};
use super::Removed;
use crate::error::Result;
use crate::meta::Conn;
use moat_model::audit::{AuditEvent, Category};
use moat_model::gc::Kind;
use moat_model::retention;
use moat_model::RegistrySettings;

/// A registry whose retention policy is enabled.
pub(crate) struct Target {
    pub registry_id: String,
    pub days: i64,
    /// When the policy was enabled (unix seconds): what was untagged before is not its business.
    pub enabled_at: f64,
}

/// Unix seconds of a stored time (RFC 3339); `None` when it does not parse.
pub(crate) fn epoch(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// Every registry with an enabled policy, read from the stored settings.
pub(crate) async fn targets(conn: &mut Conn) -> Result<Vec<Target>> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, settings FROM registries")
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(registry_id, settings)| {
            let s: RegistrySettings = serde_json::from_str(&settings).ok()?;
            let p = s.policies.retention;
            p.status.is_enabled().then(|| Target {
                registry_id,
                days: p.days,
                // A policy stored enabled without a time (written by hand): from the epoch, as ACR's rule
                // cannot be applied to it otherwise.
                enabled_at: p
                    .last_updated_time
                    .as_deref()
                    .and_then(epoch)
                    .unwrap_or(0.0),
            })
        })
        .collect())
}

/// When an untagged manifest became untagged: the tag trigger's time, or its push.
async fn untagged_since(conn: &mut Conn, key: &Key) -> Result<Option<f64>> {
    let row: Option<(Option<f64>, String)> = sqlx::query_as(
        "SELECT untagged_at, created_at FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
    )
    .bind(&key.registry_id)
    .bind(&key.repository)
    .bind(&key.digest)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(at, created)| at.or_else(|| epoch(&created))))
}

/// The untagged manifests of a registry that no index of their repository lists: the policy's candidates.
pub(crate) async fn candidates(conn: &mut Conn, registry_id: &str) -> Result<Vec<Key>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.repository, m.digest FROM manifests m
         WHERE m.registry_id = $1
           AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.registry_id = m.registry_id
                           AND t.repository = m.repository AND t.digest = m.digest)
           AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.registry_id = m.registry_id
                           AND r.repository = m.repository AND r.child = m.digest AND r.kind = 'manifest')
         ORDER BY m.repository, m.digest",
    )
    .bind(registry_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(repository, digest)| Key {
            kind: Kind::Manifest,
            registry_id: registry_id.to_string(),
            repository,
            digest,
        })
        .collect())
}

/// Judges one candidate with the model's rule, in the caller's transaction. `Some(size)` when it is purged.
pub(crate) async fn judge(
    conn: &mut Conn,
    target: &Target,
    key: &Key,
    now: f64,
) -> Result<Option<i64>> {
    let Some((facts, size)) = review::manifest_facts(conn, key).await? else {
        return Ok(None);
    };
    let Some(since) = untagged_since(conn, key).await? else {
        return Ok(None);
    };
    Ok(
        retention::retention_purges(facts, since, target.enabled_at, now, target.days)
            .then_some(size),
    )
}

/// Purges one candidate if the rule still says so, with its audit event, in the caller's write transaction.
pub(crate) async fn purge(
    tx: &mut Conn,
    target: &Target,
    key: &Key,
    now: f64,
) -> Result<Option<Removed>> {
    let Some(size) = judge(tx, target, key, now).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3")
        .bind(&key.registry_id)
        .bind(&key.repository)
        .bind(&key.digest)
        .execute(&mut *tx)
        .await?;
    let (registry, login_server) = review::registry_name(tx, &key.registry_id).await?;
    let event = purge_event(
        &registry,
        &login_server,
        key,
        Some(size),
        None,
        format!("200: retention policy: untagged for {} day(s)", target.days),
    );
    crate::meta::audit::insert_event(tx, &event).await?;
    Ok(Some(Removed::Manifest {
        registry,
        repository: key.repository.clone(),
        digest: key.digest.clone(),
        size,
    }))
}

/// ACR's `Purge` event for what a policy removed.
pub(crate) fn purge_event(
    registry: &str,
    login_server: &str,
    key: &Key,
    size: Option<i64>,
    tag: Option<&str>,
    why: String,
) -> AuditEvent {
    AuditEvent {
        time_generated: crate::time_fmt::now(),
        category: Category::ContainerRegistryRepositoryEvents.as_str().into(),
        operation_name: "Purge".into(),
        registry: registry.into(),
        login_server: login_server.into(),
        repository: Some(key.repository.clone()),
        tag: tag.map(str::to_string),
        digest: Some(key.digest.clone()),
        size,
        identity: Some("moat-gc".into()),
        result_type: "Success".into(),
        result_description: why,
        ..AuditEvent::default()
    }
}
