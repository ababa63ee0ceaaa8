//! `GET /api/v4/admin/snapshot`: an online, consistent backup for administrators, in the format
//! `agentreg restore` reads.

use super::extract::Authenticated;
use super::openapi::{Forbidden, Snapshot, TooManyRequests, Unauthorized};
use super::{ApiError, RestState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// A consistent snapshot of the whole store, taken while the service runs (administrators only).
/// It is built in memory and sent in one body: agentreg's records are small (under 1 KiB per
/// agent), so even 100,000 agents make a snapshot of about 100 MiB.
#[utoipa::path(
    get,
    path = "/api/v4/admin/snapshot",
    operation_id = "get_snapshot",
    tag = "meta",
    responses(
        (status = 200, response = Snapshot),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
    ),
)]
pub(super) async fn snapshot(
    State(state): State<RestState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    let bytes = state.app.snapshot(&caller).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"agentreg.snapshot\"",
            ),
        ],
        bytes,
    )
        .into_response())
}
