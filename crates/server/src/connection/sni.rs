//! Which SNI names the server serves, decided before the handshake: `localhost`, and the login server or data
//! endpoint of a registry that exists, looked up in the registry directory at handshake time (so a registry
//! created a moment ago, by this server or by `moat registry create`, gets its certificate at once). Any other
//! name, however it is spelled under the domain, gets the listener's default certificate.

use crate::config::ServeConfig;
use crate::registries::RegistryDirectory;
use crate::tls::ServedNames;
use moat_model::RegistryName;
use std::sync::Arc;

pub struct SniCheck {
    pub served: Arc<ServedNames>,
    registries: RegistryDirectory,
    config: Arc<ServeConfig>,
}

/// A `host[:port]` without its port.
fn host_part(host_port: &str) -> &str {
    match host_port.rsplit_once(':') {
        Some((host, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => host_port,
    }
}

impl SniCheck {
    pub fn new(
        served: Arc<ServedNames>,
        registries: RegistryDirectory,
        config: Arc<ServeConfig>,
    ) -> SniCheck {
        served.approve("localhost");
        SniCheck {
            served,
            registries,
            config,
        }
    }

    /// Approves `name` for minting when the server serves it.
    pub async fn check(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        if self.served.contains(&name) {
            return;
        }
        if self.is_registry_host(&name).await {
            self.served.approve(&name);
        }
    }

    async fn is_registry_host(&self, name: &str) -> bool {
        let domain = self.config.domain.to_ascii_lowercase();
        let Some(prefix) = name
            .strip_suffix(domain.as_str())
            .and_then(|p| p.strip_suffix('.'))
        else {
            return false;
        };
        // Only a valid registry name is looked up: made-up labels cost no query.
        let first = prefix.split('.').next().unwrap_or_default();
        if first.parse::<RegistryName>().is_err() {
            return false;
        }
        let registry = match self.registries.by_name(first).await {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!("looking up the registry for SNI name {name}: {e}");
                return false;
            }
        };
        host_part(&registry.login_server).eq_ignore_ascii_case(name)
            || (registry.settings.data_endpoint_enabled
                && self
                    .config
                    .data_endpoint_host(&registry)
                    .is_some_and(|h| host_part(&h).eq_ignore_ascii_case(name)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_part_drops_the_port_only() {
        assert_eq!(super::host_part("app.moat.test:5000"), "app.moat.test");
        assert_eq!(super::host_part("app.moat.test"), "app.moat.test");
        assert_eq!(super::host_part("[::1]:5000"), "[::1]");
    }
}
