//! Migrations are compiled into the binary, so a single file is all an operator deploys. Each version exists in
//! both dialects (`migrations/sqlite/`, `migrations/postgres/`), same number, same meaning; the SQLite files are
//! the ones earlier versions shipped, byte for byte, so an existing database's checksums still match.

use crate::meta::Dialect;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

/// `(version, description, SQLite text, PostgreSQL text)`.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "management",
        include_str!("../migrations/sqlite/0002_management.sql"),
        include_str!("../migrations/postgres/0002_management.sql"),
    ),
    (
        3,
        "inline_blobs",
        include_str!("../migrations/sqlite/0003_inline_blobs.sql"),
        include_str!("../migrations/postgres/0003_inline_blobs.sql"),
    ),
    (
        4,
        "private_endpoints",
        include_str!("../migrations/sqlite/0004_private_endpoints.sql"),
        include_str!("../migrations/postgres/0004_private_endpoints.sql"),
    ),
    (
        7,
        "activity_log",
        include_str!("../migrations/sqlite/0007_activity_log.sql"),
        include_str!("../migrations/postgres/0007_activity_log.sql"),
    ),
    (
        8,
        "unenforced_settings",
        include_str!("../migrations/sqlite/0008_unenforced_settings.sql"),
        include_str!("../migrations/postgres/0008_unenforced_settings.sql"),
    ),
    (
        9,
        "gc",
        include_str!("../migrations/sqlite/0009_gc.sql"),
        include_str!("../migrations/postgres/0009_gc.sql"),
    ),
    (
        11,
        "audit_operation_names",
        include_str!("../migrations/sqlite/0011_audit_operation_names.sql"),
        include_str!("../migrations/postgres/0011_audit_operation_names.sql"),
    ),
    (
        12,
        "identities",
        include_str!("../migrations/sqlite/0012_identities.sql"),
        include_str!("../migrations/postgres/0012_identities.sql"),
    ),
    (
        13,
        "retention",
        include_str!("../migrations/sqlite/0013_retention.sql"),
        include_str!("../migrations/postgres/0013_retention.sql"),
    ),
    (
        14,
        "soft_delete",
        include_str!("../migrations/sqlite/0014_soft_delete.sql"),
        include_str!("../migrations/postgres/0014_soft_delete.sql"),
    ),
    (
        15,
        "secrets",
        include_str!("../migrations/sqlite/0015_secrets.sql"),
        include_str!("../migrations/postgres/0015_secrets.sql"),
    ),
    (
        16,
        "jobs",
        include_str!("../migrations/sqlite/0016_jobs.sql"),
        include_str!("../migrations/postgres/0016_jobs.sql"),
    ),
    (
        17,
        "pipelines",
        include_str!("../migrations/sqlite/0017_pipelines.sql"),
        include_str!("../migrations/postgres/0017_pipelines.sql"),
    ),
    (
        18,
        "trigger_seen",
        include_str!("../migrations/sqlite/0018_trigger_seen.sql"),
        include_str!("../migrations/postgres/0018_trigger_seen.sql"),
    ),
    (
        19,
        "log_consumers",
        include_str!("../migrations/sqlite/0019_log_consumers.sql"),
        include_str!("../migrations/postgres/0019_log_consumers.sql"),
    ),
    (
        20,
        "trail",
        include_str!("../migrations/sqlite/0020_trail.sql"),
        include_str!("../migrations/postgres/0020_trail.sql"),
    ),
    (
        21,
        "sinks",
        include_str!("../migrations/sqlite/0021_sinks.sql"),
        include_str!("../migrations/postgres/0021_sinks.sql"),
    ),
    (
        22,
        "metrics",
        include_str!("../migrations/sqlite/0022_metrics.sql"),
        include_str!("../migrations/postgres/0022_metrics.sql"),
    ),
    (
        23,
        "alerts",
        include_str!("../migrations/sqlite/0023_alerts.sql"),
        include_str!("../migrations/postgres/0023_alerts.sql"),
    ),
    (
        24,
        "webhooks",
        include_str!("../migrations/sqlite/0024_webhooks.sql"),
        include_str!("../migrations/postgres/0024_webhooks.sql"),
    ),
    (
        25,
        "partner_sinks",
        include_str!("../migrations/sqlite/0025_partner_sinks.sql"),
        include_str!("../migrations/postgres/0025_partner_sinks.sql"),
    ),
    (
        26,
        "upload_resume",
        include_str!("../migrations/sqlite/0026_upload_resume.sql"),
        include_str!("../migrations/postgres/0026_upload_resume.sql"),
    ),
    (
        27,
        "change_epochs",
        include_str!("../migrations/sqlite/0027_change_epochs.sql"),
        include_str!("../migrations/postgres/0027_change_epochs.sql"),
    ),
];

pub fn migrator(dialect: Dialect) -> Migrator {
    let migrations: Vec<Migration> = MIGRATIONS
        .iter()
        .map(|(v, d, sqlite, postgres)| {
            let sql = match dialect {
                Dialect::Sqlite => sqlite,
                Dialect::Postgres => postgres,
            };
            Migration::new(
                *v,
                Cow::Borrowed(d),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQLite migrations are the files earlier versions applied, byte for byte: sqlx refuses a database
    /// whose applied migration's checksum differs, so an edit here would lock every existing moat-data out.
    #[test]
    fn sqlite_migrations_keep_the_checksums_existing_databases_hold() {
        const SHIPPED: &[&str] = &[
            "e75d203f0feb822a",
            "63d7374af056e689",
            "480c1d29362fd885",
            "c1387c1421a4b1ba",
            "4ef16aee9fc84907",
            "90b31a6183869485",
            "7394280c7464b3a7",
            "1f708c35f69307d4",
            "5b457e54c3b1ee59",
            "f1a441345c2224b1",
            "20ebcddcb43dd690",
            "a5a7f488ed0c8f24",
            "daa7223bcd341f1d",
            "013b91fe61087ba5",
            "5d833cfda4c085ae",
            "14256c5365198ff6",
            "73375fd48212104d",
            "771d51785a91e846",
            "fab1d959d5e569b7",
            "4584f5dec05822a9",
            "80f2fd39872e7b9c",
            "2d37005391f9a992",
            "0d117ced7e963e0c",
        ];
        let m = migrator(Dialect::Sqlite);
        let got: Vec<String> = m.iter().map(|m| hex::encode(&m.checksum[..8])).collect();
        assert_eq!(&got[..SHIPPED.len()], SHIPPED);
    }

    #[test]
    fn both_dialects_have_the_same_versions() {
        let v = |d| migrator(d).iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(v(Dialect::Sqlite), v(Dialect::Postgres));
    }
}
