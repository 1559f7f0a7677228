//! Databases for tests, on either backend. `test_db()` is SQLite in a fresh temporary directory, unless
//! `MOAT_TEST_STORE=postgres`: then it is a fresh database `t_<random>` on the PostgreSQL server at
//! `MOAT_TEST_POSTGRES_URL`. `scripts/test` starts a throwaway PostgreSQL cluster, sets the URL and runs the
//! store's tests a second time that way; tests that need PostgreSQL whatever the setting call `postgres_db()`,
//! which fails (never skips) when no server is configured.

use crate::error::Result;
use crate::meta::MetadataStore;
use std::path::PathBuf;

/// The environment variable naming the PostgreSQL server tests make their databases on.
pub const POSTGRES_URL_ENV: &str = "MOAT_TEST_POSTGRES_URL";

/// A database for one test; a SQLite one is removed with its directory when this is dropped.
pub struct TestDb {
    pub url: String,
    dir: Option<PathBuf>,
}

impl TestDb {
    /// The directory beside a SQLite database (blob files, keys), or a fresh one for PostgreSQL.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().expect("made with the database")
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    pub async fn open(&self) -> MetadataStore {
        MetadataStore::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("opening the test database: {e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("moat-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temporary directory");
    d
}

/// Whether this test run puts its stores on PostgreSQL (`MOAT_TEST_STORE=postgres`).
pub fn postgres_run() -> bool {
    std::env::var("MOAT_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// A fresh, empty database of the backend this run tests (see the module comment).
pub async fn test_db() -> TestDb {
    if postgres_run() {
        postgres_db().await
    } else {
        sqlite_db()
    }
}

/// A fresh SQLite database, whatever the run.
pub fn sqlite_db() -> TestDb {
    let dir = temp_dir();
    TestDb {
        url: format!("sqlite://{}", dir.join("m.db").display()),
        dir: Some(dir),
    }
}

/// A fresh PostgreSQL database. Panics when `MOAT_TEST_POSTGRES_URL` is unset: such a test needs the server
/// `scripts/test` starts.
pub async fn postgres_db() -> TestDb {
    let Ok(server) = std::env::var(POSTGRES_URL_ENV) else {
        panic!("this test needs PostgreSQL: run it through scripts/test, which starts a throwaway cluster and sets {POSTGRES_URL_ENV}");
    };
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    raw_execute(&server, &format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating {name} on {}: {e}",
                crate::meta::redacted_url(&server)
            )
        });
    TestDb {
        url: with_database(&server, &name),
        dir: Some(temp_dir()),
    }
}

/// `url` naming database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{root}/{name}{query}")
}

/// A connection pool on `url` outside the store, for tests that tamper with rows behind its back.
pub async fn raw_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", crate::meta::redacted_url(url)))
}

/// Runs one statement on `url` outside the store (no transaction: `CREATE DATABASE` needs that).
pub async fn raw_execute(url: &str, sql: &str) -> Result<()> {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    conn.execute(sql).await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_database_name_replaces_the_servers() {
        assert_eq!(
            super::with_database("postgres://u@127.0.0.1:5/postgres?host=/tmp", "t_1"),
            "postgres://u@127.0.0.1:5/t_1?host=/tmp"
        );
        assert_eq!(
            super::with_database("postgres://u@h:5", "t_1"),
            "postgres://u@h:5/t_1"
        );
    }
}
