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

#[tokio::test]
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

#[tokio::test]
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
