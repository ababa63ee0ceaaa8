//! Audit events: a durable, append-only record per project of who changed what, and of failed
//! authentications. Details never contain secrets; callers build them from ids and names.

use crate::records::{encode, v1};
use crate::schema::{self, IdKind, id_key, pair_key};
use crate::{Page, PageWindow, Store, StoreError, decode, engine};
use agentreg_domain::entities::{AuditDetails, AuditEvent, AuditScope};
use agentreg_domain::ids::{AuditEventId, ProjectId, UserId};

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub scope: AuditScope,
    pub author_id: Option<UserId>,
    pub entity_id: u64,
    pub entity_type: &'static str,
    pub details: serde_json::Value,
}

/// The sled engine's form of [`crate::port::Audit`]: builds the audit event of a change from its
/// outcome, inside the change's transaction. It may run more than once (transactions re-run), so
/// it must be pure.
pub(crate) type Audit<'a, T> = Option<&'a dyn Fn(&T) -> NewAuditEvent>;

/// Instance-wide events are kept under this project key, which no project has (ids start at 1).
const INSTANCE_KEY: u64 = 0;

pub(crate) fn scope_key(scope: AuditScope) -> u64 {
    match scope {
        AuditScope::Instance => INSTANCE_KEY,
        AuditScope::Project(project_id) => project_id.get(),
    }
}

fn scope_from_key(key: u64) -> AuditScope {
    match key {
        INSTANCE_KEY => AuditScope::Instance,
        project_id => AuditScope::Project(ProjectId::new(project_id)),
    }
}

/// The key and value of an audit event, for writing inside a transaction.
pub(crate) fn audit_entry(event: NewAuditEvent, id: u64, now_ms: i64) -> ([u8; 16], Vec<u8>) {
    let record = v1::AuditEvent {
        author_id: event.author_id.map(UserId::get),
        entity_id: event.entity_id,
        entity_type: event.entity_type.to_owned(),
        details: event.details,
        created_at_ms: now_ms,
    };
    (pair_key(scope_key(event.scope), id), encode(&record))
}

impl Store {
    /// The id an audited operation's event will take, if it is audited. Taken before the
    /// transaction, like every id.
    pub(crate) fn audit_id<T>(&self, audit: Audit<'_, T>) -> Result<Option<u64>, StoreError> {
        match audit {
            Some(_) => Ok(Some(self.next_id(IdKind::AuditEvent)?)),
            None => Ok(None),
        }
    }

    /// Appends an event that belongs to no other change (a failed authentication) and makes it
    /// durable.
    pub fn record_audit_event(
        &self,
        event: NewAuditEvent,
        now_ms: i64,
    ) -> Result<AuditEvent, StoreError> {
        let id = self.next_id(IdKind::AuditEvent)?;
        let scope = event.scope;
        let record = v1::AuditEvent {
            author_id: event.author_id.map(UserId::get),
            entity_id: event.entity_id,
            entity_type: event.entity_type.to_owned(),
            details: event.details,
            created_at_ms: now_ms,
        };
        let writing = self.writing();
        self.trees
            .audit_events
            .insert(pair_key(scope_key(scope), id), encode(&record))
            .map_err(engine)?;
        self.commit(writing)?;
        Ok(event_from_record(scope_key(scope), id, record))
    }

    /// Deletes the instance-wide events created before `before_ms`, durably.
    pub fn delete_instance_audit_events_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let writing = self.writing();
        let mut n_deleted = 0u64;
        for entry in self.trees.audit_events.scan_prefix(id_key(INSTANCE_KEY)) {
            let (key, bytes) = entry.map_err(engine)?;
            let record: v1::AuditEvent = decode(schema::AUDIT_EVENTS, &bytes)?;
            if record.created_at_ms < before_ms {
                self.trees.audit_events.remove(key).map_err(engine)?;
                n_deleted += 1;
            }
        }
        if n_deleted > 0 {
            self.commit(writing)?;
        }
        Ok(n_deleted)
    }

    /// A page of a project's events, newest first.
    pub fn audit_events_page(
        &self,
        scope: AuditScope,
        window: PageWindow,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let project_id = scope_key(scope);
        let events = self.trees.audit_events.scan_prefix(id_key(project_id));
        let mut total = 0u64;
        let mut items = Vec::new();
        for entry in events.rev() {
            let (key, bytes) = entry.map_err(engine)?;
            if total >= window.offset && (items.len() as u64) < window.limit {
                let id = schema::decode_u64(&key[8..]).ok_or(StoreError::Dangling {
                    tree: schema::AUDIT_EVENTS,
                })?;
                let record: v1::AuditEvent = decode(schema::AUDIT_EVENTS, &bytes)?;
                items.push(event_from_record(project_id, id, record));
            }
            total += 1;
        }
        Ok(Page { items, total })
    }
}

fn event_from_record(project_id: u64, id: u64, record: v1::AuditEvent) -> AuditEvent {
    AuditEvent {
        id: AuditEventId::new(id),
        scope: scope_from_key(project_id),
        author_id: record.author_id.map(UserId::new),
        entity_id: record.entity_id,
        entity_type: record.entity_type,
        details: AuditDetails::from_json(record.details.to_string()),
        created_at_ms: record.created_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn events_page_newest_first_per_project() {
        let store = fixtures::store();
        for (project_id, entity_id) in [(1, 10), (1, 11), (2, 12), (1, 13)] {
            let event = NewAuditEvent {
                scope: AuditScope::Project(ProjectId::new(project_id)),
                author_id: Some(UserId::new(1)),
                entity_id,
                entity_type: "Clusters::Agent",
                details: serde_json::json!({"action": "test"}),
            };
            store.record_audit_event(event, 1).unwrap();
        }
        let page = store
            .audit_events_page(
                AuditScope::Project(ProjectId::new(1)),
                PageWindow {
                    offset: 1,
                    limit: 5,
                },
            )
            .unwrap();
        let entities: Vec<_> = page.items.iter().map(|e| e.entity_id).collect();
        assert_eq!(entities, vec![11, 10]);
        assert_eq!(page.total, 3);
    }
}
