//! `MOAT_STORAGE_URL`: which store holds the blobs.

/// What a `MOAT_STORAGE_URL` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageUrl {
    /// `file://<dir>`: local files (the default, `<data dir>/storage`).
    File(std::path::PathBuf),
    /// `az://<container>`: Azure Blob Storage, account and credentials from the standard environment.
    Azure { container: String },
}

impl std::str::FromStr for StorageUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<StorageUrl, String> {
        if let Some(dir) = s.strip_prefix("file://") {
            if dir.is_empty() {
                return Err("file:// needs a directory".into());
            }
            return Ok(StorageUrl::File(dir.into()));
        }
        if let Some(c) = s.strip_prefix("az://") {
            let c = c.trim_end_matches('/');
            // Azure's container names: 3–63 of lower-case letters, digits and single hyphens.
            let ok = (3..=63).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
                && !c.contains("--");
            if !ok {
                return Err(format!("'{c}' is not an Azure container name"));
            }
            return Ok(StorageUrl::Azure {
                container: c.to_string(),
            });
        }
        Err(format!(
            "'{s}' is not a storage URL: use file://<dir> or az://<container>"
        ))
    }
}
