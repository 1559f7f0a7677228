//! Who may use a registry's data plane with a password, and what they may do there: the server's `admin`
//! identity (everything), the registry's own admin user when `adminUserEnabled` (everything on that registry),
//! and service principals by their role assignments (AcrPull, AcrPush, AcrDelete, Reader, Contributor, Owner).

use crate::oci::error::OciResult;
use crate::state::AppState;
use moat_model::rbac::{Role, RoleScope};
use moat_model::{Action, Registry};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server-wide administrator created at first start.
pub const ADMIN: &str = "admin";

/// Remembers `(user, sha256(password))` pairs that argon2 already verified, for a minute, so that clients
/// sending Basic on every request do not pay argon2 each time.
#[derive(Clone, Default)]
pub struct CredentialCache(Arc<Mutex<HashMap<[u8; 32], Instant>>>);

const CACHE_FOR: Duration = Duration::from_secs(60);

impl CredentialCache {
    fn key(user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn hit(&self, user: &str, password: &str) -> bool {
        self.0
            .lock()
            .expect("lock")
            .get(&Self::key(user, password))
            .is_some_and(|at| at.elapsed() < CACHE_FOR)
    }

    fn remember(&self, user: &str, password: &str) {
        let mut map = self.0.lock().expect("lock");
        if map.len() > 10_000 {
            map.retain(|_, at| at.elapsed() < CACHE_FOR);
        }
        map.insert(Self::key(user, password), Instant::now());
    }
}

async fn argon2_matches(state: &AppState, user: &str, password: &str, hash: String) -> bool {
    if state.credential_cache.hit(user, password) {
        return true;
    }
    let p = password.to_string();
    let ok = tokio::task::spawn_blocking(move || moat_auth::password::verify(&p, &hash))
        .await
        .unwrap_or(false);
    if ok {
        state.credential_cache.remember(user, password);
    }
    ok
}

/// Compares without an early exit, so timing does not reveal how much of a password matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a username and password against the identities that may use `registry`. `None` when they match none.
pub async fn authenticate(
    state: &AppState,
    registry: &Registry,
    user: &str,
    password: &str,
) -> OciResult<Option<String>> {
    if let Some(hash) = state.meta.identity_password_hash(user).await? {
        return Ok(argon2_matches(state, user, password, hash)
            .await
            .then(|| user.to_string()));
    }
    if user.eq_ignore_ascii_case(&registry.name) {
        if !registry.settings.admin_user_enabled {
            return Ok(None);
        }
        let creds = crate::secrets::admin_credentials(state, &registry.id).await?;
        let ok = creds
            .iter()
            .any(|(_, v)| constant_time_eq(v.as_bytes(), password.as_bytes()));
        return Ok(ok.then(|| registry.name.clone()));
    }
    if let Some(sp) = state.meta.service_principal(user).await? {
        return Ok(argon2_matches(state, user, password, sp.secret_hash)
            .await
            .then_some(sp.app_id));
    }
    Ok(None)
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
