//! Service principals: created, listed, their secret reset, deleted. A principal's credential generation goes up
//! with every reset and every token names the generation it was issued under, so the server can refuse the tokens
//! of a reset or deleted principal on their next use.

use super::activity::insert_activity;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use sqlx::Row;

#[derive(Clone, Debug)]
pub struct ServicePrincipal {
    pub app_id: String,
    pub display_name: String,
    pub secret_hash: String,
    /// Bumped by every credential reset; tokens issued under an older one are refused.
    pub generation: i64,
    pub created_at: String,
    /// When the secret was last reset (`None`: never).
    pub credential_changed_at: Option<String>,
}

const COLUMNS: &str =
    "app_id, display_name, secret_hash, credential_generation, created_at, credential_changed_at";

fn from_row(r: DbRow) -> ServicePrincipal {
    ServicePrincipal {
        app_id: r.get(0),
        display_name: r.get(1),
        secret_hash: r.get(2),
        generation: r.get(3),
        created_at: r.get(4),
        credential_changed_at: r.get(5),
    }
}

impl MetadataStore {
    /// Creates a service principal; `activity` makes the record of it (it names the new app id), written with it.
    pub async fn create_service_principal(
        &self,
        display_name: &str,
        secret_hash: &str,
        activity: impl FnOnce(&str) -> ActivityEvent,
    ) -> Result<ServicePrincipal> {
        let app_id = uuid::Uuid::new_v4().to_string();
        let created_at = crate::time_fmt::now();
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("INSERT INTO service_principals(app_id, display_name, secret_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&app_id)
            .bind(display_name)
            .bind(secret_hash)
            .bind(&created_at)
            .execute(&mut *tx)
            .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "a service principal named '{display_name}' exists"
                )))
            }
            r => r?,
        };
        insert_activity(&mut tx, &activity(&app_id)).await?;
        tx.commit().await?;
        Ok(ServicePrincipal {
            app_id,
            display_name: display_name.into(),
            secret_hash: secret_hash.into(),
            generation: 0,
            created_at,
            credential_changed_at: None,
        })
    }

    pub async fn service_principal(&self, app_id: &str) -> Result<Option<ServicePrincipal>> {
        let q = format!("SELECT {COLUMNS} FROM service_principals WHERE app_id = $1");
        Ok(sqlx::query(&q)
            .bind(app_id)
            .fetch_optional(&self.reader)
            .await?
            .map(from_row))
    }

    /// A principal by its display name (unique), in any case.
    pub async fn service_principal_named(&self, name: &str) -> Result<Option<ServicePrincipal>> {
        let q = format!(
            "SELECT {COLUMNS} FROM service_principals WHERE lower(display_name) = lower($1) ORDER BY display_name LIMIT 1"
        );
        Ok(sqlx::query(&q)
            .bind(name)
            .fetch_optional(&self.reader)
            .await?
            .map(from_row))
    }

    /// Every principal, by display name.
    pub async fn service_principals(&self) -> Result<Vec<ServicePrincipal>> {
        let q = format!("SELECT {COLUMNS} FROM service_principals ORDER BY display_name, app_id");
        Ok(sqlx::query(&q)
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(from_row)
            .collect())
    }

    /// The credential generation of a principal that exists (checked on every use of its tokens: one indexed read).
    pub async fn principal_generation(&self, app_id: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT credential_generation FROM service_principals WHERE app_id = $1",
        )
        .bind(app_id)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// Replaces a principal's secret and bumps its generation; `None` when it does not exist. `activity` is written
    /// with the change.
    pub async fn reset_service_principal_secret(
        &self,
        app_id: &str,
        secret_hash: &str,
        activity: &ActivityEvent,
    ) -> Result<Option<ServicePrincipal>> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE service_principals SET secret_hash = $1, credential_generation = credential_generation + 1,
                credential_changed_at = $2 WHERE app_id = $3",
        )
        .bind(secret_hash)
        .bind(crate::time_fmt::now())
        .bind(app_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let q = format!("SELECT {COLUMNS} FROM service_principals WHERE app_id = $1");
        let sp = from_row(sqlx::query(&q).bind(app_id).fetch_one(&mut *tx).await?);
        let mut activity = activity.clone();
        activity.set_property("credentialGeneration", sp.generation.into());
        insert_activity(&mut tx, &activity).await?;
        tx.commit().await?;
        Ok(Some(sp))
    }

    /// Deletes a principal and its role assignments (they go with it), with `activity`, in one transaction.
    /// Returns the role assignments removed, or `None` when the principal does not exist.
    pub async fn delete_service_principal(
        &self,
        app_id: &str,
        activity: &ActivityEvent,
    ) -> Result<Option<Vec<super::RoleAssignmentRow>>> {
        let mut tx = self.begin_write().await?;
        let removed = super::role_assignments::of_principal(&mut tx, app_id).await?;
        let done = sqlx::query("DELETE FROM service_principals WHERE app_id = $1")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query("DELETE FROM role_assignments WHERE principal_id = $1")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        let mut activity = activity.clone();
        activity.set_property(
            "roleAssignmentsRemoved",
            removed
                .iter()
                .map(|a| a.id.clone())
                .collect::<Vec<_>>()
                .into(),
        );
        insert_activity(&mut tx, &activity).await?;
        tx.commit().await?;
        Ok(Some(removed))
    }
}
