//! The metadata store. SQLite in WAL mode with `synchronous=FULL`, so a committed transaction is on disk.
//! Writes go through one connection: SQLite admits one writer at a time anyway, and queueing in the pool
//! instead of in `SQLITE_BUSY` retries keeps every check-and-write inside one transaction without deadlocks.

mod activity;
pub mod alerts;
pub(crate) mod audit;
mod audit_json;
mod audit_read;
pub mod change_epochs;
mod connect;
pub mod consumers;
mod content;
mod diagnostic_settings;
pub mod dialect;
mod group_commit;
mod import;
pub mod jobs;
mod links;
mod management;
pub mod metrics;
pub mod partner_sinks;
pub mod pipelines;
mod principals;
mod private_endpoints;
mod registries;
mod repository_metadata;
mod role_assignments;
mod secrets;
pub(crate) mod soft_delete;
pub mod trail;
mod trail_convert;
mod trail_prune;
mod trail_verify;
mod trigger_seen;
mod uploads;
pub mod webhooks;

pub use activity::ActivityFilter;
pub use alerts::{AlertResourceRow, AlertStateRow, NewNotification, NotificationRow};
pub use audit::AuditFilter;
pub use consumers::{set_consumer_seq_on, ConsumerCursor};
pub use content::{FinishedBlob, ManifestRecord, ReferrerRow, StoredManifest};
pub use diagnostic_settings::DiagnosticSettingRow;
pub use import::{ImportWrite, ImportWriteError};
pub use jobs::{insert_job, JobFilter, JobRecord, JobState, Lease};
pub use management::UpdateError;
pub use metrics::MetricPoint;
pub use partner_sinks::PartnerSinkRow;
pub use pipelines::{PipelineRow, PipelineRunRow, PipelineWriteError, RunPut, RunWriteError};
pub use principals::ServicePrincipal;
pub use private_endpoints::{EndpointChange, EndpointSelector, NewPrivateEndpoint};
pub use repository_metadata::{DeletedRepository, ManifestRow, RepositorySummary, TagRow};
pub use role_assignments::{AssignError, NewRoleAssignment, RoleAssignmentRow};
pub use secrets::{SecretRow, StorageAccountRow};
pub use soft_delete::{DeletedManifestRow, DeletedTagRow, RestoreError};
pub use trail::TrailHead;
pub use trail_prune::PruneReport;
pub use trail_verify::{TrailProblem, TrailReport};
pub use uploads::UploadRow;
pub use webhooks::{DeliveryRow, NewDelivery, WebhookRow, WEBHOOK_CONSUMER};

use crate::error::Result;
use crate::migrate::migrator;
pub use connect::redacted as redacted_url;
pub use dialect::Dialect;
use sqlx::sqlite::SqliteConnectOptions;
use std::str::FromStr;

/// The database driver the store runs on (`Any`: SQLite or PostgreSQL, chosen by the URL); the rest of the
/// store names only these aliases.
pub(crate) type Db = sqlx::Any;
pub(crate) type Pool = sqlx::Pool<Db>;
pub(crate) type Conn = <Db as sqlx::Database>::Connection;
pub(crate) type DbRow = <Db as sqlx::Database>::Row;
pub(crate) type DbArguments<'q> = <Db as sqlx::Database>::Arguments<'q>;
/// A write transaction opened by [`begin_write`].
pub(crate) type WriteTx = sqlx::Transaction<'static, Db>;

/// Opens a check-and-write transaction: the one seam every multi-statement write goes through.
///
/// Isolation (phase one, the same for every rule: export policy and endpoint checks, links, tags, quotas,
/// role assignments, jobs, the trail's chain heads): write transactions are serialized.
/// - SQLite: `BEGIN IMMEDIATE` on the single writer connection, so each transaction holds the database's
///   write lock from its first statement and every check it makes sees every committed write.
/// - PostgreSQL: `BEGIN` (READ COMMITTED) and then `pg_advisory_xact_lock` on one fixed key, held to commit or
///   rollback. Every check-and-write transaction of every node queues on that one lock exactly as SQLite's
///   writers queue on its one connection, and because READ COMMITTED takes each statement's snapshot when the
///   statement starts — after the lock is held — every check sees every write committed before it.
///
/// Finer keys (per registry, per repository) can come later without changing a caller, because callers only
/// ask here. Single-statement autocommit writes need no lock.
pub(crate) async fn begin_write(writer: &Pool, dialect: Dialect) -> Result<WriteTx> {
    match dialect {
        Dialect::Sqlite => Ok(writer.begin_with("BEGIN IMMEDIATE").await?),
        Dialect::Postgres => {
            let mut tx = writer.begin().await?;
            // The function returns `void`, which the Any driver cannot decode: select a constant beside it.
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(WRITE_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        }
    }
}

/// The advisory lock key of write transactions: the bytes of "moat-wri" (one fixed key; see [`begin_write`]).
const WRITE_LOCK_KEY: i64 = 0x6d6f_6174_2d77_7269;

#[derive(Clone)]
pub struct MetadataStore {
    /// The single writer connection (see the module comment).
    writer: Pool,
    /// Readers run in parallel with the writer thanks to WAL.
    reader: Pool,
    /// Which SQL dialect the database speaks (the few texts that differ are in [`dialect`]).
    dialect: Dialect,
    /// Finished uploads waiting for the next group commit.
    blob_commits: tokio::sync::mpsc::UnboundedSender<group_commit::PendingBlob>,
    /// Group commits so far: the collector yields the writer only while pushes are using it.
    pushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Committed string ids of the audit trail's dictionary (the batch writer's and the readers' cache).
    dictionary: std::sync::Arc<trail::Dictionary>,
}

impl MetadataStore {
    /// Opens (creating if needed) the database at a `sqlite://` or `postgres://` URL and brings its schema up to
    /// date. Several nodes opening one PostgreSQL database together run each migration once (sqlx's migrator
    /// holds an advisory lock while it migrates).
    pub async fn open(url: &str) -> Result<MetadataStore> {
        Self::open_with(url, true).await
    }

    /// Opens a database that must exist already (operator commands never make one).
    pub async fn open_existing(url: &str) -> Result<MetadataStore> {
        Self::open_with(url, false).await
    }

    /// Whether the database a URL names exists: a `sqlite://` file, or any `postgres://` database (its server
    /// decides when the store connects).
    pub fn database_exists(url: &str) -> Result<bool> {
        match connect::dialect_of(url)? {
            Dialect::Sqlite => Ok(SqliteConnectOptions::from_str(url)?.get_filename().exists()),
            Dialect::Postgres => Ok(true),
        }
    }

    async fn open_with(url: &str, create: bool) -> Result<MetadataStore> {
        let connect::Pools {
            writer,
            reader,
            dialect,
        } = connect::open(url, create).await?;
        refuse_newer_schema(&writer, dialect).await?;
        migrator(dialect).run(&writer).await?;
        // Rows written before the trail was chained (and the old audit table) are converted once, here.
        trail_convert::run(&writer, dialect).await?;
        let pushes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let dictionary = std::sync::Arc::new(trail::Dictionary::default());
        let blob_commits =
            group_commit::start(writer.clone(), dialect, pushes.clone(), dictionary.clone());
        Ok(MetadataStore {
            writer,
            reader,
            dialect,
            blob_commits,
            pushes,
            dictionary,
        })
    }

    /// Whether the store answers a query and holds every migration this binary knows, applied successfully
    /// (`/readyz`: a node sharing a database that another version has not finished migrating is not ready).
    pub async fn ready(&self) -> Result<bool> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = true")
                .fetch_all(&self.reader)
                .await?;
        Ok(migrator(self.dialect)
            .iter()
            .all(|m| applied.contains(&m.version)))
    }

    pub async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    /// Sets `key` only if it has no value yet, and returns the value that holds afterwards: first start
    /// generates secrets this way without racing a second process.
    pub async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO settings(key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(v)
    }

    /// Removes a setting; true if it was there (an upgrade moving a secret out of the database).
    pub async fn delete_setting(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn identity_password_hash(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM identities WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    /// Creates the identity if absent; returns whether it was created.
    pub async fn create_identity(&self, name: &str, password_hash: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO identities(name, password_hash, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(password_hash)
        .bind(crate::time_fmt::now())
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn set_identity_password(&self, name: &str, password_hash: &str) -> Result<()> {
        sqlx::query("UPDATE identities SET password_hash = $1 WHERE name = $2")
            .bind(password_hash)
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(crate) fn writer(&self) -> &Pool {
        &self.writer
    }

    pub(crate) fn reader(&self) -> &Pool {
        &self.reader
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Opens a check-and-write transaction (see [`begin_write`]).
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        begin_write(&self.writer, self.dialect).await
    }

    /// How many group commits of pushed blobs this process has made (a measure of push activity).
    pub(crate) fn push_commits(&self) -> u64 {
        self.pushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The URL-independent name of the database kind, for messages and metrics.
    pub fn backend(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// How many distinct blobs the store holds (tests check that a mount copies nothing).
    pub async fn blob_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
            .fetch_one(&self.reader)
            .await?)
    }
}

/// Refuses a database that a newer Moat has migrated past what this binary knows, naming both versions
/// (rather than sqlx's "previously applied but missing" or a query failing later on an unknown column).
async fn refuse_newer_schema(writer: &Pool, dialect: Dialect) -> Result<()> {
    let table: Option<i64> = sqlx::query_scalar(dialect.table_exists())
        .bind("_sqlx_migrations")
        .fetch_optional(writer)
        .await?;
    if table.is_none() {
        return Ok(());
    }
    let database: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(writer)
        .await?;
    let binary = migrator(dialect)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    match database {
        Some(database) if database > binary => {
            Err(crate::error::StoreError::SchemaTooNew { database, binary })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// The seam's promise: while one store's write transaction is open, another store's (another node's) waits,
    /// and goes ahead once the first commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_transaction_waits_for_another_stores() {
        let db = crate::testing::test_db().await;
        let (a, b) = (db.open().await, db.open().await);
        let held = a.begin_write().await.unwrap();
        let waiting = tokio::spawn(async move {
            let mut tx = b.begin_write().await.unwrap();
            sqlx::query("UPDATE settings SET value = value WHERE key = 'none'")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "two write transactions ran at once");
        held.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the second transaction went ahead once the first committed")
            .unwrap();
    }
}
