//! The egress gate: every way artifact bytes can leave a registry is a variant of [`Egress`], and [`decide`] is
//! the one place that says whether it may. A new egress path is a new variant, and the exhaustive `match` below
//! (and in every caller that audits it) makes the compiler point at each place that must handle it.

use crate::access::{Access, Action};
use crate::digest::Digest;
use crate::names::{Reference, RepositoryName};
use crate::network::{decide_network, NetworkDecision, NetworkDenial};
use crate::registry::Registry;
use std::fmt;
use std::net::IpAddr;

/// Where a request came from, classified once at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub client_ip: IpAddr,
    /// The listener the request arrived on (`main` for the default listener).
    pub listener: String,
    /// Set when the listener is a private endpoint.
    pub private_endpoint: Option<PrivateEndpointOrigin>,
    /// The server itself, acting for a management-plane caller (import): ACR's "trusted service".
    pub trusted_service: bool,
}

impl Origin {
    /// The server acting on behalf of a management-plane caller at `caller_ip`.
    pub fn trusted_service(caller_ip: IpAddr) -> Origin {
        Origin {
            client_ip: caller_ip,
            listener: "trustedService".into(),
            private_endpoint: None,
            trusted_service: true,
        }
    }
}

/// The private endpoint a request arrived through, and the state of its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateEndpointOrigin {
    pub name: String,
    pub registry_id: String,
    pub approved: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Egress<'a> {
    /// A blob's bytes served to a client.
    PullBlob {
        repository: &'a RepositoryName,
        digest: &'a Digest,
    },
    /// A repository's tag names listed to a client: they reveal what it holds.
    ListTags { repository: &'a RepositoryName },
    /// A repository's metadata (tags, manifests, digests, sizes, platforms) read through ACR's `/acr/v1` API.
    ReadMetadata { repository: &'a RepositoryName },
    /// A repository's soft-deleted manifests and tags listed (`/acr/v1/_deleted/...`): metadata of what was
    /// deleted, for callers holding `deleted_read` (never anonymous).
    ReadDeleted { repository: &'a RepositoryName },
    /// A manifest served to a client (by tag or digest).
    PullManifest {
        repository: &'a RepositoryName,
        reference: &'a Reference,
    },
    /// A blob's bytes served from the registry's dedicated data endpoint, through a link the login server
    /// issued after its own `PullBlob` decision; the link stands for the caller's permission.
    DataEndpointDownload {
        repository: &'a RepositoryName,
        digest: &'a Digest,
    },
    /// An image of this registry imported into another registry of this server (`importImage` with a
    /// `resourceId` source): its manifests and blobs are linked into the target, no byte copied.
    ImportFrom {
        target_registry: &'a Registry,
        repository: &'a RepositoryName,
        reference: &'a Reference,
    },
    /// An export pipeline created or replaced on this registry (ACR Transfer): the standing permission for its runs
    /// to write the registry's artifacts to outside storage. A management-plane change, so the registry's network
    /// rules do not apply to it (they govern the clients that reach the registry, as in ACR); its export policy does.
    ExportPipeline { pipeline: &'a str },
    /// One run of an export pipeline: `artifacts` (as the run's request names them) leave this registry for the
    /// pipeline's storage target. Decided again when the run starts, in the transaction that marks it started, so a
    /// run queued before exports were disabled never writes a byte after. The server acts on its own here, as a
    /// trusted service: a registry whose network is restricted lets the run through only when it trusts them.
    PipelineRun {
        pipeline: &'a str,
        run: &'a str,
        artifacts: &'a [String],
    },
    /// A blob linked from one repository into another (`POST ?mount=&from=`). `source_registry` is the registry
    /// the `from` repository is looked up in, which is always the one the request is routed to; it is kept in the
    /// variant so that the rule against cross-registry mounts is stated here and not assumed by callers.
    Mount {
        source_registry: &'a Registry,
        from: &'a RepositoryName,
        to: &'a RepositoryName,
    },
}

impl Egress<'_> {
    /// The repository the egress reads (for a mount, the one written to, where the caller's request is).
    pub fn repository(&self) -> Option<&RepositoryName> {
        match self {
            Egress::PullBlob { repository, .. }
            | Egress::DataEndpointDownload { repository, .. }
            | Egress::PullManifest { repository, .. }
            | Egress::ListTags { repository }
            | Egress::ReadMetadata { repository }
            | Egress::ReadDeleted { repository }
            | Egress::ImportFrom { repository, .. } => Some(repository),
            Egress::Mount { to, .. } => Some(to),
            Egress::ExportPipeline { .. } | Egress::PipelineRun { .. } => None,
        }
    }

    /// What left (or would have left), in the words an audit event's description uses.
    pub fn describe(&self) -> String {
        match self {
            Egress::PullBlob { repository, digest }
            | Egress::DataEndpointDownload { repository, digest } => {
                format!("blob {digest} of '{repository}'")
            }
            Egress::ListTags { repository } => format!("the tags of '{repository}'"),
            Egress::ReadMetadata { repository } => format!("the metadata of '{repository}'"),
            Egress::ReadDeleted { repository } => {
                format!("the deleted artifacts of '{repository}'")
            }
            Egress::PullManifest {
                repository,
                reference,
            } => format!("manifest '{repository}{}'", at(reference)),
            Egress::ImportFrom {
                target_registry,
                repository,
                reference,
            } => format!(
                "'{repository}{}' imported into registry '{}'",
                at(reference),
                target_registry.name
            ),
            Egress::ExportPipeline { pipeline } => format!("export pipeline '{pipeline}'"),
            Egress::PipelineRun {
                pipeline,
                run,
                artifacts,
            } => format!(
                "run '{run}' of export pipeline '{pipeline}' ({}: {})",
                plural(artifacts.len(), "artifact"),
                artifacts.join(", ")
            ),
            Egress::Mount { from, to, .. } => format!("a blob mounted from '{from}' into '{to}'"),
        }
    }
}

/// `:tag` or `@digest`, as a reference follows a repository name.
fn at(reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => format!(":{t}"),
        Reference::Digest(d) => format!("@{d}"),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The caller's token does not carry the action on that repository: the client should fetch a new token.
    MissingPermission {
        repository: RepositoryName,
        action: Action,
    },
    /// Bytes of one registry may never be linked into another.
    CrossRegistry,
    /// The registry's data endpoint is disabled: its links are void.
    DataEndpointDisabled,
    /// The registry's export policy is disabled: nothing leaves it by import or transfer.
    ExportsDisabled { registry: String },
    /// A path that exists in the model but is not built yet.
    NotSupported(&'static str),
    /// The origin may not reach the registry at all.
    Network(NetworkDenial),
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::MissingPermission { repository, action } => {
                write!(
                    f,
                    "the caller lacks '{}' on repository '{}'",
                    action.as_str(),
                    repository
                )
            }
            DenyReason::CrossRegistry => {
                f.write_str("content cannot move between registries by mount")
            }
            DenyReason::DataEndpointDisabled => {
                f.write_str("the registry's data endpoint is disabled")
            }
            DenyReason::ExportsDisabled { registry } => write!(
                f,
                "registry '{registry}' has exports disabled (exportPolicy): its artifacts cannot be imported into or transferred to another registry"
            ),
            DenyReason::NotSupported(what) => write!(f, "{what} is not supported yet"),
            DenyReason::Network(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

fn may_read(registry: &Registry, access: &Access, repo: &RepositoryName) -> Decision {
    if registry.anonymous_pull_enabled() || access.allows_repo(repo, Action::Pull) {
        Decision::Allow
    } else {
        Decision::Deny(DenyReason::MissingPermission {
            repository: repo.clone(),
            action: Action::Pull,
        })
    }
}

/// Decides one egress from `registry` (the registry the request is routed to), for a caller holding `access`,
/// arriving from `origin`: first whether the origin may reach the registry at all, then the variant's own rule.
pub fn decide(registry: &Registry, origin: &Origin, access: &Access, egress: &Egress) -> Decision {
    let network_applies = !matches!(egress, Egress::ExportPipeline { .. });
    if network_applies {
        if let NetworkDecision::Denied(d) = decide_network(&registry.id, &registry.settings, origin)
        {
            return Decision::Deny(DenyReason::Network(d));
        }
    }
    match egress {
        Egress::PullBlob { repository, .. }
        | Egress::PullManifest { repository, .. }
        | Egress::ListTags { repository } => may_read(registry, access, repository),
        Egress::ReadMetadata { repository } => {
            if registry.anonymous_pull_enabled()
                || access.allows_repo(repository, Action::MetadataRead)
            {
                Decision::Allow
            } else {
                Decision::Deny(DenyReason::MissingPermission {
                    repository: (*repository).clone(),
                    action: Action::MetadataRead,
                })
            }
        }
        Egress::ReadDeleted { repository } => {
            if access.allows_repo(repository, Action::DeletedRead) {
                Decision::Allow
            } else {
                Decision::Deny(DenyReason::MissingPermission {
                    repository: (*repository).clone(),
                    action: Action::DeletedRead,
                })
            }
        }
        Egress::ImportFrom {
            target_registry, ..
        } => {
            if target_registry.id == registry.id {
                // Within one registry nothing leaves it: a re-tag.
                Decision::Allow
            } else if !registry.settings.exports_enabled() {
                Decision::Deny(DenyReason::ExportsDisabled {
                    registry: registry.name.clone(),
                })
            } else {
                Decision::Allow
            }
        }
        Egress::ExportPipeline { .. } => {
            if !registry.settings.exports_enabled() {
                Decision::Deny(DenyReason::ExportsDisabled {
                    registry: registry.name.clone(),
                })
            } else {
                Decision::Allow
            }
        }
        Egress::PipelineRun { .. } => {
            if registry.settings.exports_enabled() {
                Decision::Allow
            } else {
                Decision::Deny(DenyReason::ExportsDisabled {
                    registry: registry.name.clone(),
                })
            }
        }
        Egress::DataEndpointDownload { .. } => {
            if registry.settings.data_endpoint_enabled {
                Decision::Allow
            } else {
                Decision::Deny(DenyReason::DataEndpointDisabled)
            }
        }
        Egress::Mount {
            source_registry,
            from,
            to,
        } => {
            if source_registry.id != registry.id {
                return Decision::Deny(DenyReason::CrossRegistry);
            }
            match may_read(registry, access, from) {
                Decision::Allow if access.allows_repo(to, Action::Push) => Decision::Allow,
                Decision::Allow => Decision::Deny(DenyReason::MissingPermission {
                    repository: (*to).clone(),
                    action: Action::Push,
                }),
                deny => deny,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AccessGrant, ResourceScope};
    use crate::registry::{RegistrySettings, Sku};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn registry(id: &str, anonymous: bool) -> Registry {
        let mut settings =
            RegistrySettings::new(Sku::Premium, crate::Location::parse("local").unwrap());
        settings.anonymous_pull_enabled = anonymous;
        Registry {
            id: id.into(),
            name: "default".into(),
            login_server: "127.0.0.1:5000".into(),
            resource_group: "moat".into(),
            created_at: String::new(),
            settings,
        }
    }

    fn origin() -> Origin {
        Origin {
            client_ip: "127.0.0.1".parse().unwrap(),
            listener: "main".into(),
            private_endpoint: None,
            trusted_service: false,
        }
    }

    fn grant(repo: &str, actions: &[Action]) -> AccessGrant {
        AccessGrant {
            resource: ResourceScope::Repository(repo.parse().unwrap()),
            actions: actions.iter().copied().collect::<BTreeSet<_>>(),
        }
    }

    #[test]
    fn pull_needs_pull_or_anonymous() {
        let repo: RepositoryName = "a".parse().unwrap();
        let digest = Digest::sha256_of(b"x");
        let e = Egress::PullBlob {
            repository: &repo,
            digest: &digest,
        };
        let none = Access::default();
        assert!(!decide(&registry("r1", false), &origin(), &none, &e).is_allowed());
        assert!(decide(&registry("r1", true), &origin(), &none, &e).is_allowed());
        let pull = Access {
            any_repository: Default::default(),
            grants: vec![grant("a", &[Action::Pull])],
        };
        assert!(decide(&registry("r1", false), &origin(), &pull, &e).is_allowed());
        let push_only = Access {
            any_repository: Default::default(),
            grants: vec![grant("a", &[Action::Push])],
        };
        assert!(!decide(&registry("r1", false), &origin(), &push_only, &e).is_allowed());
    }

    #[test]
    fn metadata_reads_need_metadata_read_not_pull() {
        let repo: RepositoryName = "a".parse().unwrap();
        let e = Egress::ReadMetadata { repository: &repo };
        let with = |actions: &[Action]| Access {
            any_repository: Default::default(),
            grants: vec![grant("a", actions)],
        };
        let r = registry("r1", false);
        assert_eq!(
            decide(&r, &origin(), &with(&[Action::Pull]), &e),
            Decision::Deny(DenyReason::MissingPermission {
                repository: repo.clone(),
                action: Action::MetadataRead
            })
        );
        assert!(decide(&r, &origin(), &with(&[Action::MetadataRead]), &e).is_allowed());
        assert!(decide(&registry("r1", true), &origin(), &Access::default(), &e).is_allowed());
        let mut closed = registry("r1", true);
        closed.settings.public_network_access = false;
        assert!(matches!(
            decide(&closed, &origin(), &with(&[Action::MetadataRead]), &e),
            Decision::Deny(DenyReason::Network(_))
        ));
    }

    #[test]
    fn data_endpoint_downloads_need_the_endpoint_enabled_and_the_network() {
        let repo: RepositoryName = "a".parse().unwrap();
        let digest = Digest::sha256_of(b"x");
        let e = Egress::DataEndpointDownload {
            repository: &repo,
            digest: &digest,
        };
        let mut r = registry("r1", false);
        assert_eq!(
            decide(&r, &origin(), &Access::default(), &e),
            Decision::Deny(DenyReason::DataEndpointDisabled)
        );
        r.settings.data_endpoint_enabled = true;
        assert!(decide(&r, &origin(), &Access::default(), &e).is_allowed());
        r.settings.public_network_access = false;
        assert!(matches!(
            decide(&r, &origin(), &Access::default(), &e),
            Decision::Deny(DenyReason::Network(_))
        ));
    }

    #[test]
    fn import_leaves_only_a_registry_that_allows_exports() {
        let repo: RepositoryName = "a".parse().unwrap();
        let reference: Reference = "v1".parse().unwrap();
        let target = registry("t", false);
        let mut source = registry("s", false);
        source.name = "source".into();
        let e = Egress::ImportFrom {
            target_registry: &target,
            repository: &repo,
            reference: &reference,
        };
        let trusted = Origin::trusted_service("127.0.0.1".parse().unwrap());
        assert!(decide(&source, &trusted, &Access::default(), &e).is_allowed());
        source.settings.public_network_access = false;
        source.settings.policies.export = crate::registry::PolicyStatus::Disabled;
        assert_eq!(
            decide(&source, &trusted, &Access::default(), &e),
            Decision::Deny(DenyReason::ExportsDisabled {
                registry: "source".into()
            })
        );
        // A registry re-tagging into itself exports nothing.
        let same = Egress::ImportFrom {
            target_registry: &source,
            repository: &repo,
            reference: &reference,
        };
        assert!(decide(&source, &trusted, &Access::default(), &same).is_allowed());
        // A network-restricted source lets the server through only when it trusts its services.
        source.settings.policies.export = crate::registry::PolicyStatus::Enabled;
        source.settings.bypass_trusted_services = false;
        assert!(matches!(
            decide(&source, &trusted, &Access::default(), &e),
            Decision::Deny(DenyReason::Network(_))
        ));
        let pipeline = Egress::ExportPipeline { pipeline: "p" };
        assert!(decide(&target, &origin(), &Access::default(), &pipeline).is_allowed());
        // Creating a pipeline is a management change: refused by the export policy, not by the network rules.
        assert_eq!(
            decide(&source, &origin(), &Access::default(), &pipeline),
            Decision::Allow
        );
        source.settings.policies.export = crate::registry::PolicyStatus::Disabled;
        assert_eq!(
            decide(&source, &origin(), &Access::default(), &pipeline),
            Decision::Deny(DenyReason::ExportsDisabled {
                registry: "source".into()
            })
        );
    }

    #[test]
    fn a_pipeline_run_leaves_only_a_registry_that_allows_exports() {
        let artifacts = vec!["app:v1".to_string(), "lib@sha256:00".to_string()];
        let run = Egress::PipelineRun {
            pipeline: "exporter1",
            run: "run00001",
            artifacts: &artifacts,
        };
        let trusted = Origin::trusted_service("127.0.0.1".parse().unwrap());
        let mut r = registry("r1", false);
        r.name = "protected".into();
        assert_eq!(
            decide(&r, &trusted, &Access::default(), &run),
            Decision::Allow
        );
        assert_eq!(run.repository(), None);
        // Exports disabled: refused, whatever the caller may do, with the reason an audit row and a failed run show.
        r.settings.public_network_access = false;
        r.settings.policies.export = crate::registry::PolicyStatus::Disabled;
        let denied = decide(&r, &trusted, &Access::everything(), &run);
        assert_eq!(
            denied,
            Decision::Deny(DenyReason::ExportsDisabled {
                registry: "protected".into()
            })
        );
        let Decision::Deny(why) = denied else {
            unreachable!()
        };
        assert!(why.to_string().contains("transferred"), "{why}");
        // Exports enabled but the network closed to trusted services: the run is the server acting on its own.
        r.settings.policies.export = crate::registry::PolicyStatus::Enabled;
        r.settings.bypass_trusted_services = false;
        assert!(matches!(
            decide(&r, &trusted, &Access::everything(), &run),
            Decision::Deny(DenyReason::Network(_))
        ));
        assert_eq!(
            run.describe(),
            "run 'run00001' of export pipeline 'exporter1' (2 artifacts: app:v1, lib@sha256:00)"
        );
    }

    #[test]
    fn mount_stays_inside_one_registry() {
        let (from, to): (RepositoryName, RepositoryName) =
            ("src".parse().unwrap(), "dst".parse().unwrap());
        let access = Access {
            any_repository: Default::default(),
            grants: vec![grant("src", &[Action::Pull]), grant("dst", &[Action::Push])],
        };
        let here = registry("r1", false);
        let other = registry("r2", false);
        let same = Egress::Mount {
            source_registry: &here,
            from: &from,
            to: &to,
        };
        assert_eq!(decide(&here, &origin(), &access, &same), Decision::Allow);
        let cross = Egress::Mount {
            source_registry: &other,
            from: &from,
            to: &to,
        };
        assert_eq!(
            decide(&here, &origin(), &access, &cross),
            Decision::Deny(DenyReason::CrossRegistry)
        );
        let no_pull = Access {
            any_repository: Default::default(),
            grants: vec![grant("dst", &[Action::Push])],
        };
        assert!(!decide(&here, &origin(), &no_pull, &same).is_allowed());
    }

    #[test]
    fn network_denial_comes_first() {
        let repo: RepositoryName = "a".parse().unwrap();
        let digest = Digest::sha256_of(b"x");
        let mut reg = registry("r1", true);
        reg.settings.public_network_access = false;
        let e = Egress::PullBlob {
            repository: &repo,
            digest: &digest,
        };
        assert_eq!(
            decide(&reg, &origin(), &Access::everything(), &e),
            Decision::Deny(DenyReason::Network(NetworkDenial::PublicAccessDisabled))
        );
    }

    proptest! {
        /// Whatever the access, a mount from another registry is never allowed, and a pull is allowed exactly
        /// when the caller holds pull on that repository or the registry allows anonymous pull.
        #[test]
        fn gate_properties(pull in any::<bool>(), push in any::<bool>(), anonymous in any::<bool>(), same in any::<bool>()) {
            let mut actions = vec![];
            if pull { actions.push(Action::Pull) }
            if push { actions.push(Action::Push) }
            let access = Access { any_repository: Default::default(), grants: vec![grant("src", &actions), grant("dst", &actions)] };
            let here = registry("r1", anonymous);
            let source = if same { here.clone() } else { registry("r2", anonymous) };
            let (from, to): (RepositoryName, RepositoryName) = ("src".parse().unwrap(), "dst".parse().unwrap());
            let mount = decide(&here, &origin(), &access, &Egress::Mount { source_registry: &source, from: &from, to: &to });
            prop_assert_eq!(mount.is_allowed(), same && (pull || anonymous) && push);
            let d = Digest::sha256_of(b"");
            let pull_decision = decide(&here, &origin(), &access, &Egress::PullBlob { repository: &from, digest: &d });
            prop_assert_eq!(pull_decision.is_allowed(), pull || anonymous);
        }
    }
}
