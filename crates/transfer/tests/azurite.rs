//! The Azure Blob client against a real Azurite (installed by scripts/test into .tools/azurite): staged writes
//! invisible until commit, resume after an interrupted writer, Content-MD5 and metadata, SAS and Shared Key,
//! listing across pages, and the errors a pipeline run reports. Fails (does not skip) without Azurite.

use base64::Engine;
use hmac::{Hmac, Mac};
use moat_model::storage_uri::StorageUri;
use moat_model::OutboundRules;
use moat_outbound::Outbound;
use moat_transfer::storage::azure_blob::AzureStore;
use moat_transfer::storage::md5::Md5;
use moat_transfer::storage::{open_with, ArchiveStore, Credential, StorageError, StorageOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn azurite() -> Azurite {
    let bin = std::env::var("MOAT_AZURITE").unwrap_or_else(|_| {
        format!(
            "{}/../../.tools/azurite/node_modules/.bin/azurite-blob",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    assert!(
        std::path::Path::new(&bin).exists(),
        "Azurite is not installed at {bin}: run scripts/test once (it installs azurite@3.35.0 into .tools/azurite)"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(&bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.path())
        .args([
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Azurite did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Azurite {
        child,
        port,
        _dir: dir,
    }
}

fn outbound(rules: OutboundRules) -> Outbound {
    Outbound::new(rules, Arc::new(Vec::new))
}

fn uri(port: u16, container: &str) -> StorageUri {
    format!("http://127.0.0.1:{port}/{ACCOUNT}/{container}")
        .parse()
        .unwrap()
}

fn key() -> Credential {
    Credential::SharedKey {
        account: ACCOUNT.into(),
        key: KEY.into(),
    }
}

fn options(block: usize) -> StorageOptions {
    StorageOptions {
        block_size: block,
        parallel: 3,
        list_page: 2,
        ..Default::default()
    }
}

fn container(az: &Azurite, name: &str) -> AzureStore {
    let store = AzureStore::new(
        &uri(az.port, name),
        key(),
        &outbound(OutboundRules::default()),
        &options(1 << 20),
    )
    .unwrap();
    assert!(store.create_container().unwrap());
    assert!(!store.create_container().unwrap());
    store
}

/// An account SAS (version 2021-08-06) for the blob service, as `az storage account generate-sas` makes one.
fn account_sas(permissions: &str, key: &str) -> String {
    let expiry = "2099-01-01T00:00:00Z";
    let to_sign =
        format!("{ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\nhttps,http\n2021-08-06\n\n");
    let k = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&k).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig: String = sig
        .bytes()
        .map(|b| match b {
            b'+' => "%2B".to_string(),
            b'/' => "%2F".to_string(),
            b'=' => "%3D".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    format!("?sv=2021-08-06&ss=b&srt=sco&sp={permissions}&se={expiry}&spr=https,http&sig={sig}")
}

fn data(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn md5_b64(d: &[u8]) -> String {
    let mut m = Md5::new();
    m.update(d);
    m.finish_base64()
}

#[test]
fn azure_blob_store_against_azurite() {
    let az = azurite();
    let store = container(&az, "transfer");
    let all = data(5 * (1 << 20) + 12_345, 7);

    // Staged blocks are invisible; a writer dropped without commit (the process died) leaves nothing listed.
    let mut w = store.begin_write("run1.tar", None).unwrap();
    w.write_all(&all[..3 << 20]).unwrap();
    let state = w.checkpoint().unwrap();
    assert_eq!(w.durable_len(), 3 << 20);
    w.write_all(&all[3 << 20..(3 << 20) + 700_000]).unwrap();
    drop(w);
    assert!(store.list().unwrap().is_empty());
    assert!(store.stat("run1.tar").unwrap().is_none());

    // Resumed from the checkpoint: continues after the staged blocks, and the MD5 covers the whole archive.
    let mut w = store.begin_write("run1.tar", Some(state.clone())).unwrap();
    assert_eq!(w.durable_len(), 3 << 20);
    w.write_all(&all[3 << 20..]).unwrap();
    w.commit().unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    let e = &list[0];
    assert_eq!((e.name.as_str(), e.size), ("run1.tar", all.len() as u64));
    assert_eq!(e.content_md5.as_deref(), Some(md5_b64(&all).as_str()));
    assert_eq!(
        e.metadata.get("category").map(String::as_str),
        Some("acr-transfer-blob")
    );
    assert!(e.last_modified.elapsed().unwrap() < Duration::from_secs(300));
    assert_eq!(store.stat("run1.tar").unwrap().as_ref(), Some(e));
    let mut back = Vec::new();
    store
        .open_read("run1.tar")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == all, "read back differs");

    // A state whose blocks are gone (committed since) starts over.
    let w = store.begin_write("run1.tar", Some(state)).unwrap();
    assert_eq!(w.durable_len(), 0);
    w.abort();

    // A partial block at commit, an empty archive, listing across pages.
    for (i, n) in [0usize, 10, 1 << 20, (1 << 20) + 1].into_iter().enumerate() {
        let d = data(n, i as u32);
        let mut w = store.begin_write(&format!("small{i}.tar"), None).unwrap();
        w.write_all(&d).unwrap();
        w.commit().unwrap();
        let e = store.stat(&format!("small{i}.tar")).unwrap().unwrap();
        assert_eq!(e.size, n as u64);
        assert_eq!(e.content_md5.unwrap(), md5_b64(&d));
    }
    let names: Vec<String> = store.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "run1.tar",
            "small0.tar",
            "small1.tar",
            "small2.tar",
            "small3.tar"
        ]
    );

    // SAS: the same container read, listed and deleted with an account SAS instead of the key.
    let sas = open_with(
        &uri(az.port, "transfer"),
        Credential::Sas(account_sas("rwdlac", KEY)),
        &outbound(OutboundRules::default()),
        &options(1 << 20),
    )
    .unwrap();
    assert_eq!(sas.list().unwrap().len(), 5);
    let mut back = Vec::new();
    sas.open_read("run1.tar")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == all);
    sas.delete("small0.tar").unwrap();
    sas.delete("small0.tar").unwrap();
    assert_eq!(sas.list().unwrap().len(), 4);
    assert_eq!(
        sas.uri_of("a b.tar"),
        format!("http://127.0.0.1:{}/{ACCOUNT}/transfer/a%20b.tar", az.port)
    );
}

#[test]
fn errors_say_what_to_do() {
    let az = azurite();
    let _ = container(&az, "exists");
    let open = |container: &str, cred: Credential, rules: OutboundRules| {
        open_with(
            &uri(az.port, container),
            cred,
            &outbound(rules),
            &options(1 << 20),
        )
        .unwrap()
    };

    let wrong_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let e = open(
        "exists",
        Credential::Sas(account_sas("rl", &wrong_key)),
        OutboundRules::default(),
    )
    .list()
    .unwrap_err();
    assert!(
        matches!(e, StorageError::CredentialRefused { status: 403, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("SAS token's permissions"), "{e}");

    let e = open("missing", key(), OutboundRules::default())
        .begin_write("a.tar", None)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            StorageError::NotFound {
                container: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("create it"), "{e}");

    let e = open("exists", key(), OutboundRules::default())
        .open_read("absent.tar")
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            StorageError::NotFound {
                container: false,
                ..
            }
        ),
        "{e:?}"
    );

    let deny = OutboundRules {
        allow: vec![],
        deny: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    };
    let e = open("exists", key(), deny).list().unwrap_err();
    assert!(matches!(e, StorageError::Refused(_)), "{e:?}");

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = open_with(
        &uri(closed, "exists"),
        key(),
        &outbound(OutboundRules::default()),
        &options(1 << 20),
    )
    .unwrap()
    .list()
    .unwrap_err();
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");

    // A SAS token never shows in an error: ureq's own message starts with the whole URL.
    let e = open_with(
        &uri(closed, "exists"),
        Credential::Sas(account_sas("rl", KEY)),
        &outbound(OutboundRules::default()),
        &options(1 << 20),
    )
    .unwrap()
    .list()
    .unwrap_err();
    let sas = account_sas("rl", KEY);
    let sig = sas.split("sig=").nth(1).unwrap();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(sig) && !shown.contains("sig=%"), "{shown}");
}

/// The storage going away mid-export: the staged blocks fail (after their retries) and the commit reports the
/// storage unreachable instead of publishing anything.
#[test]
fn storage_lost_midway_fails_the_write() {
    let mut az = azurite();
    let store = container(&az, "lost");
    let mut w = store.begin_write("run.tar", None).unwrap();
    w.write_all(&data(1 << 20, 3)).unwrap();
    w.checkpoint().unwrap();
    let _ = az.child.kill();
    let _ = az.child.wait();
    let written = w.write_all(&data(3 << 20, 4));
    let e = match written {
        Err(io) => StorageError::from_io(io, "x"),
        Ok(()) => w.commit().unwrap_err(),
    };
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("/lost/run.tar"), "{e}");
}
