//! The servers the bench starts (Moat, Distribution, Azurite): child processes in fresh directories, killed and
//! removed on drop; and the environment they are started from.

use super::*;

pub struct Server {
    pub name: &'static str,
    pub child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub port: u16,
}

impl Server {
    /// Spawns `cmd` with its output in `<dir>/<log>` and waits until it listens on `port` (and `file` exists).
    pub async fn start(
        name: &'static str,
        cmd: Command,
        dir: PathBuf,
        log: &str,
        port: u16,
        file: Option<PathBuf>,
    ) -> Result<Server> {
        let log = dir.join(log);
        let child = spawn(cmd, &log)?;
        let mut s = Server {
            name,
            child,
            dir,
            log,
            port,
        };
        s.wait_ready(file).await?;
        Ok(s)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        file_tail(&self.log)
    }

    /// Waits until the port accepts connections (and, for TLS, the CA file exists).
    pub async fn wait_ready(&mut self, file: Option<PathBuf>) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during startup ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let port_ok = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
                .await
                .is_ok();
            if port_ok && file.as_ref().is_none_or(|f| f.exists()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on 127.0.0.1:{} within {:?}; log:\n{}",
                    self.name,
                    self.port,
                    STARTUP_TIMEOUT,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last 20 lines of a log file.
pub fn file_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Spawns with the log file as stdout/stderr; the child is killed if this process dies first.
pub fn spawn(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))
}

pub struct Env {
    /// All temporary directories (server data, the disk test file) live under here.
    pub base: PathBuf,
    pub moat_bin: PathBuf,
    pub dist_bin: PathBuf,
    /// Workload 7b's client.
    pub skopeo_bin: PathBuf,
    pub counter: AtomicUsize,
}

impl Env {
    pub fn fresh_dir(&self, what: &str) -> Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let d = self.base.join(format!("{what}-{n}"));
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// The Moat binary with the bench's admin password and none of the caller's `MOAT_*` settings.
    pub fn moat_command(&self) -> Command {
        let mut cmd = Command::new(&self.moat_bin);
        cmd.env("MOAT_ADMIN_PASSWORD", "bench");
        for v in [
            "MOAT_DATA_DIR",
            "MOAT_LISTEN",
            "MOAT_DOMAIN",
            "MOAT_DATABASE_URL",
            "MOAT_INSECURE_HTTP",
            "MOAT_TLS_CERT",
            "MOAT_TLS_KEY",
        ] {
            cmd.env_remove(v);
        }
        cmd
    }

    pub async fn start_moat(&self, tls: bool) -> Result<Server> {
        self.start_moat_with(tls, &[]).await
    }

    /// Moat with extra `serve` flags.
    pub async fn start_moat_with(&self, tls: bool, extra: &[&str]) -> Result<Server> {
        let dir = self.fresh_dir(if tls { "moat-tls" } else { "moat" })?;
        let data = dir.join("data");
        let port = free_port()?;
        let mut cmd = self.moat_command();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        if !tls {
            cmd.arg("--insecure-http");
        }
        cmd.args(extra);
        let ca = tls.then(|| data.join("tls").join("ca.pem"));
        Server::start("moat", cmd, dir, "server.log", port, ca).await
    }

    pub async fn start_distribution(&self) -> Result<Server> {
        let dir = self.fresh_dir("distribution")?;
        let port = free_port()?;
        let config = dir.join("config.yml");
        // Debian's stock config minus auth and the public listener: filesystem storage, deletes enabled and the
        // in-memory blob descriptor cache; warn-level logs without the access log.
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("reg").display()
            ),
        )?;
        let mut cmd = Command::new(&self.dist_bin);
        cmd.arg("serve").arg(&config);
        Server::start("distribution", cmd, dir, "server.log", port, None).await
    }
}
