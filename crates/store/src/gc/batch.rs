//! Links and bytes are reviewed in batches: a handful of statements per batch, whatever its size, instead of a dozen
//! per item, so that a run spends little time holding the writer. The facts are read for the whole batch in the
//! caller's write transaction and judged one by one with `moat_model::gc`'s rules; what they allow is removed in
//! the same transaction; files are moved to the trash before it commits (see `pins.rs`) and emptied after.

use super::{Removed, StoredIn};
use crate::blobs::BlobStore;
use crate::error::Result;
use crate::meta::{Conn, Dialect};
use moat_model::gc;
use moat_model::Digest;
use std::collections::{BTreeSet, HashMap};

/// What a batch did.
#[derive(Default)]
pub(crate) struct BatchOutcome {
    pub removed: Vec<Removed>,
    /// Reviews ended because the item is needed (or gone already).
    pub needed: u64,
    /// Pinned bytes, reviewed again later.
    pub postponed: u64,
    /// Files moved to the trash: emptied once the transaction has committed.
    pub trashed: Vec<Digest>,
}

/// `(registry_id, repository, digest)` triples as the JSON array the statements below read as a table (see `Dialect::json_triples`).
fn triples(v: &[(String, String, String)]) -> String {
    serde_json::to_string(v).expect("strings serialise")
}

fn list(v: &[String]) -> String {
    serde_json::to_string(v).expect("strings serialise")
}

/// Reviews the links `links` (registry id, repository, digest) and the bytes `blobs` (digests), those still due.
pub(crate) async fn review(
    tx: &mut Conn,
    store: &dyn BlobStore,
    links: &[(String, String, String)],
    blobs: &[String],
    grace_secs: f64,
    names: &mut HashMap<String, String>,
) -> Result<BatchOutcome> {
    let mut out = BatchOutcome::default();
    let dialect = Dialect::of(tx);
    let sql_now = dialect.now_secs();
    let batch_triples = dialect.json_triples(1);
    let strings = dialect.json_strings(1);
    // Links: the due ones leave the queue now (this transaction decides each of them), with their facts.
    let due: Vec<(String, String, String)> = sqlx::query_as(&format!(
        "DELETE FROM gc_review WHERE kind = 'link' AND (registry_id, repository, digest) IN ({batch_triples})
         AND queued_at + $2 <= {sql_now} RETURNING registry_id, repository, digest"
    ))
    .bind(triples(links))
    .bind(grace_secs)
    .fetch_all(&mut *tx)
    .await?;
    // Flags come back as 0/1 integers (CASE), the one boolean form both dialects return alike.
    let facts: Vec<(String, String, String, i64, i64)> = sqlx::query_as(&format!(
        "WITH d AS ({batch_triples})
         SELECT d.registry_id, d.repository, d.digest,
           CASE WHEN EXISTS (SELECT 1 FROM blob_links l WHERE l.registry_id = d.registry_id
                   AND l.repository = d.repository AND l.digest = d.digest) THEN 1 ELSE 0 END,
           CASE WHEN EXISTS (SELECT 1 FROM manifest_references r WHERE r.registry_id = d.registry_id
                   AND r.repository = d.repository AND r.child = d.digest AND r.kind = 'blob')
           -- A soft-deleted manifest's references hold its links until it is purged or restored.
           OR EXISTS (SELECT 1 FROM deleted_manifest_references r WHERE r.registry_id = d.registry_id
                   AND r.repository = d.repository AND r.child = d.digest AND r.kind = 'blob') THEN 1 ELSE 0 END
         FROM d"
    ))
    .bind(triples(&due))
    .fetch_all(&mut *tx)
    .await?;
    let mut garbage = Vec::new();
    for (registry_id, repository, digest, linked, referenced) in facts {
        let (linked, referenced) = (linked != 0, referenced != 0);
        if linked && gc::link_is_garbage(referenced) {
            garbage.push((registry_id, repository, digest));
        } else {
            out.needed += 1;
        }
    }
    // The delete trigger queues a review of the bytes of each; it is done below, in this batch.
    sqlx::query(&format!(
        "DELETE FROM blob_links WHERE (registry_id, repository, digest) IN ({batch_triples})"
    ))
    .bind(triples(&garbage))
    .execute(&mut *tx)
    .await?;
    for (registry_id, repository, digest) in &garbage {
        if !names.contains_key(registry_id) {
            let (name, _) = super::review::registry_name(tx, registry_id).await?;
            names.insert(registry_id.clone(), name);
        }
        out.removed.push(Removed::Link {
            registry: names[registry_id].clone(),
            repository: repository.clone(),
            digest: digest.clone(),
        });
    }

    // Bytes: those whose review is due, and those of the links just removed (their link waited its grace period:
    // if it was the last one, the bytes go now rather than one grace period later).
    let mut candidates: BTreeSet<String> = sqlx::query_scalar(&format!(
        "SELECT digest FROM gc_review WHERE kind = 'blob' AND registry_id = '' AND repository = ''
         AND digest IN ({strings}) AND queued_at + $2 <= {sql_now}"
    ))
    .bind(list(blobs))
    .bind(grace_secs)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    candidates.extend(garbage.into_iter().map(|(_, _, d)| d));
    let candidates: Vec<String> = candidates.into_iter().collect();
    let facts: Vec<(String, i64, i64, Option<i64>, i64)> = sqlx::query_as(&format!(
        "WITH c AS (SELECT value AS digest FROM ({strings}) s)
         SELECT c.digest,
           CASE WHEN EXISTS (SELECT 1 FROM blob_links l WHERE l.digest = c.digest) THEN 1 ELSE 0 END,
           CASE WHEN EXISTS (SELECT 1 FROM blob_pins p WHERE p.digest = c.digest AND p.expires_at > {sql_now})
                THEN 1 ELSE 0 END,
           (SELECT size FROM blobs b WHERE b.digest = c.digest),
           CASE WHEN EXISTS (SELECT 1 FROM blob_data d WHERE d.digest = c.digest) THEN 1 ELSE 0 END
         FROM c"
    ))
    .bind(list(&candidates))
    .fetch_all(&mut *tx)
    .await?;
    let (mut gone, mut ended, mut pinned) = (Vec::new(), Vec::new(), Vec::new());
    for (digest, linked, is_pinned, size, in_database) in facts {
        let (linked, is_pinned, in_database) = (linked != 0, is_pinned != 0, in_database != 0);
        if gc::bytes_are_garbage(linked, is_pinned) {
            gone.push((digest.clone(), size, in_database));
            ended.push(digest);
        } else if linked {
            out.needed += 1;
            ended.push(digest);
        } else {
            out.postponed += 1;
            pinned.push(digest);
        }
    }
    let gone_digests: Vec<String> = gone.iter().map(|(d, _, _)| d.clone()).collect();
    for table in ["blob_data", "blobs"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE digest IN ({strings})"))
            .bind(list(&gone_digests))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!(
        "DELETE FROM gc_review WHERE kind = 'blob' AND registry_id = '' AND repository = ''
         AND digest IN ({strings})"
    ))
    .bind(list(&ended))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE gc_review SET queued_at = {sql_now} WHERE kind = 'blob' AND registry_id = '' AND repository = ''
         AND digest IN ({strings})"
    ))
    .bind(list(&pinned))
    .execute(&mut *tx)
    .await?;
    for (digest, size, in_database) in gone {
        // Into the trash, not away: should this transaction not commit, the next run puts the file back
        // (`recover_trash`); once it has, the caller empties the trash.
        let file = match digest.parse::<Digest>() {
            Ok(d) => {
                let moved = store.trash_blob(&d)?;
                if moved {
                    out.trashed.push(d);
                }
                moved
            }
            Err(_) => false,
        };
        let stored = match (file, in_database) {
            (true, _) => StoredIn::File,
            (false, true) => StoredIn::Database,
            (false, false) if size.is_some() => StoredIn::Nowhere,
            // Nothing was stored: only the review ended.
            (false, false) => continue,
        };
        out.removed.push(Removed::Blob {
            digest,
            size: size.unwrap_or(0),
            stored,
        });
    }
    Ok(out)
}
