//! Logging through `tracing`: human-readable by default, JSON on request. `RUST_LOG` filters it
//! (default `info`). Request spans carry the method and path, never the query string, which may
//! hold a `private_token`.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The span of one HTTP request.
pub fn http_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
}
