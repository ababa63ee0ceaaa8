//! Abuse by unauthenticated clients: memory held by gRPC streams, half-open and idle
//! connections, and the failed-authentication throttle under floods.

use crate::helpers::{KAS_SECRET, ROOT_TOKEN, TestApp, kas_jwt_signed_with};
use axum::http;
use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Resident memory of this process (the server runs in it), in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A TCP connection to `server` from another loopback address, so that the attacker's
/// per-address limits are not the legitimate client's.
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(server).await
}

fn http_addr(app: &TestApp) -> SocketAddr {
    app.base_url.trim_start_matches("http://").parse().unwrap()
}

/// Opens as many streams as the server allows on one h2c connection, each declaring a 4 MiB
/// message and sending as much of it as flow control lets through. Half carry a bogus token
/// (so they pass the credential check and meet the message-size limit), half carry none.
async fn hold_greedy_streams(
    server: SocketAddr,
    payload: Bytes,
    n_streams: usize,
) -> Vec<h2::client::ResponseFuture> {
    let Ok(tcp) = connect_from(Ipv4Addr::new(127, 0, 0, 3), server).await else {
        return Vec::new();
    };
    let Ok((mut client, connection)) = h2::client::handshake(tcp).await else {
        return Vec::new();
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut responses = Vec::new();
    for stream_idx in 0..n_streams {
        let ready = tokio::time::timeout(Duration::from_millis(500), client.clone().ready()).await;
        let Ok(Ok(ready)) = ready else {
            break;
        };
        client = ready;
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{server}/agentreg.v1.AgentService/ListAgents"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if stream_idx % 2 == 0 {
            request = request.header(
                "private-token",
                "glpat-bogusbogusbogusbogusbogusbogusbogusbogusbogusbogusbogus12",
            );
        }
        let Ok((response, mut body)) = client.send_request(request.body(()).unwrap(), false) else {
            break;
        };
        let length = u32::try_from(payload.len()).unwrap();
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&length.to_be_bytes());
        let _ = body.send_data(Bytes::from(prefix), false);
        let _ = body.send_data(payload.clone(), false);
        responses.push(response);
        // The send stream is kept alive by the connection; the body is never finished.
        std::mem::forget(body);
    }
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn greedy_grpc_streams_without_credentials_leave_memory_bounded() {
    let app = TestApp::spawn().await;
    let server: SocketAddr = app.grpc_addr.parse().unwrap();
    assert!(
        app.grpc_meta(ROOT_TOKEN)
            .get_current_user(agentreg::grpc::pb::GetCurrentUserRequest {})
            .await
            .is_ok()
    );
    let before = resident_bytes();
    let payload = Bytes::from(vec![7u8; 4 * 1024 * 1024]);

    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(hold_greedy_streams(server, payload.clone(), 200).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let legitimate = app
        .grpc_meta(ROOT_TOKEN)
        .get_current_user(agentreg::grpc::pb::GetCurrentUserRequest {})
        .await;
    let answered_in = started.elapsed();
    let growth = resident_bytes().saturating_sub(before);

    assert!(legitimate.is_ok(), "{legitimate:?}");
    assert!(answered_in < Duration::from_secs(2), "{answered_in:?}");
    assert!(
        growth < 200 * 1024 * 1024,
        "resident memory grew by {} MiB",
        growth / 1024 / 1024
    );
    assert!(held.iter().any(|streams| !streams.is_empty()));
}

#[tokio::test]
async fn oversized_grpc_messages_are_refused() {
    let app = TestApp::spawn().await;
    let huge_name = "x".repeat(128 * 1024);

    let result = app
        .grpc_agents(ROOT_TOKEN)
        .create_agent(agentreg::grpc::pb::CreateAgentRequest {
            project: "1".to_owned(),
            name: Some(huge_name),
        })
        .await;

    let status = result.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
}

#[tokio::test]
async fn grpc_calls_without_a_credential_are_refused_before_their_message_is_read() {
    let app = TestApp::spawn().await;
    let mut client =
        agentreg::grpc::pb::meta_service_client::MetaServiceClient::new(app.channel.clone());

    let status = client
        .get_current_user(agentreg::grpc::pb::GetCurrentUserRequest {})
        .await
        .unwrap_err();

    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "401 Unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_leave_room_for_a_legitimate_request() {
    let app = TestApp::spawn_with(|settings| {
        settings.connections.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    let server = http_addr(&app);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);

    let mut half_open = Vec::new();
    for _ in 0..2_000 {
        if let Ok(mut stream) = connect_from(attacker, server).await {
            let _ = stream
                .write_all(b"GET /api/v4/version HTTP/1.1\r\nHost: agentreg\r\n")
                .await;
            half_open.push(stream);
        }
    }
    let started = Instant::now();
    let (status, _) = app.get("/version", ROOT_TOKEN).await;
    let answered_in = started.elapsed();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        for stream in &mut half_open {
            let mut buffer = [0u8; 256];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    })
    .await;

    assert_eq!(status, StatusCode::OK);
    assert!(answered_in < Duration::from_secs(2), "{answered_in:?}");
    assert!(
        closed.is_ok(),
        "half-sent requests were still open after 30 s"
    );
}

#[tokio::test]
async fn connections_beyond_the_per_address_cap_are_closed_at_once() {
    let app = TestApp::spawn_with(|settings| {
        settings.connections.max_connections_per_address = 10;
    })
    .await;
    let server = http_addr(&app);
    let attacker = Ipv4Addr::new(127, 0, 0, 4);

    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from(attacker, server).await.unwrap());
    }
    let mut extra = connect_from(attacker, server).await.unwrap();
    let mut buffer = [0u8; 16];
    let refused = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buffer)).await;
    let (status, _) = app.get("/version", ROOT_TOKEN).await;

    assert!(matches!(refused, Ok(Ok(0) | Err(_))), "{refused:?}");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(held.len(), 10);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|settings| {
        settings.connections.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut silent = TcpStream::connect(http_addr(&app)).await.unwrap();

    let mut buffer = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer)).await;

    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
}

/// `agent_info` with a KAS JWT carrying `claims`, signed with the instance's secret.
async fn agent_info_with_claims(app: &TestApp, agent_token: &str, claims: &Value) -> StatusCode {
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(&KAS_SECRET),
    )
    .unwrap();
    app.http
        .get(app.url("/internal/agents/agentk/agent_info"))
        .header("Gitlab-Kas-Api-Request", jwt)
        .header("Gitlab-Agent-Api-Request", agent_token)
        .send()
        .await
        .unwrap()
        .status()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn kas_jwts_without_exp_long_lived_or_not_yet_valid_are_refused() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "jwt").await;
    let agent_id = app.agent(project_id, "agent").await;
    let (_, secret) = app.agent_token(project_id, agent_id, "token").await;
    let now = unix_now();
    let base = json!({"iss": "gitlab-kas", "aud": "gitlab", "iat": now});
    let with = |extra: Value| {
        let mut claims = base.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };

    let valid = agent_info_with_claims(&app, &secret, &with(json!({"exp": now + 5}))).await;
    let without_exp = agent_info_with_claims(&app, &secret, &base).await;
    let thirty_years = now + 30 * 365 * 24 * 3600;
    let long_lived =
        agent_info_with_claims(&app, &secret, &with(json!({"exp": thirty_years}))).await;
    let not_yet_valid = agent_info_with_claims(
        &app,
        &secret,
        &with(json!({"exp": now + 120, "nbf": now + 60})),
    )
    .await;
    let signed_by_helper = app.agent_info(&secret).await.0;

    assert_eq!(valid, StatusCode::OK);
    assert_eq!(without_exp, StatusCode::UNAUTHORIZED);
    assert_eq!(long_lived, StatusCode::UNAUTHORIZED);
    assert_eq!(not_yet_valid, StatusCode::UNAUTHORIZED);
    assert_eq!(signed_by_helper, StatusCode::OK);
    let _ = kas_jwt_signed_with;
}

/// A string of `n_chars` random URL-safe characters.
fn random_text(n_chars: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..n_chars)
        .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>() % 64)]))
        .collect()
}

fn bogus_agent_token() -> String {
    format!("glagent-{}{}", random_text(16), random_text(43))
}

/// A well-formed personal access token that reuses `real`'s handle with a wrong secret.
fn forged_pat(real: &str) -> String {
    format!("glpat-{}{}", &real[6..22], random_text(43))
}

/// A client whose connections come from `source` (another loopback address).
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .build()
        .unwrap()
}

#[tokio::test]
async fn bogus_agent_tokens_through_one_kas_address_do_not_lock_out_other_agents() {
    let app = TestApp::spawn().await;
    let project_id = app.project(ROOT_TOKEN, "kas").await;
    let agent_id = app.agent(project_id, "agent").await;
    let (_, secret) = app.agent_token(project_id, agent_id, "token").await;

    let mut bogus_statuses = Vec::new();
    for _ in 0..100 {
        bogus_statuses.push(app.agent_info(&bogus_agent_token()).await.0);
    }
    let (legitimate, body) = app.agent_info(&secret).await;

    assert!(
        bogus_statuses
            .iter()
            .all(|status| *status == StatusCode::UNAUTHORIZED)
    );
    assert_eq!(legitimate, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn one_agent_tokens_failures_throttle_that_token_only() {
    let app = TestApp::spawn_with(|settings| settings.auth_failures_per_minute = 3).await;
    let project_id = app.project(ROOT_TOKEN, "kas").await;
    let agent_id = app.agent(project_id, "agent").await;
    let (_, secret) = app.agent_token(project_id, agent_id, "token").await;
    let guessed = format!("{}{}", &secret[..24], random_text(43));

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.agent_info(&guessed).await.0);
    }
    let other = app.agent_info(&bogus_agent_token()).await.0;

    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(other, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn requests_without_a_credential_do_not_feed_the_throttle() {
    let app = TestApp::spawn_with(|settings| settings.auth_failures_per_minute = 3).await;
    let (_, token) = app.user("alice").await;

    for _ in 0..10 {
        let response = app
            .request(reqwest::Method::GET, "/user", None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let (status, _) = app.get("/user", &forged_pat(&token)).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pat_failures_behind_a_trusted_proxy_are_counted_per_forwarded_address() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth_failures_per_minute = 3;
        settings.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let (_, token) = app.user("alice").await;
    let from = |address: &'static str, token: String| {
        app.request(reqwest::Method::GET, "/user", Some(&token))
            .header("X-Forwarded-For", address)
            .send()
    };

    let mut attacker = Vec::new();
    for _ in 0..5 {
        attacker.push(
            from("198.51.100.7", forged_pat(&token))
                .await
                .unwrap()
                .status(),
        );
    }
    let legitimate = from("198.51.100.8", token.clone()).await.unwrap().status();

    assert_eq!(attacker[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(attacker[3..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    assert_eq!(legitimate, StatusCode::OK);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_dodge_the_throttle() {
    let app = TestApp::spawn_with(|settings| settings.auth_failures_per_minute = 3).await;
    let (_, token) = app.user("alice").await;

    let mut statuses = Vec::new();
    for attempt in 0..5 {
        let response = app
            .request(reqwest::Method::GET, "/user", Some(&forged_pat(&token)))
            .header("X-Forwarded-For", format!("198.51.100.{attempt}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }

    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_legitimate_first_login_stays_fast_under_concurrent_forgeries() {
    let app = TestApp::spawn_with(|settings| {
        settings.connections.max_connections_per_address = 2_000;
    })
    .await;
    let (_, victim) = app.user("victim").await;
    let (_, legitimate) = app.user("legitimate").await;
    let attacker = client_from(Ipv4Addr::new(127, 0, 0, 5));
    let elsewhere = client_from(Ipv4Addr::new(127, 0, 0, 6));

    let forgeries: Vec<_> = (0..400)
        .map(|_| {
            let request = attacker
                .get(app.url("/user"))
                .header("PRIVATE-TOKEN", forged_pat(&victim));
            tokio::spawn(async move { request.send().await.map(|response| response.status()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let login = elsewhere
        .get(app.url("/user"))
        .header("PRIVATE-TOKEN", &legitimate)
        .send()
        .await
        .unwrap();
    let answered_in = started.elapsed();
    let mut n_verified_failures = 0;
    for forgery in forgeries {
        if let Ok(Ok(StatusCode::UNAUTHORIZED)) = forgery.await {
            n_verified_failures += 1;
        }
    }

    let status = login.status();
    assert_eq!(status, StatusCode::OK, "{:?}", login.text().await);
    assert!(answered_in < Duration::from_secs(1), "{answered_in:?}");
    assert!(
        n_verified_failures <= 30,
        "{n_verified_failures} forgeries were verified"
    );
}

#[tokio::test]
async fn a_failure_flood_from_many_addresses_writes_few_audit_events() {
    let app = TestApp::spawn().await;
    let (_, token) = app.user("alice").await;
    let size_before = directory_bytes(&app.data_dir);
    let n_addresses = 100;
    let n_attempts = 25;

    let mut floods = Vec::new();
    for address_idx in 0..n_addresses {
        let client = client_from(Ipv4Addr::new(127, 0, 1, address_idx + 1));
        let url = app.url("/user");
        let token = token.clone();
        floods.push(tokio::spawn(async move {
            for _ in 0..n_attempts {
                let forged = format!("glpat-{}{}", random_text(16), random_text(43));
                let _ = client
                    .get(&url)
                    .header("PRIVATE-TOKEN", forged)
                    .send()
                    .await;
            }
            drop(token);
        }));
    }
    for flood in floods {
        flood.await.unwrap();
    }
    let growth = directory_bytes(&app.data_dir).saturating_sub(size_before);
    let (status, events) = app
        .get("/audit_events?per_page=100&page=3", ROOT_TOKEN)
        .await;

    assert_eq!(status, StatusCode::OK);
    // One event per address so far (the rest of each minute is one event when it ends).
    assert!(events.as_array().unwrap().is_empty(), "{events}");
    assert!(
        growth < 1024 * 1024,
        "the data directory grew by {growth} bytes"
    );
}

/// The bytes of every file under `dir`.
fn directory_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        total += if metadata.is_dir() {
            directory_bytes(&entry.path())
        } else {
            metadata.len()
        };
    }
    total
}

#[tokio::test]
async fn link_headers_use_https_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, files) = crate::operations::write_tls_identity(dir.path());
    let app = TestApp::spawn_with(|settings| settings.tls = Some(files)).await;
    let port = http_addr(&app).port();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();

    let base = format!("https://localhost:{port}/api/v4");
    let project: Value = client
        .post(format!("{base}/projects"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&json!({"name": "links"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agents = format!("{base}/projects/{}/cluster_agents", project["id"]);
    for name in ["one", "two"] {
        let created = client
            .post(&agents)
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }

    let response = client
        .get(format!("{agents}?per_page=1"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .send()
        .await
        .unwrap();

    let link = response.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.contains(&format!("<https://localhost:{port}/")),
        "{link}"
    );
}

#[tokio::test]
async fn forwarded_proto_is_believed_only_from_trusted_proxies() {
    let trusting = TestApp::spawn_with(|settings| {
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let untrusting = TestApp::spawn().await;
    let mut paths = Vec::new();
    for app in [&trusting, &untrusting] {
        let project_id = app.project(ROOT_TOKEN, "links").await;
        app.agent(project_id, "one").await;
        app.agent(project_id, "two").await;
        paths.push(format!("/projects/{project_id}/cluster_agents?per_page=1"));
    }
    let link = |app: &TestApp, path: &str| {
        app.request(reqwest::Method::GET, path, Some(ROOT_TOKEN))
            .header("X-Forwarded-Proto", "https")
            .send()
    };

    let trusted = link(&trusting, &paths[0]).await.unwrap();
    let untrusted = link(&untrusting, &paths[1]).await.unwrap();

    let trusted = trusted.headers()["link"].to_str().unwrap().to_owned();
    let untrusted = untrusted.headers()["link"].to_str().unwrap().to_owned();
    assert!(trusted.contains("<https://127.0.0.1:"), "{trusted}");
    assert!(untrusted.contains("<http://127.0.0.1:"), "{untrusted}");
}

#[tokio::test]
async fn a_project_description_over_2000_characters_is_refused() {
    let app = TestApp::spawn().await;

    let too_long = app
        .post(
            "/projects",
            ROOT_TOKEN,
            json!({"name": "long", "description": "x".repeat(2_001)}),
        )
        .await;
    let (status, _) = app
        .post(
            "/projects",
            ROOT_TOKEN,
            json!({"name": "fits", "description": "x".repeat(2_000)}),
        )
        .await;

    assert_eq!(
        too_long,
        (
            StatusCode::BAD_REQUEST,
            json!({"message": {"description": ["is too long (maximum is 2000 characters)"]}})
        )
    );
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_chosen_root_tokens_stored_handle_reveals_nothing_about_it() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/user", ROOT_TOKEN).await.0, StatusCode::OK);
    let legacy = agentreg_domain::tokens::personal_access_token_handle(ROOT_TOKEN);

    let stored = crate::helpers::data_dir_contains(&app.data_dir, legacy.as_str().as_bytes()).await;

    assert!(!stored, "the SHA-256 handle of the root token is stored");
}

#[tokio::test]
async fn a_snapshot_altered_without_the_instance_key_is_refused_and_nothing_is_written() {
    use sha2::Digest as _;
    let app = TestApp::spawn().await;
    app.user("alice").await;
    let file = app
        .request(reqwest::Method::GET, "/admin/snapshot", Some(ROOT_TOKEN))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    // The authenticated file is the snapshot, a marker and a 32-byte tag.
    let marker = b"AGENTREG-SNAPSHOT-HMAC-SHA256-V1";
    let snapshot = &file[..file.len() - marker.len() - 32];
    let mut body = snapshot[..snapshot.len() - 32].to_vec();
    let middle = body.len() / 2;
    body[middle] ^= 1;
    let digest = sha2::Sha256::digest(&body);
    let mut forged = body.clone();
    forged.extend_from_slice(&digest);
    forged.extend_from_slice(&file[file.len() - marker.len() - 32..]);
    let dir = tempfile::tempdir().unwrap();
    let key_file = app.data_dir.join("encryption_key");
    let mut outcomes = Vec::new();
    for (name, bytes) in [("forged", forged), ("unauthenticated", snapshot.to_vec())] {
        let input = dir.path().join(name);
        std::fs::write(&input, bytes).unwrap();
        let target = dir.path().join(format!("{name}-data"));
        let database = crate::helpers::test_database(&target).await;
        let outcome =
            agentreg::snapshots::restore(&input, database.as_ref(), &target, Some(&key_file)).await;
        outcomes.push((name, outcome.map(|_| ()), target.join("db").exists()));
    }
    let intact = dir.path().join("intact");
    std::fs::write(&intact, &file).unwrap();
    let intact_target = dir.path().join("intact-data");
    let database = crate::helpers::test_database(&intact_target).await;
    let restored =
        agentreg::snapshots::restore(&intact, database.as_ref(), &intact_target, Some(&key_file))
            .await;

    for (name, outcome, wrote) in outcomes {
        let error = outcome.expect_err(name);
        assert!(
            format!("{error:#}").contains("authentication tag"),
            "{name}: {error:#}"
        );
        assert!(!wrote, "{name}: a database was created");
    }
    assert!(restored.is_ok(), "{restored:?}");
}

#[tokio::test]
async fn a_read_api_token_cannot_download_the_snapshot() {
    let app = TestApp::spawn().await;
    let (status, token) = app
        .post(
            "/users/1/personal_access_tokens",
            ROOT_TOKEN,
            json!({"name": "reader", "scopes": ["read_api"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let response = app
        .request(
            reqwest::Method::GET,
            "/admin/snapshot",
            Some(token["token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn user_and_token_creation_and_snapshot_downloads_are_audited() {
    let app = TestApp::spawn().await;
    app.user("alice").await;
    let snapshot = app
        .request(reqwest::Method::GET, "/admin/snapshot", Some(ROOT_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(snapshot.status(), StatusCode::OK);

    let (status, events) = app.get("/audit_events", ROOT_TOKEN).await;

    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["details"]["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "snapshot_downloaded",
            "personal_access_token_created",
            "user_created"
        ]
    );
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["author_id"] == 1)
    );
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics_token");
    std::fs::write(&token_file, "scrape-secret-0123456789\n").unwrap();
    let app = TestApp::spawn_with(|settings| settings.metrics_token_file = Some(token_file)).await;
    let metrics = |token: Option<&str>| {
        let request = app.http.get(format!("{}/metrics", app.base_url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };

    let anonymous = metrics(None).await.unwrap().status();
    let wrong = metrics(Some("guess")).await.unwrap().status();
    let right = metrics(Some("scrape-secret-0123456789")).await.unwrap();

    assert_eq!(anonymous, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, StatusCode::UNAUTHORIZED);
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.text().await.unwrap().contains("agentreg_agents"));
}

#[tokio::test]
async fn instance_audit_events_past_their_retention_are_deleted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let app = TestApp::start(&data_dir, |_| {}).await;
    app.user("alice").await;
    let (_, before) = app.get("/audit_events", ROOT_TOKEN).await;
    app.stop().await;

    let restarted = TestApp::start(&data_dir, |settings| {
        settings.audit_retention = Some(Duration::from_millis(1));
    })
    .await;
    let mut after = Value::Null;
    for _ in 0..100 {
        after = restarted.get("/audit_events", ROOT_TOKEN).await.1;
        if after.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(before.as_array().unwrap().len(), 2);
    assert_eq!(after, json!([]));
}

/// Builds the application on `data_dir` as `TestApp::start` would, and returns the error.
async fn start_error(
    data_dir: &std::path::Path,
    encryption_key_file: Option<std::path::PathBuf>,
) -> String {
    let mut settings = agentreg::config::Settings::for_tests(data_dir);
    settings.kas_secret_file = Some(data_dir.with_extension("kas_secret"));
    settings.database = crate::helpers::test_database(data_dir).await;
    settings.encryption_key_file = encryption_key_file;
    for _ in 0..100 {
        match agentreg::startup::Application::build(settings.clone()).await {
            Ok(_) => return String::new(),
            Err(error) if crate::helpers::is_locked(&error) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return format!("{error:#}"),
        }
    }
    panic!("the data directory stayed locked")
}

#[tokio::test]
async fn a_missing_or_wrong_encryption_key_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let app = TestApp::start(&data_dir, |_| {}).await;
    let project_id = app.project(ROOT_TOKEN, "keys").await;
    let agent_id = app.agent(project_id, "receptive").await;
    let (status, _) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}/url_configurations"),
            ROOT_TOKEN,
            json!({"url": "grpc://agent.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.stop().await;
    let key_file = data_dir.join("encryption_key");
    let original_key = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();

    let missing = start_error(&data_dir, None).await;
    let generated_a_key = key_file.exists();
    let other_key = dir.path().join("other_key");
    std::fs::write(
        &other_key,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [3u8; 32]),
    )
    .unwrap();
    let wrong = start_error(&data_dir, Some(other_key.clone())).await;
    std::fs::write(&key_file, original_key).unwrap();
    let restarted = TestApp::start(&data_dir, |_| {}).await;

    assert!(missing.contains("encryption_key is missing"), "{missing}");
    assert!(!generated_a_key);
    assert_eq!(restarted.get("/user", ROOT_TOKEN).await.0, StatusCode::OK);
    assert!(
        wrong.contains("is not the key that sealed this data"),
        "{wrong}"
    );
    assert!(wrong.contains(&other_key.display().to_string()), "{wrong}");
}

#[tokio::test]
async fn another_key_is_refused_even_before_any_private_key_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let app = TestApp::start(&data_dir, |_| {}).await;
    let project_id = app.project(ROOT_TOKEN, "no-keys-yet").await;
    app.agent(project_id, "plain").await;
    app.stop().await;
    let other_key = dir.path().join("other_key");
    std::fs::write(
        &other_key,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [4u8; 32]),
    )
    .unwrap();

    let wrong = start_error(&data_dir, Some(other_key.clone())).await;
    let restarted = TestApp::start(&data_dir, |_| {}).await;

    assert!(
        wrong.contains("is not the key that sealed this data"),
        "{wrong}"
    );
    assert!(wrong.contains(&other_key.display().to_string()), "{wrong}");
    assert_eq!(restarted.get("/user", ROOT_TOKEN).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_times_out() {
    let app = TestApp::spawn_with(|settings| {
        settings.connections.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(http_addr(&app)).await.unwrap();
    let head = format!(
        "POST /api/v4/projects HTTP/1.1\r\nHost: agentreg\r\nPRIVATE-TOKEN: {ROOT_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();

    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    response.extend_from_slice(&buffer[..n]);
                    if response.windows(4).any(|window| window == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;

    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
}
