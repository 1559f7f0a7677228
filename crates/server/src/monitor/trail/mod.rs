//! The trail's upkeep: signed checkpoints of every chain head at intervals (the `checkpoint` log that diagnostic
//! settings ship, so that a copy outside the server proves the inside one), and retention, which prunes a chain
//! only up to what every covering consumer has taken and only after a signed checkpoint at the prune point.

mod retention;

use crate::state::AppState;
use moat_model::trail::{Checkpoint, CheckpointKind};
use std::collections::BTreeMap;
use std::time::Duration;

/// `[audit]` in moat.toml: how long the trail is kept.
///
/// ```toml
/// [audit]
/// retention_days = 90          # every registry's default
/// [audit.registry.prod]
/// retention_days = 365         # this registry's
/// ```
/// Records are removed once older than their registry's retention AND taken by every consumer that covers them
/// (diagnostic-setting sinks, metrics, alerts, webhooks). `0` keeps only what a consumer has not taken yet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    pub retention_days: u32,
    pub registry: BTreeMap<String, RegistryAudit>,
    /// How often chain heads are signed (`--trail-checkpoint-interval-secs`).
    #[serde(skip)]
    pub checkpoint_interval: Duration,
    /// How often retention runs (`--trail-retention-interval-secs`).
    #[serde(skip)]
    pub retention_interval: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAudit {
    pub retention_days: u32,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            retention_days: 90,
            registry: BTreeMap::new(),
            checkpoint_interval: Duration::from_secs(300),
            retention_interval: Duration::from_secs(3600),
        }
    }
}

impl AuditSection {
    /// The retention of `registry`'s records (the default for records of no registry).
    pub fn retention_days(&self, registry: Option<&str>) -> u32 {
        registry
            .and_then(|r| {
                self.registry
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(r))
            })
            .map_or(self.retention_days, |(_, a)| a.retention_days)
    }
}

pub fn start(state: &AppState) {
    let c = &state.config.audit;
    if !c.checkpoint_interval.is_zero() {
        let s = state.clone();
        state
            .jobs
            .every("trail-checkpoint", c.checkpoint_interval, move || {
                let s = s.clone();
                async move {
                    if let Err(e) = checkpoint_heads(&s).await {
                        tracing::warn!("audit trail checkpoint: {e}");
                    }
                }
            });
    }
    if !c.retention_interval.is_zero() {
        let s = state.clone();
        state
            .jobs
            .every("trail-retention", c.retention_interval, move || {
                let s = s.clone();
                async move {
                    if let Err(e) = retention::run(&s).await {
                        tracing::warn!("audit trail retention: {e}");
                    }
                }
            });
    }
}

/// Signs `c` with the current `audit` key.
pub fn sign(state: &AppState, c: &mut Checkpoint) {
    let key = state.keys.audit.current();
    let signer = crate::keys::transfer_signer(&key);
    c.key_id = key.kid.clone();
    c.signature = hex::encode(signer.sign(&c.message()));
}

/// Signs every head that moved (or was signed by a key since rotated) since its newest checkpoint.
pub async fn checkpoint_heads(state: &AppState) -> anyhow::Result<usize> {
    let heads = state.meta.trail_heads().await?;
    let newest = state.meta.newest_checkpoints().await?;
    let kid = state.keys.audit.current().kid;
    let now = moat_store::time_fmt::now();
    let mut out = Vec::new();
    for h in heads {
        let state_hex = hex::encode(h.head.state);
        if let Some((c, _)) = newest.get(&h.chain) {
            if c.last_seq == h.head.last_seq && c.state == state_hex && c.key_id == kid {
                continue;
            }
        }
        let mut c = Checkpoint {
            chain: h.chain,
            log: h.log,
            registry: h.registry,
            last_seq: h.head.last_seq,
            count: h.head.count,
            state: state_hex,
            time: now.clone(),
            kind: CheckpointKind::Interval,
            key_id: String::new(),
            signature: String::new(),
        };
        sign(state, &mut c);
        out.push(c);
    }
    state.meta.record_checkpoints(&out).await?;
    Ok(out.len())
}
