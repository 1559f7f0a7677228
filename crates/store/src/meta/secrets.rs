//! The secret store (Key Vault-shaped: vault, name, versions) and the storage account keys registered for
//! ManagedIdentity access. The store keeps opaque sealed strings: sealing and opening happen in the server
//! (`moat_server::secrets`), so no plaintext passes through here. Every change is recorded in the activity log in
//! its own transaction, naming the secret, never its value.

use super::activity::insert_activity;
use super::MetadataStore;
use crate::error::Result;
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use sqlx::Row;

/// One version of a secret. `value` is sealed.
#[derive(Clone, Debug)]
pub struct SecretRow {
    pub vault: String,
    pub name: String,
    pub version: String,
    pub value: String,
    pub content_type: Option<String>,
    pub created_at: String,
    /// When the first version was made (Key Vault's `created`; `created_at` is this version's `updated`).
    pub first_created_at: String,
}

/// A storage account's registered key. `key` is sealed.
#[derive(Clone, Debug)]
pub struct StorageAccountRow {
    pub account: String,
    pub blob_endpoint: String,
    pub key: String,
    pub created_at: String,
    pub updated_at: String,
}

const SECRET_COLUMNS: &str = "s.vault, s.name, s.version, s.value, s.content_type, s.created_at, \
    (SELECT MIN(f.created_at) FROM secrets f WHERE f.vault = s.vault AND f.name = s.name)";

fn secret_row(r: DbRow) -> SecretRow {
    SecretRow {
        vault: r.get(0),
        name: r.get(1),
        version: r.get(2),
        value: r.get(3),
        content_type: r.get(4),
        created_at: r.get(5),
        first_created_at: r.get(6),
    }
}

fn account_row(r: DbRow) -> StorageAccountRow {
    StorageAccountRow {
        account: r.get(0),
        blob_endpoint: r.get(1),
        key: r.get(2),
        created_at: r.get(3),
        updated_at: r.get(4),
    }
}

impl MetadataStore {
    /// Adds a version of a secret (the new latest). `sealed` must be bound to this vault, name and version.
    pub async fn set_secret(
        &self,
        vault: &str,
        name: &str,
        version: &str,
        sealed: &str,
        content_type: Option<&str>,
        activity: &ActivityEvent,
    ) -> Result<SecretRow> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO secrets(vault, name, version, value, content_type, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(vault)
            .bind(name)
            .bind(version)
            .bind(sealed)
            .bind(content_type)
            .bind(crate::time_fmt::now())
            .execute(&mut *tx)
            .await?;
        insert_activity(&mut tx, activity).await?;
        let q = format!(
            "SELECT {SECRET_COLUMNS} FROM secrets s WHERE s.vault = $1 AND s.name = $2 AND s.version = $3"
        );
        let row = sqlx::query(&q)
            .bind(vault)
            .bind(name)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(secret_row(row))
    }

    /// A secret's given version, or its latest.
    pub async fn secret(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<SecretRow>> {
        let q = format!(
            "SELECT {SECRET_COLUMNS} FROM secrets s WHERE s.vault = $1 AND s.name = $2 AND ($3 IS NULL OR s.version = $4)
             ORDER BY s.seq DESC LIMIT 1"
        );
        Ok(sqlx::query(&q)
            .bind(vault)
            .bind(name)
            .bind(version)
            .bind(version)
            .fetch_optional(&self.reader)
            .await?
            .map(secret_row))
    }

    /// The latest version of every secret (of one vault, or all), by vault and name.
    pub async fn secrets(&self, vault: Option<&str>) -> Result<Vec<SecretRow>> {
        let q = format!(
            "SELECT {SECRET_COLUMNS} FROM secrets s
             WHERE ($1 IS NULL OR s.vault = $2)
               AND s.seq = (SELECT MAX(l.seq) FROM secrets l WHERE l.vault = s.vault AND l.name = s.name)
             ORDER BY s.vault, s.name"
        );
        Ok(sqlx::query(&q)
            .bind(vault)
            .bind(vault)
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(secret_row)
            .collect())
    }

    /// Deletes every version of a secret; `false` if there was none.
    pub async fn delete_secret(
        &self,
        vault: &str,
        name: &str,
        activity: &ActivityEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM secrets WHERE vault = $1 AND name = $2")
            .bind(vault)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every stored secret version (vault, name, version, stored value), for sealing and re-sealing.
    pub async fn all_secret_values(&self) -> Result<Vec<(String, String, String, String)>> {
        Ok(
            sqlx::query_as("SELECT vault, name, version, value FROM secrets ORDER BY seq")
                .fetch_all(&self.writer)
                .await?,
        )
    }

    /// Replaces a stored secret value only if it still holds `old`.
    pub async fn reseal_secret(
        &self,
        vault: &str,
        name: &str,
        version: &str,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE secrets SET value = $1 WHERE vault = $2 AND name = $3 AND version = $4 AND value = $5",
        )
        .bind(new)
        .bind(vault)
        .bind(name)
        .bind(version)
        .bind(old)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Registers (or replaces) a storage account's key. `sealed_key` must be bound to the account.
    pub async fn set_storage_account(
        &self,
        account: &str,
        blob_endpoint: &str,
        sealed_key: &str,
        activity: &ActivityEvent,
    ) -> Result<StorageAccountRow> {
        let now = crate::time_fmt::now();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO storage_accounts(account, blob_endpoint, key, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(account) DO UPDATE SET blob_endpoint = excluded.blob_endpoint, key = excluded.key,
                 updated_at = excluded.updated_at",
        )
        .bind(account)
        .bind(blob_endpoint)
        .bind(sealed_key)
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        insert_activity(&mut tx, activity).await?;
        let row = sqlx::query("SELECT account, blob_endpoint, key, created_at, updated_at FROM storage_accounts WHERE account = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(account_row(row))
    }

    pub async fn storage_account(&self, account: &str) -> Result<Option<StorageAccountRow>> {
        Ok(sqlx::query("SELECT account, blob_endpoint, key, created_at, updated_at FROM storage_accounts WHERE account = $1")
            .bind(account)
            .fetch_optional(&self.reader)
            .await?
            .map(account_row))
    }

    pub async fn storage_accounts(&self) -> Result<Vec<StorageAccountRow>> {
        Ok(sqlx::query("SELECT account, blob_endpoint, key, created_at, updated_at FROM storage_accounts ORDER BY account")
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(account_row)
            .collect())
    }

    pub async fn delete_storage_account(
        &self,
        account: &str,
        activity: &ActivityEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM storage_accounts WHERE account = $1")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces a stored account key only if it still holds `old`.
    pub async fn reseal_storage_account(
        &self,
        account: &str,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let done =
            sqlx::query("UPDATE storage_accounts SET key = $1 WHERE account = $2 AND key = $3")
                .bind(new)
                .bind(account)
                .bind(old)
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
