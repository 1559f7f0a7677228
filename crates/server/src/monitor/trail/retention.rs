//! Retention: per chain, the cut is the last record older than the registry's retention, lowered to the slowest
//! covering consumer's cursor when the log has consumers; the chain is recomputed up to the cut (a chain that does
//! not verify is never pruned: it is the evidence), a signed `prune` checkpoint is stored, then the records go.

use crate::state::AppState;
use moat_model::trail::{ACTIVITY_LOG, AUDIT_LOG};

pub async fn run(state: &AppState) -> anyhow::Result<()> {
    let meta = &state.meta;
    let now = time::OffsetDateTime::now_utc();
    for h in meta.trail_heads().await? {
        let log: &'static str = match h.log.as_str() {
            AUDIT_LOG => AUDIT_LOG,
            ACTIVITY_LOG => ACTIVITY_LOG,
            _ => continue,
        };
        let registry = h.registry.as_deref();
        let days = state.config.audit.retention_days(registry);
        let cutoff = moat_store::time_fmt::format(now - time::Duration::days(i64::from(days)));
        let mut cut = meta.trail_cut_by_time(log, registry, &cutoff).await?;
        if let Some(taken) = meta.min_consumer_seq(log, registry.unwrap_or("")).await? {
            cut = cut.min(taken);
        }
        if cut <= 0 {
            continue;
        }
        let point = match meta
            .prune_point(log, registry, cut, moat_store::time_fmt::now())
            .await
        {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!("not pruning {}: {e}", h.chain);
                continue;
            }
        };
        let mut point = point;
        super::sign(state, &mut point);
        let done = meta.prune_trail(&point).await?;
        tracing::info!(
            chain = %done.chain,
            up_to = done.up_to,
            removed = done.removed,
            "audit trail pruned"
        );
    }
    Ok(())
}
