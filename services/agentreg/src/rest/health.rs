//! GitLab's health endpoints, for load balancers and orchestrators: `/-/liveness` (the process
//! answers), `/-/readiness` (it can serve requests: storage is reachable) and `/-/health` (plain text). They
//! take no token and are not part of the API document, like GitLab's.

use crate::app::App;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// The health routes, served beside the API on the REST listener.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/-/liveness", get(liveness))
        .route("/-/readiness", get(readiness))
        .route("/-/health", get(health))
        .with_state(app)
}

#[derive(serde::Deserialize)]
struct ReadinessQuery {
    all: Option<String>,
}

async fn liveness() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// 200 while storage answers, 503 while it does not. `?all=1` adds each check's result, as
/// GitLab's does.
async fn readiness(State(app): State<App>, Query(query): Query<ReadinessQuery>) -> Response {
    let all = query.all.is_some_and(|all| all == "1" || all == "true");
    match app.ready().await {
        Ok(()) => {
            let mut body = json!({"status": "ok", "master_check": [{"status": "ok"}]});
            if all {
                body["db_check"] = json!([{"status": "ok"}]);
            }
            axum::Json(body).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "failed",
                "master_check": [{"status": "failed", "message": "unexpected Db check result"}],
                "db_check": [{"status": "failed", "message": "the database is unavailable"}],
            })),
        )
            .into_response(),
    }
}

/// GitLab's plain-text check that the process serves HTTP; like GitLab's, it checks no
/// dependency (that is readiness).
async fn health() -> Response {
    (StatusCode::OK, "GitLab OK").into_response()
}
