//! The exporting server's signature on an archive's contents list: Ed25519 (RFC 8032, via `ring`), so that an
//! importer configured with the exporter's public key knows the archive came from that server, whatever storage
//! or media carried it. Public keys are written `ed25519:<base64 of the 32 bytes>`, as `moat transfer-key show`
//! prints them and `trusted_keys` / `trustedExporterKeys` take them.

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use std::fmt;

const PREFIX: &str = "ed25519:";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An Ed25519 public key of an exporting server.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TransferPublicKey([u8; 32]);

impl TransferPublicKey {
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Display for TransferPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", B64.encode(self.0))
    }
}

impl fmt::Debug for TransferPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferPublicKey({self})")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a transfer public key: expected ed25519:<base64 of 32 bytes>, as `moat transfer-key show` prints it on the exporting server")]
pub struct BadPublicKey(pub String);

impl std::str::FromStr for TransferPublicKey {
    type Err = BadPublicKey;

    fn from_str(s: &str) -> Result<Self, BadPublicKey> {
        let bad = || BadPublicKey(s.to_string());
        let raw = s.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
        let bytes = B64.decode(raw).map_err(|_| bad())?;
        Ok(TransferPublicKey(bytes.try_into().map_err(|_| bad())?))
    }
}

impl serde::Serialize for TransferPublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TransferPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The server's signing key: the current key file of purpose `transfer` (its 32 bytes are the Ed25519 seed).
pub struct TransferSigner {
    kid: String,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for TransferSigner {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferSigner")
            .field("kid", &self.kid)
            .finish()
    }
}

impl TransferSigner {
    /// The signer whose seed is `seed` (32 bytes).
    pub fn from_seed(kid: &str, seed: &[u8]) -> Result<TransferSigner, String> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| format!("transfer key {kid} is not a 32-byte Ed25519 seed"))?;
        Ok(TransferSigner {
            kid: kid.to_string(),
            pair,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> TransferPublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        TransferPublicKey(k)
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Which archives an import accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustPolicy {
    /// Unsigned archives, and signed ones whose signature is valid for the key they name.
    AnySignatureOrNone,
    /// Only archives signed by one of these keys.
    Require(Vec<TransferPublicKey>),
}

impl TrustPolicy {
    /// The policy of an import: the pipeline's `trustedExporterKeys` when it names any, else the server's
    /// `[transfer] trusted_keys`; with keys or with `require_signature`, a signature by one of them is required.
    pub fn from_config(
        pipeline_keys: &[TransferPublicKey],
        server_keys: &[TransferPublicKey],
        require_signature: bool,
    ) -> TrustPolicy {
        let keys = if pipeline_keys.is_empty() {
            server_keys
        } else {
            pipeline_keys
        };
        if keys.is_empty() && !require_signature {
            TrustPolicy::AnySignatureOrNone
        } else {
            TrustPolicy::Require(keys.to_vec())
        }
    }
}

pub(crate) fn encode_signature(sig: &[u8]) -> String {
    format!("{}\n", B64.encode(sig))
}

pub(crate) fn decode_signature(text: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(text).ok()?.trim();
    B64.decode(s).ok().filter(|s| s.len() == 64)
}

/// Length of [`encode_signature`]'s output: 64 bytes in base64 and a newline.
pub(crate) const SIGNATURE_FILE_LEN: u64 = 89;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_parse_and_verify() {
        let s = TransferSigner::from_seed("k1", &[7u8; 32]).unwrap();
        let text = s.public_key().to_string();
        assert!(text.starts_with("ed25519:"));
        let parsed: TransferPublicKey = text.parse().unwrap();
        assert_eq!(parsed, s.public_key());
        let sig = s.sign(b"hello");
        assert!(parsed.verify(b"hello", &sig));
        assert!(!parsed.verify(b"hellO", &sig));
        assert_eq!(encode_signature(&sig).len() as u64, SIGNATURE_FILE_LEN);
        assert_eq!(
            decode_signature(encode_signature(&sig).as_bytes()).unwrap(),
            sig
        );
        assert!("ed25519:abc".parse::<TransferPublicKey>().is_err());
        assert!("rsa:AAAA".parse::<TransferPublicKey>().is_err());
    }

    #[test]
    fn policy_from_config() {
        let k = TransferSigner::from_seed("k", &[1u8; 32])
            .unwrap()
            .public_key();
        assert_eq!(
            TrustPolicy::from_config(&[], &[], false),
            TrustPolicy::AnySignatureOrNone
        );
        assert_eq!(
            TrustPolicy::from_config(&[], &[], true),
            TrustPolicy::Require(vec![])
        );
        assert_eq!(
            TrustPolicy::from_config(&[], std::slice::from_ref(&k), false),
            TrustPolicy::Require(vec![k.clone()])
        );
    }
}
