//! The address of a secret in Moat's secret store, shaped like a Key Vault secret identifier so that a transfer
//! pipeline's `keyVaultUri` works unchanged: `https://<vault>.vault.azure.net/secrets/<name>[/<version>]`. Any
//! host whose first label is the vault is accepted (sovereign clouds, a custom cloud pointed at Moat); names are
//! lower-cased, as `az acr export-pipeline create` lower-cases the whole URI and Key Vault compares names in any
//! case.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUri {
    pub vault: String,
    pub name: String,
    /// A specific version (32 hex digits); `None`: the latest.
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret URI '{uri}': {why}; use https://<vault>.vault.azure.net/secrets/<name>")]
pub struct SecretUriError {
    pub uri: String,
    pub why: String,
}

/// Key Vault's rule: 3 to 24 letters, digits and hyphens, starting with a letter, no `--`, not ending in `-`.
pub fn valid_vault_name(v: &str) -> bool {
    (3..=24).contains(&v.len())
        && v.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && v.as_bytes()[0].is_ascii_lowercase()
        && !v.ends_with('-')
        && !v.contains("--")
}

/// Key Vault's rule for secret names: 1 to 127 letters, digits and hyphens.
pub fn valid_secret_name(n: &str) -> bool {
    (1..=127).contains(&n.len())
        && n.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

pub fn valid_version(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|c| c.is_ascii_hexdigit())
}

impl SecretUri {
    /// From `--vault-name` and `--name`, as `az keyvault secret set` takes them.
    pub fn new(vault: &str, name: &str) -> Result<SecretUri, SecretUriError> {
        format!("https://{vault}.vault.azure.net/secrets/{name}").parse()
    }

    /// The latest version's address (without a version).
    pub fn unversioned(&self) -> SecretUri {
        SecretUri {
            version: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for SecretUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "https://{}.vault.azure.net/secrets/{}",
            self.vault, self.name
        )?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for SecretUri {
    type Err = SecretUriError;

    fn from_str(s: &str) -> Result<SecretUri, SecretUriError> {
        let raw = s.trim();
        let err = |why: &str| SecretUriError {
            uri: crate::text::escape(raw),
            why: why.to_string(),
        };
        let lower = raw.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .ok_or_else(|| err("it must start with https://"))?;
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| err("it names no secret"))?;
        let host = host.split(':').next().unwrap_or("");
        let vault = host.split('.').next().unwrap_or("");
        if !host.contains('.') || !valid_vault_name(vault) {
            return Err(err("the host's first label must be the vault's name (3 to 24 letters, digits and hyphens, starting with a letter)"));
        }
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let (name, version) = match parts.as_slice() {
            ["secrets", name] => (*name, None),
            ["secrets", name, version] => (*name, Some(*version)),
            _ => {
                return Err(err(
                    "the path must be /secrets/<name> or /secrets/<name>/<version>",
                ))
            }
        };
        if !valid_secret_name(name) {
            return Err(err("a secret name is 1 to 127 letters, digits and hyphens"));
        }
        if let Some(v) = version {
            if !valid_version(v) {
                return Err(err("a secret version is 32 hexadecimal digits"));
            }
        }
        Ok(SecretUri {
            vault: vault.to_string(),
            name: name.to_string(),
            version: version.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_vault_shapes() {
        let u: SecretUri = "https://KV-Transfer.vault.azure.net/secrets/Export-SAS"
            .parse()
            .unwrap();
        assert_eq!(
            (u.vault.as_str(), u.name.as_str(), u.version.as_deref()),
            ("kv-transfer", "export-sas", None)
        );
        assert_eq!(
            u.to_string(),
            "https://kv-transfer.vault.azure.net/secrets/export-sas"
        );
        let v: SecretUri =
            "https://kv1.vault.usgovcloudapi.net:443/secrets/sas/0123456789abcdef0123456789ABCDEF/"
                .parse()
                .unwrap();
        assert_eq!(
            v.version.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            v.unversioned().to_string(),
            "https://kv1.vault.azure.net/secrets/sas"
        );
        assert_eq!(SecretUri::new("kv1", "sas").unwrap().name, "sas");
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        for (bad, says) in [
            ("http://kv1.vault.azure.net/secrets/a", "https://"),
            ("https://kv1.vault.azure.net/keys/a", "/secrets/<name>"),
            ("https://kv1.vault.azure.net/secrets/", "/secrets/<name>"),
            ("https://kv1.vault.azure.net/secrets/a_b", "1 to 127"),
            (
                "https://kv1.vault.azure.net/secrets/a/123",
                "32 hexadecimal",
            ),
            ("https://1kv.vault.azure.net/secrets/a", "first label"),
            ("https://localhost/secrets/a", "first label"),
        ] {
            let e = bad.parse::<SecretUri>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
