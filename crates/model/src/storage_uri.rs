//! Where an ACR Transfer pipeline reads or writes its archives: an Azure Blob Storage container (an account's
//! host-style endpoint, or Azurite's path-style one on loopback) or a mounted directory (`file://`, Moat's
//! `LocalDirectory`: removable media, a data diode's inbox). Parsed once; a pipeline holding one is valid.
//!
//! Case: `az acr export-pipeline create` lower-cases the whole container URI, and Azure's account and container
//! names are lower-case by rule, so the scheme, host, account and container are compared and kept lower-case. A
//! blob name is case-sensitive in Azure and a directory path is case-sensitive on disk: both are kept as given.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageUri {
    /// `https://<account>.blob.<suffix>/<container>[/<blob>]` (host style) or
    /// `http(s)://<ip-or-localhost>:<port>/<account>/<container>[/<blob>]` (path style, Azurite; http only on loopback)
    AzureBlob {
        /// `scheme://host[:port][/account]`: the account's blob endpoint, without a trailing slash.
        endpoint: String,
        account: String,
        container: String,
        /// One blob in the container (an export target of type `AzureStorageBlob`), percent-decoded.
        blob: Option<String>,
    },
    /// `file:///abs/path/to/dir`
    LocalDirectory { dir: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid storage URI '{uri}': {why}")]
pub struct StorageUriError {
    pub uri: String,
    pub why: String,
}

const SHAPES: &str = "use https://<account>.blob.core.windows.net/<container>, \
http://127.0.0.1:<port>/<account>/<container> (Azurite on this machine) or file:///<absolute directory>";

/// `[a-z0-9](-?[a-z0-9])*`, 3 to 63 characters: Azure's rule for container names.
pub fn valid_container_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !name.contains("--")
}

/// 3 to 24 lower-case letters and digits: Azure's rule for storage account names.
pub fn valid_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Azure's rule for blob names (1 to 1,024 characters, none of them control characters; not ending in '.' or
/// '/', which Azure strips or refuses), plus Moat's: no empty path segment, no `.`/`..` segment.
pub fn valid_blob_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 1024
        && !name.chars().any(|c| c.is_control())
        && !name.ends_with('.')
        && !name.ends_with('/')
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// A host where plain http is acceptable: the traffic never leaves this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` decoded; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = hex_val(*b.get(i + 1)?)?;
            let lo = hex_val(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `/` (a blob name's path separator).
pub fn percent_encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl StorageUri {
    /// The full URI of one archive `name` in this container or directory (a blob URI's own blob is replaced).
    pub fn with_blob(&self, name: &str) -> String {
        match self {
            StorageUri::AzureBlob {
                endpoint,
                container,
                ..
            } => format!("{endpoint}/{container}/{}", percent_encode_path(name)),
            StorageUri::LocalDirectory { dir } => {
                format!(
                    "file://{}",
                    percent_encode_path(&dir.join(name).to_string_lossy())
                )
            }
        }
    }

    /// The container (or directory) this URI names, without a blob.
    pub fn container_uri(&self) -> StorageUri {
        match self {
            StorageUri::AzureBlob {
                endpoint,
                account,
                container,
                ..
            } => StorageUri::AzureBlob {
                endpoint: endpoint.clone(),
                account: account.clone(),
                container: container.clone(),
                blob: None,
            },
            other => other.clone(),
        }
    }

    /// The blob a URI names (an export target of type `AzureStorageBlob`), if any.
    pub fn blob(&self) -> Option<&str> {
        match self {
            StorageUri::AzureBlob { blob, .. } => blob.as_deref(),
            StorageUri::LocalDirectory { .. } => None,
        }
    }
}

impl fmt::Display for StorageUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUri::AzureBlob {
                endpoint,
                container,
                blob,
                ..
            } => match blob {
                Some(b) => write!(f, "{endpoint}/{container}/{}", percent_encode_path(b)),
                None => write!(f, "{endpoint}/{container}"),
            },
            StorageUri::LocalDirectory { dir } => {
                write!(f, "file://{}", percent_encode_path(&dir.to_string_lossy()))
            }
        }
    }
}

fn parse_file(uri: &str, rest: &str) -> Result<StorageUri, String> {
    // file:///abs (empty authority) or file://localhost/abs, as RFC 8089 allows.
    let path = if let Some(p) = rest.strip_prefix('/') {
        format!("/{p}")
    } else if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case("localhost") {
        rest[9..].to_string()
    } else {
        return Err(format!(
            "a file URI names a directory on this machine: use file:///<absolute directory> (three slashes), not '{uri}'"
        ));
    };
    if path.contains(['?', '#']) {
        return Err("a file URI has no query or fragment".into());
    }
    let decoded =
        percent_decode(&path).ok_or("a %-escape in the path is malformed or not UTF-8")?;
    let dir = Path::new(&decoded);
    if !dir.is_absolute() {
        return Err("the directory must be an absolute path (file:///mnt/transfer)".into());
    }
    if dir
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("the directory path must not contain '.' or '..' segments".into());
    }
    if decoded.contains('\0') {
        return Err("the directory path contains a NUL character".into());
    }
    let trimmed = decoded.trim_end_matches('/');
    let dir = if trimmed.is_empty() { "/" } else { trimmed };
    Ok(StorageUri::LocalDirectory {
        dir: PathBuf::from(dir),
    })
}

fn parse_http(scheme: &str, rest: &str) -> Result<StorageUri, String> {
    if rest.contains('?') {
        return Err("the URI carries a query string (a SAS token?): give the container URI alone and keep the SAS token in a secret (moat secret set)".into());
    }
    if rest.contains('#') {
        return Err("a storage URI has no fragment".into());
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(format!("it names no host: {SHAPES}"));
    }
    if authority.contains('@') {
        return Err("user information in the URI is not accepted: keep credentials in a secret (moat secret set)".into());
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or("an IPv6 host lacks its ']'")?;
        let tail = &v6[end + 1..];
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').unwrap_or(t)),
        };
        (authority[..end + 2].to_string(), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.clone(), None),
        }
    };
    if let Some(p) = port.filter(|p| !valid_port(p)) {
        return Err(format!("'{p}' is not a port number"));
    }
    let loopback = is_loopback_host(&host);
    if scheme == "http" && !loopback {
        return Err(format!(
            "plain http is accepted only for a storage emulator on this machine (127.0.0.1, ::1 or localhost), not for '{host}': use https"
        ));
    }
    let segments: Vec<&str> = {
        let p = path.trim_start_matches('/');
        let p = p.trim_end_matches('/');
        if p.is_empty() {
            vec![]
        } else {
            p.splitn(if is_host_style(&host) { 2 } else { 3 }, '/')
                .collect()
        }
    };
    let labels: Vec<&str> = host.split('.').collect();
    let (endpoint, account, container, blob) = if is_host_style(&host) {
        let account = labels[0].to_string();
        let [container, blob @ ..] = segments.as_slice() else {
            return Err(format!(
                "it names no container: add one ({scheme}://{host}/<container>)"
            ));
        };
        (
            format!("{scheme}://{authority}"),
            account,
            *container,
            blob.first().copied(),
        )
    } else if host.parse::<std::net::IpAddr>().is_ok()
        || host.starts_with('[')
        || host == "localhost"
        || host.ends_with(".localhost")
    {
        let [account, container, blob @ ..] = segments.as_slice() else {
            return Err(format!(
                "a storage emulator's URI names the account, then the container: {scheme}://{authority}/devstoreaccount1/<container>"
            ));
        };
        (
            format!("{scheme}://{authority}/{account}"),
            account.to_string(),
            *container,
            blob.first().copied(),
        )
    } else {
        return Err(format!(
            "'{host}' is not a blob endpoint (<account>.blob.<suffix>): {SHAPES}"
        ));
    };
    if !valid_account_name(&account) {
        return Err(format!(
            "'{account}' is not a storage account name: 3 to 24 lower-case letters and digits"
        ));
    }
    let container = container.to_ascii_lowercase();
    if !valid_container_name(&container) {
        return Err(format!(
            "'{container}' is not a container name: 3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit"
        ));
    }
    let blob = match blob {
        None => None,
        Some(b) => {
            let b = b.trim_end_matches('/');
            let d = percent_decode(b).ok_or("a %-escape in the blob name is malformed")?;
            if !valid_blob_name(&d) {
                return Err(format!("'{d}' is not a blob name: 1 to 1,024 characters, no control characters, no empty, '.' or '..' segment, not ending in '.'"));
            }
            Some(d)
        }
    };
    Ok(StorageUri::AzureBlob {
        endpoint,
        account,
        container,
        blob,
    })
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|c| c.is_ascii_digit())
        && p.parse::<u16>().is_ok_and(|n| n > 0)
}

/// `<account>.blob.<suffix>`: Azure's public and sovereign clouds, Azure Stack, and `*.blob.localhost`.
fn is_host_style(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() >= 3 && labels[1] == "blob" && !labels[0].is_empty()
}

impl FromStr for StorageUri {
    type Err = StorageUriError;

    fn from_str(s: &str) -> Result<StorageUri, StorageUriError> {
        let uri = s.trim();
        let err = |why: String| StorageUriError {
            uri: crate::text::escape(uri),
            why,
        };
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err(err(format!("it has no scheme: {SHAPES}")));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => parse_file(uri, rest).map_err(err),
            s @ ("https" | "http") => parse_http(s, rest).map_err(err),
            other => Err(err(format!("'{other}' is not a storage scheme: {SHAPES}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(uri: &str) -> (String, String, String, Option<String>) {
        match uri.parse::<StorageUri>().unwrap() {
            StorageUri::AzureBlob {
                endpoint,
                account,
                container,
                blob,
            } => (endpoint, account, container, blob),
            other => panic!("{uri}: {other:?}"),
        }
    }

    fn refused(uri: &str, says: &str) {
        let e = uri.parse::<StorageUri>().unwrap_err().to_string();
        assert!(e.contains(says), "{uri}: {e}");
    }

    #[test]
    fn host_style_container_and_blob() {
        assert_eq!(
            azure("https://acct1.blob.core.windows.net/export-container"),
            (
                "https://acct1.blob.core.windows.net".into(),
                "acct1".into(),
                "export-container".into(),
                None
            )
        );
        assert_eq!(
            azure("HTTPS://Acct1.Blob.Core.Windows.Net/Export-Container/My%20Blob.tar.gz/"),
            (
                "https://acct1.blob.core.windows.net".into(),
                "acct1".into(),
                "export-container".into(),
                Some("My Blob.tar.gz".into())
            )
        );
        assert_eq!(
            azure("https://acct1.blob.core.usgovcloudapi.net:443/c01/dir/a.tar").3,
            Some("dir/a.tar".into())
        );
        let u: StorageUri = "https://acct1.blob.core.windows.net/c01/".parse().unwrap();
        assert_eq!(u.to_string(), "https://acct1.blob.core.windows.net/c01");
        assert_eq!(
            u.with_blob("run 1.tar"),
            "https://acct1.blob.core.windows.net/c01/run%201.tar"
        );
    }

    #[test]
    fn path_style_emulator_on_loopback() {
        assert_eq!(
            azure("http://127.0.0.1:10000/devstoreaccount1/transfer"),
            (
                "http://127.0.0.1:10000/devstoreaccount1".into(),
                "devstoreaccount1".into(),
                "transfer".into(),
                None
            )
        );
        assert_eq!(
            azure("http://[::1]:10000/devstoreaccount1/transfer/x.tar").0,
            "http://[::1]:10000/devstoreaccount1"
        );
        assert_eq!(
            azure("http://LOCALHOST:10000/devstoreaccount1/Transfer").2,
            "transfer"
        );
        let u: StorageUri = "http://127.0.0.1:10000/devstoreaccount1/transfer/a"
            .parse()
            .unwrap();
        assert_eq!(
            u.with_blob("b.tar"),
            "http://127.0.0.1:10000/devstoreaccount1/transfer/b.tar"
        );
        assert_eq!(
            u.container_uri().to_string(),
            "http://127.0.0.1:10000/devstoreaccount1/transfer"
        );
    }

    #[test]
    fn local_directory() {
        for (uri, dir) in [
            ("file:///mnt/transfer", "/mnt/transfer"),
            ("file:///mnt/transfer/", "/mnt/transfer"),
            ("FILE://localhost/mnt/My%20Media", "/mnt/My Media"),
            ("file:///", "/"),
        ] {
            assert_eq!(
                uri.parse::<StorageUri>().unwrap(),
                StorageUri::LocalDirectory { dir: dir.into() },
                "{uri}"
            );
        }
        let u: StorageUri = "file:///mnt/x".parse().unwrap();
        assert_eq!(u.with_blob("a b.tar"), "file:///mnt/x/a%20b.tar");
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        refused("acct.blob.core.windows.net/c01", "no scheme");
        refused(
            "ftp://acct.blob.core.windows.net/c01",
            "not a storage scheme",
        );
        refused(
            "http://acct.blob.core.windows.net/c01",
            "plain http is accepted only",
        );
        refused("http://10.0.0.5:10000/devstoreaccount1/c01", "use https");
        refused("https://acct.blob.core.windows.net", "names no container");
        refused("https://acct.blob.core.windows.net/", "names no container");
        refused(
            "https://acct.blob.core.windows.net/ab",
            "not a container name",
        );
        refused(
            "https://acct.blob.core.windows.net/a--b",
            "not a container name",
        );
        refused(
            "https://acct.blob.core.windows.net/-ab",
            "not a container name",
        );
        refused(
            "https://acct.blob.core.windows.net/a_b",
            "not a container name",
        );
        refused(
            "https://acct.blob.core.windows.net/c01?sv=2021&sig=x",
            "SAS token",
        );
        refused(
            "https://u:p@acct.blob.core.windows.net/c01",
            "user information",
        );
        refused(
            "https://a.blob.core.windows.net/c01",
            "not a storage account name",
        );
        refused("https://example.com/c01", "not a blob endpoint");
        refused(
            "http://127.0.0.1:10000/devstoreaccount1",
            "names the account",
        );
        refused("http://127.0.0.1:99999/devstoreaccount1/c01", "not a port");
        refused(
            "https://acct.blob.core.windows.net/c01/x/../y",
            "not a blob name",
        );
        refused("https://acct.blob.core.windows.net/c01/x%zz", "malformed");
        refused("file://mnt/transfer", "three slashes");
        refused("file:///mnt/../etc", "'..'");
        refused("file:///mnt/x?y", "no query");
        refused("", "no scheme");
    }

    #[test]
    fn name_rules() {
        assert!(valid_container_name("abc"));
        assert!(valid_container_name(&"a".repeat(63)));
        assert!(!valid_container_name(&"a".repeat(64)));
        assert!(!valid_container_name("ab-"));
        assert!(valid_account_name("devstoreaccount1"));
        assert!(!valid_account_name("Dev"));
        assert!(valid_blob_name("a/b.tar"));
        assert!(!valid_blob_name("a//b"));
        assert!(!valid_blob_name("a\nb"));
        assert!(!valid_blob_name(&"x".repeat(1025)));
    }
}
