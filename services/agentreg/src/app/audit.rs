//! Audit events in GitLab's shape: every registration, deletion, token and URL-configuration
//! change is recorded with who, when, what and the outcome. Details never contain secrets.

use super::pagination::{PageInfo, Pagination};
use super::{App, Caller, Error};
use agentreg_storage::audit::{AuditEvent, NewAuditEvent};
use agentreg_storage::{Store, StoreError};

/// What happened, to whom.
#[derive(Debug, Clone)]
pub(crate) struct AuditEntry<'a> {
    pub(crate) event_name: &'static str,
    pub(crate) message: String,
    pub(crate) entity_type: &'static str,
    pub(crate) entity_id: u64,
    pub(crate) target_details: &'a str,
}

/// The audit event of a successful change, which the store writes in the change's own
/// transaction.
pub(crate) fn event(
    project_id: u64,
    author_id: Option<u64>,
    entry: AuditEntry<'_>,
) -> NewAuditEvent {
    NewAuditEvent {
        project_id,
        author_id,
        entity_id: entry.entity_id,
        entity_type: entry.entity_type,
        details: serde_json::json!({
            "event_name": entry.event_name,
            "custom_message": entry.message,
            "author_id": author_id,
            "target_id": entry.entity_id,
            "target_type": entry.entity_type,
            "target_details": entry.target_details,
            "outcome": "success",
        }),
    }
}

/// Instance-wide events (failed authentications) are kept under this project id, which no
/// project has (ids start at 1).
pub(crate) const INSTANCE: u64 = 0;

/// Records a failed authentication: which kind of credential, from where; never the credential.
pub(crate) fn record_authentication_failure(
    store: &Store,
    credential: &'static str,
    ip_address: Option<String>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let event = NewAuditEvent {
        project_id: INSTANCE,
        author_id: None,
        entity_id: 0,
        entity_type: "Gitlab::Audit::UnauthenticatedAuthor",
        details: serde_json::json!({
            "event_name": "authentication_failed",
            "custom_message": format!("Failed to authenticate with {}", credential.replace('_', " ")),
            "credential": credential,
            "ip_address": ip_address,
            "outcome": "failure",
        }),
    };
    store.record_audit_event(event, now_ms).map(drop)
}

impl App {
    /// Instance-wide audit events (failed authentications), newest first (administrators).
    pub async fn instance_audit_events(
        &self,
        caller: &Caller,
        pagination: Pagination,
    ) -> Result<(Vec<AuditEvent>, PageInfo), Error> {
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        let page = self
            .blocking(move |store| store.audit_events_page(INSTANCE, pagination.window()))
            .await??;
        Ok((page.items, pagination.info(page.total)))
    }

    /// A project's audit events, newest first (Maintainer and above).
    pub async fn audit_events(
        &self,
        caller: &Caller,
        project_ref: &str,
        pagination: Pagination,
    ) -> Result<(Vec<AuditEvent>, PageInfo), Error> {
        let access = self.project_access(caller, project_ref).await?;
        if !access.role.can_admin_cluster() {
            return Err(Error::Forbidden);
        }
        let project_id = access.project.id;
        let page = self
            .blocking(move |store| store.audit_events_page(project_id, pagination.window()))
            .await??;
        Ok((page.items, pagination.info(page.total)))
    }
}
