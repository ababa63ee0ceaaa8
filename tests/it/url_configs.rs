//! Receptive agents' URL configurations (reference §4.3, §5 and §7.3) over REST and gRPC, and the
//! agent server's view of them (`receptive_agents`, reference §5.8), including the key pairs and
//! client keys behind them.

use crate::helpers::{
    ROOT_TOKEN, TestApp, data_dir_contains, grpc_error, kas_jwt_signed_with, read,
};
use agentreg::grpc::pb;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, Verifier as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt as _;
use tonic::Code;

const GUEST: i64 = 10;
const REPORTER: i64 = 20;
const DEVELOPER: i64 = 30;
const MAINTAINER: i64 = 40;

/// The URL GitLab's request specs create configurations with.
const JWT_URL: &str = "grpcs://localhost:4242";
/// The keys of GitLab's UrlConfiguration entity, in its declaration order.
const CONFIG_KEYS: [&str; 7] = [
    "id",
    "agent_id",
    "url",
    "public_key",
    "client_cert",
    "ca_cert",
    "tls_host",
];
const ALREADY_EXISTS: &str = "400 Bad request - URL configuration already exists for this agent";
/// `1990-01-12T00:00:48-0600`, long before any configuration in these tests existed.
const LONG_AGO: &str = "1990-01-12T00:00:48-0600";
const LONG_AGO_SECONDS: i64 = 632_124_048;

// Reading and listing

#[tokio::test]
async fn list_of_an_agent_without_configuration_is_empty_and_not_paginated() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let developer = app.member(project_id, "developer", DEVELOPER).await;

    let response = app
        .request(
            Method::GET,
            &configs_path(project_id, agent_id),
            Some(&developer),
        )
        .send()
        .await
        .expect("request sent");
    let headers = response.headers().clone();
    let (status, body) = read(response).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([]));
    for header in [
        "x-total",
        "x-total-pages",
        "x-page",
        "x-per-page",
        "x-next-page",
        "x-prev-page",
        "link",
    ] {
        assert!(headers.get(header).is_none(), "unexpected header {header}");
    }
}

#[tokio::test]
async fn list_and_get_return_the_created_configuration() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let config_id = config_id_of(&created);

    let (list_status, configs) = app
        .get(&configs_path(project_id, agent_id), ROOT_TOKEN)
        .await;
    let (get_status, config) = app
        .get(&config_path(project_id, agent_id, config_id), ROOT_TOKEN)
        .await;

    assert_eq!(list_status, StatusCode::OK);
    assert_eq!(configs, json!([created.clone()]));
    assert_eq!(get_status, StatusCode::OK);
    assert_eq!(config, created);
    assert_eq!(config["agent_id"], agent_id);
    assert_eq!(config["url"], JWT_URL);
}

#[tokio::test]
async fn get_of_an_unknown_configuration_id_is_not_found() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let unknown_id = config_id_of(&created) + 1000;

    let (status, body) = app
        .get(&config_path(project_id, agent_id, unknown_id), ROOT_TOKEN)
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not Found"}));
}

#[tokio::test]
async fn every_route_of_an_unknown_agent_is_record_not_found() {
    let (app, project_id, _agent_id) = app_with_agent().await;

    let responses = rest_on_every_route(&app, Some(ROOT_TOKEN), project_id, 999_999, 1).await;

    for (route, status, body) in responses {
        assert_eq!(status, StatusCode::NOT_FOUND, "{route}");
        assert_eq!(body, json!({"message": "404 Not found"}), "{route}");
    }
}

#[tokio::test]
async fn every_route_of_an_unknown_project_is_project_not_found() {
    let app = TestApp::spawn().await;

    let responses = rest_on_every_route(&app, Some(ROOT_TOKEN), 999_999, 1, 1).await;

    for (route, status, body) in responses {
        assert_eq!(status, StatusCode::NOT_FOUND, "{route}");
        assert_eq!(body, json!({"message": "404 Project Not Found"}), "{route}");
    }
}

#[tokio::test]
async fn project_is_looked_up_before_the_agent_id_is_parsed() {
    let (app, project_id, _agent_id) = app_with_agent().await;

    let (unknown_project_status, unknown_project_body) = app
        .get(
            "/projects/999999/cluster_agents/abc/url_configurations",
            ROOT_TOKEN,
        )
        .await;
    let (known_project_status, known_project_body) = app
        .get(
            &format!("/projects/{project_id}/cluster_agents/abc/url_configurations"),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(unknown_project_status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown_project_body,
        json!({"message": "404 Project Not Found"})
    );
    assert_eq!(known_project_status, StatusCode::BAD_REQUEST);
    assert_eq!(known_project_body, json!({"error": "agent_id is invalid"}));
}

#[tokio::test]
async fn configuration_of_an_agent_in_another_project_is_not_reachable() {
    let (app, project_id, _agent_id) = app_with_agent().await;
    let other_project_id = app.project(ROOT_TOKEN, "other").await;
    let other_agent_id = app.agent(other_project_id, "other-agent").await;
    let other_config = create_jwt_config(&app, other_project_id, other_agent_id).await;
    let other_config_id = config_id_of(&other_config);

    let (get_status, get_body) = app
        .get(
            &config_path(project_id, other_agent_id, other_config_id),
            ROOT_TOKEN,
        )
        .await;
    let (delete_status, delete_body) = app
        .delete(
            &config_path(project_id, other_agent_id, other_config_id),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(get_status, StatusCode::NOT_FOUND);
    assert_eq!(get_body, json!({"message": "404 Not found"}));
    assert_eq!(delete_status, StatusCode::NOT_FOUND);
    assert_eq!(delete_body, json!({"message": "404 Not found"}));
    let (_, still_there) = app
        .get(
            &config_path(other_project_id, other_agent_id, other_config_id),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(still_there, other_config);
}

#[tokio::test]
async fn non_integer_configuration_id_is_a_parameter_error() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let path = format!("{}/abc", configs_path(project_id, agent_id));

    let (get_status, get_body) = app.get(&path, ROOT_TOKEN).await;
    let (delete_status, delete_body) = app.delete(&path, ROOT_TOKEN).await;

    for (status, body) in [(get_status, get_body), (delete_status, delete_body)] {
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"error": "url_configuration_id is invalid"}));
    }
}

#[tokio::test]
async fn project_can_be_named_by_its_encoded_full_path() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let (_, project) = app
        .get(&format!("/projects/{project_id}"), ROOT_TOKEN)
        .await;
    let full_path = project["path_with_namespace"]
        .as_str()
        .expect("path_with_namespace")
        .replace('/', "%2F");

    let (status, configs) = app
        .get(
            &format!("/projects/{full_path}/cluster_agents/{agent_id}/url_configurations"),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{configs}");
    assert_eq!(configs, json!([created]));
}

#[tokio::test]
async fn read_api_token_reads_but_cannot_create() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let (user_id, read_api_token) = app.user_with_scopes("reader", &["read_api"]).await;
    app.add_member(project_id, user_id, MAINTAINER).await;

    let (list_status, configs) = app
        .get(&configs_path(project_id, agent_id), &read_api_token)
        .await;
    let (create_status, create_body) = app
        .post(
            &configs_path(project_id, agent_id),
            &read_api_token,
            json!({"url": JWT_URL}),
        )
        .await;

    assert_eq!(list_status, StatusCode::OK);
    assert_eq!(configs, json!([]));
    assert_eq!(create_status, StatusCode::FORBIDDEN);
    assert_eq!(create_body["error"], "insufficient_scope");
    assert!(!is_receptive(&app, project_id, agent_id).await);
}

// Creating in JWT mode

#[tokio::test]
async fn jwt_configuration_has_all_seven_keys_in_order_and_a_raw_public_key() {
    let (app, project_id, agent_id) = app_with_agent().await;

    let (status, config) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            json!({"url": JWT_URL}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_config_keys(&config);
    assert!(config["id"].as_i64().is_some_and(|id| id > 0));
    assert_eq!(config["agent_id"], agent_id);
    assert_eq!(config["url"], JWT_URL);
    let public_key = config["public_key"]
        .as_str()
        .expect("public_key is a string");
    assert_eq!(public_key.len(), 44);
    assert_eq!(
        BASE64.decode(public_key).expect("standard base64").len(),
        32
    );
    assert_eq!(config["client_cert"], Value::Null);
    assert_eq!(config["ca_cert"], Value::Null);
    assert_eq!(config["tls_host"], Value::Null);
}

#[tokio::test]
async fn agent_is_receptive_while_it_has_a_configuration() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let receptive_before = is_receptive(&app, project_id, agent_id).await;
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let receptive_with_config = is_receptive(&app, project_id, agent_id).await;

    let (status, body) = app
        .delete(
            &config_path(project_id, agent_id, config_id_of(&created)),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert!(!receptive_before);
    assert!(receptive_with_config);
    assert!(!is_receptive(&app, project_id, agent_id).await);
    let (_, configs) = app
        .get(&configs_path(project_id, agent_id), ROOT_TOKEN)
        .await;
    assert_eq!(configs, json!([]));
}

#[tokio::test]
async fn agent_can_be_configured_again_after_its_configuration_is_deleted() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let first = create_jwt_config(&app, project_id, agent_id).await;
    let (status, _) = app
        .delete(
            &config_path(project_id, agent_id, config_id_of(&first)),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, second) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            json!({"url": "grpc://agent.example.com"}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_ne!(second["public_key"], first["public_key"]);
    assert!(is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn second_configuration_for_an_agent_is_refused() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let first = create_jwt_config(&app, project_id, agent_id).await;

    let (status, body) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            json!({"url": "grpc://agent.example.com"}),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"message": ALREADY_EXISTS}));
    let (_, configs) = app
        .get(&configs_path(project_id, agent_id), ROOT_TOKEN)
        .await;
    assert_eq!(configs, json!([first]));
}

#[tokio::test]
async fn ca_cert_and_tls_host_are_echoed() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let certificate_authority = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);

    let (status, config) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            json!({
                "url": JWT_URL,
                "ca_cert": certificate_authority.cert_pem,
                "tls_host": "example.com",
            }),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_config_keys(&config);
    assert_eq!(config["ca_cert"], certificate_authority.cert_pem);
    assert_eq!(config["tls_host"], "example.com");
    assert!(config["public_key"].is_string());
}

#[tokio::test]
async fn blank_optional_values_are_stored_as_null() {
    let (app, project_id, agent_id) = app_with_agent().await;

    let (status, config) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            json!({
                "url": JWT_URL,
                "ca_cert": "",
                "tls_host": "",
                "client_cert": "  ",
                "client_key": "",
            }),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_eq!(config["ca_cert"], Value::Null);
    assert_eq!(config["tls_host"], Value::Null);
    assert_eq!(config["client_cert"], Value::Null);
    assert!(
        config["public_key"].is_string(),
        "blank client credentials mean JWT mode: {config}"
    );
}

#[tokio::test]
async fn url_of_exactly_2048_characters_is_accepted() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let url = url_of_length(2048);

    let (status, config) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            json!({"url": url}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_eq!(config["url"], url);
}

// Creating in mTLS mode

#[tokio::test]
async fn mtls_configuration_with_an_ed25519_pair_echoes_the_certificate_only() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ED25519);

    let (status, config) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            NewConfig::mtls(JWT_URL, &client).json(),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_config_keys(&config);
    assert_eq!(config["public_key"], Value::Null);
    assert_eq!(config["client_cert"], client.cert_pem);
    assert_key_absent(&config, &client);
    assert!(is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn mtls_configuration_with_a_p256_pair_never_returns_the_client_key() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);

    let (status, created) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            NewConfig::mtls(JWT_URL, &client).json(),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["public_key"], Value::Null);
    assert_eq!(created["client_cert"], client.cert_pem);
    assert_key_absent(&created, &client);
    let (_, configs) = app
        .get(&configs_path(project_id, agent_id), ROOT_TOKEN)
        .await;
    let (_, config) = app
        .get(
            &config_path(project_id, agent_id, config_id_of(&created)),
            ROOT_TOKEN,
        )
        .await;
    assert_key_absent(&configs, &client);
    assert_key_absent(&config, &client);
    assert_eq!(config, created);
}

// Validation: REST and gRPC answer alike

#[tokio::test]
async fn missing_url_is_a_parameter_error() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let new_config = NewConfig {
        tls_host: Some("example.com".to_owned()),
        ..NewConfig::default()
    };

    let (status, body) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            new_config.json(),
        )
        .await;
    let grpc_result = app
        .grpc_url_configs(ROOT_TOKEN)
        .create_url_configuration(new_config.request(project_id, agent_id))
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"error": "url is missing"}));
    assert_eq!(
        grpc_error(grpc_result),
        (Code::InvalidArgument, "url is missing".to_owned())
    );
}

#[tokio::test]
async fn urls_that_are_not_grpc_urls_are_rejected() {
    let (app, project_id, agent_id) = app_with_agent().await;

    for url in [
        "https://agent.example.com",
        "not.a.url",
        "grpc://",
        "",
        "grpc://user:pass@agent.example.com:443",
        "grpc://agent%00.example.com",
    ] {
        assert_rejected_alike(
            &app,
            project_id,
            agent_id,
            &NewConfig::jwt(url),
            &validation_message(&["Url is not a valid URL"]),
        )
        .await;
    }
}

#[tokio::test]
async fn url_over_2048_characters_is_too_long() {
    let (app, project_id, agent_id) = app_with_agent().await;

    assert_rejected_alike(
        &app,
        project_id,
        agent_id,
        &NewConfig::jwt(&url_of_length(2049)),
        &validation_message(&["Url is too long (maximum is 2048 characters)"]),
    )
    .await;
}

#[tokio::test]
async fn tls_host_that_is_not_a_bare_hostname_is_rejected() {
    let (app, project_id, agent_id) = app_with_agent().await;

    for tls_host in ["https://exmple.com/path", "host:443"] {
        let new_config = NewConfig {
            tls_host: Some(tls_host.to_owned()),
            ..NewConfig::jwt(JWT_URL)
        };
        assert_rejected_alike(
            &app,
            project_id,
            agent_id,
            &new_config,
            &validation_message(&["Tls host must be a valid hostname!"]),
        )
        .await;
    }
}

#[tokio::test]
async fn tls_host_over_2048_characters_is_too_long() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let new_config = NewConfig {
        tls_host: Some("a".repeat(2049)),
        ..NewConfig::jwt(JWT_URL)
    };

    assert_rejected_alike(
        &app,
        project_id,
        agent_id,
        &new_config,
        &validation_message(&["Tls host is too long (maximum is 2048 characters)"]),
    )
    .await;
}

#[tokio::test]
async fn ca_cert_that_is_not_a_pem_certificate_is_rejected() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);

    for ca_cert in ["invalid", client.key_pem.as_str()] {
        let new_config = NewConfig {
            ca_cert: Some(ca_cert.to_owned()),
            ..NewConfig::jwt(JWT_URL)
        };
        assert_rejected_alike(
            &app,
            project_id,
            agent_id,
            &new_config,
            &validation_message(&["Ca cert must be a valid PEM certificate"]),
        )
        .await;
    }
}

#[tokio::test]
async fn client_key_that_is_pem_garbage_is_rejected() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let garbage_in_armour = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        BASE64.encode(b"this is not a private key at all")
    );

    for client_key in ["invalid", garbage_in_armour.as_str(), &client.cert_pem] {
        let new_config = NewConfig {
            client_key: Some(client_key.to_owned()),
            ..NewConfig::mtls(JWT_URL, &client)
        };
        assert_rejected_alike(
            &app,
            project_id,
            agent_id,
            &new_config,
            &validation_message(&["Client key must be a valid PEM private key"]),
        )
        .await;
    }
}

#[tokio::test]
async fn client_key_of_another_certificate_is_rejected() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let p256 = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let other_p256 = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let ed25519 = credentials(&rcgen::PKCS_ED25519);

    for (certificate_of, key_of) in [(&p256, &other_p256), (&ed25519, &p256), (&p256, &ed25519)] {
        let new_config = NewConfig {
            client_key: Some(key_of.key_pem.clone()),
            ..NewConfig::mtls(JWT_URL, certificate_of)
        };
        assert_rejected_alike(
            &app,
            project_id,
            agent_id,
            &new_config,
            &validation_message(&["Client key does not match the client certificate"]),
        )
        .await;
    }
}

#[tokio::test]
async fn client_key_without_a_certificate_is_rejected() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let new_config = NewConfig {
        client_cert: None,
        ..NewConfig::mtls(JWT_URL, &client)
    };

    assert_rejected_alike(
        &app,
        project_id,
        agent_id,
        &new_config,
        &validation_message(&["Client cert must be a valid PEM certificate"]),
    )
    .await;
}

#[tokio::test]
async fn client_certificate_without_a_key_is_rejected() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let new_config = NewConfig {
        client_key: None,
        ..NewConfig::mtls(JWT_URL, &client)
    };

    assert_rejected_alike(
        &app,
        project_id,
        agent_id,
        &new_config,
        &validation_message(&["Client cert must be blank"]),
    )
    .await;
}

#[tokio::test]
async fn certificates_and_keys_over_16384_characters_are_too_long() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let padding = "\n".repeat(16384);
    let new_config = NewConfig {
        url: Some(JWT_URL.to_owned()),
        client_cert: Some(format!("{}{padding}", client.cert_pem)),
        client_key: Some(format!("{}{padding}", client.key_pem)),
        ca_cert: Some(format!("{}{padding}", client.cert_pem)),
        tls_host: None,
    };

    assert_rejected_alike(
        &app,
        project_id,
        agent_id,
        &new_config,
        &validation_message(&[
            "Ca cert is too long (maximum is 16384 characters)",
            "Client cert is too long (maximum is 16384 characters)",
            "Client key is too long (maximum is 16384 characters)",
        ]),
    )
    .await;
}

#[tokio::test]
async fn every_failure_is_reported_in_gitlab_order() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let new_config = NewConfig {
        url: Some("https://agent.example.com".to_owned()),
        client_cert: Some("invalid".to_owned()),
        client_key: Some("invalid".to_owned()),
        ca_cert: Some("invalid".to_owned()),
        tls_host: Some("host:443".to_owned()),
    };

    assert_rejected_alike(
        &app,
        project_id,
        agent_id,
        &new_config,
        &validation_message(&[
            "Url is not a valid URL",
            "Ca cert must be a valid PEM certificate",
            "Tls host must be a valid hostname!",
            "Client cert must be a valid PEM certificate",
            "Client key must be a valid PEM private key",
        ]),
    )
    .await;
}

// Roles and the order of checks

#[tokio::test]
async fn guests_and_reporters_are_forbidden_on_every_route() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let config_id = config_id_of(&create_jwt_config(&app, project_id, agent_id).await);
    let guest = app.member(project_id, "guest", GUEST).await;
    let reporter = app.member(project_id, "reporter", REPORTER).await;

    for token in [&guest, &reporter] {
        let responses =
            rest_on_every_route(&app, Some(token), project_id, agent_id, config_id).await;

        for (route, status, body) in responses {
            assert_eq!(status, StatusCode::FORBIDDEN, "{route}");
            assert_eq!(body, json!({"message": "403 Forbidden"}), "{route}");
        }
    }
    assert!(is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn guests_and_reporters_are_permission_denied_on_every_rpc() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let config_id = config_id_of(&create_jwt_config(&app, project_id, agent_id).await);
    let guest = app.member(project_id, "guest", GUEST).await;
    let reporter = app.member(project_id, "reporter", REPORTER).await;

    for token in [&guest, &reporter] {
        let errors = grpc_errors_on_every_rpc(&app, token, project_id, agent_id, config_id).await;

        for (rpc, error) in errors {
            assert_eq!(
                error,
                (Code::PermissionDenied, "403 Forbidden".to_owned()),
                "{rpc}"
            );
        }
    }
}

#[tokio::test]
async fn authorization_comes_after_parameters_and_before_the_agent_lookup() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let guest = app.member(project_id, "guest", GUEST).await;

    let (no_url_status, no_url_body) = app
        .post(&configs_path(project_id, agent_id), &guest, json!({}))
        .await;
    let (unknown_agent_status, unknown_agent_body) =
        app.get(&configs_path(project_id, 999_999), &guest).await;

    assert_eq!(no_url_status, StatusCode::BAD_REQUEST);
    assert_eq!(no_url_body, json!({"error": "url is missing"}));
    assert_eq!(unknown_agent_status, StatusCode::FORBIDDEN);
    assert_eq!(unknown_agent_body, json!({"message": "403 Forbidden"}));
}

#[tokio::test]
async fn developers_read_configurations_but_cannot_change_them() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let other_agent_id = app.agent(project_id, "other-agent").await;
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let config_id = config_id_of(&created);
    let developer = app.member(project_id, "developer", DEVELOPER).await;

    let (list_status, configs) = app
        .get(&configs_path(project_id, agent_id), &developer)
        .await;
    let (get_status, config) = app
        .get(&config_path(project_id, agent_id, config_id), &developer)
        .await;
    let (create_status, create_body) = app
        .post(
            &configs_path(project_id, other_agent_id),
            &developer,
            json!({"url": JWT_URL}),
        )
        .await;
    let (delete_status, delete_body) = app
        .delete(&config_path(project_id, agent_id, config_id), &developer)
        .await;

    assert_eq!(list_status, StatusCode::OK);
    assert_eq!(configs, json!([created.clone()]));
    assert_eq!(get_status, StatusCode::OK);
    assert_eq!(config, created);
    assert_eq!(create_status, StatusCode::FORBIDDEN);
    assert_eq!(create_body, json!({"message": "403 Forbidden"}));
    assert_eq!(delete_status, StatusCode::FORBIDDEN);
    assert_eq!(delete_body, json!({"message": "403 Forbidden"}));
    assert!(!is_receptive(&app, project_id, other_agent_id).await);
    assert!(is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn developers_read_over_grpc_but_cannot_change() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let other_agent_id = app.agent(project_id, "other-agent").await;
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let config_id = config_id_of(&created);
    let developer = app.member(project_id, "developer", DEVELOPER).await;
    let mut client = app.grpc_url_configs(&developer);

    let listed = client
        .list_url_configurations(pb::ListUrlConfigurationsRequest {
            project: project_id.to_string(),
            agent_id,
        })
        .await
        .expect("developer lists")
        .into_inner();
    let fetched = client
        .get_url_configuration(pb::GetUrlConfigurationRequest {
            project: project_id.to_string(),
            agent_id,
            url_configuration_id: config_id,
        })
        .await
        .expect("developer gets")
        .into_inner();
    let create_result = client
        .create_url_configuration(NewConfig::jwt(JWT_URL).request(project_id, other_agent_id))
        .await;
    let delete_result = client
        .delete_url_configuration(pb::DeleteUrlConfigurationRequest {
            project: project_id.to_string(),
            agent_id,
            url_configuration_id: config_id,
            if_unmodified_since: None,
        })
        .await;

    assert_eq!(listed.url_configurations, std::slice::from_ref(&fetched));
    assert_eq!(json_of_grpc(&fetched), created);
    assert_eq!(
        grpc_error(create_result),
        (Code::PermissionDenied, "403 Forbidden".to_owned())
    );
    assert_eq!(
        grpc_error(delete_result),
        (Code::PermissionDenied, "403 Forbidden".to_owned())
    );
}

#[tokio::test]
async fn maintainers_create_and_delete_configurations() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let maintainer = app.member(project_id, "maintainer", MAINTAINER).await;

    let (create_status, created) = app
        .post(
            &configs_path(project_id, agent_id),
            &maintainer,
            json!({"url": JWT_URL}),
        )
        .await;
    let (delete_status, _) = app
        .delete(
            &config_path(project_id, agent_id, config_id_of(&created)),
            &maintainer,
        )
        .await;

    assert_eq!(create_status, StatusCode::CREATED, "{created}");
    assert_eq!(delete_status, StatusCode::NO_CONTENT);
    assert!(!is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn non_members_do_not_see_the_project() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let config_id = config_id_of(&create_jwt_config(&app, project_id, agent_id).await);
    let (_, stranger) = app.user("stranger").await;

    let responses =
        rest_on_every_route(&app, Some(&stranger), project_id, agent_id, config_id).await;

    for (route, status, body) in responses {
        assert_eq!(status, StatusCode::NOT_FOUND, "{route}");
        assert_eq!(body, json!({"message": "404 Project Not Found"}), "{route}");
    }
}

#[tokio::test]
async fn anonymous_callers_are_unauthorized_on_every_route() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let config_id = config_id_of(&create_jwt_config(&app, project_id, agent_id).await);

    let responses = rest_on_every_route(&app, None, project_id, agent_id, config_id).await;
    let errors = grpc_errors_on_every_rpc(
        &app,
        "glpat-not-a-known-token",
        project_id,
        agent_id,
        config_id,
    )
    .await;

    for (route, status, body) in responses {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{route}");
        assert_eq!(body, json!({"message": "401 Unauthorized"}), "{route}");
    }
    for (rpc, error) in errors {
        assert_eq!(
            error,
            (Code::Unauthenticated, "401 Unauthorized".to_owned()),
            "{rpc}"
        );
    }
}

// The instance setting

#[tokio::test]
async fn every_route_is_not_found_when_receptive_agents_are_disabled() {
    let (app, project_id, agent_id) = app_with_agent_using(disable_receptive_agents).await;
    let guest = app.member(project_id, "guest", GUEST).await;

    for token in [ROOT_TOKEN, guest.as_str()] {
        let responses = rest_on_every_route(&app, Some(token), project_id, agent_id, 1).await;

        for (route, status, body) in responses {
            assert_eq!(status, StatusCode::NOT_FOUND, "{route}");
            assert_eq!(body, json!({"message": "404 Not Found"}), "{route}");
        }
    }
    let (no_url_status, no_url_body) = app
        .post(&configs_path(project_id, agent_id), ROOT_TOKEN, json!({}))
        .await;
    assert_eq!(no_url_status, StatusCode::NOT_FOUND);
    assert_eq!(no_url_body, json!({"message": "404 Not Found"}));
    assert!(!is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn unknown_project_is_still_project_not_found_when_receptive_agents_are_disabled() {
    let app = TestApp::spawn_with(disable_receptive_agents).await;

    let responses = rest_on_every_route(&app, Some(ROOT_TOKEN), 999_999, 1, 1).await;

    for (route, status, body) in responses {
        assert_eq!(status, StatusCode::NOT_FOUND, "{route}");
        assert_eq!(body, json!({"message": "404 Project Not Found"}), "{route}");
    }
}

#[tokio::test]
async fn every_rpc_is_not_found_when_receptive_agents_are_disabled() {
    let (app, project_id, agent_id) = app_with_agent_using(disable_receptive_agents).await;

    let errors = grpc_errors_on_every_rpc(&app, ROOT_TOKEN, project_id, agent_id, 1).await;
    let unknown_project_errors =
        grpc_errors_on_every_rpc(&app, ROOT_TOKEN, 999_999, agent_id, 1).await;

    for (rpc, error) in errors {
        assert_eq!(error, (Code::NotFound, "404 Not Found".to_owned()), "{rpc}");
    }
    for (rpc, error) in unknown_project_errors {
        assert_eq!(
            error,
            (Code::NotFound, "404 Project Not Found".to_owned()),
            "{rpc}"
        );
    }
}

// Deleting

#[tokio::test]
async fn delete_with_an_earlier_if_unmodified_since_is_a_failed_precondition() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let path = config_path(project_id, agent_id, config_id_of(&created));

    let response = app
        .request(Method::DELETE, &path, Some(ROOT_TOKEN))
        .header("If-Unmodified-Since", LONG_AGO)
        .send()
        .await
        .expect("request sent");
    let (status, body) = read(response).await;

    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body, json!({"message": "412 Precondition Failed"}));
    let (_, config) = app.get(&path, ROOT_TOKEN).await;
    assert_eq!(config, created);
    assert!(is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn delete_with_a_later_if_unmodified_since_succeeds() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let path = config_path(project_id, agent_id, config_id_of(&created));

    let response = app
        .request(Method::DELETE, &path, Some(ROOT_TOKEN))
        .header("If-Unmodified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")
        .send()
        .await
        .expect("request sent");
    let (status, _) = read(response).await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn delete_of_an_unknown_configuration_id_is_not_found() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let created = create_jwt_config(&app, project_id, agent_id).await;

    let (status, body) = app
        .delete(
            &config_path(project_id, agent_id, config_id_of(&created) + 1000),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not Found"}));
    assert!(is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn configuration_of_another_agent_cannot_be_reached_through_this_agent() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let other_agent_id = app.agent(project_id, "other-agent").await;
    let other_config = create_jwt_config(&app, project_id, other_agent_id).await;
    let other_config_id = config_id_of(&other_config);
    let path = config_path(project_id, agent_id, other_config_id);

    let (get_status, get_body) = app.get(&path, ROOT_TOKEN).await;
    let (delete_status, delete_body) = app.delete(&path, ROOT_TOKEN).await;

    assert_eq!(get_status, StatusCode::NOT_FOUND);
    assert_eq!(get_body, json!({"message": "404 Not Found"}));
    assert_eq!(delete_status, StatusCode::NOT_FOUND);
    assert_eq!(delete_body, json!({"message": "404 Not Found"}));
    assert!(is_receptive(&app, project_id, other_agent_id).await);
    let (_, configs) = app
        .get(&configs_path(project_id, other_agent_id), ROOT_TOKEN)
        .await;
    assert_eq!(configs, json!([other_config]));
}

#[tokio::test]
async fn deleting_the_agent_removes_its_configuration() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let kept_agent_id = app.agent(project_id, "kept-agent").await;
    create_jwt_config(&app, project_id, agent_id).await;
    create_jwt_config(&app, project_id, kept_agent_id).await;

    let (status, _) = app
        .delete(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}"),
            ROOT_TOKEN,
        )
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, receptive) = receptive_agents(&app, Some(app.kas_jwt())).await;
    let agent_ids: Vec<&Value> = entries(&receptive).iter().map(|e| &e["id"]).collect();
    assert_eq!(agent_ids, [&json!(kept_agent_id)]);
    let (configs_status, configs_body) = app
        .get(&configs_path(project_id, agent_id), ROOT_TOKEN)
        .await;
    assert_eq!(configs_status, StatusCode::NOT_FOUND);
    assert_eq!(configs_body, json!({"message": "404 Not found"}));
}

// The agent server's view

#[tokio::test]
async fn private_key_from_the_agent_server_route_signs_for_the_public_key() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let created = create_jwt_config(&app, project_id, agent_id).await;

    let (status, body) = receptive_agents(&app, Some(app.kas_jwt())).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let entry = &entries(&body)[0];
    let private_key = entry["jwt"]["private_key"]
        .as_str()
        .expect("private_key is a string");
    assert_eq!(
        body,
        json!({"agents": [{
            "id": agent_id,
            "url": JWT_URL,
            "ca_cert": null,
            "tls_host": null,
            "jwt": {"private_key": private_key},
            "mtls": null,
        }]})
    );
    let keys: Vec<&String> = entry.as_object().expect("entry object").keys().collect();
    assert_eq!(keys, ["id", "url", "ca_cert", "tls_host", "jwt", "mtls"]);
    assert_eq!(BASE64.decode(private_key).expect("base64 seed").len(), 32);
    assert_seed_signs_for(
        private_key,
        created["public_key"].as_str().expect("public key"),
    );
}

#[tokio::test]
async fn mtls_entries_carry_the_client_key_as_sent() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let certificate_authority = credentials(&rcgen::PKCS_ED25519);
    let new_config = NewConfig {
        ca_cert: Some(certificate_authority.cert_pem.clone()),
        tls_host: Some("agent.example.com".to_owned()),
        ..NewConfig::mtls("grpcs://agent.example.com:8443", &client)
    };
    let (status, created) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            new_config.json(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let (status, body) = receptive_agents(&app, Some(app.kas_jwt())).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"agents": [{
            "id": agent_id,
            "url": "grpcs://agent.example.com:8443",
            "ca_cert": certificate_authority.cert_pem,
            "tls_host": "agent.example.com",
            "jwt": null,
            "mtls": {"client_key": client.key_pem, "client_cert": client.cert_pem},
        }]})
    );
}

#[tokio::test]
async fn agent_server_route_without_a_valid_kas_jwt_is_unauthorized() {
    let (app, project_id, agent_id) = app_with_agent().await;
    create_jwt_config(&app, project_id, agent_id).await;

    let (missing_status, missing_body) = receptive_agents(&app, None).await;
    let (forged_status, forged_body) =
        receptive_agents(&app, Some(kas_jwt_signed_with(&[7; 32]))).await;
    let (garbage_status, garbage_body) = receptive_agents(&app, Some("not-a-jwt".to_owned())).await;

    for (status, body) in [
        (missing_status, missing_body),
        (forged_status, forged_body),
        (garbage_status, garbage_body),
    ] {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, json!({"message": "KAS JWT authentication invalid"}));
    }
}

#[tokio::test]
async fn agent_server_route_is_not_found_when_receptive_agents_are_disabled() {
    let app = TestApp::spawn_with(disable_receptive_agents).await;

    let (status, body) = receptive_agents(&app, Some(app.kas_jwt())).await;
    let grpc_result = app
        .grpc_internal(Some(app.kas_jwt()), None)
        .list_receptive_agents(pb::ListReceptiveAgentsRequest {})
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "404 Not Found"}));
    assert_eq!(
        grpc_error(grpc_result),
        (Code::NotFound, "404 Not Found".to_owned())
    );
}

#[tokio::test]
async fn grpc_list_receptive_agents_agrees_with_rest() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let mtls_agent_id = app.agent(project_id, "mtls-agent").await;
    let client = credentials(&rcgen::PKCS_ED25519);
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let (status, _) = app
        .post(
            &configs_path(project_id, mtls_agent_id),
            ROOT_TOKEN,
            NewConfig::mtls(JWT_URL, &client).json(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, rest_body) = receptive_agents(&app, Some(app.kas_jwt())).await;

    let response = app
        .grpc_internal(Some(app.kas_jwt()), None)
        .list_receptive_agents(pb::ListReceptiveAgentsRequest {})
        .await
        .expect("agent server lists")
        .into_inner();

    let grpc_body =
        json!({"agents": response.agents.iter().map(json_of_receptive_agent).collect::<Vec<_>>()});
    assert_eq!(grpc_body, rest_body);
    let jwt_entry = entries(&grpc_body)
        .iter()
        .find(|entry| entry["id"] == agent_id)
        .expect("JWT entry");
    assert_seed_signs_for(
        jwt_entry["jwt"]["private_key"]
            .as_str()
            .expect("private key"),
        created["public_key"].as_str().expect("public key"),
    );
}

#[tokio::test]
async fn grpc_list_receptive_agents_without_a_valid_kas_jwt_is_unauthenticated() {
    let app = TestApp::spawn().await;

    let missing = app
        .grpc_internal(None, None)
        .list_receptive_agents(pb::ListReceptiveAgentsRequest {})
        .await;
    let forged = app
        .grpc_internal(Some(kas_jwt_signed_with(&[7; 32])), None)
        .list_receptive_agents(pb::ListReceptiveAgentsRequest {})
        .await;

    for result in [missing, forged] {
        assert_eq!(
            grpc_error(result),
            (
                Code::Unauthenticated,
                "KAS JWT authentication invalid".to_owned()
            )
        );
    }
}

// Secrets at rest and restarts

#[tokio::test]
async fn private_keys_are_not_stored_in_clear() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let mtls_agent_id = app.agent(project_id, "mtls-agent").await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    create_jwt_config(&app, project_id, agent_id).await;
    let (status, _) = app
        .post(
            &configs_path(project_id, mtls_agent_id),
            ROOT_TOKEN,
            NewConfig::mtls(JWT_URL, &client).json(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, receptive) = receptive_agents(&app, Some(app.kas_jwt())).await;
    let seed_base64 = entries(&receptive)
        .iter()
        .find(|entry| entry["id"] == agent_id)
        .and_then(|entry| entry["jwt"]["private_key"].as_str())
        .expect("JWT entry")
        .to_owned();
    let seed = BASE64.decode(&seed_base64).expect("base64 seed");
    let data_dir = app.data_dir.clone();

    let _temp_dir = app.stop().await;

    let key_file_mode = std::fs::metadata(data_dir.join("encryption_key"))
        .expect("the encryption key is generated in the data dir")
        .permissions()
        .mode();
    assert_eq!(key_file_mode & 0o777, 0o600);
    let certificate_line = body_lines(&client.cert_pem)[0];
    assert!(
        data_dir_contains(&data_dir, certificate_line.as_bytes()).await,
        "the scan should find the public certificate, or it proves nothing"
    );
    for (form, encoded_seed) in encodings_of(&seed) {
        assert!(
            !data_dir_contains(&data_dir, &encoded_seed).await,
            "seed in clear as {form}"
        );
    }
    for (form, encoded_key) in encodings_of(&client.key_der) {
        assert!(
            !data_dir_contains(&data_dir, &encoded_key).await,
            "client key in clear as {form}"
        );
    }
    let key_pem_in_json = serde_json::to_string(&client.key_pem).expect("JSON string");
    assert!(!data_dir_contains(&data_dir, client.key_pem.as_bytes()).await);
    assert!(!data_dir_contains(&data_dir, key_pem_in_json.trim_matches('"').as_bytes()).await);
    for line in body_lines(&client.key_pem) {
        assert!(
            !data_dir_contains(&data_dir, line.as_bytes()).await,
            "client key PEM line in clear: {line}"
        );
    }
}

#[tokio::test]
async fn configuration_and_key_pair_survive_a_restart() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let mtls_agent_id = app.agent(project_id, "mtls-agent").await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let created = create_jwt_config(&app, project_id, agent_id).await;
    let (status, _) = app
        .post(
            &configs_path(project_id, mtls_agent_id),
            ROOT_TOKEN,
            NewConfig::mtls(JWT_URL, &client).json(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, receptive_before) = receptive_agents(&app, Some(app.kas_jwt())).await;
    let data_dir = app.data_dir.clone();
    let _temp_dir = app.stop().await;

    let app = TestApp::start(&data_dir, |_| {}).await;

    let (status, config) = app
        .get(
            &config_path(project_id, agent_id, config_id_of(&created)),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config, created);
    assert!(is_receptive(&app, project_id, agent_id).await);
    let (status, receptive_after) = receptive_agents(&app, Some(app.kas_jwt())).await;
    assert_eq!(status, StatusCode::OK, "{receptive_after}");
    assert_eq!(receptive_after, receptive_before);
    let jwt_entry = entries(&receptive_after)
        .iter()
        .find(|entry| entry["id"] == agent_id)
        .expect("JWT entry");
    assert_seed_signs_for(
        jwt_entry["jwt"]["private_key"]
            .as_str()
            .expect("private key"),
        created["public_key"].as_str().expect("public key"),
    );
    let mtls_entry = entries(&receptive_after)
        .iter()
        .find(|entry| entry["id"] == mtls_agent_id)
        .expect("mTLS entry");
    assert_eq!(mtls_entry["mtls"]["client_key"], client.key_pem);
    let (status, body) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            json!({"url": JWT_URL}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"message": ALREADY_EXISTS}));
}

// Concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_rest_creates_give_exactly_one_configuration() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let path = configs_path(project_id, agent_id);

    let results = futures::future::join_all(
        (0..50).map(|_| app.post(&path, ROOT_TOKEN, json!({"url": JWT_URL}))),
    )
    .await;

    let n_created = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(n_created, 1, "{results:?}");
    for (status, body) in results
        .iter()
        .filter(|(status, _)| *status != StatusCode::CREATED)
    {
        assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(*body, json!({"message": ALREADY_EXISTS}));
    }
    let (_, configs) = app.get(&path, ROOT_TOKEN).await;
    assert_eq!(configs.as_array().map(Vec::len), Some(1));
    let (_, receptive) = receptive_agents(&app, Some(app.kas_jwt())).await;
    assert_eq!(entries(&receptive).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_grpc_creates_give_exactly_one_configuration() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = app.grpc_url_configs(ROOT_TOKEN);

    let results = futures::future::join_all((0..20).map(|_| {
        let mut client = client.clone();
        async move {
            client
                .create_url_configuration(NewConfig::jwt(JWT_URL).request(project_id, agent_id))
                .await
        }
    }))
    .await;

    let n_created = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(n_created, 1, "{results:?}");
    for status in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), ALREADY_EXISTS);
    }
    let (_, configs) = app
        .get(&configs_path(project_id, agent_id), ROOT_TOKEN)
        .await;
    assert_eq!(configs.as_array().map(Vec::len), Some(1));
}

// gRPC twins

#[tokio::test]
async fn grpc_lifecycle_agrees_with_rest() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let mut client = app.grpc_url_configs(ROOT_TOKEN);
    let mut agents = app.grpc_agents(ROOT_TOKEN);
    let empty = client
        .list_url_configurations(pb::ListUrlConfigurationsRequest {
            project: project_id.to_string(),
            agent_id,
        })
        .await
        .expect("lists")
        .into_inner();

    let created = client
        .create_url_configuration(NewConfig::jwt(JWT_URL).request(project_id, agent_id))
        .await
        .expect("creates")
        .into_inner();

    assert!(empty.url_configurations.is_empty());
    assert_eq!(created.agent_id, agent_id);
    assert_eq!(created.url, JWT_URL);
    assert_eq!(created.public_key.as_deref().map(str::len), Some(44));
    assert_eq!(created.client_cert, None);
    assert_eq!(created.ca_cert, None);
    assert_eq!(created.tls_host, None);
    let (_, rest_config) = app
        .get(&config_path(project_id, agent_id, created.id), ROOT_TOKEN)
        .await;
    assert_eq!(rest_config, json_of_grpc(&created));
    let agent = agents
        .get_agent(pb::GetAgentRequest {
            project: project_id.to_string(),
            agent_id,
        })
        .await
        .expect("gets agent")
        .into_inner();
    assert!(agent.is_receptive);
    let listed = client
        .list_url_configurations(pb::ListUrlConfigurationsRequest {
            project: project_id.to_string(),
            agent_id,
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(listed.url_configurations, std::slice::from_ref(&created));
    let fetched = client
        .get_url_configuration(pb::GetUrlConfigurationRequest {
            project: project_id.to_string(),
            agent_id,
            url_configuration_id: created.id,
        })
        .await
        .expect("gets")
        .into_inner();
    assert_eq!(fetched, created);
    client
        .delete_url_configuration(pb::DeleteUrlConfigurationRequest {
            project: project_id.to_string(),
            agent_id,
            url_configuration_id: created.id,
            if_unmodified_since: None,
        })
        .await
        .expect("deletes");
    assert!(!is_receptive(&app, project_id, agent_id).await);
}

#[tokio::test]
async fn grpc_mtls_configuration_echoes_the_certificate_only() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let new_config = NewConfig {
        tls_host: Some("example.com".to_owned()),
        ..NewConfig::mtls(JWT_URL, &client)
    };

    let created = app
        .grpc_url_configs(ROOT_TOKEN)
        .create_url_configuration(new_config.request(project_id, agent_id))
        .await
        .expect("creates")
        .into_inner();

    assert_eq!(created.public_key, None);
    assert_eq!(
        created.client_cert.as_deref(),
        Some(client.cert_pem.as_str())
    );
    assert_eq!(created.tls_host.as_deref(), Some("example.com"));
    assert_key_absent(&json_of_grpc(&created), &client);
}

#[tokio::test]
async fn grpc_second_configuration_is_refused_like_rest() {
    let (app, project_id, agent_id) = app_with_agent().await;
    create_jwt_config(&app, project_id, agent_id).await;

    let result = app
        .grpc_url_configs(ROOT_TOKEN)
        .create_url_configuration(NewConfig::jwt(JWT_URL).request(project_id, agent_id))
        .await;

    assert_eq!(
        grpc_error(result),
        (Code::InvalidArgument, ALREADY_EXISTS.to_owned())
    );
}

#[tokio::test]
async fn grpc_lookups_fail_like_rest() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let config_id = config_id_of(&create_jwt_config(&app, project_id, agent_id).await);
    let mut client = app.grpc_url_configs(ROOT_TOKEN);

    let unknown_agent = grpc_errors_on_every_rpc(&app, ROOT_TOKEN, project_id, 999_999, 1).await;
    let unknown_project = grpc_errors_on_every_rpc(&app, ROOT_TOKEN, 999_999, agent_id, 1).await;
    let unknown_config_get = client
        .get_url_configuration(pb::GetUrlConfigurationRequest {
            project: project_id.to_string(),
            agent_id,
            url_configuration_id: config_id + 1000,
        })
        .await;
    let unknown_config_delete = client
        .delete_url_configuration(pb::DeleteUrlConfigurationRequest {
            project: project_id.to_string(),
            agent_id,
            url_configuration_id: config_id + 1000,
            if_unmodified_since: None,
        })
        .await;

    for (rpc, error) in unknown_agent {
        assert_eq!(error, (Code::NotFound, "404 Not found".to_owned()), "{rpc}");
    }
    for (rpc, error) in unknown_project {
        assert_eq!(
            error,
            (Code::NotFound, "404 Project Not Found".to_owned()),
            "{rpc}"
        );
    }
    assert_eq!(
        grpc_error(unknown_config_get),
        (Code::NotFound, "404 Not Found".to_owned())
    );
    assert_eq!(
        grpc_error(unknown_config_delete),
        (Code::NotFound, "404 Not Found".to_owned())
    );
}

#[tokio::test]
async fn grpc_delete_with_an_earlier_if_unmodified_since_is_a_failed_precondition() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let config_id = config_id_of(&create_jwt_config(&app, project_id, agent_id).await);

    let result = app
        .grpc_url_configs(ROOT_TOKEN)
        .delete_url_configuration(pb::DeleteUrlConfigurationRequest {
            project: project_id.to_string(),
            agent_id,
            url_configuration_id: config_id,
            if_unmodified_since: Some(prost_types::Timestamp {
                seconds: LONG_AGO_SECONDS,
                nanos: 0,
            }),
        })
        .await;

    assert_eq!(
        grpc_error(result),
        (
            Code::FailedPrecondition,
            "412 Precondition Failed".to_owned()
        )
    );
    assert!(is_receptive(&app, project_id, agent_id).await);
}

// Helpers

/// What a client sends to create a configuration; `None` leaves the parameter out.
#[derive(Debug, Clone, Default)]
struct NewConfig {
    url: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    ca_cert: Option<String>,
    tls_host: Option<String>,
}

/// A self-signed certificate and its PKCS#8 key, made with rcgen at test time.
struct Credentials {
    cert_pem: String,
    key_pem: String,
    key_der: Vec<u8>,
}

impl NewConfig {
    fn jwt(url: &str) -> NewConfig {
        NewConfig {
            url: Some(url.to_owned()),
            ..NewConfig::default()
        }
    }

    fn mtls(url: &str, credentials: &Credentials) -> NewConfig {
        NewConfig {
            url: Some(url.to_owned()),
            client_cert: Some(credentials.cert_pem.clone()),
            client_key: Some(credentials.key_pem.clone()),
            ..NewConfig::default()
        }
    }

    fn json(&self) -> Value {
        let mut body = serde_json::Map::new();
        for (key, value) in [
            ("url", &self.url),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
            ("ca_cert", &self.ca_cert),
            ("tls_host", &self.tls_host),
        ] {
            if let Some(value) = value {
                body.insert(key.to_owned(), json!(value));
            }
        }
        Value::Object(body)
    }

    fn request(&self, project_id: i64, agent_id: i64) -> pb::CreateUrlConfigurationRequest {
        pb::CreateUrlConfigurationRequest {
            project: project_id.to_string(),
            agent_id,
            url: self.url.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            ca_cert: self.ca_cert.clone(),
            tls_host: self.tls_host.clone(),
        }
    }
}

/// An instance with a project owned by root and one agent in it: (app, project id, agent id).
async fn app_with_agent() -> (TestApp, i64, i64) {
    app_with_agent_using(|_| {}).await
}

async fn app_with_agent_using(
    configure: impl FnOnce(&mut agentreg::config::Settings),
) -> (TestApp, i64, i64) {
    let app = TestApp::spawn_with(configure).await;
    let project_id = app.project(ROOT_TOKEN, "test").await;
    let agent_id = app.agent(project_id, "some-agent").await;
    (app, project_id, agent_id)
}

fn disable_receptive_agents(settings: &mut agentreg::config::Settings) {
    settings.receptive_agents_enabled = false;
}

fn configs_path(project_id: i64, agent_id: i64) -> String {
    format!("/projects/{project_id}/cluster_agents/{agent_id}/url_configurations")
}

fn config_path(project_id: i64, agent_id: i64, config_id: i64) -> String {
    format!("{}/{config_id}", configs_path(project_id, agent_id))
}

fn config_id_of(config: &Value) -> i64 {
    config["id"].as_i64().expect("configuration id")
}

/// Creates a JWT-mode configuration as root and returns it.
async fn create_jwt_config(app: &TestApp, project_id: i64, agent_id: i64) -> Value {
    let (status, config) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            json!({"url": JWT_URL}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{config}");
    config
}

async fn is_receptive(app: &TestApp, project_id: i64, agent_id: i64) -> bool {
    let (status, agent) = app
        .get(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}"),
            ROOT_TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{agent}");
    agent["is_receptive"]
        .as_bool()
        .expect("is_receptive is a boolean")
}

/// Calls list, get, create and delete, returning each route's name, status and body.
async fn rest_on_every_route(
    app: &TestApp,
    token: Option<&str>,
    project_id: i64,
    agent_id: i64,
    config_id: i64,
) -> Vec<(&'static str, StatusCode, Value)> {
    let list_path = configs_path(project_id, agent_id);
    let single_path = config_path(project_id, agent_id, config_id);
    let mut responses = Vec::new();
    for (route, method, path, body) in [
        ("list", Method::GET, &list_path, None),
        ("get", Method::GET, &single_path, None),
        (
            "create",
            Method::POST,
            &list_path,
            Some(json!({"url": JWT_URL})),
        ),
        ("delete", Method::DELETE, &single_path, None),
    ] {
        let (status, response_body) = app.call(method, path, token, body).await;
        responses.push((route, status, response_body));
    }
    responses
}

/// Calls the four URL-configuration RPCs, each expected to fail, and returns their errors.
async fn grpc_errors_on_every_rpc(
    app: &TestApp,
    token: &str,
    project_id: i64,
    agent_id: i64,
    config_id: i64,
) -> Vec<(&'static str, (Code, String))> {
    let mut client = app.grpc_url_configs(token);
    let project = project_id.to_string();
    let list = client
        .list_url_configurations(pb::ListUrlConfigurationsRequest {
            project: project.clone(),
            agent_id,
        })
        .await;
    let get = client
        .get_url_configuration(pb::GetUrlConfigurationRequest {
            project: project.clone(),
            agent_id,
            url_configuration_id: config_id,
        })
        .await;
    let create = client
        .create_url_configuration(NewConfig::jwt(JWT_URL).request(project_id, agent_id))
        .await;
    let delete = client
        .delete_url_configuration(pb::DeleteUrlConfigurationRequest {
            project,
            agent_id,
            url_configuration_id: config_id,
            if_unmodified_since: None,
        })
        .await;
    vec![
        ("ListUrlConfigurations", grpc_error(list)),
        ("GetUrlConfiguration", grpc_error(get)),
        ("CreateUrlConfiguration", grpc_error(create)),
        ("DeleteUrlConfiguration", grpc_error(delete)),
    ]
}

/// Sends `new_config` over REST and gRPC and checks that both refuse it with `message` and that
/// nothing was created.
async fn assert_rejected_alike(
    app: &TestApp,
    project_id: i64,
    agent_id: i64,
    new_config: &NewConfig,
    message: &str,
) {
    let (status, body) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            new_config.json(),
        )
        .await;
    let grpc_result = app
        .grpc_url_configs(ROOT_TOKEN)
        .create_url_configuration(new_config.request(project_id, agent_id))
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{new_config:?}");
    assert_eq!(body, json!({"message": message}), "{new_config:?}");
    assert_eq!(
        grpc_error(grpc_result),
        (Code::InvalidArgument, message.to_owned()),
        "{new_config:?}"
    );
    assert!(!is_receptive(app, project_id, agent_id).await);
}

/// GitLab's `400 Bad request - ["...", "..."]`: validation messages in Ruby array text.
fn validation_message(messages: &[&str]) -> String {
    let quoted: Vec<String> = messages
        .iter()
        .map(|message| format!("\"{message}\""))
        .collect();
    format!("400 Bad request - [{}]", quoted.join(", "))
}

/// A `grpc://` URL of exactly `length` characters (the host stays short; the path grows).
fn url_of_length(length: usize) -> String {
    let prefix = "grpc://agent.example.com/";
    format!("{prefix}{}", "a".repeat(length - prefix.len()))
}

fn credentials(algorithm: &'static rcgen::SignatureAlgorithm) -> Credentials {
    let key_pair = rcgen::KeyPair::generate_for(algorithm).expect("key pair");
    let mut params = rcgen::CertificateParams::new(vec!["agent.example.com".to_owned()])
        .expect("certificate parameters");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agent.example.com");
    let certificate = params
        .self_signed(&key_pair)
        .expect("self-signed certificate");
    Credentials {
        cert_pem: certificate.pem(),
        key_pem: key_pair.serialize_pem(),
        key_der: key_pair.serialize_der(),
    }
}

fn assert_config_keys(config: &Value) {
    let keys: Vec<&String> = config
        .as_object()
        .expect("configuration object")
        .keys()
        .collect();
    assert_eq!(keys, CONFIG_KEYS, "{config}");
}

/// The response names no `client_key` and contains no line of the key's PEM body.
fn assert_key_absent(response: &Value, credentials: &Credentials) {
    let text = response.to_string();
    assert!(!text.contains("client_key"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    for line in body_lines(&credentials.key_pem) {
        assert!(!text.contains(line), "key material in {text}");
    }
}

/// The lines of a PEM block between its BEGIN and END lines.
fn body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|line| !line.is_empty() && !line.starts_with("-----"))
        .collect()
}

/// Ways a store could write `secret` without encrypting it: raw, standard and URL-safe base64,
/// hex, and a JSON array of numbers.
fn encodings_of(secret: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let hex: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
    let json_array = serde_json::to_string(secret).expect("JSON array");
    vec![
        ("raw bytes", secret.to_vec()),
        ("standard base64", BASE64.encode(secret).into_bytes()),
        (
            "URL-safe base64",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(secret)
                .into_bytes(),
        ),
        ("hex", hex.into_bytes()),
        (
            "JSON array",
            json_array.trim_matches(['[', ']']).as_bytes().to_vec(),
        ),
    ]
}

/// Signs with the seed and verifies with the public key, both standard base64.
fn assert_seed_signs_for(seed_base64: &str, public_key_base64: &str) {
    let seed: [u8; 32] = BASE64
        .decode(seed_base64)
        .expect("base64 seed")
        .try_into()
        .expect("32-byte seed");
    let public_key: [u8; 32] = BASE64
        .decode(public_key_base64)
        .expect("base64 public key")
        .try_into()
        .expect("32-byte public key");
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let verifying_key =
        ed25519_dalek::VerifyingKey::from_bytes(&public_key).expect("valid Ed25519 public key");
    let message = b"agent server to receptive agent";

    let signature = signing_key.sign(message);

    assert_eq!(signing_key.verifying_key(), verifying_key);
    assert!(verifying_key.verify_strict(message, &signature).is_ok());
    assert!(
        verifying_key
            .verify(b"another message", &signature)
            .is_err()
    );
}

async fn receptive_agents(app: &TestApp, kas_jwt: Option<String>) -> (StatusCode, Value) {
    let builder = app
        .http
        .get(app.url("/internal/kubernetes/receptive_agents"));
    let builder = match kas_jwt {
        Some(jwt) => builder.header("Gitlab-Kas-Api-Request", jwt),
        None => builder,
    };
    read(builder.send().await.expect("request sent")).await
}

fn entries(receptive_agents: &Value) -> &Vec<Value> {
    receptive_agents["agents"]
        .as_array()
        .expect("agents is an array")
}

/// A gRPC configuration as the REST entity renders it, to compare the two edges.
fn json_of_grpc(config: &pb::UrlConfiguration) -> Value {
    json!({
        "id": config.id,
        "agent_id": config.agent_id,
        "url": config.url,
        "public_key": config.public_key,
        "client_cert": config.client_cert,
        "ca_cert": config.ca_cert,
        "tls_host": config.tls_host,
    })
}

/// A gRPC receptive agent as the REST route renders it.
fn json_of_receptive_agent(agent: &pb::ReceptiveAgent) -> Value {
    let (jwt, mtls) = match &agent.auth {
        Some(pb::receptive_agent::Auth::Jwt(jwt)) => {
            (json!({"private_key": jwt.private_key}), Value::Null)
        }
        Some(pb::receptive_agent::Auth::Mtls(mtls)) => (
            Value::Null,
            json!({"client_key": mtls.client_key, "client_cert": mtls.client_cert}),
        ),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": agent.id,
        "url": agent.url,
        "ca_cert": agent.ca_cert,
        "tls_host": agent.tls_host,
        "jwt": jwt,
        "mtls": mtls,
    })
}

// Certificates in base64 (issue 11): GitLab's parameter docs say "base64-encoded ... in PEM
// format" while its API page shows raw PEM; both are accepted, and responses keep PEM.

#[tokio::test]
async fn base64_encoded_pem_is_taken_as_pem_on_both_protocols_and_answered_in_pem() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let client = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let ca = credentials(&rcgen::PKCS_ECDSA_P256_SHA256);
    let encoded = NewConfig {
        client_cert: Some(BASE64.encode(&client.cert_pem)),
        client_key: Some(BASE64.encode(&client.key_pem)),
        ca_cert: Some(BASE64.encode(&ca.cert_pem)),
        ..NewConfig::mtls(JWT_URL, &client)
    };
    let second_agent = app.agent(project_id, "second").await;

    let (status, config) = app
        .post(
            &configs_path(project_id, agent_id),
            ROOT_TOKEN,
            encoded.json(),
        )
        .await;
    let grpc = app
        .grpc_url_configs(ROOT_TOKEN)
        .create_url_configuration(encoded.request(project_id, second_agent))
        .await
        .expect("creates")
        .into_inner();

    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_eq!(config["client_cert"], client.cert_pem);
    assert_eq!(config["ca_cert"], ca.cert_pem);
    assert_key_absent(&config, &client);
    assert_eq!(grpc.client_cert.as_deref(), Some(client.cert_pem.as_str()));
    assert_eq!(grpc.ca_cert.as_deref(), Some(ca.cert_pem.as_str()));
}

#[tokio::test]
async fn base64_of_something_other_than_pem_is_refused_with_the_usual_message() {
    let (app, project_id, agent_id) = app_with_agent().await;
    let new_config = NewConfig {
        ca_cert: Some(BASE64.encode("not a certificate")),
        ..NewConfig::jwt(JWT_URL)
    };

    assert_rejected_alike(
        &app,
        project_id,
        agent_id,
        &new_config,
        &validation_message(&["Ca cert must be a valid PEM certificate"]),
    )
    .await;
}
