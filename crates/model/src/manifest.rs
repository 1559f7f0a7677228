//! Manifest parsing: which kind a manifest is, what it references, and what a referrers answer says of it.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The spec's limit: registries may refuse larger manifests, and a bound keeps a PUT's memory small.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("manifest media type '{0}' is not supported")]
    UnsupportedMediaType(String),
    #[error("Content-Type '{content_type}' does not match the manifest's mediaType '{body}'")]
    MediaTypeMismatch { content_type: String, body: String },
    #[error("manifest has neither layers nor manifests, so its kind cannot be told")]
    UnknownKind,
    #[error("manifest is {0} bytes, over the 4 MiB limit")]
    TooLarge(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker schema 2): references a config and layers, which are blobs.
    Image,
    /// An index or manifest list: references child manifests.
    Index,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    pub media_type: String,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

fn is_generic(content_type: &str) -> bool {
    content_type.is_empty()
        || content_type == "application/json"
        || content_type == "application/octet-stream"
}

impl ParsedManifest {
    /// Parses a manifest body. `content_type` is the request's Content-Type with parameters removed.
    pub fn parse(body: &[u8], content_type: &str) -> Result<ParsedManifest, ManifestError> {
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(body.len()));
        }
        let raw: RawManifest =
            serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let media_type = match (&raw.media_type, is_generic(content_type)) {
            (Some(body_type), false) if body_type != content_type => {
                return Err(ManifestError::MediaTypeMismatch {
                    content_type: content_type.to_string(),
                    body: body_type.clone(),
                })
            }
            (_, false) => content_type.to_string(),
            (Some(body_type), true) => body_type.clone(),
            // OCI lets mediaType be omitted; the shape then says what it is.
            (None, true) if raw.manifests.is_some() => OCI_INDEX.to_string(),
            (None, true) if raw.config.is_some() => OCI_MANIFEST.to_string(),
            (None, true) => return Err(ManifestError::UnknownKind),
        };
        let kind = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
            OCI_INDEX | DOCKER_LIST => ManifestKind::Index,
            other => return Err(ManifestError::UnsupportedMediaType(other.to_string())),
        };
        if kind == ManifestKind::Image && raw.config.is_none() {
            return Err(ManifestError::Json(
                "an image manifest needs a config descriptor".into(),
            ));
        }
        if kind == ManifestKind::Index && raw.manifests.is_none() {
            return Err(ManifestError::Json(
                "an index needs a manifests array".into(),
            ));
        }
        Ok(ParsedManifest {
            kind,
            media_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        })
    }

    /// Blobs the repository must hold for this manifest to be accepted. Non-distributable layers (those with
    /// `urls`) are fetched from elsewhere by design, so they are not required.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Digest> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| l.urls.is_none()))
            .map(|d| &d.digest)
    }

    /// Child manifests the repository must hold (indexes only).
    pub fn required_manifests(&self) -> impl Iterator<Item = &Digest> {
        self.manifests.iter().map(|d| &d.digest)
    }

    /// The artifact type a referrers listing shows: `artifactType`, else the config's media type.
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type.clone().or_else(|| {
            self.config
                .as_ref()
                .map(|c| c.media_type.clone())
                .filter(|_| self.kind == ManifestKind::Image)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parses_oci_image_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.sig",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"a","digest":"{}","size":3}},{{"mediaType":"f","digest":"{}","size":1,"urls":["http://x"]}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}}}"#,
            d('a'),
            d('b'),
            d('c'),
            d('e')
        );
        let m = ParsedManifest::parse(body.as_bytes(), OCI_MANIFEST).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(
            m.required_blobs().count(),
            2,
            "foreign layer is not required"
        );
        assert_eq!(m.subject.unwrap().digest.as_str(), d('e'));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
    }

    #[test]
    fn infers_kind_and_checks_mismatch() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}]}}"#,
            d('a')
        );
        let m = ParsedManifest::parse(idx.as_bytes(), "").unwrap();
        assert_eq!(
            (m.kind, m.media_type.as_str()),
            (ManifestKind::Index, OCI_INDEX)
        );
        let docker = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[]}}"#);
        assert!(matches!(
            ParsedManifest::parse(docker.as_bytes(), OCI_INDEX),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert_eq!(
            ParsedManifest::parse(docker.as_bytes(), DOCKER_LIST)
                .unwrap()
                .kind,
            ManifestKind::Index
        );
    }

    #[test]
    fn rejects_bad_manifests() {
        assert!(matches!(
            ParsedManifest::parse(b"{", OCI_MANIFEST),
            Err(ManifestError::Json(_))
        ));
        assert_eq!(
            ParsedManifest::parse(br#"{"schemaVersion":1}"#, OCI_MANIFEST).unwrap_err(),
            ManifestError::SchemaVersion
        );
        assert!(
            ParsedManifest::parse(br#"{"schemaVersion":2,"layers":[]}"#, OCI_MANIFEST).is_err()
        );
        assert!(matches!(
            ParsedManifest::parse(br#"{"schemaVersion":2,"config":{}}"#, "text/plain"),
            Err(ManifestError::Json(_)) | Err(ManifestError::UnsupportedMediaType(_))
        ));
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(
            ParsedManifest::parse(&big, OCI_MANIFEST),
            Err(ManifestError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), ct in "[a-z/.+]{0,40}") {
            let _ = ParsedManifest::parse(&bytes, &ct);
        }
    }
}
