//! Building and running the service: `Application::build` opens storage, loads the secrets,
//! creates the administrator on first start and binds both listeners (reporting their ports);
//! `run_until` serves until the shutdown future resolves, drains in-flight requests and flushes.

use crate::app::crypto::Sealer;
use crate::app::internal::KasVerifier;
use crate::app::{App, AppConfig};
use crate::config::{Settings, TlsFiles};
use crate::grpc;
use crate::metrics::{self, Metrics};
use crate::rest::{self, RestState};
use crate::secrets;
use crate::server::{self, ListenerOptions, TimeoutAnswer};
use agentreg_storage::SecretHasher;
use anyhow::Context;
use axum::routing::get;
use axum::{Router, middleware};
use axum_server::tls_rustls::RustlsConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
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
    metrics_token: metrics::MetricsToken,
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
        server::raise_open_files_limit();
        secrets::restrict_umask();
        secrets::create_data_dir(&data_dir)?;
        let storage = crate::backends::open(settings.database.as_ref(), &data_dir).await?;
        tracing::info!(backend = storage.backend(), "storage opened");
        // Generating a key for a store that already holds data would make its sealed keys
        // unreadable (and the agent server's JWTs invalid): refuse instead.
        let holds_data = storage
            .has_users()
            .await
            .context("checking whether the store holds data")?;
        if holds_data {
            for (configured, name) in [
                (settings.encryption_key_file.is_some(), "encryption_key"),
                (settings.kas_secret_file.is_some(), "kas_secret"),
            ] {
                let path = data_dir.join(name);
                if !configured && !path.exists() {
                    anyhow::bail!(
                        "the store holds data but the key file {} is missing: copy {name} from the instance that wrote the data (snapshots never contain it), or point --{}-file at it",
                        path.display(),
                        name.replace('_', "-"),
                    );
                }
            }
        }
        let kas_secret = secrets::kas_secret(settings.kas_secret_file.as_deref(), &data_dir)?;
        let encryption_key =
            secrets::encryption_key(settings.encryption_key_file.as_deref(), &data_dir)?;
        let app = App::new(
            storage,
            hasher,
            AppConfig {
                receptive_agents_enabled: settings.receptive_agents_enabled,
                auth_failures_per_minute: settings.auth_failures_per_minute,
                agent_token_failures_per_minute: settings.agent_token_failures_per_minute,
                argon2_queue_limit: settings.argon2_queue_limit,
                argon2_nice: settings.argon2_nice,
                agent_token_max_lifetime: settings.agent_token_max_lifetime,
                require_agent_token_expiry: settings.require_agent_token_expiry,
                max_rotation_overlap: settings.max_rotation_overlap,
                rotation_retrieve_window: settings.rotation_retrieve_window,
            },
            Sealer::new(&encryption_key),
            KasVerifier::new(&kas_secret),
        );
        let key_path = settings
            .encryption_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("encryption_key"));
        let key_matches = app
            .instance_key_matches()
            .await
            .context("recording the instance key's fingerprint")?;
        if !key_matches {
            anyhow::bail!(
                "the encryption key {} is not the key that sealed this data: start with the encryption_key of the instance that wrote it (copy it beside a restored snapshot, or point --encryption-key-file at it)",
                key_path.display()
            );
        }
        app.check_sealing_key().await.with_context(|| {
            format!(
                "the encryption key {} does not open the stored private keys: use the key of the instance that wrote this data",
                key_path.display()
            )
        })?;
        let n_resealed = app
            .reseal_legacy_keys()
            .await
            .context("binding sealed private keys to their records")?;
        if n_resealed > 0 {
            tracing::info!(n_resealed, "resealed private keys bound to their records");
        }
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
        let metrics_token = metrics::MetricsToken(match &settings.metrics_token_file {
            Some(path) => Some(Arc::new(secrets::read_token_file(path)?)),
            None => None,
        });
        Ok(Application {
            app,
            settings,
            http_listener,
            grpc_listener,
            metrics_listener,
            metrics_token,
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
            .with_state((metrics.clone(), self.app.clone()))
            .layer(middleware::from_fn_with_state(
                self.metrics_token.clone(),
                metrics::require_metrics_token,
            ));

        let mut rest_router = rest::router(RestState {
            app: self.app.clone(),
            external_url: self.settings.external_url.clone(),
        })
        .merge(rest::health::router(self.app.clone()));
        let metrics_listener = self.metrics_listener;
        if metrics_listener.is_none() {
            rest_router = rest_router.merge(metrics_route.clone());
        }
        let rest_router = rest_router.layer(metrics::TrackRestLayer(metrics.clone()));
        let grpc::Routes {
            routes: grpc_routes,
            health_reporter,
            health_names,
        } = grpc::routes(&self.app, self.settings.connections.grpc_max_message_bytes)
            .await
            .context("building gRPC reflection")?;
        let grpc_router = grpc_routes
            .into_axum_router()
            .layer(middleware::from_fn_with_state(
                metrics.clone(),
                metrics::track_grpc,
            ));

        let tls = self.tls.map(|config| TlsAcceptor::from(config.get_inner()));
        let options = |timeout_answer, tls: Option<TlsAcceptor>| ListenerOptions {
            limits: self.settings.connections.clone(),
            trusted_proxies: Arc::new(self.settings.trusted_proxies.clone()),
            tls,
            timeout_answer,
        };
        let metrics_options = options(TimeoutAnswer::Rest, None);
        let metrics_server = async {
            match metrics_listener {
                Some(listener) => {
                    server::serve(listener, metrics_route, metrics_options, stop.clone()).await
                }
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
            health_names,
            stop.clone(),
        ));
        let retention = tokio::spawn(expire_audit_events(
            self.app.clone(),
            self.settings.audit_retention,
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
                        usage_app.flush_failure_audit(false).await;
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
                        if let Err(error) = sweep_app.purge_rotation_secrets().await {
                            tracing::warn!(error = %crate::telemetry::error_chain(&error), "deleting held rotation secrets failed");
                        }
                    }
                }
            }
        });
        let (rest_result, grpc_result, metrics_result) = tokio::join!(
            server::serve(
                self.http_listener,
                rest_router,
                options(TimeoutAnswer::Rest, tls.clone()),
                stop.clone()
            ),
            server::serve(
                self.grpc_listener,
                grpc_router,
                options(TimeoutAnswer::Grpc, tls),
                stop.clone()
            ),
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
        retention.await.context("stopping audit retention")?;
        invalidations.abort();
        self.app.flush_failure_audit(true).await;
        self.app
            .flush()
            .await
            .context("flushing the store at shutdown")?;
        tracing::info!("stopped");
        Ok(())
    }
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

/// How often instance audit events past their retention are deleted.
const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes instance audit events past `retention` at start and then every hour.
async fn expire_audit_events(
    app: App,
    retention: Option<std::time::Duration>,
    stop: CancellationToken,
) {
    let Some(retention) = retention else {
        return;
    };
    let mut interval = tokio::time::interval(RETENTION_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = interval.tick() => {
                match app.expire_instance_audit_events(retention).await {
                    Ok(0) => {}
                    Ok(n_deleted) => tracing::info!(n_deleted, "deleted instance audit events past their retention"),
                    Err(error) => tracing::warn!(error = %crate::telemetry::error_chain(&error), "deleting old instance audit events failed"),
                }
            }
        }
    }
}

/// How often gRPC health follows storage's reachability.
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps gRPC health in step with storage: `NOT_SERVING` while the database is unreachable,
/// `SERVING` again when it answers.
async fn watch_health(
    app: App,
    reporter: tonic_health::server::HealthReporter,
    health_names: Vec<&'static str>,
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
                    for name in &health_names {
                        reporter.set_service_status(name, status).await;
                    }
                }
            }
        }
    }
}
