//! A remote import whose `registryUri` is this server. Pulled over the network, the image would arrive through a
//! listener of the server — as a private endpoint's approved traffic, or a loopback client's — and be served past
//! the export policy. So a `registryUri` that names one of this server's registries (a login server or data
//! endpoint name, on any port) or resolves to an address where the server listens is refused before anything
//! moves, and the refusal is audited as an attempted export on that registry. A redirect or token realm that
//! points here later is refused by the outbound connector when it dials, and audited the same way (by the job,
//! `crate::jobs::remote_import`).

use super::{import_events, invalid, Caller, Request};
use crate::arm::error::ArmResult;
use crate::jobs::remote_import::{reached, record_failure};
use crate::state::AppState;
use moat_model::Registry;
use moat_outbound::{Refused, ResolveError};

/// Records the attempted export on `registry` (Denied).
fn audit_export(state: &AppState, caller: &Caller, registry: &Registry, req: &Request, why: &str) {
    crate::jobs::remote_import::audit_export(state, caller, registry, &req.image, why);
}

/// `registryUri` as the importer dials it: the host as the URL parser (the one the connector's agent uses)
/// normalises it (`127.1`, `0x7f000001` and `2130706433` are `127.0.0.1`; IPv6 in brackets), the ports it may
/// try (an explicit one, else the scheme's; both HTTPS and HTTP without a scheme), and the authority a `Host`
/// header would carry.
struct Authority {
    host: String,
    is_ip: bool,
    ports: Vec<u16>,
    authority: String,
}

fn authority(uri: &str) -> Option<Authority> {
    let uri = uri.trim();
    let lower = uri.to_ascii_lowercase();
    let (defaults, url): (&[u16], String) =
        if lower.starts_with("https://") || lower.starts_with("http://") {
            (&[], uri.to_string())
        } else {
            (&[443, 80], format!("https://{uri}"))
        };
    let url = url::Url::parse(&url).ok()?;
    let (host, is_ip) = match url.host()? {
        url::Host::Domain(d) => (d.trim_end_matches('.').to_ascii_lowercase(), false),
        url::Host::Ipv4(ip) => (ip.to_string(), true),
        url::Host::Ipv6(ip) => (format!("[{ip}]"), true),
    };
    if host.is_empty() {
        return None;
    }
    let ports = match (url.port(), defaults.is_empty()) {
        (Some(p), _) => vec![p],
        (None, false) => defaults.to_vec(),
        (None, true) => vec![url.port_or_known_default()?],
    };
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    Some(Authority {
        host,
        is_ip,
        ports,
        authority,
    })
}

const USE_RESOURCE_ID: &str = "import from a registry on this server with source.resourceId (the registry's ARM resource id) instead of source.registryUri, so that its export policy applies";

/// Refuses (ARM 400 `InvalidParameters`) a `registryUri` that is this server or an address the operator's lists
/// refuse, auditing a denied import on `target` and, for this server, a denied export on the registry it names.
pub(super) async fn refuse_own_uri(
    state: &AppState,
    caller: &Caller,
    target: &Registry,
    req: &Request,
    uri: &str,
) -> ArmResult<()> {
    let Some(a) = authority(uri) else {
        return Ok(());
    };
    if !a.is_ip {
        if let Some(registry) = state.registries.named(&a.host).await? {
            let why =
                format!("registryUri '{uri}' names a registry of this server: {USE_RESOURCE_ID}");
            audit_export(state, caller, &registry, req, &why);
            record_failure(state, import_events(caller, target, req, None), &why, true);
            return Err(invalid(why));
        }
    }
    for port in a.ports {
        let netloc = format!("{}:{port}", a.host);
        let outbound = state.outbound.clone();
        let checked = tokio::task::spawn_blocking(move || outbound.resolve(&netloc))
            .await
            .map_err(crate::arm::error::ArmError::internal)?;
        let refused = match checked {
            Ok(_) | Err(ResolveError::Lookup(..)) => continue,
            Err(ResolveError::Refused(r)) => r,
        };
        let why = if refused.reason.is_self() {
            let refused = Refused {
                host: a.authority.clone(),
                ..refused
            };
            if let Some(registry) = reached(state, &refused).await {
                audit_export(state, caller, &registry, req, &refused.to_string());
            }
            format!(
                "registryUri '{uri}' points at this server ({}): {USE_RESOURCE_ID}",
                refused.addr
            )
        } else {
            format!("registryUri '{uri}' is refused: {refused}")
        };
        record_failure(state, import_events(caller, target, req, None), &why, true);
        return Err(invalid(why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        let a = authority("HTTPS://App.Localhost.:5000/x").unwrap();
        assert_eq!(
            (a.host.as_str(), a.ports.as_slice()),
            ("app.localhost", &[5000][..])
        );
        let a = authority("[::ffff:127.0.0.1]:5000").unwrap();
        assert_eq!(
            (a.host.as_str(), a.ports.as_slice()),
            ("[::ffff:127.0.0.1]", &[5000][..])
        );
        assert_eq!(a.authority, "[::ffff:127.0.0.1]:5000");
        let a = authority("http://user:pw@2130706433").unwrap();
        assert_eq!(
            (a.host.as_str(), a.ports.as_slice()),
            ("127.0.0.1", &[80][..])
        );
        for spelling in [
            "127.1:5000",
            "0x7f000001:5000",
            "0177.0.0.1:5000",
            "https://2130706433:5000",
        ] {
            let a = authority(spelling).unwrap();
            assert_eq!(
                (a.host.as_str(), a.ports.as_slice()),
                ("127.0.0.1", &[5000][..]),
                "{spelling}"
            );
        }
        assert_eq!(
            authority("[::ffff:7f00:1]:5000").unwrap().host,
            "[::ffff:127.0.0.1]"
        );
        let a = authority("registry.example").unwrap();
        assert_eq!(a.ports, vec![443, 80]);
        assert!(authority("https://").is_none());
        assert!(authority("host:notaport").is_none());
    }
}
