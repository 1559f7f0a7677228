//! Registry access tokens: JWTs in the shape ACR issues (`iss`, `aud` = login server, `rid`, `access`), signed
//! with a server key. Only this server verifies them, so a symmetric key is enough and keeps checks cheap.
//! Registry tokens and Entra-style tokens have keys of their own; each token names its key in the header's
//! `kid`, so a rotated key keeps verifying the tokens it signed until they expire.

use crate::keyring::Keyring;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use moat_model::access::{Access, AccessGrant};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "moat";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub jti: String,
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub version: String,
    /// The registry's id: a token for one registry is useless on another, even one re-created with its name.
    pub rid: String,
    pub grant_type: String,
    #[serde(default)]
    pub access: Vec<AccessGrant>,
    /// For a service principal, the credential generation it signed in under (see [`Subject`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgen: Option<i64>,
}

/// Who a token is issued to. A service principal's tokens carry the credential generation it signed in under:
/// the server refuses them once the principal is deleted or its credentials are reset (the generation moves on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub generation: Option<i64>,
}

impl Subject {
    /// An identity without credential generations: the server's admin, a registry's admin user, anonymous.
    pub fn named(name: &str) -> Subject {
        Subject {
            name: name.into(),
            generation: None,
        }
    }

    pub fn principal(app_id: &str, generation: i64) -> Subject {
        Subject {
            name: app_id.into(),
            generation: Some(generation),
        }
    }
}

impl Claims {
    pub fn subject(&self) -> Subject {
        Subject {
            name: self.sub.clone(),
            generation: self.pgen,
        }
    }

    pub fn access(&self) -> Access {
        Access {
            any_repository: Default::default(),
            grants: self.access.clone(),
        }
    }
}

/// A token from Moat's AAD-shaped token service, for the management plane and `/oauth2/exchange`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AadClaims {
    pub iss: String,
    /// The resource the token is for (the scope without `/.default`).
    pub aud: String,
    pub tid: String,
    pub appid: String,
    pub oid: String,
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// The principal's credential generation when the token was issued (absent in tokens of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgen: Option<i64>,
}

impl AadClaims {
    pub fn subject(&self) -> Subject {
        Subject::principal(&self.appid, self.pgen.unwrap_or(0))
    }
}

pub const AAD_ISSUER: &str = "moat-aad";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is invalid or expired: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token is not valid yet (nbf is {0} s ahead of this server's clock)")]
    NotYetValid(u64),
}

/// How far ahead of this server's clock a token's `nbf` may lie: the clocks of the nodes that issue and verify
/// tokens may differ a little, but a token made to become valid later was not made by this server.
pub const NBF_SKEW_SECS: u64 = 60;

/// RFC 7519 §4.1.5 with [`NBF_SKEW_SECS`] of skew (jsonwebtoken does not check `nbf` unless asked, and then
/// with the expiry's leeway).
fn check_not_before(nbf: u64, now: u64) -> Result<(), TokenError> {
    if nbf > now + NBF_SKEW_SECS {
        return Err(TokenError::NotYetValid(nbf - now));
    }
    Ok(())
}

#[derive(Clone)]
pub struct TokenIssuer {
    /// Signs registry access and refresh tokens.
    registry: Keyring,
    /// Signs the management plane's Entra-style tokens.
    entra: Keyring,
}

/// Signs with the ring's current key and names it in the header.
fn sign_with<T: Serialize>(ring: &Keyring, claims: &T) -> String {
    let key = ring.current();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    encode(&header, claims, &EncodingKey::from_secret(&key.secret))
        .expect("HS256 signing cannot fail")
}

/// Verifies with the key the header names; a token naming no key, or one this ring does not hold, is refused.
fn decode_with<T: serde::de::DeserializeOwned>(
    ring: &Keyring,
    token: &str,
    v: &Validation,
) -> Result<T, TokenError> {
    let kid = jsonwebtoken::decode_header(token)?.kid;
    let key = kid
        .and_then(|kid| ring.get(&kid))
        .ok_or(jsonwebtoken::errors::ErrorKind::InvalidSignature)
        .map_err(jsonwebtoken::errors::Error::from)?;
    Ok(decode::<T>(token, &DecodingKey::from_secret(&key.secret), v)?.claims)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    /// One secret for both kinds of token (tests and tools); the server uses `with_keys`.
    pub fn new(secret: &[u8]) -> TokenIssuer {
        let ring = Keyring::single("k0", secret);
        TokenIssuer::with_keys(ring.clone(), ring)
    }

    pub fn with_keys(registry: Keyring, entra: Keyring) -> TokenIssuer {
        TokenIssuer { registry, entra }
    }

    /// Issues an access token for `subject` on the registry (`registry_id`, `login_server`).
    pub fn issue(
        &self,
        subject: &Subject,
        login_server: &str,
        registry_id: &str,
        access: Access,
        ttl_secs: u64,
    ) -> String {
        self.sign(
            subject,
            login_server,
            registry_id,
            "access_token",
            access,
            ttl_secs,
        )
    }

    /// Issues a token of another grant type (a refresh token carries no access of its own).
    pub fn issue_with_grant(
        &self,
        subject: &Subject,
        login_server: &str,
        registry_id: &str,
        grant: &str,
        ttl_secs: u64,
    ) -> String {
        self.sign(
            subject,
            login_server,
            registry_id,
            grant,
            Access::default(),
            ttl_secs,
        )
    }

    fn sign(
        &self,
        subject: &Subject,
        login_server: &str,
        registry_id: &str,
        grant: &str,
        access: Access,
        ttl_secs: u64,
    ) -> String {
        let iat = now();
        let claims = Claims {
            jti: uuid::Uuid::new_v4().to_string(),
            sub: subject.name.clone(),
            iss: ISSUER.to_string(),
            aud: login_server.to_string(),
            iat,
            nbf: iat.saturating_sub(5),
            exp: iat + ttl_secs,
            version: "1.0".into(),
            rid: registry_id.to_string(),
            grant_type: grant.into(),
            access: access.grants,
            pgen: subject.generation,
        };
        sign_with(&self.registry, &claims)
    }

    /// Verifies signature, expiry, issuer and that the token was issued for this registry.
    pub fn verify(
        &self,
        token: &str,
        login_server: &str,
        registry_id: &str,
    ) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[login_server]);
        v.set_issuer(&[ISSUER]);
        v.leeway = 5;
        let claims: Claims = decode_with(&self.registry, token, &v)?;
        check_not_before(claims.nbf, now())?;
        if claims.rid != registry_id {
            return Err(TokenError::Invalid(
                jsonwebtoken::errors::ErrorKind::InvalidAudience.into(),
            ));
        }
        Ok(claims)
    }

    /// Issues an AAD-shaped access token for a service principal, under its credential `generation`.
    pub fn issue_aad(
        &self,
        tenant: &str,
        app_id: &str,
        generation: i64,
        audience: &str,
        ttl_secs: u64,
    ) -> (String, u64) {
        let iat = now();
        let claims = AadClaims {
            iss: AAD_ISSUER.into(),
            aud: audience.into(),
            tid: tenant.into(),
            appid: app_id.into(),
            oid: app_id.into(),
            sub: app_id.into(),
            iat,
            nbf: iat.saturating_sub(5),
            exp: iat + ttl_secs,
            pgen: Some(generation),
        };
        (sign_with(&self.entra, &claims), ttl_secs)
    }

    /// Verifies an AAD-shaped token for one of `audiences` (compared without trailing slashes).
    pub fn verify_aad(&self, token: &str, audiences: &[&str]) -> Result<AadClaims, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_aud = false;
        v.set_issuer(&[AAD_ISSUER]);
        v.leeway = 5;
        let claims: AadClaims = decode_with(&self.entra, token, &v)?;
        check_not_before(claims.nbf, now())?;
        let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
        if !audiences.iter().any(|a| norm(a) == norm(&claims.aud)) {
            return Err(TokenError::Invalid(
                jsonwebtoken::errors::ErrorKind::InvalidAudience.into(),
            ));
        }
        Ok(claims)
    }

    /// Verifies an access token: a refresh token presented as a bearer token grants nothing.
    pub fn verify_access(
        &self,
        token: &str,
        login_server: &str,
        registry_id: &str,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify(token, login_server, registry_id)?;
        if claims.grant_type != "access_token" {
            return Err(TokenError::Invalid(
                jsonwebtoken::errors::ErrorKind::InvalidAudience.into(),
            ));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_model::access::ResourceScope;
    use moat_model::Action;

    #[test]
    fn issue_verify_and_refuse_others() {
        let issuer = TokenIssuer::new(b"secret-secret-secret-secret-1234");
        let access = Access {
            any_repository: Default::default(),
            grants: vec![AccessGrant {
                resource: ResourceScope::Repository("a/b".parse().unwrap()),
                actions: [Action::Pull].into(),
            }],
        };
        let (aad, _) = issuer.issue_aad("tenant", "app", 0, "https://management.azure.com", 60);
        assert_eq!(
            issuer
                .verify_aad(&aad, &["https://management.azure.com/"])
                .unwrap()
                .appid,
            "app"
        );
        assert!(issuer
            .verify_aad(&aad, &["https://containerregistry.azure.net"])
            .is_err());
        assert!(
            issuer.verify(&aad, "reg.example", "rid1").is_err(),
            "an AAD token is not a registry token"
        );
        let t = issuer.issue(
            &Subject::named("admin"),
            "reg.example",
            "rid1",
            access.clone(),
            300,
        );
        let c = issuer.verify(&t, "reg.example", "rid1").unwrap();
        assert_eq!(c.access(), access);
        assert!(
            issuer.verify(&t, "other.example", "rid1").is_err(),
            "wrong audience"
        );
        assert!(
            issuer.verify(&t, "reg.example", "rid2").is_err(),
            "wrong registry id"
        );
        assert!(TokenIssuer::new(b"another-secret-another-secret-00")
            .verify(&t, "reg.example", "rid1")
            .is_err());
        let mut tampered = t.clone();
        let separate = TokenIssuer::with_keys(
            Keyring::single("r1", b"registry-key-registry-key-000000"),
            Keyring::single("e1", b"entra-key-entra-key-entra-key-00"),
        );
        let (aad, _) = separate.issue_aad("tenant", "app", 0, "https://management.azure.com", 60);
        assert!(separate.verify(&aad, "reg.example", "rid1").is_err());
        tampered.insert(tampered.len() - 3, 'x');
        assert!(issuer.verify(&tampered, "reg.example", "rid1").is_err());
    }

    #[test]
    fn tokens_carry_the_principals_credential_generation() {
        let issuer = TokenIssuer::new(b"secret-secret-secret-secret-1234");
        let sp = Subject::principal("6f0c1d2e-0000-4000-8000-000000000001", 3);
        let t = issuer.issue(&sp, "reg.example", "rid1", Access::default(), 300);
        assert_eq!(
            issuer.verify(&t, "reg.example", "rid1").unwrap().subject(),
            sp
        );
        let r = issuer.issue_with_grant(&sp, "reg.example", "rid1", "refresh", 300);
        assert_eq!(
            issuer.verify(&r, "reg.example", "rid1").unwrap().subject(),
            sp
        );
        let admin = issuer.issue(
            &Subject::named("admin"),
            "reg.example",
            "rid1",
            Access::default(),
            300,
        );
        let c = issuer.verify(&admin, "reg.example", "rid1").unwrap();
        assert_eq!((c.sub.as_str(), c.pgen), ("admin", None));
        let (aad, _) = issuer.issue_aad("t", &sp.name, 3, "https://management.azure.com", 60);
        let c = issuer
            .verify_aad(&aad, &["https://management.azure.com"])
            .unwrap();
        assert_eq!(c.subject(), sp);
    }

    #[test]
    fn a_token_whose_nbf_lies_ahead_is_refused() {
        let issuer = TokenIssuer::new(b"secret-secret-secret-secret-1234");
        let now = now();
        let registry = |nbf: u64| Claims {
            jti: "j".into(),
            sub: "admin".into(),
            iss: ISSUER.into(),
            aud: "reg.example".into(),
            iat: now,
            nbf,
            exp: now + 3600,
            version: "1.0".into(),
            rid: "rid1".into(),
            grant_type: "access_token".into(),
            access: vec![],
            pgen: None,
        };
        let entra = |nbf: u64| AadClaims {
            iss: AAD_ISSUER.into(),
            aud: "https://management.azure.com".into(),
            tid: "t".into(),
            appid: "app".into(),
            oid: "app".into(),
            sub: "app".into(),
            iat: now,
            nbf,
            exp: now + 3600,
            pgen: None,
        };
        let aud = ["https://management.azure.com"];
        for ahead in [NBF_SKEW_SECS + 5, 3600, 86_400 * 365] {
            let t = sign_with(&issuer.registry, &registry(now + ahead));
            let err = issuer.verify_access(&t, "reg.example", "rid1").unwrap_err();
            assert!(matches!(err, TokenError::NotYetValid(_)), "{ahead}: {err}");
            let t = sign_with(&issuer.entra, &entra(now + ahead));
            let err = issuer.verify_aad(&t, &aud).unwrap_err();
            assert!(matches!(err, TokenError::NotYetValid(_)), "{ahead}: {err}");
        }
        // Within the skew, and in the past, a token is valid.
        for nbf in [now + NBF_SKEW_SECS - 5, now, now - 3600] {
            let t = sign_with(&issuer.registry, &registry(nbf));
            assert!(issuer.verify_access(&t, "reg.example", "rid1").is_ok());
            let t = sign_with(&issuer.entra, &entra(nbf));
            assert!(issuer.verify_aad(&t, &aud).is_ok());
        }
        // A token without nbf does not decode.
        let t = encode(
            &{
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some(issuer.registry.current().kid.clone());
                h
            },
            &serde_json::json!({"sub": "admin", "iss": ISSUER, "aud": "reg.example", "exp": now + 60,
                "iat": now, "jti": "j", "version": "1.0", "rid": "rid1", "grant_type": "access_token"}),
            &EncodingKey::from_secret(&issuer.registry.current().secret),
        )
        .unwrap();
        assert!(issuer.verify_access(&t, "reg.example", "rid1").is_err());
    }
}
