//! The management plane's state: resource groups, registry admin credentials, and registry changes checked
//! against the export policy in the transaction that writes them (service principals and role assignments have
//! modules of their own).

use super::activity::insert_activity;
use super::registries::settings_json;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use moat_model::activity::ActivityEvent;
use moat_model::policy::{PolicyError, PolicyFacts};
use moat_model::{Registry, RegistrySettings};

/// Why a registry change was not written.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("registry not found")]
    NotFound,
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The caller's own refusal (bad input found while merging the change).
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for UpdateError {
    fn from(e: sqlx::Error) -> UpdateError {
        UpdateError::Store(e.into())
    }
}

/// Registry settings as the activity log shows them before and after a change.
fn settings_value(s: &RegistrySettings) -> serde_json::Value {
    serde_json::to_value(s).unwrap_or_default()
}

impl MetadataStore {
    /// Creates the resource group if it does not exist; returns its location.
    pub async fn ensure_resource_group(&self, name: &str, location: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO resource_groups(name, location, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(location)
        .bind(crate::time_fmt::now())
        .execute(&self.writer)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT location FROM resource_groups WHERE name = $1")
                .bind(name)
                .fetch_one(&self.writer)
                .await?,
        )
    }

    pub async fn resource_group(&self, name: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT name, location FROM resource_groups WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    pub async fn resource_groups(&self) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT name, location FROM resource_groups ORDER BY name")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// The admin user's passwords (`password`, `password2`) as stored (sealed: the caller seals and opens them),
    /// made on first use from `fresh` (slot name, stored value).
    pub async fn admin_credentials(
        &self,
        registry_id: &str,
        fresh: &[(&str, String)],
    ) -> Result<Vec<(String, String)>> {
        let mut tx = self.begin_write().await?;
        for (name, value) in fresh {
            sqlx::query("INSERT INTO registry_credentials(registry_id, name, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(registry_id)
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        let rows = sqlx::query_as(
            "SELECT name, value FROM registry_credentials WHERE registry_id = $1 ORDER BY name",
        )
        .bind(registry_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn regenerate_admin_credential(
        &self,
        registry_id: &str,
        name: &str,
        value: &str,
        activity: &ActivityEvent,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO registry_credentials(registry_id, name, value) VALUES ($1, $2, $3)
             ON CONFLICT(registry_id, name) DO UPDATE SET value = excluded.value",
        )
        .bind(registry_id)
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every stored admin password (registry id, slot, stored value), for sealing and re-sealing.
    pub async fn all_admin_credentials(&self) -> Result<Vec<(String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT registry_id, name, value FROM registry_credentials ORDER BY registry_id, name",
        )
        .fetch_all(&self.writer)
        .await?)
    }

    /// Replaces a stored admin password only if it still holds `old` (a regeneration in between wins).
    pub async fn reseal_admin_credential(
        &self,
        registry_id: &str,
        name: &str,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE registry_credentials SET value = $1 WHERE registry_id = $2 AND name = $3 AND value = $4",
        )
        .bind(new)
        .bind(registry_id)
        .bind(name)
        .bind(old)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Facts the export policy needs that live outside the registry's settings, read in the caller's transaction.
    pub(crate) async fn policy_facts(
        &self,
        conn: &mut crate::meta::Conn,
        registry_id: &str,
    ) -> Result<PolicyFacts> {
        let approved: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM private_endpoints WHERE registry_id = $1 AND status = 'Approved'",
        )
        .bind(registry_id)
        .fetch_one(&mut *conn)
        .await?;
        Ok(PolicyFacts {
            export_pipelines: super::pipelines::count_export_pipelines(&mut *conn, registry_id)
                .await?,
            approved_private_endpoints: approved as usize,
        })
    }

    /// Creates a registry or replaces/changes an existing one, in one transaction: the current state is read,
    /// `change` computes the new settings from it (`None` when the registry does not exist yet), the policy
    /// checks the transition, and the result is written. Concurrent changes are serialized by the single writer
    /// connection, so no two of them can both pass a check that only one may pass. `activity` is written with
    /// the change, completed with the settings before and after (and `Created` when the registry is new).
    pub async fn upsert_registry<F, E>(
        &self,
        name: &str,
        login_server: &str,
        resource_group: &str,
        activity: ActivityEvent,
        change: F,
    ) -> Result<(Registry, bool), E>
    where
        F: FnOnce(Option<&Registry>) -> Result<RegistrySettings, E>,
        E: From<UpdateError>,
    {
        let db = |e: sqlx::Error| E::from(UpdateError::from(e));
        let mut tx = self
            .begin_write()
            .await
            .map_err(|e| E::from(UpdateError::Store(e)))?;
        let current = super::registries::load(&mut tx, super::registries::RegistryKey::Name(name))
            .await
            .map_err(|e| E::from(UpdateError::Store(e)))?;
        if let Some(c) = &current {
            if !c.resource_group.eq_ignore_ascii_case(resource_group) {
                // The other registry's group is not named: the caller may have no rights on it.
                return Err(E::from(UpdateError::Rejected(format!(
                    "registry name '{name}' is already in use; registry names are unique per server"
                ))));
            }
        }
        let settings = change(current.as_ref())?;
        let facts = match &current {
            Some(c) => self
                .policy_facts(&mut tx, &c.id)
                .await
                .map_err(|e| E::from(UpdateError::Store(e)))?,
            None => PolicyFacts::default(),
        };
        moat_model::policy::validate_change(
            name,
            current.as_ref().map(|c| &c.settings),
            &settings,
            &facts,
        )
        .map_err(|e| E::from(UpdateError::Policy(e)))?;
        let created = current.is_none();
        let mut activity = activity.with_change(
            current.as_ref().map(|c| settings_value(&c.settings)),
            Some(settings_value(&settings)),
        );
        if created {
            activity.set_http_status(201);
        }
        let registry = match current {
            Some(mut c) => {
                sqlx::query("UPDATE registries SET settings = $1 WHERE id = $2")
                    .bind(settings_json(&settings))
                    .bind(&c.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                c.settings = settings;
                c
            }
            None => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let created_at = crate::time_fmt::now();
                let r = sqlx::query(
                    "INSERT INTO registries(id, name, login_server, resource_group, is_default, created_at, settings)
                     VALUES ($1, $2, $3, $4, 0, $5, $6)",
                )
                .bind(&id)
                .bind(name)
                .bind(login_server)
                .bind(resource_group)
                .bind(&created_at)
                .bind(settings_json(&settings))
                .execute(&mut *tx)
                .await;
                if let Err(sqlx::Error::Database(e)) = &r {
                    if e.is_unique_violation() {
                        return Err(E::from(UpdateError::Rejected(format!(
                            "login server '{login_server}' is already in use"
                        ))));
                    }
                }
                r.map_err(db)?;
                sqlx::query("INSERT INTO resource_groups(name, location, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(resource_group)
                    .bind(settings.location.as_str())
                    .bind(&created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                Registry {
                    id,
                    name: name.into(),
                    login_server: login_server.into(),
                    resource_group: resource_group.into(),
                    created_at,
                    settings,
                }
            }
        };
        insert_activity(&mut tx, &activity)
            .await
            .map_err(|e| E::from(UpdateError::Store(e)))?;
        tx.commit().await.map_err(db)?;
        Ok((registry, created))
    }

    /// Deletes a registry with everything in it (its blob links, manifests, tags; stored bytes are left to GC).
    pub async fn delete_registry(&self, name: &str, activity: &ActivityEvent) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let Some((id, rg)): Option<(String, String)> = sqlx::query_as(
            "SELECT id, resource_group FROM registries WHERE name = $1 AND is_default = 0",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        // A registry's pipelines and runs go with it; their jobs find their run gone and stop.
        super::pipelines::delete_for_registry(&mut tx, &id).await?;
        for table in [
            "tags",
            "manifests",
            "blob_links",
            "repositories",
            "uploads",
            "private_endpoints",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE registry_id = $1"))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM registries WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        // Role assignments are extension resources of their scope: they go with the registry, so a registry
        // created later under the same name starts with none.
        let removed = super::role_assignments::delete_at_registry(&mut tx, &rg, name).await?;
        let mut activity = activity.clone();
        if removed > 0 {
            activity.set_property("roleAssignmentsRemoved", removed.into());
        }
        insert_activity(&mut tx, &activity).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The storage a registry uses (listUsages' `Size`): the distinct blobs linked in any of its repositories, each
    /// counted once however many repositories share it, plus its distinct manifests. Bytes no link holds any
    /// more (waiting for the collector) are not counted; a blob shared with another registry counts in both.
    pub async fn registry_size(&self, registry_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT CAST((SELECT COALESCE(SUM(size), 0) FROM blobs WHERE digest IN
                        (SELECT digest FROM blob_links WHERE registry_id = $1))
                  + (SELECT COALESCE(SUM(size), 0) FROM
                        (SELECT digest, MAX(size) AS size FROM manifests WHERE registry_id = $1 GROUP BY digest) m)
                  AS BIGINT)",
        )
        .bind(registry_id)
        .fetch_one(&self.reader)
        .await?)
    }
}
