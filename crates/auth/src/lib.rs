//! Identities and tokens: argon2 password hashes, and the short-lived signed JWTs the token endpoint issues
//! and the data plane checks on every request.

pub mod link;
pub mod password;
pub mod token;

pub use link::{LinkClaims, LinkError, LinkSigner};
pub use token::{Claims, TokenError, TokenIssuer};
