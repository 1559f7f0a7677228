//! A signed chain head: what a copy outside the server holds to prove the inside one.

use serde::{Deserialize, Serialize};

/// Why a checkpoint was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckpointKind {
    /// The periodic signature of a head that moved.
    Interval,
    /// Written before retention removed the chain's records up to `last_seq`: verification starts from it.
    Prune,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Interval => "interval",
            CheckpointKind::Prune => "prune",
        }
    }

    pub fn parse(s: &str) -> Option<CheckpointKind> {
        [CheckpointKind::Interval, CheckpointKind::Prune]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One signed head of one chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// `audit/<registry>`, `activity/<registry>` or `activity/-`.
    pub chain: String,
    /// `audit` or `activity`.
    pub log: String,
    pub registry: Option<String>,
    /// The chain's last record at signing time.
    pub last_seq: i64,
    /// Records chained since the chain began.
    pub count: i64,
    /// The chain's state after `last_seq`, hex.
    pub state: String,
    /// When it was signed (stored form, UTC).
    pub time: String,
    pub kind: CheckpointKind,
    /// The `audit` key that signed it (`<data dir>/keys/audit/<key_id>.key`).
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes signed: every field but the signature, one per line, after a version tag (no field holds a
    /// newline: chains and registries are names, the rest numbers, hex and times).
    pub fn message(&self) -> Vec<u8> {
        format!(
            "moat-audit-checkpoint/1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.chain,
            self.log,
            self.registry.as_deref().unwrap_or("-"),
            self.last_seq,
            self.count,
            self.state,
            self.time,
            self.kind.as_str(),
            self.key_id
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_covers_every_field_but_the_signature() {
        let c = Checkpoint {
            chain: "audit/prod".into(),
            log: "audit".into(),
            registry: Some("prod".into()),
            last_seq: 9,
            count: 4,
            state: "00".repeat(32),
            time: "2026-12-07T00:00:00.000000Z".into(),
            kind: CheckpointKind::Interval,
            key_id: "k".into(),
            signature: "aa".into(),
        };
        let m = c.message();
        let mut d = c.clone();
        d.signature = "bb".into();
        assert_eq!(d.message(), m);
        d.last_seq = 10;
        assert_ne!(d.message(), m);
        let mut e = c.clone();
        e.kind = CheckpointKind::Prune;
        assert_ne!(e.message(), m);
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["lastSeq"], 9);
        assert_eq!(j["kind"], "interval");
    }
}
