//! `GET /api/v4/admin/snapshot`: an online, consistent backup for administrators, in the format
//! `agentreg restore` reads.

use super::extract::Authenticated;
use super::{ApiError, RestState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

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
