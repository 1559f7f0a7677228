//! The data directory is the server's alone (DESIGN principle 8): it holds the keys that sign every token, so a
//! local user who can read it can become Owner. The process creates everything with umask 077 (directories
//! 0700, files 0600, whoever writes them: SQLite and its WAL, blobs, uploads, TLS material, key files), and
//! refuses to use a directory or key file that another user owns or that group or others may access, saying how
//! to fix it the way PostgreSQL and ssh do.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{what} \"{path}\" has invalid permissions ({mode:04o}): it must be {want:04o} ({symbolic}): run chmod {want:o} {path}")]
    Permissions {
        what: &'static str,
        path: String,
        mode: u32,
        want: u32,
        symbolic: &'static str,
    },
    #[error("{what} \"{path}\" is owned by uid {owner}, not by the server's user (uid {me}): run chown {me} {path}, or run moat as its owner")]
    Owner {
        what: &'static str,
        path: String,
        owner: u32,
        me: u32,
    },
    #[error("{what} \"{path}\": {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Makes every file and directory this process creates private to its user. Call before the first write.
pub fn restrict_umask() {
    // SAFETY: umask only swaps the process's file-mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates the data directory (0700) if it is missing, tightens it if it exists but is empty (a directory just
/// made for the server, as initdb does), and otherwise checks it.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    restrict_umask();
    let io = |source| DataDirError::Io {
        what: "data directory",
        path: dir.display().to_string(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    } else if dir.is_dir() && std::fs::read_dir(dir).map_err(io)?.next().is_none() {
        let meta = std::fs::metadata(dir).map_err(io)?;
        if meta.uid() == euid() && meta.mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    check_private_dir(dir, "data directory")
}

/// The other secrets the server keeps in files (the local CA's private key, the generated admin password): checked
/// at start like key files, when they exist.
pub fn check_secret_files(data_dir: &Path) -> Result<(), DataDirError> {
    for (rel, what) in [
        ("tls/ca-key.pem", "key file"),
        ("admin-password", "password file"),
    ] {
        let path = data_dir.join(rel);
        if path.exists() {
            check_private_file(&path, what)?;
        }
    }
    Ok(())
}

/// A directory only the server's user may enter: mode 0700 (or stricter), owned by that user.
pub fn check_private_dir(path: &Path, what: &'static str) -> Result<(), DataDirError> {
    check(path, what, 0o700, "u=rwx")
}

/// A file only the server's user may read: mode 0600 (or stricter), owned by that user.
pub fn check_private_file(path: &Path, what: &'static str) -> Result<(), DataDirError> {
    check(path, what, 0o600, "u=rw")
}

fn check(
    path: &Path,
    what: &'static str,
    want: u32,
    symbolic: &'static str,
) -> Result<(), DataDirError> {
    let meta = std::fs::metadata(path).map_err(|source| DataDirError::Io {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let me = euid();
    if meta.uid() != me {
        return Err(DataDirError::Owner {
            what,
            path: path.display().to_string(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(DataDirError::Permissions {
            what,
            path: path.display().to_string(),
            mode,
            want,
            symbolic,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_tightens_and_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/data");
        prepare(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&empty).unwrap();
        assert_eq!(std::fs::metadata(&empty).unwrap().mode() & 0o777, 0o700);

        for mode in [0o755, 0o750, 0o701, 0o711] {
            std::fs::write(empty.join("moat.db"), b"x").unwrap();
            std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = prepare(&empty).unwrap_err().to_string();
            assert!(
                e.contains(&format!("({mode:04o})")) && e.contains("run chmod 700"),
                "{e}"
            );
        }
        let key = tmp.path().join("k");
        std::fs::write(&key, b"x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private_file(&key, "key file")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(0644): it must be 0600 (u=rw): run chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        check_private_file(&key, "key file").unwrap();

        std::fs::create_dir(fresh.join("tls")).unwrap();
        let ca_key = fresh.join("tls/ca-key.pem");
        std::fs::write(&ca_key, b"x").unwrap();
        check_secret_files(&fresh).unwrap();
        std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(check_secret_files(&fresh).is_err());
    }
}
