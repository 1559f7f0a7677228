//! ACR Transfer's resources as a registry holds them: export and import pipelines and their runs (reference
//! `acr-transfer-monitoring.md` §1.3 spells every field). The rules here are ACR's where it documents them and
//! Moat's own where it does not (said so beside each); the management plane translates wire JSON into these types
//! and back, the store keeps them as JSON, and a pipeline run job reads them.

mod pipeline;
mod run;
#[cfg(test)]
mod tests;

pub use pipeline::*;
pub use run::*;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Most artifacts one export run may name (ACR's limit, [DOCS] transfer prerequisites).
pub const MAX_RUN_ARTIFACTS: usize = 50;

/// Bad input for a pipeline or a run: `target` is the property as the API spells it (ARM's error `target`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransferError {
    pub target: String,
    pub message: String,
}

impl TransferError {
    fn new(target: &str, message: impl Into<String>) -> TransferError {
        TransferError {
            target: target.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PipelineKind {
    Export,
    Import,
}

impl PipelineKind {
    /// The ARM resource type segment: `exportPipelines` / `importPipelines`.
    pub fn collection(self) -> &'static str {
        match self {
            PipelineKind::Export => "exportPipelines",
            PipelineKind::Import => "importPipelines",
        }
    }

    pub fn resource_type(self) -> String {
        format!(
            "Microsoft.ContainerRegistry/registries/{}",
            self.collection()
        )
    }

    /// `export` / `import`, as `az acr pipeline-run --pipeline-type` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::Export => "export",
            PipelineKind::Import => "import",
        }
    }
}

/// A pipeline's or a run's name: 5 to 50 letters and digits ([TSP] `NamePattern`, `@@minLength 5`, `@@maxLength 50`).
pub fn check_name(what: &str, name: &str) -> Result<(), TransferError> {
    let ok = (5..=50).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(TransferError::new(
            "name",
            format!(
                "{what} name '{}' is invalid: use 5 to 50 letters and digits.",
                crate::text::escape(name)
            ),
        ))
    }
}

impl fmt::Display for PipelineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
