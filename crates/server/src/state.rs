use crate::audit_log::AuditLog;
use crate::config::ServeConfig;
use crate::oci::uploads::UploadLocks;
use crate::registries::RegistryDirectory;
use moat_auth::TokenIssuer;
use moat_store::{BlobStore, MetadataStore};
use std::sync::Arc;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServeConfig>,
    pub meta: MetadataStore,
    pub blobs: Arc<dyn BlobStore>,
    pub tokens: TokenIssuer,
    /// The key files' keyrings (one per purpose), reloaded while the server runs.
    pub keys: crate::keys::ServerKeys,
    /// Signs and checks data-endpoint download links.
    pub links: moat_auth::LinkSigner,
    pub registries: RegistryDirectory,
    /// Per-session locks and in-process hasher state of open uploads.
    pub uploads: UploadLocks,
    /// Audit events that record no state change (pulls, logins, denials) are written in batches.
    pub audit: AuditLog,
    /// Every password check: the failed-login throttle and bounded, coalesced, remembered argon2.
    pub logins: Arc<crate::logins::LoginGuard>,
    /// Manifests by tag, the hottest read of a registry.
    pub manifest_cache: crate::oci::manifest_cache::ManifestCache,
    /// The private endpoints' listeners.
    pub listeners: Arc<crate::endpoints::Listeners>,
    /// The durable job runner (remote imports, pipeline runs): see [`crate::jobs`].
    pub jobs: crate::jobs::Jobs,
    /// Every connection the server makes on its own goes through this (DESIGN principle 7).
    pub outbound: moat_outbound::Outbound,
}
