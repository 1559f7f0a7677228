//! Remote `importImage` as a durable job (kind "remote-import").

use super::Jobs;

pub const KIND: &str = "remote-import";

/// Registers the handler of remote imports.
pub fn register(_jobs: &Jobs) {}
