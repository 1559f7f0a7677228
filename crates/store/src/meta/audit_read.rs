//! Reading the compact data-plane log: filters resolved to string ids first (a text filter no string matches
//! selects nothing, at once), time ranges turned into seq ranges by the sparse time map, rows read in pages by
//! seq through the registry or identity index, decoded with the ids resolved from a cache.

use super::audit::AuditFilter;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use moat_model::audit::AuditEvent;
use moat_model::trail::codec::{get_opt_i, get_u, micros_of, push_time, uuid_text};
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Rows read per query: large enough that a scan costs little per row, small enough to stop early on a limit.
const PAGE: i64 = 4096;

/// A stored time: microseconds, or text kept as written.
#[derive(Clone, Debug)]
pub(crate) enum StoredTime {
    Micros(i64),
    Text(String),
}

/// One row's fields before resolution.
#[derive(Clone, Debug, Default)]
pub(crate) struct Packed {
    pub category: i64,
    pub operation: i64,
    pub login_server: i64,
    pub repository: i64,
    pub tag: i64,
    pub digest: i64,
    pub media_type: i64,
    pub size: Option<i64>,
    pub ip: i64,
    pub user_agent: i64,
    pub duration_ms: Option<i64>,
    pub result_type: i64,
    pub result_description: i64,
    pub correlation_uuid: Option<[u8; 16]>,
    pub correlation_id: i64,
    pub endpoint: i64,
}

impl Packed {
    pub(crate) fn decode(f: &[u8]) -> Option<Packed> {
        let mut pos = 0;
        let mut u = || get_u(f, &mut pos).map(|v| v as i64);
        let category = u()?;
        let operation = u()?;
        let login_server = u()?;
        let repository = u()?;
        let tag = u()?;
        let digest = u()?;
        let media_type = u()?;
        let size = get_opt_i(f, &mut pos)?;
        let mut u = || get_u(f, &mut pos).map(|v| v as i64);
        let ip = u()?;
        let user_agent = u()?;
        let duration_ms = get_opt_i(f, &mut pos)?;
        let mut u = || get_u(f, &mut pos).map(|v| v as i64);
        let result_type = u()?;
        let result_description = u()?;
        let (mut correlation_uuid, mut correlation_id) = (None, 0);
        match get_u(f, &mut pos)? {
            0 => {}
            1 => {
                let b: [u8; 16] = f.get(pos..pos + 16)?.try_into().ok()?;
                pos += 16;
                correlation_uuid = Some(b);
            }
            2 => correlation_id = get_u(f, &mut pos)? as i64,
            _ => return None,
        }
        let endpoint = get_u(f, &mut pos)? as i64;
        (pos == f.len()).then_some(Packed {
            category,
            operation,
            login_server,
            repository,
            tag,
            digest,
            media_type,
            size,
            ip,
            user_agent,
            duration_ms,
            result_type,
            result_description,
            correlation_uuid,
            correlation_id,
            endpoint,
        })
    }

    fn ids(&self) -> [i64; 13] {
        [
            self.category,
            self.operation,
            self.login_server,
            self.repository,
            self.tag,
            self.digest,
            self.media_type,
            self.ip,
            self.user_agent,
            self.result_type,
            self.result_description,
            self.correlation_id,
            self.endpoint,
        ]
    }
}

/// One stored row.
pub(crate) struct RawRow {
    pub seq: i64,
    pub time: StoredTime,
    pub reg: i64,
    pub ident: Option<i64>,
    pub f: Vec<u8>,
}

/// A record as stored. SQLite's `t` holds an integer (microseconds) or the text of a time that did not parse;
/// PostgreSQL's is text: the microseconds' digits, or `t:` and the unparsed text.
pub(crate) fn raw_row(r: &crate::meta::DbRow, dialect: crate::meta::Dialect) -> RawRow {
    let time = match dialect {
        crate::meta::Dialect::Sqlite => match r.try_get::<i64, _>(1) {
            Ok(us) => StoredTime::Micros(us),
            Err(_) => StoredTime::Text(r.try_get::<String, _>(1).unwrap_or_default()),
        },
        crate::meta::Dialect::Postgres => {
            let s = r.try_get::<String, _>(1).unwrap_or_default();
            match (s.strip_prefix("t:"), s.parse::<i64>()) {
                (Some(text), _) => StoredTime::Text(text.to_string()),
                (None, Ok(us)) => StoredTime::Micros(us),
                (None, Err(_)) => StoredTime::Text(s),
            }
        }
    };
    RawRow {
        seq: r.get(0),
        time,
        reg: r.get(2),
        ident: r.get(3),
        f: r.get(4),
    }
}

/// Id → string for the rows being read: this scan's own map, filled from the store's cache or the database.
pub(crate) struct Resolver<'s> {
    store: &'s MetadataStore,
    /// Indexed by id (the dictionary's ids count up from 1, so a vector beats hashing a dozen ids a row), each
    /// string with its JSON text (quoted, escaped), made once per id rather than once per record exported.
    local: Vec<Option<Known>>,
    /// Ids too large to index (none in practice).
    far: HashMap<i64, Known>,
}

struct Known {
    s: Arc<str>,
    json: Box<[u8]>,
}

/// Ids below this are kept in the vector.
const DENSE: i64 = 1 << 24;

impl<'s> Resolver<'s> {
    pub(crate) fn new(store: &'s MetadataStore) -> Self {
        Resolver {
            store,
            local: Vec::new(),
            far: HashMap::new(),
        }
    }

    fn known(&self, id: i64) -> Option<&Known> {
        if (0..DENSE).contains(&id) {
            self.local.get(id as usize).and_then(Option::as_ref)
        } else {
            self.far.get(&id)
        }
    }

    fn insert(&mut self, id: i64, s: Arc<str>) {
        let json = serde_json::to_vec(&*s)
            .expect("a string serializes")
            .into_boxed_slice();
        let k = Known { s, json };
        if (0..DENSE).contains(&id) {
            let i = id as usize;
            if self.local.len() <= i {
                self.local.resize_with(i + 1, || None);
            }
            self.local[i] = Some(k);
        } else {
            self.far.insert(id, k);
        }
    }

    /// Makes every id of `rows` resolvable.
    pub(crate) async fn load(&mut self, rows: &[(RawRow, Packed)]) -> Result<()> {
        let mut missing: Vec<i64> = Vec::new();
        for (r, p) in rows {
            for id in p.ids().into_iter().chain([r.reg]).chain(r.ident) {
                if id != 0 && self.known(id).is_none() {
                    match self.store.dictionary.string(id) {
                        Some(s) => self.insert(id, s),
                        None => missing.push(id),
                    }
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        for chunk in missing.chunks(500) {
            let sql = format!(
                "SELECT id, s FROM trail_strings WHERE id IN ({})",
                super::dialect::param_list(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            let mut learned = Vec::new();
            for r in q.fetch_all(self.store.reader()).await? {
                let (id, s): (i64, String) = (r.get(0), r.get(1));
                let s: Arc<str> = Arc::from(s);
                self.insert(id, s.clone());
                learned.push((s, id));
            }
            self.store.dictionary.learn(learned);
        }
        Ok(())
    }

    pub(crate) fn get(&self, id: i64) -> Option<&str> {
        if id == 0 {
            None
        } else {
            // A dangling id reads as empty text: verification reports the record, readers still see the rest.
            Some(self.known(id).map(|k| &*k.s).unwrap_or(""))
        }
    }

    /// [`Self::get`] as JSON text: `null`, or the string quoted and escaped as serde_json writes it.
    pub(crate) fn get_json(&self, id: i64) -> &[u8] {
        if id == 0 {
            b"null"
        } else {
            self.known(id).map(|k| &*k.json).unwrap_or(b"\"\"")
        }
    }

    /// The event a row says.
    pub(crate) fn event(&self, r: &RawRow, p: &Packed) -> AuditEvent {
        let s = |id| self.get(id).map(str::to_string);
        let req = |id| self.get(id).unwrap_or("").to_string();
        AuditEvent {
            time_generated: match &r.time {
                StoredTime::Micros(us) => {
                    let mut t = String::with_capacity(27);
                    push_time(&mut t, *us);
                    t
                }
                StoredTime::Text(t) => t.clone(),
            },
            category: req(p.category),
            operation_name: req(p.operation),
            registry: req(r.reg),
            login_server: req(p.login_server),
            repository: s(p.repository),
            tag: s(p.tag),
            digest: s(p.digest),
            media_type: s(p.media_type),
            size: p.size,
            identity: r.ident.and_then(s),
            caller_ip_address: s(p.ip),
            user_agent: s(p.user_agent),
            duration_ms: p.duration_ms,
            result_type: req(p.result_type),
            result_description: req(p.result_description),
            correlation_id: match p.correlation_uuid {
                Some(b) => Some(uuid_text(&b)),
                None => s(p.correlation_id),
            },
            endpoint: s(p.endpoint),
        }
    }
}

/// A filter resolved to ids; `None` from [`MetadataStore::resolve_filter`] means nothing can match.
struct Resolved {
    reg: Option<i64>,
    idents: Option<Vec<i64>>,
    repositories: Option<HashSet<i64>>,
    operations: Option<HashSet<i64>>,
    results: Option<HashSet<i64>>,
    since: Option<i64>,
    until: Option<i64>,
    lo: i64,
    hi: i64,
}

fn bad_time(s: &str) -> StoreError {
    StoreError::Invalid(format!("'{s}' is not a stored time"))
}

impl MetadataStore {
    async fn ids_nocase(&self, s: &str) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT id FROM trail_strings WHERE {}",
            self.dialect().eq_nocase("s", 1)
        ))
        .bind(s)
        .fetch_all(self.reader())
        .await?)
    }

    async fn resolve_filter(&self, f: &AuditFilter) -> Result<Option<Resolved>> {
        let reg = match &f.registry {
            None => None,
            Some(r) => {
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM trail_strings WHERE s = $1")
                        .bind(r)
                        .fetch_optional(self.reader())
                        .await?;
                match id {
                    None => return Ok(None),
                    some => some,
                }
            }
        };
        let mut sets = Vec::new();
        for v in [&f.identity, &f.repository, &f.operation, &f.result] {
            sets.push(match v {
                None => None,
                Some(v) => {
                    let ids = self.ids_nocase(v).await?;
                    if ids.is_empty() {
                        return Ok(None);
                    }
                    Some(ids)
                }
            });
        }
        let [idents, repositories, operations, results]: [Option<Vec<i64>>; 4] =
            sets.try_into().expect("four filters");
        let since = f
            .since
            .as_deref()
            .map(|s| micros_of(s).ok_or_else(|| bad_time(s)))
            .transpose()?;
        let until = f
            .until
            .as_deref()
            .map(|s| micros_of(s).ok_or_else(|| bad_time(s)))
            .transpose()?;
        let (mut lo, mut hi) = (f.after_seq.unwrap_or(0) + 1, i64::MAX);
        if since.is_some() || until.is_some() {
            let r = sqlx::query(
                "SELECT MIN(first_seq), MAX(last_seq) FROM audit_time_map WHERE max_t >= $1 AND min_t < $2",
            )
            .bind(since.unwrap_or(i64::MIN))
            .bind(until.unwrap_or(i64::MAX))
            .fetch_one(self.reader())
            .await?;
            match (r.get::<Option<i64>, _>(0), r.get::<Option<i64>, _>(1)) {
                (Some(a), Some(b)) => {
                    lo = lo.max(a);
                    hi = b;
                }
                _ => return Ok(None),
            }
        }
        let set = |v: Option<Vec<i64>>| v.map(|v| v.into_iter().collect::<HashSet<i64>>());
        Ok(Some(Resolved {
            reg,
            idents,
            repositories: set(repositories),
            operations: set(operations),
            results: set(results),
            since,
            until,
            lo,
            hi,
        }))
    }

    /// Calls `visit` with each row `f` selects, in seq order (descending when `newest_first`), until it returns
    /// false or `f.limit` rows were visited.
    pub(crate) async fn audit_scan<F>(&self, f: &AuditFilter, mut visit: F) -> Result<()>
    where
        F: FnMut(&Resolver<'_>, &RawRow, &Packed) -> bool,
    {
        let Some(r) = self.resolve_filter(f).await? else {
            return Ok(());
        };
        let mut left = f.limit.filter(|l| *l >= 0).unwrap_or(i64::MAX);
        let mut sql = String::from(
            "SELECT seq, t, reg, ident, f FROM audit_records WHERE seq >= ? AND seq <= ?",
        );
        if r.reg.is_some() {
            sql.push_str(" AND reg = ?");
        }
        if let Some(ids) = &r.idents {
            sql.push_str(&format!(
                " AND ident IN ({})",
                vec!["?"; ids.len()].join(",")
            ));
        }
        sql.push_str(if f.newest_first {
            " ORDER BY seq DESC LIMIT ?"
        } else {
            " ORDER BY seq LIMIT ?"
        });
        let sql = super::dialect::numbered(&sql);
        let (mut lo, mut hi) = (r.lo, r.hi);
        let mut resolver = Resolver::new(self);
        while lo <= hi && left > 0 {
            let mut q = sqlx::query(&sql).bind(lo).bind(hi);
            if let Some(reg) = r.reg {
                q = q.bind(reg);
            }
            for id in r.idents.iter().flatten() {
                q = q.bind(id);
            }
            let page = q.bind(PAGE).fetch_all(self.reader()).await?;
            let full = page.len() as i64 == PAGE;
            let mut rows = Vec::with_capacity(page.len());
            for row in &page {
                let raw = raw_row(row, self.dialect());
                if f.newest_first {
                    hi = raw.seq - 1;
                } else {
                    lo = raw.seq + 1;
                }
                let in_time = match raw.time {
                    StoredTime::Micros(us) => {
                        r.since.is_none_or(|s| us >= s) && r.until.is_none_or(|u| us < u)
                    }
                    StoredTime::Text(_) => r.since.is_none() && r.until.is_none(),
                };
                if !in_time {
                    continue;
                }
                let Some(p) = Packed::decode(&raw.f) else {
                    tracing::warn!("audit record {} is not readable", raw.seq);
                    continue;
                };
                let keep = |set: &Option<HashSet<i64>>, id: i64| {
                    set.as_ref().is_none_or(|s| s.contains(&id))
                };
                if keep(&r.repositories, p.repository)
                    && keep(&r.operations, p.operation)
                    && keep(&r.results, p.result_type)
                {
                    rows.push((raw, p));
                }
            }
            resolver.load(&rows).await?;
            for (raw, p) in &rows {
                if left == 0 {
                    break;
                }
                left -= 1;
                if !visit(&resolver, raw, p) {
                    return Ok(());
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        Ok(self
            .audit_rows(f)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// The events `f` selects with their sequence numbers (the order they were written in).
    pub async fn audit_rows(&self, f: &AuditFilter) -> Result<Vec<(i64, AuditEvent)>> {
        let mut out = Vec::new();
        self.audit_scan(f, |res, raw, p| {
            out.push((raw.seq, res.event(raw, p)));
            true
        })
        .await?;
        Ok(out)
    }

    /// Writes the rows `f` selects as JSON lines (the same text as `serde_json::to_string(&AuditEvent)` each)
    /// to `out`, flushing every so often; returns how many. The export path: no `AuditEvent` is built.
    pub async fn audit_export<W: std::io::Write>(
        &self,
        f: &AuditFilter,
        out: &mut W,
    ) -> Result<u64> {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut n = 0u64;
        let mut failed: Option<std::io::Error> = None;
        self.audit_scan(f, |res, raw, p| {
            super::audit_json::write_json(&mut buf, res, raw, p);
            n += 1;
            if buf.len() >= 1 << 20 {
                if let Err(e) = out.write_all(&buf) {
                    failed = Some(e);
                    return false;
                }
                buf.clear();
            }
            true
        })
        .await?;
        if let Some(e) = failed {
            return Err(StoreError::Invalid(format!("writing the export: {e}")));
        }
        out.write_all(&buf)
            .map_err(|e| StoreError::Invalid(format!("writing the export: {e}")))?;
        Ok(n)
    }

    /// The sequence number of the last event written (0 when there is none).
    pub async fn audit_max_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar(&self.dialect().last_seq("audit_records"))
                .fetch_one(self.reader())
                .await?,
        )
    }

    /// The operation names the data-plane log holds (names recorded by earlier versions included).
    pub async fn audit_operation_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT s FROM trail_strings WHERE id IN (SELECT id FROM audit_operations) ORDER BY s",
        )
        .fetch_all(self.reader())
        .await?)
    }

    /// Whether either log holds a row of `registry` (a registry deleted since still has its trail).
    pub async fn logs_mention_registry(&self, registry: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM activity_events WHERE registry = $1)
                OR EXISTS (SELECT 1 FROM audit_records WHERE reg =
                    (SELECT id FROM trail_strings WHERE s = $1))",
        )
        .bind(registry.to_ascii_lowercase())
        .fetch_optional(self.reader())
        .await?;
        Ok(found.is_some())
    }
}
