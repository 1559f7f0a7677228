//! One chain's running state.

use sha2::{Digest, Sha256};

/// The state before a chain's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// The chain a record belongs to: `audit/<registry>`, `activity/<registry>`, or `activity/-` for management
/// records that concern no registry (service principals, role assignments at subscription scope).
pub fn chain_name(log: &str, registry: Option<&str>) -> String {
    match registry {
        Some(r) if !r.is_empty() => format!("{log}/{r}"),
        _ => format!("{log}/-"),
    }
}

/// Where a chain stands after its last record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainState {
    /// The sequence number of the chain's last record (0 before the first).
    pub last_seq: i64,
    /// Records chained since the chain began (pruned ones included).
    pub count: i64,
    pub state: [u8; 32],
}

impl Default for ChainState {
    fn default() -> Self {
        ChainState {
            last_seq: 0,
            count: 0,
            state: GENESIS,
        }
    }
}

impl ChainState {
    /// Appends the record `seq` whose canonical bytes are `canonical`; returns its link.
    pub fn append(&mut self, seq: i64, canonical: &[u8]) -> i64 {
        let mut h = Sha256::new();
        h.update(self.state);
        h.update(seq.to_be_bytes());
        h.update(canonical);
        self.state = h.finalize().into();
        self.last_seq = seq;
        self.count += 1;
        link(&self.state)
    }

    /// The full state from its hex form (as heads and checkpoints keep it).
    pub fn state_from_hex(s: &str) -> Option<[u8; 32]> {
        let v = hex::decode(s).ok()?;
        v.try_into().ok()
    }
}

/// The part of a state each row keeps: 48 bits, a positive integer (6 bytes in SQLite). Enough to name the first
/// bad record; the chain itself (and its signed heads) carries the full strength.
pub fn link(state: &[u8; 32]) -> i64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&state[..6]);
    i64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_depends_on_content_position_and_order() {
        let run = |records: &[(i64, &[u8])]| {
            let mut c = ChainState::default();
            let links: Vec<i64> = records.iter().map(|(s, b)| c.append(*s, b)).collect();
            (c, links)
        };
        let (a, la) = run(&[(1, b"one"), (2, b"two"), (3, b"three")]);
        assert_eq!(a.count, 3);
        assert_eq!(a.last_seq, 3);
        // Same records again: same links (verification recomputes them).
        assert_eq!(run(&[(1, b"one"), (2, b"two"), (3, b"three")]).1, la);
        // An edit changes that record's link and every state after it.
        let (b, lb) = run(&[(1, b"one"), (2, b"tw0"), (3, b"three")]);
        assert_eq!(lb[0], la[0]);
        assert_ne!(lb[1], la[1]);
        assert_ne!(lb[2], la[2]);
        assert_ne!(a.state, b.state);
        // Swapping two records' contents (keeping the seqs) changes the links from the first swapped one.
        let (_, lc) = run(&[(1, b"two"), (2, b"one"), (3, b"three")]);
        assert_ne!(lc[0], la[0]);
        // A deletion: the next record no longer chains from the same state.
        let (_, ld) = run(&[(1, b"one"), (3, b"three")]);
        assert_ne!(ld[1], la[2]);
        // The seq is part of the link: the same content moved to another place does not verify.
        let (_, le) = run(&[(1, b"one"), (4, b"two")]);
        assert_ne!(le[1], la[1]);
        for l in la {
            assert!((0..1 << 48).contains(&l));
        }
    }

    #[test]
    fn chain_names() {
        assert_eq!(chain_name("audit", Some("prod")), "audit/prod");
        assert_eq!(chain_name("activity", None), "activity/-");
        assert_eq!(
            ChainState::state_from_hex(&hex::encode([7u8; 32])),
            Some([7u8; 32])
        );
        assert_eq!(ChainState::state_from_hex("abcd"), None);
    }
}
