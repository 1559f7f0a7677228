//! `moat monitor …`: monitoring set up by the operator on the data directory (SIEM sinks today).

mod sink;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum MonitorCommand {
    /// SIEM sinks (syslog over TLS, HTTP JSON) a diagnostic setting names by id in `marketplacePartnerId`:
    /// add, list, show, delete.
    Sink {
        #[command(subcommand)]
        command: sink::SinkCommand,
    },
}

pub async fn run(command: MonitorCommand) -> anyhow::Result<()> {
    match command {
        MonitorCommand::Sink { command } => sink::run(command).await,
    }
}
