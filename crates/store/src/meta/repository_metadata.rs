//! A repository's metadata as ACR's `/acr/v1` API shows it: counts and times, tags with their digests, manifests
//! with their bodies (the service layer derives sizes and references from them), and deleting a whole repository.

use super::audit::insert_event;
use super::MetadataStore;
use crate::error::Result;
use moat_model::audit::AuditEvent;
use moat_model::{Digest, RepositoryName};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositorySummary {
    pub created_at: String,
    pub last_update: String,
    pub manifest_count: i64,
    pub tag_count: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRow {
    pub tag: String,
    pub digest: String,
    /// When the tag was last pointed at a manifest (Moat keeps no separate creation time for a tag).
    pub updated_at: String,
}

#[derive(Clone, Debug)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub created_at: String,
    pub body: Vec<u8>,
}

/// What deleting a repository removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletedRepository {
    pub manifests: Vec<String>,
    pub tags: Vec<String>,
}

impl MetadataStore {
    /// `None` for a repository that holds no manifest (blobs alone do not make it visible, as in the catalog).
    pub async fn repository_summary(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
    ) -> Result<Option<RepositorySummary>> {
        /// Created, manifest count, tag count, newest manifest, newest tag change.
        type Row = (String, i64, i64, Option<String>, Option<String>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT r.created_at,
               (SELECT COUNT(*) FROM manifests m WHERE m.registry_id = r.registry_id AND m.repository = r.name),
               (SELECT COUNT(*) FROM tags t WHERE t.registry_id = r.registry_id AND t.repository = r.name),
               (SELECT MAX(created_at) FROM manifests m WHERE m.registry_id = r.registry_id AND m.repository = r.name),
               (SELECT MAX(updated_at) FROM tags t WHERE t.registry_id = r.registry_id AND t.repository = r.name)
             FROM repositories r WHERE r.registry_id = $1 AND r.name = $2",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .fetch_optional(&self.reader)
        .await?;
        Ok(row
            .filter(|r| r.1 > 0)
            .map(|(created_at, manifest_count, tag_count, m, t)| {
                let last_update = [Some(created_at.clone()), m, t]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or_default();
                RepositorySummary {
                    created_at,
                    last_update,
                    manifest_count,
                    tag_count,
                }
            }))
    }

    /// Every tag of a repository by name, or only the tag `only`.
    pub async fn tag_rows(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        only: Option<&str>,
    ) -> Result<Vec<TagRow>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT tag, digest, updated_at FROM tags WHERE registry_id = $1 AND repository = $2
             AND ($3 IS NULL OR tag = $3) ORDER BY tag",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .bind(only)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(tag, digest, updated_at)| TagRow {
                tag,
                digest,
                updated_at,
            })
            .collect())
    }

    /// Every manifest of a repository by digest, or only the manifest `only`.
    pub async fn manifest_rows(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        only: Option<&Digest>,
    ) -> Result<Vec<ManifestRow>> {
        let rows: Vec<(String, String, i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT digest, media_type, size, created_at, body FROM manifests
             WHERE registry_id = $1 AND repository = $2 AND ($3 IS NULL OR digest = $3) ORDER BY digest",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .bind(only.map(Digest::as_str))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(digest, media_type, size, created_at, body)| ManifestRow {
                digest,
                media_type,
                size,
                created_at,
                body,
            })
            .collect())
    }

    /// Deletes a repository whole (tags, manifests, blob links, the repository itself) with its audit event, in
    /// one transaction. `None` when it holds no manifest: nothing is deleted then.
    pub async fn delete_repository(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        event: &AuditEvent,
    ) -> Result<Option<DeletedRepository>> {
        let mut tx = self.begin_write().await?;
        let manifests: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM manifests WHERE registry_id = $1 AND repository = $2 ORDER BY digest",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .fetch_all(&mut *tx)
        .await?;
        if manifests.is_empty() {
            return Ok(None);
        }
        let tags: Vec<String> = sqlx::query_scalar(
            "SELECT tag FROM tags WHERE registry_id = $1 AND repository = $2 ORDER BY tag",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .fetch_all(&mut *tx)
        .await?;
        // Under soft delete the repository keeps its links (the kept manifests' references hold them for the
        // collector) and its row; the catalog lists only repositories with a manifest.
        let soft = super::soft_delete::enabled(&mut tx, registry_id).await?;
        if soft {
            super::soft_delete::keep_repository(&mut tx, registry_id, repo.as_str()).await?;
        }
        let statements: &[&str] = if soft {
            &[
                "DELETE FROM tags WHERE registry_id = $1 AND repository = $2",
                "DELETE FROM manifests WHERE registry_id = $1 AND repository = $2",
            ]
        } else {
            &[
                "DELETE FROM tags WHERE registry_id = $1 AND repository = $2",
                "DELETE FROM manifests WHERE registry_id = $1 AND repository = $2",
                "DELETE FROM blob_links WHERE registry_id = $1 AND repository = $2",
                "DELETE FROM repositories WHERE registry_id = $1 AND name = $2",
            ]
        };
        for sql in statements {
            sqlx::query(sql)
                .bind(registry_id)
                .bind(repo.as_str())
                .execute(&mut *tx)
                .await?;
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Some(DeletedRepository { manifests, tags }))
    }
}
