//! The gate's `Allow` as a value. Linking a blob from one repository into another (a mount, a same-server
//! import) is an egress, and the store writes such a link only when handed a [`Permit`]: the fields are private
//! to this module and [`permit`] is the one function that builds one, after [`decide`] said `Allow`. So no code
//! path can link bytes out of a registry without asking the gate, and the permit says which registry and
//! repository the gate decided for (the store reads the source from the permit, not from a second argument that
//! could disagree with it).

use crate::access::Access;
use crate::egress::{decide, Decision, DenyReason, Egress, Origin};
use crate::names::RepositoryName;
use crate::registry::Registry;

/// An allowed link out of `source_repository` of `source_registry_id` into `target_registry_id`. Only [`permit`]
/// builds one:
/// ```compile_fail
/// let _ = moat_model::Permit {
///     source_registry_id: "protected".into(),
///     source_repository: "app".parse().unwrap(),
///     target_registry_id: "attacker".into(),
/// };
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    source_registry_id: String,
    source_repository: RepositoryName,
    target_registry_id: String,
}

impl Permit {
    /// The registry the gate decided for: the one bytes leave.
    pub fn source_registry_id(&self) -> &str {
        &self.source_registry_id
    }

    /// The repository the linked blobs must be held in.
    pub fn source_repository(&self) -> &RepositoryName {
        &self.source_repository
    }

    /// The registry the gate allowed the bytes into (the source itself for a mount).
    pub fn target_registry_id(&self) -> &str {
        &self.target_registry_id
    }
}

/// Asks the gate about an egress that links blobs (`Mount`, `ImportFrom`) and returns the permit for it. Any
/// other egress serves bytes rather than linking them and gets no permit.
pub fn permit(
    registry: &Registry,
    origin: &Origin,
    access: &Access,
    egress: &Egress,
) -> Result<Permit, DenyReason> {
    let (source_repository, target_registry_id) = match egress {
        Egress::Mount { from, .. } => ((*from).clone(), registry.id.clone()),
        Egress::ImportFrom {
            target_registry,
            repository,
            ..
        } => ((*repository).clone(), target_registry.id.clone()),
        Egress::PullBlob { .. }
        | Egress::ListTags { .. }
        | Egress::ReadMetadata { .. }
        | Egress::ReadDeleted { .. }
        | Egress::PullManifest { .. }
        | Egress::DataEndpointDownload { .. }
        | Egress::ExportPipeline { .. }
        | Egress::PipelineRun { .. } => {
            return Err(DenyReason::NotSupported("linking blobs by this egress"))
        }
    };
    match decide(registry, origin, access, egress) {
        Decision::Allow => Ok(Permit {
            source_registry_id: registry.id.clone(),
            source_repository,
            target_registry_id,
        }),
        Decision::Deny(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Reference;
    use crate::registry::{PolicyStatus, RegistrySettings, Sku};

    fn registry(id: &str, exports: bool) -> Registry {
        let mut settings =
            RegistrySettings::new(Sku::Premium, crate::Location::parse("local").unwrap());
        if !exports {
            settings.policies.export = PolicyStatus::Disabled;
        }
        Registry {
            id: id.into(),
            name: id.into(),
            resource_group: "rg".into(),
            login_server: format!("{id}.example"),
            created_at: String::new(),
            settings,
        }
    }

    fn repo(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    #[test]
    fn an_import_permit_names_source_and_target() {
        let (src, dst) = (registry("src", true), registry("dst", true));
        let (r, reference) = (repo("app"), Reference::Tag("v1".parse().unwrap()));
        let p = permit(
            &src,
            &Origin::trusted_service("127.0.0.1".parse().unwrap()),
            &Access::everything(),
            &Egress::ImportFrom {
                target_registry: &dst,
                repository: &r,
                reference: &reference,
            },
        )
        .unwrap();
        assert_eq!(p.source_registry_id(), "src");
        assert_eq!(p.source_repository(), &r);
        assert_eq!(p.target_registry_id(), "dst");
    }

    #[test]
    fn no_permit_without_allow_or_for_a_pull() {
        let (src, dst) = (registry("src", false), registry("dst", true));
        let (r, reference) = (repo("app"), Reference::Tag("v1".parse().unwrap()));
        let origin = Origin::trusted_service("127.0.0.1".parse().unwrap());
        let import = Egress::ImportFrom {
            target_registry: &dst,
            repository: &r,
            reference: &reference,
        };
        assert!(permit(&src, &origin, &Access::everything(), &import).is_err());
        let d = crate::digest::Digest::sha256_of(b"x");
        let pull = Egress::PullBlob {
            repository: &r,
            digest: &d,
        };
        assert!(permit(&dst, &origin, &Access::everything(), &pull).is_err());
    }
}
