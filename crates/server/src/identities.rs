//! Who may use a registry's data plane with a password, and what they may do there: the server's `admin`
//! identity (everything), the registry's own admin user when `adminUserEnabled` (everything on that registry),
//! and service principals by their role assignments (AcrPull, AcrPush, AcrDelete, Reader, Contributor, Owner).

use crate::logins::{Secret, Throttled};
use crate::oci::error::{Code, OciError, OciResult};
use crate::state::AppState;
use moat_model::rbac::{Role, RoleScope};
use moat_model::{Action, Registry};
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
) -> OciResult<Option<String>> {
    let (secret, identity) = if let Some(hash) = state.meta.identity_password_hash(user).await? {
        (Stored::Hash(hash), user.to_string())
    } else if user.eq_ignore_ascii_case(&registry.name) {
        let ok = registry.settings.admin_user_enabled
            && crate::secrets::admin_credentials(state, &registry.id)
                .await?
                .iter()
                .any(|(_, v)| constant_time_eq(v.as_bytes(), password.as_bytes()));
        (Stored::Compared(ok), registry.name.clone())
    } else if let Some(sp) = state.meta.service_principal(user).await? {
        (Stored::Hash(sp.secret_hash), sp.app_id)
    } else {
        (Stored::Unknown, String::new())
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
    fn constant_time_compare() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
    }
}
