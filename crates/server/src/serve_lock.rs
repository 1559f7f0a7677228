//! Which process serves a data directory. `moat serve` holds an exclusive `flock` on `<data dir>/serve.lock` for
//! as long as it runs and writes into it where it answers (address, domain, region, scheme) and its pid. So:
//! - a second `moat serve` on the same directory refuses to start instead of sharing caches it cannot share;
//! - an operator command finds the running server, gives the registries it creates the login server that server
//!   actually answers on, and tells it (SIGHUP) to re-read what the command changed.
//!
//! The lock, not the file, says whether a server runs: the file stays after the server exits (removing it could
//! unlink a file a new server has just locked), and the kernel drops the lock of a process that dies.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name under the data directory.
pub const LOCK_FILE: &str = "serve.lock";
/// Where a running server says how far it has re-read the database after a SIGHUP: the activity log's sequence
/// number it had seen when the reload began (so every change recorded up to it is served).
pub const RELOADED_FILE: &str = "serve.reloaded";

/// Records that the server has re-read everything recorded up to activity sequence `seq` (written whole: a
/// reader sees the old value or the new one).
pub fn write_reloaded(data_dir: &Path, seq: i64) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{RELOADED_FILE}.tmp"));
    std::fs::write(&tmp, seq.to_string())?;
    std::fs::rename(&tmp, data_dir.join(RELOADED_FILE))
}

/// How far the running server has re-read (0: not since it started, or never).
pub fn reloaded(data_dir: &Path) -> i64 {
    std::fs::read_to_string(data_dir.join(RELOADED_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// What a running server writes into its lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub pid: u32,
    /// The main listener: the `default` registry's login server, and the port of every other login server.
    pub listen: SocketAddr,
    pub domain: String,
    pub region: String,
    pub insecure_http: bool,
}

impl ServerInfo {
    pub fn of(config: &crate::ServeConfig) -> ServerInfo {
        ServerInfo {
            pid: std::process::id(),
            listen: config.listen,
            domain: config.domain.as_str().to_string(),
            region: config.region.as_str().to_string(),
            insecure_http: config.insecure_http,
        }
    }

    /// Takes the server's address, domain, region and scheme into `config`: what an operator command must use
    /// while this server runs, whatever its own flags say.
    pub fn apply(&self, config: &mut crate::ServeConfig) -> Result<(), ServeLockError> {
        let bad = |what: &str| ServeLockError::Unreadable(format!("its {what} is not valid"));
        config.domain = moat_model::DnsDomain::parse(&self.domain).map_err(|_| bad("domain"))?;
        config.region = moat_model::Location::parse(&self.region).map_err(|_| bad("region"))?;
        config.listen = self.listen;
        config.insecure_http = self.insecure_http;
        Ok(())
    }

    /// Asks the server to re-read what an operator command changed (registries, private endpoints, keys) now
    /// rather than at its next periodic reload.
    pub fn notify(&self) {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return;
        };
        // SAFETY: kill only sends a signal; a pid that is gone or not ours fails with an error we ignore (the
        // server reloads within a second anyway).
        unsafe {
            libc::kill(pid, libc::SIGHUP);
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.insecure_http {
            "http"
        } else {
            "https"
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeLockError {
    #[error("another `moat serve` (pid {}, {}://{}) serves {dir}: stop it first, or give this one another --data-dir", .info.pid, .info.scheme(), .info.listen)]
    Held { dir: String, info: ServerInfo },
    #[error("a `moat serve` is starting on {dir} (its lock file {path} is still empty): try again in a moment")]
    Starting { dir: String, path: String },
    #[error("the running server's lock file cannot be used: {0}")]
    Unreadable(String),
    #[error("lock file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOCK_FILE)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServeLockError + '_ {
    move |source| ServeLockError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The lock of a running server; released when dropped (or when the process ends, however it ends).
pub struct ServeLock {
    _file: File,
}

impl ServeLock {
    /// Takes the data directory for this process, or says which server has it.
    pub fn acquire(data_dir: &Path, info: &ServerInfo) -> Result<ServeLock, ServeLockError> {
        let path = lock_path(data_dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(match read_info(&mut file) {
                    Some(info) => ServeLockError::Held {
                        dir: data_dir.display().to_string(),
                        info,
                    },
                    None => ServeLockError::Starting {
                        dir: data_dir.display().to_string(),
                        path: path.display().to_string(),
                    },
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        let text = serde_json::to_string(info).expect("server info serializes");
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(io(&path))?;
        Ok(ServeLock { _file: file })
    }

    /// The server that serves `data_dir` now, if one does.
    pub fn running(data_dir: &Path) -> Result<Option<ServerInfo>, ServeLockError> {
        let path = lock_path(data_dir);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        // A server writes its lock file right after taking the lock: an empty file under a held lock is one
        // that is starting, worth a short wait.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match file.try_lock_shared() {
                Ok(()) => return Ok(None),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
            }
            if let Some(info) = read_info(&mut file) {
                return Ok(Some(info));
            }
            if Instant::now() >= deadline {
                return Err(ServeLockError::Starting {
                    dir: data_dir.display().to_string(),
                    path: path.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_info(file: &mut File) -> Option<ServerInfo> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(port: u16) -> ServerInfo {
        ServerInfo {
            pid: std::process::id(),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            domain: "localhost".into(),
            region: "local".into(),
            insecure_http: false,
        }
    }

    #[test]
    fn one_server_per_directory_and_commands_find_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ServeLock::running(dir.path()).unwrap(), None);
        let lock = ServeLock::acquire(dir.path(), &info(5001)).unwrap();
        assert_eq!(
            ServeLock::running(dir.path()).unwrap(),
            Some(info(5001)),
            "a command sees the running server"
        );
        let e = ServeLock::acquire(dir.path(), &info(5002))
            .err()
            .expect("a second server on the same directory is refused");
        assert!(
            e.to_string().contains("https://127.0.0.1:5001"),
            "the refusal names the running server: {e}"
        );
        drop(lock);
        assert_eq!(
            ServeLock::running(dir.path()).unwrap(),
            None,
            "a stopped server's file is not a running server"
        );
        let _again = ServeLock::acquire(dir.path(), &info(5003)).unwrap();
        assert_eq!(ServeLock::running(dir.path()).unwrap(), Some(info(5003)));
    }
}
