//! Building and running the service: `Application::build` opens storage, loads the secrets,
//! creates the administrator on first start and binds both listeners (reporting their ports);
//! `run_until` serves until the shutdown future resolves, drains in-flight requests and flushes.

use crate::app::crypto::Sealer;
use crate::app::internal::KasVerifier;
use crate::app::{App, AppConfig};
use crate::config::{Settings, TlsFiles};
use crate::grpc::{self, pb};
use crate::metrics::{self, Metrics};
use crate::rest::{self, RestState};
use crate::{secrets, telemetry};
use agentreg_storage::SecretHasher;
use anyhow::Context;
use axum::routing::get;
use axum::{Router, middleware};
use axum_server::tls_rustls::RustlsConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// The file that receives a generated root token on first start.
pub const ROOT_TOKEN_FILE: &str = "initial_root_token";

/// A built service whose listeners are bound.
pub struct Application {
    app: App,
    settings: Settings,
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: Option<RustlsConfig>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with_hasher(settings, SecretHasher::new()).await
    }

    /// Builds with a given hasher; tests use [`SecretHasher::insecure_for_tests`] only where
    /// they hash in bulk.
    pub async fn build_with_hasher(
        settings: Settings,
        hasher: SecretHasher,
    ) -> anyhow::Result<Application> {
        let data_dir = settings.data_dir.clone();
        secrets::create_data_dir(&data_dir)?;
        let kas_secret = secrets::kas_secret(settings.kas_secret_file.as_deref(), &data_dir)?;
        let encryption_key =
            secrets::encryption_key(settings.encryption_key_file.as_deref(), &data_dir)?;
        let storage = crate::backends::open(settings.database.as_ref(), &data_dir).await?;
        tracing::info!(backend = storage.backend(), "storage opened");
        let app = App::new(
            storage,
            hasher,
            AppConfig {
                receptive_agents_enabled: settings.receptive_agents_enabled,
                auth_failures_per_minute: settings.auth_failures_per_minute,
                agent_token_max_lifetime: settings.agent_token_max_lifetime,
                require_agent_token_expiry: settings.require_agent_token_expiry,
                max_rotation_overlap: settings.max_rotation_overlap,
            },
            Sealer::new(&encryption_key),
            KasVerifier::new(&kas_secret),
        );
        let chosen_token = settings.root_token.clone();
        let chose_token = chosen_token.is_some();
        if let Some(token) = app
            .bootstrap_root(chosen_token)
            .await
            .context("creating the administrator")?
        {
            if chose_token {
                tracing::info!("created user root with the token from AGENTREG_ROOT_TOKEN");
            } else {
                let path = data_dir.join(ROOT_TOKEN_FILE);
                secrets::write_root_token(&path, &token)?;
                tracing::info!(path = %path.display(), "created user root; its token is in this file");
            }
        }
        let http_listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding the REST listener to {}", settings.http_addr))?;
        let grpc_listener = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC listener to {}", settings.grpc_addr))?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics listener to {addr}"))?,
            ),
            None => None,
        };
        let tls = match &settings.tls {
            Some(files) => Some(tls_config(files).await?),
            None => None,
        };
        Ok(Application {
            app,
            settings,
            http_listener,
            grpc_listener,
            metrics_listener,
            tls,
        })
    }

    /// The address of the separate metrics listener, if `--metrics-addr` was given.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        Ok(match &self.metrics_listener {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.http_listener.local_addr()?)
    }

    pub fn grpc_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.grpc_listener.local_addr()?)
    }

    /// Serves REST and gRPC until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish, and flushes the store.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let metrics = Arc::new(Metrics::new());
        let metrics_route = Router::new()
            .route("/metrics", get(metrics::serve_metrics))
            .with_state((metrics.clone(), self.app.clone()));

        let mut rest_router = rest::router(RestState {
            app: self.app.clone(),
            external_url: self.settings.external_url.clone(),
        })
        .merge(rest::health::router(self.app.clone()));
        let metrics_listener = self.metrics_listener;
        if metrics_listener.is_none() {
            rest_router = rest_router.merge(metrics_route.clone());
        }
        let rest_router = rest_router
            .layer(middleware::from_fn_with_state(
                metrics.clone(),
                metrics::track_rest,
            ))
            .layer(
                tower_http::trace::TraceLayer::new_for_http().make_span_with(telemetry::http_span),
            );
        let (grpc_routes, health_reporter) = grpc_routes(&self.app).await?;
        let grpc_router = grpc_routes
            .into_axum_router()
            .layer(middleware::from_fn_with_state(
                metrics.clone(),
                metrics::track_grpc,
            ));

        let metrics_server = async {
            match metrics_listener {
                Some(listener) => serve(listener, metrics_route, None, stop.clone()).await,
                None => Ok(()),
            }
        };
        let invalidations = tokio::spawn({
            let app = self.app.clone();
            async move { app.follow_invalidations().await }
        });
        let health_watch = tokio::spawn(watch_health(
            self.app.clone(),
            health_reporter,
            stop.clone(),
        ));
        let usage_app = self.app.clone();
        let usage_stop = stop.clone();
        let usage_writer = tokio::spawn(async move {
            let mut interval = tokio::time::interval(crate::app::usage::USAGE_FLUSH_INTERVAL);
            loop {
                tokio::select! {
                    () = usage_stop.cancelled() => break,
                    _ = interval.tick() => {
                        if let Err(error) = usage_app.flush_token_usage().await {
                            tracing::error!(error = %crate::telemetry::error_chain(&error), "writing token last-use times failed");
                        }
                    }
                }
            }
        });
        let sweep_app = self.app.clone();
        let sweep_stop = stop.clone();
        let ended_token_sweeper = tokio::spawn(async move {
            let mut interval =
                tokio::time::interval(crate::app::agent_tokens::ENDED_TOKEN_SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    () = sweep_stop.cancelled() => break,
                    _ = interval.tick() => {
                        if let Err(error) = sweep_app.retire_ended_agent_tokens().await {
                            tracing::warn!(error = %crate::telemetry::error_chain(&error), "recording ended agent tokens failed");
                        }
                    }
                }
            }
        });
        let (rest_result, grpc_result, metrics_result) = tokio::join!(
            serve(
                self.http_listener,
                rest_router,
                self.tls.clone(),
                stop.clone()
            ),
            serve(self.grpc_listener, grpc_router, self.tls, stop.clone()),
            metrics_server,
        );
        rest_result.context("serving REST")?;
        grpc_result.context("serving gRPC")?;
        metrics_result.context("serving metrics")?;
        usage_writer.await.context("stopping the last-use writer")?;
        ended_token_sweeper
            .await
            .context("stopping the ended-token sweeper")?;
        health_watch.await.context("stopping the health watch")?;
        invalidations.abort();
        self.app
            .flush()
            .await
            .context("flushing the store at shutdown")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves `router` on `listener`, with TLS when configured, until `stop` is cancelled; then
/// finishes the requests in flight.
async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await?;
        }
        Some(config) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                stopper.graceful_shutdown(None);
            });
            axum_server::tls_rustls::from_tcp_rustls(listener.into_std()?, config)?
                .handle(handle)
                .serve(service)
                .await?;
        }
    }
    Ok(())
}

/// The listeners' TLS identity, with ALPN for HTTP/2 (gRPC) and HTTP/1.1.
async fn tls_config(files: &TlsFiles) -> anyhow::Result<RustlsConfig> {
    // Installing the process-wide provider fails only if one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .with_context(|| {
            format!(
                "loading TLS certificate {} and key {}",
                files.cert.display(),
                files.key.display()
            )
        })
}

/// How often gRPC health follows storage's reachability.
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps gRPC health in step with storage: `NOT_SERVING` while the database is unreachable,
/// `SERVING` again when it answers.
async fn watch_health(
    app: App,
    reporter: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(HEALTH_INTERVAL);
    let mut serving = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = interval.tick() => {
                let ready = app.ready().await.is_ok();
                if ready != serving {
                    serving = ready;
                    let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                    if ready {
                        tracing::info!("storage reachable again; serving");
                    } else {
                        tracing::warn!("storage unreachable; reporting NOT_SERVING");
                    }
                    for name in GRPC_SERVICE_NAMES {
                        reporter.set_service_status(name, status).await;
                    }
                }
            }
        }
    }
}

/// The names gRPC health reports on; "" is the server as a whole.
const GRPC_SERVICE_NAMES: [&str; 10] = [
    "agentreg.v1.MetaService",
    "agentreg.v1.UserService",
    "agentreg.v1.ProjectService",
    "agentreg.v1.AgentService",
    "agentreg.v1.AgentTokenService",
    "agentreg.v1.AdminTokenService",
    "agentreg.v1.UrlConfigurationService",
    "agentreg.v1.InternalService",
    "agentreg.v1.AuditEventService",
    "",
];

/// Every gRPC service, with health and reflection (v1 and v1alpha).
async fn grpc_routes(
    app: &App,
) -> anyhow::Result<(tonic::service::Routes, tonic_health::server::HealthReporter)> {
    use pb::admin_token_service_server::AdminTokenServiceServer;
    use pb::agent_service_server::AgentServiceServer;
    use pb::agent_token_service_server::AgentTokenServiceServer;
    use pb::audit_event_service_server::AuditEventServiceServer;
    use pb::internal_service_server::InternalServiceServer;
    use pb::meta_service_server::MetaServiceServer;
    use pb::project_service_server::ProjectServiceServer;
    use pb::url_configuration_service_server::UrlConfigurationServiceServer;
    use pb::user_service_server::UserServiceServer;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in GRPC_SERVICE_NAMES {
        health_reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection v1")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building gRPC reflection v1alpha")?;

    let intercept = grpc::extract_credentials;
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(MetaServiceServer::with_interceptor(
            grpc::MetaGrpc { app: app.clone() },
            intercept,
        ))
        .add_service(UserServiceServer::with_interceptor(
            grpc::UserGrpc { app: app.clone() },
            intercept,
        ))
        .add_service(ProjectServiceServer::with_interceptor(
            grpc::ProjectGrpc { app: app.clone() },
            intercept,
        ))
        .add_service(AgentServiceServer::with_interceptor(
            grpc::AgentGrpc { app: app.clone() },
            intercept,
        ))
        .add_service(AgentTokenServiceServer::with_interceptor(
            grpc::AgentTokenGrpc { app: app.clone() },
            intercept,
        ))
        .add_service(AdminTokenServiceServer::with_interceptor(
            grpc::AdminTokenGrpc { app: app.clone() },
            intercept,
        ))
        .add_service(UrlConfigurationServiceServer::with_interceptor(
            grpc::UrlConfigurationGrpc { app: app.clone() },
            intercept,
        ))
        .add_service(AuditEventServiceServer::with_interceptor(
            grpc::AuditEventGrpc { app: app.clone() },
            intercept,
        ))
        .add_service(InternalServiceServer::new(grpc::InternalGrpc {
            app: app.clone(),
        }))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((routes.routes(), health_reporter))
}
