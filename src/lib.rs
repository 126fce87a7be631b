//! ftsd: a file transfer service speaking the FTS3 REST API, in one binary with an embedded
//! database.
//!
//! Modules, in dependency order (each may only use the ones above it):
//! - [`model`]: pure domain types (identities, authorization vocabulary).
//! - [`store`]: the store interface ([`store::Store`], in domain terms, async) and its embedded
//!   redb backend ([`store::RedbStore`]): schema, versioned codec, indexes, batch operations.
//! - [`auth`]: X.509 chains with grid proxies, VOMS attributes, trust stores; OAuth2 token
//!   providers and bearer-token validation.
//! - [`service`]: use cases and authorization.
//! - [`api`]: HTTP routes and handlers (warp); the only place status codes are chosen.
//! - [`server`]: TLS accept loop, per-connection identity, graceful shutdown.
//! - [`messages`]: monitoring messages to a STOMP broker, from the store's outbox.
//! - [`config`]: the configuration file and its defaults; [`devpki`]: a throwaway PKI.
//! - `fuzzing` (built for `cargo fuzz` and the tests only): the fuzz targets' entry points.
//!
//! [`run`] is the one entry point; the binary and the integration tests both use it.

pub mod api;
pub mod auth;
pub mod config;
pub mod devpki;
pub mod engine;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod messages;
pub mod model;
pub mod server;
pub mod service;
pub mod store;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;

use crate::{
    auth::Authenticator,
    config::Resolved,
    server::{
        Server,
        tls::{self, HostCredential},
    },
    service::Service,
    store::{Redb, RedbStore, Store},
};

/// Everything that can stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Pki(#[from] devpki::PkiError),
    #[error(transparent)]
    Messages(#[from] messages::MessagesError),
    #[error("start-up task failed: {0}")]
    Task(String),
    /// The token providers cannot be used at all (no HTTPS client could be set up).
    #[error("[oidc] {0}")]
    Oidc(String),
    /// The listen address cannot be bound; the text names it and says why
    /// ([`config::explain_bind_error`]).
    #[error("{0}")]
    Listen(String),
}

/// Run the service on `listener` until `shutdown` completes.
pub async fn run(
    config: Resolved,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_with(config, listener, shutdown, |_| {}).await
}

/// [`run`], calling `ready` with the address once the service is about to accept requests
/// (its certificates, trust store and database are loaded): the binary prints its start-up
/// instructions there, and never for a service that then fails to start.
pub async fn run_with(
    config: Resolved,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), Error> {
    // Certificates first: a wrong path or key must not leave a data directory, a seal key and
    // a database behind, and must be reported as what it is.
    let host = HostCredential::load(&config.host_cert, &config.host_key)?;
    let provider = tls::provider();
    let auth = Arc::new(
        Authenticator::load(
            &config.ca_dir,
            &config.voms_dir,
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| config.explain_trust_error(e))?,
    );
    let server_dn = host.dn.clone();
    let tls_config = tls::server_config(host, auth.clone())?;
    // The database opens (after a crash: redb's repair, unless `quick_repair`) while the
    // engine's backends are probed (gfal2); the port answers once both are done.
    let data_dir = config.data_dir.clone();
    let options = store::Options {
        quick_repair: config.quick_repair,
    };
    // The message kinds are recorded in the database: the transactions that change files read
    // them to write the outbox (none when messages are off).
    let (kinds, outbox_max) = (config.messages.kinds(), config.messages.outbox_max);
    let opening = tokio::task::spawn_blocking(move || {
        let db = Redb::open_with(&data_dir, options)?;
        db.set_message_policy(kinds, outbox_max)?;
        RedbStore::new(db)
    });
    // The schemes the engine can transfer: submissions naming others are refused. An API-only
    // instance accepts any scheme (another node may transfer them).
    let registry = if config.engine.enabled {
        Some(registry(&config, &auth).await)
    } else {
        None
    };
    let host_name = config.node_name.clone().unwrap_or_else(service::host_name);
    let store: Arc<dyn Store> = Arc::new(opening.await.map_err(|e| Error::Task(e.to_string()))??);
    // The node registers itself in the host list (`GET /config`) at start; the engine renews
    // the beat while it runs.
    store
        .beat_host(
            &host_name,
            model::config::SERVER_SERVICE,
            model::time::now(),
        )
        .await?;
    tracing::info!(path = %store.location(), node = %host_name, "database open");
    let proxy_dir = config.data_dir.join("run").join("proxies");
    service::delegation::prepare_proxy_dir(&proxy_dir).map_err(|source| store::StoreError::Io {
        path: proxy_dir.clone(),
        source,
    })?;
    let mut settings = service::Settings::new(server_dn, proxy_dir);
    settings.host_name = host_name;
    settings.roles = config.roles.clone();
    settings.submit.local_roots = config
        .engine
        .file_roots
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let owned = |schemes: Vec<&str>| schemes.into_iter().map(str::to_string).collect();
    settings.submit.schemes = registry.as_ref().map(|r| owned(r.schemes()));
    // And what it cannot run is refused too: pairs no backend copies, tape steps no backend does.
    settings.submit.scheme_groups = registry
        .as_ref()
        .map(|r| r.scheme_groups().into_iter().map(owned).collect());
    settings.submit.staging_schemes = registry.as_ref().map(|r| owned(r.staging_schemes()));
    settings.submit.archive_schemes = registry.as_ref().map(|r| owned(r.archive_schemes()));
    // Bearer tokens: the providers are discovered now (one that cannot be reached is tried
    // again when its tokens arrive).
    let oidc = if config.oidc.enabled() {
        let oidc = auth::oidc::Oidc::start(oidc_settings(&config.oidc), auth.trust().anchors())
            .await
            .map_err(Error::Oidc)?;
        Some(Arc::new(oidc))
    } else {
        None
    };
    settings.oidc = oidc.clone();
    settings.submit.non_managed_tokens = config.oidc.non_managed_tokens;
    settings.metrics = Arc::new(service::metrics::Metrics::new(
        service::metrics::MetricsSettings {
            per_link: config.metrics.per_link,
            max_links: config.metrics.max_links,
        },
    ));
    settings.monitoring = service::monitor::MonitoringSettings {
        show_config_audit: config.monitoring.show_config_audit,
        show_gfal2_config: config.monitoring.show_gfal2_config,
        log_dir: config.log_dir.clone(),
    };
    let progress = settings.progress.clone();
    let metrics = settings.metrics.clone();
    let wake = settings.wake.clone();
    let token_wake = settings.token_wake.clone();
    let host_name = settings.host_name.clone();
    let (stop_messages, messages_stopping) = tokio::sync::watch::channel(false);
    let publisher = message_settings(&config, &host_name)?.map(|settings| {
        tokio::spawn(messages::run(
            store.clone(),
            settings,
            Arc::new(messages::Stats::default()),
            messages_stopping,
        ))
    });
    let service = Arc::new(Service::new(store.clone(), auth.clone(), settings));
    let (stop_engine, engine_stopping) = tokio::sync::watch::channel(false);
    let tokens = oidc.map(|oidc| {
        Arc::new(service::tokens::Tokens::new(
            store.clone(),
            oidc,
            config.oidc.token_refresh_margin,
        ))
    });
    let exchange = tokens.clone().map(|tokens| {
        tokio::spawn(service::tokens::run_exchange(
            tokens,
            Duration::from_secs(config.oidc.exchange_interval.max(1)),
            token_wake,
            wake.clone(),
            host_name.clone(),
            engine_stopping.clone(),
        ))
    });
    let engine = registry.map(|registry| {
        let settings = engine::Settings {
            max_active: config.engine.max_active.max(1),
            default_link_active: config.engine.default_link_active.max(1),
            default_se_active: config.engine.default_se_active.max(1),
            max_staging: config.engine.max_staging,
            scheduling_interval: Duration::from_secs(config.engine.scheduling_interval.max(1)),
            queue_check_interval: Duration::from_secs(config.engine.queue_check_interval.max(1)),
            stall_timeout: Duration::from_secs(config.engine.stall_timeout.max(1)),
            log_dir: config.log_dir.clone(),
            host: host_name,
            tokens,
            progress: progress.clone(),
            metrics: metrics.clone(),
            optimizer: engine::optimizer::Settings {
                enabled: config.engine.optimizer,
                interval: Duration::from_secs(config.engine.optimizer_interval.max(1)),
                retention: Duration::from_secs(
                    config
                        .engine
                        .optimizer_retention_days
                        .saturating_mul(24 * 3600),
                ),
                history: engine::optimizer::core::History::parse(&config.engine.optimizer_history)
                    .unwrap_or_default(),
            },
            tape: engine::tape::Settings {
                staging_bulk_size: config.engine.staging_bulk_size.max(1),
                staging_wait: Duration::from_secs(config.engine.staging_wait),
                staging_first_poll: Duration::from_secs(config.engine.staging_first_poll),
                staging_poll_interval: Duration::from_secs(
                    config.engine.staging_poll_interval.max(1),
                ),
                staging_poll_retries: config.engine.staging_poll_retries,
                archive_bulk_size: config.engine.archive_bulk_size.max(1),
                archive_first_poll: Duration::from_secs(config.engine.archive_first_poll.max(1)),
                archive_poll_interval: Duration::from_secs(
                    config.engine.archive_poll_interval.max(1),
                ),
                archive_poll_retries: config.engine.archive_poll_retries,
            },
        };
        tokio::spawn(engine::Engine::run(
            store.clone(),
            registry,
            settings,
            wake,
            engine_stopping,
        ))
    });
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(server::ServerError::Io)?,
        ),
        None => None,
    };
    let (stop_metrics, metrics_stopping) = tokio::sync::watch::channel(false);
    let plain_metrics = metrics_listener.map(|listener| {
        tracing::info!(address = %config.metrics.listen.map(|a| a.to_string()).unwrap_or_default(), "plain-HTTP /metrics listening");
        tokio::spawn(server::metrics_http::run(
            listener,
            service.clone(),
            metrics_stopping,
        ))
    });
    let server = Server {
        tls: tls_config,
        auth,
        routes: api::routes(service, api::BodyLimits::new(&config.limits)),
        limits: config.limits.clone(),
        metrics,
    };
    let address = listener.local_addr().map_err(server::ServerError::Io)?;
    tracing::info!(%address, "listening");
    ready(address);
    let served = server.run(listener, shutdown).await;
    let _ = stop_metrics.send(true);
    if let Some(task) = plain_metrics {
        let _ = task.await;
    }
    let _ = stop_engine.send(true);
    if let Some(exchange) = exchange {
        // It stops between passes; a pass in flight is bounded by the provider timeout.
        let _ = exchange.await;
    }
    if let Some(engine) = engine {
        match engine.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the transfer engine stopped with an error"),
            Err(e) => tracing::error!(error = %e, "the transfer engine task failed"),
        }
    }
    // After the engine: its last state changes' messages get their chance to go out.
    let _ = stop_messages.send(true);
    if let Some(publisher) = publisher {
        if let Err(e) = publisher.await {
            tracing::error!(error = %e, "the message publisher task failed");
        }
    }
    served?;
    Ok(())
}

/// The publisher's settings from `[messages]`; `None` when messages are off. TLS files are
/// read here, so that a wrong path stops the start with its reason.
fn message_settings(
    config: &Resolved,
    host_name: &str,
) -> Result<Option<messages::Settings>, Error> {
    let m = &config.messages;
    if !m.enabled() {
        return Ok(None);
    }
    let tls = if m.tls {
        let ca = m.ca.clone().unwrap_or_else(|| config.ca_dir.clone());
        Some(messages::tls_config(
            &ca,
            m.client_cert.as_deref(),
            m.client_key.as_deref(),
        )?)
    } else {
        None
    };
    Ok(Some(messages::Settings {
        brokers: m.brokers.clone(),
        login: messages::connection::Login {
            tls,
            username: m.username.clone(),
            password: m.password.clone(),
            vhost: m.vhost.clone(),
        },
        topic: m.topic,
        ttl: Duration::from_secs(m.ttl_hours.saturating_mul(3600)),
        endpoint: model::message::Endpoint {
            alias: m.alias.clone().unwrap_or_else(|| host_name.to_string()),
            fqdn: m.publish_fqdn.then(|| host_name.to_string()),
        },
    }))
}

/// The token providers' settings from `[oidc]`.
fn oidc_settings(config: &config::OidcConfig) -> auth::oidc::Settings {
    auth::oidc::Settings {
        providers: config
            .providers
            .iter()
            .map(|p| auth::oidc::ProviderSettings {
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                client_secret: model::token::Secret::new(p.client_secret.clone()),
                required_scope: p.required_scope.clone(),
                vo: p.vo.clone(),
            })
            .collect(),
        authorized_audiences: config.authorized_audiences.clone(),
        jwks_cache: Duration::from_secs(config.jwks_cache_seconds),
        validate_offline: config.validate_offline,
        min_refetch: auth::oidc::JWKS_MIN_REFETCH,
    }
}

/// The transfer backends, in the order that decides which serves a scheme: mock, file, http
/// (native unless `http_backend = "gfal2"`), then gfal2 (if found). One log line says which
/// schemes each serves.
async fn registry(config: &Resolved, auth: &Authenticator) -> engine::backends::Registry {
    use config::{Gfal2Mode, HttpBackendChoice};
    use engine::backends::{Backend, file, gfal2, http, link_model::LinkModel, mock};

    let links = config
        .engine
        .mock_links
        .iter()
        .map(|l| {
            let model = LinkModel {
                bandwidth: l.bandwidth,
                per_transfer: l.per_transfer,
                latency: l.latency,
                failure_rate: l.failure_rate,
                concurrency_limit: l.concurrency_limit,
                failure_step: l.failure_step,
            };
            (l.source.clone(), l.destination.clone(), model)
        })
        .collect();
    let mut backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(mock::MockBackend::with_links(
            config.engine.mock_transfer_time,
            links,
        )),
        Arc::new(file::FileBackend::new(config.engine.file_roots.clone())),
    ];
    if config.engine.http_backend == HttpBackendChoice::Native {
        backends.push(Arc::new(http::HttpBackend::new(
            auth.trust().anchors().to_vec(),
        )));
    }
    if config.engine.gfal2 == Gfal2Mode::Auto {
        let settings = gfal2::Gfal2Settings {
            program: config.engine.gfal2_copy.clone(),
            run_dir: config.data_dir.join("run"),
            ca_dir: config.ca_dir.clone(),
            voms_dir: config.voms_dir.clone(),
            options: config
                .gfal2_options
                .iter()
                .map(|o| (o.group.clone(), o.key.clone(), o.value.clone()))
                .collect(),
        };
        match gfal2::Gfal2Backend::start(settings).await {
            Ok(backend) => {
                let found = backend.installation();
                tracing::info!(
                    version = %found.version,
                    program = %found.copy.display(),
                    python = %found.python.display(),
                    plugins = %found.plugins.join(" "),
                    "gfal2 found"
                );
                let unknown = backend.unknown_plugins();
                if !unknown.is_empty() {
                    tracing::warn!(plugins = %unknown.join(" "), "gfal2 plugins with schemes ftsd does not know: not used");
                }
                backends.push(Arc::new(backend));
            }
            Err(why) => tracing::warn!(
                reason = %why,
                "gfal2 is not available: root://, gsiftp://, srm://, s3:// and other gfal2 schemes cannot be transferred{}",
                if config.engine.http_backend == HttpBackendChoice::Gfal2 {
                    ", nor http(s)/dav(s) (http_backend = \"gfal2\")"
                } else {
                    ""
                }
            ),
        }
    }
    let registry = engine::backends::Registry::new(backends);
    tracing::info!(backends = %registry.describe(), "transfer backends");
    registry
}
