//! `moat keys list` and `moat keys rotate --purpose …`: the key files under `<data dir>/keys`. A running server
//! re-reads them within seconds (or at once on SIGHUP), so a rotation needs no restart.

use anyhow::Context;
use clap::Subcommand;
use moat_server::keys::{KeyFiles, Purpose, ServerKeys};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// List every key: purpose, id, creation time and whether it signs (current) or only verifies (retired).
    List {
        #[command(flatten)]
        common: super::Common,
    },
    /// Make a new key for one purpose. Tokens signed with the old key stay valid until they expire; rotating
    /// `secrets` re-seals every stored secret under the new key. Keys retired over a day ago are removed.
    Rotate {
        /// registry-tokens, entra-tokens, data-links, secrets, transfer or audit.
        #[arg(long, value_parser = parse_purpose)]
        purpose: Purpose,
        #[command(flatten)]
        common: super::Common,
    },
}

fn parse_purpose(s: &str) -> Result<Purpose, String> {
    Purpose::parse(s).ok_or_else(|| {
        format!(
            "'{s}' is not a key purpose: use registry-tokens, entra-tokens, data-links, secrets, transfer or audit"
        )
    })
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::List { common } => {
            let c = super::config(&common);
            moat_server::operator::existing(&c)?;
            for k in KeyFiles::new(&c.data_dir).list()? {
                super::emit(format_args!("{}", serde_json::to_string(&k)?));
            }
            Ok(())
        }
        KeysCommand::Rotate { purpose, common } => {
            // Opening the store checks the data directory, and a rotation of `secrets` re-seals rows in it.
            let dd = moat_server::operator::open(super::config(&common)).await?;
            let (c, meta) = (&dd.config, &dd.meta);
            let files = KeyFiles::new(&c.data_dir);
            let kid = files.rotate(purpose)?;
            let mut resealed = 0;
            if purpose == Purpose::Secrets {
                let keys = ServerKeys::load(&c.data_dir)?;
                resealed = moat_server::secrets::seal_stored(
                    meta,
                    &moat_auth::SecretBox::new(keys.secrets.clone()),
                )
                .await
                .context("re-sealing stored secrets under the new key")?;
            }
            let pruned = files.prune(purpose)?;
            // The running server signs with the new key now rather than at its next reload.
            dd.changed().await;
            super::emit(format_args!(
                "{}",
                serde_json::json!({"purpose": purpose.as_str(), "kid": kid, "resealed": resealed, "removed": pruned})
            ));
            Ok(())
        }
    }
}
