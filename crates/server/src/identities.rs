//! Who may use a registry's data plane with a password, and what they may do there: the server's `admin`
//! identity (everything), the registry's own admin user when `adminUserEnabled` (everything on that registry),
//! and service principals by their role assignments (AcrPull, AcrPush, AcrDelete, Reader, Contributor, Owner).

use crate::logins::{Secret, Throttled};
use crate::oci::error::{Code, OciError, OciResult};
use crate::state::AppState;
use moat_auth::Subject;
use moat_model::rbac::{Role, RoleScope};
use moat_model::{Action, Registry};
use moat_store::{MetadataStore, StoreError};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The server-wide administrator created at first start.
pub const ADMIN: &str = "admin";

/// Compares without an early exit, so timing does not reveal how much of a password matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a username and password against the identities that may use `registry`. `None` when they match none;
/// `429 TOOMANYREQUESTS` with `Retry-After` when the client address or the identity has failed too often.
pub async fn authenticate(
    state: &AppState,
    registry: &Registry,
    client: IpAddr,
    user: &str,
    password: &str,
) -> OciResult<Option<Subject>> {
    let (secret, identity) = if let Some(hash) = state.meta.identity_password_hash(user).await? {
        (Stored::Hash(hash), Subject::named(user))
    } else if user.eq_ignore_ascii_case(&registry.name) {
        let ok = registry.settings.admin_user_enabled
            && crate::secrets::admin_credentials(state, &registry.id)
                .await?
                .iter()
                .any(|(_, v)| constant_time_eq(v.as_bytes(), password.as_bytes()));
        (Stored::Compared(ok), Subject::named(&registry.name))
    } else if let Some(sp) = state.meta.service_principal(user).await? {
        let subject = Subject::principal(&sp.app_id, sp.generation);
        (Stored::Hash(sp.secret_hash), subject)
    } else {
        (Stored::Unknown, Subject::named(""))
    };
    let secret = match &secret {
        Stored::Hash(stored) => Secret::Hashed { password, stored },
        Stored::Compared(ok) => Secret::Compared(*ok),
        Stored::Unknown => Secret::Unknown,
    };
    match state.logins.check(client, user, secret).await {
        Ok(true) => Ok(Some(identity)),
        Ok(false) => Ok(None),
        Err(t) => Err(throttled(&t)),
    }
}

/// Whether a token's subject may still use it: a service principal's token only while the principal exists with
/// the credential generation the token names (a reset moves it on, a delete removes it), so the tokens of a reset
/// or deleted principal are refused on their next use. One indexed read per use of such a token; the server's
/// admin, registry admin users and anonymous tokens need none.
pub async fn is_current(meta: &MetadataStore, subject: &Subject) -> Result<bool, StoreError> {
    if subject.generation.is_none() && !looks_like_app_id(&subject.name) {
        return Ok(true);
    }
    Ok(meta
        .principal_generation(&subject.name)
        .await?
        // A token from before generations were recorded names none: it is valid until the first reset.
        .is_some_and(|g| g == subject.generation.unwrap_or(0)))
}

/// App ids are hyphenated GUIDs, which no other identity's name can be (registry names are letters and digits).
fn looks_like_app_id(name: &str) -> bool {
    name.len() == 36 && name.contains('-') && uuid::Uuid::parse_str(name).is_ok()
}

/// What the server holds for a user name.
enum Stored {
    Hash(String),
    Compared(bool),
    Unknown,
}

/// The OCI answer to a throttled login.
pub fn throttled(t: &Throttled) -> OciError {
    OciError::new(Code::TooManyRequests, t.message()).with_header(
        axum::http::header::RETRY_AFTER,
        t.retry_after_secs().to_string(),
    )
}

/// What an authenticated identity may do on every repository of `registry`.
pub async fn permissions(
    state: &AppState,
    registry: &Registry,
    identity: &str,
) -> OciResult<BTreeSet<Action>> {
    if identity == ADMIN && state.meta.identity_password_hash(ADMIN).await?.is_some() {
        return Ok(Action::ALL.into_iter().collect());
    }
    if identity == registry.name {
        return Ok(if registry.settings.admin_user_enabled {
            Action::ALL.into_iter().collect()
        } else {
            BTreeSet::new()
        });
    }
    let ids = crate::listener::cloud_ids(&state.meta)
        .await
        .map_err(crate::oci::error::OciError::internal)?;
    let mut may = BTreeSet::new();
    for row in state.meta.role_assignments(identity).await? {
        let (Some(role), Some(scope)) = (
            Role::parse(&row.role),
            RoleScope::parse(&row.scope, &ids.subscription_id),
        ) else {
            continue;
        };
        if scope.covers(&registry.resource_group, &registry.name) {
            may.extend(role.data_actions());
        }
    }
    Ok(may)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_guids_name_service_principals() {
        assert!(super::looks_like_app_id(
            "6f0c1d2e-0000-4000-8000-000000000001"
        ));
        for other in [
            "admin",
            "acr_anon_pull",
            "myregistry",
            "6f0c1d2e000040008000000000000001",
        ] {
            assert!(!super::looks_like_app_id(other), "{other}");
        }
    }

    #[test]
    fn constant_time_compare() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
    }
}
