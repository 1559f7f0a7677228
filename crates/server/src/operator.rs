//! What the operator commands (`moat registry|sp|role|keys|audit`) open: an existing data directory, never a new
//! one, and — while `moat serve` runs on it — the running server's address, domain, region and scheme instead of
//! the command's own flags.
//!
//! Why commands work on the database directly even while a server runs: every change they make is one SQLite
//! WAL transaction (`BEGIN IMMEDIATE`, the same writer rule and the same policy checks as the server's own
//! changes), so it cannot race a request. What the server keeps in memory follows: it reads identities, role
//! assignments and credential generations from the database on every use, reloads its registry directory every
//! second, and re-reads registries and private endpoints at once when a command signals it (SIGHUP, sent by
//! [`DataDir::changed`], which waits for the server to confirm).

use crate::serve_lock::{ServeLock, ServerInfo};
use crate::ServeConfig;
use moat_store::MetadataStore;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no Moat data at {dir}{why}: start `moat serve` first or pass --data-dir")]
    NoData { dir: String, why: &'static str },
    #[error(
        "no Moat database at {url}: start `moat serve` first or pass the --database-url it uses"
    )]
    NoDatabase { url: String },
}

/// An existing data directory, opened for an operator command.
pub struct DataDir {
    pub meta: MetadataStore,
    /// The command's configuration with the running server's address, domain, region and scheme, if one runs.
    pub config: ServeConfig,
    /// The server serving this directory now.
    pub server: Option<ServerInfo>,
}

impl DataDir {
    /// Tells the running server (if any) to re-read what the command changed, and waits (up to a few seconds)
    /// until it has: it says so by writing the activity sequence number it had seen when its reload began, and
    /// every change a command makes is recorded in the activity log in its own transaction.
    pub async fn changed(&self) {
        let Some(s) = &self.server else { return };
        let target = self.meta.activity_max_seq().await.unwrap_or(i64::MAX);
        s.notify();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if crate::serve_lock::reloaded(&self.config.data_dir) >= target {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        eprintln!(
            "moat: the server (pid {}) did not confirm it re-read the data directory; it does within a second",
            s.pid
        );
    }
}

/// Refuses a data directory that does not exist or holds no Moat data (or a database URL naming none), creating
/// nothing; checks the directory's permissions as the server does.
pub fn existing(config: &ServeConfig) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    let no_data = |why| OperatorError::NoData {
        dir: dir.display().to_string(),
        why,
    };
    if !dir.exists() {
        return Err(no_data("").into());
    }
    if !dir.is_dir() {
        return Err(no_data(" (it is not a directory)").into());
    }
    crate::datadir::restrict_umask();
    crate::datadir::check_private_dir(dir, "data directory")?;
    if config.database_url.is_none() && !dir.join("moat.db").exists() {
        return Err(no_data(" (no moat.db in it)").into());
    }
    let url = config.database_url();
    if !MetadataStore::database_exists(&url)? {
        return Err(OperatorError::NoDatabase { url }.into());
    }
    Ok(())
}

/// Opens an existing data directory and its database for an operator command.
pub async fn open(mut config: ServeConfig) -> anyhow::Result<DataDir> {
    existing(&config)?;
    let server = ServeLock::running(&config.data_dir)?;
    if let Some(s) = &server {
        s.apply(&mut config)?;
    }
    let url = config.database_url();
    let meta = MetadataStore::open_existing(&url)
        .await
        .map_err(|e| anyhow::Error::new(e).context("opening the metadata store"))?;
    Ok(DataDir {
        meta,
        config,
        server,
    })
}
