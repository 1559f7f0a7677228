//! Moat's pure domain: the grammar of names and digests, manifests, registries, access scopes and the egress
//! gate. Nothing here does I/O or is async, so every rule can be tested exhaustively.

pub mod access;
pub mod activity;
pub mod arm_support;
pub mod audit;
pub mod digest;
pub mod egress;
pub mod gc;
pub mod location;
pub mod manifest;
pub mod monitor;
pub mod names;
pub mod network;
pub mod outbound;
pub mod permit;
pub mod policy;
pub mod private_endpoint;
pub mod rbac;
pub mod registry;
pub mod resource;
pub mod retention;
pub mod role_definitions;
pub mod secret_uri;
pub mod storage_uri;
pub mod text;
pub mod trail;
pub mod transfer;
pub mod unenforced;

pub use access::{Access, Action, ResourceScope};
pub use digest::{Algorithm, Digest, DigestError};
pub use egress::{decide, Decision, DenyReason, Egress, Origin, PrivateEndpointOrigin};
pub use location::{DnsDomain, Location, StoredLocation};
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest};
pub use names::{NameError, Reference, RegistryName, RepositoryName, Tag};
pub use network::{decide_network, NetworkDecision, NetworkDenial};
pub use outbound::{decide_outbound, OutboundDecision, OutboundDenial, OutboundRules};
pub use permit::{permit, Permit};
pub use policy::{PolicyError, PolicyFacts};
pub use private_endpoint::{ConnectionStatus, HostAddress, PrivateEndpoint};
pub use registry::{Registry, RegistrySettings, Sku};
pub use unenforced::{NotEnforced, Unenforced};
