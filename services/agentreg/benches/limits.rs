//! How close agentreg runs to its frameworks' limits, run with
//! `cargo bench -p agentreg --bench limits`.
//!
//! In one process run it starts, on loopback:
//! - agentreg itself, in-process, on embedded sled in a temporary directory;
//! - a bare axum server that serves exactly the bytes agentreg answers for `GET
//!   /projects/:id/cluster_agents/:agent_id` and for agent_info, after comparing the request's
//!   credential headers with the expected values and nothing else;
//! - a bare tonic server whose `agentreg.v1.AgentService/GetAgent` answers the same `Agent`
//!   message agentreg answers, after the same header check.
//!
//! REST is driven by wrk (Debian's `wrk` package) when it is on the `PATH`, in a second process;
//! without it an in-process reqwest client is used and the output says so. gRPC is driven by a
//! tonic client in this process, over several HTTP/2 connections. Each round measures every
//! figure, with agentreg and its baseline in alternating order, and the output is the median of
//! the rounds and the ratios, because absolute numbers vary too much on shared machines:
//! - REST GET agent (cached personal access token) vs bare axum;
//! - gRPC GetAgent vs bare tonic;
//! - agent_info with a cached agent token vs bare axum;
//! - REST GET agent while 4 clients create and revoke tokens (argon2 saturated) vs idle, in
//!   requests per second and in p99 latency;
//! - durable registrations per second with 16 clients (wrk POSTing unique names through a Lua
//!   script) vs the disk's serial fsync rate, measured in the same directory as a loop of
//!   512-byte writes each followed by `fdatasync`.
//!
//! `BENCH_ROUNDS` (default 3), `BENCH_SECONDS` (default 3, per measurement) and
//! `BENCH_CONCURRENCY` (default 64) override the defaults. `BENCH_ONLY`, a comma-separated list
//! of figure names as printed (`RestGetAgent,BareAxumGetAgent`), measures only those, for
//! profiling one path under a long `BENCH_SECONDS`. `BENCH_ARGON2_NICE` runs agentreg with
//! that `--argon2-nice` instead of the default, to measure the storm's trade-off.
//!
//! agentreg runs as the binary does: with mimalloc, and a tracing subscriber at `info` without
//! colours (as when logging to a file or a pipe), writing to nowhere.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark binary"
)]

mod support;

use agentreg::config::Settings;
use agentreg::grpc::pb;
use agentreg::startup::Application;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use bytes::Bytes;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{kas_jwt, median};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};

/// The allocator of the agentreg binary, so that the service here runs as it does in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROOT_TOKEN: &str = "glpat-benchmark-root-token-0123456789";
/// HTTP/2 connections the gRPC clients share, as a service behind a few load balancer
/// connections would see.
const GRPC_CONNECTIONS: usize = 8;
/// Clients creating and revoking tokens during the argon2 storm.
const STORM_CLIENTS: usize = 4;
/// Clients registering agents in the durability measurement.
const REGISTRATION_CLIENTS: usize = 16;
/// wrk's script for registrations: each request POSTs a name no other request used (the
/// round, wrk's thread and a per-thread counter), so every answer must be a 201.
const REGISTER_LUA: &str = r#"
local threads = 0
function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end
function init(args)
  round = args[1]
  counter = 0
end
function request()
  counter = counter + 1
  local body = string.format('{"name":"registered-%s-%d-%d"}', round, thread_index, counter)
  return wrk.format("POST", nil, nil, body)
end
"#;

#[derive(Clone, Copy)]
struct Parameters {
    rounds: u64,
    duration: Duration,
    concurrency: usize,
}

/// One load measurement: throughput, and the 99th percentile latency when the load generator
/// reports it.
#[derive(Clone, Copy, Default)]
struct Measured {
    per_second: f64,
    p99_ms: f64,
}

impl Measured {
    /// Throughput and p99 of the latencies (in milliseconds) each client recorded since `started`.
    fn from_latencies(latencies: Vec<Vec<f64>>, started: Instant) -> Measured {
        let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
        all.sort_by(f64::total_cmp);
        Measured {
            per_second: all.len() as f64 / started.elapsed().as_secs_f64(),
            p99_ms: all.get(all.len() * 99 / 100).copied().unwrap_or(0.0),
        }
    }
}

/// The names of the figures, in the order they are printed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Figure {
    RestGetAgent,
    BareAxumGetAgent,
    GrpcGetAgent,
    BareTonicGetAgent,
    AgentInfo,
    BareAxumAgentInfo,
    GetAgentIdle,
    GetAgentStorm,
    Registrations,
    SerialFsync,
}

/// The running services and what the measurements send to them.
struct Bench {
    http: reqwest::Client,
    dir: tempfile::TempDir,
    agentreg_base: String,
    agentreg_grpc: String,
    bare_rest_base: String,
    bare_grpc: String,
    project_id: i64,
    agent_id: i64,
    agent_token: String,
    /// The agent server's JWT, minted afresh for each measurement because agentreg refuses one
    /// that lives more than five minutes; the bare axum server compares against the same value.
    kas_jwt: Arc<std::sync::RwLock<String>>,
    kas_secret: [u8; 32],
    /// One agent per storm client, each with room for its create-revoke cycle.
    storm_agents: Vec<i64>,
    wrk: bool,
    /// `BENCH_ONLY`: the figures to measure, all when empty.
    only: Vec<String>,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let parameters = Parameters {
        rounds: env_number("BENCH_ROUNDS", 3).max(1),
        duration: Duration::from_secs(env_number("BENCH_SECONDS", 3).max(1)),
        concurrency: env_number("BENCH_CONCURRENCY", 64).max(1) as usize,
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .with_ansi(false)
        .init();
    let bench = Bench::start().await;
    if !bench.wrk {
        println!("wrk not found on PATH: REST is driven by an in-process client (apt install wrk)");
    }
    let mut values: std::collections::BTreeMap<Figure, Vec<Measured>> = Default::default();
    for round in 0..parameters.rounds {
        let agentreg_first = round % 2 == 0;
        for (figure, measured) in bench.round(parameters, agentreg_first, round).await {
            values.entry(figure).or_default().push(measured);
        }
        println!("round {round} done");
    }
    let median = |figure: Figure| -> Measured {
        let measured = &values[&figure];
        Measured {
            per_second: median(&measured.iter().map(|m| m.per_second).collect::<Vec<_>>()),
            p99_ms: median(&measured.iter().map(|m| m.p99_ms).collect::<Vec<_>>()),
        }
    };
    println!(
        "\nmedians of {} alternating rounds, {} s per measurement, {} concurrent clients ({}):",
        parameters.rounds,
        parameters.duration.as_secs(),
        parameters.concurrency,
        if bench.wrk {
            "wrk"
        } else {
            "in-process client"
        },
    );
    println!("| figure | agentreg | baseline | ratio |\n|---|---|---|---|");
    let rows = [
        (
            "REST GET agent (cached PAT), req/s vs bare axum",
            Figure::RestGetAgent,
            Figure::BareAxumGetAgent,
        ),
        (
            "gRPC GetAgent, req/s vs bare tonic",
            Figure::GrpcGetAgent,
            Figure::BareTonicGetAgent,
        ),
        (
            "agent_info (cached token), req/s vs bare axum",
            Figure::AgentInfo,
            Figure::BareAxumAgentInfo,
        ),
        (
            "GET req/s while 4 clients create and revoke tokens vs idle",
            Figure::GetAgentStorm,
            Figure::GetAgentIdle,
        ),
        (
            "durable registrations/s with 16 clients vs serial fsync/s",
            Figure::Registrations,
            Figure::SerialFsync,
        ),
    ];
    for (name, figure, baseline) in rows {
        if !values.contains_key(&figure) || !values.contains_key(&baseline) {
            continue;
        }
        let (value, base) = (median(figure).per_second, median(baseline).per_second);
        println!("| {name} | {value:.0} | {base:.0} | {:.2}x |", value / base);
    }
    if bench.wrk
        && values.contains_key(&Figure::GetAgentStorm)
        && values.contains_key(&Figure::GetAgentIdle)
    {
        let (storm, idle) = (median(Figure::GetAgentStorm), median(Figure::GetAgentIdle));
        println!(
            "| GET p99 while argon2 is saturated vs idle p99 | {:.2} ms | {:.2} ms | {:.2}x |",
            storm.p99_ms,
            idle.p99_ms,
            storm.p99_ms / idle.p99_ms
        );
    }
}

impl Bench {
    async fn start() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let kas_file = dir.path().join("kas_secret");
        let kas_secret = [7u8; 32];
        std::fs::write(
            &kas_file,
            base64::engine::general_purpose::STANDARD.encode(kas_secret),
        )
        .unwrap();
        let mut settings = Settings::for_tests(&dir.path().join("data"));
        settings.root_token = Some(ROOT_TOKEN.to_owned().into());
        settings.kas_secret_file = Some(PathBuf::from(&kas_file));
        if let Ok(nice) = std::env::var("BENCH_ARGON2_NICE") {
            settings.argon2_nice = nice.parse().expect("BENCH_ARGON2_NICE is idle or 0 to 19");
        }
        let application = Application::build(settings).await.unwrap();
        let agentreg_base = format!("http://{}/api/v4", application.http_addr().unwrap());
        let agentreg_grpc = format!("http://{}", application.grpc_addr().unwrap());
        tokio::spawn(application.run_until(std::future::pending()));

        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let project = post(&http, &format!("{agentreg_base}/projects"), "bench").await;
        let project_id = project["id"].as_i64().unwrap();
        let agents = format!("{agentreg_base}/projects/{project_id}/cluster_agents");
        let agent = post(&http, &agents, "measured").await;
        let agent_id = agent["id"].as_i64().unwrap();
        let token = post(&http, &format!("{agents}/{agent_id}/tokens"), "measured").await;
        let agent_token = token["token"].as_str().unwrap().to_owned();
        let mut storm_agents = Vec::new();
        for client in 0..STORM_CLIENTS {
            let agent = post(&http, &agents, &format!("storm-{client}")).await;
            storm_agents.push(agent["id"].as_i64().unwrap());
        }
        let kas_jwt = Arc::new(std::sync::RwLock::new(kas_jwt(&kas_secret)));
        let current_jwt = kas_jwt.read().unwrap().clone();

        // What agentreg answers, so that the baselines serve the same bytes.
        let get_agent_body = get_bytes(
            http.get(format!("{agents}/{agent_id}"))
                .header("PRIVATE-TOKEN", ROOT_TOKEN),
        )
        .await;
        let agent_info_body = get_bytes(
            http.get(format!("{agentreg_base}/internal/agents/agentk/agent_info"))
                .header("Gitlab-Kas-Api-Request", &current_jwt)
                .header("Gitlab-Agent-Api-Request", &agent_token),
        )
        .await;
        let mut client = connect_grpc(&agentreg_grpc).await;
        let agent_message = client
            .get_agent(get_agent_request(project_id, agent_id))
            .await
            .unwrap()
            .into_inner();

        let bare_rest_base = serve_bare_axum(
            get_agent_body,
            agent_info_body,
            kas_jwt.clone(),
            agent_token.clone(),
        )
        .await;
        let bare_grpc = serve_bare_tonic(agent_message).await;
        let wrk = std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok();
        Bench {
            http,
            dir,
            agentreg_base,
            agentreg_grpc,
            bare_rest_base,
            bare_grpc,
            project_id,
            agent_id,
            agent_token,
            kas_jwt,
            kas_secret,
            storm_agents,
            wrk,
            only: std::env::var("BENCH_ONLY")
                .unwrap_or_default()
                .split(',')
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Every figure once; each agentreg figure next to its baseline, in the given order.
    async fn round(
        &self,
        parameters: Parameters,
        agentreg_first: bool,
        round: u64,
    ) -> Vec<(Figure, Measured)> {
        let mut out = Vec::new();
        let pairs = [
            (Figure::RestGetAgent, Figure::BareAxumGetAgent),
            (Figure::GrpcGetAgent, Figure::BareTonicGetAgent),
            (Figure::AgentInfo, Figure::BareAxumAgentInfo),
            (Figure::GetAgentStorm, Figure::GetAgentIdle),
            (Figure::Registrations, Figure::SerialFsync),
        ];
        for (measured, baseline) in pairs {
            let order = if agentreg_first {
                [measured, baseline]
            } else {
                [baseline, measured]
            };
            for figure in order {
                if !self.only.is_empty() && !self.only.contains(&format!("{figure:?}")) {
                    continue;
                }
                let value = self.measure(figure, parameters, round).await;
                println!(
                    "  {figure:?}: {:.0}/s{}",
                    value.per_second,
                    if value.p99_ms > 0.0 {
                        format!(", p99 {:.2} ms", value.p99_ms)
                    } else {
                        String::new()
                    }
                );
                out.push((figure, value));
            }
        }
        out
    }

    async fn measure(&self, figure: Figure, parameters: Parameters, round: u64) -> Measured {
        let get_agent_path = format!(
            "/projects/{}/cluster_agents/{}",
            self.project_id, self.agent_id
        );
        let pat = [("PRIVATE-TOKEN", ROOT_TOKEN)];
        let jwt = kas_jwt(&self.kas_secret);
        self.kas_jwt.write().unwrap().clone_from(&jwt);
        let agent_headers = [
            ("Gitlab-Kas-Api-Request", jwt.as_str()),
            ("Gitlab-Agent-Api-Request", self.agent_token.as_str()),
        ];
        let agent_info_path = "/internal/agents/agentk/agent_info";
        match figure {
            Figure::RestGetAgent | Figure::GetAgentIdle => {
                let url = format!("{}{get_agent_path}", self.agentreg_base);
                self.rest_load(&url, &pat, parameters).await
            }
            Figure::BareAxumGetAgent => {
                let url = format!("{}{get_agent_path}", self.bare_rest_base);
                self.rest_load(&url, &pat, parameters).await
            }
            Figure::AgentInfo => {
                let url = format!("{}{agent_info_path}", self.agentreg_base);
                self.rest_load(&url, &agent_headers, parameters).await
            }
            Figure::BareAxumAgentInfo => {
                let url = format!("{}{agent_info_path}", self.bare_rest_base);
                self.rest_load(&url, &agent_headers, parameters).await
            }
            Figure::GrpcGetAgent => {
                grpc_load(
                    &self.agentreg_grpc,
                    self.project_id,
                    self.agent_id,
                    parameters,
                )
                .await
            }
            Figure::BareTonicGetAgent => {
                grpc_load(&self.bare_grpc, self.project_id, self.agent_id, parameters).await
            }
            Figure::GetAgentStorm => {
                let stop = Arc::new(AtomicBool::new(false));
                let storms: Vec<_> = self
                    .storm_agents
                    .iter()
                    .map(|agent_id| {
                        tokio::spawn(token_storm(
                            self.http.clone(),
                            format!(
                                "{}/projects/{}/cluster_agents/{agent_id}/tokens",
                                self.agentreg_base, self.project_id
                            ),
                            stop.clone(),
                        ))
                    })
                    .collect();
                // Let the storm fill the argon2 queue first.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let url = format!("{}{get_agent_path}", self.agentreg_base);
                let measured = self.rest_load(&url, &pat, parameters).await;
                stop.store(true, Ordering::Relaxed);
                let mut cycles = 0;
                for storm in storms {
                    cycles += storm.await.unwrap();
                }
                println!("  (storm: {cycles} token create+revoke cycles)");
                measured
            }
            Figure::Registrations => {
                let url = format!(
                    "{}/projects/{}/cluster_agents",
                    self.agentreg_base, self.project_id
                );
                if self.wrk {
                    let script = self.dir.path().join("register.lua");
                    std::fs::write(&script, REGISTER_LUA).unwrap();
                    let headers = vec![
                        format!("PRIVATE-TOKEN: {ROOT_TOKEN}"),
                        "Content-Type: application/json".to_owned(),
                    ];
                    let load = Parameters {
                        concurrency: REGISTRATION_CLIENTS,
                        ..parameters
                    };
                    let script = Some((script, round.to_string()));
                    tokio::task::spawn_blocking(move || wrk(&url, &headers, load, script))
                        .await
                        .unwrap()
                } else {
                    registrations(&self.http, &url, parameters.duration, round).await
                }
            }
            Figure::SerialFsync => {
                let path = self.dir.path().join("fsync-probe");
                let duration = parameters.duration;
                tokio::task::spawn_blocking(move || serial_fsync(&path, duration))
                    .await
                    .unwrap()
            }
        }
    }

    async fn rest_load(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        parameters: Parameters,
    ) -> Measured {
        if self.wrk {
            let url = url.to_owned();
            let headers: Vec<String> = headers
                .iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect();
            tokio::task::spawn_blocking(move || wrk(&url, &headers, parameters, None))
                .await
                .unwrap()
        } else {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect();
            reqwest_load(&self.http, url, &headers, parameters).await
        }
    }
}

/// Runs wrk with two threads and parses its requests per second and 99th percentile; with a
/// script, wrk runs it with the one argument given.
fn wrk(
    url: &str,
    headers: &[String],
    parameters: Parameters,
    script: Option<(PathBuf, String)>,
) -> Measured {
    let mut command = std::process::Command::new("wrk");
    command
        .arg("-t2")
        .arg(format!("-c{}", parameters.concurrency))
        .arg(format!("-d{}s", parameters.duration.as_secs()))
        .arg("--latency");
    for header in headers {
        command.arg("-H").arg(header);
    }
    if let Some((script, _)) = &script {
        command.arg("-s").arg(script);
    }
    command.arg(url);
    if let Some((_, argument)) = &script {
        command.arg("--").arg(argument);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "{url} answered errors under load: {text}"
    );
    let per_second = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output: {text}"));
    let p99_ms = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("99%"))
        .map(|value| wrk_duration_ms(value.trim()))
        .unwrap_or_else(|| panic!("no 99% latency in wrk output: {text}"));
    Measured { per_second, p99_ms }
}

/// A wrk duration such as `812.00us`, `2.31ms` or `1.02s`, in milliseconds.
fn wrk_duration_ms(text: &str) -> f64 {
    let (number, scale) = if let Some(number) = text.strip_suffix("us") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix("m") {
        (number, 60_000.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap() * scale
}

/// The in-process fallback when wrk is missing: `concurrency` reqwest clients in a loop.
async fn reqwest_load(
    http: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    parameters: Parameters,
) -> Measured {
    let started = Instant::now();
    let latencies = futures::future::join_all((0..parameters.concurrency).map(|_| async {
        let mut latencies = Vec::new();
        while started.elapsed() < parameters.duration {
            let sent = Instant::now();
            let mut request = http.get(url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            response.bytes().await.unwrap();
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        latencies
    }))
    .await;
    Measured::from_latencies(latencies, started)
}

async fn connect_grpc(
    url: &str,
) -> pb::agent_service_client::AgentServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::agent_service_client::AgentServiceClient::new(channel)
}

fn get_agent_request(project_id: i64, agent_id: i64) -> tonic::Request<pb::GetAgentRequest> {
    let mut request = tonic::Request::new(pb::GetAgentRequest {
        project: project_id.to_string(),
        agent_id,
    });
    request
        .metadata_mut()
        .insert("private-token", ROOT_TOKEN.parse().unwrap());
    request
}

/// `concurrency` tonic clients over `GRPC_CONNECTIONS` connections, calling GetAgent in a loop.
async fn grpc_load(url: &str, project_id: i64, agent_id: i64, parameters: Parameters) -> Measured {
    let mut clients = Vec::new();
    for _ in 0..GRPC_CONNECTIONS {
        clients.push(connect_grpc(url).await);
    }
    let started = Instant::now();
    let latencies = futures::future::join_all((0..parameters.concurrency).map(|index| {
        let mut client = clients[index % GRPC_CONNECTIONS].clone();
        async move {
            let mut latencies = Vec::new();
            while started.elapsed() < parameters.duration {
                let sent = Instant::now();
                client
                    .get_agent(get_agent_request(project_id, agent_id))
                    .await
                    .unwrap();
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }
    }))
    .await;
    Measured::from_latencies(latencies, started)
}

/// Creates and revokes tokens on one agent until told to stop; returns the cycles done. Each
/// create pays one argon2id hash. Refusals for a full argon2 queue (503) are part of the storm.
async fn token_storm(http: reqwest::Client, tokens_url: String, stop: Arc<AtomicBool>) -> u64 {
    let mut cycles = 0;
    while !stop.load(Ordering::Relaxed) {
        let response = http
            .post(&tokens_url)
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .json(&serde_json::json!({"name": "storm"}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(response.status(), StatusCode::CREATED, "{tokens_url}");
        let token: serde_json::Value = response.json().await.unwrap();
        let token_id = token["id"].as_i64().unwrap();
        let response = http
            .delete(format!("{tokens_url}/{token_id}"))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        cycles += 1;
    }
    cycles
}

/// Durable registrations per second without wrk: `REGISTRATION_CLIENTS` in-process clients each
/// registering agents one after another; every 201 means the agent was flushed to disk.
async fn registrations(
    http: &reqwest::Client,
    url: &str,
    duration: Duration,
    round: u64,
) -> Measured {
    let started = Instant::now();
    let n_registered = AtomicU64::new(0);
    let n_registered = &n_registered;
    futures::future::join_all((0..REGISTRATION_CLIENTS).map(|_| async move {
        while started.elapsed() < duration {
            let index = n_registered.fetch_add(1, Ordering::Relaxed);
            let response = http
                .post(url)
                .header("PRIVATE-TOKEN", ROOT_TOKEN)
                .json(&serde_json::json!({"name": format!("registered-{round}-{index}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }
    }))
    .await;
    Measured {
        per_second: n_registered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        p99_ms: 0.0,
    }
}

/// The disk's serial durable write rate: 512-byte writes in place in a preallocated file, each
/// followed by `fdatasync`, the cheapest durable write there is (no size or block changes).
fn serial_fsync(path: &Path, duration: Duration) -> Measured {
    const BLOCKS: u64 = 4096;
    let mut file = std::fs::File::create(path).unwrap();
    let block = [0x5au8; 512];
    for _ in 0..BLOCKS {
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    let started = Instant::now();
    let mut n_synced = 0u64;
    while started.elapsed() < duration {
        file.write_all_at(&block, (n_synced % BLOCKS) * 512)
            .unwrap();
        file.sync_data().unwrap();
        n_synced += 1;
    }
    std::fs::remove_file(path).unwrap();
    Measured {
        per_second: n_synced as f64 / started.elapsed().as_secs_f64(),
        p99_ms: 0.0,
    }
}

/// A bare axum server answering the two routes with fixed bytes after a header check; returns its
/// REST base URL.
async fn serve_bare_axum(
    get_agent_body: Bytes,
    agent_info_body: Bytes,
    kas_jwt: Arc<std::sync::RwLock<String>>,
    agent_token: String,
) -> String {
    let get_agent = move |headers: HeaderMap| {
        let body = get_agent_body.clone();
        async move {
            if headers.get("private-token").map(|v| v.as_bytes()) != Some(ROOT_TOKEN.as_bytes()) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::CONTENT_TYPE, "application/json")],
                    Bytes::new(),
                );
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    };
    let agent_info = move |headers: HeaderMap| {
        let body = agent_info_body.clone();
        let (kas_jwt, agent_token) = (kas_jwt.clone(), agent_token.clone());
        async move {
            let kas = headers.get("gitlab-kas-api-request").map(|v| v.as_bytes());
            let agent = headers
                .get("gitlab-agent-api-request")
                .map(|v| v.as_bytes());
            let kas_matches = kas == Some(kas_jwt.read().unwrap().as_bytes());
            if !kas_matches || agent != Some(agent_token.as_bytes()) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::CONTENT_TYPE, "application/json")],
                    Bytes::new(),
                );
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    };
    let router = axum::Router::new()
        .route(
            "/api/v4/projects/{project_id}/cluster_agents/{agent_id}",
            axum::routing::get(get_agent),
        )
        .route(
            "/api/v4/internal/agents/agentk/agent_info",
            axum::routing::get(agent_info),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v4", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// A bare tonic server with one method, `agentreg.v1.AgentService/GetAgent`, answering `agent`
/// after a header check; returns its URL.
async fn serve_bare_tonic(agent: pb::Agent) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(BareAgentService { agent })
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    url
}

#[derive(Clone)]
struct BareAgentService {
    agent: pb::Agent,
}

impl tonic::server::NamedService for BareAgentService {
    const NAME: &'static str = "agentreg.v1.AgentService";
}

impl<B> Service<http::Request<B>> for BareAgentService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let agent = self.agent.clone();
        Box::pin(async move {
            if request.uri().path() != "/agentreg.v1.AgentService/GetAgent" {
                return Ok(tonic::Status::unimplemented("").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(GetAgent(agent), request).await)
        })
    }
}

struct GetAgent(pb::Agent);

impl tonic::server::UnaryService<pb::GetAgentRequest> for GetAgent {
    type Response = pb::Agent;
    type Future = std::future::Ready<Result<tonic::Response<pb::Agent>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<pb::GetAgentRequest>) -> Self::Future {
        let token = request.metadata().get("private-token");
        if token.map(|v| v.as_bytes()) != Some(ROOT_TOKEN.as_bytes()) {
            return std::future::ready(Err(tonic::Status::unauthenticated("")));
        }
        std::future::ready(Ok(tonic::Response::new(self.0.clone())))
    }
}

async fn post(http: &reqwest::Client, url: &str, name: &str) -> serde_json::Value {
    let response = http
        .post(url)
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&serde_json::json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn get_bytes(request: reqwest::RequestBuilder) -> Bytes {
    let response = request.send().await.unwrap();
    let (status, url) = (response.status(), response.url().clone());
    let body = response.bytes().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {body:?}");
    body
}
