//! `moat serve`: open the stores, bootstrap on first start, and run the accept loop until a signal, then
//! finish in-flight requests (their durability work included) and flush the audit queue before exiting.

use crate::audit_log::AuditLog;
use crate::config::ServeConfig;
use crate::connection::body::ReadTimeoutBody;
use crate::connection::idle::{IdleIo, InFlight};
use crate::connection::Connections;
use crate::endpoints::{AcceptFn, ConnInfo, ListenerKind};
use crate::oci::error::{Code, OciError};
use crate::registries::RegistryDirectory;
use crate::serve_lock::{ServeLock, ServerInfo};
use crate::state::AppState;
use crate::{acr, oci, tls, token};
use anyhow::Context;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use moat_auth::TokenIssuer;
use moat_model::{ConnectionStatus, RegistrySettings, Sku};

/// The resource group of the registries made by the server itself or by `moat registry create`.
pub const DEFAULT_RESOURCE_GROUP: &str = "moat";
use moat_store::MetadataStore;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::Service;

/// Opens (creating if needed) the metadata store under the data directory, after making sure the directory is
/// the server's alone. Operator commands open an existing one instead (`crate::operator`).
pub async fn open_store(config: &ServeConfig) -> anyhow::Result<MetadataStore> {
    crate::datadir::prepare(&config.data_dir)?;
    MetadataStore::open(&config.database_url())
        .await
        .context("opening the metadata store")
}

/// First-start work, idempotent: the admin identity and the `default` registry; then every registry's login
/// server follows the address, domain and port this server answers on.
pub async fn bootstrap(config: &ServeConfig, meta: &MetadataStore) -> anyhow::Result<()> {
    let from_env = std::env::var("MOAT_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    match (meta.identity_password_hash("admin").await?, from_env) {
        (None, env) => {
            let generated = env.is_none();
            let password = env.unwrap_or_else(moat_auth::password::generate);
            meta.create_identity("admin", &moat_auth::password::hash(&password))
                .await?;
            if generated {
                let path = config.data_dir.join("admin-password");
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?;
                writeln!(f, "{password}")?;
                f.sync_all()?;
                // The path only: a log or a terminal scrollback is readable by more people than the file.
                crate::notice::say(format_args!(
                    "moat: created the admin user; its password is in {} (readable by this user only)",
                    path.display()
                ));
            }
        }
        // An operator who sets the variable means it: the stored hash follows it.
        (Some(hash), Some(env)) if !moat_auth::password::verify(&env, &hash) => {
            meta.set_identity_password("admin", &moat_auth::password::hash(&env))
                .await?;
        }
        _ => {}
    }
    let login_server = config.default_login_server();
    if meta.default_registry().await?.is_none() {
        let settings = RegistrySettings::new(Sku::Premium, config.region.clone());
        let sub = cloud_ids(meta).await?.subscription_id;
        let record = crate::arm::activity::local_event(
            "moat:bootstrap",
            "Microsoft.ContainerRegistry/registries/write",
            &crate::arm::registry_json::registry_id(&sub, DEFAULT_RESOURCE_GROUP, "default"),
        );
        meta.create_registry(
            "default",
            &login_server,
            DEFAULT_RESOURCE_GROUP,
            &settings,
            true,
            Some(&record),
        )
        .await?;
    }
    // Every login server is the one this server answers on (its address for `default`, `<name>.<domain>` with its
    // port for the others), whatever address, domain or port made them: a registry never keeps a name the server
    // does not answer to, where its traffic would fall to `default`.
    let changed = meta
        .restamp_login_servers(|r, is_default| {
            if is_default {
                login_server.clone()
            } else {
                config.login_server_for(&r.name)
            }
        })
        .await?;
    if changed > 0 {
        tracing::info!(
            "login servers of {changed} registries follow the listen address and domain"
        );
    }
    Ok(())
}

/// The server's Azure identity: one tenant and one subscription, generated at first start.
#[derive(Clone, Debug)]
pub struct CloudIds {
    pub tenant_id: String,
    pub subscription_id: String,
}

pub async fn cloud_ids(meta: &MetadataStore) -> anyhow::Result<CloudIds> {
    Ok(CloudIds {
        tenant_id: meta
            .init_setting("tenant_id", &uuid::Uuid::new_v4().to_string())
            .await?,
        subscription_id: meta
            .init_setting("subscription_id", &uuid::Uuid::new_v4().to_string())
            .await?,
    })
}

async fn not_found() -> axum::response::Response {
    OciError::new(Code::NameUnknown, "no such endpoint")
        .with_status(axum::http::StatusCode::NOT_FOUND)
        .into_response()
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(oci::router())
        .merge(token::router())
        .merge(acr::router())
        .merge(crate::arm::router(state.clone()))
        .merge(crate::health::router())
        .route("/", axum::routing::get(crate::data_endpoint::download))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::edge::admit,
        ))
        .with_state(state)
}

pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Before the lock file names this process: an operator command may signal it from then on, and SIGHUP's
    // default action would end it.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("handling SIGHUP")?;
    crate::datadir::prepare(&config.data_dir)?;
    // Held until the process ends: one server per data directory, and operator commands find it.
    let _serving = ServeLock::acquire(&config.data_dir, &ServerInfo::of(&config))?;
    crate::monitor::metrics::admin::check(&config)?;
    let meta = open_store(&config).await?;
    bootstrap(&config, &meta).await?;
    let listeners: Arc<crate::endpoints::Listeners> = Default::default();
    let outbound = listeners.outbound(config.outbound.clone());
    let blobs = crate::storage::open_blobs(&config, outbound.clone())?;
    crate::datadir::check_secret_files(&config.data_dir)?;
    let keys = crate::keys::ServerKeys::load(&config.data_dir)?;
    crate::secrets::secure_database(&meta, &keys).await?;
    keys.spawn_reloader();
    let tokens = TokenIssuer::with_keys(keys.registry_tokens.clone(), keys.entra_tokens.clone());
    let links = moat_auth::LinkSigner::with_keys(keys.data_links.clone());
    let served_names = Arc::new(tls::ServedNames::default());
    let tls = if config.insecure_http {
        None
    } else if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        Some(tls::operator_config(cert, key)?)
    } else {
        let ca = tls::LocalCa::load_or_create(&config.data_dir.join("tls"))?;
        crate::notice::say(format_args!(
            "moat: TLS from the local CA {}: trust it with `--cert-dir` (skopeo, podman), /etc/docker/certs.d/<host>/ca.crt (docker) or REQUESTS_CA_BUNDLE (Azure clients)",
            ca.cert_path.display()
        ));
        let names = vec![config.listen.ip().to_string(), "localhost".to_string()];
        Some(tls::local_ca_config(ca, &names, served_names.clone())?)
    };
    let config = Arc::new(config);
    let jobs = crate::jobs::Jobs::new(meta.clone(), config.jobs.clone());
    let state = AppState {
        outbound,
        config: config.clone(),
        registries: RegistryDirectory::new(meta.clone(), config.clone()),
        audit: AuditLog::start(meta.clone()),
        meta,
        blobs,
        tokens,
        links,
        keys,
        uploads: Default::default(),
        logins: Arc::new(crate::logins::LoginGuard::new(&config.limits)),
        manifest_cache: Default::default(),
        listeners,
        jobs,
    };
    let removed = oci::uploads::sweep(&state, true).await?;
    if removed > 0 {
        tracing::info!("removed {removed} abandoned upload(s)");
    }
    crate::gc::spawn_background(&state);
    crate::change_watch::spawn(&state);
    crate::gc::serve_admin_socket(&state).await?;
    crate::jobs::start(&state).await?;
    crate::monitor::start(&state);
    let sweeper = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60).min(sweeper.config.upload_ttl)).await;
            if let Err(e) = oci::uploads::sweep(&sweeper, false).await {
                tracing::warn!("upload sweep failed: {e}");
            }
        }
    });

    // An operator command that changed the database signals SIGHUP: serve its change now, not within a second.
    let reloader = state.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // What was recorded before the reload began is served after it: say how far that is.
            let seen = reloader.meta.activity_max_seq().await;
            crate::endpoints::refresh(&reloader).await;
            if let Ok(seen) = seen {
                if let Err(e) = crate::serve_lock::write_reloaded(&reloader.config.data_dir, seen) {
                    tracing::warn!("writing {}: {e}", crate::serve_lock::RELOADED_FILE);
                }
            }
        }
    });

    let router = app(state.clone());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let draining = Draining::default();
    let watcher = draining.clone();
    let local_ca =
        (acceptor.is_some() && config.tls_cert.is_none()).then(|| config.data_dir.join("tls"));
    let main_ip = config.listen.ip();
    let sni = local_ca.is_some().then(|| {
        crate::connection::sni::SniCheck::new(
            served_names.clone(),
            state.registries.clone(),
            config.clone(),
        )
    });
    let connections = crate::connection::Connections::new(config.limits.clone(), sni);
    // With the access log on: the configuration that says who the client is (trusted proxies).
    let access = config.access_log.then(|| config.clone());
    let accept: AcceptFn = Arc::new(move |listener, kind| {
        // A client that connects by address sends no SNI: each listener's default certificate also names its own.
        let own_ip = listener.local_addr().map(|a| a.ip()).unwrap_or(main_ip);
        let acceptor = match &local_ca {
            Some(dir) if own_ip != main_ip => tls::LocalCa::load_or_create(dir)
                .and_then(|ca| {
                    // The main address too: the default registry's login server is that address.
                    let names = [own_ip.to_string(), main_ip.to_string(), "localhost".into()];
                    tls::local_ca_config(ca, &names, served_names.clone())
                })
                .map(tokio_rustls::TlsAcceptor::from)
                .map_err(|e| tracing::warn!("certificate for {own_ip}: {e}"))
                .ok()
                .or_else(|| acceptor.clone()),
            _ => acceptor.clone(),
        };
        tokio::spawn(accept_loop(
            listener,
            kind,
            router.clone(),
            acceptor,
            watcher.clone(),
            connections.clone(),
            access.clone(),
        ))
        .abort_handle()
    });
    let scheme = if config.insecure_http {
        "http"
    } else {
        "https"
    };
    let mut public = Vec::new();
    for addr in std::iter::once(config.listen).chain(config.extra_listeners.iter().copied()) {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        crate::notice::say(format_args!("moat listening on {scheme}://{addr}"));
        state.listeners.add_public(listener.local_addr()?);
        public.push(accept(listener, ListenerKind::Public));
    }
    state.listeners.start(config.listen.port(), accept);
    let admin = crate::monitor::metrics::admin::start(&state).await?;
    let declared = declare_endpoints(&state).await?;
    crate::endpoints::refresh(&state).await;
    // An endpoint the operator declared but the server cannot serve would count for the export policy while
    // carrying no traffic: refuse to start instead.
    for pe in declared {
        if !state.listeners.serves(&pe.id) {
            anyhow::bail!(
                "private endpoint '{}' cannot listen on {}:{}: use an address assigned to this host (see `ip addr`) or remove it from the configuration file",
                pe.name,
                pe.address,
                config.listen.port()
            );
        }
    }

    shutdown_signal().await;
    crate::notice::say("moat: shutting down, finishing in-flight requests");
    for h in public.into_iter().chain(admin) {
        h.abort();
    }
    state.listeners.stop_all();
    state.jobs.shutdown().await;
    crate::gc::remove_admin_socket(&config.data_dir);
    draining.finish(Duration::from_secs(30)).await;
    state.audit.flush().await;
    Ok(())
}

/// Creates the private endpoints the configuration file declares (approved: the operator declared them) and
/// refuses to start when one exists with a different registry or address.
async fn declare_endpoints(state: &AppState) -> anyhow::Result<Vec<moat_model::PrivateEndpoint>> {
    let mut declared = Vec::new();
    for d in &state.config.private_endpoints {
        let registry = state.meta.registry_by_name(&d.registry).await?.with_context(|| {
            format!(
                "private endpoint '{}' names registry '{}', which does not exist: create it first (moat registry create {})",
                d.name, d.registry, d.registry
            )
        })?;
        match state.meta.private_endpoint(&d.resource_group, &d.name).await? {
            Some(pe) if pe.registry_id != registry.id || pe.address != d.address.ip() => anyhow::bail!(
                "private endpoint '{}' exists on {} for another registry or address than the configuration says; delete it first (moat acr private-endpoint delete -n {} -g {})",
                d.name, pe.address, d.name, d.resource_group
            ),
            Some(pe) => declared.push(pe),
            None => {
                let sub = cloud_ids(&state.meta).await?.subscription_id;
                let record = crate::arm::activity::local_event(
                    "moat:config",
                    "Microsoft.Network/privateEndpoints/write",
                    &crate::arm::private_endpoints::endpoint_id(&sub, &d.resource_group, &d.name),
                );
                let pe = state
                    .meta
                    .create_private_endpoint(
                        &moat_store::meta::NewPrivateEndpoint {
                            name: d.name.clone(),
                            resource_group: d.resource_group.clone(),
                            registry_id: registry.id.clone(),
                            registry_name: registry.name.clone(),
                            address: d.address,
                            status: ConnectionStatus::Approved,
                            description: "Auto-Approved (declared in the configuration file)".into(),
                        },
                        &record,
                    )
                    .await?;
                declared.push(pe);
            }
        }
    }
    Ok(declared)
}

/// Accepts connections on one listener until aborted; each connection's requests carry where they came in.
async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    watcher: Draining,
    connections: Arc<Connections>,
    access: Option<Arc<ServeConfig>>,
) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Past a connection cap the socket is closed before TLS or HTTP costs anything.
        let Some(permit) = connections.admit(peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            peer,
            kind: kind.clone(),
        };
        let router = router.clone();
        let in_flight = InFlight::default();
        let stream = IdleIo::new(stream, connections.limits.idle_timeout, in_flight.clone());
        let body_timeout = connections.limits.body_read_timeout;
        let access = access.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let busy = in_flight.enter();
                req.extensions_mut().insert(info.clone());
                normalize_path(&mut req);
                let entry = access
                    .as_ref()
                    .map(|config| crate::access_log::Entry::begin(&req, &info, local, config));
                let mut router = router.clone();
                let req = req.map(|b| Body::new(ReadTimeoutBody::new(b, body_timeout)));
                async move {
                    let _busy = busy;
                    let resp = router.call(req).await?;
                    Ok::<_, std::convert::Infallible>(match entry {
                        Some(entry) => entry.finish(resp),
                        None => resp,
                    })
                }
            });
        let acceptor = acceptor.clone();
        let watcher = watcher.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            connections.configure(&mut builder);
            match acceptor {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    let Some(tls) = connections.handshake(&acceptor, stream).await else {
                        return;
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .into_owned();
                    watcher.watch(conn).await;
                }
            }
        });
    }
}

/// Graceful shutdown across every listener: on `finish`, each open connection finishes its in-flight
/// request and closes; `finish` returns when all have, or at the deadline.
#[derive(Clone, Default)]
struct Draining {
    stop: Arc<tokio::sync::Notify>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<tokio::sync::Notify>,
}

impl Draining {
    async fn watch<C>(&self, conn: C)
    where
        C: hyper_util::server::graceful::GracefulConnection,
    {
        use std::sync::atomic::Ordering;
        self.open.fetch_add(1, Ordering::SeqCst);
        let mut conn = std::pin::pin!(conn);
        if !self.stopping.load(Ordering::SeqCst) {
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = self.stop.notified() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.closed.notify_waiters();
    }

    async fn finish(&self, deadline: Duration) {
        use std::sync::atomic::Ordering;
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        let _ = tokio::time::timeout(deadline, async {
            while self.open.load(Ordering::SeqCst) > 0 {
                let closed = self.closed.notified();
                if self.open.load(Ordering::SeqCst) == 0 {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), closed).await;
            }
        })
        .await;
    }
}

/// Two spellings the routers would miss, fixed before routing: az joins its resource-manager URL (which ends in
/// '/') with paths that start with one and asks for `//metadata/endpoints`, so repeated leading slashes collapse;
/// and ARM paths are case-insensitive, so `/SUBSCRIPTIONS/…` reaches the management router (which reads every
/// later fixed segment in any case) instead of the registry's 404.
fn normalize_path<B>(req: &mut hyper::Request<B>) {
    let path = req.uri().path();
    let trimmed = path.trim_start_matches('/');
    let first = trimmed.split('/').next().unwrap_or("");
    let arm = first.eq_ignore_ascii_case("subscriptions") && first != "subscriptions";
    if !path.starts_with("//") && !arm {
        return;
    }
    let fixed = if arm {
        format!("/subscriptions{}", &trimmed[first.len()..])
    } else {
        format!("/{trimmed}")
    };
    let pq = match req.uri().query() {
        Some(q) => format!("{fixed}?{q}"),
        None => fixed,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = hyper::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    fn normalized(uri: &str) -> String {
        let mut req = hyper::Request::builder().uri(uri).body(()).unwrap();
        normalize_path(&mut req);
        req.uri().to_string()
    }

    #[test]
    fn arm_prefix_in_any_case_and_leading_slashes() {
        assert_eq!(
            normalized("//metadata/endpoints?a=1"),
            "/metadata/endpoints?a=1"
        );
        assert_eq!(
            normalized("/SUBSCRIPTIONS/s1/RESOURCEGROUPS/rg?api-version=x"),
            "/subscriptions/s1/RESOURCEGROUPS/rg?api-version=x"
        );
        assert_eq!(normalized("//Subscriptions"), "/subscriptions");
        assert_eq!(normalized("/subscriptions/s1"), "/subscriptions/s1");
        assert_eq!(normalized("/v2/SUBSCRIPTIONS/x"), "/v2/SUBSCRIPTIONS/x");
        assert_eq!(normalized("/subscriptionsX/y"), "/subscriptionsX/y");
    }
}
