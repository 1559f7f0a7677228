//! SHA-256 that can be put down and picked up elsewhere. A chunked upload may continue on another node (or after
//! a restart): what that node needs to go on hashing without reading the earlier chunks again is the compression
//! function's state after the last whole 64-byte block, the bytes of the block not yet complete, and the length.
//! `sha2` keeps those private in its `Sha256`, but exposes the compression function itself, so this is SHA-256
//! driven by hand: the same rounds (`sha2::compress256`, with its CPU-specific backends), our own padding.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

/// FIPS 180-4 §5.3.3: the initial hash value.
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 computation in progress, small enough to keep in an upload's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Midstate {
    /// The chaining value after every whole block hashed so far.
    state: [u32; 8],
    /// The bytes after the last whole block (always fewer than 64).
    #[serde(with = "hex_bytes")]
    tail: Vec<u8>,
    /// Bytes hashed in all.
    len: u64,
}

impl Default for Midstate {
    fn default() -> Midstate {
        Midstate::new()
    }
}

impl Midstate {
    pub fn new() -> Midstate {
        Midstate {
            state: H0,
            tail: Vec::with_capacity(64),
            len: 0,
        }
    }

    /// How many bytes have been hashed.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (64 - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.tail);
            sha2::compress256(&mut self.state, &[*GenericArray::from_slice(&block)]);
            self.tail = block;
            self.tail.clear();
        }
        let whole = data.len() / 64 * 64;
        // Whole blocks in batches: one call per batch lets the backend keep its state in registers across them.
        let mut blocks = [GenericArray::<u8, sha2::digest::consts::U64>::default(); 64];
        for batch in data[..whole].chunks(64 * blocks.len()) {
            let n = batch.len() / 64;
            for (b, chunk) in blocks.iter_mut().zip(batch.chunks_exact(64)) {
                b.copy_from_slice(chunk);
            }
            sha2::compress256(&mut self.state, &blocks[..n]);
        }
        self.tail.extend_from_slice(&data[whole..]);
    }

    /// The digest of everything hashed (the state itself is left as it was, to go on with).
    pub fn finalize(&self) -> [u8; 32] {
        let mut state = self.state;
        // FIPS 180-4 §5.1.1: a 1 bit, zeros to 56 mod 64, then the length in bits, big-endian.
        let mut last = self.tail.clone();
        last.push(0x80);
        while last.len() % 64 != 56 {
            last.push(0);
        }
        last.extend_from_slice(&(self.len * 8).to_be_bytes());
        for block in last.chunks_exact(64) {
            sha2::compress256(&mut state, &[*GenericArray::from_slice(block)]);
        }
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        let b = hex::decode(s).map_err(serde::de::Error::custom)?;
        if b.len() >= 64 {
            return Err(serde::de::Error::custom("a tail is shorter than a block"));
        }
        Ok(b)
    }
}

/// Where an upload stands after its last acknowledged chunk: the hash so far and, in an object store, the blocks
/// staged for it in order. Kept in the upload's row, so that any node continues it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    pub hash: Midstate,
    /// The store's ids of the staged blocks (empty for local files, where the file itself is the order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
}

impl UploadState {
    /// Bytes the state covers.
    pub fn size(&self) -> u64 {
        self.hash.len()
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an upload state serialises")
    }

    /// `None` for a row written by another version or damaged: the upload is then continued the slow way.
    pub fn decode(s: &str) -> Option<UploadState> {
        let st: UploadState = serde_json::from_str(s).ok()?;
        (st.hash.tail.len() as u64 == st.hash.len % 64).then_some(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest as _, Sha256};

    proptest! {
        #[test]
        fn any_chunking_any_handover_gives_sha256(
            data in proptest::collection::vec(any::<u8>(), 0..9000),
            cuts in proptest::collection::vec(0usize..9000, 0..12),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut m = Midstate::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                m.update(&data[from..c]);
                from = c;
                // Each chunk ends with the state written to a row and read back, as on another node.
                let st = UploadState { hash: m.clone(), parts: vec![] };
                m = UploadState::decode(&st.encode()).unwrap().hash;
            }
            prop_assert_eq!(m.len(), data.len() as u64);
            prop_assert_eq!(m.finalize().to_vec(), Sha256::digest(&data).to_vec());
        }
    }

    #[test]
    fn large_input_and_state_left_untouched_by_finalize() {
        let data: Vec<u8> = (0..(5 << 20) + 17).map(|i| (i * 31 % 251) as u8).collect();
        let mut m = Midstate::new();
        m.update(&data[..3 << 20]);
        let half = m.finalize();
        assert_eq!(half.to_vec(), Sha256::digest(&data[..3 << 20]).to_vec());
        m.update(&data[3 << 20..]);
        assert_eq!(m.finalize().to_vec(), Sha256::digest(&data).to_vec());
    }

    #[test]
    fn damaged_states_are_refused() {
        assert!(UploadState::decode("{").is_none());
        let mut m = Midstate::new();
        m.update(b"abc");
        let mut st = UploadState {
            hash: m,
            parts: vec![],
        };
        st.hash.len = 70; // a tail that does not match the length
        assert!(UploadState::decode(&st.encode()).is_none());
    }
}
