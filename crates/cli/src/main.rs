//! The `moat` binary: the registry server (`moat serve`) and its operator commands.

mod acr;
mod audit;
mod gc;
mod jobs;
mod keys;
mod limits_args;
mod logging;
mod login;
mod metrics_args;
mod monitor;
mod registry;
mod role;
mod secret;
mod sp;
mod storage_account;
mod table;
mod transfer_archive;
mod transfer_key;

use clap::{Args, Parser, Subcommand, ValueEnum};
use moat_server::ServeConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "moat",
    version,
    about = "A self-hosted OCI registry that keeps images inside the network they belong to"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server keeps its state and how it is reached: shared by `serve` and the offline commands.
#[derive(Args, Clone)]
struct Common {
    /// Directory for the database, blobs, TLS material and the admin password.
    #[arg(
        long,
        env = "MOAT_DATA_DIR",
        default_value = "./moat-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Address and port of the main listener; the `default` registry's login server.
    #[arg(
        long,
        env = "MOAT_LISTEN",
        default_value = "127.0.0.1:5000",
        global = true
    )]
    listen: SocketAddr,
    /// `host:port` clients use for this server when that is not --listen: several nodes behind one name (each
    /// with its own --listen) give the same, which becomes the `default` registry's login server and the port of
    /// the others'.
    #[arg(long, env = "MOAT_PUBLIC_ADDRESS", global = true, value_parser = moat_server::config::parse_public_address)]
    public_address: Option<String>,
    /// Domain under which registries other than `default` are served (`<name>.<domain>`).
    #[arg(long, env = "MOAT_DOMAIN", default_value = "localhost", global = true, value_parser = moat_model::DnsDomain::parse)]
    domain: moat_model::DnsDomain,
    /// Region reported as registries' location (the second label of data endpoint names): letters and digits
    /// (`West Europe` is taken as `westeurope`).
    #[arg(long, env = "MOAT_REGION", default_value = "local", global = true, value_parser = moat_model::Location::parse)]
    region: moat_model::Location,
    /// Metadata database URL: `sqlite://…` (default `<data dir>/moat.db`) or `postgres://user@host:port/db` (several
    /// nodes on one database).
    #[arg(long, env = "MOAT_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Where blob bytes live: `file://<dir>` (default `<data dir>/storage`) or `az://<container>` (Azure Blob
    /// Storage; account and key from AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY or
    /// AZURE_STORAGE_ACCOUNT_KEY_FILE, or AZURE_STORAGE_USE_EMULATOR and AZURITE_BLOB_STORAGE_URL).
    #[arg(long, env = "MOAT_STORAGE_URL", global = true, value_parser = parse_storage_url)]
    storage_url: Option<moat_store::blobs::object::StorageUrl>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long, env = "MOAT_INSECURE_HTTP", global = true)]
    insecure_http: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    Serve {
        #[command(flatten)]
        common: Common,
        /// PEM certificate chain to serve instead of the local CA's leaves.
        #[arg(long, env = "MOAT_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, env = "MOAT_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Upload sessions idle longer than this many seconds are removed with their partial bytes.
        #[arg(long, env = "MOAT_UPLOAD_TTL_SECS", default_value_t = 24 * 3600)]
        upload_ttl_secs: u64,
        /// Garbage collection: seconds a blob, link or manifest that nothing needs waits before it is removed.
        #[arg(long, env = "MOAT_GC_GRACE_SECS", default_value_t = 24 * 3600)]
        gc_grace_secs: u64,
        /// Seconds between runs of the background garbage collector; 0 turns it off (`moat gc` still works).
        #[arg(long, env = "MOAT_GC_INTERVAL_SECS", default_value_t = 3600)]
        gc_interval_secs: u64,
        /// Durable jobs (remote imports, pipeline runs) this server runs at once.
        #[arg(long, env = "MOAT_JOBS_CONCURRENCY", default_value_t = 2)]
        jobs_concurrency: usize,
        /// Seconds between two looks of import pipelines' source triggers at their storage; 0 turns them off.
        #[arg(
            long,
            env = "MOAT_TRANSFER_TRIGGER_INTERVAL_SECS",
            default_value_t = 60
        )]
        transfer_trigger_interval_secs: u64,
        /// Seconds between two looks at alert rules (below 60, also every metric rule's evaluation frequency).
        #[arg(
            long,
            env = "MOAT_ALERT_INTERVAL_SECS",
            default_value_t = 60,
            hide = true
        )]
        alert_interval_secs: u64,
        #[command(flatten)]
        trail: audit::TrailFlags,
        /// Milliseconds between two rounds of ACR webhook deliveries (tests run it fast).
        #[arg(
            long,
            env = "MOAT_WEBHOOK_INTERVAL_MS",
            default_value_t = 1000,
            hide = true
        )]
        webhook_interval_ms: u64,
        /// Milliseconds between two looks of the diagnostic-setting sinks at the logs (tests make it short).
        #[arg(
            long,
            env = "MOAT_SINK_INTERVAL_MS",
            default_value_t = 1000,
            hide = true
        )]
        sink_interval_ms: u64,
        /// A proxy (address or CIDR) whose X-Forwarded-For/Forwarded headers are believed; repeatable.
        #[arg(long = "trusted-proxy", env = "MOAT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
        trusted_proxies: Vec<ipnet::IpNet>,
        /// Seconds a data-endpoint download link stays valid.
        #[arg(long, env = "MOAT_DATA_LINK_TTL_SECS", default_value_t = 20 * 60)]
        data_link_ttl_secs: u64,
        /// PEM bundle of CAs to trust (besides the system's) for remote import sources; repeatable.
        #[arg(
            long = "import-ca-bundle",
            env = "MOAT_IMPORT_CA_BUNDLE",
            value_delimiter = ','
        )]
        import_ca_bundles: Vec<PathBuf>,
        /// A TOML file with extra listeners, private endpoints and trusted proxies (see the README).
        #[arg(long, env = "MOAT_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        limits: limits_args::LimitArgs,
        #[command(flatten)]
        logs: logging::LogArgs,
        #[command(flatten)]
        metrics: metrics_args::MetricsArgs,
    },
    /// Manage the registries this server hosts: create, list, delete (on the data directory; see `moat serve`).
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
    /// Role assignments: `moat role assignment create|list|delete` (`az role assignment`'s twin).
    Role {
        #[command(subcommand)]
        command: role::RoleCommand,
    },
    /// Service principals for the management API and the data plane (`az ad sp`'s twin): create, list, show,
    /// reset-credentials, delete.
    Sp {
        #[command(subcommand)]
        command: sp::SpCommand,
    },
    /// The secret store transfer pipelines read their SAS tokens from, addressed like Key Vault secrets
    /// (`az keyvault secret`'s twin): set, show, list, delete.
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// Storage account keys for transfer pipelines with storageAccessMode ManagedIdentity: add, list, delete.
    StorageAccount {
        #[command(subcommand)]
        command: storage_account::StorageAccountCommand,
    },
    /// The server's signing and encryption keys (key files under `<data dir>/keys`): list, rotate.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// The key this server signs transfer archives with: `moat transfer-key show` prints its public key.
    TransferKey {
        #[command(subcommand)]
        command: transfer_key::TransferKeyCommand,
    },
    /// Write a transfer archive from the data directory (maintenance and tests; pipelines are the way to export).
    #[command(hide = true)]
    TransferArchive {
        #[command(subcommand)]
        command: transfer_archive::TransferArchiveCommand,
    },
    /// Remove what nothing needs any more: unreferenced blobs and links, manifests whose index or subject was
    /// deleted, abandoned uploads. Asks the server serving the data directory, else works on it directly.
    Gc(gc::GcArgs),
    /// Print the audit trail: data-plane events and the activity log, newest first.
    Audit(audit::AuditArgs),
    /// Monitoring the operator sets up on the data directory: `moat monitor sink add|list|show|delete`.
    Monitor {
        #[command(subcommand)]
        command: monitor::MonitorCommand,
    },
    /// Durable jobs (remote imports, pipeline runs): list, show, cancel.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Sign in to a Moat server's management API with a service principal (`az login`'s twin).
    Login(login::LoginArgs),
    /// Manage registries through the management API, as `az acr` does (run `moat login` first).
    Acr(acr::AcrArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    /// JSON lines: one object per line.
    Json,
    /// Aligned columns, every cell escaped.
    Table,
}

fn parse_storage_url(s: &str) -> Result<moat_store::blobs::object::StorageUrl, String> {
    s.parse()
}

fn config(common: &Common) -> ServeConfig {
    ServeConfig {
        data_dir: common.data_dir.clone(),
        listen: common.listen,
        public_address: common.public_address.clone(),
        insecure_http: common.insecure_http,
        tls_cert: None,
        tls_key: None,
        domain: common.domain.clone(),
        region: common.region.clone(),
        database_url: common.database_url.clone(),
        storage_url: common.storage_url.clone(),
        upload_ttl: Duration::from_secs(24 * 3600),
        gc_grace: Duration::from_secs(24 * 3600),
        gc_interval: Duration::from_secs(3600),
        trusted_proxies: vec![],
        trusted_proxy_header: Default::default(),
        extra_listeners: vec![],
        private_endpoints: vec![],
        data_link_ttl: Duration::from_secs(20 * 60),
        import_ca_bundles: vec![],
        outbound: Default::default(),
        limits: Default::default(),
        access_log: false,
        jobs: Default::default(),
        transfer: Default::default(),
        transfer_trigger_interval: Duration::from_secs(60),
        alert_interval: Duration::from_secs(60),
        metrics: Default::default(),
        audit: Default::default(),
        webhook_interval: Duration::from_secs(1),
        sink_interval: Duration::from_millis(1000),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Login(args) => tokio::task::spawn_blocking(move || login::run(args)).await?,
        Command::Acr(args) => tokio::task::spawn_blocking(move || acr::run(args)).await?,
        Command::Keys { command } => keys::run(command).await,
        Command::TransferKey { command } => transfer_key::run(command),
        Command::TransferArchive { command } => transfer_archive::run(command).await,
        Command::Gc(args) => {
            let c = config(&args.common);
            gc::run(args, c).await
        }
        Command::Serve {
            common,
            tls_cert,
            tls_key,
            upload_ttl_secs,
            gc_grace_secs,
            gc_interval_secs,
            jobs_concurrency,
            transfer_trigger_interval_secs,
            alert_interval_secs,
            trail,
            webhook_interval_ms,
            sink_interval_ms,
            trusted_proxies,
            config: file,
            data_link_ttl_secs,
            import_ca_bundles,
            limits,
            logs,
            metrics,
        } => {
            let mut c = config(&common);
            c.limits = limits.limits();
            c.access_log = logs.access_log;
            c.data_link_ttl = Duration::from_secs(data_link_ttl_secs.max(1));
            c.import_ca_bundles = import_ca_bundles;
            c.trusted_proxies = trusted_proxies;
            if let Some(path) = file {
                let file = moat_server::config::ConfigFile::load(&path)?;
                c.trusted_proxies.extend(file.trusted_proxies);
                c.trusted_proxy_header = file.trusted_proxy_header;
                c.extra_listeners = file.listeners;
                c.private_endpoints = file.private_endpoints;
                c.outbound = file.outbound.rules();
                c.transfer = file.transfer;
                c.audit = file.audit;
                c.access_log |= file.access_log.unwrap_or(false);
                c.metrics.admin_listen = file.admin_listen;
            }
            c.tls_cert = tls_cert;
            c.tls_key = tls_key;
            c.upload_ttl = Duration::from_secs(upload_ttl_secs.max(1));
            c.gc_grace = Duration::from_secs(gc_grace_secs);
            c.gc_interval = Duration::from_secs(gc_interval_secs);
            c.jobs.concurrency = jobs_concurrency.max(1);
            c.transfer_trigger_interval = Duration::from_secs(transfer_trigger_interval_secs);
            c.alert_interval = Duration::from_secs(alert_interval_secs.max(1));
            metrics.apply(&mut c.metrics);
            trail.apply(&mut c.audit);
            c.webhook_interval = Duration::from_millis(webhook_interval_ms.max(10));
            c.sink_interval = Duration::from_millis(sink_interval_ms);
            moat_server::serve(c).await
        }
        Command::Registry { command } => registry::run(command).await,
        Command::Sp { command } => sp::run(command).await,
        Command::Secret { command } => secret::run(command).await,
        Command::StorageAccount { command } => storage_account::run(command).await,
        Command::Role { command } => role::run(command).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Jobs { command } => jobs::run(command).await,
        Command::Monitor { command } => monitor::run(command).await,
    }
}

/// An address or a CIDR range.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if s.contains('/') {
        s.parse()
            .map_err(|_| format!("'{s}' is not a CIDR range (e.g. 10.0.0.0/8)"))
    } else {
        s.parse::<std::net::IpAddr>()
            .map(ipnet::IpNet::from)
            .map_err(|_| format!("'{s}' is not an IP address"))
    }
}

/// Prints a line, ending quietly when the reader has gone (`moat audit | head`).
fn emit(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|_| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (format, access_log) = match &cli.command {
        Command::Serve { logs, config, .. } => logging::settings(logs, config.as_deref()),
        _ => Default::default(),
    };
    logging::init(format, access_log);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli));
    if let Err(e) = result {
        // One line a person can act on; the chain of causes follows the colon.
        // The message may quote stored or remote text: printed inert.
        moat_server::notice::say_at(
            "ERROR",
            format_args!("error: {}", moat_model::text::escape(&format!("{e:#}"))),
        );
        std::process::exit(1);
    }
    Ok(())
}
