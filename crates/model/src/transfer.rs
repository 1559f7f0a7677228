//! ACR Transfer's resources as a registry holds them: export and import pipelines and their runs (reference
//! `acr-transfer-monitoring.md` §1.3 spells every field). The rules here are ACR's where it documents them and
//! Moat's own where it does not (said so beside each); the management plane translates wire JSON into these types
//! and back, the store keeps them as JSON, and a pipeline run job reads them.

use crate::digest::Digest;
use crate::names::{RepositoryName, Tag};
use crate::storage_uri::StorageUri;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Most artifacts one export run may name (ACR's limit, [DOCS] transfer prerequisites).
pub const MAX_RUN_ARTIFACTS: usize = 50;

/// Bad input for a pipeline or a run: `target` is the property as the API spells it (ARM's error `target`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransferError {
    pub target: String,
    pub message: String,
}

impl TransferError {
    fn new(target: &str, message: impl Into<String>) -> TransferError {
        TransferError {
            target: target.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PipelineKind {
    Export,
    Import,
}

impl PipelineKind {
    /// The ARM resource type segment: `exportPipelines` / `importPipelines`.
    pub fn collection(self) -> &'static str {
        match self {
            PipelineKind::Export => "exportPipelines",
            PipelineKind::Import => "importPipelines",
        }
    }

    pub fn resource_type(self) -> String {
        format!(
            "Microsoft.ContainerRegistry/registries/{}",
            self.collection()
        )
    }

    /// `export` / `import`, as `az acr pipeline-run --pipeline-type` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::Export => "export",
            PipelineKind::Import => "import",
        }
    }
}

/// A pipeline's or a run's name: 5 to 50 letters and digits ([TSP] `NamePattern`, `@@minLength 5`, `@@maxLength 50`).
pub fn check_name(what: &str, name: &str) -> Result<(), TransferError> {
    let ok = (5..=50).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(TransferError::new(
            "name",
            format!(
                "{what} name '{}' is invalid: use 5 to 50 letters and digits.",
                crate::text::escape(name)
            ),
        ))
    }
}

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

/// One artifact of an export run, as ACR reads it: `repo` means `repo:latest`, else `repo:tag` or `repo@digest`.
/// Returns the normalized form.
pub fn normalize_artifact(s: &str) -> Result<String, TransferError> {
    let bad = |why: String| TransferError::new("properties.request.artifacts", why);
    let s = s.trim();
    if let Some((repo, digest)) = s.split_once('@') {
        repo.parse::<RepositoryName>()
            .map_err(|e| bad(e.to_string()))?;
        digest
            .parse::<Digest>()
            .map_err(|e| bad(format!("'{}': {e}", crate::text::escape(s))))?;
        return Ok(s.to_string());
    }
    // The tag follows the last ':' after the last '/' (a repository has no ':').
    let (repo, tag) = match s.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (s, "latest"),
    };
    repo.parse::<RepositoryName>()
        .map_err(|e| bad(e.to_string()))?;
    tag.parse::<Tag>().map_err(|e| bad(e.to_string()))?;
    Ok(format!("{repo}:{tag}"))
}

/// A blob of a run: `PipelineRunSourceProperties` / `PipelineRunTargetProperties` (`type` is `AzureStorageBlob`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunBlob {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub name: String,
}

/// A run's `request`, in its wire spelling (it is stored and answered as it was accepted, normalized).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    pub pipeline_resource_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RunBlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RunBlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_digest: Option<String>,
}

/// An archive's name in its container or directory: one path segment-ish name a blob and a file can both carry.
fn check_blob_name(target: &str, name: &str) -> Result<(), TransferError> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        && !name
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == '?' || c == '#');
    if ok {
        Ok(())
    } else {
        Err(TransferError::new(
            target,
            format!("'{}' is not a usable blob name: use letters, digits, '.', '-', '_' (and '/' between parts).", crate::text::escape(name)),
        ))
    }
}

impl RunRequest {
    /// Checks a run's request against the kind of pipeline it names (the caller has resolved
    /// `pipelineResourceId` to a pipeline of this registry) and returns it normalized.
    pub fn validate(mut self, kind: PipelineKind) -> Result<RunRequest, TransferError> {
        let blob = |b: &mut RunBlob, target: &str| -> Result<(), TransferError> {
            if !b.kind.is_empty() && !b.kind.eq_ignore_ascii_case("AzureStorageBlob") {
                return Err(TransferError::new(
                    &format!("{target}.type"),
                    "the only type is AzureStorageBlob",
                ));
            }
            b.kind = "AzureStorageBlob".into();
            check_blob_name(&format!("{target}.name"), &b.name)
        };
        match kind {
            PipelineKind::Export => {
                if self.source.is_some() {
                    return Err(TransferError::new(
                        "properties.request.source",
                        "an export run has a target, not a source",
                    ));
                }
                if self.artifacts.is_empty() || self.artifacts.len() > MAX_RUN_ARTIFACTS {
                    return Err(TransferError::new(
                        "properties.request.artifacts",
                        format!("an export run names 1 to {MAX_RUN_ARTIFACTS} artifacts (repo:tag or repo@digest); it named {}", self.artifacts.len()),
                    ));
                }
                self.artifacts = self
                    .artifacts
                    .iter()
                    .map(|a| normalize_artifact(a))
                    .collect::<Result<_, _>>()?;
                let target = self.target.as_mut().ok_or_else(|| {
                    TransferError::new(
                        "properties.request.target.name",
                        "required: the name of the archive blob to write",
                    )
                })?;
                blob(target, "properties.request.target")?;
                if self.catalog_digest.is_some() {
                    return Err(TransferError::new(
                        "properties.request.catalogDigest",
                        "an export run computes its catalogDigest; leave it out",
                    ));
                }
            }
            PipelineKind::Import => {
                if self.target.is_some() || !self.artifacts.is_empty() {
                    return Err(TransferError::new(
                        "properties.request",
                        "an import run names a source blob, not a target or artifacts",
                    ));
                }
                let source = self.source.as_mut().ok_or_else(|| {
                    TransferError::new(
                        "properties.request.source.name",
                        "required: the name of the archive blob to import",
                    )
                })?;
                blob(source, "properties.request.source")?;
                if let Some(d) = &self.catalog_digest {
                    d.parse::<Digest>().map_err(|e| {
                        TransferError::new("properties.request.catalogDigest", e.to_string())
                    })?;
                }
            }
        }
        Ok(self)
    }
}

/// A pipeline resource id's parts: `…/registries/{registry}/{exportPipelines|importPipelines}/{name}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineRef {
    pub subscription: String,
    pub resource_group: String,
    pub registry: String,
    pub kind: PipelineKind,
    pub name: String,
}

impl PipelineRef {
    pub fn parse(id: &str) -> Result<PipelineRef, TransferError> {
        let bad = || {
            TransferError::new(
                "properties.request.pipelineResourceId",
                format!("'{}' is not a pipeline's resource id: use the id `moat acr export-pipeline show` (or import-pipeline) prints.", crate::text::escape(id)),
            )
        };
        let s: Vec<&str> = id.trim_matches('/').split('/').collect();
        let [subs, sub, rg_key, rg, providers, provider, registries, registry, collection, name] =
            s[..]
        else {
            return Err(bad());
        };
        let kind = if collection.eq_ignore_ascii_case("exportPipelines") {
            PipelineKind::Export
        } else if collection.eq_ignore_ascii_case("importPipelines") {
            PipelineKind::Import
        } else {
            return Err(bad());
        };
        let fixed = subs.eq_ignore_ascii_case("subscriptions")
            && providers.eq_ignore_ascii_case("providers")
            && rg_key.eq_ignore_ascii_case("resourceGroups")
            && provider.eq_ignore_ascii_case("Microsoft.ContainerRegistry")
            && registries.eq_ignore_ascii_case("registries");
        if !fixed || name.is_empty() {
            return Err(bad());
        }
        Ok(PipelineRef {
            subscription: sub.to_string(),
            resource_group: rg.to_string(),
            registry: registry.to_string(),
            kind,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for PipelineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_5_to_50_alphanumerics() {
        for ok in ["abcde", "Export1", &"a".repeat(50)] {
            assert!(check_name("Pipeline", ok).is_ok(), "{ok}");
        }
        for bad in [
            "abcd",
            "with-dash",
            "with space",
            "ünicode",
            &"a".repeat(51),
            "",
        ] {
            assert!(check_name("Pipeline", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_are_checked_per_kind() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            PipelineOption::parse_list(
                PipelineKind::Export,
                &s(&["overwriteblobs", "ContinueOnErrors", "OverwriteBlobs"])
            )
            .unwrap(),
            vec![
                PipelineOption::OverwriteBlobs,
                PipelineOption::ContinueOnErrors
            ]
        );
        assert!(PipelineOption::parse_list(PipelineKind::Export, &s(&["OverwriteTags"])).is_err());
        assert!(PipelineOption::parse_list(
            PipelineKind::Export,
            &s(&["DeleteSourceBlobOnSuccess"])
        )
        .is_err());
        assert!(PipelineOption::parse_list(PipelineKind::Import, &s(&["OverwriteBlobs"])).is_err());
        assert!(PipelineOption::parse_list(PipelineKind::Import, &s(&["Nonsense"])).is_err());
        assert_eq!(
            PipelineOption::parse_list(
                PipelineKind::Import,
                &s(&[
                    "OverwriteTags",
                    "DeleteSourceBlobOnSuccess",
                    "ContinueOnErrors"
                ])
            )
            .unwrap()
            .len(),
            3
        );
    }

    #[test]
    fn sas_mode_needs_a_secret_and_managed_identity_drops_it() {
        let kv = "https://vault1.vault.azure.net/secrets/sas";
        let uri = "https://acct.blob.core.windows.net/exports";
        let e = StorageEndpoint::new(
            PipelineKind::Export,
            "properties.target",
            None,
            Some(uri),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.target, "properties.target.keyVaultUri");
        let ok = StorageEndpoint::new(
            PipelineKind::Export,
            "properties.target",
            Some("AzureStorageBlobContainer"),
            Some(uri),
            Some(kv),
            Some("SasToken"),
        )
        .unwrap();
        assert_eq!(ok.key_vault_uri.as_deref(), Some(kv));
        let mi = StorageEndpoint::new(
            PipelineKind::Export,
            "properties.target",
            None,
            Some(uri),
            Some(kv),
            Some("ManagedIdentity"),
        )
        .unwrap();
        assert_eq!(mi.key_vault_uri, None);
        assert_eq!(mi.storage_access_mode, StorageAccessMode::ManagedIdentity);
        assert!(StorageEndpoint::new(
            PipelineKind::Export,
            "properties.target",
            None,
            Some(uri),
            Some("https://vault1.vault.azure.net/keys/x"),
            None
        )
        .is_err());
        assert!(StorageEndpoint::new(
            PipelineKind::Export,
            "properties.target",
            None,
            Some(&format!("{uri}?sv=1&sig=x")),
            Some(kv),
            None
        )
        .is_err());
        assert!(StorageEndpoint::new(
            PipelineKind::Export,
            "properties.target",
            None,
            Some(uri),
            Some(kv),
            Some("Sometimes")
        )
        .is_err());
    }

    #[test]
    fn local_directories_are_absolute_file_uris_without_a_secret() {
        let ok = StorageEndpoint::new(
            PipelineKind::Import,
            "properties.source",
            Some("LocalDirectory"),
            Some("file:///media/usb/moat"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(ok.kind, StorageType::LocalDirectory);
        for bad in ["file://relative", "file:///a/../etc", "/media/usb"] {
            assert!(
                StorageEndpoint::new(
                    PipelineKind::Import,
                    "properties.source",
                    Some("LocalDirectory"),
                    Some(bad),
                    None,
                    None
                )
                .is_err(),
                "{bad}"
            );
        }
        assert!(StorageEndpoint::new(
            PipelineKind::Import,
            "properties.source",
            Some("LocalDirectory"),
            Some("file:///m"),
            Some("https://v.vault.azure.net/secrets/s"),
            None
        )
        .is_err());
        // An import pipeline's source is a container (or a directory), never one blob.
        assert!(StorageEndpoint::new(
            PipelineKind::Import,
            "properties.source",
            Some("AzureStorageBlob"),
            Some("https://a.blob.core.windows.net/c/b"),
            Some("https://v.vault.azure.net/secrets/s"),
            None
        )
        .is_err());
    }

    #[test]
    fn identity_types_read_in_any_case_and_answer_lower_camel() {
        assert_eq!(
            IdentityType::parse("SystemAssigned").unwrap().wire(),
            "systemAssigned"
        );
        assert_eq!(
            IdentityType::parse("systemAssigned").unwrap(),
            IdentityType::SystemAssigned
        );
        assert_eq!(
            IdentityType::parse("SystemAssigned, UserAssigned").unwrap(),
            IdentityType::SystemAndUserAssigned
        );
        assert!(IdentityType::parse("Both").is_err());
    }

    #[test]
    fn artifacts_are_normalized_like_acr() {
        assert_eq!(
            normalize_artifact("hello-world").unwrap(),
            "hello-world:latest"
        );
        assert_eq!(normalize_artifact("team/app:v1").unwrap(), "team/app:v1");
        let d = format!("app@sha256:{}", "a".repeat(64));
        assert_eq!(normalize_artifact(&d).unwrap(), d);
        for bad in ["UPPER", "app:", "app@sha256:short", ""] {
            assert!(normalize_artifact(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_requests_match_their_pipeline_kind() {
        let export = RunRequest {
            pipeline_resource_id: "x".into(),
            artifacts: vec!["app".into()],
            source: None,
            target: Some(RunBlob {
                kind: String::new(),
                name: "out.tar".into(),
            }),
            catalog_digest: None,
        };
        let v = export.clone().validate(PipelineKind::Export).unwrap();
        assert_eq!(v.artifacts, vec!["app:latest"]);
        assert_eq!(v.target.unwrap().kind, "AzureStorageBlob");
        assert!(export.clone().validate(PipelineKind::Import).is_err());
        let mut many = export.clone();
        many.artifacts = (0..51).map(|i| format!("r{i}")).collect();
        assert!(many.validate(PipelineKind::Export).is_err());
        let mut none = export.clone();
        none.artifacts.clear();
        assert!(none.validate(PipelineKind::Export).is_err());
        let mut traversal = export;
        traversal.target = Some(RunBlob {
            kind: "AzureStorageBlob".into(),
            name: "../x".into(),
        });
        assert!(traversal.validate(PipelineKind::Export).is_err());
        let import = RunRequest {
            pipeline_resource_id: "x".into(),
            artifacts: vec![],
            source: Some(RunBlob {
                kind: "AzureStorageBlob".into(),
                name: "in.tar".into(),
            }),
            target: None,
            catalog_digest: Some(format!("sha256:{}", "b".repeat(64))),
        };
        assert!(import.clone().validate(PipelineKind::Import).is_ok());
        let mut no_source = import;
        no_source.source = None;
        assert!(no_source.validate(PipelineKind::Import).is_err());
    }

    #[test]
    fn pipeline_ids_parse_in_any_case() {
        let p = PipelineRef::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/reg1/exportPipelines/exp01").unwrap();
        assert_eq!(
            (p.kind, p.name.as_str(), p.registry.as_str()),
            (PipelineKind::Export, "exp01", "reg1")
        );
        let p = PipelineRef::parse("/SUBSCRIPTIONS/s/RESOURCEGROUPS/rg/PROVIDERS/microsoft.containerregistry/REGISTRIES/reg1/IMPORTPIPELINES/imp01").unwrap();
        assert_eq!(p.kind, PipelineKind::Import);
        assert!(PipelineRef::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/reg1/webhooks/w").is_err());
    }

    #[test]
    fn exporter_keys_have_the_printed_form() {
        let key = format!("ed25519:{}=", "A".repeat(43));
        assert!(check_exporter_key(&key).is_ok());
        assert!(check_exporter_key("ed25519:short=").is_err());
        assert!(check_exporter_key(&format!("rsa:{}=", "A".repeat(43))).is_err());
    }
}
