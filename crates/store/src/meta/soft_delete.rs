//! Soft delete: while a registry's `softDeletePolicy` is enabled, what a delete removes (a manifest with its
//! tags, a tag, a whole repository) is first copied to the `deleted_*` tables (migration 0014), in the same
//! transaction, so that it can be listed and restored until the collector purges it (`crate::gc`).

use super::audit::insert_event;
use super::content::set_tag;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::Conn;
use moat_model::audit::AuditEvent;
use moat_model::retention::{tag_restore, TagRestore};
use moat_model::{Digest, RegistrySettings, RepositoryName, Tag};

/// Whether the registry keeps what is deleted, read in the deleting transaction.
pub(crate) async fn enabled(conn: &mut Conn, registry_id: &str) -> Result<bool> {
    let settings: Option<String> =
        sqlx::query_scalar("SELECT settings FROM registries WHERE id = $1")
            .bind(registry_id)
            .fetch_optional(conn)
            .await?;
    Ok(settings
        .and_then(|s| serde_json::from_str::<RegistrySettings>(&s).ok())
        .is_some_and(|s| s.policies.soft_delete.status.is_enabled()))
}

/// Keeps the manifests and tags a delete is about to remove: those of the repository where `filter` (a SQL
/// condition on the alias `x`, binding nothing) holds.
async fn keep(
    conn: &mut Conn,
    registry_id: &str,
    repo: &str,
    manifests: Option<&str>,
    tag: Option<&str>,
) -> Result<()> {
    let sql_now = super::Dialect::of(conn).now_secs();
    // manifests: None = every manifest of the repository (a repository delete), Some(d) = that one; the tags
    // kept are the manifest's (or every one), or the single tag `tag`.
    let m_filter = if manifests.is_some() {
        "AND m.digest = $3"
    } else {
        ""
    };
    if manifests.is_some() || tag.is_none() {
        sqlx::query(&format!(
            "INSERT INTO deleted_manifests(registry_id, repository, digest, media_type, artifact_type, subject,
                 annotations, size, body, created_at, deleted_at)
             SELECT m.registry_id, m.repository, m.digest, m.media_type, m.artifact_type, m.subject, m.annotations,
                 m.size, m.body, m.created_at, {sql_now}
             FROM manifests m WHERE m.registry_id = $1 AND m.repository = $2 {m_filter}
             ON CONFLICT(registry_id, repository, digest) DO UPDATE SET deleted_at = excluded.deleted_at"
        ))
        .bind(registry_id)
        .bind(repo)
        .bind_some(manifests)
        .execute(&mut *conn)
        .await?;
        let r_filter = if manifests.is_some() {
            "AND r.manifest = $3"
        } else {
            ""
        };
        sqlx::query(&format!(
            "INSERT INTO deleted_manifest_references(registry_id, repository, manifest, kind, child)
             SELECT r.registry_id, r.repository, r.manifest, r.kind, r.child FROM manifest_references r
             WHERE r.registry_id = $1 AND r.repository = $2 {r_filter} ON CONFLICT DO NOTHING"
        ))
        .bind(registry_id)
        .bind(repo)
        .bind_some(manifests)
        .execute(&mut *conn)
        .await?;
    }
    let (t_filter, key) = match (tag, manifests) {
        (Some(t), _) => ("AND t.tag = $3", Some(t)),
        (None, Some(d)) => ("AND t.digest = $3", Some(d)),
        (None, None) => ("", None),
    };
    sqlx::query(&format!(
        "INSERT INTO deleted_tags(registry_id, repository, tag, digest, deleted_at)
         SELECT t.registry_id, t.repository, t.tag, t.digest, {sql_now} FROM tags t
         WHERE t.registry_id = $1 AND t.repository = $2 {t_filter}
         ON CONFLICT(registry_id, repository, tag, digest) DO UPDATE SET deleted_at = excluded.deleted_at"
    ))
    .bind(registry_id)
    .bind(repo)
    .bind_some(key)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn keep_manifest(
    conn: &mut Conn,
    registry_id: &str,
    repo: &str,
    digest: &str,
) -> Result<()> {
    keep(conn, registry_id, repo, Some(digest), None).await
}

pub(crate) async fn keep_tag(
    conn: &mut Conn,
    registry_id: &str,
    repo: &str,
    tag: &str,
) -> Result<()> {
    keep(conn, registry_id, repo, None, Some(tag)).await
}

pub(crate) async fn keep_repository(conn: &mut Conn, registry_id: &str, repo: &str) -> Result<()> {
    keep(conn, registry_id, repo, None, None).await
}

/// A kept manifest, as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct DeletedManifestRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub created_at: String,
    pub deleted_at: f64,
}

/// A kept tag, as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct DeletedTagRow {
    pub tag: String,
    pub digest: String,
    pub deleted_at: f64,
}

/// Why a restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no deleted manifest {0} in this repository")]
    NotFound(String),
    #[error("tag '{tag}' now points at {current}: restore with force to move it")]
    TagInUse { tag: String, current: String },
    #[error("the layers of {0} are no longer stored; it cannot be restored")]
    Incomplete(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RestoreError {
    fn from(e: sqlx::Error) -> Self {
        RestoreError::Store(e.into())
    }
}

impl MetadataStore {
    /// Repositories with a kept manifest or tag, by name.
    pub async fn deleted_repositories(&self, registry_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT repository FROM deleted_manifests WHERE registry_id = $1
             UNION SELECT repository FROM deleted_tags WHERE registry_id = $1 ORDER BY 1",
        )
        .bind(registry_id)
        .fetch_all(self.reader())
        .await?)
    }

    /// A repository's kept manifests, oldest deletion first.
    pub async fn deleted_manifests(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
    ) -> Result<Vec<DeletedManifestRow>> {
        let rows: Vec<(String, String, i64, String, f64)> = sqlx::query_as(
            "SELECT digest, media_type, size, created_at, deleted_at FROM deleted_manifests
             WHERE registry_id = $1 AND repository = $2 ORDER BY deleted_at, digest",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(digest, media_type, size, created_at, deleted_at)| DeletedManifestRow {
                    digest,
                    media_type,
                    size,
                    created_at,
                    deleted_at,
                },
            )
            .collect())
    }

    /// A repository's kept tags, oldest deletion first (az restores the last one listed for a tag).
    pub async fn deleted_tags(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
    ) -> Result<Vec<DeletedTagRow>> {
        let rows: Vec<(String, String, f64)> = sqlx::query_as(
            "SELECT tag, digest, deleted_at FROM deleted_tags WHERE registry_id = $1 AND repository = $2
             ORDER BY deleted_at, tag",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(tag, digest, deleted_at)| DeletedTagRow {
                tag,
                digest,
                deleted_at,
            })
            .collect())
    }

    /// Restores a kept manifest (or re-tags one that is still stored) under `tag`, with its audit event, in one
    /// transaction. A tag that now points at another manifest is moved only with `force`.
    pub async fn restore_manifest(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        digest: &Digest,
        tag: Option<&Tag>,
        force: bool,
        event: &AuditEvent,
    ) -> Result<(), RestoreError> {
        let mut tx = self.begin_write().await?;
        let key = (registry_id, repo.as_str(), digest.as_str());
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .fetch_optional(&mut *tx)
        .await?;
        let kept: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM deleted_manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .fetch_optional(&mut *tx)
        .await?;
        let tag_kept: Option<i64> = match tag {
            Some(t) => {
                sqlx::query_scalar(
                    "SELECT 1 FROM deleted_tags WHERE registry_id = $1 AND repository = $2 AND digest = $3 AND tag = $4",
                )
                .bind(key.0)
                .bind(key.1)
                .bind(key.2)
                .bind(t.as_str())
                .fetch_optional(&mut *tx)
                .await?
            }
            None => None,
        };
        if kept.is_none() && tag_kept.is_none() {
            return Err(RestoreError::NotFound(digest.to_string()));
        }
        if let Some(t) = tag {
            let current: Option<String> = sqlx::query_scalar(
                "SELECT digest FROM tags WHERE registry_id = $1 AND repository = $2 AND tag = $3",
            )
            .bind(key.0)
            .bind(key.1)
            .bind(t.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let elsewhere = current.as_deref().is_some_and(|c| c != digest.as_str());
            if tag_restore(elsewhere, force) == TagRestore::Refuse {
                return Err(RestoreError::TagInUse {
                    tag: t.to_string(),
                    current: current.unwrap_or_default(),
                });
            }
        }
        if live.is_none() {
            // Every blob it references must still be linked here (the kept references held the links).
            let missing: Option<String> = sqlx::query_scalar(
                "SELECT r.child FROM deleted_manifest_references r
                 WHERE r.registry_id = $1 AND r.repository = $2 AND r.manifest = $3 AND r.kind = 'blob'
                   AND NOT EXISTS (SELECT 1 FROM blob_links l WHERE l.registry_id = r.registry_id
                                   AND l.repository = r.repository AND l.digest = r.child)
                 LIMIT 1",
            )
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .fetch_optional(&mut *tx)
            .await?;
            if missing.is_some() {
                return Err(RestoreError::Incomplete(digest.to_string()));
            }
            sqlx::query(
                "INSERT INTO repositories(registry_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(key.0)
            .bind(key.1)
            .bind(crate::time_fmt::now())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO manifests(registry_id, repository, digest, media_type, artifact_type, subject,
                     annotations, size, body, created_at)
                 SELECT registry_id, repository, digest, media_type, artifact_type, subject, annotations, size,
                     body, created_at
                 FROM deleted_manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
            )
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO manifest_references(registry_id, repository, manifest, kind, child)
                 SELECT registry_id, repository, manifest, kind, child FROM deleted_manifest_references
                 WHERE registry_id = $1 AND repository = $2 AND manifest = $3 ON CONFLICT DO NOTHING",
            )
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "DELETE FROM deleted_manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .execute(&mut *tx)
        .await?;
        if let Some(t) = tag {
            set_tag(
                &mut tx,
                registry_id,
                repo,
                t,
                digest,
                &crate::time_fmt::now(),
            )
            .await?;
            sqlx::query(
                "DELETE FROM deleted_tags WHERE registry_id = $1 AND repository = $2 AND tag = $3 AND digest = $4",
            )
            .bind(key.0)
            .bind(key.1)
            .bind(t.as_str())
            .bind(key.2)
            .execute(&mut *tx)
            .await?;
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Binds the optional last parameter only where the statement has it (PostgreSQL refuses extra parameters).
trait BindSome<'q> {
    fn bind_some(self, v: Option<&'q str>) -> Self;
}

impl<'q> BindSome<'q> for sqlx::query::Query<'q, crate::meta::Db, crate::meta::DbArguments<'q>> {
    fn bind_some(self, v: Option<&'q str>) -> Self {
        match v {
            Some(v) => self.bind(v),
            None => self,
        }
    }
}
