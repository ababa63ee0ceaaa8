//! Operating the service: TLS, metrics, backups, body and authentication limits, file modes,
//! audit events of failed authentications, and bad input that must never cause a 5xx.

use crate::helpers::{ROOT_TOKEN, TestApp, backup_when_unlocked, grpc_error, read};
use agentreg::config::TlsFiles;
use agentreg::grpc::pb;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn port_of(base_url: &str) -> u16 {
    base_url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A CA and a `localhost` certificate it signed, written to `dir`; returns the CA's PEM.
pub(crate) fn write_tls_identity(dir: &std::path::Path) -> (String, TlsFiles) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "agentreg test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&files.cert, leaf.pem()).unwrap();
    std::fs::write(&files.key, leaf_key.serialize_pem()).unwrap();
    (ca_cert.pem(), files)
}

#[tokio::test]
async fn tls_serves_rest_and_grpc_to_a_client_that_trusts_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, files) = write_tls_identity(dir.path());
    let app = TestApp::spawn_with(|settings| settings.tls = Some(files)).await;
    let http_port = port_of(&app.base_url);
    let grpc_port = port_of(&app.grpc_addr);

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = client
        .get(format!("https://localhost:{http_port}/api/v4/user"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .send()
        .await
        .unwrap();
    let plaintext = reqwest::get(format!("http://localhost:{http_port}/api/v4/user")).await;
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
        .get(format!("https://localhost:{http_port}/api/v4/user"))
        .send()
        .await;
    let channel = tonic::transport::Channel::from_shared(format!("https://localhost:{grpc_port}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "agentreg.v1.AgentService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(read(response).await.1["username"], "root");
    assert!(plaintext.is_err() || plaintext.unwrap().status() != StatusCode::OK);
    assert!(
        untrusting.is_err(),
        "a client without the CA must not connect"
    );
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn calls_to_made_up_grpc_methods_share_one_metric_label() {
    let app = TestApp::spawn().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    for index in 0..20 {
        grpc.ready().await.unwrap();
        let path = format!("/agentreg.v1.AgentService/MadeUp{index}");
        let answer = grpc
            .unary::<pb::ListAgentsRequest, pb::ListAgentsResponse, _>(
                tonic::Request::new(pb::ListAgentsRequest::default()),
                path.parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        // Refused by the token check before any method is looked up.
        assert_eq!(answer.unwrap_err().code(), tonic::Code::Unauthenticated);
    }
    let known = app
        .grpc_agents(ROOT_TOKEN)
        .list_agents(pb::ListAgentsRequest {
            project: "999".to_owned(),
            page: None,
            keyset: None,
        })
        .await;
    assert_eq!(known.unwrap_err().code(), tonic::Code::NotFound);

    let text = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("MadeUp"), "{text}");
    assert!(
        text.contains(
            r#"agentreg_requests_total{protocol="grpc",route="unmatched",status="16"} 20"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"agentreg_requests_total{protocol="grpc",route="/agentreg.v1.AgentService/ListAgents",status="5"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_report_the_inventory() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "metrics").await;
    let agent_id = app.agent(project_id, "a").await;
    app.agent_token(project_id, agent_id, "t").await;
    let listed = app
        .grpc_agents(ROOT_TOKEN)
        .list_agents(pb::ListAgentsRequest {
            project: project_id.to_string(),
            page: None,
            keyset: None,
        })
        .await;
    assert!(listed.is_ok());
    let missing = app.get("/projects/999/cluster_agents", ROOT_TOKEN).await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);

    let response = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();

    assert!(text.contains(
        r#"agentreg_requests_total{protocol="rest",route="/api/v4/projects/{id}/cluster_agents",status="201"} 1"#
    ), "{text}");
    assert!(text.contains(
        r#"agentreg_requests_total{protocol="rest",route="/api/v4/projects/{id}/cluster_agents",status="404"} 1"#
    ));
    assert!(text.contains(
        r#"agentreg_requests_total{protocol="grpc",route="/agentreg.v1.AgentService/ListAgents",status="0"} 1"#
    ));
    assert!(text.contains("agentreg_request_duration_seconds_bucket{"));
    assert!(text.contains(
        r#"agentreg_request_duration_seconds_count{protocol="rest",route="/api/v4/projects/{id}/cluster_agents",status="201"} 1"#
    ), "{text}");
    assert!(text.contains("\nagentreg_agents 1\n"));
    assert!(text.contains("\nagentreg_active_agent_tokens 1\n"));
    assert!(text.contains("\nagentreg_url_configurations 0\n"));
    assert!(text.contains("agentreg_argon2_verifications_total"));
}

#[tokio::test]
async fn metrics_move_to_their_own_address_when_asked() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = probe.local_addr().unwrap();
    drop(probe);
    let app = TestApp::spawn_with(|settings| settings.metrics_addr = Some(metrics_addr)).await;

    let separate = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    let on_rest = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap();

    assert_eq!(separate.status(), StatusCode::OK);
    assert!(separate.text().await.unwrap().contains("agentreg_agents"));
    assert_eq!(
        read(on_rest).await,
        (StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}))
    );
}

#[tokio::test]
async fn an_online_snapshot_restores_every_record_identically() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "backup").await;
    let agent_id = app.agent(project_id, "a").await;
    let (_, secret) = app.agent_token(project_id, agent_id, "t").await;
    let (status, _) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}/url_configurations"),
            ROOT_TOKEN,
            json!({"url": "grpc://agent.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, developer) = app.user("dev").await;
    let refused = app
        .request(Method::GET, "/admin/snapshot", Some(&developer))
        .send()
        .await
        .unwrap();
    let snapshot = app
        .request(Method::GET, "/admin/snapshot", Some(ROOT_TOKEN))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let paths = [
        format!("/projects/{project_id}/cluster_agents"),
        format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
        format!("/projects/{project_id}/cluster_agents/{agent_id}/url_configurations"),
        format!("/projects/{project_id}/audit_events"),
    ];
    let mut before = Vec::new();
    for path in &paths {
        before.push(app.get(path, ROOT_TOKEN).await);
    }
    let keys_dir = app.data_dir.clone();
    let restored_dir = tempfile::tempdir().unwrap();
    let target = restored_dir.path().join("data");
    let snapshot_file = restored_dir.path().join("snapshot");
    std::fs::write(&snapshot_file, &snapshot).unwrap();

    let database = crate::helpers::test_database(&target).await;
    let key_file = keys_dir.join("encryption_key");
    let summary =
        agentreg::snapshots::restore(&snapshot_file, database.as_ref(), &target, Some(&key_file))
            .await
            .unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(
        keys_dir.join("encryption_key"),
        target.join("encryption_key"),
    )
    .unwrap();
    let restored = TestApp::start(&target, |_| {}).await;

    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(summary.n_entries > 0);
    for (path, expected) in paths.iter().zip(before) {
        assert_eq!(restored.get(path, ROOT_TOKEN).await, expected, "{path}");
    }
    let restored_data = restored.data_dir.clone();
    restored.stop().await;
    let backup_file = restored_dir.path().join("offline");
    backup_when_unlocked(database.as_ref(), &restored_data, &backup_file, None).await;
    // Downloading a snapshot is audited after it is taken, so the restored store, read only
    // since, backs up to the very same bytes.
    assert!(
        std::fs::read(&backup_file).unwrap() == snapshot.to_vec(),
        "the offline backup of the restored store differs from the online snapshot"
    );
    let restarted = TestApp::start(&restored_data, |_| {}).await;
    assert_eq!(restarted.agent_info(&secret).await.0, StatusCode::OK);
    drop(app);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "limits").await;
    let huge = "x".repeat(1024 * 1024 + 1);

    let (status, body) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents"),
            ROOT_TOKEN,
            json!({"name": huge}),
        )
        .await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, json!({"message": "413 Request Entity Too Large"}));
}

#[tokio::test]
async fn repeated_failed_authentications_are_throttled_but_verified_callers_are_not() {
    let app = TestApp::spawn_with(|settings| settings.auth_failures_per_minute = 3).await;
    assert_eq!(app.get("/user", ROOT_TOKEN).await.0, StatusCode::OK);
    // Well-formed, so that it counts; the same handle every time, so that it is one key.
    let wrong = format!("glpat-{}{}", "A".repeat(16), "b".repeat(43));
    for _ in 0..3 {
        assert_eq!(app.get("/user", &wrong).await.0, StatusCode::UNAUTHORIZED);
    }

    let throttled = app
        .request(Method::GET, "/user", Some(&wrong))
        .send()
        .await
        .unwrap();
    let retry_after = throttled.headers().get("retry-after").cloned();
    let (status, body) = read(throttled).await;
    let grpc = app
        .grpc_meta(&wrong)
        .get_current_user(pb::GetCurrentUserRequest {})
        .await;
    let verified = app.get("/user", ROOT_TOKEN).await;

    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body, json!({"message": "429 Too Many Requests"}));
    let seconds: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&seconds));
    assert_eq!(grpc_error(grpc).0, tonic::Code::ResourceExhausted);
    assert_eq!(verified.0, StatusCode::OK);
}

#[tokio::test]
async fn failed_authentications_are_audited_without_the_credential() {
    let app = TestApp::spawn().await;
    let wrong = "glpat-not-a-real-token-but-long-enough-xyz";
    assert_eq!(app.get("/user", wrong).await.0, StatusCode::UNAUTHORIZED);
    let (user_id, developer) = app.user("dev").await;

    let (status, events) = app.get("/audit_events", ROOT_TOKEN).await;
    let refused = app.get("/audit_events", &developer).await;

    assert_eq!(status, StatusCode::OK);
    let event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["details"]["event_name"] == "authentication_failed")
        .unwrap();
    assert_eq!(event["details"]["event_name"], "authentication_failed");
    assert_eq!(event["details"]["outcome"], "failure");
    assert_eq!(event["details"]["ip_address"], "127.0.0.1");
    assert!(!events.to_string().contains(wrong));
    assert_eq!(refused.0, StatusCode::FORBIDDEN);
    assert!(user_id > 0);
}

#[tokio::test]
async fn first_start_writes_a_private_root_token_and_private_secrets() {
    let app = TestApp::spawn_with(|settings| settings.root_token = None).await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

    let token = std::fs::read_to_string(app.data_dir.join("initial_root_token")).unwrap();
    let (status, user) = app.get("/user", token.trim()).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["username"], "root");
    assert_eq!(user["name"], "Administrator");
    assert!(token.starts_with("glpat-"));
    assert_eq!(mode(&app.data_dir), 0o700);
    assert_eq!(mode(&app.data_dir.join("initial_root_token")), 0o600);
    assert_eq!(mode(&app.data_dir.join("encryption_key")), 0o600);
}

#[tokio::test]
async fn bad_input_gets_gitlab_shaped_4xx_never_5xx() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "bad").await;
    let agents = format!("/projects/{project_id}/cluster_agents");
    let agent_id = app.agent(project_id, "a").await;

    let malformed = app
        .request(Method::POST, &agents, Some(ROOT_TOKEN))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let wrong_type = app
        .request(Method::POST, &agents, Some(ROOT_TOKEN))
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    let bad_utf8 = app
        .request(
            Method::GET,
            "/projects/%FF%FE/cluster_agents",
            Some(ROOT_TOKEN),
        )
        .send()
        .await
        .unwrap();
    let long_name = app
        .post(&agents, ROOT_TOKEN, json!({"name": "a".repeat(100_000)}))
        .await;
    let negative = app.get(&format!("{agents}/-1"), ROOT_TOKEN).await;
    let non_integer = app.get(&format!("{agents}/1.5"), ROOT_TOKEN).await;
    let huge_page = app
        .request(
            Method::GET,
            &format!("{agents}?per_page=1000000000000"),
            Some(ROOT_TOKEN),
        )
        .send()
        .await
        .unwrap();
    let unknown_route = app.get("/projects/1/nothing_here", ROOT_TOKEN).await;
    let unknown_method = app
        .call(
            Method::PATCH,
            &format!("{agents}/{agent_id}"),
            Some(ROOT_TOKEN),
            None,
        )
        .await;

    assert_eq!(
        read(malformed).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "message body does not match declared format"})
        )
    );
    assert_eq!(read(wrong_type).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(bad_utf8.status().is_client_error(), "{}", bad_utf8.status());
    assert_eq!(long_name.0, StatusCode::BAD_REQUEST);
    assert!(
        long_name.1["message"]
            .as_str()
            .unwrap()
            .contains("Name is too long (maximum is 63 characters)")
    );
    assert_eq!(
        negative,
        (StatusCode::NOT_FOUND, json!({"message": "404 Not found"}))
    );
    assert_eq!(
        non_integer,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "agent_id is invalid"})
        )
    );
    assert_eq!(huge_page.headers()["x-per-page"], "100");
    assert_eq!(huge_page.status(), StatusCode::OK);
    assert_eq!(
        unknown_route,
        (StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}))
    );
    assert_eq!(
        unknown_method,
        (StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}))
    );
}

#[tokio::test]
async fn grpc_reflection_v1_and_v1alpha_list_every_service_and_health_is_serving() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = TestApp::spawn().await;

    let v1_request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut v1_stream =
        v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone())
            .server_reflection_info(futures::stream::iter([v1_request]))
            .await
            .unwrap()
            .into_inner();
    let v1_reply = v1_stream.message().await.unwrap().unwrap();
    let alpha_request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut alpha_stream =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone())
            .server_reflection_info(futures::stream::iter([alpha_request]))
            .await
            .unwrap()
            .into_inner();
    let alpha_reply = alpha_stream.message().await.unwrap().unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(v1_list)) =
        v1_reply.message_response
    else {
        panic!("v1 reflection did not list services");
    };
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(
        alpha_list,
    )) = alpha_reply.message_response
    else {
        panic!("v1alpha reflection did not list services");
    };
    let v1_names: Vec<String> = v1_list.service.into_iter().map(|s| s.name).collect();
    let alpha_names: Vec<String> = alpha_list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "agentreg.v1.AgentService",
        "agentreg.v1.AgentTokenService",
        "agentreg.v1.AdminTokenService",
        "agentreg.v1.UrlConfigurationService",
        "agentreg.v1.ProjectService",
        "agentreg.v1.UserService",
        "agentreg.v1.MetaService",
        "agentreg.v1.InternalService",
        "agentreg.v1.AuditEventService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            v1_names.iter().any(|name| name == expected),
            "v1 lacks {expected}: {v1_names:?}"
        );
        assert!(
            alpha_names.iter().any(|name| name == expected),
            "v1alpha lacks {expected}"
        );
    }
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn audit_events_are_served_over_grpc_too() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "audited").await;
    app.agent(project_id, "a").await;
    let mut audit = pb::audit_event_service_client::AuditEventServiceClient::with_interceptor(
        app.channel.clone(),
        crate::helpers::WithToken::new(ROOT_TOKEN),
    );

    let (status, rest) = app
        .get(&format!("/projects/{project_id}/audit_events"), ROOT_TOKEN)
        .await;
    let grpc = audit
        .list_project_audit_events(pb::ListProjectAuditEventsRequest {
            project: project_id.to_string(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(status, StatusCode::OK);
    assert_eq!(rest[0]["details"]["event_name"], "cluster_agent_created");
    assert_eq!(grpc.events.len(), 1);
    assert_eq!(grpc.events[0].id, rest[0]["id"].as_i64().unwrap());
    let details: serde_json::Value = serde_json::from_str(&grpc.events[0].details_json).unwrap();
    assert_eq!(details, rest[0]["details"]);
    assert_eq!(grpc.page_info.unwrap().total, 1);
}

#[tokio::test]
async fn the_openapi_document_is_public_and_describes_the_agent_routes() {
    let app = TestApp::spawn().await;

    let (status, document) = app.call(Method::GET, "/openapi.json", None, None).await;

    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/v4/projects/{id}/cluster_agents",
        "/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens/{token_id}",
        "/api/v4/projects/{id}/cluster_agents/{agent_id}/url_configurations",
        "/api/v4/internal/agents/agentk/agent_info",
    ] {
        assert!(paths.contains_key(path), "{path} is not described");
    }
}

#[tokio::test]
async fn health_routes_answer_as_gitlabs_do_without_a_token() {
    let app = TestApp::spawn().await;
    let get = |path: &'static str| {
        let request = app.http.get(format!("{}{path}", app.base_url));
        async move { request.send().await.unwrap() }
    };

    let liveness = get("/-/liveness").await;
    let readiness = get("/-/readiness").await;
    let readiness_all = get("/-/readiness?all=1").await;
    let health = get("/-/health").await;

    assert_eq!(liveness.status(), StatusCode::OK);
    assert_eq!(
        liveness.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    assert_eq!(readiness.status(), StatusCode::OK);
    assert_eq!(
        readiness.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok", "master_check": [{"status": "ok"}]})
    );
    assert_eq!(
        readiness_all.json::<serde_json::Value>().await.unwrap()["db_check"],
        serde_json::json!([{"status": "ok"}])
    );
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "GitLab OK");
}
