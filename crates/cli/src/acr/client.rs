//! HTTP to the server's AAD and ARM endpoints: trust, the token cache, ARM errors and long-running operations.

use super::CliError;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Scope asked for at the token endpoint (what the management SDK asks for).
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const SUBSCRIPTIONS_API: &str = "2022-12-01";
pub const RESOURCES_API: &str = "2024-11-01";
pub const ACR_API: &str = "2025-11-01";
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:5000";
const CA_HINT: &str =
    "pass --ca-bundle <data dir>/tls/ca.pem (the CA `moat serve` wrote) or set REQUESTS_CA_BUNDLE";

// ---------------------------------------------------------------------------------------------------------------
// Trust

/// The CA bundles to trust: `--ca-bundle`, else `REQUESTS_CA_BUNDLE`, else `MOAT_CA_BUNDLE`; plus the one recorded
/// at login (so a system-wide REQUESTS_CA_BUNDLE does not hide it). Empty means the webpki roots.
pub fn resolve_ca(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
    cached: Option<&str>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = flag {
        out.push(p.to_path_buf());
    } else if let Some(v) = ["REQUESTS_CA_BUNDLE", "MOAT_CA_BUNDLE"]
        .iter()
        .find_map(|k| env(k).filter(|v| !v.trim().is_empty()))
    {
        out.push(PathBuf::from(v));
    }
    if let Some(c) = cached.filter(|c| !c.is_empty()).map(PathBuf::from) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn show_paths(ca: &[PathBuf]) -> String {
    ca.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn tls_config(ca: &[PathBuf]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for path in ca {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA bundle {}: {CA_HINT}", path.display()))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert
                .with_context(|| format!("{} is not a PEM certificate bundle", path.display()))?;
            // Bundles such as the system one hold a few certificates rustls cannot use; skip those.
            if roots.add(cert).is_ok() {
                n += 1;
            }
        }
        if n == 0 {
            anyhow::bail!("no usable certificates in {}: {CA_HINT}", path.display());
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// An HTTP agent that trusts the bundles in `ca` (or the webpki roots when it is empty).
pub fn agent(ca: &[PathBuf]) -> anyhow::Result<ureq::Agent> {
    let mut b = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .user_agent(concat!("moat-cli/", env!("CARGO_PKG_VERSION")));
    if !ca.is_empty() {
        b = b.tls_config(Arc::new(tls_config(ca)?));
    }
    Ok(b.build())
}

// ---------------------------------------------------------------------------------------------------------------
// One HTTP exchange

/// A response of any status, with the headers the commands need.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub status_text: String,
    pub async_operation: Option<String>,
    pub location: Option<String>,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Option<Value> {
        if self.body.trim().is_empty() {
            None
        } else {
            serde_json::from_str(&self.body).ok()
        }
    }

    fn from_ureq(r: ureq::Response) -> Resp {
        let status = r.status();
        let status_text = r.status_text().to_string();
        let async_operation = r.header("azure-asyncoperation").map(str::to_string);
        let location = r.header("location").map(str::to_string);
        let retry_after = r.header("retry-after").map(str::to_string);
        let body = r.into_string().unwrap_or_default();
        Resp {
            status,
            status_text,
            async_operation,
            location,
            retry_after,
            body,
        }
    }
}

pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    Form(&'a [(&'a str, &'a str)]),
}

/// Sends one request; every HTTP status is a `Resp`, only transport failures are errors.
pub fn send(req: ureq::Request, body: Body, server: &str, ca: &[PathBuf]) -> anyhow::Result<Resp> {
    let url = req.url().to_string();
    let result = match body {
        Body::Empty => req.call(),
        Body::Json(v) => req.send_json(v),
        Body::Form(f) => req.send_form(f),
    };
    match result {
        Ok(r) => Ok(Resp::from_ureq(r)),
        Err(ureq::Error::Status(_, r)) => Ok(Resp::from_ureq(r)),
        Err(ureq::Error::Transport(t)) => Err(transport_error(&t, &url, server, ca).into()),
    }
}

fn transport_error(t: &ureq::Transport, url: &str, server: &str, ca: &[PathBuf]) -> CliError {
    let mut chain = t.to_string();
    let mut cert_problem = false;
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(e) = src {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            cert_problem |= matches!(r, rustls::Error::InvalidCertificate(_));
        }
        let s = e.to_string();
        if !chain.contains(&s) {
            chain.push_str(": ");
            chain.push_str(&s);
        }
        src = e.source();
    }
    cert_problem |= [
        "InvalidCertificate",
        "UnknownIssuer",
        "invalid peer certificate",
        "BadSignature",
    ]
    .iter()
    .any(|m| chain.contains(m));
    let message = if cert_problem {
        if ca.is_empty() {
            format!("the TLS certificate of {server} is not trusted ({chain}): {CA_HINT}")
        } else {
            format!(
                "the TLS certificate of {server} is not trusted by the CA bundle {} ({chain}). Pass the CA of this server: --ca-bundle <data dir>/tls/ca.pem, or set REQUESTS_CA_BUNDLE",
                show_paths(ca)
            )
        }
    } else if matches!(
        t.kind(),
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
    ) {
        format!("cannot connect to {server} ({chain}). Is `moat serve` running there? For another server, pass --server URL (or set MOAT_SERVER) to `moat login`")
    } else {
        format!("request to {url} failed: {chain}")
    };
    CliError::new(message, 1)
}

// ---------------------------------------------------------------------------------------------------------------
// ARM errors

/// `(Code) message\nCode: ...\nMessage: ...[\nTarget: ...]`, as az prints an ARM error envelope (also the flat
/// `{"code","message"}` form). `None` when the body is neither.
pub fn format_arm_error(body: &Value) -> Option<String> {
    let e = match body.get("error") {
        Some(e) if e.is_object() => e,
        _ if body.get("code").is_some() && body.get("message").is_some() => body,
        _ => return None,
    };
    Some(format_error_object(e))
}

fn format_error_object(e: &Value) -> String {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (code, message, target) = (s("code"), s("message"), s("target"));
    let mut out = format!("({code}) {message}\nCode: {code}\nMessage: {message}");
    if !target.is_empty() {
        out.push_str(&format!("\nTarget: {target}"));
    }
    if let Some(details) = e
        .get("details")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
    {
        out.push_str("\nException Details:");
        for d in details {
            let ds = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            out.push_str(&format!(
                "\t({}) {}\n\tCode: {}\n\tMessage: {}",
                ds("code"),
                ds("message"),
                ds("code"),
                ds("message")
            ));
        }
    }
    out
}

/// The error for a non-2xx ARM answer; 404 exits with 3 as az does for ResourceNotFound.
pub fn arm_error(r: &Resp) -> CliError {
    let code = if r.status == 404 { 3 } else { 1 };
    if let Some(msg) = r.json().as_ref().and_then(format_arm_error) {
        return CliError::new(msg, code);
    }
    let mut msg = format!(
        "Operation returned an invalid status '{}'",
        if r.status_text.is_empty() {
            r.status.to_string()
        } else {
            r.status_text.clone()
        }
    );
    if !r.body.trim().is_empty() {
        msg.push_str(&format!("\nContent: {}", r.body.trim()));
    }
    CliError::new(msg, code)
}

// ---------------------------------------------------------------------------------------------------------------
// AAD

/// `GET {server}/{tenant}/v2.0/.well-known/openid-configuration` → `token_endpoint`.
pub fn discover_token_endpoint(
    agent: &ureq::Agent,
    server: &str,
    tenant: &str,
    ca: &[PathBuf],
) -> anyhow::Result<String> {
    let url = format!(
        "{server}/{}/v2.0/.well-known/openid-configuration",
        encode(tenant)
    );
    let r = send(
        agent.get(&url).set("Accept", "application/json"),
        Body::Empty,
        server,
        ca,
    )?;
    if r.status != 200 {
        let detail = r
            .json()
            .and_then(|v| aad_error(&v))
            .or_else(|| r.json().as_ref().and_then(format_arm_error))
            .unwrap_or_else(|| r.body.trim().to_string());
        return Err(CliError::new(
            format!("tenant '{tenant}' is not known at {server} (GET {url} answered {}{}). Check --tenant (the `tenant` that `moat sp create` printed) and --server", r.status, if detail.is_empty() { String::new() } else { format!(": {detail}") }),
            1,
        )
        .into());
    }
    let doc = r
        .json()
        .with_context(|| format!("{url} did not answer JSON: is {server} a Moat server?"))?;
    doc.get("token_endpoint")
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("the discovery document at {url} has no token_endpoint"))
}

fn aad_error(v: &Value) -> Option<String> {
    let desc = v.get("error_description").and_then(Value::as_str);
    let err = v.get("error").and_then(Value::as_str);
    desc.or(err).map(str::to_string)
}

/// Client-credentials grant → (access token, lifetime in seconds).
pub fn client_credentials(
    agent: &ureq::Agent,
    token_endpoint: &str,
    app_id: &str,
    secret: &str,
    server: &str,
    ca: &[PathBuf],
) -> anyhow::Result<(String, i64)> {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", app_id),
        ("client_secret", secret),
        ("scope", ARM_SCOPE),
    ];
    let r = send(
        agent.post(token_endpoint).set("Accept", "application/json"),
        Body::Form(&form),
        server,
        ca,
    )?;
    let v = r.json();
    if r.status != 200 {
        let detail = v.as_ref().and_then(aad_error).unwrap_or_else(|| {
            format!("the token endpoint answered {} {}", r.status, r.body.trim())
        });
        return Err(CliError::new(
            format!("{detail}\nCheck the app id and secret (as `moat sp create` printed them) and the tenant, then run `moat login --service-principal -u APP_ID -p SECRET --tenant TENANT` again."),
            1,
        )
        .into());
    }
    let v =
        v.with_context(|| format!("the token endpoint {token_endpoint} did not answer JSON"))?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .context("the token response has no access_token")?
        .to_string();
    let expires_in = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(3599),
        Some(Value::String(s)) => s.parse().unwrap_or(3599),
        _ => 3599,
    };
    Ok((token, expires_in))
}

// ---------------------------------------------------------------------------------------------------------------
// The credential cache

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub server: String,
    pub tenant: String,
    pub app_id: String,
    pub secret: String,
    pub subscription_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_name: Option<String>,
    pub access_token: String,
    /// RFC 3339.
    pub expires_on: String,
    /// The CA bundle used at login, trusted again by later commands unless another is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

impl Credentials {
    /// Whether the token has less than a minute left (or its expiry cannot be read).
    pub fn expired(&self, now: time::OffsetDateTime) -> bool {
        match time::OffsetDateTime::parse(
            &self.expires_on,
            &time::format_description::well_known::Rfc3339,
        ) {
            Ok(t) => t - time::Duration::seconds(60) <= now,
            Err(_) => true,
        }
    }
}

pub fn expires_on(now: time::OffsetDateTime, expires_in: i64) -> String {
    (now + time::Duration::seconds(expires_in.max(0)))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `$MOAT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/moat`, else `~/.config/moat`.
pub fn config_dir(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(d) = set("MOAT_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = set("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("moat"));
    }
    let home = set("HOME")
        .context("cannot find a configuration directory: set MOAT_CONFIG_DIR or HOME")?;
    Ok(PathBuf::from(home).join(".config").join("moat"))
}

pub fn credentials_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir(env_var)?.join("credentials.json"))
}

pub fn save_credentials(path: &Path, c: &Credentials) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path.parent().context("credentials path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create {}: set MOAT_CONFIG_DIR to a writable directory",
                dir.display()
            )
        })?;
    let tmp = dir.join(format!(".credentials.json.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(
            serde_json::to_string_pretty(c)
                .map_err(std::io::Error::other)?
                .as_bytes(),
        )?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| {
            format!(
                "cannot write {}: set MOAT_CONFIG_DIR to a writable directory",
                path.display()
            )
        })
}

pub fn load_credentials(path: &Path) -> anyhow::Result<Credentials> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::new("Please run 'moat login --service-principal -u APP_ID -p SECRET --tenant TENANT' to setup account.", 1).into())
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::new(
            format!(
                "{} is not a Moat credential cache ({e}): run 'moat login' again",
                path.display()
            ),
            1,
        )
        .into()
    })
}

// ---------------------------------------------------------------------------------------------------------------
// An authenticated ARM session

pub struct Session {
    pub creds: Credentials,
    path: PathBuf,
    agent: ureq::Agent,
    ca: Vec<PathBuf>,
    command_name: String,
}

impl Session {
    /// Loads the cached login; `ca_flag` is `--ca-bundle`.
    pub fn load(ca_flag: Option<&Path>, command_name: &str) -> anyhow::Result<Session> {
        let path = credentials_path()?;
        let creds = load_credentials(&path)?;
        let ca = resolve_ca(ca_flag, env_var, creds.ca_bundle.as_deref());
        let agent = agent(&ca)?;
        Ok(Session {
            creds,
            path,
            agent,
            ca,
            command_name: command_name.to_string(),
        })
    }

    pub fn subscription_label(&self) -> String {
        match &self.creds.subscription_name {
            Some(n) => format!("{n} ({})", self.creds.subscription_id),
            None => self.creds.subscription_id.clone(),
        }
    }

    fn renew(&mut self) -> anyhow::Result<()> {
        let c = &self.creds;
        let endpoint = discover_token_endpoint(&self.agent, &c.server, &c.tenant, &self.ca)?;
        let (token, expires_in) = client_credentials(
            &self.agent,
            &endpoint,
            &c.app_id,
            &c.secret,
            &c.server,
            &self.ca,
        )?;
        self.creds.access_token = token;
        self.creds.expires_on = expires_on(time::OffsetDateTime::now_utc(), expires_in);
        save_credentials(&self.path, &self.creds)
    }

    fn token(&mut self) -> anyhow::Result<(String, bool)> {
        if self.creds.expired(time::OffsetDateTime::now_utc()) {
            self.renew()?;
            return Ok((self.creds.access_token.clone(), true));
        }
        Ok((self.creds.access_token.clone(), false))
    }

    /// Absolute URL for a server path (URLs from headers and `nextLink` are used as given).
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.creds.server, path_or_url)
        }
    }

    /// One ARM request with the bearer token. A 401 renews the token and tries once more; other non-2xx answers
    /// become the az-style error.
    pub fn request(
        &mut self,
        method: &str,
        path_or_url: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Resp> {
        let url = self.url(path_or_url);
        let (mut token, mut fresh) = self.token()?;
        loop {
            let mut req = self
                .agent
                .request(method, &url)
                .set("Authorization", &format!("Bearer {token}"))
                .set("Accept", "application/json")
                .set("CommandName", &self.command_name);
            let b = match body {
                Some(v) => Body::Json(v),
                None if method == "POST" => {
                    req = req.set("Content-Length", "0");
                    Body::Empty
                }
                None => Body::Empty,
            };
            let r = send(req, b, &self.creds.server.clone(), &self.ca)?;
            if r.status == 401 && !fresh {
                self.renew()?;
                token = self.creds.access_token.clone();
                fresh = true;
                continue;
            }
            if r.status == 401 {
                let detail = r
                    .json()
                    .as_ref()
                    .and_then(format_arm_error)
                    .unwrap_or_else(|| format!("{} answered 401 Unauthorized", self.creds.server));
                return Err(CliError::new(
                    format!("{detail}\nThe server did not accept the login. Run 'moat login --service-principal -u APP_ID -p SECRET --tenant TENANT' again."),
                    1,
                )
                .into());
            }
            if !(200..300).contains(&r.status) {
                return Err(arm_error(&r).into());
            }
            return Ok(r);
        }
    }

    /// GET a JSON document.
    pub fn get_json(&mut self, path_or_url: &str) -> anyhow::Result<Value> {
        let r = self.request("GET", path_or_url, None)?;
        r.json()
            .with_context(|| format!("GET {} did not answer JSON", self.url(path_or_url)))
    }

    /// Every item of a pageable list, following `nextLink`.
    pub fn list_all(&mut self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        let mut pages = 0;
        while let Some(p) = next.take() {
            let v = self.get_json(&p)?;
            if let Some(items) = v.get("value").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            next = v
                .get("nextLink")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            pages += 1;
            if pages > 10_000 {
                anyhow::bail!("the server's nextLink chain for {path} does not end");
            }
        }
        Ok(out)
    }

    /// PUT/PATCH a resource and wait for it as the SDK does (Azure-AsyncOperation, then GET the resource; or poll
    /// the resource while its provisioningState is not final). `None` with `no_wait`.
    pub fn put_or_patch(
        &mut self,
        method: &str,
        path: &str,
        body: &Value,
        no_wait: bool,
    ) -> anyhow::Result<Option<Value>> {
        let r = self.request(method, path, Some(body))?;
        if no_wait {
            return Ok(None);
        }
        let mut spinner = Spinner::new();
        if let Some(op) = r.async_operation.clone() {
            let status = self.poll_async_operation(&op, r.retry_after.as_deref(), &mut spinner)?;
            let target = status
                .get("resourceLocation")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| path.to_string());
            let v = self.get_json(&target);
            spinner.finish();
            return v.map(Some);
        }
        let mut current = r.json();
        let mut wait = retry_after(r.retry_after.as_deref());
        loop {
            let state = current
                .as_ref()
                .and_then(|v| v.pointer("/properties/provisioningState"))
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase);
            match state.as_deref() {
                None | Some("succeeded") => {
                    spinner.finish();
                    return match current {
                        Some(v) => Ok(Some(v)),
                        None => self.get_json(path).map(Some),
                    };
                }
                Some("failed") | Some("canceled") => {
                    spinner.finish();
                    return Err(CliError::new(
                        format!(
                            "the operation ended with provisioningState '{}'",
                            state.unwrap_or_default()
                        ),
                        1,
                    )
                    .into());
                }
                Some(_) => {
                    spinner.sleep(wait);
                    let r = self.request("GET", path, None)?;
                    wait = retry_after(r.retry_after.as_deref());
                    current = r.json();
                }
            }
        }
    }

    /// DELETE and wait: 200/204 are done; 202 is polled through Azure-AsyncOperation or Location.
    pub fn delete(&mut self, path: &str, no_wait: bool) -> anyhow::Result<()> {
        let r = self.request("DELETE", path, None)?;
        if no_wait || r.status != 202 {
            return Ok(());
        }
        let mut spinner = Spinner::new();
        if let Some(op) = r.async_operation.clone() {
            self.poll_async_operation(&op, r.retry_after.as_deref(), &mut spinner)?;
        } else if let Some(loc) = r.location.clone() {
            self.poll_location(&loc, r.retry_after.as_deref(), &mut spinner)?;
        }
        spinner.finish();
        Ok(())
    }

    /// Polls an Azure-AsyncOperation URL until its status is final; returns the final status body.
    fn poll_async_operation(
        &mut self,
        url: &str,
        first_wait: Option<&str>,
        spinner: &mut Spinner,
    ) -> anyhow::Result<Value> {
        let _ = first_wait; // the first poll is immediate, as the SDK does
        loop {
            spinner.tick();
            let r = match self.request("GET", url, None) {
                Ok(r) => r,
                Err(e) => {
                    spinner.finish();
                    return Err(e);
                }
            };
            let v = r.json().unwrap_or(Value::Null);
            let status = v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            match status.as_str() {
                "succeeded" => return Ok(v),
                "failed" => {
                    spinner.finish();
                    let msg = match v.get("error") {
                        Some(e) if e.is_object() => format_error_object(e),
                        _ => format!("the operation failed: {}", r.body.trim()),
                    };
                    return Err(CliError::new(msg, 1).into());
                }
                "canceled" | "cancelled" => {
                    spinner.finish();
                    return Err(CliError::new(
                        format!("the operation was canceled: {}", r.body.trim()),
                        1,
                    )
                    .into());
                }
                _ => spinner.sleep(retry_after(r.retry_after.as_deref())),
            }
        }
    }

    /// Polls a Location URL: 202 = running, 200/204 = done.
    fn poll_location(
        &mut self,
        url: &str,
        first_wait: Option<&str>,
        spinner: &mut Spinner,
    ) -> anyhow::Result<Resp> {
        let _ = first_wait;
        loop {
            spinner.tick();
            let r = match self.request("GET", url, None) {
                Ok(r) => r,
                Err(e) => {
                    spinner.finish();
                    return Err(e);
                }
            };
            if r.status != 202 {
                return Ok(r);
            }
            spinner.sleep(retry_after(r.retry_after.as_deref()));
        }
    }
}

/// Seconds to wait from a `Retry-After` header (default 1, at most 60).
pub fn retry_after(h: Option<&str>) -> Duration {
    let secs = h
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .min(60);
    Duration::from_secs(secs).max(Duration::from_millis(100))
}

/// ` \ Running ..` on stderr while waiting, when stderr is a terminal.
pub struct Spinner {
    tty: bool,
    frame: usize,
    shown: bool,
}

impl Spinner {
    pub fn new() -> Spinner {
        Spinner {
            tty: std::io::stderr().is_terminal(),
            frame: 0,
            shown: false,
        }
    }

    pub fn tick(&mut self) {
        if !self.tty {
            return;
        }
        const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r {} Running ..", FRAMES[self.frame % 4]);
        let _ = e.flush();
        self.frame += 1;
        self.shown = true;
    }

    pub fn sleep(&mut self, d: Duration) {
        let step = Duration::from_millis(125);
        let mut left = d;
        while !left.is_zero() {
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
            self.tick();
        }
    }

    pub fn finish(&mut self) {
        if self.shown {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[K");
            let _ = e.flush();
            self.shown = false;
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (as az encodes `$filter`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arm_envelope_is_printed_like_az() {
        let v = json!({"error":{"code":"BadRequest","message":"Enabling public network access is not supported.","target":"publicNetworkAccess"}});
        assert_eq!(
            format_arm_error(&v).unwrap(),
            "(BadRequest) Enabling public network access is not supported.\nCode: BadRequest\nMessage: Enabling public network access is not supported.\nTarget: publicNetworkAccess"
        );
        let flat = json!({"code":"X","message":"M"});
        assert_eq!(
            format_arm_error(&flat).unwrap(),
            "(X) M\nCode: X\nMessage: M"
        );
        assert_eq!(format_arm_error(&json!({"status":"Failed"})), None);
        let details =
            json!({"error":{"code":"X","message":"M","details":[{"code":"I","message":"m"}]}});
        assert_eq!(
            format_arm_error(&details).unwrap(),
            "(X) M\nCode: X\nMessage: M\nException Details:\t(I) m\n\tCode: I\n\tMessage: m"
        );
    }

    #[test]
    fn non_json_errors_and_exit_codes() {
        let r = Resp {
            status: 500,
            status_text: "Internal Server Error".into(),
            async_operation: None,
            location: None,
            retry_after: None,
            body: "boom".into(),
        };
        let e = arm_error(&r);
        assert_eq!(e.code, 1);
        assert_eq!(
            e.message,
            "Operation returned an invalid status 'Internal Server Error'\nContent: boom"
        );
        let r404 = Resp {
            status: 404,
            body: r#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#.into(),
            ..r
        };
        let e = arm_error(&r404);
        assert_eq!(e.code, 3);
        assert!(e.message.starts_with("(ResourceNotFound) gone"));
    }

    #[test]
    fn ca_bundle_precedence() {
        let env = |k: &str| match k {
            "REQUESTS_CA_BUNDLE" => Some("/req.pem".to_string()),
            "MOAT_CA_BUNDLE" => Some("/moat.pem".to_string()),
            _ => None,
        };
        let v = |ps: &[&str]| ps.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            resolve_ca(Some(Path::new("/flag.pem")), env, Some("/c.pem")),
            v(&["/flag.pem", "/c.pem"])
        );
        assert_eq!(
            resolve_ca(Some(Path::new("/flag.pem")), env, None),
            v(&["/flag.pem"])
        );
        assert_eq!(
            resolve_ca(None, env, Some("/c.pem")),
            v(&["/req.pem", "/c.pem"])
        );
        assert_eq!(resolve_ca(None, env, Some("/req.pem")), v(&["/req.pem"]));
        let only_moat = |k: &str| {
            if k == "MOAT_CA_BUNDLE" {
                Some("/moat.pem".to_string())
            } else {
                Some(String::new())
            }
        };
        assert_eq!(resolve_ca(None, only_moat, None), v(&["/moat.pem"]));
        assert_eq!(resolve_ca(None, |_| None, Some("/c.pem")), v(&["/c.pem"]));
        assert!(resolve_ca(None, |_| None, None).is_empty());
    }

    #[test]
    fn config_dir_precedence() {
        let e = |m: &'static [(&'static str, &'static str)]| {
            move |k: &str| m.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(
            config_dir(e(&[
                ("MOAT_CONFIG_DIR", "/a"),
                ("XDG_CONFIG_HOME", "/x"),
                ("HOME", "/h")
            ]))
            .unwrap(),
            PathBuf::from("/a")
        );
        assert_eq!(
            config_dir(e(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/x/moat")
        );
        assert_eq!(
            config_dir(e(&[("MOAT_CONFIG_DIR", ""), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.config/moat")
        );
        assert!(config_dir(e(&[])).is_err());
    }

    #[test]
    fn token_expiry() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut c = Credentials {
            server: "https://h".into(),
            tenant: "t".into(),
            app_id: "a".into(),
            secret: "s".into(),
            subscription_id: "sub".into(),
            subscription_name: None,
            access_token: "tok".into(),
            expires_on: expires_on(now, 3599),
            ca_bundle: None,
        };
        assert!(!c.expired(now));
        assert!(c.expired(now + time::Duration::seconds(3550)));
        c.expires_on = "garbage".into();
        assert!(c.expired(now));
    }

    #[test]
    fn credentials_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("moat-cred-test-{}", std::process::id()));
        let path = dir.join("sub").join("credentials.json");
        let c = Credentials {
            server: "https://127.0.0.1:5000".into(),
            tenant: "t".into(),
            app_id: "a".into(),
            secret: "s".into(),
            subscription_id: "sub".into(),
            subscription_name: Some("Moat".into()),
            access_token: "tok".into(),
            expires_on: "2030-01-01T00:00:00Z".into(),
            ca_bundle: Some("/ca.pem".into()),
        };
        save_credentials(&path, &c).unwrap();
        save_credentials(&path, &c).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_credentials(&path).unwrap(), c);
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "server",
            "tenant",
            "appId",
            "secret",
            "subscriptionId",
            "accessToken",
            "expiresOn",
        ] {
            assert!(
                text.contains(&format!("\"{key}\"")),
                "{key} missing in {text}"
            );
        }
        let missing = load_credentials(&dir.join("nope.json")).unwrap_err();
        assert!(missing.to_string().contains("moat login"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn encoding_and_retry_after() {
        assert_eq!(
            encode("resourceType eq 'Microsoft.ContainerRegistry/registries'"),
            "resourceType%20eq%20%27Microsoft.ContainerRegistry%2Fregistries%27"
        );
        assert_eq!(retry_after(None), Duration::from_secs(1));
        assert_eq!(retry_after(Some("3")), Duration::from_secs(3));
        assert_eq!(retry_after(Some("0")), Duration::from_millis(100));
        assert_eq!(retry_after(Some("9999")), Duration::from_secs(60));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015")),
            Duration::from_secs(1)
        );
    }
}
