//! Reading an archive as a stream, in two steps. [`ArchiveReader::open`] reads the head and checks the
//! signature of the contents list against the import's trust policy before anything is stored; then
//! [`ArchiveReader::receive`] streams every entry, in the order the list gives, through a hasher: manifests and
//! small blobs into memory, large blobs into the blob store, each checked against the list's digest and size.
//! Blobs placed in the store are pinned first (see `moat_store::gc::pins`): the pins hold them against the
//! collector until the import's transaction links them, and the caller releases what is left afterwards, so the
//! blobs of a refused archive become unlinked bytes the collector removes.

use super::contents::{Contents, CONTENTS_NAME, OCI_LAYOUT, SIGNATURE_NAME};
use super::hasher::ParallelHasher;
use super::signed::decode_signature;
use super::tar::{self, Kind};
use super::{ArchiveError, ExportedArtifact, TransferPublicKey, TrustPolicy, INLINE_MAX};
use bytes::Bytes;
use moat_model::{Digest, ParsedManifest};
use moat_store::gc::BlobPins;
use moat_store::meta::ManifestRecord;
use moat_store::{BlobStore, MetadataStore, ReceivedBlob};
use std::io::{self, Read};
use std::time::Duration;

/// Head files larger than these are refused (they are read into memory).
const MAX_LAYOUT: u64 = 4 * 1024;
const MAX_INDEX: u64 = 4 << 20;
const MAX_CONTENTS: u64 = 16 << 20;
const MAX_SIGNATURE: u64 = 1024;
const MAX_MANIFEST: u64 = 4 << 20;
const CHUNK: usize = 1 << 20;
const REPORT_EVERY: u64 = 8 << 20;

/// Everything an import transaction needs from an archive.
#[derive(Debug)]
pub struct ReadArchive {
    pub artifacts: Vec<ExportedArtifact>,
    pub manifests: Vec<ManifestRecord>,
    pub blobs: Vec<(Digest, u64)>,
    /// The proof that each blob's bytes arrived in this import (DESIGN principle 6).
    pub received: Vec<ReceivedBlob>,
    /// sha256 of the whole archive.
    pub catalog_digest: Digest,
    /// The key id that signed the contents list, when signed (and verified).
    pub signed_by: Option<String>,
    pub signer_key: Option<TransferPublicKey>,
    /// The exporting registry's login server, as the archive says.
    pub exporter: String,
    /// Pins on the blobs placed in the store; the import's link writer removes each pin it uses, and the caller
    /// releases the rest (`MetadataStore::unpin`) once the import is written or refused.
    pub pins: Option<BlobPins>,
}

impl ReadArchive {
    /// The manifests (root last) and blobs of one artifact, as `ImportWrite` takes them.
    pub fn image(&self, artifact: &ExportedArtifact) -> (Vec<ManifestRecord>, Vec<(Digest, u64)>) {
        let manifests = artifact
            .manifests
            .iter()
            .filter_map(|d| self.manifests.iter().find(|m| &m.digest == d).cloned())
            .collect();
        let blobs = artifact
            .blobs
            .iter()
            .filter_map(|d| self.blobs.iter().find(|(b, _)| b == d).cloned())
            .collect();
        (manifests, blobs)
    }
}

/// How blobs are pinned while an archive is read (a blocking caller of an async store).
pub trait Pinner {
    fn pin(&self, digests: &[Digest]) -> Result<BlobPins, ArchiveError>;
    fn unpin(&self, pins: &BlobPins);
}

/// Pins in the metadata store, from a blocking thread (`spawn_blocking`) of the runtime `handle`.
pub struct StorePinner {
    pub meta: MetadataStore,
    pub handle: tokio::runtime::Handle,
    /// Long enough for the whole import: a pin that lapses lets the collector take unlinked bytes.
    pub ttl: Duration,
    /// Pin under this job (`MetadataStore::pin_blobs_for_job`): the job's end releases the pins, and a resumed
    /// attempt finds them. Without, the pins belong to this read alone.
    pub job: Option<String>,
}

impl Pinner for StorePinner {
    fn pin(&self, digests: &[Digest]) -> Result<BlobPins, ArchiveError> {
        Ok(match &self.job {
            Some(id) => self
                .handle
                .block_on(self.meta.pin_blobs_for_job(id, digests, self.ttl))?,
            None => self
                .handle
                .block_on(self.meta.pin_blobs(digests, self.ttl))?,
        })
    }

    fn unpin(&self, pins: &BlobPins) {
        if self.job.is_some() {
            // The job's pins go when the job ends.
            return;
        }
        if let Err(e) = self.handle.block_on(self.meta.unpin(pins)) {
            tracing::warn!(
                "releasing the pins of a refused archive: {e} (they lapse on their own)"
            );
        }
    }
}

/// Hashes and counts every byte read.
struct Hashing<'a> {
    inner: &'a mut dyn Read,
    hasher: ParallelHasher,
    pos: u64,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// An archive whose head has been read and whose signature the trust policy accepted.
pub struct ArchiveReader<'a> {
    input: Hashing<'a>,
    contents: Contents,
    signed_by: Option<(String, TransferPublicKey)>,
    /// The first entry after the head, read while looking for the signature.
    pending: Option<tar::Entry>,
}

fn read_small(r: &mut dyn Read, e: &tar::Entry, max: u64) -> Result<Vec<u8>, ArchiveError> {
    if e.kind != Kind::File || e.size > max {
        return Err(ArchiveError::NotAnArchive(format!(
            "'{}' is not a file of at most {max} bytes",
            e.name
        )));
    }
    let mut data = vec![0u8; e.size as usize];
    r.read_exact(&mut data).map_err(|err| match err.kind() {
        io::ErrorKind::UnexpectedEof => ArchiveError::Truncated(format!("inside '{}'", e.name)),
        _ => err.into(),
    })?;
    tar::skip(r, tar::padding(e.size))?;
    Ok(data)
}

fn expect(r: &mut dyn Read, name: &str) -> Result<tar::Entry, ArchiveError> {
    match tar::next_entry(r)? {
        Some(e) if e.name == name => Ok(e),
        Some(e) => Err(ArchiveError::NotAnArchive(format!(
            "'{}' where '{name}' was expected: it was not written by a Moat export",
            e.name
        ))),
        None => Err(ArchiveError::Truncated(format!("before '{name}'"))),
    }
}

impl<'a> ArchiveReader<'a> {
    /// Reads the head and checks it: `oci-layout`, `index.json` and the contents list, whose signature must
    /// satisfy `trust`, and which must itself vouch for the other two.
    pub fn open(
        input: &'a mut dyn Read,
        trust: &TrustPolicy,
    ) -> Result<ArchiveReader<'a>, ArchiveError> {
        let mut r = Hashing {
            inner: input,
            hasher: ParallelHasher::new(),
            pos: 0,
        };
        let e = expect(&mut r, "oci-layout")?;
        let layout = read_small(&mut r, &e, MAX_LAYOUT)?;
        let e = expect(&mut r, "index.json")?;
        let index = read_small(&mut r, &e, MAX_INDEX)?;
        let e = expect(&mut r, CONTENTS_NAME)?;
        let contents_json = read_small(&mut r, &e, MAX_CONTENTS)?;
        let mut pending = tar::next_entry(&mut r)?;
        let mut signature = None;
        if let Some(e) = pending.as_ref().filter(|e| e.name == SIGNATURE_NAME) {
            let text = read_small(&mut r, e, MAX_SIGNATURE)?;
            signature = Some(decode_signature(&text).ok_or_else(|| {
                ArchiveError::BadSignature(
                    "the signature file is not a base64 Ed25519 signature".into(),
                )
            })?);
            pending = tar::next_entry(&mut r)?;
        }
        // The list is parsed only to learn which key it names; nothing in it is believed before the check.
        let contents: Contents = serde_json::from_slice(&contents_json)
            .map_err(|e| ArchiveError::NotAnArchive(format!("{CONTENTS_NAME}: {e}")))?;
        let signed_by = check_signature(&contents, &contents_json, signature.as_deref(), trust)?;
        contents.check().map_err(ArchiveError::Corrupt)?;
        for (name, bytes, entry) in [
            ("oci-layout", &layout, &contents.oci_layout),
            ("index.json", &index, &contents.index),
        ] {
            if Digest::sha256_of(bytes) != entry.digest || bytes.len() as u64 != entry.size {
                return Err(ArchiveError::Corrupt(format!(
                    "'{name}' is not the file the contents list describes"
                )));
            }
        }
        if layout != OCI_LAYOUT {
            let v: serde_json::Value = serde_json::from_slice(&layout)
                .map_err(|e| ArchiveError::NotAnArchive(format!("oci-layout: {e}")))?;
            if v["imageLayoutVersion"] != "1.0.0" {
                return Err(ArchiveError::NotAnArchive(format!(
                    "oci-layout version {} (1.0.0 expected)",
                    v["imageLayoutVersion"]
                )));
            }
        }
        Ok(ArchiveReader {
            input: r,
            contents,
            signed_by,
            pending,
        })
    }

    /// The verified contents list: what will be stored (the digests to pin).
    pub fn contents(&self) -> &Contents {
        &self.contents
    }

    /// Reads every entry into memory or the blob store, checked against the contents list; then the end of the
    /// archive, and the whole stream's sha256 against `expected` when given. `pins` must hold every entry that is
    /// a blob larger than [`INLINE_MAX`] (see [`ArchiveReader::blobs_to_pin`]).
    pub fn receive(
        mut self,
        blobs: &dyn BlobStore,
        pins: Option<&BlobPins>,
        expected: Option<&Digest>,
        progress: &dyn Fn(u64, usize),
    ) -> Result<ReadArchive, ArchiveError> {
        let mut next = self.pending.take();
        // Directories first (any number, as other tar writers may add them), then exactly the listed entries.
        while let Some(e) = next.as_ref().filter(|e| e.kind == Kind::Dir) {
            if e.size != 0 {
                return Err(ArchiveError::Corrupt(format!(
                    "directory '{}' has data",
                    e.name
                )));
            }
            next = tar::next_entry(&mut self.input)?;
        }
        let mut manifests = Vec::new();
        let mut sizes = Vec::new();
        let mut received = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        let listed: Vec<(String, super::ContentsEntry)> =
            self.contents.paths().map(|(p, e)| (p, e.clone())).collect();
        for (i, (path, want)) in listed.iter().enumerate() {
            let e = match next.take() {
                Some(e) => e,
                None => match tar::next_entry(&mut self.input)? {
                    Some(e) => e,
                    None => {
                        return Err(ArchiveError::Truncated(format!(
                            "before {path}, entry {} of {}",
                            i + 1,
                            listed.len()
                        )))
                    }
                },
            };
            if e.name != *path || e.kind != Kind::File {
                return Err(ArchiveError::Corrupt(format!(
                    "'{}' where the contents list has {path}: entries are missing, extra or reordered",
                    e.name
                )));
            }
            if e.size != want.size {
                return Err(ArchiveError::Corrupt(format!(
                    "{path} holds {} bytes where the contents list says {}",
                    e.size, want.size
                )));
            }
            if let Some(media_type) = &want.media_type {
                let body = self.read_whole(&e, MAX_MANIFEST, &want.digest)?;
                let parsed = ParsedManifest::parse(&body, media_type).map_err(|err| {
                    ArchiveError::Corrupt(format!("manifest {} is not valid: {err}", want.digest))
                })?;
                manifests.push(ManifestRecord::new(want.digest.clone(), &parsed, body));
            } else if want.size <= INLINE_MAX {
                let body = self.read_whole(&e, INLINE_MAX, &want.digest)?;
                received.push(
                    ReceivedBlob::from_bytes(Bytes::from(body), &want.digest)
                        .expect("read_whole checked the digest"),
                );
                sizes.push((want.digest.clone(), want.size));
            } else {
                let pins = pins.ok_or_else(|| {
                    ArchiveError::Stopped(format!(
                        "{} was not pinned before it was stored",
                        want.digest
                    ))
                })?;
                received.push(self.store_blob(blobs, pins, want, &mut buf, i, progress)?);
                sizes.push((want.digest.clone(), want.size));
            }
            tar::skip(&mut self.input, tar::padding(want.size))?;
            progress(self.input.pos, i + 1);
        }
        match next
            .take()
            .map_or_else(|| tar::next_entry(&mut self.input), |e| Ok(Some(e)))?
        {
            None => {}
            Some(e) => {
                return Err(ArchiveError::Corrupt(format!(
                "'{}' follows the last entry of the contents list: the archive has extra entries",
                e.name
            )))
            }
        }
        // The rest is the second zero block and any padding to a record size: zeros only.
        loop {
            let n = self.input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Err(ArchiveError::Corrupt(
                    "data after the end of the archive".into(),
                ));
            }
        }
        let catalog_digest = self.input.hasher.digest();
        if let Some(expected) = expected {
            if expected != &catalog_digest {
                return Err(ArchiveError::CatalogMismatch {
                    expected: expected.clone(),
                    actual: catalog_digest,
                });
            }
        }
        check_closures(&self.contents.artifacts, &manifests)?;
        let (signed_by, signer_key) = match self.signed_by {
            Some((kid, key)) => (Some(kid), Some(key)),
            None => (None, None),
        };
        Ok(ReadArchive {
            artifacts: self.contents.artifacts,
            manifests,
            blobs: sizes,
            received,
            catalog_digest,
            signed_by,
            signer_key,
            exporter: self.contents.exporter,
            pins: None,
        })
    }

    /// Blobs that go to the blob store (larger than [`INLINE_MAX`]): the digests to pin before `receive`.
    pub fn blobs_to_pin(&self) -> Vec<Digest> {
        self.contents
            .entries
            .iter()
            .filter(|e| e.media_type.is_none() && e.size > INLINE_MAX)
            .map(|e| e.digest.clone())
            .collect()
    }

    fn read_whole(
        &mut self,
        e: &tar::Entry,
        max: u64,
        digest: &Digest,
    ) -> Result<Vec<u8>, ArchiveError> {
        if e.size > max {
            return Err(ArchiveError::Corrupt(format!(
                "{} is larger than {max} bytes",
                e.name
            )));
        }
        let mut body = vec![0u8; e.size as usize];
        self.input
            .read_exact(&mut body)
            .map_err(|err| match err.kind() {
                io::ErrorKind::UnexpectedEof => {
                    ArchiveError::Truncated(format!("inside {}", e.name))
                }
                _ => err.into(),
            })?;
        let actual = Digest::of(digest.algorithm(), &body);
        if &actual != digest {
            return Err(ArchiveError::DigestMismatch {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(body)
    }

    fn store_blob(
        &mut self,
        store: &dyn BlobStore,
        pins: &BlobPins,
        want: &super::ContentsEntry,
        buf: &mut [u8],
        done: usize,
        progress: &dyn Fn(u64, usize),
    ) -> Result<ReceivedBlob, ArchiveError> {
        let id = uuid::Uuid::new_v4().to_string();
        store.create_upload(&id, false)?;
        let result = (|| {
            let mut w = store.open_upload(&id, 0, None)?;
            let mut left = want.size;
            let mut since = 0u64;
            while left > 0 {
                let want_now = (buf.len() as u64).min(left) as usize;
                let n = self.input.read(&mut buf[..want_now])?;
                if n == 0 {
                    return Err(ArchiveError::Truncated(format!(
                        "inside {} ({} of {} bytes)",
                        want.digest,
                        want.size - left,
                        want.size
                    )));
                }
                w.write(Bytes::copy_from_slice(&buf[..n]))?;
                left -= n as u64;
                since += n as u64;
                if since >= REPORT_EVERY {
                    since = 0;
                    progress(self.input.pos, done);
                }
            }
            w.sync()?;
            let hashed = w.finish()?;
            ReceivedBlob::commit(store, &id, hashed, &want.digest, pins).map_err(|e| match e {
                moat_store::blobs::Unverified::Mismatch { actual } => {
                    ArchiveError::DigestMismatch {
                        digest: want.digest.clone(),
                        actual,
                    }
                }
                moat_store::blobs::Unverified::Io(e) => e.into(),
            })
        })();
        if result.is_err() {
            let _ = store.remove_upload(&id);
        }
        result
    }
}

/// Checks the signature of the contents list against the trust policy; returns the key that signed.
fn check_signature(
    contents: &Contents,
    json: &[u8],
    signature: Option<&[u8]>,
    trust: &TrustPolicy,
) -> Result<Option<(String, TransferPublicKey)>, ArchiveError> {
    let Some(sig) = signature else {
        return match trust {
            TrustPolicy::AnySignatureOrNone => Ok(None),
            TrustPolicy::Require(_) => Err(ArchiveError::Unsigned),
        };
    };
    let kid = contents.key_id.clone().unwrap_or_default();
    let named: TransferPublicKey = contents
        .public_key
        .as_deref()
        .ok_or_else(|| ArchiveError::BadSignature("the contents list names no public key".into()))?
        .parse()
        .map_err(|e: super::BadPublicKey| ArchiveError::BadSignature(e.to_string()))?;
    if !named.verify(json, sig) {
        return Err(ArchiveError::BadSignature(format!("key {kid}, {named}")));
    }
    if let TrustPolicy::Require(keys) = trust {
        if !keys.contains(&named) {
            return Err(ArchiveError::UntrustedSigner {
                key: named.to_string(),
                kid,
            });
        }
    }
    Ok(Some((kid, named)))
}

/// Every manifest an artifact needs references only blobs and manifests the artifact lists, so the import
/// transaction never writes a manifest whose content it does not link.
fn check_closures(
    artifacts: &[ExportedArtifact],
    manifests: &[ManifestRecord],
) -> Result<(), ArchiveError> {
    for a in artifacts {
        for d in &a.manifests {
            let m = manifests.iter().find(|m| &m.digest == d).ok_or_else(|| {
                ArchiveError::Corrupt(format!("manifest {d} of {} is missing", a.reference()))
            })?;
            for b in &m.required_blobs {
                if !a.blobs.contains(b) {
                    return Err(ArchiveError::Corrupt(format!(
                        "manifest {d} of {} needs blob {b}, which the artifact does not list",
                        a.reference()
                    )));
                }
            }
            for c in &m.required_manifests {
                if !a.manifests.contains(c) {
                    return Err(ArchiveError::Corrupt(format!(
                        "index {d} of {} needs manifest {c}, which the artifact does not list",
                        a.reference()
                    )));
                }
            }
        }
        let root = manifests
            .iter()
            .find(|m| m.digest == a.digest)
            .expect("checked above");
        if root.media_type != a.media_type {
            return Err(ArchiveError::Corrupt(format!(
                "{} is listed as {} but its manifest is {}",
                a.reference(),
                a.media_type,
                root.media_type
            )));
        }
    }
    Ok(())
}

/// Reads a whole archive: the head checked against `trust`, the blobs to be stored pinned through `pinner`, every
/// entry received and checked, the archive's digest compared with `expected`. On failure the pins are released
/// (what was stored is then unlinked bytes the collector removes); on success the caller releases them after its
/// import transaction.
pub fn read_archive(
    input: &mut dyn Read,
    trust: &TrustPolicy,
    expected: Option<&Digest>,
    blobs: &dyn BlobStore,
    pinner: &dyn Pinner,
    progress: &dyn Fn(u64, usize),
) -> Result<ReadArchive, ArchiveError> {
    let reader = ArchiveReader::open(input, trust)?;
    let to_pin = reader.blobs_to_pin();
    let pins = if to_pin.is_empty() {
        None
    } else {
        Some(pinner.pin(&to_pin)?)
    };
    match reader.receive(blobs, pins.as_ref(), expected, progress) {
        Ok(mut read) => {
            read.pins = pins;
            Ok(read)
        }
        Err(e) => {
            if let Some(p) = &pins {
                pinner.unpin(p);
            }
            Err(e)
        }
    }
}
