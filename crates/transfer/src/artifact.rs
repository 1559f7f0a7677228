//! The manifests of an image (an index and every child) and the blobs they reference, gathered from any source.

use crate::error::ImportError;
use moat_model::{Digest, ParsedManifest};
use moat_store::meta::ManifestRecord;

/// ACR's documented limit on manifests per imported image.
pub const MAX_MANIFESTS: usize = 50;

/// Everything an import writes: manifests children-first (the root last) and each blob once.
#[derive(Clone, Debug, Default)]
pub struct Artifact {
    pub manifests: Vec<ManifestRecord>,
    pub blobs: Vec<(Digest, u64)>,
}

impl Artifact {
    pub fn root(&self) -> Option<&Digest> {
        self.manifests.last().map(|m| &m.digest)
    }

    /// Adds one manifest (its bytes checked against `digest`) and returns the child manifests it lists, which
    /// the caller fetches and adds before this one is final. Manifests are stored in reverse discovery order by
    /// [`Artifact::finish`], so that children precede the index.
    pub fn add(
        &mut self,
        digest: &Digest,
        media_type: &str,
        body: Vec<u8>,
    ) -> Result<Vec<Digest>, ImportError> {
        let actual = Digest::of(digest.algorithm(), &body);
        if &actual != digest {
            return Err(ImportError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        if self.manifests.iter().any(|m| &m.digest == digest) {
            return Ok(vec![]);
        }
        if self.manifests.len() >= MAX_MANIFESTS {
            return Err(ImportError::TooManyManifests(MAX_MANIFESTS));
        }
        let media_type = media_type.split(';').next().unwrap_or("").trim();
        let parsed =
            ParsedManifest::parse(&body, media_type).map_err(|e| ImportError::BadManifest {
                digest: digest.to_string(),
                why: e.to_string(),
            })?;
        for d in parsed
            .config
            .iter()
            .chain(parsed.layers.iter().filter(|l| l.urls.is_none()))
        {
            if !self.blobs.iter().any(|(b, _)| b == &d.digest) {
                self.blobs.push((d.digest.clone(), d.size.max(0) as u64));
            }
        }
        let children = parsed.required_manifests().cloned().collect();
        self.manifests
            .push(ManifestRecord::new(digest.clone(), &parsed, body));
        Ok(children)
    }

    /// Puts the manifests in the order the store needs: every child before its parent, the root last.
    pub fn finish(mut self) -> Artifact {
        self.manifests.reverse();
        self
    }
}
