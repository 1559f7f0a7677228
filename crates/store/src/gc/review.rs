//! The facts about queued items, read in the caller's transaction (by a run, and by a dry run on a snapshot), and
//! the review of a queued manifest. The rules themselves are `moat_model::gc`'s; this module only gathers what they
//! ask and does what they decide.

use super::Removed;
use crate::error::Result;
use crate::meta::{Conn, Dialect};
use moat_model::audit::{AuditEvent, Category};
use moat_model::gc::{self, Kind, ManifestFacts};

/// A row of the review queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub kind: Kind,
    pub registry_id: String,
    pub repository: String,
    pub digest: String,
}

/// What reviewing a manifest did.
pub(crate) enum Outcome {
    Removed(Vec<Removed>),
    /// Found it needed (or gone already): the review is dropped.
    Needed,
    /// Queued again since the run listed it (something needed it in the meantime), or already reviewed.
    NotDue,
}

/// The due rows, oldest first.
pub(crate) async fn due_keys(conn: &mut Conn, grace_secs: f64) -> Result<Vec<Key>> {
    let sql_now = Dialect::of(conn).now_secs();
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(&format!(
        "SELECT kind, registry_id, repository, digest FROM gc_review WHERE queued_at + $1 <= {sql_now}
         ORDER BY queued_at"
    ))
    .bind(grace_secs)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, registry_id, repository, digest)| {
            Some(Key {
                kind: Kind::parse(&kind)?,
                registry_id,
                repository,
                digest,
            })
        })
        .collect())
}

async fn still_due(conn: &mut Conn, key: &Key, grace_secs: f64) -> Result<bool> {
    let sql_now = Dialect::of(conn).now_secs();
    let due: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT 1 FROM gc_review WHERE kind = $1 AND registry_id = $2 AND repository = $3 AND digest = $4
         AND queued_at + $5 <= {sql_now}"
    ))
    .bind(key.kind.as_str())
    .bind(&key.registry_id)
    .bind(&key.repository)
    .bind(&key.digest)
    .bind(grace_secs)
    .fetch_optional(conn)
    .await?;
    Ok(due.is_some())
}

async fn dequeue(conn: &mut Conn, kind: Kind, key: &Key) -> Result<()> {
    sqlx::query(
        "DELETE FROM gc_review WHERE kind = $1 AND registry_id = $2 AND repository = $3 AND digest = $4",
    )
    .bind(kind.as_str())
    .bind(&key.registry_id)
    .bind(&key.repository)
    .bind(&key.digest)
    .execute(conn)
    .await?;
    Ok(())
}

async fn exists(conn: &mut Conn, sql: &str, binds: &[&str]) -> Result<bool> {
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_optional(conn).await?.is_some())
}

/// For a link: `None` when it is gone, else whether a manifest of its repository references the blob.
pub(crate) async fn link_facts(conn: &mut Conn, key: &Key) -> Result<Option<bool>> {
    let k = [
        key.registry_id.as_str(),
        key.repository.as_str(),
        key.digest.as_str(),
    ];
    if !exists(
        conn,
        "SELECT 1 FROM blob_links WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        &k,
    )
    .await?
    {
        return Ok(None);
    }
    Ok(Some(
        exists(
            conn,
            // A soft-deleted manifest's references hold its links until it is purged or restored.
            "SELECT 1 FROM manifest_references WHERE registry_id = $1 AND repository = $2 AND child = $3
             AND kind = 'blob'
             UNION ALL SELECT 1 FROM deleted_manifest_references WHERE registry_id = $1 AND repository = $2
             AND child = $3 AND kind = 'blob' LIMIT 1",
            &k,
        )
        .await?,
    ))
}

/// For a blob's bytes: (linked by any repository, pinned by an upload or import).
pub(crate) async fn bytes_facts(conn: &mut Conn, digest: &str) -> Result<(bool, bool)> {
    let sql_now = Dialect::of(conn).now_secs();
    let linked = exists(
        conn,
        "SELECT 1 FROM blob_links WHERE digest = $1 LIMIT 1",
        &[digest],
    )
    .await?;
    let pinned = exists(
        conn,
        &format!("SELECT 1 FROM blob_pins WHERE digest = $1 AND expires_at > {sql_now} LIMIT 1"),
        &[digest],
    )
    .await?;
    Ok((linked, pinned))
}

/// For a manifest: `None` when it is gone, else its facts and size.
pub(crate) async fn manifest_facts(
    conn: &mut Conn,
    key: &Key,
) -> Result<Option<(ManifestFacts, i64)>> {
    let k = [
        key.registry_id.as_str(),
        key.repository.as_str(),
        key.digest.as_str(),
    ];
    let row: Option<(Option<String>, i64)> = sqlx::query_as(
        "SELECT subject, size FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
    )
    .bind(k[0])
    .bind(k[1])
    .bind(k[2])
    .fetch_optional(&mut *conn)
    .await?;
    let Some((subject, size)) = row else {
        return Ok(None);
    };
    let tagged = exists(
        conn,
        "SELECT 1 FROM tags WHERE registry_id = $1 AND repository = $2 AND digest = $3 LIMIT 1",
        &k,
    )
    .await?;
    let listed = exists(
        conn,
        "SELECT 1 FROM manifest_references WHERE registry_id = $1 AND repository = $2 AND child = $3
         AND kind = 'manifest'
         UNION ALL SELECT 1 FROM deleted_manifest_references WHERE registry_id = $1 AND repository = $2
         AND child = $3 AND kind = 'manifest' LIMIT 1",
        &k,
    )
    .await?;
    let subject_present = match subject {
        Some(s) => Some(
            exists(
                conn,
                "SELECT 1 FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
                &[k[0], k[1], &s],
            )
            .await?,
        ),
        None => None,
    };
    Ok(Some((
        ManifestFacts {
            tagged,
            listed,
            subject_present,
        },
        size,
    )))
}

/// The registry's name, for what is reported and audited.
pub(crate) async fn registry_name(conn: &mut Conn, registry_id: &str) -> Result<(String, String)> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT name, login_server FROM registries WHERE id = $1")
            .bind(registry_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.unwrap_or_else(|| (registry_id.to_string(), String::new())))
}

/// Reviews a queued manifest and removes it if the rules say so, in the caller's write transaction (links and
/// bytes are reviewed in batches, `batch.rs`; manifests come rarely and one at a time).
pub(crate) async fn apply_manifest(tx: &mut Conn, key: &Key, grace_secs: f64) -> Result<Outcome> {
    if !still_due(tx, key, grace_secs).await? {
        return Ok(Outcome::NotDue);
    }
    let Some((facts, size)) = manifest_facts(tx, key).await? else {
        dequeue(tx, Kind::Manifest, key).await?;
        return Ok(Outcome::Needed);
    };
    if !gc::manifest_is_garbage(facts) {
        dequeue(tx, Kind::Manifest, key).await?;
        return Ok(Outcome::Needed);
    }
    // The delete trigger queues what it referenced and its referrers for review.
    sqlx::query("DELETE FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3")
        .bind(&key.registry_id)
        .bind(&key.repository)
        .bind(&key.digest)
        .execute(&mut *tx)
        .await?;
    dequeue(tx, Kind::Manifest, key).await?;
    let (registry, login_server) = registry_name(tx, &key.registry_id).await?;
    let event = purge_event(&registry, &login_server, key, size);
    crate::meta::audit::insert_event(tx, &event).await?;
    Ok(Outcome::Removed(vec![Removed::Manifest {
        registry,
        repository: key.repository.clone(),
        digest: key.digest.clone(),
        size,
    }]))
}

/// A manifest the collector removed is a change to a repository: it is audited like one, as ACR audits what its
/// retention policy purges.
fn purge_event(registry: &str, login_server: &str, key: &Key, size: i64) -> AuditEvent {
    AuditEvent {
        time_generated: crate::time_fmt::now(),
        category: Category::ContainerRegistryRepositoryEvents.as_str().into(),
        operation_name: "Purge".into(),
        registry: registry.into(),
        login_server: login_server.into(),
        repository: Some(key.repository.clone()),
        digest: Some(key.digest.clone()),
        size: Some(size),
        identity: Some("moat-gc".into()),
        result_type: "Success".into(),
        result_description:
            "200: garbage collection: untagged, and the index or subject that referenced it was deleted".into(),
        ..AuditEvent::default()
    }
}
