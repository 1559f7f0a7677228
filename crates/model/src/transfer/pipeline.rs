//! Export and import pipelines: where archives go or come from, with which credential and options.

use crate::storage_uri::StorageUri;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::{PipelineKind, TransferError};

/// `PipelineOptions` (modelAsString in the spec; Moat accepts the four names in any case and stores them as spelt there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PipelineOption {
    OverwriteTags,
    OverwriteBlobs,
    DeleteSourceBlobOnSuccess,
    ContinueOnErrors,
}

impl PipelineOption {
    pub const ALL: [PipelineOption; 4] = [
        PipelineOption::OverwriteTags,
        PipelineOption::OverwriteBlobs,
        PipelineOption::DeleteSourceBlobOnSuccess,
        PipelineOption::ContinueOnErrors,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineOption::OverwriteTags => "OverwriteTags",
            PipelineOption::OverwriteBlobs => "OverwriteBlobs",
            PipelineOption::DeleteSourceBlobOnSuccess => "DeleteSourceBlobOnSuccess",
            PipelineOption::ContinueOnErrors => "ContinueOnErrors",
        }
    }

    /// The options a pipeline of `kind` takes (the `acrtransfer` extension's `validate_export_options` /
    /// `validate_import_options`; ACR's docs list the same): the others mean nothing there and are refused.
    pub fn valid_for(kind: PipelineKind) -> &'static [PipelineOption] {
        match kind {
            PipelineKind::Export => &[
                PipelineOption::OverwriteBlobs,
                PipelineOption::ContinueOnErrors,
            ],
            PipelineKind::Import => &[
                PipelineOption::OverwriteTags,
                PipelineOption::DeleteSourceBlobOnSuccess,
                PipelineOption::ContinueOnErrors,
            ],
        }
    }

    /// Reads the options of a pipeline of `kind`: known names, valid for the kind, each once (order kept).
    pub fn parse_list(
        kind: PipelineKind,
        given: &[String],
    ) -> Result<Vec<PipelineOption>, TransferError> {
        let valid = PipelineOption::valid_for(kind);
        let names = |list: &[PipelineOption]| {
            list.iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        for g in given {
            let Some(o) = PipelineOption::ALL
                .into_iter()
                .find(|o| o.as_str().eq_ignore_ascii_case(g.trim()))
            else {
                return Err(TransferError::new(
                    "properties.options",
                    format!(
                        "'{}' is not a pipeline option; an {} pipeline takes {}.",
                        crate::text::escape(g),
                        kind.as_str(),
                        names(valid)
                    ),
                ));
            };
            if !valid.contains(&o) {
                return Err(TransferError::new(
                    "properties.options",
                    format!(
                        "The option {} does not apply to an {} pipeline; it takes {}.",
                        o.as_str(),
                        kind.as_str(),
                        names(valid)
                    ),
                ));
            }
            if !out.contains(&o) {
                out.push(o);
            }
        }
        Ok(out)
    }
}

/// How a pipeline reaches its storage (`StorageAccessMode`, default `SasToken`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StorageAccessMode {
    /// A SAS token read at run time from the secret `keyVaultUri` names.
    #[default]
    SasToken,
    /// A credential the operator registered for the storage account (`moat storage-account add`).
    ManagedIdentity,
}

impl StorageAccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageAccessMode::SasToken => "SasToken",
            StorageAccessMode::ManagedIdentity => "ManagedIdentity",
        }
    }

    /// Also the `acrtransfer` extension's older spellings (`storage-sas-token`, `entra-mi-auth`, reference §1.4).
    pub fn parse(s: &str) -> Result<StorageAccessMode, TransferError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sastoken" | "storage-sas-token" => Ok(StorageAccessMode::SasToken),
            "managedidentity" | "entra-mi-auth" => Ok(StorageAccessMode::ManagedIdentity),
            _ => Err(TransferError::new(
                "storageAccessMode",
                format!(
                    "'{}' is not a storage access mode: use SasToken or ManagedIdentity.",
                    crate::text::escape(s)
                ),
            )),
        }
    }
}

/// Where a pipeline's archives are: ACR's two Azure Blob types, and Moat's `LocalDirectory` (a `file://` URI: a
/// mounted directory such as removable media or a data diode's inbox).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageType {
    AzureStorageBlobContainer,
    /// An export pipeline's target naming one blob (the spec's `uri` doc: `…/containerName/blobName`).
    AzureStorageBlob,
    LocalDirectory,
}

impl StorageType {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageType::AzureStorageBlobContainer => "AzureStorageBlobContainer",
            StorageType::AzureStorageBlob => "AzureStorageBlob",
            StorageType::LocalDirectory => "LocalDirectory",
        }
    }

    fn parse(kind: PipelineKind, target: &str, s: &str) -> Result<StorageType, TransferError> {
        let allowed: &[StorageType] = match kind {
            PipelineKind::Export => &[
                StorageType::AzureStorageBlobContainer,
                StorageType::AzureStorageBlob,
                StorageType::LocalDirectory,
            ],
            PipelineKind::Import => &[
                StorageType::AzureStorageBlobContainer,
                StorageType::LocalDirectory,
            ],
        };
        allowed
            .iter()
            .copied()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
                TransferError::new(
                    target,
                    format!(
                        "'{}' is not a {} type of an {} pipeline: use {}.",
                        crate::text::escape(s),
                        if kind == PipelineKind::Export {
                            "target"
                        } else {
                            "source"
                        },
                        kind.as_str(),
                        names.join(", ")
                    ),
                )
            })
    }
}

/// A pipeline's target (export) or source (import): `ExportPipelineTargetProperties` / `ImportPipelineSourceProperties`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageEndpoint {
    #[serde(rename = "type")]
    pub kind: StorageType,
    pub uri: String,
    /// The secret holding the SAS token (`SasToken` mode on Azure storage); never the token itself.
    pub key_vault_uri: Option<String>,
    pub storage_access_mode: StorageAccessMode,
}

impl StorageEndpoint {
    /// Checks a target/source as given (`prefix` is `properties.target` or `properties.source`). The default
    /// type is `AzureStorageBlobContainer` (the spec's default for a source; the CLI sends it for a target).
    pub fn new(
        kind: PipelineKind,
        prefix: &str,
        type_: Option<&str>,
        uri: Option<&str>,
        key_vault_uri: Option<&str>,
        mode: Option<&str>,
    ) -> Result<StorageEndpoint, TransferError> {
        let t = |field: &str| format!("{prefix}.{field}");
        // Without a type, a file:// URI is a LocalDirectory (Moat's type: ACR clients never send it) and anything
        // else ACR's default, a container.
        let storage_type = match type_ {
            Some(s) => StorageType::parse(kind, &t("type"), s)?,
            None if uri.is_some_and(|u| u.trim().starts_with("file://")) => {
                StorageType::LocalDirectory
            }
            None => StorageType::AzureStorageBlobContainer,
        };
        let mode = match mode {
            Some(m) => StorageAccessMode::parse(m)
                .map_err(|e| TransferError::new(&t("storageAccessMode"), e.message))?,
            None => StorageAccessMode::default(),
        };
        let uri = uri.map(str::trim).filter(|u| !u.is_empty()).ok_or_else(|| {
            TransferError::new(&t("uri"), "required: the storage container's URI (https://<account>.blob.core.windows.net/<container>, or file:///<dir> for a LocalDirectory)")
        })?;
        check_storage_uri(storage_type, uri).map_err(|why| TransferError::new(&t("uri"), why))?;
        let key_vault_uri = key_vault_uri.map(str::trim).filter(|k| !k.is_empty());
        let key_vault_uri = match (storage_type, mode) {
            // A mounted directory needs no credential: a secret named for it would never be read.
            (StorageType::LocalDirectory, _) => {
                if key_vault_uri.is_some() {
                    return Err(TransferError::new(
                        &t("keyVaultUri"),
                        "a LocalDirectory needs no credential: leave keyVaultUri out",
                    ));
                }
                None
            }
            // ACR returns keyVaultUri null in ManagedIdentity mode (reference §1.3): whatever was sent is not kept.
            (_, StorageAccessMode::ManagedIdentity) => None,
            (_, StorageAccessMode::SasToken) => {
                let k = key_vault_uri.ok_or_else(|| {
                    TransferError::new(&t("keyVaultUri"), "required with storageAccessMode SasToken: the URI of the secret that holds the SAS token (https://<vault>.vault.azure.net/secrets/<name>, set with `moat secret set`)")
                })?;
                check_secret_uri(k).map_err(|why| TransferError::new(&t("keyVaultUri"), why))?;
                Some(k.to_string())
            }
        };
        Ok(StorageEndpoint {
            kind: storage_type,
            uri: uri.to_string(),
            key_vault_uri,
            storage_access_mode: mode,
        })
    }
}

/// The storage URI's form for its type, by the storage module's parser ([`StorageUri`]).
pub fn check_storage_uri(kind: StorageType, uri: &str) -> Result<(), String> {
    if uri.contains(['?', '#']) {
        // Not echoed: a query here is likely a SAS token, which must not reach a log.
        return Err("the URI has a query or fragment: a SAS token belongs in the secret keyVaultUri names, never in the URI".into());
    }
    let parsed: StorageUri = uri
        .parse()
        .map_err(|e: crate::storage_uri::StorageUriError| e.to_string())?;
    let shown = crate::text::escape(uri);
    match (kind, &parsed) {
        (StorageType::LocalDirectory, StorageUri::LocalDirectory { .. }) => Ok(()),
        (StorageType::LocalDirectory, _) => Err(format!(
            "'{shown}' is not a file:// URI: a LocalDirectory is named file:///<absolute path>"
        )),
        (_, StorageUri::LocalDirectory { .. }) => Err(format!(
            "'{shown}' names a directory: its type is LocalDirectory, not {}",
            kind.as_str()
        )),
        (StorageType::AzureStorageBlobContainer, StorageUri::AzureBlob { blob: None, .. }) => Ok(()),
        (StorageType::AzureStorageBlobContainer, _) => Err(format!(
            "'{shown}' names a blob, not a container: use https://<account>.blob.core.windows.net/<container> (or type AzureStorageBlob for an export to one blob)"
        )),
        (StorageType::AzureStorageBlob, StorageUri::AzureBlob { blob: Some(_), .. }) => Ok(()),
        (StorageType::AzureStorageBlob, _) => Err(format!(
            "'{shown}' does not name a blob: an AzureStorageBlob target is https://<account>.blob.core.windows.net/<container>/<blob>"
        )),
    }
}

/// A Key Vault-shaped secret URI: `https://<vault>.<host>/secrets/<name>[/<version>]`.
pub fn check_secret_uri(uri: &str) -> Result<(), String> {
    let shown = crate::text::escape(uri);
    let bad = || {
        format!("'{shown}' is not a secret URI: use https://<vault>.vault.azure.net/secrets/<name>")
    };
    let rest = uri.strip_prefix("https://").ok_or_else(bad)?;
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    let segments: Vec<&str> = path.split('/').collect();
    match segments[..] {
        ["secrets", name] | ["secrets", name, _] if !host.is_empty() && !name.is_empty() => Ok(()),
        _ => Err(bad()),
    }
}

/// `trigger.sourceTrigger.status` of an import pipeline (`TriggerStatus`, default `Enabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TriggerStatus {
    #[default]
    Enabled,
    Disabled,
}

impl TriggerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerStatus::Enabled => "Enabled",
            TriggerStatus::Disabled => "Disabled",
        }
    }

    pub fn parse(s: &str) -> Result<TriggerStatus, TransferError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enabled" => Ok(TriggerStatus::Enabled),
            "disabled" => Ok(TriggerStatus::Disabled),
            _ => Err(TransferError::new(
                "properties.trigger.sourceTrigger.status",
                format!(
                    "'{}' is not a trigger status: use Enabled or Disabled.",
                    crate::text::escape(s)
                ),
            )),
        }
    }
}

/// `identity.type` (`ResourceIdentityType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityType {
    SystemAssigned,
    UserAssigned,
    SystemAndUserAssigned,
    None,
}

impl IdentityType {
    /// Read in any case: the service answers `systemAssigned` and the SDK sends back what it read.
    pub fn parse(s: &str) -> Result<IdentityType, TransferError> {
        let squashed: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        match squashed.as_str() {
            "systemassigned" => Ok(IdentityType::SystemAssigned),
            "userassigned" => Ok(IdentityType::UserAssigned),
            "systemassigned,userassigned" => Ok(IdentityType::SystemAndUserAssigned),
            "none" => Ok(IdentityType::None),
            _ => Err(TransferError::new(
                "identity.type",
                format!("'{}' is not an identity type: use SystemAssigned, UserAssigned, 'SystemAssigned, UserAssigned' or None.", crate::text::escape(s)),
            )),
        }
    }

    /// As ACR answers it: lower camel (`systemAssigned`), a wire quirk the `acrtransfer` tests assert (reference §1.3).
    pub fn wire(self) -> &'static str {
        match self {
            IdentityType::SystemAssigned => "systemAssigned",
            IdentityType::UserAssigned => "userAssigned",
            IdentityType::SystemAndUserAssigned => "systemAssigned, userAssigned",
            IdentityType::None => "none",
        }
    }

    pub fn has_system(self) -> bool {
        matches!(
            self,
            IdentityType::SystemAssigned | IdentityType::SystemAndUserAssigned
        )
    }

    pub fn has_user(self) -> bool {
        matches!(
            self,
            IdentityType::UserAssigned | IdentityType::SystemAndUserAssigned
        )
    }
}

/// A user-assigned identity's ids, as ACR fills them (read-only on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentity {
    pub principal_id: String,
    pub client_id: String,
}

/// A pipeline's identity. Moat runs pipelines itself, so the ids only name the pipeline's principal the way ACR's
/// answers do (a client reads `principalId` to print its role-assignment guidance); they grant nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineIdentity {
    pub kind: IdentityType,
    /// Set for a system-assigned identity; kept across replacements of the pipeline.
    pub principal_id: Option<String>,
    pub user_assigned: BTreeMap<String, UserIdentity>,
}

/// An export or import pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub kind: PipelineKind,
    /// The resource's `location`, echoed when given (ACR's own answer omits it when the PUT did).
    pub location: Option<String>,
    pub identity: Option<PipelineIdentity>,
    /// `properties.target` of an export pipeline, `properties.source` of an import pipeline.
    pub storage: StorageEndpoint,
    pub options: Vec<PipelineOption>,
    /// Import pipelines only (always set there, `Enabled` by default as ACR answers).
    pub trigger: Option<TriggerStatus>,
    /// Moat's extension on import pipelines (`properties.trustedExporterKeys`): archives must be signed by one of
    /// these exporter keys (`ed25519:<base64>`, as `moat transfer-key show` prints them).
    pub trusted_exporter_keys: Vec<String>,
}

impl Pipeline {
    pub fn has_option(&self, o: PipelineOption) -> bool {
        self.options.contains(&o)
    }
}

/// An exporter's public key as `moat transfer-key show` prints it: `ed25519:` and the 32-byte key in standard
/// base64 (44 characters with its one `=`).
pub fn check_exporter_key(key: &str) -> Result<(), TransferError> {
    let b64 = key.strip_prefix("ed25519:").unwrap_or("");
    let body = b64.strip_suffix('=').unwrap_or("");
    let ok = b64.len() == 44
        && !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err(TransferError::new(
            "properties.trustedExporterKeys",
            format!("'{}' is not an exporter key: use the ed25519:<base64> form `moat transfer-key show` prints on the exporting server.", crate::text::escape(key)),
        ))
    }
}
