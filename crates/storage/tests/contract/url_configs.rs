//! URL configurations: one per agent under any concurrency, created and deleted together with
//! the agent's receptive flag and modification time, and deletes under a precondition.

use crate::fixtures;
use agentreg_domain::entities::{SealedUrlAuth, UrlConfiguration};
use agentreg_storage::agents::UnmodifiedSince;
use agentreg_storage::port::Storage;
use agentreg_storage::url_configs::{CreateUrlConfigurationError, DeleteUrlConfigurationError};

pub(crate) async fn an_agent_has_at_most_one_url_configuration(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;

    let created = storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::mtls_url_configuration(owner.id),
            2,
            None,
        )
        .await
        .unwrap();
    let second = storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            3,
            None,
        )
        .await;

    assert_eq!(
        created,
        UrlConfiguration {
            id: created.id,
            agent_id: agent.id,
            project_id: project.id,
            url: "grpcs://agent.example.com:8443".to_owned(),
            ca_cert: Some(
                "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n".to_owned()
            ),
            tls_host: Some("agent.internal".to_owned()),
            auth: SealedUrlAuth::Mtls {
                client_cert: "-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n"
                    .to_owned(),
                sealed_client_key: vec![0, 255, 3, 4],
            },
            created_by_user_id: Some(owner.id),
            created_at_ms: 2,
        }
    );
    assert!(
        matches!(second, Err(CreateUrlConfigurationError::AlreadyExists)),
        "{second:?}"
    );
    assert_eq!(
        storage
            .url_configurations(project.id, agent.id)
            .await
            .unwrap(),
        Some(vec![created.clone()])
    );
    assert_eq!(
        storage
            .url_configuration(project.id, agent.id, created.id)
            .await
            .unwrap(),
        Some(created.clone())
    );
    let stored_agent = storage.agent(project.id, agent.id).await.unwrap().unwrap();
    assert_eq!(stored_agent.url_configuration_id, Some(created.id));
    assert_eq!(storage.counts().await.unwrap().url_configurations, 1);
}

pub(crate) async fn concurrent_url_configuration_creates_create_exactly_one(storage: &dyn Storage) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let creates = (0..20).map(|_| {
        storage.create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            2,
            None,
        )
    });

    let results = futures::future::join_all(creates).await;

    let created: Vec<&UrlConfiguration> = results
        .iter()
        .filter_map(|result| result.as_ref().ok())
        .collect();
    let n_refused = results
        .iter()
        .filter(|result| matches!(result, Err(CreateUrlConfigurationError::AlreadyExists)))
        .count();
    assert_eq!((created.len(), n_refused), (1, 19), "{results:?}");
    assert_eq!(
        storage
            .url_configurations(project.id, agent.id)
            .await
            .unwrap(),
        Some(vec![created[0].clone()])
    );
    assert_eq!(
        storage.all_url_configurations().await.unwrap(),
        [created[0].clone()]
    );
    let stored_agent = storage.agent(project.id, agent.id).await.unwrap().unwrap();
    assert_eq!(stored_agent.url_configuration_id, Some(created[0].id));
}

pub(crate) async fn creating_and_deleting_a_url_configuration_updates_the_agent(
    storage: &dyn Storage,
) {
    let (_, project) = fixtures::owner_and_project(storage).await;
    let agent = fixtures::agent(storage, project.id, "a").await;

    let created = storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            5,
            None,
        )
        .await
        .unwrap();
    let after_create = storage.agent(project.id, agent.id).await.unwrap().unwrap();
    let deleted = storage
        .delete_url_configuration(project.id, agent.id, created.id, None, 9, None)
        .await
        .unwrap();
    let after_delete = storage.agent(project.id, agent.id).await.unwrap().unwrap();
    let delete_again = storage
        .delete_url_configuration(project.id, agent.id, created.id, None, 10, None)
        .await;

    assert_eq!((agent.created_at_ms, agent.updated_at_ms), (1, 1));
    assert!(after_create.is_receptive());
    assert_eq!(
        (after_create.created_at_ms, after_create.updated_at_ms),
        (1, 5)
    );
    assert_eq!(deleted, created);
    assert!(!after_delete.is_receptive());
    assert_eq!(
        (after_delete.created_at_ms, after_delete.updated_at_ms),
        (1, 9)
    );
    assert!(
        matches!(delete_again, Err(DeleteUrlConfigurationError::NotFound)),
        "{delete_again:?}"
    );
    assert_eq!(
        storage
            .url_configurations(project.id, agent.id)
            .await
            .unwrap(),
        Some(vec![])
    );
    assert_eq!(
        storage
            .url_configuration(project.id, agent.id, created.id)
            .await
            .unwrap(),
        None
    );
    assert!(storage.all_url_configurations().await.unwrap().is_empty());
}

pub(crate) async fn deleting_a_url_configuration_created_after_the_precondition_is_refused(
    storage: &dyn Storage,
) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    let agent = fixtures::agent(storage, project.id, "a").await;
    let neighbour = fixtures::agent(storage, project.id, "b").await;
    let created = storage
        .create_url_configuration(
            project.id,
            agent.id,
            fixtures::jwt_url_configuration(),
            5,
            None,
        )
        .await
        .unwrap();

    let stale = storage
        .delete_url_configuration(
            project.id,
            agent.id,
            created.id,
            Some(UnmodifiedSince {
                latest_allowed_ms: 4,
            }),
            6,
            None,
        )
        .await;
    let through_neighbour = storage
        .delete_url_configuration(project.id, neighbour.id, created.id, None, 6, None)
        .await;
    let through_other_project = storage
        .delete_url_configuration(other_project.id, agent.id, created.id, None, 6, None)
        .await;
    let still_there = storage
        .url_configuration(project.id, agent.id, created.id)
        .await
        .unwrap();
    let fresh = storage
        .delete_url_configuration(
            project.id,
            agent.id,
            created.id,
            Some(UnmodifiedSince {
                latest_allowed_ms: 5,
            }),
            7,
            None,
        )
        .await;

    assert!(
        matches!(stale, Err(DeleteUrlConfigurationError::PreconditionFailed)),
        "{stale:?}"
    );
    for refused in [through_neighbour, through_other_project] {
        assert!(
            matches!(refused, Err(DeleteUrlConfigurationError::NotFound)),
            "{refused:?}"
        );
    }
    assert_eq!(still_there, Some(created.clone()));
    assert_eq!(fresh.unwrap(), created);
}

pub(crate) async fn all_url_configurations_are_listed_by_id(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let other_project = fixtures::project(storage, &owner, "other").await;
    let agent_b = fixtures::agent(storage, project.id, "b").await;
    let agent_a = fixtures::agent(storage, project.id, "a").await;
    let foreign = fixtures::agent(storage, other_project.id, "c").await;

    let mut created = Vec::new();
    for (project_id, agent_id) in [
        (other_project.id, foreign.id),
        (project.id, agent_b.id),
        (project.id, agent_a.id),
    ] {
        let config = storage
            .create_url_configuration(
                project_id,
                agent_id,
                fixtures::mtls_url_configuration(owner.id),
                2,
                None,
            )
            .await
            .unwrap();
        created.push(config);
    }
    let listed = storage.all_url_configurations().await.unwrap();

    assert!(created.is_sorted_by_key(|config| config.id));
    assert_eq!(listed, created);
}

pub(crate) async fn a_sealed_key_is_replaced_in_either_mode(storage: &dyn Storage) {
    let (owner, project) = fixtures::owner_and_project(storage).await;
    let jwt_agent = fixtures::agent(storage, project.id, "jwt").await;
    let mtls_agent = fixtures::agent(storage, project.id, "mtls").await;
    let jwt = storage
        .create_url_configuration(
            project.id,
            jwt_agent.id,
            fixtures::jwt_url_configuration(),
            2,
            None,
        )
        .await
        .unwrap();
    let mtls = storage
        .create_url_configuration(
            project.id,
            mtls_agent.id,
            fixtures::mtls_url_configuration(owner.id),
            2,
            None,
        )
        .await
        .unwrap();

    let replaced_jwt = storage
        .replace_sealed_key(jwt.id, vec![9; 61])
        .await
        .unwrap();
    let replaced_mtls = storage
        .replace_sealed_key(mtls.id, vec![8; 62])
        .await
        .unwrap();
    storage
        .delete_url_configuration(project.id, jwt_agent.id, jwt.id, None, 3, None)
        .await
        .unwrap();
    let replaced_deleted = storage
        .replace_sealed_key(jwt.id, vec![7; 63])
        .await
        .unwrap();

    let listed = storage.all_url_configurations().await.unwrap();
    assert!(replaced_jwt && replaced_mtls);
    assert!(!replaced_deleted);
    assert_eq!(listed.len(), 1);
    match &listed[0].auth {
        SealedUrlAuth::Mtls {
            sealed_client_key,
            client_cert,
        } => {
            assert_eq!(sealed_client_key, &vec![8; 62]);
            assert!(
                matches!(&mtls.auth, SealedUrlAuth::Mtls { client_cert: before, .. } if before == client_cert)
            );
        }
        SealedUrlAuth::Jwt { .. } => panic!("the mode changed"),
    }
}
