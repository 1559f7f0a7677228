//! What an export run reads from its registry: each named artifact with every child of an index and every
//! referrer (signatures, SBOMs, their own referrers in turn), manifests byte for byte as stored, and each blob
//! with the size its link records (the bytes a pull would serve).

use super::{ArchiveError, ExportSet, ExportedArtifact};
use crate::spec::ImageRef;
use moat_model::{Digest, ParsedManifest, Reference, RepositoryName};
use moat_store::meta::ManifestRecord;
use moat_store::MetadataStore;
use std::collections::{BTreeMap, BTreeSet};

/// ACR's limit on artifacts per export pipeline run.
pub const MAX_ARTIFACTS: usize = 50;
/// Manifests in one export, all artifacts together: bounds the memory the head of the archive takes.
pub const MAX_EXPORT_MANIFESTS: usize = 2000;

/// Resolves ACR-style artifact strings (`repo`, `repo:tag`, `repo@sha256:…`; `repo` alone is `repo:latest`) in
/// one registry. Errors name the artifact that is missing.
pub async fn collect_export(
    meta: &MetadataStore,
    registry_id: &str,
    artifacts: &[String],
) -> Result<ExportSet, ArchiveError> {
    if artifacts.is_empty() {
        return Err(ArchiveError::NoArtifacts);
    }
    let mut refs: Vec<ImageRef> = Vec::new();
    for a in artifacts {
        let r: ImageRef = a.trim().parse().map_err(|e: crate::ImportError| {
            let why = e.to_string();
            ArchiveError::BadArtifact {
                artifact: a.clone(),
                why: why
                    .rsplit_once(": ")
                    .map(|(_, w)| w.to_string())
                    .unwrap_or(why),
            }
        })?;
        if !refs.contains(&r) {
            refs.push(r);
        }
    }
    if refs.len() > MAX_ARTIFACTS {
        return Err(ArchiveError::TooManyArtifacts {
            given: refs.len(),
            max: MAX_ARTIFACTS,
        });
    }
    let registry = meta
        .registry_by_id(registry_id)
        .await?
        .ok_or_else(|| ArchiveError::Stopped("the registry no longer exists".into()))?;
    let mut manifests: BTreeMap<Digest, ManifestRecord> = BTreeMap::new();
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut inline = BTreeMap::new();
    let mut out = Vec::new();
    for r in &refs {
        let root = meta
            .manifest(registry_id, &r.repository, &r.reference)
            .await?
            .ok_or_else(|| ArchiveError::ArtifactNotFound(r.to_string()))?;
        let root_digest: Digest = root.digest.parse().map_err(|e: moat_model::DigestError| {
            ArchiveError::BadManifest {
                digest: root.digest.clone(),
                why: e.to_string(),
            }
        })?;
        let closure = Closure::walk(meta, registry_id, &r.repository, &root_digest, r).await?;
        for (digest, size) in &closure.blobs {
            if !blobs.contains_key(digest) {
                if let Some(data) = meta.inline_blob(registry_id, &r.repository, digest).await? {
                    inline.insert(digest.clone(), data);
                }
                blobs.insert(digest.clone(), *size);
            }
        }
        let root_record = &closure.manifests.last().expect("the root").1;
        out.push(ExportedArtifact {
            repository: r.repository.to_string(),
            tag: r.tag().map(|t| t.to_string()),
            digest: root_digest.clone(),
            media_type: root_record.media_type.clone(),
            size: root_record.body.len() as u64,
            manifests: closure.manifests.iter().map(|(d, _)| d.clone()).collect(),
            blobs: closure.blobs.iter().map(|(d, _)| d.clone()).collect(),
        });
        for (d, m) in closure.manifests {
            manifests.entry(d).or_insert(m);
        }
        if manifests.len() > MAX_EXPORT_MANIFESTS {
            return Err(ArchiveError::TooManyManifests(MAX_EXPORT_MANIFESTS));
        }
    }
    Ok(ExportSet {
        artifacts: out,
        manifests: manifests.into_values().collect(),
        blobs: blobs.into_iter().collect(),
        inline,
        exporter: registry.login_server.clone(),
        created: moat_store::time_fmt::now(),
    })
}

/// One artifact's manifests (dependencies first, the root last) and blobs.
struct Closure {
    manifests: Vec<(Digest, ManifestRecord)>,
    blobs: Vec<(Digest, u64)>,
}

impl Closure {
    async fn walk(
        meta: &MetadataStore,
        registry_id: &str,
        repo: &RepositoryName,
        root: &Digest,
        artifact: &ImageRef,
    ) -> Result<Closure, ArchiveError> {
        // Discovery order, then reversed: a manifest is found before its children and referrers, so reversed,
        // they come before it and the root is last.
        let mut found: Vec<(Digest, ManifestRecord)> = Vec::new();
        let mut seen: BTreeSet<Digest> = BTreeSet::new();
        let mut queue = vec![root.clone()];
        seen.insert(root.clone());
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        while let Some(d) = queue.pop() {
            let stored = meta
                .manifest(registry_id, repo, &Reference::Digest(d.clone()))
                .await?
                .ok_or_else(|| {
                    ArchiveError::ArtifactNotFound(format!(
                        "{artifact} (its manifest {repo}@{d} is missing)"
                    ))
                })?;
            let body = stored.body.to_vec();
            let actual = Digest::of(d.algorithm(), &body);
            if actual != d {
                return Err(ArchiveError::BadManifest {
                    digest: d.to_string(),
                    why: format!("its stored bytes hash to {actual}"),
                });
            }
            let media_type = stored.media_type.split(';').next().unwrap_or("").trim();
            let parsed = ParsedManifest::parse(&body, media_type).map_err(|e| {
                ArchiveError::BadManifest {
                    digest: d.to_string(),
                    why: e.to_string(),
                }
            })?;
            for b in parsed.required_blobs() {
                if blobs.iter().any(|(x, _)| x == b) {
                    continue;
                }
                let size = meta
                    .linked_blob_size(registry_id, repo, b)
                    .await?
                    .ok_or_else(|| {
                        ArchiveError::ArtifactNotFound(format!(
                            "{artifact} (blob {b} of manifest {d} is not in {repo})"
                        ))
                    })?;
                blobs.push((b.clone(), size.max(0) as u64));
            }
            let mut next: Vec<Digest> = parsed.required_manifests().cloned().collect();
            for r in meta.referrers(registry_id, repo, &d).await? {
                if let Ok(rd) = r.digest.parse::<Digest>() {
                    next.push(rd);
                }
            }
            for c in next {
                if seen.insert(c.clone()) {
                    queue.push(c);
                }
            }
            found.push((d.clone(), ManifestRecord::new(d, &parsed, body)));
            if found.len() > MAX_EXPORT_MANIFESTS {
                return Err(ArchiveError::TooManyManifests(MAX_EXPORT_MANIFESTS));
            }
        }
        found.reverse();
        blobs.sort();
        Ok(Closure {
            manifests: found,
            blobs,
        })
    }
}
