//! `moat acr private-endpoint-connection …` (as az has it) and `moat acr private-endpoint …` (az's
//! `network private-endpoint`, narrowed to what a registry needs: a name, a registry and an address).

use super::client::{encode, Session};
use super::commands::{confirm, registry_url, with_api};
use super::output::render;
use super::{print, CliError, OutputFormat};
use clap::Subcommand;
use serde_json::{json, Value};

/// The api-version sent for `Microsoft.Network/privateEndpoints`, as az's network module sends it.
const NETWORK_API: &str = "2024-05-01";

#[derive(Subcommand)]
pub enum ConnectionCommand {
    /// List the registry's connections.
    List {
        /// Registry name.
        #[arg(long = "registry-name", short = 'r')]
        registry: String,
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
    },
    /// Show one connection.
    Show {
        #[arg(long = "registry-name", short = 'r')]
        registry: String,
        /// Connection name (`<registry>.<id>`, from `list`).
        #[arg(long, short = 'n')]
        name: String,
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
    },
    /// Approve a pending connection: the endpoint starts carrying private traffic.
    Approve {
        #[arg(long = "registry-name", short = 'r')]
        registry: String,
        #[arg(long, short = 'n')]
        name: String,
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Reject a connection (final: the endpoint must be created again to reconnect).
    Reject {
        #[arg(long = "registry-name", short = 'r')]
        registry: String,
        #[arg(long, short = 'n')]
        name: String,
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove a connection from the registry; its endpoint stays, disconnected.
    Delete {
        #[arg(long = "registry-name", short = 'r')]
        registry: String,
        #[arg(long, short = 'n')]
        name: String,
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
        /// Do not prompt for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

impl ConnectionCommand {
    pub fn name(&self) -> &'static str {
        match self {
            ConnectionCommand::List { .. } => "acr private-endpoint-connection list",
            ConnectionCommand::Show { .. } => "acr private-endpoint-connection show",
            ConnectionCommand::Approve { .. } => "acr private-endpoint-connection approve",
            ConnectionCommand::Reject { .. } => "acr private-endpoint-connection reject",
            ConnectionCommand::Delete { .. } => "acr private-endpoint-connection delete",
        }
    }
}

#[derive(Subcommand)]
pub enum EndpointCommand {
    /// Create an endpoint: the server listens on ADDRESS (at its own port) for the registry's clients there.
    Create {
        /// Endpoint name.
        #[arg(long, short = 'n')]
        name: String,
        /// The endpoint's resource group.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: String,
        /// The registry it connects to.
        #[arg(long = "registry-name", short = 'r')]
        registry: String,
        /// The registry's resource group; looked up from the name when omitted.
        #[arg(long = "registry-resource-group")]
        registry_resource_group: Option<String>,
        /// The address on the internal network to listen on, e.g. 198.18.0.5.
        #[arg(long)]
        ip_address: std::net::IpAddr,
        /// Ask the registry owner for approval instead of approving it yourself.
        #[arg(long)]
        manual_request: bool,
        /// A message for the registry owner (with --manual-request).
        #[arg(long)]
        request_message: Option<String>,
    },
    /// Show an endpoint and its connection state.
    Show {
        #[arg(long, short = 'n')]
        name: String,
        #[arg(long = "resource-group", short = 'g')]
        resource_group: String,
    },
    /// List the endpoints of a resource group.
    List {
        #[arg(long = "resource-group", short = 'g')]
        resource_group: String,
    },
    /// Delete an endpoint and stop its listener.
    Delete {
        #[arg(long, short = 'n')]
        name: String,
        #[arg(long = "resource-group", short = 'g')]
        resource_group: String,
        /// Do not prompt for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

impl EndpointCommand {
    pub fn name(&self) -> &'static str {
        match self {
            EndpointCommand::Create { .. } => "acr private-endpoint create",
            EndpointCommand::Show { .. } => "acr private-endpoint show",
            EndpointCommand::List { .. } => "acr private-endpoint list",
            EndpointCommand::Delete { .. } => "acr private-endpoint delete",
        }
    }
}

const CONNECTION_COLUMNS: [&str; 4] = ["NAME", "STATUS", "DESCRIPTION", "PRIVATE ENDPOINT"];

fn connection_row(c: &Value) -> Vec<String> {
    let state = &c["properties"]["privateLinkServiceConnectionState"];
    vec![
        c["name"].as_str().unwrap_or("").to_string(),
        state["status"].as_str().unwrap_or("").to_string(),
        state["description"].as_str().unwrap_or("").to_string(),
        c["properties"]["privateEndpoint"]["id"]
            .as_str()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or("")
            .to_string(),
    ]
}

const ENDPOINT_COLUMNS: [&str; 4] = ["NAME", "ADDRESS", "STATUS", "REGISTRY"];

fn endpoint_row(e: &Value) -> Vec<String> {
    let p = &e["properties"];
    let conn = p["privateLinkServiceConnections"]
        .as_array()
        .and_then(|a| a.first())
        .or_else(|| {
            p["manualPrivateLinkServiceConnections"]
                .as_array()
                .and_then(|a| a.first())
        })
        .cloned()
        .unwrap_or(Value::Null);
    vec![
        e["name"].as_str().unwrap_or("").to_string(),
        p["listenAddress"].as_str().unwrap_or("").to_string(),
        conn["properties"]["privateLinkServiceConnectionState"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        conn["properties"]["privateLinkServiceId"]
            .as_str()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or("")
            .to_string(),
    ]
}

/// `…/registries/{name}/privateEndpointConnections[/{conn}]?api-version=…`
fn connections_url(
    session: &mut Session,
    registry: &str,
    rg: Option<String>,
    conn: Option<&str>,
) -> anyhow::Result<String> {
    let url = registry_url(session, registry, rg)?;
    let sub = match conn {
        Some(c) => format!("/privateEndpointConnections/{}?", encode(c)),
        None => "/privateEndpointConnections?".to_string(),
    };
    Ok(url.replacen('?', &sub, 1))
}

pub fn connection(
    session: &mut Session,
    command: ConnectionCommand,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let show = |v: &Value| print(&render(v, out, &CONNECTION_COLUMNS, connection_row));
    match command {
        ConnectionCommand::List {
            registry,
            resource_group,
        } => {
            let url = connections_url(session, &registry, resource_group, None)?;
            show(&Value::Array(session.list_all(&url)?));
        }
        ConnectionCommand::Show {
            registry,
            name,
            resource_group,
        } => {
            let url = connections_url(session, &registry, resource_group, Some(&name))?;
            show(&session.get_json(&url)?);
        }
        ConnectionCommand::Approve {
            registry,
            name,
            resource_group,
            description,
        } => {
            let url = connections_url(session, &registry, resource_group, Some(&name))?;
            show(&set_state(session, &url, "Approved", description)?);
        }
        ConnectionCommand::Reject {
            registry,
            name,
            resource_group,
            description,
        } => {
            let url = connections_url(session, &registry, resource_group, Some(&name))?;
            show(&set_state(session, &url, "Rejected", description)?);
        }
        ConnectionCommand::Delete {
            registry,
            name,
            resource_group,
            yes,
        } => {
            let url = connections_url(session, &registry, resource_group, Some(&name))?;
            if !yes && !confirm("Are you sure you want to perform this operation?")? {
                return Ok(());
            }
            session.delete(&url, false)?;
        }
    }
    Ok(())
}

/// Approve or reject as az does: read the connection, change its state, PUT it back, wait.
fn set_state(
    session: &mut Session,
    url: &str,
    status: &str,
    description: Option<String>,
) -> anyhow::Result<Value> {
    let mut current = session.get_json(url)?;
    let state = &mut current["properties"]["privateLinkServiceConnectionState"];
    state["status"] = json!(status);
    if let Some(d) = description {
        state["description"] = json!(d);
    }
    let body = json!({"properties": {"privateLinkServiceConnectionState": state.clone()}});
    Ok(session
        .put_or_patch("PUT", url, &body, false)?
        .unwrap_or(Value::Null))
}

fn endpoint_url(sub: &str, rg: &str, name: Option<&str>) -> String {
    let mut path = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/privateEndpoints",
        encode(sub),
        encode(rg)
    );
    if let Some(n) = name {
        path.push('/');
        path.push_str(&encode(n));
    }
    with_api(&path, NETWORK_API)
}

/// The body az's `network private-endpoint create` would send, with the address Moat listens on.
pub fn endpoint_body(
    registry_id: &str,
    location: &str,
    address: std::net::IpAddr,
    manual: bool,
    message: Option<&str>,
) -> Value {
    let mut conn = json!({"name": "registry", "properties": {"privateLinkServiceId": registry_id, "groupIds": ["registry"]}});
    if let Some(m) = message {
        conn["properties"]["requestMessage"] = json!(m);
    }
    let key = if manual {
        "manualPrivateLinkServiceConnections"
    } else {
        "privateLinkServiceConnections"
    };
    json!({
        "location": location,
        "properties": {
            key: [conn],
            "ipConfigurations": [{"name": "registry", "properties": {"groupId": "registry", "memberName": "registry", "privateIPAddress": address.to_string()}}],
        }
    })
}

pub fn endpoint(
    session: &mut Session,
    command: EndpointCommand,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let show = |v: &Value| print(&render(v, out, &ENDPOINT_COLUMNS, endpoint_row));
    let sub = session.creds.subscription_id.clone();
    match command {
        EndpointCommand::Create {
            name,
            resource_group,
            registry,
            registry_resource_group,
            ip_address,
            manual_request,
            request_message,
        } => {
            if request_message.is_some() && !manual_request {
                return Err(
                    CliError::new("--request-message goes with --manual-request", 2).into(),
                );
            }
            let reg_url = registry_url(session, &registry, registry_resource_group)?;
            let reg = session.get_json(&reg_url)?;
            let registry_id = reg["id"].as_str().unwrap_or_default().to_string();
            let location = reg["location"].as_str().unwrap_or("local").to_string();
            let body = endpoint_body(
                &registry_id,
                &location,
                ip_address,
                manual_request,
                request_message.as_deref(),
            );
            let url = endpoint_url(&sub, &resource_group, Some(&name));
            if let Some(v) = session.put_or_patch("PUT", &url, &body, false)? {
                show(&v);
            }
        }
        EndpointCommand::Show {
            name,
            resource_group,
        } => {
            show(&session.get_json(&endpoint_url(&sub, &resource_group, Some(&name)))?);
        }
        EndpointCommand::List { resource_group } => {
            show(&Value::Array(session.list_all(&endpoint_url(
                &sub,
                &resource_group,
                None,
            ))?));
        }
        EndpointCommand::Delete {
            name,
            resource_group,
            yes,
        } => {
            if !yes && !confirm("Are you sure you want to perform this operation?")? {
                return Ok(());
            }
            session.delete(&endpoint_url(&sub, &resource_group, Some(&name)), false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_body_names_the_registry_and_address() {
        let b = endpoint_body(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/r",
            "local",
            "198.18.0.5".parse().unwrap(),
            true,
            Some("please"),
        );
        let c = &b["properties"]["manualPrivateLinkServiceConnections"][0]["properties"];
        assert_eq!(c["groupIds"], json!(["registry"]));
        assert_eq!(c["requestMessage"], "please");
        assert_eq!(
            b["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
            "198.18.0.5"
        );
        assert!(b["properties"]
            .get("privateLinkServiceConnections")
            .is_none());
    }
}
