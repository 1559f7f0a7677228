//! What an import asks for: the source image and the target repositories and tags.

use crate::error::ImportError;
use moat_model::{Reference, RepositoryName, Tag};
use std::fmt;

/// `repo`, `repo:tag` or `repo@sha256:…`; `repo` alone means `repo:latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: RepositoryName,
    pub reference: Reference,
}

impl std::str::FromStr for ImageRef {
    type Err = ImportError;

    fn from_str(s: &str) -> Result<ImageRef, ImportError> {
        let bad = |why: String| {
            ImportError::InvalidInput(format!(
                "sourceImage '{s}' is not an image reference (repo, repo:tag or repo@sha256:<hex>): {why}"
            ))
        };
        let (repo, reference) = match s.split_once('@') {
            Some((repo, digest)) => (repo, digest.to_string()),
            None => match s.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, tag.to_string()),
                _ => (s, "latest".to_string()),
            },
        };
        Ok(ImageRef {
            repository: repo
                .parse()
                .map_err(|e: moat_model::NameError| bad(e.to_string()))?,
            reference: reference
                .parse()
                .map_err(|e: moat_model::NameError| bad(e.to_string()))?,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}:{t}", self.repository),
            Reference::Digest(d) => write!(f, "{}@{d}", self.repository),
        }
    }
}

impl ImageRef {
    pub fn tag(&self) -> Option<&Tag> {
        match &self.reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }
}

/// The target repositories, each with the tag to set (none: an untagged copy).
pub type ImportTargets = Vec<(RepositoryName, Option<Tag>)>;

/// `targetTags` (`repo[:tag]`, the tag defaulting to the source's, else `latest`) and
/// `untaggedTargetRepositories`; with neither, the source's own `repo:tag`.
pub fn targets(
    source: &ImageRef,
    target_tags: &[String],
    untagged: &[String],
) -> Result<ImportTargets, ImportError> {
    let mut out = Vec::new();
    for t in target_tags {
        let bad = |why: String| {
            ImportError::InvalidInput(format!("targetTags entry '{t}' is not repo[:tag]: {why}"))
        };
        let (repo, tag) = match t.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => (r, tag.to_string()),
            _ => (
                t.as_str(),
                source
                    .tag()
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "latest".into()),
            ),
        };
        let repo: RepositoryName = repo
            .parse()
            .map_err(|e: moat_model::NameError| bad(e.to_string()))?;
        let tag: Tag = tag
            .parse()
            .map_err(|e: moat_model::NameError| bad(e.to_string()))?;
        out.push((repo, Some(tag)));
    }
    for r in untagged {
        let repo: RepositoryName = r.parse().map_err(|e: moat_model::NameError| {
            ImportError::InvalidInput(format!(
                "untaggedTargetRepositories entry '{r}' is not a repository name: {e}"
            ))
        })?;
        out.push((repo, None));
    }
    if out.is_empty() {
        match source.tag() {
            Some(tag) => out.push((source.repository.clone(), Some(tag.clone()))),
            None => {
                return Err(ImportError::InvalidInput(
                    "a source image named by digest needs targetTags or untaggedTargetRepositories"
                        .into(),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r: ImageRef = "library/hello".parse().unwrap();
        assert_eq!(r.to_string(), "library/hello:latest");
        let r: ImageRef = "a/b:v1".parse().unwrap();
        assert_eq!(r.tag().unwrap().as_str(), "v1");
        let d = format!("a@sha256:{}", "0".repeat(64));
        let r: ImageRef = d.parse().unwrap();
        assert!(r.tag().is_none());
        assert!("A/B".parse::<ImageRef>().is_err());
        assert!("a@sha256:12".parse::<ImageRef>().is_err());
    }

    #[test]
    fn target_defaults() {
        let src: ImageRef = "app:v1".parse().unwrap();
        let t = targets(&src, &[], &[]).unwrap();
        assert_eq!(t[0].0.as_str(), "app");
        assert_eq!(t[0].1.as_ref().unwrap().as_str(), "v1");
        let t = targets(&src, &["copy".into(), "other:v9".into()], &["bare".into()]).unwrap();
        assert_eq!(t[0].1.as_ref().unwrap().as_str(), "v1");
        assert_eq!(t[1].1.as_ref().unwrap().as_str(), "v9");
        assert!(t[2].1.is_none());
        let by_digest: ImageRef = format!("app@sha256:{}", "1".repeat(64)).parse().unwrap();
        assert!(targets(&by_digest, &[], &[]).is_err());
        assert!(targets(&src, &["Bad:tag".into()], &[]).is_err());
    }
}
