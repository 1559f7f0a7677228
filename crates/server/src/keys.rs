//! Key files: one key per purpose, never in the database (DESIGN principle 8). Each purpose has a directory
//! `<data dir>/keys/<purpose>/` (0700) of key files `<kid>.key` (0600, 32 random bytes in hex). A key id is
//! `<unix seconds, 10 digits>-<nanoseconds, 9 digits>-<4 hex>`, so ids sort by creation time and the greatest is
//! the current key (a new key's id is made greater than every existing one, whatever the clock says).
//!
//! Rotation writes a new key (which signs from then on) and removes keys retired more than `OVERLAP` ago: a key
//! is retired when its successor is created, and everything it signed expires well within the overlap, so tokens
//! issued before a rotation stay valid until they expire. The running server re-reads the files on SIGHUP and
//! every `RELOAD_EVERY`, so `moat keys rotate` needs no restart.

use crate::datadir::{check_private_dir, check_private_file, DataDirError};
use moat_auth::{Key, Keyring};
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a retired key keeps verifying: longer than any token lives (refresh tokens: 3 hours; Entra tokens:
/// 1 hour; data links: 20 minutes by default).
pub const OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// How often the server re-reads the key files (it also does on SIGHUP).
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Registry access and refresh tokens (`/oauth2/token`, `/oauth2/exchange`).
    RegistryTokens,
    /// The management plane's Entra-style tokens.
    EntraTokens,
    /// Data-endpoint download links.
    DataLinks,
    /// Secrets at rest (registry admin passwords).
    Secrets,
    /// The Ed25519 key that signs transfer archives (export pipeline runs): the key file's 32 bytes are its seed.
    /// Importers trust its public key (`moat transfer-key show`), so a rotation means telling them the new one.
    Transfer,
    /// The Ed25519 key that signs the audit trail's chain heads (checkpoints). Its retired keys are never removed:
    /// `moat audit verify` checks checkpoints signed long ago.
    Audit,
}

impl Purpose {
    pub const ALL: [Purpose; 6] = [
        Purpose::RegistryTokens,
        Purpose::EntraTokens,
        Purpose::DataLinks,
        Purpose::Secrets,
        Purpose::Transfer,
        Purpose::Audit,
    ];

    /// The name on the command line and of the directory.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::RegistryTokens => "registry-tokens",
            Purpose::EntraTokens => "entra-tokens",
            Purpose::DataLinks => "data-links",
            Purpose::Secrets => "secrets",
            Purpose::Transfer => "transfer",
            Purpose::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Unsafe(#[from] DataDirError),
    #[error("key file \"{path}\": {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file \"{0}\" does not hold a 256-bit key in hex: restore it from a backup or remove it")]
    Malformed(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One key as `moat keys list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub purpose: &'static str,
    pub kid: String,
    /// Unix seconds.
    pub created: u64,
    /// `current` signs; `retired` only verifies, until `OVERLAP` after its successor was created.
    pub status: &'static str,
}

/// The key files under `<data dir>/keys`.
#[derive(Clone, Debug)]
pub struct KeyFiles {
    dir: PathBuf,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn created(kid: &str) -> u64 {
    kid.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn private_dir(path: &Path) -> Result<(), KeyError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(path))?;
    check_private_dir(path, "key directory")?;
    Ok(())
}

impl KeyFiles {
    pub fn new(data_dir: &Path) -> KeyFiles {
        KeyFiles {
            dir: data_dir.join("keys"),
        }
    }

    fn purpose_dir(&self, p: Purpose) -> PathBuf {
        self.dir.join(p.as_str())
    }

    /// The key ids of a purpose, oldest first, after checking the directory and every key file.
    fn kids(&self, p: Purpose) -> Result<Vec<String>, KeyError> {
        private_dir(&self.dir)?;
        let dir = self.purpose_dir(p);
        private_dir(&dir)?;
        let mut kids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(kid) = name.strip_suffix(".key") {
                check_private_file(&entry.path(), "key file")?;
                kids.push(kid.to_string());
            }
        }
        kids.sort();
        Ok(kids)
    }

    fn read(&self, p: Purpose, kid: &str) -> Result<Key, KeyError> {
        let path = self.purpose_dir(p).join(format!("{kid}.key"));
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let secret = hex::decode(text.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| KeyError::Malformed(path.display().to_string()))?;
        Ok(Key::new(kid, &secret))
    }

    /// Writes a new key (0600, fsynced, renamed into place so no reader sees half a key) and returns its id.
    fn create(&self, p: Purpose) -> Result<String, KeyError> {
        let dir = self.purpose_dir(p);
        let newest = self.kids(p)?.pop();
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut kid = format!(
            "{:010}-{:09}-{:04x}",
            t.as_secs(),
            t.subsec_nanos(),
            rand::random::<u16>()
        );
        if let Some(newest) = newest.filter(|n| *n >= kid) {
            // The clock went back (or two rotations in one nanosecond): stay after the newest key.
            kid = format!("{newest}-{:04x}", rand::random::<u16>());
        }
        let tmp = dir.join(format!(".{kid}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        writeln!(f, "{}", hex::encode(raw)).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        let path = dir.join(format!("{kid}.key"));
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))?;
        Ok(kid)
    }

    /// A purpose's keys, making the first one if there is none.
    pub fn load(&self, p: Purpose) -> Result<Vec<Key>, KeyError> {
        let mut kids = self.kids(p)?;
        if kids.is_empty() {
            kids.push(self.create(p)?);
        }
        kids.iter().map(|k| self.read(p, k)).collect()
    }

    /// Makes a new current key for `p`; the old ones keep verifying for `OVERLAP`.
    pub fn rotate(&self, p: Purpose) -> Result<String, KeyError> {
        self.create(p)
    }

    /// Removes the keys of `p` retired more than `OVERLAP` ago; returns their ids.
    pub fn prune(&self, p: Purpose) -> Result<Vec<String>, KeyError> {
        if p == Purpose::Audit {
            return Ok(Vec::new());
        }
        let kids = self.kids(p)?;
        let mut removed = Vec::new();
        for pair in kids.windows(2) {
            if created(&pair[1]) + OVERLAP.as_secs() < now() {
                let path = self.purpose_dir(p).join(format!("{}.key", pair[0]));
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                removed.push(pair[0].clone());
            }
        }
        Ok(removed)
    }

    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let mut out = Vec::new();
        for p in Purpose::ALL {
            let kids = self.kids(p)?;
            for (i, kid) in kids.iter().enumerate() {
                out.push(KeyInfo {
                    purpose: p.as_str(),
                    kid: kid.clone(),
                    created: created(kid),
                    status: if i + 1 == kids.len() {
                        "current"
                    } else {
                        "retired"
                    },
                });
            }
        }
        Ok(out)
    }
}

/// The Ed25519 signer whose seed is `key`'s 32 bytes.
pub fn transfer_signer(key: &Key) -> moat_transfer::archive::TransferSigner {
    moat_transfer::archive::TransferSigner::from_seed(&key.kid, &key.secret)
        .expect("key files hold 32 bytes, an Ed25519 seed")
}

/// The server's keyrings, one per purpose. Clones share the rings, so `reload` reaches every holder.
#[derive(Clone)]
pub struct ServerKeys {
    pub files: KeyFiles,
    pub registry_tokens: Keyring,
    pub entra_tokens: Keyring,
    pub data_links: Keyring,
    pub secrets: Keyring,
    pub transfer: Keyring,
    pub audit: Keyring,
}

impl ServerKeys {
    pub fn load(data_dir: &Path) -> Result<ServerKeys, KeyError> {
        let files = KeyFiles::new(data_dir);
        let ring = |p| -> Result<Keyring, KeyError> {
            Ok(Keyring::new(files.load(p)?).expect("load makes a key"))
        };
        Ok(ServerKeys {
            registry_tokens: ring(Purpose::RegistryTokens)?,
            entra_tokens: ring(Purpose::EntraTokens)?,
            data_links: ring(Purpose::DataLinks)?,
            secrets: ring(Purpose::Secrets)?,
            transfer: ring(Purpose::Transfer)?,
            audit: ring(Purpose::Audit)?,
            files,
        })
    }

    pub fn ring(&self, p: Purpose) -> &Keyring {
        match p {
            Purpose::RegistryTokens => &self.registry_tokens,
            Purpose::EntraTokens => &self.entra_tokens,
            Purpose::DataLinks => &self.data_links,
            Purpose::Secrets => &self.secrets,
            Purpose::Transfer => &self.transfer,
            Purpose::Audit => &self.audit,
        }
    }

    /// The signer of transfer archives: the current `transfer` key.
    pub fn transfer_signer(&self) -> moat_transfer::archive::TransferSigner {
        transfer_signer(&self.transfer.current())
    }

    /// Re-reads every purpose's key files. A purpose whose files cannot be used (a key file made readable to
    /// others, say) keeps the keys it had, and the error is returned for the log.
    pub fn reload(&self) -> Result<(), KeyError> {
        let mut first_error = None;
        for p in Purpose::ALL {
            match self.files.load(p) {
                Ok(keys) => {
                    let _ = self.ring(p).replace(keys);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Reloads on SIGHUP and every `RELOAD_EVERY`, for the life of the server.
    pub fn spawn_reloader(&self) {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                match hup.as_mut() {
                    Some(h) => {
                        tokio::select! {
                            _ = h.recv() => {}
                            _ = tokio::time::sleep(RELOAD_EVERY) => {}
                        }
                    }
                    None => tokio::time::sleep(RELOAD_EVERY).await,
                }
                let k = keys.clone();
                match tokio::task::spawn_blocking(move || k.reload()).await {
                    Ok(Err(e)) => tracing::warn!("keeping the keys loaded before: {e}"),
                    Err(e) => tracing::warn!("key reload failed: {e}"),
                    Ok(Ok(())) => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_files_and_rotation_keeps_the_old_key() {
        crate::datadir::restrict_umask();
        let tmp = tempfile::tempdir().unwrap();
        let keys = ServerKeys::load(tmp.path()).unwrap();
        let first = keys.registry_tokens.current();
        assert_ne!(
            first.secret,
            keys.entra_tokens.current().secret,
            "one key per purpose"
        );
        let file = tmp
            .path()
            .join(format!("keys/registry-tokens/{}.key", first.kid));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = ServerKeys::load(tmp.path()).unwrap();
        assert_eq!(
            again.registry_tokens.current(),
            first,
            "stable across starts"
        );

        let new = keys.files.rotate(Purpose::RegistryTokens).unwrap();
        assert!(new > first.kid);
        keys.reload().unwrap();
        assert_eq!(keys.registry_tokens.current().kid, new);
        assert!(keys.registry_tokens.get(&first.kid).is_some());
        assert!(keys
            .files
            .prune(Purpose::RegistryTokens)
            .unwrap()
            .is_empty());
        let listed = keys.files.list().unwrap();
        assert_eq!(
            listed.len(),
            Purpose::ALL.len() + 1,
            "one key per purpose and the retired one"
        );
        assert!(listed
            .iter()
            .any(|k| k.kid == first.kid && k.status == "retired"));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ServerKeys::load(tmp.path()).err().unwrap().to_string();
        assert!(e.contains("run chmod 600"), "{e}");
        assert!(keys.reload().is_err());
        assert_eq!(keys.registry_tokens.current().kid, new, "kept");
    }
}
