//! Audit events in GitLab's shape: every registration, deletion, token and URL-configuration
//! change is recorded with who, when, what and the outcome. Details never contain secrets.

use super::pagination::{PageInfo, Pagination};
use super::{App, Caller, Error};
use agentreg_domain::entities::{AuditEvent, AuditScope};
use agentreg_domain::ids::{ProjectId, ProjectRef, UserId};
use agentreg_storage::audit::NewAuditEvent;

/// What happened, to whom.
#[derive(Debug, Clone)]
pub(crate) struct AuditEntry<'a> {
    pub(crate) event_name: &'static str,
    pub(crate) message: String,
    pub(crate) entity_type: &'static str,
    pub(crate) entity_id: u64,
    pub(crate) target_details: &'a str,
}

/// Who made a change: the user the request acted as (`None` for the service itself), and the
/// administrator who acted as them with `Sudo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Author {
    pub(crate) user_id: Option<UserId>,
    pub(crate) sudo_by: Option<UserId>,
}

impl Author {
    /// The service itself (an expiry, a rotation completed by an agent's first use).
    pub(crate) fn service() -> Author {
        Author::default()
    }
}

/// The audit event of a successful change, which the store writes in the change's own
/// transaction. A change made with `Sudo` also records the real administrator.
pub(crate) fn event(project_id: ProjectId, author: Author, entry: AuditEntry<'_>) -> NewAuditEvent {
    event_in(AuditScope::Project(project_id), author, entry)
}

/// An instance-wide administrative action (a user or token created, a snapshot downloaded).
pub(crate) fn instance_event(author: Author, entry: AuditEntry<'_>) -> NewAuditEvent {
    event_in(AuditScope::Instance, author, entry)
}

fn event_in(scope: AuditScope, author: Author, entry: AuditEntry<'_>) -> NewAuditEvent {
    let mut details = serde_json::json!({
        "event_name": entry.event_name,
        "custom_message": entry.message,
        "author_id": author.user_id.map(UserId::get),
        "target_id": entry.entity_id,
        "target_type": entry.entity_type,
        "target_details": entry.target_details,
        "outcome": "success",
    });
    if let Some(admin_id) = author.sudo_by {
        details["impersonated_by_user_id"] = serde_json::json!(admin_id.get());
    }
    NewAuditEvent {
        scope,
        author_id: author.user_id,
        entity_id: entry.entity_id,
        entity_type: entry.entity_type,
        details,
    }
}

impl App {
    /// Deletes instance events older than `retention`; returns how many went.
    pub async fn expire_instance_audit_events(
        &self,
        retention: std::time::Duration,
    ) -> Result<u64, Error> {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let before_ms = super::now_ms().saturating_sub(retention_ms);
        Ok(self
            .storage()
            .delete_instance_audit_events_before(before_ms)
            .await?)
    }

    /// Records an instance event after the change it describes. A failure to record is
    /// logged, not returned: the change is already durable.
    pub(crate) async fn record_instance_event(&self, event: NewAuditEvent) {
        if let Err(error) = self
            .storage()
            .record_audit_event(event, super::now_ms())
            .await
        {
            tracing::error!(error = %error, "recording an instance audit event failed");
        }
    }
}

/// A failed authentication: which kind of credential, from where; never the credential.
pub(crate) fn authentication_failure(
    credential: &'static str,
    ip_address: Option<String>,
    n_failures: u64,
) -> NewAuditEvent {
    NewAuditEvent {
        scope: AuditScope::Instance,
        author_id: None,
        entity_id: 0,
        entity_type: "Gitlab::Audit::UnauthenticatedAuthor",
        details: serde_json::json!({
            "event_name": "authentication_failed",
            "custom_message": format!("Failed to authenticate with {}", credential.replace('_', " ")),
            "credential": credential,
            "ip_address": ip_address,
            "outcome": "failure",
            "count": n_failures,
        }),
    }
}

/// Audit events of the instance and of projects: `app.audit_events()`.
#[derive(Clone, Copy)]
pub struct AuditEvents<'a> {
    app: &'a App,
}

impl App {
    pub fn audit_events(&self) -> AuditEvents<'_> {
        AuditEvents { app: self }
    }
}

impl AuditEvents<'_> {
    /// Instance-wide audit events (failed authentications), newest first (administrators).
    pub async fn instance(
        &self,
        caller: &Caller,
        pagination: Pagination,
    ) -> Result<(Vec<AuditEvent>, PageInfo), Error> {
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        let page = self
            .app
            .storage()
            .audit_events_page(AuditScope::Instance, pagination.window())
            .await?;
        Ok((page.items, pagination.info(page.total)))
    }

    /// A project's audit events, newest first (Maintainer and above).
    pub async fn project(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        pagination: Pagination,
    ) -> Result<(Vec<AuditEvent>, PageInfo), Error> {
        let access = self.app.project_access(caller, project_ref).await?;
        if !access.role.can_admin_cluster() {
            return Err(Error::Forbidden);
        }
        let page = self
            .app
            .storage()
            .audit_events_page(AuditScope::Project(access.project.id), pagination.window())
            .await?;
        Ok((page.items, pagination.info(page.total)))
    }
}
