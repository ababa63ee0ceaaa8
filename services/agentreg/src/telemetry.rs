//! Logging through `tracing`: human-readable by default, JSON on request. `RUST_LOG` filters it
//! (default `info`). Request spans carry the method and path, never the query string, which may
//! hold a `private_token`.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour codes only help a human at a terminal; in a file or a pipe they are noise.
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The span of one HTTP request, at `debug`: formatting it for every request costs more than
/// the rest of the middleware, so at `info` a request is named only when it fails (see
/// `metrics::TrackRestLayer`).
pub fn http_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!("http", method = %request.method(), path = %request.uri().path())
}

/// An error and all its causes, for one log line. Both edges log internal errors with it.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_lists_every_cause_in_order() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&error), "outer: inner");
    }
}
