//! Identities and tokens: argon2 password hashes, and the short-lived signed JWTs the token endpoint issues
//! and the data plane checks on every request.

pub mod keyring;
pub mod link;
pub mod password;
pub mod sealed;
pub mod token;

pub use keyring::{Key, Keyring};
pub use sealed::{SealError, SecretBox};

pub use link::{LinkClaims, LinkError, LinkSigner};
pub use token::{Claims, Subject, TokenError, TokenIssuer};
