//! Proof of possession (DESIGN principle 6) on the store API: random sequences of uploads, mounts, imports with
//! and without the gate's permit, and deletes over several registries, checked against a model after every step.
//! The model says exactly which links must exist; on top of that, no registry may ever hold a link to a digest it
//! has no proof for (bytes received into it, or a permit from a registry that held them).
//!
//! What the test cannot even try is the point of the types: the store's link-writing functions take a
//! `ReceivedBlob` (built only from bytes hashed by this process), a `Permit` (built only by `moat_model::permit`
//! on the gate's `Allow`, and naming the registries it was decided for), or check the target registry's own links
//! in their transaction. There is no function that links a bare digest, so "link d into registry B because the
//! store holds d for registry A" is not expressible; the `compile_fail` doctests on `ReceivedBlob`, `Hashed` and
//! `moat_model::Permit` keep it that way.

use moat_model::audit::AuditEvent;
use moat_model::registry::PolicyStatus;
use moat_model::{
    permit, Access, Digest, Egress, Origin, Reference, Registry, RegistrySettings, RepositoryName,
    Sku,
};
use moat_store::meta::{FinishedBlob, ImportWrite, ImportWriteError};
use moat_store::ReceivedBlob;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const REGISTRIES: usize = 3;
const REPOS: [&str; 2] = ["a", "b"];
const DIGESTS: usize = 3;

fn content(i: usize) -> bytes::Bytes {
    bytes::Bytes::from(format!("layer number {i}"))
}

fn digest(i: usize) -> Digest {
    Digest::sha256_of(&content(i))
}

fn repo(i: usize) -> RepositoryName {
    REPOS[i].parse().unwrap()
}

fn event(op: &str) -> AuditEvent {
    AuditEvent {
        time_generated: moat_store::time_fmt::now(),
        category: "ContainerRegistryRepositoryEvents".into(),
        operation_name: op.into(),
        registry: "r".into(),
        login_server: "x".into(),
        result_type: "Success".into(),
        result_description: "201".into(),
        ..Default::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Upload {
        reg: usize,
        repo: usize,
        d: usize,
    },
    Mount {
        reg: usize,
        from: usize,
        to: usize,
        d: usize,
    },
    /// A mount whose source is another registry: the gate gives no permit.
    CrossMount {
        from_reg: usize,
        to_reg: usize,
    },
    ImportLocal {
        src: usize,
        dst: usize,
        from: usize,
        to: usize,
        d: usize,
    },
    /// A remote import naming `d`: downloaded (bytes received) or not (then it must be linked in the target).
    ImportRemote {
        dst: usize,
        to: usize,
        d: usize,
        downloaded: bool,
    },
    Delete {
        reg: usize,
        repo: usize,
        d: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..REGISTRIES;
    let p = 0..REPOS.len();
    let d = 0..DIGESTS;
    prop_oneof![
        (r.clone(), p.clone(), d.clone()).prop_map(|(reg, repo, d)| Op::Upload { reg, repo, d }),
        (r.clone(), p.clone(), p.clone(), d.clone()).prop_map(|(reg, from, to, d)| Op::Mount {
            reg,
            from,
            to,
            d
        }),
        (r.clone(), r.clone()).prop_map(|(from_reg, to_reg)| Op::CrossMount { from_reg, to_reg }),
        (r.clone(), r.clone(), p.clone(), p.clone(), d.clone()).prop_map(
            |(src, dst, from, to, d)| Op::ImportLocal {
                src,
                dst,
                from,
                to,
                d
            }
        ),
        (r.clone(), p.clone(), d.clone(), any::<bool>()).prop_map(|(dst, to, d, downloaded)| {
            Op::ImportRemote {
                dst,
                to,
                d,
                downloaded,
            }
        }),
        (r, p, d).prop_map(|(reg, repo, d)| Op::Delete { reg, repo, d }),
    ]
}

/// What the store must hold: exactly these links, and only digests each registry has a proof for.
#[derive(Default)]
struct Model {
    links: BTreeSet<(usize, usize, usize)>,
    proven: BTreeMap<usize, BTreeSet<usize>>,
}

impl Model {
    fn holds(&self, reg: usize, repo: usize, d: usize) -> bool {
        self.links.contains(&(reg, repo, d))
    }
    fn in_registry(&self, reg: usize, d: usize) -> bool {
        (0..REPOS.len()).any(|p| self.holds(reg, p, d))
    }
    fn link(&mut self, reg: usize, repo: usize, d: usize) {
        self.links.insert((reg, repo, d));
        self.proven.entry(reg).or_default().insert(d);
    }
}

fn trusted() -> Origin {
    Origin::trusted_service("127.0.0.1".parse().unwrap())
}

fn write<'a>(
    target: &'a Registry,
    targets: &'a [(RepositoryName, Option<moat_model::Tag>)],
    blobs: &'a [(Digest, u64)],
) -> ImportWrite<'a> {
    ImportWrite {
        target_registry_id: &target.id,
        targets,
        manifests: &[],
        blobs,
        force: true,
        events: &[],
    }
}

async fn run(ops: Vec<Op>) {
    let db = moat_store::testing::test_db().await;
    let meta = db.open().await;
    let mut regs = Vec::new();
    for i in 0..REGISTRIES {
        let mut settings =
            RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap());
        // Registry 0 is protected: nothing leaves it by import.
        if i == 0 {
            settings.policies.export = PolicyStatus::Disabled;
        }
        let name = format!("reg{i}");
        regs.push(
            meta.create_registry(
                &name,
                &format!("{name}.test"),
                "rg",
                &settings,
                i == 0,
                None,
            )
            .await
            .unwrap(),
        );
    }
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Upload { reg, repo: p, d } => {
                let blob = ReceivedBlob::from_bytes(content(d), &digest(d)).unwrap();
                let finished = FinishedBlob {
                    registry_id: &regs[reg].id,
                    repo: &repo(p),
                    blob,
                    upload_id: "",
                };
                meta.commit_blob(finished, &event("Push")).await.unwrap();
                model.link(reg, p, d);
            }
            Op::Mount { reg, from, to, d } => {
                let (f, t) = (repo(from), repo(to));
                let egress = Egress::Mount {
                    source_registry: &regs[reg],
                    from: &f,
                    to: &t,
                };
                let permit =
                    permit(&regs[reg], &trusted(), &Access::everything(), &egress).unwrap();
                let got = meta
                    .mount_blob(&permit, &t, &digest(d), &event("Mount"))
                    .await
                    .unwrap();
                assert_eq!(got.is_some(), model.holds(reg, from, d), "mount result");
                if got.is_some() {
                    model.link(reg, to, d);
                }
            }
            Op::CrossMount { from_reg, to_reg } => {
                let (f, t) = (repo(0), repo(1));
                // The request is routed to `to_reg`; the source named is `from_reg`.
                let egress = Egress::Mount {
                    source_registry: &regs[from_reg],
                    from: &f,
                    to: &t,
                };
                let p = permit(&regs[to_reg], &trusted(), &Access::everything(), &egress);
                assert_eq!(
                    p.is_ok(),
                    from_reg == to_reg,
                    "a mount permit across registries"
                );
            }
            Op::ImportLocal {
                src,
                dst,
                from,
                to,
                d,
            } => {
                let (f, t) = (repo(from), repo(to));
                let reference = Reference::Tag("v1".parse().unwrap());
                let targets = [(t.clone(), None)];
                let blobs = [(digest(d), 1 << 40)];
                let target = regs[dst].clone();
                let result = meta
                    .import_local(&write(&target, &targets, &blobs), &regs[src].id, |source| {
                        let egress = Egress::ImportFrom {
                            target_registry: &target,
                            repository: &f,
                            reference: &reference,
                        };
                        permit(source, &trusted(), &Access::everything(), &egress)
                            .map_err(|why| why.to_string())
                    })
                    .await;
                let allowed = src == dst || src != 0;
                match result {
                    Ok(()) => {
                        assert!(
                            allowed && model.holds(src, from, d),
                            "import without a permit or bytes"
                        );
                        model.link(dst, to, d);
                    }
                    Err(ImportWriteError::Refused(_)) => assert!(!allowed),
                    Err(ImportWriteError::SourceChanged(_)) => {
                        assert!(allowed && !model.holds(src, from, d))
                    }
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
            Op::ImportRemote {
                dst,
                to,
                d,
                downloaded,
            } => {
                let targets = [(repo(to), None)];
                // The size a made-up manifest claims: never what is written.
                let blobs = [(digest(d), 1 << 40)];
                let received: Vec<ReceivedBlob> = if downloaded {
                    vec![ReceivedBlob::from_bytes(content(d), &digest(d)).unwrap()]
                } else {
                    vec![]
                };
                let result = meta
                    .import_remote::<String>(&write(&regs[dst], &targets, &blobs), &received)
                    .await;
                match result {
                    Ok(()) => {
                        assert!(
                            downloaded || model.in_registry(dst, d),
                            "remote import linked bytes it never had"
                        );
                        model.link(dst, to, d);
                    }
                    Err(ImportWriteError::Unproven(_)) => {
                        assert!(!downloaded && !model.in_registry(dst, d))
                    }
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
            Op::Delete { reg, repo: p, d } => {
                let deleted = meta
                    .unlink_blob(&regs[reg].id, &repo(p), &digest(d), &event("Delete"))
                    .await
                    .unwrap();
                assert_eq!(deleted, model.links.remove(&(reg, p, d)));
            }
        }
        for (reg, r) in regs.iter().enumerate() {
            for p in 0..REPOS.len() {
                for d in 0..DIGESTS {
                    let size = meta
                        .linked_blob_size(&r.id, &repo(p), &digest(d))
                        .await
                        .unwrap();
                    assert_eq!(
                        size.is_some(),
                        model.holds(reg, p, d),
                        "link ({reg}, {p}, {d})"
                    );
                    if let Some(size) = size {
                        assert_eq!(
                            size as usize,
                            content(d).len(),
                            "the size is the bytes', not a claim"
                        );
                        assert!(
                            model.proven.get(&reg).is_some_and(|s| s.contains(&d)),
                            "registry {reg} links {d} without a proof"
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn no_link_without_a_proof(ops in proptest::collection::vec(op(), 1..24)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}

/// The attack of issue 9 on the store alone: the protected registry holds a layer; the attacker's registry
/// imports a made-up image naming it without the bytes. Nothing is linked, whether the digest is stored, or was
/// deleted from its repository.
#[tokio::test]
async fn a_digest_held_elsewhere_proves_nothing() {
    let db = moat_store::testing::test_db().await;
    let meta = db.open().await;
    let mut protected =
        RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap());
    protected.policies.export = PolicyStatus::Disabled;
    let victim = meta
        .create_registry("victim", "victim.test", "rg", &protected, true, None)
        .await
        .unwrap();
    let open = RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap());
    let attacker = meta
        .create_registry("attacker", "attacker.test", "rg", &open, false, None)
        .await
        .unwrap();
    let (secret, layer) = (content(7), digest(7));
    let blob = ReceivedBlob::from_bytes(secret, &layer).unwrap();
    let finished = FinishedBlob {
        registry_id: &victim.id,
        repo: &repo(0),
        blob,
        upload_id: "",
    };
    meta.commit_blob(finished, &event("Push")).await.unwrap();
    // The small blob's bytes live in the database; they are read only through a link.
    let inline = |id: String| {
        let (meta, layer) = (meta.clone(), layer.clone());
        async move { meta.inline_blob(&id, &repo(0), &layer).await.unwrap() }
    };
    assert!(inline(victim.id.clone()).await.is_some());
    assert!(inline(attacker.id.clone()).await.is_none());
    let targets = [(repo(0), None)];
    let blobs = [(layer.clone(), 16)];
    for round in ["held", "deleted"] {
        let r = meta
            .import_remote::<String>(&write(&attacker, &targets, &blobs), &[])
            .await;
        assert!(
            matches!(r, Err(ImportWriteError::Unproven(_))),
            "{round}: {r:?}"
        );
        assert!(
            !meta.linked_in_registry(&attacker.id, &layer).await.unwrap(),
            "{round}"
        );
        meta.unlink_blob(&victim.id, &repo(0), &layer, &event("Delete"))
            .await
            .unwrap();
    }
}
