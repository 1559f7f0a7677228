//! The object-store blob adapter against a real Azurite (installed by scripts/test into .tools/azurite): an
//! upload in chunks continued by a second store instance (another node) from the state its row keeps, without
//! rereading the earlier chunks; ranged reads; a partial upload invisible and removable; trash and restore;
//! the own-listener refusal; a store that is down. Fails (does not skip) without Azurite.

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use moat_model::Digest;
use moat_store::blobs::object::{AddressCheck, StorageUrl};
use moat_store::{BlobStore, ObjectBlobStore, StorageUnavailable, UploadState};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        "Azurite is not installed at {bin}: run scripts/test once"
    );
    let port = free_port();
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

/// Creates a container with a hand-signed Shared Key request (object_store has no call for it).
fn create_container(port: u16, name: &str) {
    let date = httpdate();
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:2021-08-06\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
    );
    let k = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&k).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\nx-ms-version: 2021-08-06\r\nAuthorization: SharedKey {ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
}

fn httpdate() -> String {
    // RFC 1123 from the system clock, without a date crate's formatting tables.
    let out = Command::new("date")
        .args(["-u", "+%a, %d %b %Y %H:%M:%S GMT"])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The environment object_store reads; set once per process (the tests share one Azurite).
fn env_for(port: u16) {
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
    std::env::set_var(
        "AZURITE_BLOB_STORAGE_URL",
        format!("http://127.0.0.1:{port}"),
    );
}

/// A check like the outbound connector's: refuses `own`, records what it was asked.
fn check(own: Vec<SocketAddr>, asked: Arc<Mutex<Vec<String>>>) -> AddressCheck {
    Arc::new(move |netloc: &str| {
        asked.lock().unwrap().push(netloc.to_string());
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        if addrs.iter().any(|a| own.contains(a)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{netloc} is where this server listens"),
            ));
        }
        Ok(addrs)
    })
}

fn open(container: &str) -> ObjectBlobStore {
    let url: StorageUrl = format!("az://{container}").parse().unwrap();
    ObjectBlobStore::open(&url, check(vec![], Default::default())).unwrap()
}

fn read_all(store: &dyn BlobStore, d: &Digest, start: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open_blob(d, start, len)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn object_store_adapter_on_azurite() {
    let az = azurite();
    env_for(az.port);
    create_container(az.port, "blobs");

    // Two instances: two nodes sharing one container.
    let a = open("blobs");
    let b = open("blobs");
    let data: Vec<u8> = (0..(20 << 20) + 12345u32)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    let want = Digest::sha256_of(&data);

    // Chunk 1 on node A (several blocks), acknowledged: its state is what the row keeps.
    let id = "0000aaaa-0001";
    a.create_upload(id, true).unwrap();
    let mut w = a.open_upload(id, 0, None).unwrap();
    for c in data[..(9 << 20) + 7].chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(c)).unwrap();
    }
    let row = w.finish_chunk().unwrap().resume_state().encode();
    let acked = (9u64 << 20) + 7;
    // Staged, not committed: the object the session made stays empty, and listed for the collector.
    assert_eq!(a.upload_info(id).unwrap().0, 0);
    assert!(a.list_uploads().unwrap().contains(&id.to_string()));

    // A chunk that dies before its acknowledgement: its blocks are staged but never listed.
    let st = UploadState::decode(&row).unwrap();
    let mut dead = b.open_upload(id, acked, Some(st.clone())).unwrap();
    dead.write(Bytes::from(vec![0xEE; 9 << 20])).unwrap();
    drop(dead);

    // Chunk 2 on node B from the row's state alone (no rereading), then the last chunk on A.
    let mut w = b.open_upload(id, acked, Some(st)).unwrap();
    w.write(Bytes::copy_from_slice(&data[acked as usize..15 << 20]))
        .unwrap();
    let row = w.finish_chunk().unwrap().resume_state().encode();
    let st = UploadState::decode(&row).unwrap();
    let mut w = a.open_upload(id, 15 << 20, Some(st)).unwrap();
    w.write(Bytes::copy_from_slice(&data[15 << 20..])).unwrap();
    let hashed = w.finish().unwrap();
    assert_eq!(hashed.digest(), &want);
    assert_eq!(hashed.size(), data.len() as u64);

    // Not a blob until committed; then readable from either node, by ranges.
    assert!(!b.blob_exists(&want));
    a.commit_upload(id, &want).unwrap();
    assert!(b.blob_exists(&want));
    assert!(!a.list_uploads().unwrap().contains(&id.to_string()));
    assert_eq!(read_all(&b, &want, 0, data.len() as u64), data);
    assert_eq!(read_all(&b, &want, 1000, 5), data[1000..1005].to_vec());
    let listed = a.list_blobs().unwrap();
    assert!(
        listed.contains(&(want.clone(), data.len() as u64)),
        "{listed:?}"
    );

    // The same bytes again: the stored copy wins, the second upload's object goes.
    let id2 = "0000aaaa-0002";
    a.create_upload(id2, false).unwrap();
    let mut w = a.open_upload(id2, 0, None).unwrap();
    w.write(Bytes::copy_from_slice(&data)).unwrap();
    w.finish().unwrap();
    a.commit_upload(id2, &want).unwrap();
    assert!(a.upload_info(id2).is_err());

    // Node B collects the blob and a push puts the same bytes back under another upload's object: node A,
    // which remembers where it read them, finds them again.
    assert_eq!(read_all(&a, &want, 0, 4), data[..4].to_vec());
    assert!(b.trash_blob(&want).unwrap());
    b.empty_trash(&want).unwrap();
    let id4 = "0000aaaa-0004";
    b.create_upload(id4, false).unwrap();
    let mut w = b.open_upload(id4, 0, None).unwrap();
    w.write(Bytes::copy_from_slice(&data)).unwrap();
    w.finish().unwrap();
    b.commit_upload(id4, &want).unwrap();
    assert_eq!(read_all(&a, &want, 5, 4), data[5..9].to_vec());

    // Trash, list, restore; then trash and empty for good.
    assert!(a.trash_blob(&want).unwrap());
    assert!(!b.blob_exists(&want));
    assert_eq!(a.list_trash().unwrap(), vec![want.clone()]);
    a.restore_blob(&want).unwrap();
    assert_eq!(read_all(&a, &want, 0, 3), data[..3].to_vec());
    assert!(a.trash_blob(&want).unwrap());
    a.empty_trash(&want).unwrap();
    assert!(a.list_trash().unwrap().is_empty());
    assert!(a.list_blobs().unwrap().is_empty());
    assert!(
        a.list_uploads().unwrap().is_empty(),
        "no object is left behind"
    );

    // An abandoned upload: listed, removed with its staged blocks.
    let id3 = "0000aaaa-0003";
    a.create_upload(id3, true).unwrap();
    let mut w = a.open_upload(id3, 0, None).unwrap();
    w.write(Bytes::from_static(b"partial")).unwrap();
    drop(w);
    assert_eq!(a.list_uploads().unwrap(), vec![id3.to_string()]);
    a.remove_upload(id3).unwrap();
    assert!(a.list_uploads().unwrap().is_empty());

    // A store whose endpoint is one of this server's listeners is refused.
    let asked = Arc::new(Mutex::new(Vec::new()));
    let own: SocketAddr = format!("127.0.0.1:{}", az.port).parse().unwrap();
    let url: StorageUrl = "az://blobs".parse().unwrap();
    let err = ObjectBlobStore::open(&url, check(vec![own], asked.clone()))
        .err()
        .expect("refused");
    assert!(!asked.lock().unwrap().is_empty(), "the check was asked");
    assert!(is_unavailable(&err), "{err}");

    // A store that is down: the error says which store, as the server's 503 and `serve`'s exit do.
    drop(az);
    let t0 = Instant::now();
    let err = a.upload_info(id3).unwrap_err();
    assert!(is_unavailable(&err), "{err}");
    assert!(err.to_string().contains("az://blobs"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}

fn is_unavailable(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|i| i.downcast_ref::<StorageUnavailable>().is_some())
}

#[test]
fn storage_urls() {
    assert_eq!(
        "az://moat-blobs".parse::<StorageUrl>(),
        Ok(StorageUrl::Azure {
            container: "moat-blobs".into()
        })
    );
    assert!(matches!(
        "file:///var/lib/moat".parse::<StorageUrl>(),
        Ok(StorageUrl::File(_))
    ));
    for bad in [
        "az://A",
        "az://x",
        "az://a--b",
        "s3://b",
        "file://",
        "az://-ab",
    ] {
        assert!(bad.parse::<StorageUrl>().is_err(), "{bad}");
    }
}
