//! The write of an image import: every manifest, blob link and tag of the imported image, in one transaction
//! with the checks it depends on (the source's export policy and contents for a same-server import, the target's
//! tags under `NoForce`). Either the whole image appears in the target, or nothing changes.

use super::audit::insert_event;
use super::content::{ensure_repository, insert_manifest, is_linked, set_tag, ManifestRecord};
use super::MetadataStore;
use crate::error::StoreError;
use moat_model::audit::AuditEvent;
use moat_model::{Digest, Registry, RepositoryName, Tag};

/// What one import writes into the target registry.
#[derive(Clone, Debug)]
pub struct ImportWrite<'a> {
    pub target_registry_id: &'a str,
    /// Each target repository, with the tag to set (none for `untaggedTargetRepositories`).
    pub targets: &'a [(RepositoryName, Option<Tag>)],
    /// Every manifest of the image, children before the index that lists them; the root last.
    pub manifests: &'a [ManifestRecord],
    /// Every blob the manifests reference, with its size. Their bytes are durable in the blob store already.
    pub blobs: &'a [(Digest, u64)],
    /// `Force`: existing target tags are moved; otherwise any existing target tag refuses the import.
    pub force: bool,
    pub events: &'a [AuditEvent],
}

/// A source registry on this server: re-read and re-checked inside the import's transaction.
#[derive(Clone, Copy, Debug)]
pub struct LocalSource<'a> {
    pub registry_id: &'a str,
    pub repository: &'a RepositoryName,
}

/// Why an import was not written.
#[derive(Debug, thiserror::Error)]
pub enum ImportWriteError<E> {
    #[error("the tag '{0}' exists in the target registry: import with mode Force (`--force`) to overwrite it")]
    TagExists(String),
    #[error("the source no longer holds {0}: it changed during the import")]
    SourceChanged(String),
    #[error("the source registry no longer exists")]
    SourceGone,
    /// The caller's check of the source (the egress gate) refused.
    #[error("{0}")]
    Refused(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> From<sqlx::Error> for ImportWriteError<E> {
    fn from(e: sqlx::Error) -> Self {
        ImportWriteError::Store(e.into())
    }
}

impl MetadataStore {
    /// Writes an import. With a `source` on this server, `check` is asked (with the source registry as it is
    /// in this transaction) whether the bytes may leave it, and the source must still hold every blob and
    /// manifest: no byte is copied, the target links what the source has.
    pub async fn import_image<F, E>(
        &self,
        write: &ImportWrite<'_>,
        source: Option<LocalSource<'_>>,
        check: F,
    ) -> Result<(), ImportWriteError<E>>
    where
        F: FnOnce(&Registry) -> Result<(), E>,
    {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(src) = source {
            let registry = super::registries::load(
                &mut tx,
                super::registries::RegistryKey::Id(src.registry_id),
            )
            .await?
            .ok_or(ImportWriteError::SourceGone)?;
            check(&registry).map_err(ImportWriteError::Refused)?;
            for (digest, _) in write.blobs {
                if is_linked(
                    &mut tx,
                    src.registry_id,
                    src.repository.as_str(),
                    digest.as_str(),
                )
                .await?
                .is_none()
                {
                    return Err(ImportWriteError::SourceChanged(digest.to_string()));
                }
            }
            for m in write.manifests {
                let held: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM manifests WHERE registry_id = ? AND repository = ? AND digest = ?",
                )
                .bind(src.registry_id)
                .bind(src.repository.as_str())
                .bind(m.digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if held.is_none() {
                    return Err(ImportWriteError::SourceChanged(m.digest.to_string()));
                }
            }
        }
        if !write.force {
            for (repo, tag) in write.targets {
                let Some(tag) = tag else { continue };
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM tags WHERE registry_id = ? AND repository = ? AND tag = ?",
                )
                .bind(write.target_registry_id)
                .bind(repo.as_str())
                .bind(tag.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if exists.is_some() {
                    return Err(ImportWriteError::TagExists(format!("{repo}:{tag}")));
                }
            }
        }
        let now = crate::time_fmt::now();
        for (digest, size) in write.blobs {
            sqlx::query("INSERT OR IGNORE INTO blobs(digest, size, created_at) VALUES (?, ?, ?)")
                .bind(digest.as_str())
                .bind(*size as i64)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
        }
        let mut done: Vec<&RepositoryName> = Vec::new();
        for (repo, tag) in write.targets {
            if !done.contains(&repo) {
                done.push(repo);
                ensure_repository(&mut tx, write.target_registry_id, repo).await?;
                for (digest, _) in write.blobs {
                    super::content::link(&mut tx, write.target_registry_id, repo, digest).await?;
                }
                for m in write.manifests {
                    insert_manifest(&mut tx, write.target_registry_id, repo, m, &now).await?;
                }
            }
            if let (Some(tag), Some(root)) = (tag, write.manifests.last()) {
                set_tag(
                    &mut tx,
                    write.target_registry_id,
                    repo,
                    tag,
                    &root.digest,
                    &now,
                )
                .await?;
            }
        }
        for e in write.events {
            insert_event(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The size of a blob the store holds (in any repository), for skipping downloads of bytes already here.
    pub async fn stored_blob_size(&self, digest: &Digest) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT size FROM blobs WHERE digest = ?")
                .bind(digest.as_str())
                .fetch_optional(&self.reader)
                .await?,
        )
    }
}
