//! The head of an archive: `oci-layout`, `index.json` and Moat's contents list, as bytes that depend on the
//! export alone. The contents list is what the signature covers and what the reader checks every later byte
//! against; `index.json` and `oci-layout` are covered through their digests in it.

use super::{blob_path, ExportSet, ExportedArtifact};
use moat_model::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const FORMAT: &str = "moat-transfer/1";
pub const CONTENTS_NAME: &str = "moat-transfer.json";
pub const SIGNATURE_NAME: &str = "moat-transfer.json.sig";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const REPOSITORY_ANNOTATION: &str = "io.moat.repository";
pub const TAG_ANNOTATION: &str = "io.moat.tag";

/// `moat-transfer.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Contents {
    pub format: String,
    /// The exporting registry's login server.
    pub exporter: String,
    pub created: String,
    /// The signing key's id and public key; absent in an unsigned archive.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub public_key: Option<String>,
    pub oci_layout: ContentsEntry,
    pub index: ContentsEntry,
    pub artifacts: Vec<ContentsArtifact>,
    /// Every `blobs/…` file of the archive in the order it appears: manifests (with their media type) first.
    pub entries: Vec<ContentsEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentsEntry {
    pub digest: Digest,
    pub size: u64,
    /// Set for manifests: the media type they are stored with.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub media_type: Option<String>,
}

pub type ContentsArtifact = ExportedArtifact;

/// The archive's head, built once per write.
pub(crate) struct Head {
    pub index_json: Vec<u8>,
    pub contents: Contents,
    pub contents_json: Vec<u8>,
}

/// `ref.name` for each artifact: its tag, or `repo:tag` where two exported artifacts share a tag (skopeo picks an
/// image by ref.name, which must then be unique); none for an artifact exported by digest.
fn ref_names(artifacts: &[ExportedArtifact]) -> Vec<Option<String>> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for a in artifacts {
        if let Some(t) = &a.tag {
            *count.entry(t).or_default() += 1;
        }
    }
    artifacts
        .iter()
        .map(|a| {
            a.tag.as_ref().map(|t| {
                if count[t.as_str()] > 1 {
                    format!("{}:{t}", a.repository)
                } else {
                    t.clone()
                }
            })
        })
        .collect()
}

pub(crate) fn index_json(artifacts: &[ExportedArtifact]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = artifacts
        .iter()
        .zip(ref_names(artifacts))
        .map(|(a, ref_name)| {
            let mut ann = serde_json::Map::new();
            if let Some(r) = ref_name {
                ann.insert(REF_NAME.into(), r.into());
            }
            ann.insert(REPOSITORY_ANNOTATION.into(), a.repository.clone().into());
            if let Some(t) = &a.tag {
                ann.insert(TAG_ANNOTATION.into(), t.clone().into());
            }
            serde_json::json!({
                "mediaType": a.media_type,
                "digest": a.digest,
                "size": a.size,
                "annotations": ann,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("serialisable")
}

/// The `blobs/…` entries in archive order: manifests by digest, then every other blob by digest.
pub(crate) fn entries(set: &ExportSet) -> Vec<ContentsEntry> {
    let mut manifests: Vec<ContentsEntry> = set
        .manifests
        .iter()
        .map(|m| ContentsEntry {
            digest: m.digest.clone(),
            size: m.body.len() as u64,
            media_type: Some(m.media_type.clone()),
        })
        .collect();
    manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
    manifests.dedup_by(|a, b| a.digest == b.digest);
    let is_manifest: BTreeSet<&Digest> = manifests.iter().map(|m| &m.digest).collect();
    let mut blobs: Vec<ContentsEntry> = set
        .blobs
        .iter()
        .filter(|(d, _)| !is_manifest.contains(d))
        .map(|(d, size)| ContentsEntry {
            digest: d.clone(),
            size: *size,
            media_type: None,
        })
        .collect();
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    manifests.extend(blobs);
    manifests
}

/// The directories the blob entries live in, in archive order.
pub(crate) fn dirs(entries: &[ContentsEntry]) -> Vec<String> {
    let algs: BTreeSet<&str> = entries
        .iter()
        .map(|e| e.digest.algorithm().as_str())
        .collect();
    std::iter::once("blobs/".to_string())
        .chain(algs.into_iter().map(|a| format!("blobs/{a}/")))
        .collect()
}

pub(crate) fn head(set: &ExportSet, key: Option<(&str, String)>) -> Head {
    let index_json = index_json(&set.artifacts);
    let contents = Contents {
        format: FORMAT.into(),
        exporter: set.exporter.clone(),
        created: set.created.clone(),
        key_id: key.as_ref().map(|(kid, _)| kid.to_string()),
        public_key: key.map(|(_, pk)| pk),
        oci_layout: ContentsEntry {
            digest: Digest::sha256_of(OCI_LAYOUT),
            size: OCI_LAYOUT.len() as u64,
            media_type: None,
        },
        index: ContentsEntry {
            digest: Digest::sha256_of(&index_json),
            size: index_json.len() as u64,
            media_type: None,
        },
        artifacts: set.artifacts.clone(),
        entries: entries(set),
    };
    let contents_json = serde_json::to_vec(&contents).expect("serialisable");
    Head {
        index_json,
        contents,
        contents_json,
    }
}

impl Contents {
    /// Checks that the list is consistent with itself: every artifact's manifests and blobs are entries, and
    /// entries are in archive order without repeats.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format '{}' is not {FORMAT}: export it again with this version of Moat",
                self.format
            ));
        }
        let mut seen = BTreeSet::new();
        let mut in_blobs = false;
        let mut last: Option<&Digest> = None;
        for e in &self.entries {
            if !seen.insert(&e.digest) {
                return Err(format!("{} is listed twice", e.digest));
            }
            let is_manifest = e.media_type.is_some();
            if is_manifest && in_blobs {
                return Err(format!("manifest {} is listed after the blobs", e.digest));
            }
            if !is_manifest && !in_blobs {
                in_blobs = true;
                last = None;
            }
            if last.is_some_and(|l| l >= &e.digest) {
                return Err(format!("{} is out of order", e.digest));
            }
            last = Some(&e.digest);
        }
        let kind: BTreeMap<&Digest, bool> = self
            .entries
            .iter()
            .map(|e| (&e.digest, e.media_type.is_some()))
            .collect();
        for a in &self.artifacts {
            if a.manifests.last() != Some(&a.digest) {
                return Err(format!(
                    "artifact {} does not end with its root manifest",
                    a.reference()
                ));
            }
            for m in &a.manifests {
                if kind.get(m) != Some(&true) {
                    return Err(format!(
                        "manifest {m} of {} is not in the archive",
                        a.reference()
                    ));
                }
            }
            for b in &a.blobs {
                if !kind.contains_key(b) {
                    return Err(format!(
                        "blob {b} of {} is not in the archive",
                        a.reference()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The path of every entry, in order.
    pub(crate) fn paths(&self) -> impl Iterator<Item = (String, &ContentsEntry)> {
        self.entries.iter().map(|e| (blob_path(&e.digest), e))
    }
}
