//! `moat login --service-principal`: `az login`'s twin against a Moat server's AAD and ARM endpoints.

use crate::acr::client::{self, Credentials, DEFAULT_SERVER, SUBSCRIPTIONS_API};
use crate::acr::{exit_with, print, CliError};
use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args)]
pub struct LoginArgs {
    /// Log in as a service principal (the only kind of login Moat has).
    #[arg(long)]
    pub service_principal: bool,
    /// The service principal's app id (`appId` from `moat sp create`).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// The service principal's secret (`password` from `moat sp create`).
    #[arg(long, short = 'p')]
    pub password: Option<String>,
    /// The tenant (`tenant` from `moat sp create`).
    #[arg(long, short = 't')]
    pub tenant: Option<String>,
    /// Base URL of the Moat server.
    #[arg(long, env = "MOAT_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// PEM CA bundle to trust for the server (else REQUESTS_CA_BUNDLE, else MOAT_CA_BUNDLE); kept for later commands.
    #[arg(long, value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
}

/// What `az login` prints for each subscription.
pub fn account_entries(subscriptions: &[Value], tenant: &str, app_id: &str) -> Vec<Value> {
    subscriptions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let sub_id = s
                .get("subscriptionId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let tenant_id = s.get("tenantId").and_then(Value::as_str).unwrap_or(tenant);
            json!({
                "cloudName": "Moat",
                "homeTenantId": s.get("homeTenantId").and_then(Value::as_str).unwrap_or(tenant_id),
                "id": sub_id,
                "isDefault": i == 0,
                "managedByTenants": s.get("managedByTenants").cloned().unwrap_or(json!([])),
                "name": s.get("displayName").cloned().unwrap_or(Value::Null),
                "state": s.get("state").cloned().unwrap_or(Value::Null),
                "tenantId": tenant_id,
                "user": {"name": app_id, "type": "servicePrincipal"},
            })
        })
        .collect()
}

fn login(args: LoginArgs) -> anyhow::Result<()> {
    if !args.service_principal {
        return Err(CliError::new("only service principal logins are supported: moat login --service-principal -u APP_ID -p SECRET --tenant TENANT", 2).into());
    }
    let missing = |what: &str| {
        CliError::new(format!("{what} is required: moat login --service-principal -u APP_ID -p SECRET --tenant TENANT (as `moat sp create` printed them)"), 2)
    };
    let app_id = args.username.ok_or_else(|| missing("-u/--username"))?;
    let secret = args.password.ok_or_else(|| missing("-p/--password"))?;
    let tenant = args.tenant.ok_or_else(|| missing("--tenant"))?;
    let server = args.server.trim().trim_end_matches('/').to_string();
    if !server.starts_with("https://") && !server.starts_with("http://") {
        return Err(CliError::new(
            format!("--server '{server}' is not a URL: use e.g. {DEFAULT_SERVER}"),
            2,
        )
        .into());
    }
    let ca = client::resolve_ca(args.ca_bundle.as_deref(), client::env_var, None);
    let ca_abs = match ca.first() {
        Some(p) => vec![std::fs::canonicalize(p).with_context(|| {
            format!(
                "cannot read the CA bundle {}: pass --ca-bundle <data dir>/tls/ca.pem",
                p.display()
            )
        })?],
        None => vec![],
    };
    let agent = client::agent(&ca_abs)?;

    let endpoint = client::discover_token_endpoint(&agent, &server, &tenant, &ca_abs)?;
    let (token, expires_in) =
        client::client_credentials(&agent, &endpoint, &app_id, &secret, &server, &ca_abs)?;
    let now = time::OffsetDateTime::now_utc();

    let url = format!("{server}/subscriptions?api-version={SUBSCRIPTIONS_API}");
    let req = agent
        .get(&url)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Accept", "application/json")
        .set("CommandName", "login");
    let r = client::send(req, client::Body::Empty, &server, &ca_abs)?;
    if !(200..300).contains(&r.status) {
        return Err(client::arm_error(&r).into());
    }
    let doc = r
        .json()
        .with_context(|| format!("GET {url} did not answer JSON"))?;
    let subs: Vec<Value> = doc
        .get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let first = subs
        .iter()
        .find(|s| {
            s.get("state")
                .and_then(Value::as_str)
                .is_none_or(|st| st.eq_ignore_ascii_case("Enabled"))
        })
        .or(subs.first())
        .ok_or_else(|| CliError::new(format!("No subscriptions found for {app_id}."), 1))?;
    let subscription_id = first
        .get("subscriptionId")
        .and_then(Value::as_str)
        .context("the subscription list has an item without subscriptionId")?
        .to_string();
    let creds = Credentials {
        server,
        tenant: tenant.clone(),
        app_id: app_id.clone(),
        secret,
        subscription_id: subscription_id.clone(),
        subscription_name: first
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_string),
        access_token: token,
        expires_on: client::expires_on(now, expires_in),
        ca_bundle: ca_abs.first().map(|p| p.to_string_lossy().into_owned()),
    };
    client::save_credentials(&client::credentials_path()?, &creds)?;

    // The default subscription first, as az lists it.
    let mut ordered = vec![first.clone()];
    ordered.extend(
        subs.iter()
            .filter(|s| {
                s.get("subscriptionId").and_then(Value::as_str) != Some(subscription_id.as_str())
            })
            .cloned(),
    );
    let out = Value::Array(account_entries(&ordered, &tenant, &app_id));
    print(&format!("{}\n", serde_json::to_string_pretty(&out)?));
    Ok(())
}

/// Runs `moat login` (blocking); on failure prints `ERROR: …` and exits with its code.
pub fn run(args: LoginArgs) -> anyhow::Result<()> {
    if let Err(e) = login(args) {
        exit_with(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_look_like_az_login() {
        let subs = vec![
            json!({"id":"/subscriptions/S","subscriptionId":"S","displayName":"Moat Local","state":"Enabled","tenantId":"T"}),
        ];
        let out = account_entries(&subs, "T", "app");
        assert_eq!(
            out,
            vec![json!({
                "cloudName": "Moat", "homeTenantId": "T", "id": "S", "isDefault": true, "managedByTenants": [],
                "name": "Moat Local", "state": "Enabled", "tenantId": "T", "user": {"name": "app", "type": "servicePrincipal"}
            })]
        );
        let bare = account_entries(&[json!({"subscriptionId":"S2"})], "T", "app");
        assert_eq!(bare[0]["tenantId"], "T");
        assert_eq!(bare[0]["name"], Value::Null);
    }
}
