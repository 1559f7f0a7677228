//! `moat audit verify`: recomputes every chain (or one registry's) from its start (the newest prune checkpoint, or
//! the beginning) in one streaming pass per log, and reports the first record whose link does not follow, each
//! seq missing from the log above the prune points, each head that does not match, and each newest checkpoint
//! whose state the recomputed chain does not pass through. Signatures are checked by the caller, which holds the
//! keys.

use super::audit::canonical as audit_canonical;
use super::audit_read::{raw_row, Packed, Resolver};
use super::trail_convert::columns;
use super::MetadataStore;
use crate::error::Result;
use moat_model::trail::{
    chain_name, AuditCanonical, ChainState, Checkpoint, ACTIVITY_LOG, AUDIT_LOG,
};
use sqlx::Row;
use std::collections::HashMap;

/// One thing wrong, at the first record it concerns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TrailProblem {
    pub log: String,
    pub chain: String,
    /// The record (or the first missing seq) it concerns.
    pub seq: i64,
    pub what: String,
}

/// What verification found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TrailReport {
    /// Records recomputed, per log.
    pub audit_records: u64,
    pub activity_records: u64,
    /// Chains checked.
    pub chains: usize,
    /// Sorted by seq within each log; empty when the trail is intact.
    pub problems: Vec<TrailProblem>,
    /// The newest checkpoint of each chain checked (the caller checks their signatures).
    #[serde(skip)]
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Default)]
struct ChainCheck {
    state: ChainState,
    /// Records at or below this seq were pruned (the prune checkpoint's last record).
    start: i64,
    broken: bool,
    /// The newest checkpoint's (last_seq, state hex), and whether the chain passed through it.
    target: Option<(i64, String)>,
    reached: bool,
}

struct Checker {
    log: &'static str,
    chains: HashMap<String, ChainCheck>,
    problems: Vec<TrailProblem>,
    prev_seq: Option<i64>,
    /// Seqs at or below this may be missing (pruned); above it, a missing seq is a deleted record.
    floor: i64,
    check_gaps: bool,
    records: u64,
}

impl Checker {
    fn problem(&mut self, chain: &str, seq: i64, what: String) {
        self.problems.push(TrailProblem {
            log: self.log.into(),
            chain: chain.into(),
            seq,
            what,
        });
    }

    fn record(&mut self, chain: &str, seq: i64, canonical: &[u8], stored: Option<i64>) {
        if self.check_gaps {
            let expected = self.prev_seq.map_or(self.floor + 1, |p| p + 1);
            if seq > expected && seq - 1 > self.floor {
                let from = expected.max(self.floor + 1);
                let what = if from == seq - 1 {
                    format!("record {from} was deleted")
                } else {
                    format!("records {from} to {} were deleted", seq - 1)
                };
                self.problem(chain, from, what);
            }
            self.prev_seq = Some(seq);
        }
        self.records += 1;
        let c = self.chains.entry(chain.to_string()).or_default();
        if c.broken || seq <= c.start {
            return;
        }
        let link = c.state.append(seq, canonical);
        let mut bad = None;
        if Some(link) != stored {
            c.broken = true;
            bad = Some(format!(
                "record {seq} does not follow its chain: it was edited or moved, or the record before it in \
                 {chain} was deleted or edited"
            ));
        } else if let Some((at, state)) = &c.target {
            if *at == seq {
                c.reached = true;
                if hex::encode(c.state.state) != *state {
                    c.broken = true;
                    bad = Some(format!(
                        "the chain at record {seq} differs from its signed checkpoint: records up to it were \
                         rewritten"
                    ));
                }
            }
        }
        if let Some(what) = bad {
            self.problem(chain, seq, what);
        }
    }
}

impl MetadataStore {
    /// The state of the chain of `registry` in `log` after its last record at or below `upto`, recomputed from the
    /// chain's start; an error when the records up to there do not verify (never prune what does not verify: it is
    /// the evidence).
    pub(crate) async fn chain_state_at(
        &self,
        log: &'static str,
        registry: Option<&str>,
        upto: i64,
    ) -> Result<ChainState> {
        let chain = chain_name(log, registry);
        let mut c = ChainCheck::default();
        if let Some((_, Some(p))) = self.newest_checkpoints().await?.remove(&chain) {
            c.start = p.last_seq;
            c.state = ChainState {
                last_seq: p.last_seq,
                count: p.count,
                state: ChainState::state_from_hex(&p.state).unwrap_or_default(),
            };
        }
        let mut checker = Checker {
            log,
            chains: HashMap::from([(chain.clone(), c)]),
            problems: Vec::new(),
            prev_seq: None,
            floor: 0,
            check_gaps: false,
            records: 0,
        };
        match log {
            AUDIT_LOG => self.verify_audit(&mut checker, registry, upto).await?,
            _ => self.verify_activity(&mut checker, registry, upto).await?,
        }
        if let Some(p) = checker.problems.first() {
            return Err(crate::error::StoreError::Invalid(format!(
                "{} does not verify at record {}: {}",
                p.chain, p.seq, p.what
            )));
        }
        Ok(checker.chains.remove(&chain).unwrap_or_default().state)
    }

    /// Recomputes the chains of both logs (of `registry` only, when given).
    pub async fn verify_trail(&self, registry: Option<&str>) -> Result<TrailReport> {
        let registry = registry.map(str::to_ascii_lowercase);
        let heads = self.trail_heads().await?;
        let checkpoints = self.newest_checkpoints().await?;
        let mut report = TrailReport::default();
        for log in [AUDIT_LOG, ACTIVITY_LOG] {
            let wanted = |r: &Option<String>| registry.is_none() || *r == registry;
            let mut checker = Checker {
                log,
                chains: HashMap::new(),
                problems: Vec::new(),
                prev_seq: None,
                floor: 0,
                check_gaps: registry.is_none(),
                records: 0,
            };
            for (chain, (newest, prune)) in &checkpoints {
                if newest.log != log || !wanted(&newest.registry) {
                    continue;
                }
                let mut c = ChainCheck::default();
                if let Some(p) = prune {
                    c.start = p.last_seq;
                    c.state = ChainState {
                        last_seq: p.last_seq,
                        count: p.count,
                        state: ChainState::state_from_hex(&p.state).unwrap_or_default(),
                    };
                    checker.floor = checker.floor.max(p.last_seq);
                }
                if newest.last_seq > c.start {
                    c.target = Some((newest.last_seq, newest.state.clone()));
                } else {
                    c.reached = true;
                }
                checker.chains.insert(chain.clone(), c);
                report.checkpoints.push(newest.clone());
            }
            match log {
                AUDIT_LOG => {
                    self.verify_audit(&mut checker, registry.as_deref(), i64::MAX)
                        .await?
                }
                _ => {
                    self.verify_activity(&mut checker, registry.as_deref(), i64::MAX)
                        .await?
                }
            }
            // Heads: the recomputed end of each chain must be where the head says it is.
            for h in heads.iter().filter(|h| h.log == log && wanted(&h.registry)) {
                let c = checker.chains.remove(&h.chain).unwrap_or_default();
                if c.broken {
                    continue;
                }
                if c.state.last_seq < h.head.last_seq {
                    checker.problem(
                        &h.chain,
                        c.state.last_seq + 1,
                        format!(
                            "records after {} were deleted: the chain's head says its last record is {}",
                            c.state.last_seq, h.head.last_seq
                        ),
                    );
                } else if c.state != h.head {
                    checker.problem(
                        &h.chain,
                        h.head.last_seq,
                        "the chain's head does not match its records (the head was edited)".into(),
                    );
                } else if c.target.is_some() && !c.reached {
                    let at = c.target.as_ref().map_or(0, |t| t.0);
                    checker.problem(
                        &h.chain,
                        at,
                        format!(
                            "record {at}, the last one its signed checkpoint covers, is missing"
                        ),
                    );
                }
                report.chains += 1;
            }
            for (chain, c) in checker.chains.drain().collect::<Vec<_>>() {
                if c.state.count > 0 && !c.broken {
                    checker.problem(
                        &chain,
                        c.state.last_seq,
                        "the chain has no head (it was deleted)".into(),
                    );
                }
            }
            checker.problems.sort_by_key(|p| p.seq);
            match log {
                AUDIT_LOG => report.audit_records = checker.records,
                _ => report.activity_records = checker.records,
            }
            report.problems.extend(checker.problems);
        }
        Ok(report)
    }

    async fn verify_audit(
        &self,
        checker: &mut Checker,
        registry: Option<&str>,
        upto: i64,
    ) -> Result<()> {
        let reg: Option<i64> = match registry {
            None => None,
            Some(r) => {
                let id = sqlx::query_scalar("SELECT id FROM trail_strings WHERE s = $1")
                    .bind(r)
                    .fetch_optional(self.reader())
                    .await?;
                match id {
                    None => return Ok(()),
                    some => some,
                }
            }
        };
        let sql = format!(
            "SELECT seq, t, reg, ident, f, link FROM audit_records WHERE seq > $1 AND seq <= $2 {} ORDER BY seq LIMIT 8192",
            if reg.is_some() { "AND reg = $3" } else { "" }
        );
        let mut after = 0i64;
        let mut resolver = Resolver::new(self);
        let mut canon = AuditCanonical::default();
        loop {
            let mut q = sqlx::query(&sql).bind(after).bind(upto);
            if let Some(r) = reg {
                q = q.bind(r);
            }
            let page = q.fetch_all(self.reader()).await?;
            let Some(last) = page.last() else { break };
            after = last.get(0);
            let mut rows = Vec::with_capacity(page.len());
            for r in &page {
                let raw = raw_row(r, self.dialect());
                let link: Option<i64> = r.get(5);
                // An unreadable row cannot chain: decode it as empty fields so that its link fails.
                let p = Packed::decode(&raw.f).unwrap_or_default();
                rows.push(((raw, p), link));
            }
            let pairs: Vec<_> = rows.into_iter().collect();
            let (rows, links): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            resolver.load(&rows).await?;
            for ((raw, p), link) in rows.iter().zip(links) {
                let e = resolver.event(raw, p);
                let time = match &raw.time {
                    super::audit_read::StoredTime::Micros(us) => {
                        moat_model::trail::TimeValue::Micros(*us)
                    }
                    super::audit_read::StoredTime::Text(t) => moat_model::trail::TimeValue::Text(t),
                };
                let chain = chain_name(AUDIT_LOG, Some(&e.registry));
                checker.record(&chain, raw.seq, audit_canonical(&mut canon, time, &e), link);
            }
        }
        Ok(())
    }

    async fn verify_activity(
        &self,
        checker: &mut Checker,
        registry: Option<&str>,
        upto: i64,
    ) -> Result<()> {
        let sql = format!(
            "SELECT seq, event_data_id, time, category, operation_name, resource_id, registry, caller,
                caller_ip_address, status, sub_status, http_status_code, level, correlation_id, properties, link
             FROM activity_events WHERE seq > $1 AND seq <= $2 {} ORDER BY seq LIMIT 8192",
            if registry.is_some() { "AND registry = $3" } else { "" }
        );
        let mut after = 0i64;
        let mut canon = AuditCanonical::default();
        loop {
            let mut q = sqlx::query(&sql).bind(after).bind(upto);
            if let Some(r) = registry {
                q = q.bind(r);
            }
            let page = q.fetch_all(self.reader()).await?;
            let Some(last) = page.last() else { break };
            after = last.get(0);
            for r in &page {
                let cols = columns(r);
                let chain = chain_name(ACTIVITY_LOG, cols.registry);
                let link: Option<i64> = r.get("link");
                checker.record(
                    &chain,
                    r.get(0),
                    super::activity::canonical(&mut canon, &cols),
                    link,
                );
            }
        }
        Ok(())
    }
}
