//! Secrets at rest: values the server must give back in clear (registry admin passwords; later webhook headers
//! and storage credentials) are stored sealed with AES-256-GCM under the secrets key. The sealed text names the
//! key that sealed it, so a rotation can re-seal row by row, and it is bound to its place (`context`, e.g. the
//! registry and slot), so a value copied into another row does not open there.

use crate::keyring::Keyring;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Every sealed value starts with this; anything else in a secret column is a plaintext row from before sealing.
pub const SEALED_PREFIX: &str = "moat-sealed:v1:";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the secret was sealed with key '{0}', which this server does not hold (restore its key file under keys/secrets)")]
    UnknownKey(String),
    #[error("the secret does not open: it was altered, moved to another row, or the key file was replaced")]
    Corrupt,
    #[error("the secrets key is not a 256-bit key")]
    BadKey,
}

#[derive(Clone)]
pub struct SecretBox {
    keys: Keyring,
}

pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// The key id a sealed value names, if it is sealed.
pub fn sealed_kid(value: &str) -> Option<&str> {
    value.strip_prefix(SEALED_PREFIX)?.split(':').next()
}

fn aead_key(secret: &[u8]) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, secret)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::BadKey)
}

impl SecretBox {
    pub fn new(keys: Keyring) -> SecretBox {
        SecretBox { keys }
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Seals `plaintext` for `context` under the current key, with a fresh random nonce.
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, SealError> {
        let key = self.keys.current();
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::BadKey)?;
        let mut buf = plaintext.as_bytes().to_vec();
        aead_key(&key.secret)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Corrupt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            key.kid,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        ))
    }

    /// Opens a sealed value for `context`. A plaintext value (a row written before sealing existed) is returned
    /// as it is: the server seals those rows at start, and `needs_sealing` tells which they are.
    pub fn open(&self, value: &str, context: &str) -> Result<String, SealError> {
        let Some(rest) = value.strip_prefix(SEALED_PREFIX) else {
            return Ok(value.to_string());
        };
        let (kid, data) = rest.split_once(':').ok_or(SealError::Corrupt)?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| SealError::UnknownKey(kid.to_string()))?;
        let mut data = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(data)
            .map_err(|_| SealError::Corrupt)?;
        if data.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let mut ciphertext = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| SealError::Corrupt)?;
        let plain = aead_key(&key.secret)?
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut ciphertext)
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Corrupt)
    }

    /// Whether a stored value should be (re)sealed: it is plaintext, or sealed under a key that is not current.
    pub fn needs_sealing(&self, value: &str) -> bool {
        sealed_kid(value) != Some(self.keys.current().kid.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Key;

    #[test]
    fn seals_opens_and_refuses_other_contexts_keys_and_tampering() {
        let ring = Keyring::single("0001", &[7u8; 32]);
        let sb = SecretBox::new(ring.clone());
        let sealed = sb.seal("hunter2", "registry/r1/password").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("hunter2"));
        assert_eq!(sealed_kid(&sealed), Some("0001"));
        assert_eq!(sb.open(&sealed, "registry/r1/password").unwrap(), "hunter2");
        assert_eq!(
            sb.open(&sealed, "registry/r2/password"),
            Err(SealError::Corrupt)
        );
        // One character of the ciphertext changed (never the last: its low bits may be padding).
        let mut tampered: Vec<char> = sealed.chars().collect();
        let i = tampered.len() - 8;
        tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert!(sb.open(&tampered, "registry/r1/password").is_err());
        assert_ne!(sealed, sb.seal("hunter2", "registry/r1/password").unwrap());
        assert!(!sb.needs_sealing(&sealed));
        assert!(sb.needs_sealing("plain"));
        assert_eq!(sb.open("plain", "x").unwrap(), "plain");
        // After a rotation the old value still opens, and is due for re-sealing.
        ring.replace(vec![
            Key::new("0001", &[7u8; 32]),
            Key::new("0002", &[9u8; 32]),
        ])
        .unwrap();
        assert_eq!(sb.open(&sealed, "registry/r1/password").unwrap(), "hunter2");
        assert!(sb.needs_sealing(&sealed));
        ring.replace(vec![Key::new("0002", &[9u8; 32])]).unwrap();
        assert_eq!(
            sb.open(&sealed, "registry/r1/password"),
            Err(SealError::UnknownKey("0001".into()))
        );
    }
}
