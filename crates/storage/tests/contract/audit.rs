//! Audit events and totals: each event committed with its change (and none for a refused one),
//! scopes kept apart, pages newest first, details returned verbatim, and counts that follow the
//! records.

use crate::fixtures::{self, Secrets};
use agentreg_domain::entities::{Agent, AgentToken, AuditEvent, AuditScope, UrlConfiguration};
use agentreg_domain::ids::UserId;
use agentreg_storage::agent_tokens::CreateAgentTokenError;
use agentreg_storage::agents::{CreateAgentError, DeleteAgentError, DeletedAgent, UnmodifiedSince};
use agentreg_storage::audit::NewAuditEvent;
use agentreg_storage::port::{Audit, Counts, RevokeAgentToken, Storage};
use agentreg_storage::url_configs::CreateUrlConfigurationError;

pub(crate) async fn an_audited_create_writes_its_event_with_the_change(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let audit = agent_audit(owner.id, "cluster_agent_created");

    let first = storage
        .create_agent(
            project.id,
            fixtures::agent_name("a"),
            Some(owner.id),
            10,
            audit.clone(),
        )
        .await
        .unwrap();
    let second = storage
        .create_agent(
            project.id,
            fixtures::agent_name("b"),
            Some(owner.id),
            11,
            audit.clone(),
        )
        .await
        .unwrap();
    let refused = storage
        .create_agent(
            project.id,
            fixtures::agent_name("a"),
            Some(owner.id),
            12,
            audit,
        )
        .await;

    assert!(
        matches!(refused, Err(CreateAgentError::NameTaken)),
        "{refused:?}"
    );
    let page = storage
        .audit_events_page(AuditScope::Project(project.id), fixtures::window(0, 10))
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    let summaries: Vec<_> = page
        .items
        .iter()
        .map(|event| (event.entity_id, event.created_at_ms))
        .collect();
    assert_eq!(summaries, [(second.id.get(), 11), (first.id.get(), 10)]);
    for event in &page.items {
        assert_eq!(event.scope, AuditScope::Project(project.id));
        assert_eq!(event.author_id, Some(owner.id));
        assert_eq!(event.entity_type, "Clusters::Agent");
        assert_eq!(event_name(event), "cluster_agent_created");
    }
    let instance = storage
        .audit_events_page(AuditScope::Instance, fixtures::window(0, 10))
        .await
        .unwrap();
    assert_eq!(instance.total, 0);
}

pub(crate) async fn every_audited_write_records_its_event(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let mut secrets = Secrets::seeded(1);

    let agent = storage
        .create_agent(
            project.id,
            fixtures::agent_name("a"),
            None,
            1,
            agent_audit(owner.id, "agent_created"),
        )
        .await
        .unwrap();
    let token = storage
        .create_agent_token(
            project.id,
            agent.id,
            secrets.agent_token(),
            2,
            token_audit(owner.id, "token_created"),
        )
        .await
        .unwrap();
    storage
        .revoke_agent_token(
            project.id,
            agent.id,
            token.id,
            RevokeAgentToken::default(),
            3,
            token_audit(owner.id, "token_revoked"),
        )
        .await
        .unwrap();
    let config = storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            4,
            url_configuration_audit(owner.id, "url_configuration_created"),
        )
        .await
        .unwrap();
    storage
        .delete_url_configuration(
            project.id,
            agent.id,
            config.id,
            None,
            5,
            url_configuration_audit(owner.id, "url_configuration_deleted"),
        )
        .await
        .unwrap();
    storage
        .delete_agent(
            project.id,
            agent.id,
            None,
            6,
            deleted_agent_audit(owner.id, "agent_deleted"),
        )
        .await
        .unwrap();

    let page = storage
        .audit_events_page(AuditScope::Project(project.id), fixtures::window(0, 10))
        .await
        .unwrap();
    let summaries: Vec<_> = page
        .items
        .iter()
        .map(|event| {
            (
                event.created_at_ms,
                event.entity_type.as_str(),
                event.entity_id,
                event_name(event),
            )
        })
        .collect();
    assert_eq!(
        summaries,
        [
            (
                6,
                "Clusters::Agent",
                agent.id.get(),
                "agent_deleted".to_owned()
            ),
            (
                5,
                "UrlConfiguration",
                config.id.get(),
                "url_configuration_deleted".to_owned()
            ),
            (
                4,
                "UrlConfiguration",
                config.id.get(),
                "url_configuration_created".to_owned()
            ),
            (3, "AgentToken", token.id.get(), "token_revoked".to_owned()),
            (2, "AgentToken", token.id.get(), "token_created".to_owned()),
            (
                1,
                "Clusters::Agent",
                agent.id.get(),
                "agent_created".to_owned()
            ),
        ]
    );
    assert_eq!(page.total, 6);
    assert!(page.items.is_sorted_by(|newer, older| newer.id > older.id));
}

pub(crate) async fn refused_writes_record_no_event(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let mut secrets = Secrets::seeded(1);
    let agent = fixtures::agent(storage, project.id, "a").await;
    for _ in 0..2 {
        storage
            .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
            .await
            .unwrap();
    }
    storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            3,
            None,
        )
        .await
        .unwrap();

    let duplicate_name = storage
        .create_agent(
            project.id,
            fixtures::agent_name("a"),
            None,
            4,
            agent_audit(owner.id, "agent_created"),
        )
        .await;
    let third_token = storage
        .create_agent_token(
            project.id,
            agent.id,
            secrets.agent_token(),
            4,
            token_audit(owner.id, "token_created"),
        )
        .await;
    let second_config = storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            4,
            url_configuration_audit(owner.id, "url_configuration_created"),
        )
        .await;
    let stale_delete = storage
        .delete_agent(
            project.id,
            agent.id,
            Some(UnmodifiedSince {
                latest_allowed_ms: 2,
            }),
            4,
            deleted_agent_audit(owner.id, "agent_deleted"),
        )
        .await;

    assert!(
        matches!(duplicate_name, Err(CreateAgentError::NameTaken)),
        "{duplicate_name:?}"
    );
    assert!(
        matches!(third_token, Err(CreateAgentTokenError::LimitReached(_))),
        "{third_token:?}"
    );
    assert!(
        matches!(
            second_config,
            Err(CreateUrlConfigurationError::AlreadyExists)
        ),
        "{second_config:?}"
    );
    assert!(
        matches!(stale_delete, Err(DeleteAgentError::PreconditionFailed)),
        "{stale_delete:?}"
    );
    let page = storage
        .audit_events_page(AuditScope::Project(project.id), fixtures::window(0, 10))
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.total), (0, 0));
}

pub(crate) async fn instance_events_are_kept_apart_from_project_events(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;

    let mut recorded = Vec::new();
    for (scope, entity_id, now_ms) in [
        (AuditScope::Instance, 1, 10),
        (AuditScope::Project(project.id), 2, 11),
        (AuditScope::Instance, 3, 12),
        (AuditScope::Project(other_project.id), 4, 13),
    ] {
        let event = storage
            .record_audit_event(fixtures::standalone_event(scope, entity_id), now_ms)
            .await
            .unwrap();
        recorded.push(event);
    }
    let instance = storage
        .audit_events_page(AuditScope::Instance, fixtures::window(0, 10))
        .await
        .unwrap();
    let in_project = storage
        .audit_events_page(AuditScope::Project(project.id), fixtures::window(0, 10))
        .await
        .unwrap();
    let in_other_project = storage
        .audit_events_page(
            AuditScope::Project(other_project.id),
            fixtures::window(0, 10),
        )
        .await
        .unwrap();

    assert_eq!(recorded[0].scope, AuditScope::Instance);
    assert_eq!(recorded[0].author_id, None);
    assert_eq!(recorded[0].created_at_ms, 10);
    assert_eq!(instance.items, [recorded[2].clone(), recorded[0].clone()]);
    assert_eq!(instance.total, 2);
    assert_eq!(in_project.items, [recorded[1].clone()]);
    assert_eq!(in_project.total, 1);
    assert_eq!(in_other_project.items, [recorded[3].clone()]);
    assert_eq!(in_other_project.total, 1);
}

pub(crate) async fn audit_events_are_paged_newest_first(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let scope = AuditScope::Project(project.id);
    for entity_id in 1..=5 {
        storage
            .record_audit_event(fixtures::standalone_event(scope, entity_id), 20)
            .await
            .unwrap();
    }

    let middle = storage
        .audit_events_page(scope, fixtures::window(1, 2))
        .await
        .unwrap();
    let last = storage
        .audit_events_page(scope, fixtures::window(4, 2))
        .await
        .unwrap();
    let past_the_end = storage
        .audit_events_page(scope, fixtures::window(5, 2))
        .await
        .unwrap();

    let entity_ids = |events: &[AuditEvent]| -> Vec<u64> {
        events.iter().map(|event| event.entity_id).collect()
    };
    assert_eq!(entity_ids(&middle.items), [4, 3]);
    assert_eq!(middle.total, 5);
    assert_eq!(entity_ids(&last.items), [1]);
    assert_eq!(last.total, 5);
    assert!(past_the_end.items.is_empty());
    assert_eq!(past_the_end.total, 5);
}

pub(crate) async fn retention_deletes_only_old_instance_events(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let project_scope = AuditScope::Project(project.id);
    for (entity_id, at_ms) in [(1, 100), (2, 200), (3, 300)] {
        storage
            .record_audit_event(
                fixtures::standalone_event(AuditScope::Instance, entity_id),
                at_ms,
            )
            .await
            .unwrap();
    }
    storage
        .record_audit_event(fixtures::standalone_event(project_scope, 9), 100)
        .await
        .unwrap();

    let n_deleted = storage
        .delete_instance_audit_events_before(300)
        .await
        .unwrap();

    let instance = storage
        .audit_events_page(AuditScope::Instance, fixtures::window(0, 10))
        .await
        .unwrap();
    let project_events = storage
        .audit_events_page(project_scope, fixtures::window(0, 10))
        .await
        .unwrap();
    assert_eq!(n_deleted, 2);
    let entity_ids: Vec<u64> = instance.items.iter().map(|event| event.entity_id).collect();
    assert_eq!(entity_ids, [3]);
    assert_eq!(project_events.total, 1);
}

pub(crate) async fn audit_details_come_back_as_they_were_given(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    // Keys out of alphabetical order, nesting, a null and non-ASCII text: a store that
    // normalises JSON would change this text.
    let details = serde_json::json!({
        "event_name": "cluster_agent_token_created",
        "author": {"username": "owner", "id": owner.id.get()},
        "agent": {"name": "a", "receptive": false, "note": null},
        "message": "créé ✓",
    });
    let event = NewAuditEvent {
        scope: AuditScope::Project(project.id),
        author_id: Some(owner.id),
        entity_id: 42,
        entity_type: "Clusters::AgentToken",
        details: details.clone(),
    };

    let recorded = storage.record_audit_event(event, 30).await.unwrap();

    let page = storage
        .audit_events_page(AuditScope::Project(project.id), fixtures::window(0, 1))
        .await
        .unwrap();
    assert_eq!(recorded.details.as_json(), details.to_string());
    assert_eq!(page.items, [recorded]);
}

pub(crate) async fn counts_follow_agents_active_tokens_and_url_configurations(
    storage: &dyn Storage,
) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    let mut secrets = Secrets::seeded(1);
    let agent = fixtures::agent(storage, project.id, "a").await;
    let foreign = fixtures::agent(storage, other_project.id, "a").await;
    let revoked = storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 2, None)
        .await
        .unwrap();
    storage
        .revoke_agent_token(
            project.id,
            agent.id,
            revoked.id,
            RevokeAgentToken::default(),
            3,
            None,
        )
        .await
        .unwrap();
    storage
        .create_agent_token(project.id, agent.id, secrets.agent_token(), 4, None)
        .await
        .unwrap();
    storage
        .create_agent_token(other_project.id, foreign.id, secrets.agent_token(), 4, None)
        .await
        .unwrap();
    storage
        .create_url_configuration(
            other_project.id,
            foreign.id,
            fixtures::jwt_url_configuration(),
            5,
            None,
        )
        .await
        .unwrap();

    let before_delete = storage.counts().await.unwrap();
    storage
        .delete_agent(other_project.id, foreign.id, None, 6, None)
        .await
        .unwrap();
    let after_delete = storage.counts().await.unwrap();

    assert_eq!(
        before_delete,
        Counts {
            agents: 2,
            active_agent_tokens: 2,
            url_configurations: 1,
        }
    );
    assert_eq!(
        after_delete,
        Counts {
            agents: 1,
            active_agent_tokens: 1,
            url_configurations: 0,
        }
    );
}

fn agent_audit(author_id: UserId, event_name: &'static str) -> Audit<Agent> {
    fixtures::audit(author_id, "Clusters::Agent", event_name, |agent: &Agent| {
        (agent.project_id, agent.id.get())
    })
}

fn deleted_agent_audit(author_id: UserId, event_name: &'static str) -> Audit<DeletedAgent> {
    fixtures::audit(
        author_id,
        "Clusters::Agent",
        event_name,
        |deleted: &DeletedAgent| (deleted.agent.project_id, deleted.agent.id.get()),
    )
}

fn token_audit(author_id: UserId, event_name: &'static str) -> Audit<AgentToken> {
    fixtures::audit(author_id, "AgentToken", event_name, |token: &AgentToken| {
        (token.project_id, token.id.get())
    })
}

fn url_configuration_audit(author_id: UserId, event_name: &'static str) -> Audit<UrlConfiguration> {
    fixtures::audit(
        author_id,
        "UrlConfiguration",
        event_name,
        |config: &UrlConfiguration| (config.project_id, config.id.get()),
    )
}

/// The `event_name` in an event's details.
fn event_name(event: &AuditEvent) -> String {
    let details: serde_json::Value = serde_json::from_str(event.details.as_json()).unwrap();
    details["event_name"].as_str().unwrap().to_owned()
}
