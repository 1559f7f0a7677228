//! `moat acr export-pipeline|import-pipeline create|show|list|delete` and `moat acr pipeline-run
//! create|show|list|delete|clean`, with the `acrtransfer` az extension's flags (reference §1.4), over ARM.
//! Moat adds a `file://` URI for a LocalDirectory and `--trusted-key` on import pipelines.

use super::client::{encode, Session};
use super::commands::{confirm, registry_url};
use super::output::render;
use super::{print, CliError, OutputFormat};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::time::Duration;

/// The api-version of the three resources (the first with `storageAccessMode`; what the extension sends).
pub const TRANSFER_API: &str = "2025-06-01-preview";

#[derive(Args, Clone)]
pub struct Target {
    /// The registry.
    #[arg(long = "registry", short = 'r')]
    pub registry: String,
    /// Resource group; looked up from the registry's name when omitted.
    #[arg(long = "resource-group", short = 'g')]
    pub resource_group: Option<String>,
}

#[derive(Args, Clone)]
pub struct PipelineCreateArgs {
    #[command(flatten)]
    pub at: Target,
    /// Pipeline name (5-50 letters and digits).
    #[arg(long, short = 'n')]
    pub name: String,
    /// The storage container (https://<account>.blob.core.windows.net/<container>), or a mounted directory
    /// (file:///<absolute path>: a LocalDirectory).
    #[arg(long = "storage-container-uri", short = 'c')]
    pub storage_container_uri: String,
    /// The secret holding the SAS token (https://<vault>.vault.azure.net/secrets/<name>); required with SasToken.
    #[arg(long = "secret-uri", short = 's')]
    pub secret_uri: Option<String>,
    /// How the pipeline reaches its storage: SasToken (default) or ManagedIdentity.
    #[arg(long = "storage-access-mode", short = 'm', value_parser = parse_mode)]
    pub storage_access_mode: Option<String>,
    /// The pipeline's identity: `[system]` (default) or a user-assigned identity's resource id.
    #[arg(long = "assign-identity", short = 'i')]
    pub assign_identity: Option<String>,
    /// Space-separated options (export: OverwriteBlobs ContinueOnErrors; import: OverwriteTags
    /// DeleteSourceBlobOnSuccess ContinueOnErrors).
    #[arg(long, short = 'z', num_args = 1..)]
    pub options: Option<Vec<String>>,
}

#[derive(Subcommand)]
pub enum ExportPipelineCommand {
    /// Create (or replace) an export pipeline.
    Create(PipelineCreateArgs),
    /// Show an export pipeline.
    Show {
        #[command(flatten)]
        at: Target,
        #[arg(long, short = 'n')]
        name: String,
    },
    /// List the registry's export pipelines.
    List {
        #[command(flatten)]
        at: Target,
    },
    /// Delete an export pipeline.
    Delete {
        #[command(flatten)]
        at: Target,
        #[arg(long, short = 'n')]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ImportPipelineCommand {
    /// Create (or replace) an import pipeline.
    Create {
        #[command(flatten)]
        args: PipelineCreateArgs,
        /// Watch the source for new archives and import each once (default true).
        #[arg(long = "source-trigger-enabled", short = 'e', value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
        source_trigger_enabled: Option<bool>,
        /// Moat: only import archives signed by this exporter key (`ed25519:…` from `moat transfer-key show` on
        /// the exporting server); repeatable.
        #[arg(long = "trusted-key", value_name = "ed25519:KEY")]
        trusted_key: Vec<String>,
    },
    /// Show an import pipeline.
    Show {
        #[command(flatten)]
        at: Target,
        #[arg(long, short = 'n')]
        name: String,
    },
    /// List the registry's import pipelines.
    List {
        #[command(flatten)]
        at: Target,
    },
    /// Delete an import pipeline.
    Delete {
        #[command(flatten)]
        at: Target,
        #[arg(long, short = 'n')]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum PipelineRunCommand {
    /// Run a pipeline: export artifacts to a blob, or import one; shows its progress and waits for it.
    Create {
        #[command(flatten)]
        at: Target,
        /// Run name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// The pipeline to run.
        #[arg(long, short = 'p')]
        pipeline: String,
        /// Its kind.
        #[arg(long = "pipeline-type", short = 't', value_parser = ["import", "export"])]
        pipeline_type: String,
        /// The archive blob: written by an export, read by an import.
        #[arg(long = "storage-blob", short = 'b')]
        storage_blob: String,
        /// Export: space-separated artifacts (repo:tag, repo@digest; `repo` means repo:latest).
        #[arg(long, short = 'a', num_args = 1..)]
        artifacts: Option<Vec<String>>,
        /// Run again even if a run of this name with the same request exists.
        #[arg(long = "force-redeploy", short = 'f')]
        force_redeploy: bool,
        /// Do not wait for the run to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a run (its response: status, progress, errors).
    Show {
        #[command(flatten)]
        at: Target,
        #[arg(long, short = 'n')]
        name: String,
    },
    /// List the registry's runs.
    List {
        #[command(flatten)]
        at: Target,
        /// Only the first N.
        #[arg(long)]
        top: Option<usize>,
    },
    /// Delete a run's record (what it transferred stays).
    Delete {
        #[command(flatten)]
        at: Target,
        #[arg(long, short = 'n')]
        name: String,
    },
    /// Delete every failed run.
    Clean {
        #[command(flatten)]
        at: Target,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Do not prompt for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `--storage-access-mode`: the current names and the extension's older spellings (reference §1.4).
pub fn parse_mode(v: &str) -> Result<String, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "sastoken" | "storage-sas-token" => Ok("SasToken".into()),
        "managedidentity" | "entra-mi-auth" => Ok("ManagedIdentity".into()),
        _ => Err(format!(
            "'{v}' is not a storage access mode: use SasToken or ManagedIdentity"
        )),
    }
}

/// `…/registries/{r}/{collection}[/{name}]?api-version=…`
fn url(
    session: &mut Session,
    at: &Target,
    collection: &str,
    name: Option<&str>,
) -> anyhow::Result<String> {
    let registry = registry_url(session, &at.registry, at.resource_group.clone())?;
    let base = registry.split('?').next().unwrap_or(&registry).to_string();
    Ok(match name {
        Some(n) => format!(
            "{base}/{collection}/{}?api-version={TRANSFER_API}",
            encode(n)
        ),
        None => format!("{base}/{collection}?api-version={TRANSFER_API}"),
    })
}

/// The body `create` sends, as the extension builds it: container and secret URIs lower-cased (Azure's are
/// case-insensitive; a directory's path is not, so a `file://` URI is kept as given), identity system-assigned
/// unless a user-assigned one is named.
pub fn pipeline_body(
    import: bool,
    a: &PipelineCreateArgs,
    trigger: Option<bool>,
    trusted: &[String],
) -> Result<Value, CliError> {
    let local = a.storage_container_uri.starts_with("file://");
    if !local
        && !a.storage_container_uri.starts_with("https://")
        && !a.storage_container_uri.starts_with("http://")
    {
        return Err(CliError::new(
            "--storage-container-uri must be an https:// container URI, or file:///<dir> for a LocalDirectory",
            2,
        ));
    }
    let mode = a
        .storage_access_mode
        .clone()
        .unwrap_or_else(|| "SasToken".into());
    if !local && mode == "SasToken" && a.secret_uri.is_none() {
        return Err(CliError::new(
            "--secret-uri is required when --storage-access-mode is SasToken",
            2,
        ));
    }
    if mode == "ManagedIdentity" && a.secret_uri.is_some() {
        return Err(CliError::new(
            "--secret-uri cannot be given with --storage-access-mode ManagedIdentity",
            2,
        ));
    }
    if let Some(s) = &a.secret_uri {
        if !s.starts_with("https://") || !s.contains("/secrets/") {
            return Err(CliError::new(
                "--secret-uri must be https://<vault>.vault.azure.net/secrets/<name>",
                2,
            ));
        }
    }
    let uri = if local {
        a.storage_container_uri.clone()
    } else {
        a.storage_container_uri.to_ascii_lowercase()
    };
    let mut storage = json!({
        "type": if local { "LocalDirectory" } else { "AzureStorageBlobContainer" },
        "uri": uri,
        "storageAccessMode": mode,
    });
    if let Some(s) = &a.secret_uri {
        storage["keyVaultUri"] = json!(s.to_ascii_lowercase());
    }
    let identity = match a.assign_identity.as_deref() {
        None | Some("[system]") => json!({"type": "SystemAssigned"}),
        Some(id) => json!({"type": "UserAssigned", "userAssignedIdentities": {id: {}}}),
    };
    let mut props = json!({});
    props[if import { "source" } else { "target" }] = storage;
    if let Some(o) = &a.options {
        let opts: Vec<&str> = o
            .iter()
            .flat_map(|s| s.split([',', ' ']))
            .filter(|s| !s.is_empty())
            .collect();
        props["options"] = json!(opts);
    }
    if import {
        let on = trigger.unwrap_or(true);
        props["trigger"] =
            json!({"sourceTrigger": {"status": if on { "Enabled" } else { "Disabled" }}});
        if !trusted.is_empty() {
            props["trustedExporterKeys"] = json!(trusted);
        }
    }
    Ok(json!({"identity": identity, "properties": props}))
}

const PIPELINE_COLUMNS: [&str; 5] = ["NAME", "TYPE", "URI", "ACCESS MODE", "OPTIONS"];

fn pipeline_row(p: &Value) -> Vec<String> {
    let props = &p["properties"];
    let storage = if props["target"].is_object() {
        &props["target"]
    } else {
        &props["source"]
    };
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    vec![
        s(&p["name"]),
        s(&storage["type"]),
        s(&storage["uri"]),
        s(&storage["storageAccessMode"]),
        props["options"]
            .as_array()
            .map(|o| {
                o.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    ]
}

const RUN_COLUMNS: [&str; 6] = ["NAME", "PIPELINE", "STATUS", "PROGRESS", "START", "ERROR"];

fn run_row(r: &Value) -> Vec<String> {
    let props = &r["properties"];
    let resp = &props["response"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    vec![
        s(&r["name"]),
        props["request"]["pipelineResourceId"]
            .as_str()
            .and_then(|i| i.rsplit('/').next())
            .unwrap_or("")
            .to_string(),
        s(&resp["status"]),
        resp["progress"]["percentage"]
            .as_str()
            .map(|p| format!("{p}%"))
            .unwrap_or_default(),
        s(&resp["startTime"]),
        s(&resp["pipelineRunErrorMessage"]),
    ]
}

/// GET first, as the extension's delete does: a missing resource is "not found" (exit 3), not a silent 204.
fn delete(session: &mut Session, url: &str) -> anyhow::Result<()> {
    session.get_json(url)?;
    session.delete(url, false)
}

pub fn export_pipeline(
    session: &mut Session,
    c: ExportPipelineCommand,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let show = |v: &Value| print(&render(v, out, &PIPELINE_COLUMNS, pipeline_row));
    match c {
        ExportPipelineCommand::Create(a) => {
            let body = pipeline_body(false, &a, None, &[])?;
            let u = url(session, &a.at, "exportPipelines", Some(&a.name))?;
            session.put_or_patch("PUT", &u, &body, false)?;
            show(&session.get_json(&u)?);
        }
        ExportPipelineCommand::Show { at, name } => {
            let u = url(session, &at, "exportPipelines", Some(&name))?;
            show(&session.get_json(&u)?);
        }
        ExportPipelineCommand::List { at } => {
            let u = url(session, &at, "exportPipelines", None)?;
            show(&Value::Array(session.list_all(&u)?));
        }
        ExportPipelineCommand::Delete { at, name } => {
            let u = url(session, &at, "exportPipelines", Some(&name))?;
            delete(session, &u)?;
        }
    }
    Ok(())
}

pub fn import_pipeline(
    session: &mut Session,
    c: ImportPipelineCommand,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let show = |v: &Value| print(&render(v, out, &PIPELINE_COLUMNS, pipeline_row));
    match c {
        ImportPipelineCommand::Create {
            args,
            source_trigger_enabled,
            trusted_key,
        } => {
            let body = pipeline_body(true, &args, source_trigger_enabled, &trusted_key)?;
            let u = url(session, &args.at, "importPipelines", Some(&args.name))?;
            session.put_or_patch("PUT", &u, &body, false)?;
            show(&session.get_json(&u)?);
        }
        ImportPipelineCommand::Show { at, name } => {
            let u = url(session, &at, "importPipelines", Some(&name))?;
            show(&session.get_json(&u)?);
        }
        ImportPipelineCommand::List { at } => {
            let u = url(session, &at, "importPipelines", None)?;
            show(&Value::Array(session.list_all(&u)?));
        }
        ImportPipelineCommand::Delete { at, name } => {
            let u = url(session, &at, "importPipelines", Some(&name))?;
            delete(session, &u)?;
        }
    }
    Ok(())
}

/// A run's request as the extension builds it: `repo` becomes `repo:latest`.
pub fn run_body(
    pipeline_id: &str,
    export: bool,
    blob: &str,
    artifacts: &[String],
    force: Option<String>,
) -> Value {
    let mut request = json!({"pipelineResourceId": pipeline_id});
    if export {
        let artifacts: Vec<String> = artifacts
            .iter()
            .map(|a| {
                if a.contains(':') || a.contains('@') {
                    a.clone()
                } else {
                    format!("{a}:latest")
                }
            })
            .collect();
        request["target"] = json!({"type": "AzureStorageBlob", "name": blob});
        request["artifacts"] = json!(artifacts);
    } else {
        request["source"] = json!({"type": "AzureStorageBlob", "name": blob});
    }
    let mut props = json!({"request": request});
    if let Some(t) = force {
        props["forceUpdateTag"] = json!(t);
    }
    json!({"properties": props})
}

/// Polls the run until its job has ended, drawing its progress (percentage; bytes and artifacts when the server
/// reports them). Returns the final run.
fn follow(session: &mut Session, u: &str) -> anyhow::Result<Value> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        let run = session.get_json(u)?;
        let state = run
            .pointer("/properties/provisioningState")
            .and_then(Value::as_str)
            .unwrap_or("");
        let progress = run
            .pointer("/properties/response/progress")
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(p) = progress
            .get("percentage")
            .and_then(Value::as_str)
            .and_then(|p| p.parse::<u64>().ok())
        {
            bar.set_position(p.min(100));
        }
        bar.set_message(progress_message(&progress));
        if !state.eq_ignore_ascii_case("Creating") && !state.is_empty() {
            bar.finish_and_clear();
            return Ok(run);
        }
        bar.tick();
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `1.2 GiB / 2.0 GiB, 3/5 artifacts` from what the server reports beside `percentage`.
pub fn progress_message(p: &Value) -> String {
    let n = |k: &str| {
        p.get(k).and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    };
    let mut parts = Vec::new();
    if let Some(b) = n("bytes") {
        match n("totalBytes") {
            Some(t) => parts.push(format!(
                "{} / {}",
                indicatif::HumanBytes(b),
                indicatif::HumanBytes(t)
            )),
            None => parts.push(format!("{}", indicatif::HumanBytes(b))),
        }
    }
    if let Some(a) = n("artifacts") {
        match n("totalArtifacts") {
            Some(t) => parts.push(format!("{a}/{t} artifacts")),
            None => parts.push(format!("{a} artifacts")),
        }
    }
    parts.join(", ")
}

pub fn pipeline_run(
    session: &mut Session,
    c: PipelineRunCommand,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let show = |v: &Value| print(&render(v, out, &RUN_COLUMNS, run_row));
    match c {
        PipelineRunCommand::Create {
            at,
            name,
            pipeline,
            pipeline_type,
            storage_blob,
            artifacts,
            force_redeploy,
            no_wait,
        } => {
            let export = pipeline_type == "export";
            let artifacts = artifacts.unwrap_or_default();
            if export && artifacts.is_empty() {
                return Err(
                    CliError::new("--artifacts is required for an export pipeline run", 2).into(),
                );
            }
            if !export && !artifacts.is_empty() {
                return Err(
                    CliError::new("--artifacts applies only to an export pipeline run", 2).into(),
                );
            }
            let collection = if export {
                "exportPipelines"
            } else {
                "importPipelines"
            };
            let pu = url(session, &at, collection, Some(&pipeline))?;
            let p = session
                .get_json(&pu)
                .map_err(|e| match e.downcast_ref::<CliError>() {
                    Some(c) if c.code == 3 => CliError::new(
                        format!(
                            "{} pipeline {pipeline} not found on registry {}.",
                            if export { "Export" } else { "Import" },
                            at.registry
                        ),
                        3,
                    )
                    .into(),
                    _ => e,
                })?;
            let pipeline_id = p
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let force = force_redeploy.then(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                format!("{}.{:06}", now.as_secs(), now.subsec_micros())
            });
            let body = run_body(&pipeline_id, export, &storage_blob, &artifacts, force);
            let u = url(session, &at, "pipelineRuns", Some(&name))?;
            session.request("PUT", &u, Some(&body))?;
            if no_wait {
                return Ok(());
            }
            let run = follow(session, &u)?;
            let state = run
                .pointer("/properties/provisioningState")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !state.eq_ignore_ascii_case("Succeeded") {
                let why = run
                    .pointer("/properties/response/pipelineRunErrorMessage")
                    .and_then(Value::as_str)
                    .unwrap_or("the pipeline run failed without a message");
                return Err(
                    CliError::new(format!("Pipeline run '{name}' failed: {why}"), 1).into(),
                );
            }
            show(&run);
        }
        PipelineRunCommand::Show { at, name } => {
            let u = url(session, &at, "pipelineRuns", Some(&name))?;
            show(&session.get_json(&u)?);
        }
        PipelineRunCommand::List { at, top } => {
            let u = url(session, &at, "pipelineRuns", None)?;
            let mut all = session.list_all(&u)?;
            if let Some(n) = top {
                all.truncate(n);
            }
            show(&Value::Array(all));
        }
        PipelineRunCommand::Delete { at, name } => {
            let u = url(session, &at, "pipelineRuns", Some(&name))?;
            delete(session, &u)?;
        }
        PipelineRunCommand::Clean { at, dry_run, yes } => {
            let u = url(session, &at, "pipelineRuns", None)?;
            let failed: Vec<Value> = session
                .list_all(&u)?
                .into_iter()
                .filter(|r| {
                    r.pointer("/properties/provisioningState")
                        .and_then(Value::as_str)
                        == Some("Failed")
                })
                .collect();
            if !dry_run
                && !failed.is_empty()
                && !yes
                && !confirm("Delete every failed pipeline run?")?
            {
                return Ok(());
            }
            if !dry_run {
                for r in &failed {
                    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
                    let ru = url(session, &at, "pipelineRuns", Some(name))?;
                    session.delete(&ru, false)?;
                }
            }
            show(&Value::Array(failed));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(uri: &str, secret: Option<&str>, mode: Option<&str>) -> PipelineCreateArgs {
        PipelineCreateArgs {
            at: Target {
                registry: "r".into(),
                resource_group: None,
            },
            name: "pipe1".into(),
            storage_container_uri: uri.into(),
            secret_uri: secret.map(str::to_string),
            storage_access_mode: mode.map(str::to_string),
            assign_identity: None,
            options: Some(vec!["OverwriteTags".into(), "ContinueOnErrors".into()]),
        }
    }

    #[test]
    fn bodies_follow_the_extension() {
        let b = pipeline_body(
            true,
            &args(
                "https://Acct.blob.core.windows.net/C",
                Some("https://KV.vault.azure.net/secrets/S"),
                None,
            ),
            Some(false),
            &[],
        )
        .unwrap();
        assert_eq!(
            b["properties"]["source"]["uri"],
            "https://acct.blob.core.windows.net/c"
        );
        assert_eq!(
            b["properties"]["source"]["keyVaultUri"],
            "https://kv.vault.azure.net/secrets/s"
        );
        assert_eq!(
            b["properties"]["trigger"]["sourceTrigger"]["status"],
            "Disabled"
        );
        assert_eq!(b["identity"]["type"], "SystemAssigned");
        let local =
            pipeline_body(false, &args("file:///Media/USB", None, None), None, &[]).unwrap();
        assert_eq!(local["properties"]["target"]["type"], "LocalDirectory");
        assert_eq!(local["properties"]["target"]["uri"], "file:///Media/USB");
        assert!(pipeline_body(
            false,
            &args("https://a.blob.core.windows.net/c", None, None),
            None,
            &[]
        )
        .is_err());
        assert!(pipeline_body(
            false,
            &args(
                "https://a.blob.core.windows.net/c",
                Some("https://k.vault.azure.net/secrets/s"),
                Some("ManagedIdentity")
            ),
            None,
            &[]
        )
        .is_err());
    }

    #[test]
    fn run_bodies_default_the_tag() {
        let b = run_body(
            "/id",
            true,
            "out.tar",
            &["app".into(), "x@sha256:ab".into()],
            None,
        );
        assert_eq!(
            b["properties"]["request"]["artifacts"],
            json!(["app:latest", "x@sha256:ab"])
        );
        assert_eq!(b["properties"]["request"]["target"]["name"], "out.tar");
        let i = run_body("/id", false, "in.tar", &[], Some("1".into()));
        assert_eq!(i["properties"]["request"]["source"]["name"], "in.tar");
        assert_eq!(i["properties"]["forceUpdateTag"], "1");
    }

    #[test]
    fn progress_reads_moat_fields() {
        assert_eq!(progress_message(&json!({"percentage": "20"})), "");
        assert_eq!(
            progress_message(&json!({"artifacts": 1, "totalArtifacts": 3})),
            "1/3 artifacts"
        );
    }
}
