//! `moat transfer-archive export` (hidden): writes the transfer archive of some artifacts of a registry to a
//! file, exactly as an export pipeline run would, working on the data directory like `moat gc` without a server.
//! A maintenance and test tool; users export with pipelines (`moat acr pipeline-run create`).

use super::{emit, Common};
use anyhow::Context;
use clap::Subcommand;
use moat_server::keys::{transfer_signer, KeyFiles, Purpose};
use moat_transfer::archive::{collect_export, write_archive};
use std::io::Write;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TransferArchiveCommand {
    /// Write the archive of `--artifact`s (repo, repo:tag or repo@digest; at most 50) of `--registry` to `--out`.
    Export {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        registry: String,
        #[arg(long = "artifact", required = true)]
        artifacts: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn run(command: TransferArchiveCommand) -> anyhow::Result<()> {
    let TransferArchiveCommand::Export {
        common,
        registry,
        artifacts,
        out,
    } = command;
    let dd = moat_server::operator::open(super::config(&common)).await?;
    let r = dd
        .meta
        .registry_by_name(&registry)
        .await?
        .with_context(|| format!("no registry named '{registry}' on this server"))?;
    let set = collect_export(&dd.meta, &r.id, &artifacts).await?;
    let data_dir = dd.config.data_dir.clone();
    let outbound =
        moat_outbound::Outbound::new(dd.config.outbound.clone(), std::sync::Arc::new(Vec::new));
    let blobs = moat_server::storage::open_blobs(&dd.config, outbound)?;
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let keys = KeyFiles::new(&data_dir).load(Purpose::Transfer)?;
        let signer = transfer_signer(keys.last().expect("load makes a key"));
        // Written beside the target and renamed into place: a reader never sees half an archive.
        let tmp = out.with_extension("partial");
        let mut file = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        let written = (|| -> anyhow::Result<_> {
            let summary =
                write_archive(&set, blobs.as_ref(), &signer, &mut file, 0, &mut |_, _| {
                    Ok(())
                })?;
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &out)
                .with_context(|| format!("renaming to {}", out.display()))?;
            Ok(summary)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let summary = written?;
        Ok((
            summary,
            set.artifacts
                .iter()
                .map(|a| a.reference())
                .collect::<Vec<_>>(),
            signer.kid().to_string(),
        ))
    })
    .await??;
    let (s, refs, kid) = summary;
    emit(format_args!(
        "{}",
        serde_json::json!({
            "catalogDigest": s.digest,
            "size": s.size,
            "blobs": s.blobs,
            "artifacts": refs,
            "keyId": kid,
        })
    ));
    std::io::stdout().flush()?;
    Ok(())
}
