//! `moat acr …`: registries through the server's management API (ARM), modelled on `az acr`.

pub mod client;
pub mod commands;
pub mod import;
pub mod output;
pub mod pipelines;
pub mod private_link;

use clap::{Args, Subcommand};
pub use output::OutputFormat;
use std::io::Write;
use std::path::PathBuf;

/// An error to print as `ERROR: <message>` and exit with `code` (1 for service errors, 2 for usage, 3 for not found).
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn new(message: impl Into<String>, code: i32) -> CliError {
        CliError {
            message: message.into(),
            code,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Prints `e` as az does and ends the process with its exit code.
pub fn exit_with(e: anyhow::Error) -> ! {
    let _ = std::io::stdout().flush();
    let code = e.downcast_ref::<CliError>().map(|c| c.code).unwrap_or(1);
    let text = match e.downcast_ref::<CliError>() {
        Some(c) => c.message.clone(),
        None => format!("{e:#}"),
    };
    // The message may quote what a server or a remote registry sent: printed inert.
    eprintln!("ERROR: {}", moat_model::text::escape(&text));
    std::process::exit(code)
}

/// Writes command output to stdout, ending quietly when the reader has gone.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

#[derive(Args)]
pub struct AcrArgs {
    #[command(subcommand)]
    pub command: AcrCommand,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Json, global = true)]
    pub output: OutputFormat,
    /// PEM CA bundle to trust for the server (else REQUESTS_CA_BUNDLE, MOAT_CA_BUNDLE, or the one used at login).
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
}

/// Registry settings shared by `create` and `update`; only the flags given go into the request.
#[derive(Args, Clone, Debug, Default)]
pub struct SettingsArgs {
    /// Enable the admin user (listCredentials, basic auth with the registry name).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub admin_enabled: Option<bool>,
    /// Allow access from public networks; `false` also sets the network default action to Deny.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub public_network_enabled: Option<bool>,
    /// Allow artifacts to leave the registry through import or transfer (exportPolicy).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_exports: Option<bool>,
    /// Network rule default action (Premium).
    #[arg(long, value_name = "Allow|Deny", value_parser = commands::parse_default_action)]
    pub default_action: Option<String>,
    /// Serve the data plane from dedicated data endpoints (Premium).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub data_endpoint_enabled: Option<bool>,
    /// Zone redundancy (set at creation).
    #[arg(long, value_name = "Enabled|Disabled", value_parser = commands::parse_zone_redundancy)]
    pub zone_redundancy: Option<String>,
    /// Let callers without credentials pull (Standard and Premium).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub anonymous_pull_enabled: Option<bool>,
}

#[derive(Subcommand)]
pub enum AcrCommand {
    /// Create a registry (PUT).
    Create {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: String,
        /// Pricing tier.
        #[arg(long, value_name = "Basic|Standard|Premium", value_parser = commands::parse_sku)]
        sku: String,
        /// Location, a region name (letters and digits; `West Europe` is sent as `westeurope`); defaults to `local`.
        #[arg(long, short = 'l', value_parser = moat_model::Location::parse)]
        location: Option<moat_model::Location>,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Space-separated tags: key[=value].
        #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
        tags: Option<Vec<String>>,
        /// Do not wait for the operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Update a registry (PATCH with only the given settings).
    Update {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
        /// Pricing tier.
        #[arg(long, value_name = "Basic|Standard|Premium", value_parser = commands::parse_sku)]
        sku: Option<String>,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Space-separated tags: key[=value]; `--tags` alone (or "") clears them.
        #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
        tags: Option<Vec<String>>,
        /// Do not wait for the operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a registry.
    Show {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
    },
    /// Delete a registry.
    Delete {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
        /// Do not prompt for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Do not wait for the operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// List the registries of the subscription or of one resource group.
    List {
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
    },
    /// The admin user's credentials.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// IP rules of the registry's firewall (they apply when the default action is Deny).
    NetworkRule {
        #[command(subcommand)]
        command: NetworkRuleCommand,
    },
    /// The registry's private endpoint connections: approve, reject or remove the endpoints that reach it.
    PrivateEndpointConnection {
        #[command(subcommand)]
        command: private_link::ConnectionCommand,
    },
    /// Private endpoints: listeners on an internal address connected to one registry
    /// (`az network private-endpoint`'s counterpart).
    PrivateEndpoint {
        #[command(subcommand)]
        command: private_link::EndpointCommand,
    },
    /// Import an image into the registry from another registry of the subscription or from any registry.
    Import(import::ImportArgs),
    /// ACR Transfer: export pipelines write a registry's artifacts to a storage container or a directory.
    ExportPipeline {
        #[command(subcommand)]
        command: pipelines::ExportPipelineCommand,
    },
    /// ACR Transfer: import pipelines read archives from a storage container or a directory.
    ImportPipeline {
        #[command(subcommand)]
        command: pipelines::ImportPipelineCommand,
    },
    /// ACR Transfer: runs of export and import pipelines.
    PipelineRun {
        #[command(subcommand)]
        command: pipelines::PipelineRunCommand,
    },
}

#[derive(Subcommand)]
pub enum NetworkRuleCommand {
    /// Allow an IPv4 address or CIDR range.
    Add {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
        /// IPv4 address or CIDR range, e.g. 203.0.113.0/24.
        #[arg(long)]
        ip_address: String,
    },
    /// Remove an allowed address or range.
    Remove {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
        /// IPv4 address or CIDR range to remove, as it was added.
        #[arg(long)]
        ip_address: String,
    },
    /// List the IP rules.
    List {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum CredentialCommand {
    /// Show the admin user's name and passwords.
    Show {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
    },
    /// Regenerate one of the admin passwords.
    Renew {
        /// Registry name (5-50 letters and digits).
        #[arg(long, short = 'n')]
        name: String,
        /// Resource group; looked up from the name when omitted.
        #[arg(long = "resource-group", short = 'g')]
        resource_group: Option<String>,
        /// Which password to regenerate.
        #[arg(long, value_parser = ["password", "password2"])]
        password_name: String,
    },
}

/// Runs an `acr` command (blocking); on failure prints `ERROR: …` and exits with its code.
pub fn run(args: AcrArgs) -> anyhow::Result<()> {
    if let Err(e) = commands::run(args) {
        exit_with(e);
    }
    Ok(())
}
