use super::MetadataStore;
use crate::error::{Result, StoreError};
use moat_model::{Registry, Sku};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

const COLUMNS: &str = "id, name, login_server, sku, anonymous_pull_enabled, export_enabled";

fn from_row(row: SqliteRow) -> Registry {
    let sku: String = row.get(3);
    Registry {
        id: row.get(0),
        name: row.get(1),
        login_server: row.get(2),
        sku: Sku::parse(&sku).unwrap_or(Sku::Premium),
        anonymous_pull_enabled: row.get(4),
        export_enabled: row.get(5),
    }
}

impl MetadataStore {
    pub async fn create_registry(&self, name: &str, login_server: &str, sku: Sku, is_default: bool) -> Result<Registry> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let r = sqlx::query(
            "INSERT INTO registries(id, name, login_server, sku, is_default, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(name)
        .bind(login_server)
        .bind(sku.as_str())
        .bind(is_default)
        .bind(crate::time_fmt::now())
        .execute(&self.writer)
        .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("a registry named '{name}' or served at '{login_server}' exists")))
            }
            r => r?,
        };
        Ok(Registry {
            id,
            name: name.into(),
            login_server: login_server.into(),
            sku,
            anonymous_pull_enabled: false,
            export_enabled: true,
        })
    }

    pub async fn registry_by_name(&self, name: &str) -> Result<Option<Registry>> {
        let q = format!("SELECT {COLUMNS} FROM registries WHERE name = ?");
        Ok(sqlx::query(&q).bind(name).fetch_optional(&self.reader).await?.map(from_row))
    }

    pub async fn default_registry(&self) -> Result<Option<Registry>> {
        let q = format!("SELECT {COLUMNS} FROM registries WHERE is_default = 1");
        Ok(sqlx::query(&q).fetch_optional(&self.reader).await?.map(from_row))
    }

    pub async fn list_registries(&self) -> Result<Vec<Registry>> {
        let q = format!("SELECT {COLUMNS} FROM registries ORDER BY name");
        Ok(sqlx::query(&q).fetch_all(&self.reader).await?.into_iter().map(from_row).collect())
    }

    pub async fn set_login_server(&self, name: &str, login_server: &str) -> Result<()> {
        sqlx::query("UPDATE registries SET login_server = ? WHERE name = ?")
            .bind(login_server)
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn set_anonymous_pull(&self, name: &str, enabled: bool) -> Result<()> {
        let r = sqlx::query("UPDATE registries SET anonymous_pull_enabled = ? WHERE name = ?")
            .bind(enabled)
            .bind(name)
            .execute(&self.writer)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
