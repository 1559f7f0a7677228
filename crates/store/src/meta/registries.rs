use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use moat_model::{Registry, RegistrySettings};
use sqlx::Row;

const COLUMNS: &str = "id, name, login_server, resource_group, created_at, settings";

pub(crate) fn from_row(row: DbRow) -> Result<Registry> {
    let settings: String = row.get(5);
    Ok(Registry {
        id: row.get(0),
        name: row.get(1),
        login_server: row.get(2),
        resource_group: row.get(3),
        created_at: row.get(4),
        settings: {
            let mut s: RegistrySettings = serde_json::from_str(&settings)
                .map_err(|e| StoreError::Invalid(format!("stored registry settings: {e}")))?;
            s.prepare();
            s
        },
    })
}

/// A registry read inside the caller's transaction, by name or by id: what a policy check must see.
pub(crate) async fn load(
    conn: &mut crate::meta::Conn,
    by: RegistryKey<'_>,
) -> Result<Option<Registry>> {
    let (column, value) = match by {
        RegistryKey::Name(n) => ("name", n),
        RegistryKey::Id(i) => ("id", i),
    };
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM registries WHERE {column} = $1"
    ))
    .bind(value)
    .fetch_optional(conn)
    .await?
    .map(from_row)
    .transpose()
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum RegistryKey<'a> {
    Name(&'a str),
    Id(&'a str),
}

pub(crate) fn settings_json(s: &RegistrySettings) -> String {
    serde_json::to_string(s).expect("settings serialize")
}

impl MetadataStore {
    pub async fn create_registry(
        &self,
        name: &str,
        login_server: &str,
        resource_group: &str,
        settings: &RegistrySettings,
        is_default: bool,
        activity: Option<&ActivityEvent>,
    ) -> Result<Registry> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let created_at = crate::time_fmt::now();
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO registries(id, name, login_server, resource_group, is_default, created_at, settings)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(name)
        .bind(login_server)
        .bind(resource_group)
        .bind(i64::from(is_default))
        .bind(&created_at)
        .bind(settings_json(settings))
        .execute(&mut *tx)
        .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "a registry named '{name}' or served at '{login_server}' exists"
                )))
            }
            r => r?,
        };
        if let Some(a) = activity {
            let a = a
                .clone()
                .with_change(None, serde_json::to_value(settings).ok());
            super::activity::insert_activity(&mut tx, &a).await?;
        }
        tx.commit().await?;
        Ok(Registry {
            id,
            name: name.into(),
            login_server: login_server.into(),
            resource_group: resource_group.into(),
            created_at,
            settings: settings.clone(),
        })
    }

    pub async fn registry_by_name(&self, name: &str) -> Result<Option<Registry>> {
        load(&mut *self.reader.acquire().await?, RegistryKey::Name(name)).await
    }

    pub async fn registry_by_id(&self, id: &str) -> Result<Option<Registry>> {
        load(&mut *self.reader.acquire().await?, RegistryKey::Id(id)).await
    }

    pub async fn default_registry(&self) -> Result<Option<Registry>> {
        let q = format!("SELECT {COLUMNS} FROM registries WHERE is_default = 1");
        sqlx::query(&q)
            .fetch_optional(&self.reader)
            .await?
            .map(from_row)
            .transpose()
    }

    pub async fn list_registries(&self) -> Result<Vec<Registry>> {
        let q = format!("SELECT {COLUMNS} FROM registries ORDER BY name");
        sqlx::query(&q)
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(from_row)
            .collect()
    }

    /// Gives every registry the login server `login_server` computes for it (the server's own address at start),
    /// in one transaction; returns how many changed.
    pub async fn restamp_login_servers(
        &self,
        login_server: impl Fn(&Registry, bool) -> String,
    ) -> Result<usize> {
        let mut tx = self.begin_write().await?;
        let q = format!("SELECT {COLUMNS}, is_default FROM registries ORDER BY name");
        let rows = sqlx::query(&q).fetch_all(&mut *tx).await?;
        let mut changed = 0;
        for row in rows {
            let is_default = row.get::<i64, _>(6) != 0;
            let r = from_row(row)?;
            let want = login_server(&r, is_default);
            if want != r.login_server {
                let done = sqlx::query("UPDATE registries SET login_server = $1 WHERE id = $2")
                    .bind(&want)
                    .bind(&r.id)
                    .execute(&mut *tx)
                    .await;
                match done {
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        return Err(StoreError::Conflict(format!(
                            "login server '{want}' of registry '{}' is another registry's",
                            r.name
                        )))
                    }
                    r => r?,
                };
                changed += 1;
            }
        }
        tx.commit().await?;
        Ok(changed)
    }
}
