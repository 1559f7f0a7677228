//! The content-addressed blob store. A blob's bytes are written once, into an upload object, hashed on the way,
//! and made durable (fsync of file and directory) before the upload is renamed to its digest. The `BlobStore`
//! trait is what Azure Blob and S3 back-ends implement; `LocalBlobStore` is the embedded default.

mod midstate;
pub mod object;
mod received;
mod writer;

pub use midstate::{Midstate, UploadState};
pub use object::{ObjectBlobStore, StorageUnavailable};
pub use received::{Hashed, ReceivedBlob, Unverified};
pub use writer::UploadWriter;

use moat_model::{Algorithm, Digest};
use sha2::{Digest as _, Sha512};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub trait BlobStore: Send + Sync + 'static {
    /// Creates the empty object behind a new upload. `durable` when a session row will point at it (a
    /// resumable upload); a monolithic upload needs no durable name until its commit renames it.
    fn create_upload(&self, id: &str, durable: bool) -> io::Result<()>;
    /// Opens an upload to append after its first `committed` bytes (those acknowledged so far; anything after
    /// them is the remains of a chunk that was never acknowledged, and is cut off). `state` is where the upload
    /// stood after its last acknowledged chunk (kept in its row, so any node has it); without it (a row written
    /// before there was one) a local file's bytes so far are hashed again, once.
    fn open_upload(
        &self,
        id: &str,
        committed: u64,
        state: Option<UploadState>,
    ) -> io::Result<UploadWriter>;
    /// Makes the upload the blob `digest`: durable, then atomically visible under its name.
    fn commit_upload(&self, id: &str, digest: &Digest) -> io::Result<()>;
    fn remove_upload(&self, id: &str) -> io::Result<()>;
    /// Ids of every upload object present, for sweeping those no session owns.
    fn list_uploads(&self) -> io::Result<Vec<String>>;
    /// An upload object's size and last modification (how the collector tells an abandoned one).
    fn upload_info(&self, id: &str) -> io::Result<(u64, std::time::SystemTime)>;
    /// Every stored blob and its size: the collector's sweep for files no row knows.
    fn list_blobs(&self) -> io::Result<Vec<(Digest, u64)>>;
    /// A reader over `[start, start+len)` of a blob.
    fn open_blob(&self, digest: &Digest, start: u64, len: u64) -> io::Result<Box<dyn Read + Send>>;
    fn blob_exists(&self, digest: &Digest) -> bool;
    fn remove_blob(&self, digest: &Digest) -> io::Result<()>;
    /// Moves a blob out of its name into the trash (the collector, inside the transaction that removes its rows);
    /// false when there was no such blob.
    fn trash_blob(&self, digest: &Digest) -> io::Result<bool>;
    /// Digests in the trash: after a crash, those whose rows came back are restored, the others emptied.
    fn list_trash(&self) -> io::Result<Vec<Digest>>;
    /// Puts a trashed blob back under its name.
    fn restore_blob(&self, digest: &Digest) -> io::Result<()>;
    /// Removes a trashed blob for good (its rows are committed gone).
    fn empty_trash(&self, digest: &Digest) -> io::Result<()>;
    /// Digest of an upload's bytes by another algorithm than the sha256 computed while they streamed in.
    fn digest_upload(&self, id: &str, algorithm: Algorithm) -> io::Result<Digest>;
    /// Whether other servers use the same store (an object store): an upload object no session row owns may then
    /// be another node's monolithic upload in flight, not the remains of this node's crash.
    fn shared(&self) -> bool {
        false
    }
}

pub struct LocalBlobStore {
    root: PathBuf,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalBlobStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<LocalBlobStore> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("uploads"))?;
        fs::create_dir_all(root.join("trash"))?;
        sync_dir(&root)?;
        Ok(LocalBlobStore { root })
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        // Ids are server-generated UUIDs; refuse anything else so a crafted id cannot name another path.
        debug_assert!(id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        self.root.join("uploads").join(id)
    }

    fn trash_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("trash")
            .join(format!("{}-{}", digest.algorithm().as_str(), digest.hex()))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }
}

impl BlobStore for LocalBlobStore {
    fn create_upload(&self, id: &str, durable: bool) -> io::Result<()> {
        File::create(self.upload_path(id))?;
        if durable {
            sync_dir(&self.root.join("uploads"))?;
        }
        Ok(())
    }

    fn open_upload(
        &self,
        id: &str,
        committed: u64,
        state: Option<UploadState>,
    ) -> io::Result<UploadWriter> {
        let path = self.upload_path(id);
        let mut file = OpenOptions::new().read(true).append(true).open(&path)?;
        if file.metadata()?.len() != committed {
            file.set_len(committed)?;
        }
        let hasher = match state {
            Some(st) if st.size() == committed => st.hash,
            _ => {
                // Rehash what is on disk: only for a session whose row has no state (written by an older version).
                let mut h = Midstate::new();
                file.seek(SeekFrom::Start(0))?;
                let mut buf = vec![0u8; 1 << 20];
                let mut reader = (&file).take(committed);
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                h
            }
        };
        Ok(UploadWriter::new(
            Box::new(writer::FileSink::new(file, committed)),
            hasher,
        ))
    }

    fn commit_upload(&self, id: &str, digest: &Digest) -> io::Result<()> {
        let from = self.upload_path(id);
        let to = self.blob_path(digest);
        if to.exists() {
            // Same digest, same bytes: the stored copy wins and the upload is dropped.
            return fs::remove_file(from);
        }
        File::open(&from)?.sync_all()?;
        let dir = to.parent().expect("blob path has a parent");
        if !dir.exists() {
            let algorithm_dir = dir.parent().expect("shard has a parent");
            let new_algorithm = !algorithm_dir.exists();
            fs::create_dir_all(dir)?;
            sync_dir(algorithm_dir)?;
            if new_algorithm {
                sync_dir(algorithm_dir.parent().expect("blobs dir"))?;
            }
        }
        fs::rename(&from, &to)?;
        sync_dir(dir)
    }

    fn remove_upload(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.upload_path(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn list_uploads(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("uploads"))? {
            out.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn upload_info(&self, id: &str) -> io::Result<(u64, std::time::SystemTime)> {
        let meta = fs::metadata(self.upload_path(id))?;
        Ok((meta.len(), meta.modified()?))
    }

    fn list_blobs(&self) -> io::Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for algorithm in fs::read_dir(self.root.join("blobs"))? {
            let algorithm = algorithm?;
            let Some(name) = algorithm.file_name().to_str().map(str::to_string) else {
                continue;
            };
            for shard in fs::read_dir(algorithm.path())? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for file in fs::read_dir(shard.path())? {
                    let file = file?;
                    let hex = file.file_name().to_string_lossy().into_owned();
                    // Anything that is not a blob's name (a stray file) is not the collector's to touch.
                    if let Ok(d) = format!("{name}:{hex}").parse::<Digest>() {
                        if self.blob_path(&d) == file.path() {
                            out.push((d, file.metadata()?.len()));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn open_blob(&self, digest: &Digest, start: u64, len: u64) -> io::Result<Box<dyn Read + Send>> {
        let mut f = File::open(self.blob_path(digest))?;
        f.seek(SeekFrom::Start(start))?;
        Ok(Box::new(f.take(len)))
    }

    fn blob_exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    fn digest_upload(&self, id: &str, algorithm: Algorithm) -> io::Result<Digest> {
        let mut file = File::open(self.upload_path(id))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut h = Sha512::new();
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        match algorithm {
            Algorithm::Sha512 => Ok(Digest::from_bytes(Algorithm::Sha512, &h.finalize())),
            Algorithm::Sha256 => Err(io::Error::other("sha256 is computed while streaming")),
        }
    }

    fn trash_blob(&self, digest: &Digest) -> io::Result<bool> {
        match fs::rename(self.blob_path(digest), self.trash_path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list_trash(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("trash"))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(d) = name
                .split_once('-')
                .and_then(|(a, h)| format!("{a}:{h}").parse::<Digest>().ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn restore_blob(&self, digest: &Digest) -> io::Result<()> {
        let to = self.blob_path(digest);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir)?;
        }
        // Same name, same bytes: if an upload put them back meanwhile, either copy will do.
        fs::rename(self.trash_path(digest), to)
    }

    fn empty_trash(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.trash_path(digest)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn remove_blob(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn upload_resumes_with_and_without_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let id = "0123-abcd";
        store.create_upload(id, true).unwrap();
        let mut w = store.open_upload(id, 0, None).unwrap();
        w.write(Bytes::from_static(b"hello ")).unwrap();
        w.sync().unwrap();
        let state = w.finish().unwrap().resume_state();
        let size = state.size();
        // A chunk that was never acknowledged is cut off when the upload is opened at its committed size.
        store
            .open_upload(id, size, None)
            .unwrap()
            .write(Bytes::from_static(b"garbage"))
            .unwrap();
        // Continue once with the kept hasher, once as after a restart: both give the same digest.
        let mut kept = store.open_upload(id, size, Some(state)).unwrap();
        kept.write(Bytes::from_static(b"world")).unwrap();
        let d1 = kept.finish().unwrap().digest().clone();
        let d2 = store
            .open_upload(id, 11, None)
            .unwrap()
            .finish()
            .unwrap()
            .digest()
            .clone();
        assert_eq!(d1, Digest::sha256_of(b"hello world"));
        assert_eq!(d1, d2);
        store.commit_upload(id, &d1).unwrap();
        let mut s = String::new();
        store
            .open_blob(&d1, 6, 5)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "world");
        assert!(store.list_uploads().unwrap().is_empty());
    }

    #[test]
    fn large_uploads_hash_in_parallel_to_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        store.create_upload("abc", false).unwrap();
        let mut w = store.open_upload("abc", 0, None).unwrap();
        let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
        let mut all = Vec::new();
        for _ in 0..40 {
            w.write(Bytes::from(chunk.clone())).unwrap();
            all.extend_from_slice(&chunk);
        }
        let hashed = w.finish().unwrap();
        assert_eq!(hashed.size(), 40 << 20);
        assert_eq!(hashed.digest(), &Digest::sha256_of(&all));
    }
}
