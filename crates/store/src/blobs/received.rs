//! Proof that a blob's bytes arrived in this request or operation (DESIGN principle 6, case a). A
//! [`ReceivedBlob`] is the only value the metadata store accepts to link new bytes into a repository, and it can be
//! built only here, from bytes this process hashed: [`ReceivedBlob::commit`] from an upload object whose bytes an
//! [`UploadWriter`](super::UploadWriter) hashed on their way in ([`Hashed`], itself built only by the writer), and
//! [`ReceivedBlob::from_bytes`] from a small body held in memory. Their fields are private and neither type has any
//! other constructor, so a digest a client merely names (in a manifest, a mount, an import) can never stand in
//! for bytes it has.

use super::midstate::UploadState;
use super::BlobStore;
use crate::gc::BlobPins;
use bytes::Bytes;
use moat_model::{Algorithm, Digest};
use std::io;

/// What an upload's bytes hash to, as computed while they were written: returned by
/// [`UploadWriter::finish`](super::UploadWriter::finish) and by nothing else.
pub struct Hashed {
    digest: Digest,
    state: UploadState,
}

impl Hashed {
    pub(super) fn new(digest: Digest, state: UploadState) -> Hashed {
        Hashed { digest, state }
    }

    /// The sha256 digest of every byte written.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.state.size()
    }

    /// The hash and the staged parts to continue the upload with its next chunk (on any node).
    pub fn resume_state(&self) -> UploadState {
        self.state.clone()
    }
}

/// Why an upload could not become the blob it was named as.
#[derive(Debug, thiserror::Error)]
pub enum Unverified {
    #[error("the content's digest is {actual}")]
    Mismatch { actual: Digest },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A blob whose bytes arrived in this operation, were hashed, matched their digest and are durable under it.
///
/// It cannot be made up from a digest:
/// ```compile_fail
/// let d = moat_model::Digest::sha256_of(b"x");
/// let _ = moat_store::ReceivedBlob { digest: d, size: 1, inline: None };
/// ```
/// nor can the writer's hash be claimed:
/// ```compile_fail
/// let _ = moat_store::Hashed::new(moat_model::Digest::sha256_of(b"x"), Default::default());
/// ```
#[derive(Clone, Debug)]
pub struct ReceivedBlob {
    digest: Digest,
    size: u64,
    /// The bytes of a small blob kept in the metadata store instead of a file (they become durable with its row).
    inline: Option<Bytes>,
    /// The pin that held the bytes against the collector while they were placed (see `gc/pins.rs`); the link
    /// writer removes it.
    pin: Option<String>,
}

impl ReceivedBlob {
    /// Makes upload `id`, whose bytes `hashed` covers, the blob `expected`: compared with the sha256 computed
    /// while the bytes streamed in (or, for another algorithm, with the store's hash of the object), then made
    /// durable under its name. On a mismatch nothing is committed and the caller discards the upload. `pins` must
    /// hold `expected`: the collector keeps off pinned bytes until the link is written (see `gc/pins.rs`).
    pub fn commit(
        store: &dyn BlobStore,
        id: &str,
        hashed: Hashed,
        expected: &Digest,
        pins: &BlobPins,
    ) -> Result<ReceivedBlob, Unverified> {
        if !pins.holds(expected) {
            return Err(Unverified::Io(io::Error::other(format!(
                "{expected} is not pinned: its bytes could be collected before they are linked"
            ))));
        }
        let size = hashed.size();
        let actual = match expected.algorithm() {
            Algorithm::Sha256 => hashed.digest,
            other => store.digest_upload(id, other)?,
        };
        if &actual != expected {
            return Err(Unverified::Mismatch { actual });
        }
        store.commit_upload(id, expected)?;
        Ok(ReceivedBlob {
            digest: actual,
            size,
            inline: None,
            pin: Some(pins.holder().to_string()),
        })
    }

    /// A small blob received whole in memory, if `bytes` hash to `expected`; otherwise the digest they have.
    pub fn from_bytes(bytes: Bytes, expected: &Digest) -> Result<ReceivedBlob, Digest> {
        let actual = Digest::of(expected.algorithm(), &bytes);
        if &actual != expected {
            return Err(actual);
        }
        Ok(ReceivedBlob {
            digest: actual,
            size: bytes.len() as u64,
            inline: Some(bytes),
            pin: None,
        })
    }

    /// A blob an earlier attempt of a job received and recorded (`MetadataStore::record_job_blob`, which takes a
    /// `ReceivedBlob`), placed under its digest and still pinned by `pin`: only the store rebuilds one.
    pub(crate) fn recorded(digest: Digest, size: u64, pin: String) -> ReceivedBlob {
        ReceivedBlob {
            digest,
            size,
            inline: None,
            pin: Some(pin),
        }
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes to store in the metadata store, for a small blob.
    pub fn inline(&self) -> Option<&Bytes> {
        self.inline.as_ref()
    }

    pub(crate) fn pin(&self) -> Option<&str> {
        self.pin.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalBlobStore;

    #[test]
    fn only_matching_bytes_become_a_received_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        for (id, body, named) in [
            ("aa-01", &b"layer"[..], Digest::sha256_of(b"layer")),
            ("aa-02", &b"other"[..], Digest::sha256_of(b"layer")),
            (
                "aa-03",
                &b"layer"[..],
                Digest::of(Algorithm::Sha512, b"layer"),
            ),
        ] {
            store.create_upload(id, false).unwrap();
            let mut w = store.open_upload(id, 0, None).unwrap();
            w.write(Bytes::copy_from_slice(body)).unwrap();
            let pins = BlobPins::unrecorded(&[Digest::sha256_of(b"layer")]);
            let result = ReceivedBlob::commit(&store, id, w.finish().unwrap(), &named, &pins);
            if body == b"layer" && pins.holds(&named) {
                let blob = result.unwrap();
                assert_eq!((blob.digest(), blob.size()), (&named, 5));
                assert!(store.blob_exists(&named));
            } else if pins.holds(&named) {
                assert!(matches!(result, Err(Unverified::Mismatch { .. })));
            } else {
                // Right bytes under a digest nobody pinned: refused before anything is placed.
                assert!(matches!(result, Err(Unverified::Io(_))));
                assert!(!store.blob_exists(&named));
            }
        }
        let d = Digest::sha256_of(b"small");
        assert!(ReceivedBlob::from_bytes(Bytes::from_static(b"small"), &d).is_ok());
        assert_eq!(
            ReceivedBlob::from_bytes(Bytes::from_static(b"forged"), &d).unwrap_err(),
            Digest::sha256_of(b"forged")
        );
    }
}
