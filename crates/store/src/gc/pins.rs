//! Pins: how an upload or import keeps the collector off bytes it is placing.
//!
//! Placing a blob's bytes under their name (`BlobStore::commit_upload`) and linking them are two steps: when the
//! name is taken already, the upload drops its own copy and relies on the stored one. Without a pin, the collector
//! could remove those stored bytes between the two steps (nothing linked them yet), and the link would then point
//! at nothing. So the bytes are pinned first, in a committed row the collector reads in the transaction that would
//! remove them; [`crate::ReceivedBlob::commit`] takes the pin, and the transaction that writes the link removes it.
//! The collector moves files out of their name only inside its transaction, so either it ran before the pin (and
//! the upload then finds no file and puts its own under the name) or it sees the pin and keeps the bytes. (It moves
//! them to a trash it empties after the commit, so that a run that stops before its commit takes nothing away: the
//! next run puts back what its rolled-back rows still describe.)

use crate::error::Result;
use crate::meta::MetadataStore;
use moat_model::Digest;
use std::time::Duration;

/// Pins on some digests, held by one upload or import. Only [`MetadataStore::pin_blobs`] makes one.
#[derive(Debug)]
pub struct BlobPins {
    holder: String,
    digests: Vec<Digest>,
}

impl BlobPins {
    pub fn holds(&self, digest: &Digest) -> bool {
        self.digests.contains(digest)
    }

    pub(crate) fn new(holder: String, digests: Vec<Digest>) -> BlobPins {
        BlobPins { holder, digests }
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// Pins that no store recorded, for the blob writer's own tests.
    #[cfg(test)]
    pub(crate) fn unrecorded(digests: &[Digest]) -> BlobPins {
        BlobPins {
            holder: "test".into(),
            digests: digests.to_vec(),
        }
    }
}

impl MetadataStore {
    /// Pins `digests` for `ttl` (a pin left by a crashed process lapses then). Committed before it returns, so the
    /// caller may place bytes once it has the pins.
    pub async fn pin_blobs(&self, digests: &[Digest], ttl: Duration) -> Result<BlobPins> {
        let sql_now = self.dialect().now_secs();
        let holder = uuid::Uuid::new_v4().to_string();
        let mut tx = self.begin_write().await?;
        for d in digests {
            sqlx::query(&format!(
                "INSERT INTO blob_pins(holder, digest, expires_at) VALUES ($1, $2, {sql_now} + $3)
                 ON CONFLICT(holder, digest) DO NOTHING"
            ))
            .bind(&holder)
            .bind(d.as_str())
            .bind(ttl.as_secs_f64())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(BlobPins {
            holder,
            digests: digests.to_vec(),
        })
    }

    /// Removes pins whose holder never finished (a crashed upload).
    pub(crate) async fn drop_expired_pins(&self) -> Result<()> {
        let sql_now = self.dialect().now_secs();
        sqlx::query(&format!(
            "DELETE FROM blob_pins WHERE expires_at <= {sql_now}"
        ))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Releases whatever of `pins` the link writer has not (a failed or abandoned upload or import).
    pub async fn unpin(&self, pins: &BlobPins) -> Result<()> {
        sqlx::query("DELETE FROM blob_pins WHERE holder = $1")
            .bind(&pins.holder)
            .execute(self.writer())
            .await?;
        Ok(())
    }
}
