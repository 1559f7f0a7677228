//! `LocalDirectory`: archives as files in a mounted directory (removable media, a data diode's inbox).
//!
//! An archive is written to `<dir>/.<name>.partial`, fdatasync'd at each checkpoint, and at commit fsync'd,
//! renamed to `<name>` and the directory fsync'd: a reader (or the import on the other side) sees a whole archive
//! or none. Files are made 0644 whatever the server's umask: the media is read on another machine, often by
//! another user, and whoever can mount it can read it anyway (the archive is signed, not secret).
//! Content-MD5 and the `category` metadata are Azure's; a directory keeps no sidecar for them (a sidecar is lost
//! the moment someone copies the file by hand). The archive checks itself: its contents list is signed and its
//! sha256 is the run's `catalogDigest`.

use super::{check_archive_name, ArchiveEntry, ArchiveStore, ArchiveWriter, StorageError};
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const BUFFER: usize = 1 << 20;
const MODE: u32 = 0o644;

pub struct LocalDir {
    dir: PathBuf,
}

fn partial_name(name: &str) -> String {
    format!(".{name}.partial")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalDir {
    pub fn new(dir: PathBuf) -> LocalDir {
        LocalDir { dir }
    }

    fn uri(&self) -> String {
        moat_model::storage_uri::StorageUri::LocalDirectory {
            dir: self.dir.clone(),
        }
        .to_string()
    }

    fn io(&self, e: io::Error) -> StorageError {
        if e.kind() == io::ErrorKind::NotFound && !self.dir.is_dir() {
            return self.missing();
        }
        StorageError::Io {
            uri: self.uri(),
            source: e,
        }
    }

    fn missing(&self) -> StorageError {
        StorageError::NotFound {
            uri: self.uri(),
            container: true,
        }
    }

    fn check_dir(&self) -> Result<(), StorageError> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Invalid(format!(
                "{} is not a directory",
                self.uri()
            ))),
            Err(_) => Err(self.missing()),
        }
    }

    fn entry(&self, name: String, meta: &std::fs::Metadata) -> ArchiveEntry {
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        let nanos = modified
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        ArchiveEntry {
            name,
            size: meta.len(),
            last_modified: modified,
            // Changes whenever the file is replaced or rewritten, like a blob's ETag.
            etag: format!("\"{:x}-{nanos:x}\"", meta.len()),
            content_md5: None,
            metadata: Default::default(),
        }
    }
}

impl ArchiveStore for LocalDir {
    fn begin_write(
        &self,
        name: &str,
        resume: Option<Value>,
    ) -> Result<Box<dyn ArchiveWriter>, StorageError> {
        check_archive_name(name)?;
        self.check_dir()?;
        let partial = self.dir.join(partial_name(name));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(MODE)
            .open(&partial)
            .map_err(|e| self.io(e))?;
        let have = file.metadata().map_err(|e| self.io(e))?.len();
        // A checkpoint promises `len` bytes; a shorter file (replaced media, a hand-deleted partial) starts over.
        let durable = match resume.as_ref().and_then(|s| s.get("len")?.as_u64()) {
            Some(len) if len <= have => len,
            _ => 0,
        };
        file.set_len(durable).map_err(|e| self.io(e))?;
        file.seek(SeekFrom::Start(durable))
            .map_err(|e| self.io(e))?;
        file.set_permissions(std::fs::Permissions::from_mode(MODE))
            .map_err(|e| self.io(e))?;
        Ok(Box::new(LocalWriter {
            file: BufWriter::with_capacity(BUFFER, file),
            dir: self.dir.clone(),
            partial,
            target: self.dir.join(name),
            uri: self.uri_of(name),
            durable,
            written: durable,
        }))
    }

    fn open_read(&self, name: &str) -> Result<Box<dyn io::Read + Send>, StorageError> {
        check_archive_name(name)?;
        self.check_dir()?;
        match File::open(self.dir.join(name)) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound {
                uri: self.uri_of(name),
                container: false,
            }),
            Err(e) => Err(self.io(e)),
        }
    }

    fn list(&self) -> Result<Vec<ArchiveEntry>, StorageError> {
        self.check_dir()?;
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(|e| self.io(e))? {
            let e = e.map_err(|e| self.io(e))?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if check_archive_name(&name).is_err() {
                continue; // partial files, dotfiles, names no archive could have
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_file() {
                out.push(self.entry(name, &meta));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&self, name: &str) -> Result<Option<ArchiveEntry>, StorageError> {
        check_archive_name(name)?;
        self.check_dir()?;
        match std::fs::metadata(self.dir.join(name)) {
            Ok(m) if m.is_file() => Ok(Some(self.entry(name.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        check_archive_name(name)?;
        self.check_dir()?;
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => sync_dir(&self.dir).map_err(|e| self.io(e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn uri_of(&self, name: &str) -> String {
        moat_model::storage_uri::StorageUri::LocalDirectory {
            dir: self.dir.clone(),
        }
        .with_blob(name)
    }
}

pub struct LocalWriter {
    file: BufWriter<File>,
    dir: PathBuf,
    partial: PathBuf,
    target: PathBuf,
    uri: String,
    /// Bytes on disk as of the last checkpoint (or the resume).
    durable: u64,
    written: u64,
}

impl LocalWriter {
    fn io(&self, e: io::Error) -> StorageError {
        StorageError::Io {
            uri: self.uri.clone(),
            source: e,
        }
    }
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ArchiveWriter for LocalWriter {
    fn durable_len(&self) -> u64 {
        self.durable
    }

    fn checkpoint(&mut self) -> Result<Value, StorageError> {
        self.file.flush().map_err(|e| self.io(e))?;
        self.file.get_ref().sync_data().map_err(|e| self.io(e))?;
        self.durable = self.written;
        Ok(json!({"v": 1, "len": self.durable}))
    }

    fn commit(self: Box<Self>) -> Result<(), StorageError> {
        let me = *self;
        let file = me.file.into_inner().map_err(|e| StorageError::Io {
            uri: me.uri.clone(),
            source: e.into_error(),
        })?;
        let io = |e: io::Error| StorageError::Io {
            uri: me.uri.clone(),
            source: e,
        };
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&me.partial, &me.target).map_err(io)?;
        sync_dir(&me.dir).map_err(io)
    }

    fn abort(self: Box<Self>) {
        let me = *self;
        drop(me.file);
        let _ = std::fs::remove_file(&me.partial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn nothing_visible_until_commit_then_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalDir::new(tmp.path().into());
        let mut w = store.begin_write("a.tar", None).unwrap();
        w.write_all(&data(3_000_000)).unwrap();
        w.checkpoint().unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(store.stat("a.tar").unwrap().is_none());
        w.commit().unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].size), ("a.tar", 3_000_000));
        let mode = std::fs::metadata(tmp.path().join("a.tar"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        let mut back = Vec::new();
        store
            .open_read("a.tar")
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data(3_000_000));
        assert!(!tmp.path().join(".a.tar.partial").exists());
        store.delete("a.tar").unwrap();
        store.delete("a.tar").unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn resume_truncates_to_the_checkpoint_and_continues() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalDir::new(tmp.path().into());
        let all = data(5_000_000);
        let mut w = store.begin_write("b.tar", None).unwrap();
        w.write_all(&all[..2_000_000]).unwrap();
        let state = w.checkpoint().unwrap();
        // Written after the checkpoint, then the process dies: those bytes are not promised.
        w.write_all(&all[2_000_000..2_500_000]).unwrap();
        w.flush().unwrap();
        std::mem::forget(w);
        let mut w = store.begin_write("b.tar", Some(state)).unwrap();
        assert_eq!(w.durable_len(), 2_000_000);
        w.write_all(&all[2_000_000..]).unwrap();
        w.commit().unwrap();
        let mut back = Vec::new();
        store
            .open_read("b.tar")
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), all.len());
        assert!(back == all);
    }

    #[test]
    fn a_state_the_file_cannot_honour_starts_over_and_abort_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalDir::new(tmp.path().into());
        let w = store
            .begin_write("c.tar", Some(json!({"v": 1, "len": 99})))
            .unwrap();
        assert_eq!(w.durable_len(), 0);
        w.abort();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn errors_name_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalDir::new(tmp.path().join("absent"));
        let e = store.begin_write("a.tar", None).err().unwrap().to_string();
        assert!(e.contains("does not exist") && e.contains("mkdir"), "{e}");
        let store = LocalDir::new(tmp.path().into());
        for bad in ["../x", ".hidden", "a/b", ""] {
            assert!(store.begin_write(bad, None).is_err(), "{bad}");
        }
        let e = store.open_read("nope.tar").err().unwrap().to_string();
        assert!(
            e.contains("nope.tar") && e.contains("does not exist"),
            "{e}"
        );
    }
}
