//! Workload 10: ACR Transfer, each figure against its peer in the same run.
//!
//! (a) An export pipeline run of the large 10-layer image to Azurite, against the Azure Storage Python SDK
//!     (`azure-storage-blob`) uploading the same archive to the same Azurite with the same concurrency and block size.
//! (b) An import pipeline run of that archive into a second Moat (sharing nothing but the storage account), against
//!     the SDK downloading it to a file.
//! (c) An export pipeline run to a `LocalDirectory`, against the disk's fsync'd write rate for the same size.
//!
//! Moat's rates are timed from the run's PUT to its terminal state (polled every 20 ms), over the archive's size.

use super::{
    disk_throughput, free_port, json_call, mib_s, random_bytes, repo_root, Arm, Env, Image, Reg,
    Server, IMPORT_POLL, MIB,
};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const REPO: &str = "bench/transfer";
/// The pipelines' api-version (ACR's newest with the three resources).
const API: &str = "api-version=2025-06-01-preview";
/// Azurite's well-known development account (published in Azure's docs; not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// What Moat's Azure client uses (`moat_transfer::storage::StorageOptions::default`), given to the SDK too.
const CONCURRENCY: usize = 4;
const BLOCK: usize = 8 << 20;
const SECRET: &str = "https://benchvault.vault.azure.net/secrets/exportsas";

#[derive(Clone, Copy, Debug, Default)]
pub struct TransferFig {
    pub archive_mib: f64,
    pub export_azure: f64,
    pub sdk_upload: f64,
    pub import_azure: f64,
    pub sdk_download: f64,
    pub export_local: f64,
    pub disk: f64,
}

/// Azurite, started from the copy scripts/test installs (`.tools/azurite`, or `MOAT_AZURITE`).
pub async fn start_azurite(env: &Env) -> Result<Server> {
    let bin = std::env::var_os("MOAT_AZURITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/azurite/node_modules/.bin/azurite-blob"));
    if !bin.exists() {
        bail!(
            "Azurite not found at {} (workloads 10 and 12 write to it): run `bash scripts/test` once (it installs azurite into .tools/azurite) or set MOAT_AZURITE",
            bin.display()
        );
    }
    let dir = env.fresh_dir("azurite")?;
    let port = free_port()?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--location",
    ])
    .arg(dir.join("data"))
    .args([
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--loose",
        "--silent",
    ]);
    Server::start("azurite", cmd, dir, "azurite.log", port, None).await
}

/// The SDK side: `crates/bench/azure_blob_baseline.py` in the transfer venv scripts/test makes.
struct Sdk {
    python: PathBuf,
    script: PathBuf,
    endpoint: String,
}

impl Sdk {
    fn new(azurite: &Server) -> Result<Sdk> {
        let root = repo_root();
        let python = std::env::var_os("BENCH_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv-transfer/bin/python"));
        if !python.exists() {
            bail!(
                "{} not found (workload 10 compares with azure-storage-blob): run `bash scripts/test` once, or set BENCH_PYTHON to a python with azure-storage-blob",
                python.display()
            );
        }
        Ok(Sdk {
            python,
            script: root.join("crates/bench/azure_blob_baseline.py"),
            endpoint: format!("http://127.0.0.1:{}/{ACCOUNT}", azurite.port),
        })
    }

    async fn call(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .arg(args[0])
            .args([self.endpoint.as_str(), ACCOUNT, ACCOUNT_KEY])
            .args(&args[1..])
            .stdin(Stdio::null());
        let what = format!("azure_blob_baseline.py {}", args.join(" "));
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        if !out.status.success() {
            bail!(
                "{what}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{what}: not JSON: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// MiB/s of one upload or download of `file` as `container/blob`.
    async fn timed(&self, op: &str, container: &str, blob: &str, file: &Path) -> Result<f64> {
        let f = file.display().to_string();
        let (c, b) = (CONCURRENCY.to_string(), BLOCK.to_string());
        let v = self.call(&[op, container, blob, &f, &c, &b]).await?;
        let secs = v["seconds"]
            .as_f64()
            .ok_or_else(|| anyhow!("no seconds in {v}"))?;
        let bytes = v["bytes"]
            .as_u64()
            .ok_or_else(|| anyhow!("no bytes in {v}"))?;
        Ok(mib_s(bytes, Duration::from_secs_f64(secs)))
    }
}

/// `moat secret set` on a server's data directory: the SAS its pipelines name.
async fn set_secret(env: &Env, server: &Server, value: &str) -> Result<()> {
    let mut cmd = env.moat_command();
    cmd.args([
        "secret",
        "set",
        "--id",
        SECRET,
        "--value",
        value,
        "--insecure-http",
    ])
    .arg("--data-dir")
    .arg(server.dir.join("data"))
    .arg("--listen")
    .arg(format!("127.0.0.1:{}", server.port))
    .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !out.status.success() {
        bail!(
            "moat secret set: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Arm<'_> {
    async fn put(
        &self,
        path: &str,
        body: serde_json::Value,
        ok: &[StatusCode],
    ) -> Result<serde_json::Value> {
        let path = format!("{}/{path}?{API}", self.registry);
        let url = self.reg.url(&path);
        let resp = self
            .reg
            .send(
                Method::PUT,
                &path,
                Some(&self.bearer),
                &[(hyper::header::CONTENT_TYPE, "application/json")],
                super::BenchBody::full(Bytes::from(body.to_string())),
            )
            .await?;
        if !ok.contains(&resp.status()) {
            return Err(super::unexpected(&Method::PUT, &url, resp, "200 or 201").await);
        }
        let b = http_body_util::BodyExt::collect(resp.into_body())
            .await?
            .to_bytes();
        Ok(serde_json::from_slice(&b).unwrap_or_default())
    }

    async fn pipeline(
        &self,
        kind: &str,
        name: &str,
        properties: serde_json::Value,
    ) -> Result<String> {
        let ok = [StatusCode::OK, StatusCode::CREATED];
        let v = self
            .put(
                &format!("{kind}/{name}"),
                serde_json::json!({ "properties": properties }),
                &ok,
            )
            .await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("PUT {kind}/{name}: no id in {v}"))
    }

    /// Starts a run and polls it until it ends; returns the time taken and the run's `response`.
    async fn run(
        &self,
        name: &str,
        request: serde_json::Value,
    ) -> Result<(Duration, serde_json::Value)> {
        let t = Instant::now();
        let body = serde_json::json!({ "properties": { "request": request } });
        self.put(
            &format!("pipelineRuns/{name}"),
            body,
            &[StatusCode::CREATED, StatusCode::OK],
        )
        .await?;
        let path = format!("{}/pipelineRuns/{name}?{API}", self.registry);
        loop {
            let v = json_call(
                self.reg,
                Method::GET,
                &path,
                Some(&self.bearer),
                "",
                Bytes::new(),
                StatusCode::OK,
            )
            .await?;
            match v
                .pointer("/properties/provisioningState")
                .and_then(|s| s.as_str())
            {
                Some("Succeeded") => return Ok((t.elapsed(), v["properties"]["response"].clone())),
                Some("Failed") | Some("Canceled") => bail!(
                    "pipeline run {name} failed: {}",
                    v.pointer("/properties/response/pipelineRunErrorMessage")
                        .unwrap_or(&v)
                ),
                _ => tokio::time::sleep(IMPORT_POLL).await,
            }
        }
    }
}

fn container_uri(azurite: &Server, container: &str) -> String {
    format!("http://127.0.0.1:{}/{ACCOUNT}/{container}", azurite.port)
}

pub async fn transfer(env: &Env, img: &Image, rounds: usize) -> Result<TransferFig> {
    let azurite = start_azurite(env).await?;
    let sdk = Sdk::new(&azurite)?;
    let sas = sdk.call(&["sas"]).await?["sas"]
        .as_str()
        .ok_or_else(|| anyhow!("no SAS from the SDK"))?
        .to_string();
    for c in ["moat", "plain"] {
        sdk.call(&["container", c]).await?;
    }

    // The LocalDirectory is one the operator lists (`[outbound] directories`).
    let out_dir = env.fresh_dir("removable")?;
    let config = env.fresh_dir("config")?.join("moat.toml");
    std::fs::write(
        &config,
        format!(
            "[outbound]\ndirectories = [{:?}]\n",
            out_dir.display().to_string()
        ),
    )?;
    let config = config.display().to_string();
    let exporter = env.start_moat_with(false, &["--config", &config]).await?;
    let reg = Reg::plain(&exporter);
    let arm = Arm::login(env, &exporter, &reg).await?;
    img.push(&reg, REPO, "v1").await?;
    set_secret(env, &exporter, &sas).await?;
    let to_local = arm
        .pipeline(
            "exportPipelines",
            "tolocal",
            serde_json::json!({"target": {"type": "LocalDirectory", "uri": format!("file://{}", out_dir.display())},
                               "options": ["OverwriteBlobs"]}),
        )
        .await?;
    let to_azure = arm
        .pipeline(
            "exportPipelines",
            "toazure",
            serde_json::json!({"target": {"type": "AzureStorageBlobContainer", "uri": container_uri(&azurite, "moat"),
                               "keyVaultUri": SECRET, "storageAccessMode": "SasToken"},
                               "options": ["OverwriteBlobs"]}),
        )
        .await?;
    let artifacts = serde_json::json!([format!("{REPO}:v1")]);
    let mut fig = TransferFig::default();

    // (c) LocalDirectory against the disk, and the archive the SDK then moves.
    let archive = out_dir.join("image.tar");
    for round in 1..=rounds {
        let name = format!("local{round}");
        let (el, _) = arm
            .run(&name, serde_json::json!({"pipelineResourceId": to_local, "artifacts": artifacts,
                                             "target": {"type": "AzureStorageBlob", "name": "image.tar"}}))
            .await?;
        let size = std::fs::metadata(&archive)
            .with_context(|| format!("the LocalDirectory export left no {}", archive.display()))?
            .len();
        fig.archive_mib = size as f64 / MIB;
        fig.export_local = fig.export_local.max(mib_s(size, el));
        let scratch = env.fresh_dir("disk")?;
        let data = random_bytes(64 << 20, 10 + round as u64);
        let disk =
            tokio::task::spawn_blocking(move || disk_throughput(&scratch, &data, size)).await??;
        fig.disk = fig.disk.max(disk);
        eprintln!(
            "  10c round {round}: LocalDirectory export {:.0} MiB/s, disk {disk:.0} MiB/s",
            mib_s(size, el)
        );
    }

    // (a) Export to Azurite against the SDK's upload of the same archive, alternating which goes first.
    let mut digest = String::new();
    for round in 1..=rounds {
        for first in [true, false] {
            if first == (round % 2 == 1) {
                let name = format!("azure{round}");
                let (el, resp) = arm
                    .run(&name, serde_json::json!({"pipelineResourceId": to_azure, "artifacts": artifacts,
                                                     "target": {"type": "AzureStorageBlob", "name": "image.tar"}}))
                    .await?;
                digest = resp["catalogDigest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let r = mib_s((fig.archive_mib * MIB) as u64, el);
                fig.export_azure = fig.export_azure.max(r);
                eprintln!("  10a round {round}: export to Azurite {r:.0} MiB/s");
            } else {
                let r = sdk.timed("upload", "plain", "image.tar", &archive).await?;
                fig.sdk_upload = fig.sdk_upload.max(r);
                eprintln!("  10a round {round}: azure-storage-blob upload {r:.0} MiB/s");
            }
        }
    }
    drop(arm);
    drop(reg);
    drop(exporter);

    // (b) Import into a second server against the SDK's download.
    let importer = env.start_moat(false).await?;
    let reg = Reg::plain(&importer);
    let arm = Arm::login(env, &importer, &reg).await?;
    set_secret(env, &importer, &sas).await?;
    let from_azure = arm
        .pipeline(
            "importPipelines",
            "fromazure",
            serde_json::json!({"source": {"type": "AzureStorageBlobContainer", "uri": container_uri(&azurite, "moat"),
                               "keyVaultUri": SECRET, "storageAccessMode": "SasToken"},
                               "trigger": {"sourceTrigger": {"status": "Disabled"}},
                               "options": ["OverwriteTags"]}),
        )
        .await?;
    let download = env.fresh_dir("download")?.join("image.tar");
    for round in 1..=rounds {
        for first in [true, false] {
            if first == (round % 2 == 1) {
                let name = format!("import{round}");
                let (el, _) = arm
                    .run(&name, serde_json::json!({"pipelineResourceId": from_azure, "catalogDigest": digest,
                                                     "source": {"type": "AzureStorageBlob", "name": "image.tar"}}))
                    .await?;
                let r = mib_s((fig.archive_mib * MIB) as u64, el);
                fig.import_azure = fig.import_azure.max(r);
                eprintln!("  10b round {round}: import from Azurite {r:.0} MiB/s");
            } else {
                let r = sdk
                    .timed("download", "moat", "image.tar", &download)
                    .await?;
                fig.sdk_download = fig.sdk_download.max(r);
                eprintln!("  10b round {round}: azure-storage-blob download {r:.0} MiB/s");
            }
        }
    }
    if let Err(e) = img.served_as(&reg, REPO, "v1").await? {
        bail!("after the import: {e}");
    }
    Ok(fig)
}
