//! The audit trail's integrity: every audit and activity record is chained by hash to the one before it in its
//! chain (one chain per registry per log, plus one for activity records of no registry), and the chains' heads are
//! signed at intervals (checkpoints) so that a copy shipped outside the server proves the inside one.
//!
//! `state_i = SHA-256(state_{i-1} || seq_i as 8 bytes big-endian || canonical bytes of record i)`, starting from 32
//! zero bytes. Each stored row keeps a short link (the first 6 bytes of its state), so a verifier names the first
//! record whose content, position or predecessor changed; each chain's head (last seq, count, full state) is kept
//! in the transaction that appends to it. Pure: no I/O.

mod canonical;
mod chain;
mod checkpoint;
pub mod codec;

pub use canonical::{AuditCanonical, TimeValue};
pub use chain::{chain_name, ChainState, GENESIS};
pub use checkpoint::{Checkpoint, CheckpointKind};

/// The two logs that are chained, as `log_consumers.log` names them.
pub const AUDIT_LOG: &str = "audit";
pub const ACTIVITY_LOG: &str = "activity";
/// The signed chain heads' own log (what diagnostic settings ship as `MoatAuditTrail`).
pub const CHECKPOINT_LOG: &str = "checkpoint";
