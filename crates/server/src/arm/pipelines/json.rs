//! ACR Transfer's wire JSON (reference `acr-transfer-monitoring.md` §1.3) to and from `moat_model::transfer`.

use super::super::error::{ArmError, ArmResult};
use moat_model::transfer::{
    check_exporter_key, IdentityType, Pipeline, PipelineIdentity, PipelineKind, PipelineOption,
    StorageEndpoint, TransferError, TriggerStatus, UserIdentity,
};
use moat_store::meta::{PipelineRow, PipelineRunRow};
use serde_json::{json, Map, Value};

pub const RUN_TYPE: &str = "Microsoft.ContainerRegistry/registries/pipelineRuns";

/// A model refusal as ARM's error: `400 InvalidParameter` naming the property.
pub fn invalid(e: TransferError) -> ArmError {
    ArmError::bad_request("InvalidParameter", e.message).with_target(e.target)
}

fn str_at<'a>(v: &'a Value, key: &str, path: &str) -> ArmResult<Option<&'a str>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ArmError::invalid_property(path, "expected a string")),
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `identity` of a PUT. Ids are Moat's to assign (read-only on the wire); a replacement keeps the stored ones
/// (the store carries them over).
fn parse_identity(v: Option<&Value>) -> ArmResult<Option<PipelineIdentity>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = match str_at(v, "type", "identity.type")? {
        Some(t) => IdentityType::parse(t).map_err(invalid)?,
        None => return Err(ArmError::invalid_property("identity.type", "required")),
    };
    if kind == IdentityType::None {
        return Ok(None);
    }
    let mut user_assigned = std::collections::BTreeMap::new();
    match v.get("userAssignedIdentities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for id in m.keys() {
                let ok = id
                    .to_ascii_lowercase()
                    .contains("/providers/microsoft.managedidentity/userassignedidentities/");
                if !ok {
                    return Err(ArmError::invalid_property(
                        "identity.userAssignedIdentities",
                        format!("'{}' is not a user-assigned identity's resource id (/subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>)", moat_model::text::escape(id)),
                    ));
                }
                user_assigned.insert(
                    id.clone(),
                    UserIdentity {
                        principal_id: uuid(),
                        client_id: uuid(),
                    },
                );
            }
        }
        Some(_) => {
            return Err(ArmError::invalid_property(
                "identity.userAssignedIdentities",
                "expected an object keyed by identity resource id",
            ))
        }
    }
    if kind.has_user() && user_assigned.is_empty() {
        return Err(ArmError::invalid_property(
            "identity.userAssignedIdentities",
            "a UserAssigned identity names at least one user-assigned identity",
        ));
    }
    if !kind.has_user() && !user_assigned.is_empty() {
        return Err(ArmError::invalid_property(
            "identity.userAssignedIdentities",
            "only a UserAssigned identity lists user-assigned identities",
        ));
    }
    Ok(Some(PipelineIdentity {
        kind,
        principal_id: kind.has_system().then(uuid),
        user_assigned,
    }))
}

/// The body of a pipeline `PUT`.
pub fn parse_pipeline(kind: PipelineKind, body: &Value) -> ArmResult<Pipeline> {
    let top = body
        .as_object()
        .ok_or_else(|| ArmError::invalid_property("", "expected a JSON object"))?;
    for key in top.keys() {
        match key.as_str() {
            "id" | "name" | "type" | "systemData" | "location" | "identity" | "properties" => {}
            other => return Err(ArmError::invalid_property(other, "unknown property")),
        }
    }
    let location = str_at(body, "location", "location")?.map(str::to_string);
    let mut identity = parse_identity(body.get("identity"))?;
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| ArmError::invalid_property("properties", "required"))?;
    let storage_key = match kind {
        PipelineKind::Export => "target",
        PipelineKind::Import => "source",
    };
    for key in props.keys() {
        let known = key == storage_key
            || matches!(
                key.as_str(),
                "options" | "provisioningState" | "trigger" | "trustedExporterKeys"
            );
        if !known {
            return Err(ArmError::invalid_property(
                &format!("properties.{key}"),
                "unknown property",
            ));
        }
    }
    let prefix = format!("properties.{storage_key}");
    let storage = props
        .get(storage_key)
        .filter(|v| v.is_object())
        .ok_or_else(|| ArmError::invalid_property(&prefix, "required"))?;
    let storage = StorageEndpoint::new(
        kind,
        &prefix,
        str_at(storage, "type", &format!("{prefix}.type"))?,
        str_at(storage, "uri", &format!("{prefix}.uri"))?,
        str_at(storage, "keyVaultUri", &format!("{prefix}.keyVaultUri"))?,
        str_at(
            storage,
            "storageAccessMode",
            &format!("{prefix}.storageAccessMode"),
        )?,
    )
    .map_err(invalid)?;
    let strings = |key: &str| -> ArmResult<Vec<String>> {
        match props.get(key) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        ArmError::invalid_property(
                            &format!("properties.{key}"),
                            "expected an array of strings",
                        )
                    })
                })
                .collect(),
            Some(_) => Err(ArmError::invalid_property(
                &format!("properties.{key}"),
                "expected an array of strings",
            )),
        }
    };
    let options = PipelineOption::parse_list(kind, &strings("options")?).map_err(invalid)?;
    let trigger =
        match (kind, props.get("trigger")) {
            (PipelineKind::Import, None | Some(Value::Null)) => Some(TriggerStatus::Enabled),
            (PipelineKind::Import, Some(t)) => match t.pointer("/sourceTrigger/status") {
                None | Some(Value::Null) => Some(TriggerStatus::Enabled),
                Some(Value::String(s)) => Some(TriggerStatus::parse(s).map_err(invalid)?),
                Some(_) => {
                    return Err(ArmError::invalid_property(
                        "properties.trigger.sourceTrigger.status",
                        "expected Enabled or Disabled",
                    ))
                }
            },
            (PipelineKind::Export, None | Some(Value::Null)) => None,
            (PipelineKind::Export, Some(_)) => return Err(ArmError::invalid_property(
                "properties.trigger",
                "an export pipeline has no trigger (only an import pipeline's source is watched)",
            )),
        };
    let trusted_exporter_keys = strings("trustedExporterKeys")?;
    if kind == PipelineKind::Export && !trusted_exporter_keys.is_empty() {
        return Err(ArmError::invalid_property(
            "properties.trustedExporterKeys",
            "only an import pipeline trusts exporter keys",
        ));
    }
    for k in &trusted_exporter_keys {
        check_exporter_key(k).map_err(invalid)?;
    }
    // ManagedIdentity mode acts as the pipeline's identity: ACR provisions a system-assigned one when none is
    // given (the acrtransfer tests' `…_entra_mi_auth_no_identity`), and so does Moat.
    if identity.is_none()
        && storage.storage_access_mode == moat_model::transfer::StorageAccessMode::ManagedIdentity
    {
        identity = Some(PipelineIdentity {
            kind: IdentityType::SystemAssigned,
            principal_id: Some(uuid()),
            user_assigned: Default::default(),
        });
    }
    Ok(Pipeline {
        kind,
        location,
        identity,
        storage,
        options,
        trigger,
        trusted_exporter_keys,
    })
}

/// ARM's `systemData`: Moat's callers are service principals, hence `Application`.
pub fn system_data(
    created_at: &str,
    created_by: &str,
    updated_at: &str,
    updated_by: &str,
) -> Value {
    json!({
        "createdBy": created_by, "createdByType": "Application", "createdAt": created_at,
        "lastModifiedBy": updated_by, "lastModifiedByType": "Application", "lastModifiedAt": updated_at,
    })
}

pub fn storage_json(s: &StorageEndpoint) -> Value {
    json!({
        "type": s.kind.as_str(),
        "uri": s.uri,
        "keyVaultUri": s.key_vault_uri,
        "storageAccessMode": s.storage_access_mode.as_str(),
    })
}

/// A pipeline as ACR answers it: `identity.type` in lower camel with the ids filled in, `location` only when it
/// was given, `options` always (an empty list when none).
pub fn pipeline_json(registry_id: &str, tenant: &str, row: &PipelineRow) -> Value {
    let p = &row.pipeline;
    let mut out = Map::new();
    out.insert(
        "id".into(),
        json!(format!(
            "{registry_id}/{}/{}",
            p.kind.collection(),
            row.name
        )),
    );
    out.insert("name".into(), json!(row.name));
    out.insert("type".into(), json!(p.kind.resource_type()));
    out.insert(
        "systemData".into(),
        system_data(
            &row.created_at,
            &row.created_by,
            &row.updated_at,
            &row.updated_by,
        ),
    );
    if let Some(l) = &p.location {
        out.insert("location".into(), json!(l));
    }
    if let Some(i) = &p.identity {
        let mut identity = json!({
            "type": i.kind.wire(),
            "principalId": i.principal_id,
            "tenantId": i.principal_id.as_ref().map(|_| tenant),
        });
        if !i.user_assigned.is_empty() {
            let users: Map<String, Value> = i
                .user_assigned
                .iter()
                .map(|(id, u)| {
                    (
                        id.clone(),
                        json!({"principalId": u.principal_id, "clientId": u.client_id}),
                    )
                })
                .collect();
            identity["userAssignedIdentities"] = Value::Object(users);
        }
        out.insert("identity".into(), identity);
    }
    let mut props = Map::new();
    let storage_key = match p.kind {
        PipelineKind::Export => "target",
        PipelineKind::Import => "source",
    };
    props.insert(storage_key.into(), storage_json(&p.storage));
    if let Some(t) = p.trigger {
        props.insert(
            "trigger".into(),
            json!({"sourceTrigger": {"status": t.as_str()}}),
        );
    }
    props.insert(
        "options".into(),
        json!(p.options.iter().map(|o| o.as_str()).collect::<Vec<_>>()),
    );
    if !p.trusted_exporter_keys.is_empty() {
        props.insert("trustedExporterKeys".into(), json!(p.trusted_exporter_keys));
    }
    props.insert("provisioningState".into(), json!("Succeeded"));
    out.insert("properties".into(), Value::Object(props));
    Value::Object(out)
}

/// A run as ACR answers it.
pub fn run_json(registry_id: &str, row: &PipelineRunRow) -> Value {
    let mut props = json!({
        "provisioningState": row.provisioning_state,
        "request": row.request,
        "response": row.response,
    });
    if let Some(t) = &row.force_update_tag {
        props["forceUpdateTag"] = json!(t);
    }
    json!({
        "id": format!("{registry_id}/pipelineRuns/{}", row.name),
        "name": row.name,
        "type": RUN_TYPE,
        "systemData": system_data(&row.created_at, &row.created_by, &row.updated_at, &row.updated_by),
        "properties": props,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: &str = "https://kv1.vault.azure.net/secrets/sas";

    #[test]
    fn an_import_pipeline_gets_acrs_defaults() {
        let p = parse_pipeline(
            PipelineKind::Import,
            &json!({"identity": {"type": "SystemAssigned"}, "properties": {"source": {"uri": "https://acct1.blob.core.windows.net/exports", "keyVaultUri": KV}}}),
        )
        .unwrap();
        assert_eq!(p.trigger, Some(TriggerStatus::Enabled));
        assert_eq!(p.storage.storage_access_mode.as_str(), "SasToken");
        assert_eq!(
            p.storage.kind,
            moat_model::transfer::StorageType::AzureStorageBlobContainer
        );
        assert!(p.identity.unwrap().principal_id.is_some());
    }

    #[test]
    fn bad_input_is_named() {
        let e = parse_pipeline(
            PipelineKind::Export,
            &json!({"properties": {"target": {"uri": "https://acct1.blob.core.windows.net/exports", "keyVaultUri": KV}, "options": ["OverwriteTags"]}}),
        )
        .unwrap_err();
        assert_eq!(e.target.as_deref(), Some("properties.options"));
        let e = parse_pipeline(PipelineKind::Export, &json!({"properties": {}})).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("properties.target"));
        let e = parse_pipeline(
            PipelineKind::Export,
            &json!({"properties": {"target": {"uri": "https://acct1.blob.core.windows.net/exports", "keyVaultUri": KV}, "tirgger": {}}}),
        )
        .unwrap_err();
        assert_eq!(e.target.as_deref(), Some("properties.tirgger"));
    }

    #[test]
    fn managed_identity_mode_gets_a_system_identity_and_no_secret() {
        let p = parse_pipeline(
            PipelineKind::Export,
            &json!({"properties": {"target": {"uri": "https://acct1.blob.core.windows.net/exports", "keyVaultUri": KV, "storageAccessMode": "ManagedIdentity"}}}),
        )
        .unwrap();
        assert_eq!(p.storage.key_vault_uri, None);
        assert_eq!(p.identity.unwrap().kind, IdentityType::SystemAssigned);
    }
}
