//! Connecting to the metadata database named by a URL: `sqlite://…` (the embedded default, a file under the
//! data directory) or `postgres://…` (the shared database of several nodes). Both are reached through sqlx's
//! `Any` driver, so the rest of the store is one code path; the differences are the pools built here.

use super::{Dialect, Pool};
use crate::error::{Result, StoreError};
use sqlx::any::AnyPoolOptions;
use sqlx::Executor;
use std::time::Duration;

/// Connections of the PostgreSQL writer pool: write transactions queue on the advisory lock
/// (see [`super::begin_write`]), so more would only wait there; a few let autocommit writes overlap them.
const PG_WRITERS: u32 = 4;
const READERS: u32 = 8;

/// The writer and reader pools of a database.
pub(crate) struct Pools {
    pub writer: Pool,
    pub reader: Pool,
    pub dialect: Dialect,
}

/// The dialect a database URL names.
pub(crate) fn dialect_of(url: &str) -> Result<Dialect> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Dialect::Postgres)
    } else {
        Err(StoreError::Invalid(format!(
            "database URL '{}' is neither sqlite://… nor postgres://…",
            redacted(url)
        )))
    }
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `url` with its `mode=` query parameter set to `mode` (SQLite: `rwc` creates, `rw` must exist, `ro` reads).
fn sqlite_url(url: &str, mode: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("mode="))
        .collect();
    let mode = format!("mode={mode}");
    params.push(&mode);
    format!("{base}?{}", params.join("&"))
}

/// Opens the pools. SQLite: one writer connection (SQLite admits one writer; queueing in the pool instead of in
/// `SQLITE_BUSY` retries keeps every check-and-write in one transaction without deadlocks) and read-only readers,
/// WAL with `synchronous=FULL` so a committed transaction is on disk. PostgreSQL: a few writers and readers.
pub(crate) async fn open(url: &str, create: bool) -> Result<Pools> {
    sqlx::any::install_default_drivers();
    let dialect = dialect_of(url)?;
    match dialect {
        Dialect::Sqlite => {
            let writer = AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(&sqlite_url(url, if create { "rwc" } else { "rw" }))
                .await?;
            let reader = AnyPoolOptions::new()
                .max_connections(READERS)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;")
                            .await?;
                        Ok(())
                    })
                })
                .connect_lazy(&sqlite_url(url, "ro"))?;
            Ok(Pools {
                writer,
                reader,
                dialect,
            })
        }
        Dialect::Postgres => {
            let options = || AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
            let writer = options()
                .max_connections(PG_WRITERS)
                .connect(url)
                .await
                .map_err(|e| unreachable_db(url, e))?;
            let reader = options().max_connections(READERS).connect_lazy(url)?;
            Ok(Pools {
                writer,
                reader,
                dialect,
            })
        }
    }
}

fn unreachable_db(url: &str, e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL at {}: {e}", redacted(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_mode_replaces_any_given_mode() {
        assert_eq!(
            sqlite_url("sqlite:///d/m.db", "ro"),
            "sqlite:///d/m.db?mode=ro"
        );
        assert_eq!(
            sqlite_url("sqlite:///d/m.db?mode=rwc&cache=shared", "ro"),
            "sqlite:///d/m.db?cache=shared&mode=ro"
        );
    }

    #[test]
    fn urls_name_their_dialect_and_hide_passwords() {
        assert_eq!(dialect_of("sqlite://x.db").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("postgres://u@h/d").unwrap(), Dialect::Postgres);
        assert!(dialect_of("mysql://h/d").is_err());
        assert_eq!(
            redacted("postgres://u:secret@h:5/d"),
            "postgres://u:***@h:5/d"
        );
        assert_eq!(redacted("postgres://u@h/d"), "postgres://u@h/d");
    }
}
