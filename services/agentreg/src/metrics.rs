//! Prometheus metrics at `GET /metrics`: request counts and a latency histogram per route,
//! protocol and status (REST and gRPC), the numbers of agents, active tokens and URL
//! configurations, and authentication counters (argon2 verifications, cache hits, failures);
//! and the agent token lifecycle: time left before expiry, rotations and retiring tokens.

use crate::app::{App, Inventory, TokenLifetimes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::Instrument as _;

/// The labels of request metrics.
/// Labels of one request. The status is a number and the route one `Arc<str>` copied from the
/// matched path, so recording a request allocates once, where it formatted two strings before.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    route: Arc<str>,
    status: u16,
}

/// Every metric, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    state: Arc<Mutex<ScrapeState>>,
    /// The route label of requests that matched no route.
    unmatched: Arc<str>,
    /// Every gRPC method served (`/package.Service/Method`), read from the services'
    /// descriptors; only these label their calls.
    grpc_methods: std::collections::HashSet<Arc<str>>,
}

/// The paths of every method of the services these encoded descriptor sets describe.
fn grpc_methods(descriptor_sets: &[&[u8]]) -> std::collections::HashSet<Arc<str>> {
    use prost::Message as _;
    let mut methods = std::collections::HashSet::new();
    for encoded in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(Arc::from(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    )));
                }
            }
        }
    }
    methods
}

/// Values read from the app just before each scrape.
#[derive(Debug, Default, Clone)]
struct ScrapeState {
    inventory: Inventory,
    argon2_verifications: u64,
    cache_hits: u64,
    authentication_failures: u64,
    token_rotations: u64,
    token_lifetimes: TokenLifetimes,
}

/// Buckets of time left before a token expires: an hour, six hours, a day, a week, thirty, ninety
/// and 365 days.
const EXPIRY_BUCKETS_SECONDS: [f64; 7] = [
    3_600.0,
    21_600.0,
    86_400.0,
    604_800.0,
    2_592_000.0,
    7_776_000.0,
    31_536_000.0,
];

#[derive(Debug)]
struct AppCollector(Arc<Mutex<ScrapeState>>);

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "agentreg_requests",
            "Requests handled, by protocol, route and status",
            requests.clone(),
        );
        registry.register(
            "agentreg_request_duration_seconds",
            "Time to handle a request, by protocol, route and status",
            latency.clone(),
        );
        let state = Arc::new(Mutex::new(ScrapeState::default()));
        registry.register_collector(Box::new(AppCollector(state.clone())));
        Metrics {
            registry,
            requests,
            latency,
            state,
            unmatched: Arc::from("unmatched"),
            grpc_methods: grpc_methods(&[
                crate::grpc::pb::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ]),
        }
    }

    /// The route label of a gRPC call: its method path for a method a service has, else
    /// `unmatched`, so that calls to made-up methods cannot grow the label set.
    fn grpc_route(&self, path: &str) -> Arc<str> {
        self.grpc_methods
            .get(path)
            .map_or_else(|| Arc::clone(&self.unmatched), Arc::clone)
    }

    fn observe(&self, protocol: &'static str, route: Arc<str>, status: u16, seconds: f64) {
        let labels = RequestLabels {
            protocol,
            route,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// The text exposition, with the app's current numbers.
    pub async fn render(&self, app: &App) -> Result<String, crate::app::Error> {
        let inventory = app.inventory().await?;
        let token_lifetimes = app.token_lifetimes().await?;
        let counters = app.counters();
        {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *state = ScrapeState {
                inventory,
                argon2_verifications: counters.argon2_verifications.load(Ordering::Relaxed),
                cache_hits: counters.cache_hits.load(Ordering::Relaxed),
                authentication_failures: counters.failures.load(Ordering::Relaxed),
                token_rotations: counters.rotations.load(Ordering::Relaxed),
                token_lifetimes,
            };
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|error| crate::app::Error::internal("encoding metrics failed", error))?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Collector for AppCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let gauges = [
            (
                "agentreg_agents",
                "Registered agents",
                state.inventory.agents,
            ),
            (
                "agentreg_active_agent_tokens",
                "Active agent tokens",
                state.inventory.active_agent_tokens,
            ),
            (
                "agentreg_url_configurations",
                "URL configurations of receptive agents",
                state.inventory.url_configurations,
            ),
            (
                "agentreg_agent_tokens_retiring",
                "Agent tokens being rotated, still usable until their successor's first use",
                state.token_lifetimes.n_retiring,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?;
        }
        let counters = [
            (
                "agentreg_argon2_verifications",
                "Token verifications that ran argon2",
                state.argon2_verifications,
            ),
            (
                "agentreg_token_cache_hits",
                "Token authentications served from the cache",
                state.cache_hits,
            ),
            (
                "agentreg_authentication_failures",
                "Failed authentications",
                state.authentication_failures,
            ),
            (
                "agentreg_agent_token_rotations",
                "Agent token rotations this process performed",
                state.token_rotations,
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let expiring = Histogram::new(EXPIRY_BUCKETS_SECONDS);
        for seconds in &state.token_lifetimes.seconds_to_expiry {
            expiring.observe(*seconds);
        }
        let metric = encoder.encode_descriptor(
            "agentreg_agent_tokens_expiring_seconds",
            "Time left before each usable agent token with an expiry stops working",
            None,
            MetricType::Histogram,
        )?;
        expiring.encode(metric)?;
        Ok(())
    }
}

/// The layer around every REST route: runs each request in the `http` span (method and path,
/// never the query string, which may hold a `private_token`), records it under its route
/// template, and names a request that ended in a server error (5xx) at `warn`, beside the
/// error's own line. A plain tower layer rather than `from_fn`, which would box the route and
/// clone it for every request.
#[derive(Clone)]
pub struct TrackRestLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for TrackRestLayer {
    type Service = TrackRest<S>;

    fn layer(&self, inner: S) -> TrackRest<S> {
        TrackRest {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See [`TrackRestLayer`].
#[derive(Clone)]
pub struct TrackRest<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for TrackRest<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let metrics = self.metrics.clone();
        let route = request.extensions().get::<MatchedPath>().map_or_else(
            || Arc::clone(&metrics.unmatched),
            |path| Arc::from(path.as_str()),
        );
        let span = crate::telemetry::http_span(&request);
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let started = Instant::now();
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let Ok(response) = response.await;
            let status = response.status();
            if status.is_server_error() {
                tracing::warn!(%method, path = %uri.path(), status = status.as_u16(), "request failed");
            }
            metrics.observe(
                "rest",
                route,
                status.as_u16(),
                started.elapsed().as_secs_f64(),
            );
            Ok(response)
        })
    }
}

/// Middleware recording every gRPC call under its method (see [`Metrics::grpc_route`]) and
/// `grpc-status` (0 when the status travels in the trailers, which only successful unary calls
/// do).
pub async fn track_grpc(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let uri = request.uri().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let route = metrics.grpc_route(uri.path());
    metrics.observe("grpc", route, status, started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn serve_metrics(State((metrics, app)): State<(Arc<Metrics>, App)>) -> Response {
    match metrics.render(&app).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => crate::rest::ApiError::App(error).into_response(),
    }
}

/// The token `/metrics` requires, if one is configured.
#[derive(Clone)]
pub struct MetricsToken(pub Option<Arc<secrecy::SecretString>>);

/// Refuses a metrics scrape without the configured bearer token (compared in constant time).
pub async fn require_metrics_token(
    State(token): State<MetricsToken>,
    request: Request,
    next: Next,
) -> Response {
    use secrecy::ExposeSecret as _;
    use subtle::ConstantTimeEq as _;
    let Some(expected) = token.0 else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    let matches: bool = presented
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into();
    if !matches {
        return crate::rest::ApiError::App(crate::app::Error::Unauthorized).into_response();
    }
    next.run(request).await
}
