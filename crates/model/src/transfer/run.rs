//! Pipeline runs: what one run asks for, checked against the pipeline it names.

use crate::digest::Digest;
use crate::names::{RepositoryName, Tag};
use serde::{Deserialize, Serialize};

use super::{PipelineKind, TransferError, MAX_RUN_ARTIFACTS};

/// One artifact of an export run, as ACR reads it: `repo` means `repo:latest`, else `repo:tag` or `repo@digest`.
/// Returns the normalized form.
pub fn normalize_artifact(s: &str) -> Result<String, TransferError> {
    let bad = |why: String| TransferError::new("properties.request.artifacts", why);
    let s = s.trim();
    if let Some((repo, digest)) = s.split_once('@') {
        repo.parse::<RepositoryName>()
            .map_err(|e| bad(e.to_string()))?;
        digest
            .parse::<Digest>()
            .map_err(|e| bad(format!("'{}': {e}", crate::text::escape(s))))?;
        return Ok(s.to_string());
    }
    // The tag follows the last ':' after the last '/' (a repository has no ':').
    let (repo, tag) = match s.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (s, "latest"),
    };
    repo.parse::<RepositoryName>()
        .map_err(|e| bad(e.to_string()))?;
    tag.parse::<Tag>().map_err(|e| bad(e.to_string()))?;
    Ok(format!("{repo}:{tag}"))
}

/// A blob of a run: `PipelineRunSourceProperties` / `PipelineRunTargetProperties` (`type` is `AzureStorageBlob`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunBlob {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub name: String,
}

/// A run's `request`, in its wire spelling (it is stored and answered as it was accepted, normalized).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    pub pipeline_resource_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RunBlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RunBlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_digest: Option<String>,
}

/// An archive's name in its container or directory: one path segment-ish name a blob and a file can both carry.
fn check_blob_name(target: &str, name: &str) -> Result<(), TransferError> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        && !name
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == '?' || c == '#');
    if ok {
        Ok(())
    } else {
        Err(TransferError::new(
            target,
            format!("'{}' is not a usable blob name: use letters, digits, '.', '-', '_' (and '/' between parts).", crate::text::escape(name)),
        ))
    }
}

impl RunRequest {
    /// Checks a run's request against the kind of pipeline it names (the caller has resolved
    /// `pipelineResourceId` to a pipeline of this registry) and returns it normalized.
    pub fn validate(mut self, kind: PipelineKind) -> Result<RunRequest, TransferError> {
        let blob = |b: &mut RunBlob, target: &str| -> Result<(), TransferError> {
            if !b.kind.is_empty() && !b.kind.eq_ignore_ascii_case("AzureStorageBlob") {
                return Err(TransferError::new(
                    &format!("{target}.type"),
                    "the only type is AzureStorageBlob",
                ));
            }
            b.kind = "AzureStorageBlob".into();
            check_blob_name(&format!("{target}.name"), &b.name)
        };
        match kind {
            PipelineKind::Export => {
                if self.source.is_some() {
                    return Err(TransferError::new(
                        "properties.request.source",
                        "an export run has a target, not a source",
                    ));
                }
                if self.artifacts.is_empty() || self.artifacts.len() > MAX_RUN_ARTIFACTS {
                    return Err(TransferError::new(
                        "properties.request.artifacts",
                        format!("an export run names 1 to {MAX_RUN_ARTIFACTS} artifacts (repo:tag or repo@digest); it named {}", self.artifacts.len()),
                    ));
                }
                self.artifacts = self
                    .artifacts
                    .iter()
                    .map(|a| normalize_artifact(a))
                    .collect::<Result<_, _>>()?;
                let target = self.target.as_mut().ok_or_else(|| {
                    TransferError::new(
                        "properties.request.target.name",
                        "required: the name of the archive blob to write",
                    )
                })?;
                blob(target, "properties.request.target")?;
                if self.catalog_digest.is_some() {
                    return Err(TransferError::new(
                        "properties.request.catalogDigest",
                        "an export run computes its catalogDigest; leave it out",
                    ));
                }
            }
            PipelineKind::Import => {
                if self.target.is_some() || !self.artifacts.is_empty() {
                    return Err(TransferError::new(
                        "properties.request",
                        "an import run names a source blob, not a target or artifacts",
                    ));
                }
                let source = self.source.as_mut().ok_or_else(|| {
                    TransferError::new(
                        "properties.request.source.name",
                        "required: the name of the archive blob to import",
                    )
                })?;
                blob(source, "properties.request.source")?;
                if let Some(d) = &self.catalog_digest {
                    d.parse::<Digest>().map_err(|e| {
                        TransferError::new("properties.request.catalogDigest", e.to_string())
                    })?;
                }
            }
        }
        Ok(self)
    }
}

/// A pipeline resource id's parts: `…/registries/{registry}/{exportPipelines|importPipelines}/{name}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineRef {
    pub subscription: String,
    pub resource_group: String,
    pub registry: String,
    pub kind: PipelineKind,
    pub name: String,
}

impl PipelineRef {
    pub fn parse(id: &str) -> Result<PipelineRef, TransferError> {
        let bad = || {
            TransferError::new(
                "properties.request.pipelineResourceId",
                format!("'{}' is not a pipeline's resource id: use the id `moat acr export-pipeline show` (or import-pipeline) prints.", crate::text::escape(id)),
            )
        };
        let s: Vec<&str> = id.trim_matches('/').split('/').collect();
        let [subs, sub, rg_key, rg, providers, provider, registries, registry, collection, name] =
            s[..]
        else {
            return Err(bad());
        };
        let kind = if collection.eq_ignore_ascii_case("exportPipelines") {
            PipelineKind::Export
        } else if collection.eq_ignore_ascii_case("importPipelines") {
            PipelineKind::Import
        } else {
            return Err(bad());
        };
        let fixed = subs.eq_ignore_ascii_case("subscriptions")
            && providers.eq_ignore_ascii_case("providers")
            && rg_key.eq_ignore_ascii_case("resourceGroups")
            && provider.eq_ignore_ascii_case("Microsoft.ContainerRegistry")
            && registries.eq_ignore_ascii_case("registries");
        if !fixed || name.is_empty() {
            return Err(bad());
        }
        Ok(PipelineRef {
            subscription: sub.to_string(),
            resource_group: rg.to_string(),
            registry: registry.to_string(),
            kind,
            name: name.to_string(),
        })
    }
}
