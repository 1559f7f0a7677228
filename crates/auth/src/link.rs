//! Data-endpoint links: a blob download URL that authenticates itself (clients drop `Authorization` on a
//! cross-host redirect) and is bound to the registry, repository, digest, expiry and the caller's origin. The
//! origin is not in the URL: the data endpoint recomputes the MAC from the origin it sees, so a link replayed
//! from another address or through another endpoint does not verify.

use crate::keyring::Keyring;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What a link grants, and to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkClaims<'a> {
    pub registry_id: &'a str,
    pub repository: &'a str,
    pub digest: &'a str,
    /// Unix seconds after which the link is refused.
    pub expires: i64,
    pub client_ip: &'a str,
    /// The listener the caller came through (`public`, `privateEndpoint/<name>`).
    pub endpoint: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the download link has expired: request the blob from the login server again")]
    Expired,
    #[error("the download link's signature does not match: it was altered, or is used from another address or endpoint than the one it was issued to")]
    BadSignature,
    #[error("the download link expires later than any link this server issues: request the blob from the login server again")]
    NotYetValid,
}

/// Links carry no key id (the URL stays short); a link verifies under any key the ring holds, and a ring holds
/// at most a few keys (the current one and those retired within the overlap window).
#[derive(Clone)]
pub struct LinkSigner {
    keys: Keyring,
}

impl LinkSigner {
    /// A signer keyed from one secret (tests and tools); the server uses `with_keys` and its data-links key.
    pub fn new(secret: &[u8]) -> LinkSigner {
        let mut h = Sha256::new();
        h.update(b"moat data-endpoint links v1\0");
        h.update(secret);
        LinkSigner::with_keys(Keyring::single("k0", &h.finalize()))
    }

    pub fn with_keys(keys: Keyring) -> LinkSigner {
        LinkSigner { keys }
    }

    fn mac(key: &[u8], c: &LinkClaims) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(key).expect("any key length");
        for part in [
            c.registry_id,
            c.repository,
            c.digest,
            &c.expires.to_string(),
            c.client_ip,
            c.endpoint,
        ] {
            // Length-prefixed, so that no two claim sets share an encoding.
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part.as_bytes());
        }
        m
    }

    pub fn sign(&self, c: &LinkClaims) -> String {
        let key = self.keys.current();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Self::mac(&key.secret, c).finalize().into_bytes())
    }

    /// Checks a link's signature (in constant time) and expiry against the claims rebuilt from the request. A
    /// link is issued `ttl` seconds before it expires, so one that expires later than `now + ttl` (plus the
    /// tokens' clock skew) is not valid yet: that is a link's `nbf`.
    pub fn verify(
        &self,
        c: &LinkClaims,
        signature: &str,
        now: i64,
        ttl: i64,
    ) -> Result<(), LinkError> {
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| LinkError::BadSignature)?;
        // `verify_slice` compares in constant time; trying each held key reveals only how many there are.
        if !self
            .keys
            .all()
            .iter()
            .any(|k| Self::mac(&k.secret, c).verify_slice(&sig).is_ok())
        {
            return Err(LinkError::BadSignature);
        }
        if now > c.expires {
            return Err(LinkError::Expired);
        }
        if c.expires - ttl > now + crate::token::NBF_SKEW_SECS as i64 {
            return Err(LinkError::NotYetValid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims<'a>(ip: &'a str, expires: i64) -> LinkClaims<'a> {
        LinkClaims {
            registry_id: "r1",
            repository: "app/web",
            digest: "sha256:00",
            expires,
            client_ip: ip,
            endpoint: "public",
        }
    }

    #[test]
    fn a_link_verifies_only_for_its_claims_and_before_expiry() {
        let s = LinkSigner::new(b"secret");
        let sig = s.sign(&claims("203.0.113.7", 100));
        assert_eq!(
            s.verify(&claims("203.0.113.7", 100), &sig, 50, 1000),
            Ok(())
        );
        assert_eq!(
            s.verify(&claims("203.0.113.8", 100), &sig, 50, 1000),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(&claims("203.0.113.7", 101), &sig, 50, 1000),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(&claims("203.0.113.7", 100), &sig, 101, 1000),
            Err(LinkError::Expired)
        );
        assert_eq!(
            s.verify(&claims("203.0.113.7", 100), "not base64!", 50, 1000),
            Err(LinkError::BadSignature)
        );
        let other = LinkSigner::new(b"other secret");
        assert_eq!(
            other.verify(&claims("203.0.113.7", 100), &sig, 50, 1000),
            Err(LinkError::BadSignature)
        );
        // Issued with a TTL longer than the server's: not valid yet.
        let far = s.sign(&claims("203.0.113.7", 5000));
        assert_eq!(
            s.verify(&claims("203.0.113.7", 5000), &far, 50, 1000),
            Err(LinkError::NotYetValid)
        );
        assert_eq!(
            s.verify(&claims("203.0.113.7", 5000), &far, 4000, 1000),
            Ok(())
        );
        let mut moved = claims("203.0.113.7", 100);
        moved.endpoint = "privateEndpoint/pe1";
        assert_eq!(
            s.verify(&moved, &sig, 50, 1000),
            Err(LinkError::BadSignature)
        );
    }
}
