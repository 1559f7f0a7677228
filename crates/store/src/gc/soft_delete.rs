//! The soft-delete policy's pass of a collection: kept manifests and tags whose time is up are purged for good,
//! judged with each registry's current `retentionDays` (ACR: changing the days changes when what is kept goes;
//! disabling the policy does not stop the purge). A purged manifest's delete trigger queues what it referenced for
//! review, so its links and bytes go with the grace period like any others. Each purge is audited as `Purge`.

use super::retention::purge_event;
use super::review::{self, Key};
use super::Removed;
use crate::error::Result;
use crate::meta::Conn;
use moat_model::gc::Kind;
use moat_model::retention::{soft_delete_expired, DAY_SECS};
use moat_model::RegistrySettings;

/// A kept item whose time may be up.
pub(crate) enum Item {
    Manifest(Key),
    Tag(Key, String),
}

/// Every kept manifest and tag that has expired at `now`, with its registry's current retention days.
pub(crate) async fn expired(conn: &mut Conn, now: f64) -> Result<Vec<(Item, i64)>> {
    let registries: Vec<(String, String)> = sqlx::query_as("SELECT id, settings FROM registries")
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::new();
    for (registry_id, settings) in registries {
        let Ok(s) = serde_json::from_str::<RegistrySettings>(&settings) else {
            continue;
        };
        let days = s.policies.soft_delete.retention_days;
        let cutoff = now - days as f64 * DAY_SECS;
        let manifests: Vec<(String, String)> = sqlx::query_as(
            "SELECT repository, digest FROM deleted_manifests WHERE registry_id = $1 AND deleted_at <= $2",
        )
        .bind(&registry_id)
        .bind(cutoff)
        .fetch_all(&mut *conn)
        .await?;
        let key = |repository: String, digest: String| Key {
            kind: Kind::Manifest,
            registry_id: registry_id.clone(),
            repository,
            digest,
        };
        for (repository, digest) in manifests {
            out.push((Item::Manifest(key(repository, digest)), days));
        }
        let tags: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT repository, tag, digest FROM deleted_tags WHERE registry_id = $1 AND deleted_at <= $2",
        )
        .bind(&registry_id)
        .bind(cutoff)
        .fetch_all(&mut *conn)
        .await?;
        for (repository, tag, digest) in tags {
            out.push((Item::Tag(key(repository, digest), tag), days));
        }
    }
    Ok(out)
}

/// Purges one kept item if its time is still up (a restore in the meantime removed it), with its audit event.
pub(crate) async fn purge(
    tx: &mut Conn,
    item: &Item,
    days: i64,
    now: f64,
    dry_run: bool,
) -> Result<Option<Removed>> {
    let (key, tag) = match item {
        Item::Manifest(k) => (k, None),
        Item::Tag(k, t) => (k, Some(t.as_str())),
    };
    let row: Option<(f64, i64)> = match tag {
        None => sqlx::query_as(
            "SELECT deleted_at, size FROM deleted_manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(&key.registry_id)
        .bind(&key.repository)
        .bind(&key.digest)
        .fetch_optional(&mut *tx)
        .await?,
        Some(t) => sqlx::query_as(
            "SELECT deleted_at, 0 FROM deleted_tags WHERE registry_id = $1 AND repository = $2 AND digest = $3
             AND tag = $4",
        )
        .bind(&key.registry_id)
        .bind(&key.repository)
        .bind(&key.digest)
        .bind(t)
        .fetch_optional(&mut *tx)
        .await?,
    };
    let Some((deleted_at, size)) = row else {
        return Ok(None);
    };
    if !soft_delete_expired(deleted_at, now, days) {
        return Ok(None);
    }
    let (registry, login_server) = review::registry_name(tx, &key.registry_id).await?;
    let removed = match tag {
        None => Removed::Manifest {
            registry: registry.clone(),
            repository: key.repository.clone(),
            digest: key.digest.clone(),
            size,
        },
        Some(t) => Removed::Tag {
            registry: registry.clone(),
            repository: key.repository.clone(),
            tag: t.to_string(),
            digest: key.digest.clone(),
        },
    };
    if dry_run {
        return Ok(Some(removed));
    }
    match tag {
        None => {
            sqlx::query(
                "DELETE FROM deleted_manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
            )
            .bind(&key.registry_id)
            .bind(&key.repository)
            .bind(&key.digest)
            .execute(&mut *tx)
            .await?;
        }
        Some(t) => {
            sqlx::query(
                "DELETE FROM deleted_tags WHERE registry_id = $1 AND repository = $2 AND digest = $3 AND tag = $4",
            )
            .bind(&key.registry_id)
            .bind(&key.repository)
            .bind(&key.digest)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
    }
    let event = purge_event(
        &registry,
        &login_server,
        key,
        tag.is_none().then_some(size),
        tag,
        format!("200: soft delete policy: deleted more than {days} day(s) ago"),
    );
    crate::meta::audit::insert_event(tx, &event).await?;
    Ok(Some(removed))
}
