//! The one writer of `blob_links` rows, and the proofs it takes (DESIGN principle 6, proof of possession).
//!
//! A link makes a blob readable in a repository, so writing one hands out its bytes. [`link`] takes a [`Proven`],
//! whose fields are private to this module and which only these constructors build, one per rule:
//! - (a) [`Proven::received`]: the bytes arrived in this operation and were hashed (a [`ReceivedBlob`], which only
//!   the blob writer's hash or an in-memory hash yields, see `blobs/received.rs`);
//! - (b) [`Proven::in_registry`]: the blob is linked already in a repository of the *same* registry (a remote
//!   import's blob the target registry holds; whoever may import into a registry may read all of it, so this
//!   answers nothing the caller could not read);
//! - (b, c) [`Proven::by_permit`]: the gate allowed the link (a mount in one registry, a same-server import), as a
//!   [`Permit`] only `moat_model::permit` builds on `Allow`, and the permit's source repository holds the blob.
//!
//! Each proof names the registry it proves for and [`link`] writes into that registry only, so a proof obtained for
//! one registry cannot link into another. What is *not* here is as important: no constructor looks at whether the
//! store holds a digest somewhere (`blobs`, `blob_data` or another registry's links); bytes on disk are shared
//! (content-addressed dedup) but never stand in for a proof.

use super::content::ensure_repository;
use crate::blobs::ReceivedBlob;
use crate::error::{Result, StoreError};
use crate::meta::Conn;
use moat_model::{Digest, Permit, RepositoryName};

/// A blob that may be linked into the repositories of `registry_id`.
pub(crate) struct Proven<'a> {
    registry_id: &'a str,
    digest: &'a Digest,
    size: i64,
    /// Set for new bytes: their `blobs` row (and, for a small blob, its `blob_data`) is written with the link.
    received: Option<&'a ReceivedBlob>,
}

impl<'a> Proven<'a> {
    pub(crate) fn size(&self) -> i64 {
        self.size
    }

    /// (a) Bytes received and hashed in this operation, for `registry_id`.
    pub(crate) fn received(registry_id: &'a str, blob: &'a ReceivedBlob) -> Proven<'a> {
        Proven {
            registry_id,
            digest: blob.digest(),
            size: blob.size() as i64,
            received: Some(blob),
        }
    }

    /// (b) `digest` linked in some repository of `registry_id`, checked in the caller's transaction.
    pub(crate) async fn in_registry(
        conn: &mut Conn,
        registry_id: &'a str,
        digest: &'a Digest,
    ) -> Result<Option<Proven<'a>>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM blob_links l JOIN blobs b ON b.digest = l.digest
             WHERE l.registry_id = $1 AND l.digest = $2 LIMIT 1",
        )
        .bind(registry_id)
        .bind(digest.as_str())
        .fetch_optional(conn)
        .await?;
        Ok(size.map(|size| Proven {
            registry_id,
            digest,
            size,
            received: None,
        }))
    }

    /// (b, c) `digest` held in the permit's source repository, for the permit's target registry. `None` when the
    /// source does not hold it.
    pub(crate) async fn by_permit(
        conn: &mut Conn,
        permit: &'a Permit,
        digest: &'a Digest,
    ) -> Result<Option<Proven<'a>>> {
        let size = super::content::is_linked(
            conn,
            permit.source_registry_id(),
            permit.source_repository().as_str(),
            digest.as_str(),
        )
        .await?;
        Ok(size.map(|size| Proven {
            registry_id: permit.target_registry_id(),
            digest,
            size,
            received: None,
        }))
    }
}

/// Links a proven blob into `repo` of the registry its proof is for.
pub(crate) async fn link(conn: &mut Conn, proof: &Proven<'_>, repo: &RepositoryName) -> Result<()> {
    if let Some(blob) = proof.received {
        sqlx::query("INSERT INTO blobs(digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(blob.digest().as_str())
            .bind(blob.size() as i64)
            .bind(crate::time_fmt::now())
            .execute(&mut *conn)
            .await?;
        if let Some(data) = blob.inline() {
            sqlx::query(
                "INSERT INTO blob_data(digest, data) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(blob.digest().as_str())
            .bind(data.as_ref())
            .execute(&mut *conn)
            .await?;
        }
        // The bytes are linked in this transaction: the pin that held them against the collector has done its job.
        if let Some(holder) = blob.pin() {
            sqlx::query("DELETE FROM blob_pins WHERE holder = $1 AND digest = $2")
                .bind(holder)
                .bind(blob.digest().as_str())
                .execute(&mut *conn)
                .await?;
        }
    }
    ensure_repository(&mut *conn, proof.registry_id, repo).await?;
    sqlx::query("INSERT INTO blob_links(registry_id, repository, digest, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
        .bind(proof.registry_id)
        .bind(repo.as_str())
        .bind(proof.digest.as_str())
        .bind(crate::time_fmt::now())
        .execute(conn)
        .await?;
    Ok(())
}

/// A mount needs a permit for one registry: the gate refuses mounts across registries, and this says so again
/// where the link is written.
pub(crate) fn same_registry(permit: &Permit) -> Result<()> {
    if permit.source_registry_id() == permit.target_registry_id() {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "a mount links within one registry only".into(),
        ))
    }
}
