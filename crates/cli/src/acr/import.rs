//! `moat acr import`: `POST REG/importImage` as `az acr import` sends it, then the wait on the operation's
//! `Location` with a progress bar (bytes and layers) while the server copies from a remote registry.
//!
//! The source is named as az names it: with `--registry/-r` (a registry of the subscription by name, login server or
//! resource id) `--source` is `repo[:tag|@digest]`; without it `--source` is fully qualified,
//! `[http(s)://]host[:port]/repo[:tag|@digest]`, and a host that is the login server of one of the subscription's
//! registries becomes that registry's `resourceId` (a copy within the server, no byte moved), any other host a
//! `registryUri` (a pull from that registry, with `-u/-p` as its credentials).

use super::client::{encode, retry_after, Resp, Session, ACR_API};
use super::commands::{registry_url, with_api, REGISTRY_TYPE};
use super::output::resource_group_from_id;
use super::{CliError, OutputFormat};
use clap::Args;
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub const CREDENTIALS_INVALID: &str = "Authentication failed. Please provide password.";
pub const REGISTRY_NOT_FOUND: &str = "The source container registry can not be found in the current subscription. Please provide a valid address and/or credentials.";
pub const SOURCE_NOT_FOUND: &str = "Source cannot be found. Please provide a valid image and source registry or a fully qualified source.";

/// `moat acr import`'s flags (az's names).
#[derive(Args, Clone, Debug, Default)]
pub struct ImportArgs {
    /// The target registry's name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// The target registry's resource group; looked up from the name when omitted.
    #[arg(long = "resource-group", short = 'g')]
    pub resource_group: Option<String>,
    /// The image to import: `repo[:tag|@digest]` with --registry, else fully qualified
    /// `[http(s)://]host[:port]/repo[:tag|@digest]`.
    #[arg(long, short = 's', value_name = "IMAGE")]
    pub source: String,
    /// The source registry of this subscription: its name, login server or resource id.
    #[arg(long = "registry", short = 'r', value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// A target tag `repo[:tag]` (repeatable); default: the source's repository and tag.
    #[arg(long = "image", short = 't', value_name = "REPO[:TAG]")]
    pub image: Vec<String>,
    /// A repository to import the manifest into without a tag (repeatable).
    #[arg(long, value_name = "REPO")]
    pub repository: Vec<String>,
    /// The user name for the source registry (with --password).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// The password or token for the source registry.
    #[arg(long, short = 'p')]
    pub password: Option<String>,
    /// Overwrite target tags that exist.
    #[arg(long)]
    pub force: bool,
    /// Do not wait for the import to finish.
    #[arg(long)]
    pub no_wait: bool,
}

// ---------------------------------------------------------------------------------------------------------------
// Flags → the request body (pure)

/// Checks that need no server: a user name needs a password.
pub fn validate(a: &ImportArgs) -> Result<(), CliError> {
    if a.username.is_some() && a.password.is_none() {
        return Err(CliError::new(CREDENTIALS_INVALID, 2));
    }
    if a.source.trim().is_empty() {
        return Err(CliError::new(SOURCE_NOT_FOUND, 2));
    }
    Ok(())
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn looks_like_resource_id(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    l.starts_with("/subscriptions/")
        && l.contains("/resourcegroups/")
        && l.contains("/providers/microsoft.containerregistry/registries/")
}

/// The registry of `registries` (an ARM listing) whose name, login server or id is `key`, case-insensitively.
pub fn find_registry<'a>(registries: &'a [Value], key: &str) -> Option<&'a Value> {
    let key = key.trim().trim_end_matches('/');
    registries.iter().find(|r| {
        [s(r, "/name"), s(r, "/properties/loginServer"), s(r, "/id")]
            .iter()
            .any(|v| !v.is_empty() && v.eq_ignore_ascii_case(key))
    })
}

/// The registry whose login server is `host` (`host[:port]`), case-insensitively.
fn find_by_login_server<'a>(registries: &'a [Value], host: &str) -> Option<&'a Value> {
    registries.iter().find(|r| {
        let ls = s(r, "/properties/loginServer");
        !ls.is_empty() && ls.eq_ignore_ascii_case(host)
    })
}

fn credentials(a: &ImportArgs) -> Option<Value> {
    let password = a.password.as_ref()?;
    let mut c = Map::new();
    if let Some(u) = &a.username {
        c.insert("username".into(), json!(u));
    }
    c.insert("password".into(), json!(password));
    Some(Value::Object(c))
}

/// `[http(s)://]host[:port]/image` → (the registry URI as given, with its scheme if any; `host[:port]`; image).
fn split_qualified(source: &str) -> Option<(String, String, String)> {
    let lower = source.to_ascii_lowercase();
    let (scheme, rest) = ["http://", "https://"]
        .iter()
        .find(|p| lower.starts_with(**p))
        .map(|p| (&source[..p.len()], &source[p.len()..]))
        .unwrap_or(("", source));
    let (host, image) = rest.split_once('/')?;
    if host.is_empty() || image.is_empty() {
        return None;
    }
    // As docker reads a reference: the first component names a registry only when it has a dot or a port or is
    // `localhost` (else `library/ubuntu` would be taken for a host called `library`). An explicit scheme says so.
    let is_host = !scheme.is_empty()
        || host.contains('.')
        || host.contains(':')
        || host.eq_ignore_ascii_case("localhost")
        || host.starts_with('[');
    if !is_host {
        return None;
    }
    Some((
        format!("{scheme}{host}"),
        host.to_string(),
        image.to_string(),
    ))
}

/// The `source` object of ImportImageParameters, from the flags and the subscription's registries.
pub fn import_source(a: &ImportArgs, registries: &[Value]) -> Result<Value, CliError> {
    validate(a)?;
    let creds = credentials(a);
    let mut source = Map::new();
    let image: String;
    match &a.registry {
        Some(reg) => {
            match find_registry(registries, reg) {
                Some(r) => {
                    let login_server = s(r, "/properties/loginServer");
                    // `--source` may repeat the registry's login server: keep the image only.
                    image = match a.source.split_once('/') {
                        Some((h, rest))
                            if !login_server.is_empty() && h.eq_ignore_ascii_case(login_server) =>
                        {
                            rest.to_string()
                        }
                        _ => a.source.clone(),
                    };
                    if let (Some(c), false) = (&creds, login_server.is_empty()) {
                        // As az: credentials mean a pull through the login server with them.
                        source.insert("registryUri".into(), json!(login_server));
                        source.insert("credentials".into(), c.clone());
                    } else {
                        source.insert("resourceId".into(), json!(s(r, "/id")));
                    }
                }
                None if looks_like_resource_id(reg) => {
                    image = a.source.clone();
                    source.insert("resourceId".into(), json!(reg.trim()));
                }
                None => return Err(CliError::new(REGISTRY_NOT_FOUND, 1)),
            }
        }
        None => {
            let (uri, host, img) = split_qualified(a.source.trim())
                .ok_or_else(|| CliError::new(SOURCE_NOT_FOUND, 2))?;
            image = img;
            match (find_by_login_server(registries, &host), &creds) {
                (Some(r), None) => {
                    source.insert("resourceId".into(), json!(s(r, "/id")));
                }
                (_, creds) => {
                    source.insert("registryUri".into(), json!(uri));
                    if let Some(c) = creds {
                        source.insert("credentials".into(), c.clone());
                    }
                }
            }
        }
    }
    if image.is_empty() {
        return Err(CliError::new(SOURCE_NOT_FOUND, 2));
    }
    source.insert("sourceImage".into(), json!(image));
    Ok(Value::Object(source))
}

/// The whole ImportImageParameters body. Neither `-t` nor `--repository`: the source image without its digest is
/// the target (as az does).
pub fn import_body(a: &ImportArgs, registries: &[Value]) -> Result<Value, CliError> {
    let source = import_source(a, registries)?;
    let image = s(&source, "/sourceImage");
    let mut targets = a.image.clone();
    if targets.is_empty() && a.repository.is_empty() {
        targets.push(image.split('@').next().unwrap_or(image).to_string());
    }
    let mut body = Map::new();
    body.insert("source".into(), source);
    if !targets.is_empty() {
        body.insert("targetTags".into(), json!(targets));
    }
    if !a.repository.is_empty() {
        body.insert("untaggedTargetRepositories".into(), json!(a.repository));
    }
    body.insert(
        "mode".into(),
        json!(if a.force { "Force" } else { "NoForce" }),
    );
    Ok(Value::Object(body))
}

// ---------------------------------------------------------------------------------------------------------------
// Progress

/// What an import operation reports while it runs (`properties` of the poll body; `percentComplete`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub percent: Option<f64>,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub layers_total: u64,
    pub layers_done: u64,
}

fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Progress {
    pub fn from_body(v: &Value) -> Progress {
        let p = v.get("properties").unwrap_or(v);
        let u = |k: &str| num(p.get(k)).map(|n| n.max(0.0) as u64).unwrap_or(0);
        Progress {
            percent: num(v.get("percentComplete")).map(|p| p.clamp(0.0, 100.0)),
            bytes_total: u("bytesTotal"),
            bytes_done: u("bytesDone"),
            layers_total: u("layersTotal"),
            layers_done: u("layersDone"),
        }
    }

    /// `12.0 MiB/40.0 MiB, layers 2/5` (or `reading manifests` before the totals are known).
    pub fn line(&self) -> String {
        if self.bytes_total == 0 && self.layers_total == 0 {
            return match self.percent {
                Some(p) if p > 0.0 => format!("{p:.0}%"),
                _ => "reading manifests".to_string(),
            };
        }
        if self.bytes_total == 0 {
            return format!("layers {}/{}", self.layers_done, self.layers_total);
        }
        format!(
            "{}/{}, layers {}/{}",
            human(self.bytes_done),
            human(self.bytes_total),
            self.layers_done,
            self.layers_total
        )
    }
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// A progress bar on a terminal; elsewhere one line on stderr when the figures change, at most once a second.
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    last_line: Option<(Instant, String)>,
}

impl Reporter {
    fn new() -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(Reporter::style(false));
            bar.set_message("reading manifests");
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Reporter {
            bar,
            last_line: None,
        }
    }

    fn style(known: bool) -> indicatif::ProgressStyle {
        let template = if known {
            "{spinner} Importing [{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg} ({elapsed})"
        } else {
            "{spinner} Importing {msg} ({elapsed})"
        };
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
            .progress_chars("=> ")
    }

    fn update(&mut self, p: &Progress) {
        match &self.bar {
            Some(bar) => {
                if p.bytes_total > 0 {
                    if bar.length() != Some(p.bytes_total) {
                        bar.set_style(Reporter::style(true));
                        bar.set_length(p.bytes_total);
                    }
                    bar.set_position(p.bytes_done.min(p.bytes_total));
                    bar.set_message(format!("layers {}/{}", p.layers_done, p.layers_total));
                } else {
                    bar.set_message(p.line());
                }
            }
            None => {
                let line = p.line();
                let due = match &self.last_line {
                    None => true,
                    Some((at, prev)) => *prev != line && at.elapsed() >= Duration::from_secs(1),
                };
                if due {
                    let mut e = std::io::stderr().lock();
                    let _ = writeln!(e, "Importing: {line}");
                    let _ = e.flush();
                    self.last_line = Some((Instant::now(), line));
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The command

/// The final state of a poll answer: `None` while the operation runs.
fn outcome(r: &Resp) -> Option<Result<(), CliError>> {
    if r.status == 202 {
        return None;
    }
    let body = r.json().unwrap_or(Value::Null);
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    match status.as_str() {
        "failed" => {
            let msg = super::client::format_arm_error(&body)
                .unwrap_or_else(|| format!("the import failed: {}", r.body.trim()));
            Some(Err(CliError::new(msg, 1)))
        }
        "canceled" | "cancelled" => Some(Err(CliError::new(
            format!("the import was canceled: {}", r.body.trim()),
            1,
        ))),
        "inprogress" | "running" | "accepted" | "notstarted" | "started" => None,
        _ => Some(Ok(())),
    }
}

pub fn run(session: &mut Session, a: ImportArgs, _out: OutputFormat) -> anyhow::Result<()> {
    validate(&a)?;
    let sub = session.creds.subscription_id.clone();
    let list = with_api(
        &format!("/subscriptions/{}/providers/{REGISTRY_TYPE}", encode(&sub)),
        ACR_API,
    );
    let registries = session.list_all(&list)?;
    let body = import_body(&a, &registries)?;
    // The target's resource group: -g, else from the listing just read, else az's /resources lookup.
    let rg = a.resource_group.clone().or_else(|| {
        registries
            .iter()
            .find(|r| s(r, "/name").eq_ignore_ascii_case(&a.name))
            .and_then(|r| resource_group_from_id(s(r, "/id")))
    });
    let url = registry_url(session, &a.name, rg)?.replacen('?', "/importImage?", 1);
    let r = session.request("POST", &url, Some(&body))?;
    if a.no_wait || r.status != 202 {
        return match outcome(&r) {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(()),
        };
    }
    let poll = match r.location.clone().or_else(|| r.async_operation.clone()) {
        Some(u) => u,
        // 202 with nowhere to ask: the server took the import and will do it.
        None => return Ok(()),
    };
    let mut reporter = Reporter::new();
    if let Some(v) = r.json() {
        reporter.update(&Progress::from_body(&v));
    }
    let mut wait = retry_after(r.retry_after.as_deref());
    loop {
        std::thread::sleep(wait);
        let r = match session.request("GET", &poll, None) {
            Ok(r) => r,
            Err(e) => {
                reporter.finish();
                return Err(e);
            }
        };
        if let Some(v) = r.json() {
            reporter.update(&Progress::from_body(&v));
        }
        if let Some(done) = outcome(&r) {
            reporter.finish();
            return done.map_err(Into::into);
        }
        wait = retry_after(r.retry_after.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "/subscriptions/s/resourceGroups";

    fn registries() -> Vec<Value> {
        vec![
            json!({"id": format!("{SUB}/rg1/providers/{REGISTRY_TYPE}/srcreg"), "name": "srcreg",
                   "properties": {"loginServer": "srcreg.localhost:5000"}}),
            json!({"id": format!("{SUB}/moat/providers/{REGISTRY_TYPE}/default"), "name": "default",
                   "properties": {"loginServer": "127.0.0.1:5000"}}),
        ]
    }

    fn args(source: &str) -> ImportArgs {
        ImportArgs {
            name: "target".into(),
            source: source.into(),
            ..ImportArgs::default()
        }
    }

    fn id(name: &str, rg: &str) -> String {
        format!("{SUB}/{rg}/providers/{REGISTRY_TYPE}/{name}")
    }

    #[test]
    fn registry_flag_by_name_login_server_or_id() {
        for key in [
            "srcreg",
            "SRCREG",
            "srcreg.localhost:5000",
            &id("srcreg", "rg1"),
        ] {
            let a = ImportArgs {
                registry: Some(key.to_string()),
                ..args("app/web:1")
            };
            assert_eq!(
                import_body(&a, &registries()).unwrap(),
                json!({"source": {"resourceId": id("srcreg", "rg1"), "sourceImage": "app/web:1"},
                       "targetTags": ["app/web:1"], "mode": "NoForce"}),
                "{key}"
            );
        }
        // An id the listing does not have is sent as given (another subscription); a name it does not have is not.
        let other = id("elsewhere", "rgX").replace("/s/", "/other/");
        let a = ImportArgs {
            registry: Some(other.clone()),
            ..args("app:1")
        };
        assert_eq!(
            import_source(&a, &registries()).unwrap(),
            json!({"resourceId": other, "sourceImage": "app:1"})
        );
        let a = ImportArgs {
            registry: Some("missing".into()),
            ..args("app:1")
        };
        let e = import_source(&a, &registries()).unwrap_err();
        assert_eq!((e.message.as_str(), e.code), (REGISTRY_NOT_FOUND, 1));
    }

    #[test]
    fn registry_flag_strips_a_repeated_login_server_and_uses_credentials_as_az() {
        let a = ImportArgs {
            registry: Some("srcreg".into()),
            ..args("srcreg.localhost:5000/app@sha256:abc")
        };
        assert_eq!(
            import_source(&a, &registries()).unwrap()["sourceImage"],
            "app@sha256:abc"
        );
        let a = ImportArgs {
            registry: Some("srcreg".into()),
            username: Some("u".into()),
            password: Some("p".into()),
            ..args("app:1")
        };
        assert_eq!(
            import_source(&a, &registries()).unwrap(),
            json!({"registryUri": "srcreg.localhost:5000", "credentials": {"username": "u", "password": "p"},
                   "sourceImage": "app:1"})
        );
    }

    #[test]
    fn qualified_source_on_this_subscription_is_a_resource_id() {
        assert_eq!(
            import_body(&args("127.0.0.1:5000/team/app:2"), &registries()).unwrap(),
            json!({"source": {"resourceId": id("default", "moat"), "sourceImage": "team/app:2"},
                   "targetTags": ["team/app:2"], "mode": "NoForce"})
        );
        assert_eq!(
            import_source(&args("SrcReg.LocalHost:5000/app"), &registries()).unwrap(),
            json!({"resourceId": id("srcreg", "rg1"), "sourceImage": "app"})
        );
    }

    #[test]
    fn qualified_source_elsewhere_is_a_registry_uri() {
        let a = ImportArgs {
            image: vec!["mirror/app:1".into(), "mirror/app:latest".into()],
            repository: vec!["untagged".into()],
            force: true,
            ..args("127.0.0.1:5001/test/hello:1")
        };
        assert_eq!(
            import_body(&a, &registries()).unwrap(),
            json!({"source": {"registryUri": "127.0.0.1:5001", "sourceImage": "test/hello:1"},
                   "targetTags": ["mirror/app:1", "mirror/app:latest"],
                   "untaggedTargetRepositories": ["untagged"], "mode": "Force"})
        );
        // The scheme is kept; credentials go along.
        let a = ImportArgs {
            username: Some("admin".into()),
            password: Some("pw".into()),
            ..args("https://other.example:5443/lib/x@sha256:00")
        };
        assert_eq!(
            import_source(&a, &registries()).unwrap(),
            json!({"registryUri": "https://other.example:5443",
                   "credentials": {"username": "admin", "password": "pw"}, "sourceImage": "lib/x@sha256:00"})
        );
        let a = args("http://localhost/x");
        assert_eq!(
            import_source(&a, &registries()).unwrap()["registryUri"],
            "http://localhost"
        );
        // A password alone (a token) is sent without a user name.
        let a = ImportArgs {
            password: Some("token".into()),
            ..args("docker.io/library/ubuntu:24.04")
        };
        assert_eq!(
            import_source(&a, &registries()).unwrap(),
            json!({"registryUri": "docker.io", "credentials": {"password": "token"},
                   "sourceImage": "library/ubuntu:24.04"})
        );
        // Credentials for a login server of this subscription: a pull through it with them.
        let a = ImportArgs {
            username: Some("u".into()),
            password: Some("p".into()),
            ..args("srcreg.localhost:5000/app:1")
        };
        assert_eq!(
            import_source(&a, &registries()).unwrap()["registryUri"],
            "srcreg.localhost:5000"
        );
    }

    #[test]
    fn default_target_drops_the_digest_and_only_untagged_repositories_mean_no_tags() {
        let a = args("127.0.0.1:5001/app@sha256:abcd");
        assert_eq!(
            import_body(&a, &registries()).unwrap()["targetTags"],
            json!(["app"])
        );
        let a = ImportArgs {
            repository: vec!["r1".into(), "r2".into()],
            ..args("127.0.0.1:5001/app:1")
        };
        let b = import_body(&a, &registries()).unwrap();
        assert!(b.get("targetTags").is_none(), "{b}");
        assert_eq!(b["untaggedTargetRepositories"], json!(["r1", "r2"]));
    }

    #[test]
    fn usage_errors() {
        let a = ImportArgs {
            username: Some("u".into()),
            ..args("127.0.0.1:5001/app:1")
        };
        let e = import_body(&a, &registries()).unwrap_err();
        assert_eq!((e.message.as_str(), e.code), (CREDENTIALS_INVALID, 2));
        for bad in [
            "app:1",
            "library/ubuntu",
            "127.0.0.1:5001/",
            "/app",
            "",
            "https://",
        ] {
            let e = import_body(&args(bad), &registries()).unwrap_err();
            assert_eq!(
                (e.message.as_str(), e.code),
                (SOURCE_NOT_FOUND, 2),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn progress_from_poll_bodies() {
        let p = Progress::from_body(&json!({"status": "InProgress", "percentComplete": 37.5,
            "properties": {"bytesTotal": 4194304, "bytesDone": 1048576, "layersTotal": 4, "layersDone": 1, "manifests": 1}}));
        assert_eq!(
            p,
            Progress {
                percent: Some(37.5),
                bytes_total: 4194304,
                bytes_done: 1048576,
                layers_total: 4,
                layers_done: 1
            }
        );
        assert_eq!(p.line(), "1.0 MiB/4.0 MiB, layers 1/4");
        assert_eq!(
            Progress::from_body(&Value::Null).line(),
            "reading manifests"
        );
        assert_eq!(
            Progress::from_body(&json!({"properties": {"layersTotal": 3, "layersDone": 3}})).line(),
            "layers 3/3"
        );
        assert_eq!(
            Progress::from_body(&json!({"percentComplete": 12})).line(),
            "12%"
        );
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1536), "1.5 KiB");
    }

    fn resp(status: u16, body: &str) -> Resp {
        Resp {
            status,
            status_text: String::new(),
            async_operation: None,
            location: None,
            retry_after: None,
            body: body.into(),
        }
    }

    #[test]
    fn poll_outcomes() {
        assert!(outcome(&resp(202, r#"{"status":"InProgress"}"#)).is_none());
        assert!(outcome(&resp(200, r#"{"status":"Succeeded"}"#))
            .unwrap()
            .is_ok());
        assert!(outcome(&resp(200, "")).unwrap().is_ok());
        assert!(outcome(&resp(200, "{}")).unwrap().is_ok());
        assert!(outcome(&resp(200, r#"{"status":"InProgress"}"#)).is_none());
        let e = outcome(&resp(
            200,
            r#"{"status":"Failed","error":{"code":"InvalidParameters","message":"boom"}}"#,
        ))
        .unwrap()
        .unwrap_err();
        assert!(
            e.message.starts_with("(InvalidParameters) boom"),
            "{}",
            e.message
        );
        assert_eq!(e.code, 1);
    }

    #[test]
    fn flags_parse_as_az_spells_them() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: ImportArgs,
        }
        let t = T::try_parse_from([
            "t",
            "-n",
            "tgt",
            "-g",
            "rg",
            "--source",
            "src/app:1",
            "-r",
            "srcreg",
            "-t",
            "a:1",
            "--image",
            "b:2",
            "--repository",
            "c",
            "-u",
            "user",
            "-p",
            "pw",
            "--force",
            "--no-wait",
        ])
        .unwrap();
        assert_eq!(t.a.name, "tgt");
        assert_eq!(t.a.image, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(t.a.repository, vec!["c".to_string()]);
        assert!(t.a.force && t.a.no_wait);
        assert_eq!(t.a.registry.as_deref(), Some("srcreg"));
        assert!(
            T::try_parse_from(["t", "-n", "tgt"]).is_err(),
            "--source is required"
        );
    }
}
