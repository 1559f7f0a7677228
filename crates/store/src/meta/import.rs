//! The write of an image import: every manifest, blob link and tag of the imported image, in one transaction
//! with the checks it depends on (the gate's permit and the source's contents for a same-server import, a proof of
//! possession for every blob of a remote one, the target's tags under `NoForce`). Either the whole image appears
//! in the target, or nothing changes.

use super::audit::insert_event;
use super::content::{ensure_repository, insert_manifest, set_tag, ManifestRecord};
use super::links::{link, Proven};
use super::MetadataStore;
use crate::blobs::ReceivedBlob;
use crate::error::StoreError;
use crate::meta::Conn;
use moat_model::audit::AuditEvent;
use moat_model::{Digest, Permit, Registry, RepositoryName, Tag};

/// What one import writes into the target registry.
#[derive(Clone, Debug)]
pub struct ImportWrite<'a> {
    pub target_registry_id: &'a str,
    /// Each target repository, with the tag to set (none for `untaggedTargetRepositories`).
    pub targets: &'a [(RepositoryName, Option<Tag>)],
    /// Every manifest of the image, children before the index that lists them; the root last.
    pub manifests: &'a [ManifestRecord],
    /// Every blob the manifests reference, with the size they claim. Each is linked only on a proof (see
    /// `links.rs`); the size written is the proof's, never the claim.
    pub blobs: &'a [(Digest, u64)],
    /// `Force`: existing target tags are moved; otherwise any existing target tag refuses the import.
    pub force: bool,
    pub events: &'a [AuditEvent],
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
    /// A remote import's blob that was not downloaded (the target registry held it) and is no longer linked there.
    #[error("{0} was neither downloaded by this import nor held by the target registry: it changed during the import, import again")]
    Unproven(String),
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
    /// Writes an import from a registry of this server. `gate` is asked, with the source registry as it is in
    /// this transaction, for the permit to link out of it (`moat_model::permit` on `Egress::ImportFrom`, the only
    /// way to one); the source repository named in the permit must still hold every blob and manifest. No byte is
    /// copied: the target links what the source has.
    pub async fn import_local<F, E>(
        &self,
        write: &ImportWrite<'_>,
        source_registry_id: &str,
        gate: F,
    ) -> Result<(), ImportWriteError<E>>
    where
        F: FnOnce(&Registry) -> Result<Permit, E>,
    {
        let mut tx = self.begin_write().await?;
        let registry = super::registries::load(
            &mut tx,
            super::registries::RegistryKey::Id(source_registry_id),
        )
        .await?
        .ok_or(ImportWriteError::SourceGone)?;
        let permit = gate(&registry).map_err(ImportWriteError::Refused)?;
        if permit.source_registry_id() != source_registry_id
            || permit.target_registry_id() != write.target_registry_id
        {
            return Err(StoreError::Invalid(
                "the import's permit is for another pair of registries".into(),
            )
            .into());
        }
        let mut proofs = Vec::with_capacity(write.blobs.len());
        for (digest, _) in write.blobs {
            let proof = Proven::by_permit(&mut tx, &permit, digest)
                .await?
                .ok_or_else(|| ImportWriteError::SourceChanged(digest.to_string()))?;
            proofs.push(proof);
        }
        for m in write.manifests {
            let held: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
            )
            .bind(permit.source_registry_id())
            .bind(permit.source_repository().as_str())
            .bind(m.digest.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if held.is_none() {
                return Err(ImportWriteError::SourceChanged(m.digest.to_string()));
            }
        }
        write_image(&mut tx, write, &proofs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes an import from a remote registry. Every blob the manifests reference is linked on a proof: it was
    /// downloaded and hashed by this import (`received`), or it is linked already in a repository of the target
    /// registry (checked here, in the transaction). A digest the store holds only elsewhere proves nothing.
    pub async fn import_remote<E>(
        &self,
        write: &ImportWrite<'_>,
        received: &[ReceivedBlob],
    ) -> Result<(), ImportWriteError<E>> {
        let mut tx = self.begin_write().await?;
        let mut proofs = Vec::with_capacity(write.blobs.len());
        for (digest, _) in write.blobs {
            let proof = match received.iter().find(|b| b.digest() == digest) {
                Some(blob) => Proven::received(write.target_registry_id, blob),
                None => Proven::in_registry(&mut tx, write.target_registry_id, digest)
                    .await?
                    .ok_or_else(|| ImportWriteError::Unproven(digest.to_string()))?,
            };
            proofs.push(proof);
        }
        write_image(&mut tx, write, &proofs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes the artifacts of a transfer archive (an import pipeline run) into the target, in one transaction,
    /// each blob on the proof [`import_remote`](Self::import_remote) takes: its bytes received and hashed by this
    /// run, or a link in the target registry already. Each artifact is written whole or not at all (a savepoint):
    /// with `continue_on_errors` one that cannot be written (a tag that exists without `OverwriteTags`) is left
    /// out and the others are written; without, the first such artifact leaves the target exactly as it was.
    /// Returns each write's outcome, in order.
    pub async fn import_archive(
        &self,
        writes: &[ImportWrite<'_>],
        received: &[ReceivedBlob],
        continue_on_errors: bool,
    ) -> Result<Vec<Result<(), ImportWriteError<String>>>, ImportWriteError<String>> {
        let mut tx = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            sqlx::query("SAVEPOINT artifact").execute(&mut *tx).await?;
            let outcome = async {
                let mut proofs = Vec::with_capacity(write.blobs.len());
                for (digest, _) in write.blobs {
                    let proof = match received.iter().find(|b| b.digest() == digest) {
                        Some(blob) => Proven::received(write.target_registry_id, blob),
                        None => Proven::in_registry(&mut tx, write.target_registry_id, digest)
                            .await?
                            .ok_or_else(|| ImportWriteError::Unproven(digest.to_string()))?,
                    };
                    proofs.push(proof);
                }
                write_image(&mut tx, write, &proofs).await
            }
            .await;
            match outcome {
                Ok(()) => {
                    sqlx::query("RELEASE artifact").execute(&mut *tx).await?;
                    outcomes.push(Ok(()));
                }
                // A store failure is never an artifact's own problem: nothing is written.
                Err(ImportWriteError::Store(e)) => return Err(ImportWriteError::Store(e)),
                Err(e) if continue_on_errors => {
                    sqlx::query("ROLLBACK TO artifact")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("RELEASE artifact").execute(&mut *tx).await?;
                    outcomes.push(Err(e));
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// Writes the image into the target once every blob has its proof: the tags checked under `NoForce`, every blob
/// linked, every manifest stored, the tags set and the events recorded, in the caller's transaction.
async fn write_image<E>(
    tx: &mut Conn,
    write: &ImportWrite<'_>,
    proofs: &[Proven<'_>],
) -> Result<(), ImportWriteError<E>> {
    if !write.force {
        for (repo, tag) in write.targets {
            let Some(tag) = tag else { continue };
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM tags WHERE registry_id = $1 AND repository = $2 AND tag = $3",
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
    let mut done: Vec<&RepositoryName> = Vec::new();
    for (repo, tag) in write.targets {
        if !done.contains(&repo) {
            done.push(repo);
            ensure_repository(&mut *tx, write.target_registry_id, repo).await?;
            for proof in proofs {
                link(&mut *tx, proof, repo).await?;
            }
            for m in write.manifests {
                insert_manifest(&mut *tx, write.target_registry_id, repo, m, &now).await?;
            }
        }
        if let (Some(tag), Some(root)) = (tag, write.manifests.last()) {
            set_tag(
                &mut *tx,
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
        insert_event(&mut *tx, e).await?;
    }
    Ok(())
}
