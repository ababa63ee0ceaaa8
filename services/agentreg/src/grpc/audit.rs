//! `AuditEventService`.

use super::pb::audit_event_service_server::AuditEventService;
use super::{caller, id, page_info, pagination, pb, status, timestamp};
use crate::app::pagination::PageInfo;
use crate::app::{App, Intent};
use agentreg_domain::entities::AuditEvent;
use agentreg_domain::ids::ProjectRef;
use tonic::{Request, Response, Status};

pub struct AuditEventGrpc {
    pub app: App,
}

#[tonic::async_trait]
impl AuditEventService for AuditEventGrpc {
    async fn list_project_audit_events(
        &self,
        request: Request<pb::ListProjectAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let pagination = pagination(request.page)?;
        let (events, info) = self
            .app
            .audit_events()
            .project(&caller, &ProjectRef::parse(&request.project), pagination)
            .await
            .map_err(status)?;
        Ok(Response::new(events_response(&events, &info)))
    }

    async fn list_instance_audit_events(
        &self,
        request: Request<pb::ListInstanceAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let pagination = pagination(request.into_inner().page)?;
        let (events, info) = self
            .app
            .audit_events()
            .instance(&caller, pagination)
            .await
            .map_err(status)?;
        Ok(Response::new(events_response(&events, &info)))
    }
}

fn events_response(events: &[AuditEvent], info: &PageInfo) -> pb::ListAuditEventsResponse {
    pb::ListAuditEventsResponse {
        events: events
            .iter()
            .map(|event| pb::AuditEvent {
                id: id(event.id),
                author_id: event.author_id.map(id),
                entity_id: id(event.entity_id),
                entity_type: event.entity_type.clone(),
                details_json: event.details.as_json().to_owned(),
                created_at: Some(timestamp(event.created_at_ms)),
            })
            .collect(),
        page_info: Some(page_info(info)),
    }
}
