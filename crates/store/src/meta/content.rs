//! Blob links, manifests, tags, referrers and the catalog. Every change checks what it depends on and writes,
//! with its audit event, in one transaction.

use super::audit::insert_event;
use super::links::{link, same_registry, Proven};
use super::MetadataStore;
use crate::blobs::ReceivedBlob;
use crate::error::{Result, StoreError};
use crate::meta::Conn;
use moat_model::audit::AuditEvent;
use moat_model::{Digest, Permit, Reference, RepositoryName, Tag};

/// A manifest about to be stored.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<String>,
    pub body: Vec<u8>,
    pub required_blobs: Vec<Digest>,
    pub required_manifests: Vec<Digest>,
}

impl ManifestRecord {
    /// The record of a parsed manifest whose bytes are `body` and digest `digest`.
    pub fn new(
        digest: Digest,
        parsed: &moat_model::ParsedManifest,
        body: Vec<u8>,
    ) -> ManifestRecord {
        ManifestRecord {
            digest,
            media_type: parsed.media_type.clone(),
            artifact_type: parsed.effective_artifact_type(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            annotations: parsed
                .annotations
                .as_ref()
                .map(|a| serde_json::to_string(a).unwrap_or_default()),
            body,
            required_blobs: parsed.required_blobs().cloned().collect(),
            required_manifests: parsed.required_manifests().cloned().collect(),
        }
    }
}

/// A blob whose upload is complete, ready to be recorded.
#[derive(Clone, Debug)]
pub struct FinishedBlob<'a> {
    pub registry_id: &'a str,
    pub repo: &'a RepositoryName,
    /// The bytes, received and hashed in this request: the proof that lets them be linked (see `links.rs`).
    pub blob: ReceivedBlob,
    /// The session it came from (empty for a monolithic upload, which has none).
    pub upload_id: &'a str,
}

#[derive(Clone, Debug)]
pub struct StoredManifest {
    pub digest: String,
    pub media_type: String,
    pub body: bytes::Bytes,
}

#[derive(Clone, Debug)]
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: i64,
    pub annotations: Option<String>,
}

pub(crate) async fn ensure_repository(
    conn: &mut Conn,
    registry_id: &str,
    repo: &RepositoryName,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO repositories(registry_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(registry_id)
    .bind(repo.as_str())
    .bind(crate::time_fmt::now())
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn is_linked(
    conn: &mut Conn,
    registry_id: &str,
    repo: &str,
    digest: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT b.size FROM blob_links l JOIN blobs b ON b.digest = l.digest
         WHERE l.registry_id = $1 AND l.repository = $2 AND l.digest = $3",
    )
    .bind(registry_id)
    .bind(repo)
    .bind(digest)
    .fetch_optional(conn)
    .await?)
}

/// Stores a manifest in a repository (a no-op when it is there already).
pub(crate) async fn insert_manifest(
    conn: &mut Conn,
    registry_id: &str,
    repo: &RepositoryName,
    m: &ManifestRecord,
    now: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO manifests(registry_id, repository, digest, media_type, artifact_type, subject,
         annotations, size, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
    )
    .bind(registry_id)
    .bind(repo.as_str())
    .bind(m.digest.as_str())
    .bind(&m.media_type)
    .bind(&m.artifact_type)
    .bind(m.subject.as_ref().map(|d| d.as_str()))
    .bind(&m.annotations)
    .bind(m.body.len() as i64)
    .bind(&m.body)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // What the manifest requires, for the collector: a link or child manifest it names is not garbage.
    let references = (m.required_blobs.iter().map(|d| ("blob", d)))
        .chain(m.required_manifests.iter().map(|d| ("manifest", d)));
    for (kind, child) in references {
        sqlx::query(
            "INSERT INTO manifest_references(registry_id, repository, manifest, kind, child) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .bind(m.digest.as_str())
        .bind(kind)
        .bind(child.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Points a tag at a manifest, creating or moving it.
pub(crate) async fn set_tag(
    conn: &mut Conn,
    registry_id: &str,
    repo: &RepositoryName,
    tag: &Tag,
    digest: &Digest,
    now: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tags(registry_id, repository, tag, digest, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT(registry_id, repository, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
    )
    .bind(registry_id)
    .bind(repo.as_str())
    .bind(tag.as_str())
    .bind(digest.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a soft delete keeps of a delete (see `soft_delete`).
#[derive(Clone, Copy)]
enum Kept {
    Manifest,
    Tag,
    /// A blob unlinked by digest: a kept manifest that needed it can no longer be restored (restore says so).
    Nothing,
}

impl MetadataStore {
    /// The size of `digest` if it is linked in this repository: the only way a blob is visible.
    pub async fn linked_blob_size(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<i64>> {
        let mut conn = self.reader.acquire().await?;
        is_linked(&mut conn, registry_id, repo.as_str(), digest.as_str()).await
    }

    /// Records a finished upload: the blob row (once per store), its link into the repository, the end of the
    /// upload session and the audit event, all in one commit. The bytes are already durable when this runs
    /// (or, for an inline blob, are part of that commit).
    pub async fn commit_blob(&self, blob: FinishedBlob<'_>, event: &AuditEvent) -> Result<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let pending = super::group_commit::PendingBlob {
            registry_id: blob.registry_id.to_string(),
            repo: blob.repo.clone(),
            blob: blob.blob,
            upload_id: blob.upload_id.to_string(),
            event: event.clone(),
            done,
        };
        self.blob_commits
            .send(pending)
            .map_err(|_| StoreError::Invalid("the metadata store is shutting down".into()))?;
        wait.await
            .map_err(|_| StoreError::Invalid("the metadata store is shutting down".into()))?
    }

    /// The bytes of a blob stored in the database, if it is one and it is linked in this repository. Asked through
    /// the link, like every read of a blob, so that it says nothing about what other registries hold.
    pub async fn inline_blob(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<bytes::Bytes>> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT d.data FROM blob_links l JOIN blob_data d ON d.digest = l.digest
             WHERE l.registry_id = $1 AND l.repository = $2 AND l.digest = $3",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.reader)
        .await?;
        Ok(data.map(bytes::Bytes::from))
    }

    /// Links a blob that the permit's source repository holds into `to`, in one transaction with the check that
    /// the source holds it. The permit (the gate's `Allow` for `Egress::Mount`) names the registry and the source
    /// repository; a mount never crosses registries. Returns the size, or `None` when the source does not hold
    /// it (the caller then starts a normal upload).
    pub async fn mount_blob(
        &self,
        permit: &Permit,
        to: &RepositoryName,
        digest: &Digest,
        event: &AuditEvent,
    ) -> Result<Option<i64>> {
        same_registry(permit)?;
        let mut tx = self.begin_write().await?;
        let Some(proof) = Proven::by_permit(&mut tx, permit, digest).await? else {
            return Ok(None);
        };
        link(&mut tx, &proof, to).await?;
        let mut event = event.clone();
        event.size = Some(proof.size());
        insert_event(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(Some(proof.size()))
    }

    /// Whether `digest` is linked in any repository of this registry: a remote import need not download it
    /// again (and `import_remote` checks it again in its transaction). Registry-scoped on purpose: whether the
    /// store holds a digest elsewhere is never asked (DESIGN principle 6).
    pub async fn linked_in_registry(&self, registry_id: &str, digest: &Digest) -> Result<bool> {
        let mut conn = self.reader.acquire().await?;
        Ok(Proven::in_registry(&mut conn, registry_id, digest)
            .await?
            .is_some())
    }

    /// Removes a blob's link from a repository. The stored bytes stay until garbage collection finds no link.
    pub async fn unlink_blob(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        digest: &Digest,
        event: &AuditEvent,
    ) -> Result<bool> {
        let sql =
            "DELETE FROM blob_links WHERE registry_id = $1 AND repository = $2 AND digest = $3";
        self.delete_recorded(
            registry_id,
            repo,
            digest.as_str(),
            &[sql],
            event,
            Kept::Nothing,
        )
        .await
    }

    /// Stores a manifest (and tags it) after checking, in the same transaction, that the repository holds every
    /// blob and child manifest it references.
    pub async fn put_manifest(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        m: &ManifestRecord,
        tag: Option<&Tag>,
        event: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for d in &m.required_blobs {
            if is_linked(&mut tx, registry_id, repo.as_str(), d.as_str())
                .await?
                .is_none()
            {
                return Err(StoreError::ManifestBlobUnknown(d.clone()));
            }
        }
        for d in &m.required_manifests {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
            )
            .bind(registry_id)
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Err(StoreError::ManifestBlobUnknown(d.clone()));
            }
        }
        ensure_repository(&mut tx, registry_id, repo).await?;
        let now = crate::time_fmt::now();
        insert_manifest(&mut tx, registry_id, repo, m, &now).await?;
        if let Some(tag) = tag {
            set_tag(&mut tx, registry_id, repo, tag, &m.digest, &now).await?;
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn manifest(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>> {
        let row: Option<(String, String, Vec<u8>)> = match reference {
            Reference::Digest(d) => {
                sqlx::query_as("SELECT digest, media_type, body FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3")
                    .bind(registry_id)
                    .bind(repo.as_str())
                    .bind(d.as_str())
                    .fetch_optional(&self.reader)
                    .await?
            }
            Reference::Tag(t) => {
                sqlx::query_as(
                    "SELECT m.digest, m.media_type, m.body FROM tags t JOIN manifests m
                     ON m.registry_id = t.registry_id AND m.repository = t.repository AND m.digest = t.digest
                     WHERE t.registry_id = $1 AND t.repository = $2 AND t.tag = $3",
                )
                .bind(registry_id)
                .bind(repo.as_str())
                .bind(t.as_str())
                .fetch_optional(&self.reader)
                .await?
            }
        };
        Ok(row.map(|(digest, media_type, body)| StoredManifest {
            digest,
            media_type,
            body: body.into(),
        }))
    }

    /// Deletes a manifest and every tag that points at it.
    pub async fn delete_manifest(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        digest: &Digest,
        event: &AuditEvent,
    ) -> Result<bool> {
        let sql = [
            "DELETE FROM tags WHERE registry_id = $1 AND repository = $2 AND digest = $3",
            "DELETE FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        ];
        self.delete_recorded(
            registry_id,
            repo,
            digest.as_str(),
            &sql,
            event,
            Kept::Manifest,
        )
        .await
    }

    pub async fn delete_tag(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        tag: &Tag,
        event: &AuditEvent,
    ) -> Result<bool> {
        let sql = "DELETE FROM tags WHERE registry_id = $1 AND repository = $2 AND tag = $3";
        self.delete_recorded(registry_id, repo, tag.as_str(), &[sql], event, Kept::Tag)
            .await
    }

    /// Runs `DELETE`s bound to (registry, repository, `key`) in one transaction with the audit event. The
    /// last statement says whether there was anything to delete; when there was not, nothing is committed.
    async fn delete_recorded(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        key: &str,
        statements: &[&str],
        event: &AuditEvent,
        kept: Kept,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        if super::soft_delete::enabled(&mut tx, registry_id).await? {
            match kept {
                Kept::Manifest => {
                    super::soft_delete::keep_manifest(&mut tx, registry_id, repo.as_str(), key)
                        .await?
                }
                Kept::Tag => {
                    super::soft_delete::keep_tag(&mut tx, registry_id, repo.as_str(), key).await?
                }
                Kept::Nothing => {}
            }
        }
        let mut deleted = 0;
        for sql in statements {
            deleted = sqlx::query(sql)
                .bind(registry_id)
                .bind(repo.as_str())
                .bind(key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        if deleted == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn repository_exists(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
    ) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM repositories WHERE registry_id = $1 AND name = $2")
                .bind(registry_id)
                .bind(repo.as_str())
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    /// Tags in lexical order after `last`, at most `n` (all when `None`).
    pub async fn list_tags(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        n: Option<i64>,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT tag FROM tags WHERE registry_id = $1 AND repository = $2 AND tag > $3 ORDER BY tag LIMIT $4",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .bind(last.unwrap_or(""))
        .bind(n.filter(|n| *n >= 0).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?)
    }

    /// Repositories of one registry that hold at least one manifest, in lexical order after `last`.
    pub async fn list_repositories(
        &self,
        registry_id: &str,
        n: Option<i64>,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT r.name FROM repositories r WHERE r.registry_id = $1 AND r.name > $2
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.registry_id = r.registry_id AND m.repository = r.name)
             ORDER BY r.name LIMIT $3",
        )
        .bind(registry_id)
        .bind(last.unwrap_or(""))
        .bind(n.filter(|n| *n >= 0).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn referrers(
        &self,
        registry_id: &str,
        repo: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerRow>> {
        type Row = (String, String, Option<String>, i64, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT digest, media_type, artifact_type, size, annotations FROM manifests
             WHERE registry_id = $1 AND repository = $2 AND subject = $3 ORDER BY created_at, digest",
        )
        .bind(registry_id)
        .bind(repo.as_str())
        .bind(subject.as_str())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(digest, media_type, artifact_type, size, annotations)| ReferrerRow {
                    digest,
                    media_type,
                    artifact_type,
                    size,
                    annotations,
                },
            )
            .collect())
    }
}
