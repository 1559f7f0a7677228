//! The archive's sha256 computed on a thread of its own, so that hashing overlaps reading and writing: an export
//! or import then runs at the lesser of the hash rate and the I/O rate rather than at their harmonic sum (the
//! upload writer does the same for large blobs).

use moat_model::Digest;
use sha2::{Digest as _, Sha256};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// Chunks smaller than this are gathered before they are sent (tar headers, padding).
const GATHER: usize = 64 * 1024;

pub(crate) struct ParallelHasher {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<Sha256>>,
    pending: Vec<u8>,
}

impl ParallelHasher {
    pub fn new() -> ParallelHasher {
        let (tx, rx) = sync_channel::<Vec<u8>>(16);
        let thread = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                h.update(&chunk);
            }
            h
        });
        ParallelHasher {
            tx: Some(tx),
            thread: Some(thread),
            pending: Vec::with_capacity(GATHER),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.pending.len() + data.len() <= GATHER {
            self.pending.extend_from_slice(data);
            return;
        }
        self.flush();
        if data.len() < GATHER {
            self.pending.extend_from_slice(data);
        } else {
            self.send(data.to_vec());
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(GATHER));
            self.send(chunk);
        }
    }

    fn send(&mut self, chunk: Vec<u8>) {
        if let Some(tx) = &self.tx {
            // The thread ends only when the sender is dropped.
            let _ = tx.send(chunk);
        }
    }

    /// The digest of every byte given. Hashing ends here: later updates are not counted. (Dropped without it,
    /// after a failure, the thread ends on its own once the channel closes.)
    pub fn digest(&mut self) -> Digest {
        self.flush();
        drop(self.tx.take());
        let h = self
            .thread
            .take()
            .expect("digest is asked once")
            .join()
            .expect("the hashing thread does not panic");
        Digest::from_sha256_bytes(&h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_digest_as_a_plain_hash_for_any_chunking() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        for sizes in [
            vec![1usize],
            vec![512, 7],
            vec![65_536],
            vec![100_000, 3],
            vec![1 << 20],
        ] {
            let mut h = ParallelHasher::new();
            let mut at = 0;
            let mut k = 0;
            while at < data.len() {
                let n = sizes[k % sizes.len()].min(data.len() - at);
                h.update(&data[at..at + n]);
                at += n;
                k += 1;
            }
            assert_eq!(h.digest(), Digest::sha256_of(&data), "{sizes:?}");
        }
    }
}
