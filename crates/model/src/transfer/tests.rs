//! The transfer rules' unit tests.

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
    assert!(
        PipelineOption::parse_list(PipelineKind::Export, &s(&["DeleteSourceBlobOnSuccess"]))
            .is_err()
    );
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
