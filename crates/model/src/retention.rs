//! Retention and soft delete, as ACR has them. The collector (`moat_store::gc`) gathers the facts about each
//! manifest or deleted item and asks these functions; they are the whole rule.
//!
//! - **Retention** (`policies.retentionPolicy`, Premium): an untagged manifest is purged `days` after it became
//!   untagged (pushed without a tag, or its last tag removed or moved), 0 meaning at the next run. As in ACR, only
//!   manifests untagged since the policy was enabled count: turning the policy on never purges what was already
//!   untagged, which clients may pull by digest. A manifest an index lists, or a referrer whose subject is stored,
//!   is kept (it is needed by what is tagged); so would be a locked one (`writeEnabled: false`), but Moat has no
//!   locks.
//! - **Soft delete** (`policies.softDeletePolicy`, every SKU): a deleted manifest or tag is kept `retentionDays`
//!   (1–90) and can be listed and restored; it is purged once that many days have passed since it was deleted,
//!   judged with the policy's current value (ACR: changing the days changes when what is already deleted goes;
//!   disabling the policy does not stop the purge of what is kept).
//! - The two cannot both be enabled (ACR refuses the combination).

use crate::gc::ManifestFacts;

pub const DAY_SECS: f64 = 86_400.0;
pub const RETENTION_DAYS: std::ops::RangeInclusive<i64> = 0..=365;
pub const SOFT_DELETE_DAYS: std::ops::RangeInclusive<i64> = 1..=90;

/// Whether the retention policy purges a manifest: `untagged_since` is when it became untagged (unix seconds),
/// `enabled_at` when the policy was turned on.
pub fn retention_purges(
    f: ManifestFacts,
    untagged_since: f64,
    enabled_at: f64,
    now: f64,
    days: i64,
) -> bool {
    !f.tagged
        && !f.listed
        && f.subject_present != Some(true)
        && untagged_since >= enabled_at
        && untagged_since + days as f64 * DAY_SECS <= now
}

/// Whether a soft-deleted manifest or tag deleted at `deleted_at` is purged at `now` with `days` of retention.
pub fn soft_delete_expired(deleted_at: f64, now: f64, days: i64) -> bool {
    deleted_at + days as f64 * DAY_SECS <= now
}

/// What restoring a deleted manifest under `tag` does to that tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagRestore {
    /// The tag does not exist (or already points at the manifest): it is set.
    Set,
    /// The tag points at another manifest and `force` was given: it is moved.
    Move,
    /// The tag points at another manifest: refused without `force`.
    Refuse,
}

pub fn tag_restore(current_points_elsewhere: bool, force: bool) -> TagRestore {
    match (current_points_elsewhere, force) {
        (false, _) => TagRestore::Set,
        (true, true) => TagRestore::Move,
        (true, false) => TagRestore::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UNTAGGED: ManifestFacts = ManifestFacts {
        tagged: false,
        listed: false,
        subject_present: None,
    };

    #[test]
    fn zero_days_purges_at_once_and_n_days_after_n_days() {
        assert!(retention_purges(UNTAGGED, 100.0, 0.0, 100.0, 0));
        assert!(!retention_purges(UNTAGGED, 100.0, 0.0, 99.0, 0));
        assert!(!retention_purges(
            UNTAGGED,
            100.0,
            0.0,
            100.0 + 7.0 * DAY_SECS - 1.0,
            7
        ));
        assert!(retention_purges(
            UNTAGGED,
            100.0,
            0.0,
            100.0 + 7.0 * DAY_SECS,
            7
        ));
    }

    #[test]
    fn untagged_before_the_policy_was_enabled_is_kept() {
        assert!(!retention_purges(UNTAGGED, 99.0, 100.0, 1e12, 0));
        assert!(retention_purges(UNTAGGED, 100.0, 100.0, 1e12, 0));
    }

    #[test]
    fn soft_delete_expiry_is_inclusive() {
        assert!(!soft_delete_expired(0.0, DAY_SECS - 0.5, 1));
        assert!(soft_delete_expired(0.0, DAY_SECS, 1));
        assert!(soft_delete_expired(0.0, 90.0 * DAY_SECS, 90));
    }

    #[test]
    fn restore_moves_a_tag_only_when_forced() {
        assert_eq!(tag_restore(false, false), TagRestore::Set);
        assert_eq!(tag_restore(false, true), TagRestore::Set);
        assert_eq!(tag_restore(true, true), TagRestore::Move);
        assert_eq!(tag_restore(true, false), TagRestore::Refuse);
    }

    proptest! {
        /// Whatever the ages, a tagged manifest, one an index lists, or a referrer of a stored subject stays.
        #[test]
        fn what_is_needed_is_never_purged(tagged: bool, listed: bool, subject in proptest::option::of(any::<bool>()),
                                          since in 0f64..1e9, enabled in 0f64..1e9, now in 0f64..2e9, days in 0i64..=365) {
            let f = ManifestFacts { tagged, listed, subject_present: subject };
            let purged = retention_purges(f, since, enabled, now, days);
            if tagged || listed || subject == Some(true) || since < enabled || since + days as f64 * DAY_SECS > now {
                prop_assert!(!purged);
            } else {
                prop_assert!(purged);
            }
        }
    }
}
