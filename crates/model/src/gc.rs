//! What garbage collection may remove. The store gathers the facts about one queued item inside the transaction
//! that would remove it and asks these functions; they are the whole rule.
//!
//! - A repository's **link** to a blob is garbage when no manifest of that repository references the blob (as
//!   config or layer). Every new link is queued for review one grace period after it is made, so a push has that
//!   long between uploading a blob and pushing the manifest that references it.
//! - A blob's **bytes** are garbage when no repository of any registry links them and no upload or import holds
//!   a pin on them (it is placing the same bytes and has not linked them yet).
//! - A **manifest** is garbage when nothing references it any more because what did was deleted: it was queued
//!   when an index listing it or the subject it refers to was deleted, and now it has no tag, no index of its
//!   repository lists it and, if it is a referrer, its subject is gone. An untagged manifest that was pushed on
//!   its own is kept, as ACR keeps it: clients pull by digest, and purging untagged manifests is a retention
//!   policy's decision, not the collector's.
//!
//! An item is due for review when it has been queued for at least the grace period; anything that needs it again
//! in that time (a new link, a manifest that references it) makes the review find it needed.

/// What a review queue row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Blob,
    Link,
    Manifest,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Link => "link",
            Kind::Manifest => "manifest",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "blob" => Some(Kind::Blob),
            "link" => Some(Kind::Link),
            "manifest" => Some(Kind::Manifest),
            _ => None,
        }
    }
}

/// Whether an item queued at `queued_at` is due at `now` with `grace_secs` (all in seconds).
pub fn due(queued_at: f64, now: f64, grace_secs: f64) -> bool {
    queued_at + grace_secs <= now
}

pub fn link_is_garbage(referenced_by_a_manifest: bool) -> bool {
    !referenced_by_a_manifest
}

pub fn bytes_are_garbage(linked_anywhere: bool, pinned: bool) -> bool {
    !linked_anywhere && !pinned
}

/// The facts about a queued manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManifestFacts {
    pub tagged: bool,
    /// Another manifest of the repository (an index) lists it.
    pub listed: bool,
    /// For a referrer: whether its subject is stored in the repository. `None` when it has no subject.
    pub subject_present: Option<bool>,
}

pub fn manifest_is_garbage(f: ManifestFacts) -> bool {
    !f.tagged && !f.listed && f.subject_present != Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds_round_trip() {
        for k in [Kind::Blob, Kind::Link, Kind::Manifest] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("tag"), None);
    }

    #[test]
    fn grace_is_inclusive_and_zero_means_now() {
        assert!(due(100.0, 100.0, 0.0));
        assert!(!due(100.0, 99.9, 0.0));
        assert!(!due(100.0, 86_499.0, 86_400.0));
        assert!(due(100.0, 86_500.0, 86_400.0));
    }

    proptest! {
        /// Anything that still references a manifest keeps it; with no reference left it is garbage.
        #[test]
        fn a_referenced_manifest_is_never_garbage(tagged: bool, listed: bool, subject in proptest::option::of(any::<bool>())) {
            let f = ManifestFacts { tagged, listed, subject_present: subject };
            prop_assert_eq!(manifest_is_garbage(f), !(tagged || listed || subject == Some(true)));
        }

        /// Bytes go only when nothing links them and nobody is placing them.
        #[test]
        fn linked_or_pinned_bytes_stay(linked: bool, pinned: bool) {
            prop_assert_eq!(bytes_are_garbage(linked, pinned), !linked && !pinned);
        }
    }
}
