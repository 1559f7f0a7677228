//! `moat transfer-key show`: the public half of the key this server signs transfer archives with (the current
//! key file of purpose `transfer`), for the operators of importing servers to trust (`[transfer] trusted_keys`
//! or an import pipeline's `trustedExporterKeys`). `moat keys rotate --purpose transfer` makes a new one.

use super::{emit, Common, Output};
use clap::Subcommand;
use moat_server::keys::{transfer_signer, KeyFiles, Purpose};

#[derive(Subcommand)]
pub enum TransferKeyCommand {
    /// Print the public key (`ed25519:<base64>`, the form trusted_keys takes) and its key id.
    Show {
        #[command(flatten)]
        common: Common,
        /// `table`: the key on one line, its id on the next; `json`: {"publicKey", "kid", "algorithm"}.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

pub fn run(command: TransferKeyCommand) -> anyhow::Result<()> {
    let TransferKeyCommand::Show { common, output } = command;
    let c = super::config(&common);
    moat_server::operator::existing(&c)?;
    // Loading makes the first key if this data directory predates transfer keys (as `moat serve` does).
    let keys = KeyFiles::new(&c.data_dir).load(Purpose::Transfer)?;
    let signer = transfer_signer(keys.last().expect("load makes a key"));
    match output {
        Output::Json => emit(format_args!(
            "{}",
            serde_json::json!({
                "publicKey": signer.public_key().to_string(),
                "kid": signer.kid(),
                "algorithm": "Ed25519",
            })
        )),
        Output::Table => {
            emit(format_args!("{}", signer.public_key()));
            emit(format_args!("kid {}", signer.kid()));
        }
    }
    Ok(())
}
