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
