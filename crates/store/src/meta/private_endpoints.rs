//! Private endpoints and their connections. Every change that can take a registry's last approved connection
//! away is checked against the registry's export policy in the transaction that writes it.

use super::activity::insert_activity;
use super::management::UpdateError;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use moat_model::private_endpoint::{
    ConnectionStatus, PrivateEndpoint, MAX_PRIVATE_ENDPOINTS_PER_REGISTRY,
};
use sqlx::Row;

const COLUMNS: &str =
    "id, name, resource_group, registry_id, connection_name, address, status, description, created_at";

fn from_row(row: DbRow) -> Result<PrivateEndpoint> {
    let address: String = row.get(5);
    let status: String = row.get(6);
    Ok(PrivateEndpoint {
        id: row.get(0),
        name: row.get(1),
        resource_group: row.get(2),
        registry_id: row.get(3),
        connection_name: row.get(4),
        address: address
            .parse()
            .map_err(|_| StoreError::Invalid(format!("stored endpoint address '{address}'")))?,
        status: ConnectionStatus::parse(&status)
            .ok_or_else(|| StoreError::Invalid(format!("stored connection status '{status}'")))?,
        description: row.get(7),
        created_at: row.get(8),
    })
}

/// An endpoint's connection as the activity log shows it before and after a change.
fn connection_state(pe: &PrivateEndpoint) -> serde_json::Value {
    serde_json::json!({
        "privateEndpoint": pe.name, "resourceGroup": pe.resource_group, "connection": pe.connection_name,
        "address": pe.address.to_string(), "status": pe.status.as_str(), "description": pe.description,
    })
}

/// A private endpoint to create.
#[derive(Clone, Debug)]
pub struct NewPrivateEndpoint {
    pub name: String,
    pub resource_group: String,
    pub registry_id: String,
    pub registry_name: String,
    /// Only a host's unicast address can be an endpoint's.
    pub address: moat_model::HostAddress,
    pub status: ConnectionStatus,
    pub description: String,
}

/// What a change does to an existing endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointChange {
    /// Approve or reject (the model's transition rules are checked by the caller's closure).
    SetStatus {
        status: ConnectionStatus,
        description: String,
    },
    /// The registry side removed the connection: the endpoint stays, disconnected.
    Disconnect,
    /// The endpoint itself is deleted.
    Delete,
}

impl MetadataStore {
    /// Creates an endpoint; `activity` (the record of it) is written with it, completed with its connection state.
    pub async fn create_private_endpoint(
        &self,
        new: &NewPrivateEndpoint,
        activity: &ActivityEvent,
    ) -> Result<PrivateEndpoint> {
        let pe = PrivateEndpoint {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: new.name.clone(),
            resource_group: new.resource_group.clone(),
            registry_id: new.registry_id.clone(),
            connection_name: format!("{}.{}", new.registry_name, uuid::Uuid::new_v4().simple()),
            address: new.address.ip(),
            status: new.status,
            description: new.description.clone(),
            created_at: crate::time_fmt::now(),
        };
        // The registry must still exist when the row is written: a delete racing the create wins or loses whole.
        let mut tx = self.begin_write().await?;
        // Counted in the writing transaction, so concurrent creates cannot together pass the bound.
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM private_endpoints WHERE registry_id = $1")
                .bind(&pe.registry_id)
                .fetch_one(&mut *tx)
                .await?;
        if count as usize >= MAX_PRIVATE_ENDPOINTS_PER_REGISTRY {
            return Err(StoreError::Limit(format!(
                "Registry '{}' has {count} private endpoints, the most a registry can have ({MAX_PRIVATE_ENDPOINTS_PER_REGISTRY}, as in ACR); delete one first (`moat acr private-endpoint delete`).",
                new.registry_name
            )));
        }
        let r = sqlx::query(&format!(
            "INSERT INTO private_endpoints({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
             WHERE EXISTS (SELECT 1 FROM registries WHERE id = $10)"
        ))
        .bind(&pe.id)
        .bind(&pe.name)
        .bind(&pe.resource_group)
        .bind(&pe.registry_id)
        .bind(&pe.connection_name)
        .bind(pe.address.to_string())
        .bind(pe.status.as_str())
        .bind(&pe.description)
        .bind(&pe.created_at)
        .bind(&pe.registry_id)
        .execute(&mut *tx)
        .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!(
                    "a private endpoint named '{}' or on address {} exists",
                    pe.name, pe.address
                )))
            }
            r => {
                if r?.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                let activity = activity
                    .clone()
                    .with_change(None, Some(connection_state(&pe)));
                insert_activity(&mut tx, &activity).await?;
                tx.commit().await?;
                Ok(pe)
            }
        }
    }

    pub async fn private_endpoints(&self) -> Result<Vec<PrivateEndpoint>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM private_endpoints ORDER BY created_at, name"
        ))
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(from_row)
        .collect()
    }

    /// A registry's connections as its `privateEndpointConnections` shows them (disconnected ones are gone).
    pub async fn private_endpoint_connections(
        &self,
        registry_id: &str,
    ) -> Result<Vec<PrivateEndpoint>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM private_endpoints WHERE registry_id = $1 AND status <> 'Disconnected' ORDER BY created_at, name"
        ))
        .bind(registry_id)
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(from_row)
        .collect()
    }

    pub async fn private_endpoint(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<Option<PrivateEndpoint>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM private_endpoints WHERE lower(resource_group) = lower($1) AND name = $2"
        ))
        .bind(resource_group)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .map(from_row)
        .transpose()
    }

    /// Changes one endpoint, found by `find` (a `WHERE` clause and its two binds), in one transaction:
    /// `change` sees the endpoint and says what to do; if the registry's approved connections would drop to
    /// none while its exports are disabled, the change is refused and nothing is written.
    /// `activity` is written with the change, completed with the connection state before and after.
    pub async fn change_private_endpoint<F, E>(
        &self,
        selector: EndpointSelector<'_>,
        activity: &ActivityEvent,
        change: F,
    ) -> Result<Option<PrivateEndpoint>, E>
    where
        F: FnOnce(&PrivateEndpoint) -> Result<EndpointChange, E>,
        E: From<UpdateError>,
    {
        let db = |e: sqlx::Error| E::from(UpdateError::from(e));
        let store = |e: StoreError| E::from(UpdateError::Store(e));
        let mut tx = self
            .begin_write()
            .await
            .map_err(|e| E::from(UpdateError::Store(e)))?;
        let (clause, a, b) = selector.clause();
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM private_endpoints WHERE {clause}"
        ))
        .bind(a)
        .bind(b)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(mut pe) = row.map(from_row).transpose().map_err(store)? else {
            return Err(E::from(UpdateError::NotFound));
        };
        let what = change(&pe)?;
        let before = connection_state(&pe);
        let loses_approval = pe.is_approved()
            && !matches!(&what, EndpointChange::SetStatus { status, .. } if *status == ConnectionStatus::Approved);
        if loses_approval {
            let registry = super::registries::load(
                &mut tx,
                super::registries::RegistryKey::Id(&pe.registry_id),
            )
            .await
            .map_err(store)?;
            if let Some(registry) = registry {
                let mut facts = self
                    .policy_facts(&mut tx, &registry.id)
                    .await
                    .map_err(store)?;
                facts.approved_private_endpoints -= 1;
                moat_model::policy::validate_endpoint_change(
                    &registry.name,
                    &registry.settings,
                    &facts,
                )
                .map_err(|e| E::from(UpdateError::Policy(e)))?;
            }
        }
        let result = match what {
            EndpointChange::Delete => {
                sqlx::query("DELETE FROM private_endpoints WHERE id = $1")
                    .bind(&pe.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                None
            }
            EndpointChange::SetStatus {
                status,
                description,
            } => {
                pe.status = status;
                pe.description = description;
                Some(pe)
            }
            EndpointChange::Disconnect => {
                pe.status = ConnectionStatus::Disconnected;
                pe.description = "Disconnected by the registry owner".into();
                Some(pe)
            }
        };
        if let Some(pe) = &result {
            sqlx::query("UPDATE private_endpoints SET status = $1, description = $2 WHERE id = $3")
                .bind(pe.status.as_str())
                .bind(&pe.description)
                .bind(&pe.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let activity = activity
            .clone()
            .with_change(Some(before), result.as_ref().map(connection_state));
        insert_activity(&mut tx, &activity).await.map_err(store)?;
        tx.commit().await.map_err(db)?;
        Ok(result)
    }
}

/// How [`MetadataStore::change_private_endpoint`] finds its endpoint.
#[derive(Clone, Copy, Debug)]
pub enum EndpointSelector<'a> {
    /// By the endpoint's resource: resource group and name.
    Resource {
        resource_group: &'a str,
        name: &'a str,
    },
    /// By the connection's name on a registry.
    Connection {
        registry_id: &'a str,
        connection_name: &'a str,
    },
}

impl<'a> EndpointSelector<'a> {
    fn clause(&self) -> (&'static str, &'a str, &'a str) {
        match *self {
            EndpointSelector::Resource {
                resource_group,
                name,
            } => (
                "lower(resource_group) = lower($1) AND name = $2",
                resource_group,
                name,
            ),
            // A disconnected connection is no longer the registry's.
            EndpointSelector::Connection {
                registry_id,
                connection_name,
            } => (
                "registry_id = $1 AND connection_name = $2 AND status <> 'Disconnected'",
                registry_id,
                connection_name,
            ),
        }
    }
}
