//! Reading an image from a registry on this server: its manifests come from the metadata store; its blobs are
//! already stored, so the import only links them.

use crate::artifact::Artifact;
use crate::error::ImportError;
use crate::spec::ImageRef;
use moat_model::{Digest, Reference};
use moat_store::MetadataStore;

pub async fn collect(
    meta: &MetadataStore,
    registry_id: &str,
    image: &ImageRef,
) -> Result<Artifact, ImportError> {
    let root = meta
        .manifest(registry_id, &image.repository, &image.reference)
        .await?
        .ok_or_else(|| ImportError::ImageNotFound(image.to_string()))?;
    let root_digest: Digest = root.digest.parse().map_err(|e: moat_model::DigestError| {
        ImportError::Remote(format!("stored manifest digest: {e}"))
    })?;
    let mut artifact = Artifact::default();
    let mut queue = vec![(root_digest, root.media_type, root.body.to_vec())];
    while let Some((digest, media_type, body)) = queue.pop() {
        for child in artifact.add(&digest, &media_type, body)? {
            let m = meta
                .manifest(
                    registry_id,
                    &image.repository,
                    &Reference::Digest(child.clone()),
                )
                .await?
                .ok_or_else(|| {
                    ImportError::ImageNotFound(format!("{}@{child}", image.repository))
                })?;
            queue.push((child, m.media_type, m.body.to_vec()));
        }
    }
    Ok(artifact.finish())
}
