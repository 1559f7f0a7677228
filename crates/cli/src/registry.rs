//! `moat registry create|list|delete`: the registries of a data directory. While `moat serve` runs on it, a new
//! registry gets the login server that server answers on (its port, domain and scheme, read from its lock file)
//! and the server is told to serve the change at once.

use crate::{emit, Common, Output};
use anyhow::{bail, Context};
use clap::Subcommand;
use moat_model::{RegistryName, RegistrySettings, Sku};
use moat_server::arm::activity::{local_event, operator};
use moat_server::arm::registry_json::registry_id;
use moat_server::listener::{cloud_ids, DEFAULT_RESOURCE_GROUP};
use std::io::IsTerminal;

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Create a registry served at `<name>.<domain>[:port]` (the running server's port and domain, else
    /// --listen's and --domain's).
    Create {
        name: String,
        #[arg(long, default_value = "Premium")]
        sku: String,
        /// Let callers without credentials pull.
        #[arg(long)]
        anonymous_pull: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List registries.
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Delete a registry with its repositories, tags, manifests, private endpoints and role assignments (stored
    /// bytes are left to garbage collection). `default` cannot be deleted.
    Delete {
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
}

pub async fn run(command: RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Create {
            name,
            sku,
            anonymous_pull,
            common,
        } => create(name, sku, anonymous_pull, common).await,
        RegistryCommand::List { common, output } => list(common, output).await,
        RegistryCommand::Delete { name, yes, common } => delete(name, yes, common).await,
    }
}

async fn create(
    name: String,
    sku: String,
    anonymous_pull: bool,
    common: Common,
) -> anyhow::Result<()> {
    // Bad input is refused before the data directory is looked at.
    let name: RegistryName = name.parse()?;
    let sku = Sku::parse(&sku)
        .with_context(|| format!("unknown SKU '{sku}': use Basic, Standard or Premium"))?;
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let mut settings = RegistrySettings::new(sku, dd.config.region.clone());
    settings.anonymous_pull_enabled = anonymous_pull;
    moat_model::policy::validate_change(name.as_str(), None, &settings, &Default::default())?;
    let sub = cloud_ids(&dd.meta).await?.subscription_id;
    let record = local_event(
        &operator(),
        "Microsoft.ContainerRegistry/registries/write",
        &registry_id(&sub, DEFAULT_RESOURCE_GROUP, name.as_str()),
    );
    let r = dd
        .meta
        .create_registry(
            name.as_str(),
            &dd.config.login_server_for(name.as_str()),
            DEFAULT_RESOURCE_GROUP,
            &settings,
            false,
            Some(&record),
        )
        .await?;
    dd.changed().await;
    emit(format_args!(
        "{}",
        serde_json::json!({"name": r.name, "loginServer": r.login_server, "sku": r.settings.sku.as_str(), "id": r.id})
    ));
    Ok(())
}

async fn list(common: Common, output: Output) -> anyhow::Result<()> {
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    for r in dd.meta.list_registries().await? {
        match output {
            Output::Json => emit(format_args!("{}", serde_json::to_string(&r)?)),
            Output::Table => emit(format_args!(
                "{:<20} {:<40} {}",
                moat_model::text::escape(&r.name),
                moat_model::text::escape(&r.login_server),
                r.settings.sku.as_str()
            )),
        }
    }
    Ok(())
}

async fn delete(name: String, yes: bool, common: Common) -> anyhow::Result<()> {
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let registries = dd.meta.list_registries().await?;
    let Some(r) = registries
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(&name))
    else {
        let names: Vec<&str> = registries.iter().map(|r| r.name.as_str()).collect();
        bail!(
            "no registry named '{}' here: the registries are {}",
            moat_model::text::escape(&name),
            names.join(", ")
        );
    };
    if dd
        .meta
        .default_registry()
        .await?
        .is_some_and(|d| d.id == r.id)
    {
        bail!("the default registry cannot be deleted: it answers every host that names no other registry");
    }
    if !yes && !confirm(&r.name)? {
        bail!("registry '{}' was not deleted", r.name);
    }
    let sub = cloud_ids(&dd.meta).await?.subscription_id;
    // Deleting a registry removes its data; nothing leaves it, so it is no egress, whatever its export policy:
    // the activity log keeps who did it and the settings it had.
    let record = local_event(
        &operator(),
        "Microsoft.ContainerRegistry/registries/delete",
        &registry_id(&sub, &r.resource_group, &r.name),
    )
    .with_change(serde_json::to_value(&r.settings).ok(), None);
    if !dd.meta.delete_registry(&r.name, &record).await? {
        bail!("registry '{}' was deleted meanwhile", r.name);
    }
    dd.changed().await;
    Ok(())
}

/// Asks on the terminal; without one, says how to confirm.
fn confirm(name: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("deleting registry '{name}' removes its repositories, tags and manifests: pass --yes to confirm");
    }
    eprint!("Delete registry '{name}' with all its repositories? (y/n): ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
