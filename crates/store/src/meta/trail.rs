//! The trail's shared parts: the string dictionary (with the in-memory caches of the batch writer and of the
//! readers), chain heads, the sparse time map, and signed checkpoints (the `checkpoint` log).

use super::MetadataStore;
use crate::error::Result;
use crate::meta::Conn;
use moat_model::trail::{ChainState, Checkpoint, CheckpointKind};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Records one time-map row covers at most: a time range's seq range is exact to within this many records.
pub(crate) const MAP_RUN: i64 = 1024;

/// String ids this process knows to be committed. Ids are never reused or removed, so a committed id stays right
/// for the life of the database; an id inserted by a transaction that may still roll back is never cached.
#[derive(Default)]
pub(crate) struct Dictionary {
    ids: RwLock<HashMap<Arc<str>, i64>>,
    strings: RwLock<HashMap<i64, Arc<str>>>,
}

impl Dictionary {
    pub(crate) fn id(&self, s: &str) -> Option<i64> {
        self.ids.read().ok()?.get(s).copied()
    }

    pub(crate) fn string(&self, id: i64) -> Option<Arc<str>> {
        self.strings.read().ok()?.get(&id).cloned()
    }

    /// Remembers ids that are committed.
    pub(crate) fn learn(&self, pairs: impl IntoIterator<Item = (Arc<str>, i64)>) {
        let (Ok(mut ids), Ok(mut strings)) = (self.ids.write(), self.strings.write()) else {
            return;
        };
        // Bounded: a flood of distinct user agents must not grow memory without limit.
        if ids.len() > 1_000_000 {
            ids.clear();
            strings.clear();
        }
        for (s, id) in pairs {
            strings.insert(id, s.clone());
            ids.insert(s, id);
        }
    }
}

/// Resolves `strings` to ids on `conn` (inserting the missing ones), using `dict` for the ones known committed.
/// Returns every id, and the pairs that came from the database (to [`Dictionary::learn`] once committed).
pub(crate) async fn intern(
    conn: &mut Conn,
    dict: Option<&Dictionary>,
    strings: &[&str],
) -> Result<(HashMap<String, i64>, Vec<(Arc<str>, i64)>)> {
    let mut out: HashMap<String, i64> = HashMap::with_capacity(strings.len());
    let mut missing: Vec<&str> = Vec::new();
    for s in strings {
        if out.contains_key(*s) {
            continue;
        }
        match dict.and_then(|d| d.id(s)) {
            Some(id) => {
                out.insert((*s).to_string(), id);
            }
            None => {
                if !missing.contains(s) {
                    missing.push(s);
                }
            }
        }
    }
    let mut fresh = Vec::new();
    // SQLite takes at most 32766 parameters; 500 at a time keeps statements small.
    for chunk in missing.chunks(500) {
        let mut sql = String::from("INSERT INTO trail_strings(s) VALUES ");
        sql.push_str(&super::dialect::value_rows(chunk.len(), 1));
        sql.push_str(" ON CONFLICT(s) DO NOTHING");
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q.bind(*s);
        }
        q.execute(&mut *conn).await?;
        let mut sql = String::from("SELECT id, s FROM trail_strings WHERE s IN (");
        sql.push_str(&super::dialect::param_list(1, chunk.len()));
        sql.push(')');
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q.bind(*s);
        }
        for r in q.fetch_all(&mut *conn).await? {
            let id: i64 = r.get(0);
            let s: String = r.get(1);
            fresh.push((Arc::<str>::from(s.as_str()), id));
            out.insert(s, id);
        }
    }
    Ok((out, fresh))
}

/// A chain's head as stored (default: a chain with no record yet).
pub(crate) async fn head(conn: &mut Conn, chain: &str) -> Result<ChainState> {
    let row = sqlx::query("SELECT last_seq, count, state FROM trail_heads WHERE chain = $1")
        .bind(chain)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        None => ChainState::default(),
        Some(r) => ChainState {
            last_seq: r.get(0),
            count: r.get(1),
            state: ChainState::state_from_hex(&r.get::<String, _>(2)).unwrap_or_default(),
        },
    })
}

pub(crate) async fn set_head(
    conn: &mut Conn,
    chain: &str,
    log: &str,
    registry: Option<&str>,
    c: &ChainState,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO trail_heads(chain, log, registry, last_seq, count, state) VALUES ($1,$2,$3,$4,$5,$6)
         ON CONFLICT(chain) DO UPDATE SET last_seq = excluded.last_seq, count = excluded.count,
             state = excluded.state",
    )
    .bind(chain)
    .bind(log)
    .bind(registry)
    .bind(c.last_seq)
    .bind(c.count)
    .bind(hex::encode(c.state))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Extends the time map by the records `first_seq..=last_seq` whose parseable times span `min_t..=max_t`.
pub(crate) async fn map_times(
    conn: &mut Conn,
    first_seq: i64,
    last_seq: i64,
    min_t: i64,
    max_t: i64,
) -> Result<()> {
    let n = last_seq - first_seq + 1;
    let last = sqlx::query(
        "SELECT first_seq, records FROM audit_time_map ORDER BY first_seq DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = last {
        let (first, records): (i64, i64) = (r.get(0), r.get(1));
        if records + n <= MAP_RUN {
            sqlx::query(
                "UPDATE audit_time_map SET last_seq = $1, records = records + $2, min_t = CASE WHEN min_t <= $3 THEN min_t ELSE $3 END,
                     max_t = CASE WHEN max_t >= $4 THEN max_t ELSE $4 END WHERE first_seq = $5",
            )
            .bind(last_seq)
            .bind(n)
            .bind(min_t)
            .bind(max_t)
            .bind(first)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
    }
    sqlx::query(
        "INSERT INTO audit_time_map(first_seq, last_seq, records, min_t, max_t) VALUES ($1,$2,$3,$4,$5)",
    )
    .bind(first_seq)
    .bind(last_seq)
    .bind(n)
    .bind(min_t)
    .bind(max_t)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A chain's head as [`MetadataStore::trail_heads`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailHead {
    pub chain: String,
    pub log: String,
    pub registry: Option<String>,
    pub head: ChainState,
}

fn checkpoint_from(r: &crate::meta::DbRow) -> Checkpoint {
    Checkpoint {
        chain: r.get("chain"),
        log: r.get("log"),
        registry: r.get("registry"),
        last_seq: r.get("last_seq"),
        count: r.get("count"),
        state: r.get("state"),
        time: r.get("time"),
        kind: CheckpointKind::parse(&r.get::<String, _>("kind"))
            .unwrap_or(CheckpointKind::Interval),
        key_id: r.get("key_id"),
        signature: r.get("signature"),
    }
}

pub(crate) async fn insert_checkpoint(conn: &mut Conn, c: &Checkpoint) -> Result<i64> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO trail_checkpoints(chain, log, registry, last_seq, count, state, time, kind, key_id, signature)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING seq",
    )
    .bind(&c.chain)
    .bind(&c.log)
    .bind(&c.registry)
    .bind(c.last_seq)
    .bind(c.count)
    .bind(&c.state)
    .bind(&c.time)
    .bind(c.kind.as_str())
    .bind(&c.key_id)
    .bind(&c.signature)
    .fetch_one(&mut *conn)
    .await?;
    Ok(seq)
}

impl MetadataStore {
    /// Signed chain heads after `after_seq`, oldest first (the `checkpoint` log, for the sinks).
    pub async fn checkpoint_rows(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Checkpoint)>> {
        let rows =
            sqlx::query("SELECT * FROM trail_checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after_seq)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i64, _>("seq"), checkpoint_from(r)))
            .collect())
    }

    /// The sequence number of the last checkpoint (0 when there is none).
    pub async fn checkpoint_max_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM trail_checkpoints")
                .fetch_one(self.reader())
                .await?,
        )
    }

    /// Every chain's head.
    pub async fn trail_heads(&self) -> Result<Vec<TrailHead>> {
        let rows = sqlx::query(
            "SELECT chain, log, registry, last_seq, count, state FROM trail_heads ORDER BY chain",
        )
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .iter()
            .map(|r| TrailHead {
                chain: r.get(0),
                log: r.get(1),
                registry: r.get(2),
                head: ChainState {
                    last_seq: r.get(3),
                    count: r.get(4),
                    state: ChainState::state_from_hex(&r.get::<String, _>(5)).unwrap_or_default(),
                },
            })
            .collect())
    }

    /// The newest checkpoint of each chain, and its newest of kind `prune` (where verification starts).
    pub async fn newest_checkpoints(
        &self,
    ) -> Result<HashMap<String, (Checkpoint, Option<Checkpoint>)>> {
        let rows = sqlx::query(
            "SELECT c.* FROM trail_checkpoints c JOIN (SELECT chain, MAX(seq) AS seq FROM trail_checkpoints
                 GROUP BY chain) n ON c.seq = n.seq
             UNION
             SELECT c.* FROM trail_checkpoints c JOIN (SELECT chain, MAX(seq) AS seq FROM trail_checkpoints
                 WHERE kind = 'prune' GROUP BY chain) n ON c.seq = n.seq
             ORDER BY seq",
        )
        .fetch_all(self.reader())
        .await?;
        let mut out: HashMap<String, (Checkpoint, Option<Checkpoint>)> = HashMap::new();
        // In seq order: the last row seen of a chain is its newest; its prune row comes at or before it.
        for c in rows.iter().map(checkpoint_from) {
            let prune = (c.kind == CheckpointKind::Prune).then(|| c.clone());
            let entry = out.entry(c.chain.clone()).or_insert((c.clone(), None));
            entry.0 = c;
            if prune.is_some() {
                entry.1 = prune;
            }
        }
        Ok(out)
    }

    /// Stores checkpoints (signed by the caller) in one transaction; returns their seqs.
    pub async fn record_checkpoints(&self, checkpoints: &[Checkpoint]) -> Result<Vec<i64>> {
        let mut tx = self.begin_write().await?;
        let mut seqs = Vec::new();
        for c in checkpoints {
            seqs.push(insert_checkpoint(&mut tx, c).await?);
        }
        tx.commit().await?;
        Ok(seqs)
    }
}
