//! One purpose's signing or encryption keys: the newest key signs (or seals), every key still held verifies
//! (or opens). Holding the retired keys for a while after a rotation is what lets tokens issued before it stay
//! valid until they expire. The set is shared and replaceable, so the server reloads it without a restart.

use std::sync::{Arc, RwLock};

/// A key and the id that names it in what it signed (the JWT `kid`, the prefix of a sealed secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub kid: String,
    pub secret: Arc<[u8]>,
}

impl std::fmt::Debug for Key {
    // Never print key material, not even in a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).finish()
    }
}

impl Key {
    pub fn new(kid: impl Into<String>, secret: &[u8]) -> Key {
        Key {
            kid: kid.into(),
            secret: secret.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a keyring needs at least one key")]
pub struct EmptyKeyring;

/// Cheap to clone; clones share the set, so `replace` is seen by every holder.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<RwLock<Arc<Vec<Key>>>>,
}

impl Keyring {
    /// `keys` in any order: the one with the greatest `kid` is current (key ids sort by creation time).
    pub fn new(keys: Vec<Key>) -> Result<Keyring, EmptyKeyring> {
        Ok(Keyring {
            keys: Arc::new(RwLock::new(Arc::new(sorted(keys)?))),
        })
    }

    /// A ring of one key, for tests and tools.
    pub fn single(kid: &str, secret: &[u8]) -> Keyring {
        Keyring::new(vec![Key::new(kid, secret)]).expect("one key")
    }

    pub fn replace(&self, keys: Vec<Key>) -> Result<(), EmptyKeyring> {
        let keys = Arc::new(sorted(keys)?);
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    fn snapshot(&self) -> Arc<Vec<Key>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key that signs and seals now.
    pub fn current(&self) -> Key {
        self.snapshot().last().expect("never empty").clone()
    }

    pub fn get(&self, kid: &str) -> Option<Key> {
        self.snapshot().iter().find(|k| k.kid == kid).cloned()
    }

    /// Every key held, oldest first.
    pub fn all(&self) -> Arc<Vec<Key>> {
        self.snapshot()
    }
}

fn sorted(mut keys: Vec<Key>) -> Result<Vec<Key>, EmptyKeyring> {
    if keys.is_empty() {
        return Err(EmptyKeyring);
    }
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greatest_kid_is_current_and_replace_is_shared() {
        let ring = Keyring::new(vec![Key::new("0002", b"b"), Key::new("0001", b"a")]).unwrap();
        assert_eq!(ring.current().kid, "0002");
        assert_eq!(&*ring.get("0001").unwrap().secret, b"a");
        let clone = ring.clone();
        ring.replace(vec![Key::new("0003", b"c")]).unwrap();
        assert_eq!(clone.current().kid, "0003");
        assert!(clone.get("0001").is_none());
        assert!(ring.replace(vec![]).is_err());
        assert_eq!(format!("{:?}", ring.current()), "Key { kid: \"0003\" }");
    }

    #[test]
    fn a_rotation_keeps_issued_tokens_valid_and_signs_new_ones_with_the_new_kid() {
        use crate::token::TokenIssuer;
        use crate::{LinkClaims, LinkSigner};
        let ring = Keyring::single("0001", b"first-key-first-key-first-key-00");
        let entra = Keyring::single("e1", b"entra-key-entra-key-entra-key-00");
        let issuer = TokenIssuer::with_keys(ring.clone(), entra);
        let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        let old = issuer.issue(
            &crate::token::Subject::named("admin"),
            "reg",
            "rid",
            Default::default(),
            300,
        );
        assert_eq!(kid(&old), "0001");
        let first = ring.current();
        ring.replace(vec![
            first.clone(),
            Key::new("0002", b"second-key-second-key-second-k00"),
        ])
        .unwrap();
        let new = issuer.issue(
            &crate::token::Subject::named("admin"),
            "reg",
            "rid",
            Default::default(),
            300,
        );
        assert_eq!(kid(&new), "0002");
        assert!(issuer.verify(&old, "reg", "rid").is_ok(), "overlap window");
        assert!(issuer.verify(&new, "reg", "rid").is_ok());
        ring.replace(vec![ring.current()]).unwrap();
        assert!(issuer.verify(&old, "reg", "rid").is_err(), "pruned key");

        let links = Keyring::single("0001", b"link");
        let signer = LinkSigner::with_keys(links.clone());
        let c = LinkClaims {
            registry_id: "r",
            repository: "a",
            digest: "sha256:00",
            expires: 10,
            client_ip: "127.0.0.1",
            endpoint: "public",
        };
        let sig = signer.sign(&c);
        links
            .replace(vec![links.current(), Key::new("0002", b"link2")])
            .unwrap();
        assert_eq!(signer.verify(&c, &sig, 1, 60), Ok(()));
        assert_ne!(signer.sign(&c), sig);
    }
}
