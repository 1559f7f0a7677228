//! Writing an archive: the head, then every blob streamed from the blob store (constant memory whatever its
//! size), the whole output hashed once. A resumed export writes the same stream from the start, hashing every
//! byte but sending only those after `skip` (what the target holds already).

use super::contents::{self, ContentsEntry, CONTENTS_NAME, OCI_LAYOUT, SIGNATURE_NAME};
use super::hasher::ParallelHasher;
use super::signed::{encode_signature, SIGNATURE_FILE_LEN};
use super::tar::{self, Kind};
use super::{ArchiveError, ExportSet, TransferSigner};
use moat_model::Digest;
use moat_store::BlobStore;
use std::io::{Read, Write};

/// What an archive write reports to its caller, which may persist a checkpoint there (and stop the write by
/// returning an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStep {
    /// Bytes of the archive produced so far (those skipped included).
    pub bytes: u64,
    /// Blob entries complete.
    pub blobs_done: usize,
    /// The archive's size when complete.
    pub total: u64,
    /// True at the end of an entry (a clean point to checkpoint at); false for progress within a large blob.
    pub boundary: bool,
}

/// Progress reports within a blob come this often.
const REPORT_EVERY: u64 = 8 << 20;
const CHUNK: usize = 1 << 20;

/// A summary of a finished write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// sha256 of the whole archive: the run's `catalogDigest`.
    pub digest: Digest,
    pub size: u64,
    pub blobs: usize,
}

/// Hashes every byte and passes on only those at or after `skip`.
struct Out<'a, W: Write + ?Sized> {
    inner: &'a mut W,
    hasher: ParallelHasher,
    pos: u64,
    skip: u64,
}

impl<W: Write + ?Sized> Out<'_, W> {
    fn put(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.hasher.update(buf);
        let start = self.pos;
        self.pos += buf.len() as u64;
        if self.pos > self.skip {
            let from = self.skip.saturating_sub(start) as usize;
            self.inner.write_all(&buf[from..])?;
        }
        Ok(())
    }
}

/// The exact size of the archive `write_archive` produces for `set` and `signer`.
pub fn archive_size(set: &ExportSet, signer: &TransferSigner) -> u64 {
    size_of(set, Some(signer))
}

fn size_of(set: &ExportSet, signer: Option<&TransferSigner>) -> u64 {
    let head = contents::head(set, key_of(signer));
    let mut n = tar::entry_len("oci-layout", OCI_LAYOUT.len() as u64)
        + tar::entry_len("index.json", head.index_json.len() as u64)
        + tar::entry_len(CONTENTS_NAME, head.contents_json.len() as u64);
    if signer.is_some() {
        n += tar::entry_len(SIGNATURE_NAME, SIGNATURE_FILE_LEN);
    }
    for d in contents::dirs(&head.contents.entries) {
        n += tar::entry_len(&d, 0);
    }
    for (path, e) in head.contents.paths() {
        n += tar::entry_len(&path, e.size);
    }
    n + 2 * tar::BLOCK
}

fn key_of(signer: Option<&TransferSigner>) -> Option<(&str, String)> {
    signer.map(|s| (s.kid(), s.public_key().to_string()))
}

/// Writes the archive of `set` to `out`, signed by `signer`, skipping the first `skip` bytes (durable already
/// after a resume; they are still read and hashed). `step` is called at the end of every entry and every few MiB
/// within a large blob; an error from it stops the write. Same set and signer, same bytes.
pub fn write_archive<W: Write + ?Sized>(
    set: &ExportSet,
    blobs: &dyn BlobStore,
    signer: &TransferSigner,
    out: &mut W,
    skip: u64,
    step: &mut dyn FnMut(&mut W, WriteStep) -> Result<(), ArchiveError>,
) -> Result<ArchiveSummary, ArchiveError> {
    write_inner(set, blobs, Some(signer), out, skip, step)
}

pub(crate) fn write_inner<W: Write + ?Sized>(
    set: &ExportSet,
    blobs: &dyn BlobStore,
    signer: Option<&TransferSigner>,
    out: &mut W,
    skip: u64,
    step: &mut dyn FnMut(&mut W, WriteStep) -> Result<(), ArchiveError>,
) -> Result<ArchiveSummary, ArchiveError> {
    let total = size_of(set, signer);
    let head = contents::head(set, key_of(signer));
    let mut o = Out {
        inner: out,
        hasher: ParallelHasher::new(),
        pos: 0,
        skip,
    };
    let small = |o: &mut Out<W>, name: &str, data: &[u8], kind: Kind| {
        o.put(&tar::header(name, data.len() as u64, kind))?;
        o.put(data)?;
        o.put(&[0u8; tar::BLOCK as usize][..tar::padding(data.len() as u64) as usize])
    };
    small(&mut o, "oci-layout", OCI_LAYOUT, Kind::File)?;
    small(&mut o, "index.json", &head.index_json, Kind::File)?;
    small(&mut o, CONTENTS_NAME, &head.contents_json, Kind::File)?;
    if let Some(s) = signer {
        let sig = encode_signature(&s.sign(&head.contents_json));
        small(&mut o, SIGNATURE_NAME, sig.as_bytes(), Kind::File)?;
    }
    for d in contents::dirs(&head.contents.entries) {
        small(&mut o, &d, &[], Kind::Dir)?;
    }
    let mut report = |o: &mut Out<W>, blobs_done, boundary| {
        let s = WriteStep {
            bytes: o.pos,
            blobs_done,
            total,
            boundary,
        };
        step(&mut *o.inner, s)
    };
    report(&mut o, 0, true)?;
    let mut buf = vec![0u8; CHUNK];
    for (i, (path, e)) in head.contents.paths().enumerate() {
        o.put(&tar::header(&path, e.size, Kind::File))?;
        let end = o.pos + e.size;
        if end <= skip && e.size > 0 {
            // Durable already: still hashed, so the digest covers it, but not sent again.
            stream_blob(set, blobs, e, &mut buf, &mut |chunk| Ok(o.put(chunk)?))?;
        } else {
            let mut since = 0u64;
            stream_blob(set, blobs, e, &mut buf, &mut |chunk| {
                o.put(chunk)?;
                since += chunk.len() as u64;
                if since >= REPORT_EVERY {
                    since = 0;
                    report(&mut o, i, false)?;
                }
                Ok(())
            })?;
        }
        o.put(&[0u8; tar::BLOCK as usize][..tar::padding(e.size) as usize])?;
        report(&mut o, i + 1, true)?;
    }
    o.put(&[0u8; 2 * tar::BLOCK as usize])?;
    debug_assert_eq!(o.pos, total);
    o.inner.flush()?;
    Ok(ArchiveSummary {
        digest: o.hasher.digest(),
        size: o.pos,
        blobs: head.contents.entries.len(),
    })
}

/// Streams one entry's bytes (a manifest's body, an inline blob, or a blob from the store) to `sink`, checking
/// that the store holds exactly the size the export recorded.
fn stream_blob(
    set: &ExportSet,
    blobs: &dyn BlobStore,
    e: &ContentsEntry,
    buf: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    if e.media_type.is_some() {
        let m = set
            .manifests
            .iter()
            .find(|m| m.digest == e.digest)
            .expect("entries come from the set");
        return sink(&m.body);
    }
    if let Some(data) = set.inline.get(&e.digest) {
        if data.len() as u64 != e.size {
            return Err(ArchiveError::BlobMissing(e.digest.clone()));
        }
        return sink(data);
    }
    let mut r = blobs
        .open_blob(&e.digest, 0, e.size)
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => ArchiveError::BlobMissing(e.digest.clone()),
            _ => err.into(),
        })?;
    let mut left = e.size;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            // The file is shorter than its row says.
            return Err(ArchiveError::BlobMissing(e.digest.clone()));
        }
        sink(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}
