//! Load benchmark of agent authentication (`GET /api/v4/internal/agents/agentk/agent_info`),
//! run with `cargo bench -p agentreg --bench agent_info`.
//!
//! It starts the real service in-process on loopback and, in each round, measures with a fixed
//! number of concurrent clients:
//! - `baseline`: `GET /api/v4/version` with a cached personal access token (a trivial route);
//! - `cached`: agent_info with one agent token that was already verified once;
//! - `uncached`: agent_info where every request presents a token never seen before, so each
//!   pays one argon2id verification (m=19456 KiB, t=2, p=1).
//!
//! It prints the median requests per second over the rounds and the ratios to the baseline from
//! the same run, because machines here are noisy. `BENCH_ROUNDS`, `BENCH_SECONDS` and
//! `BENCH_CONCURRENCY` override the defaults.
//!
//! Then it compares the storage backends. With `AGENTREG_BENCH_DATABASE_URL` set to an admin URL
//! (for example `postgres://postgres@127.0.0.1:5432/postgres`) it creates a fresh database there,
//! starts a second service on it, and drops the database at the end; without it PostgreSQL is
//! skipped and only sled is measured. Each backend round measures, with the same clients:
//! - `GET agent`: `GET /api/v4/projects/:id/cluster_agents/:agent_id` with a cached personal
//!   access token;
//! - `agent_info`: the `cached` case above;
//! - `registrations`: `POST /api/v4/projects/:id/cluster_agents`, each 201 being durable (sled
//!   flushes its log, PostgreSQL commits, before the answer).
//!
//! The backends take turns within each round, in alternating order, and it prints the medians and
//! the ratios PostgreSQL / sled. `BENCH_BACKEND_ROUNDS` (default 3) and `BENCH_BACKEND_SECONDS`
//! (default 2, per measurement) override the defaults.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark binary"
)]

mod support;

use agentreg::config::{
    DEFAULT_DATABASE_POOL_SIZE, DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS, DatabaseSettings, Settings,
};
use agentreg::startup::Application;
use base64::Engine as _;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{kas_jwt, median};

const ROOT_TOKEN: &str = "glpat-benchmark-root-token-0123456789";
/// An admin URL of a PostgreSQL server where the benchmark may create and drop a database.
const DATABASE_URL_VARIABLE: &str = "AGENTREG_BENCH_DATABASE_URL";

/// The benchmark's settings, from the environment.
#[derive(Clone, Copy)]
struct Parameters {
    rounds: u64,
    seconds: u64,
    concurrency: usize,
    backend_rounds: u64,
    backend_seconds: u64,
}

/// A running service with a project, an agent and a verified agent token to measure against.
struct Target {
    backend: &'static str,
    base: String,
    project_id: i64,
    agent_id: i64,
    agent_token: String,
}

/// A database created for this run on the server of `DATABASE_URL_VARIABLE`.
struct BenchDatabase {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
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
        rounds: env_number("BENCH_ROUNDS", 5),
        seconds: env_number("BENCH_SECONDS", 3),
        concurrency: env_number("BENCH_CONCURRENCY", 16) as usize,
        backend_rounds: env_number("BENCH_BACKEND_ROUNDS", 3).max(1),
        backend_seconds: env_number("BENCH_BACKEND_SECONDS", 2),
    };
    let database = match std::env::var(DATABASE_URL_VARIABLE) {
        Ok(admin_url) if !admin_url.is_empty() => Some(BenchDatabase::create(&admin_url).await),
        Ok(_) | Err(_) => {
            println!(
                "PostgreSQL skipped: set {DATABASE_URL_VARIABLE} to an admin URL to compare it with sled"
            );
            None
        }
    };
    // The measurements run in their own task so that the database is dropped even if they panic.
    let outcome = tokio::spawn(measure(
        parameters,
        database.as_ref().map(|database| database.url.clone()),
    ))
    .await;
    if let Some(database) = database {
        database.drop_database().await;
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn measure(parameters: Parameters, database_url: Option<String>) {
    let Parameters {
        rounds,
        seconds,
        concurrency,
        ..
    } = parameters;
    let dir = tempfile::tempdir().unwrap();
    let kas_file = dir.path().join("kas_secret");
    let kas_secret = [7u8; 32];
    std::fs::write(
        &kas_file,
        base64::engine::general_purpose::STANDARD.encode(kas_secret),
    )
    .unwrap();
    let base = start(&dir.path().join("data"), &kas_file, None).await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let jwt = kas_jwt(&kas_secret);
    let project: serde_json::Value = post(
        &http,
        &format!("{base}/projects"),
        serde_json::json!({"name": "bench"}),
    )
    .await;
    let project_id = project["id"].as_i64().unwrap();

    // Enough fresh tokens for the uncached runs: two per agent, each used once.
    let mut fresh_tokens = Vec::new();
    let n_fresh = 40 * rounds as usize;
    for agent_index in 0..n_fresh.div_ceil(2) + 1 {
        let agent: serde_json::Value = post(
            &http,
            &format!("{base}/projects/{project_id}/cluster_agents"),
            serde_json::json!({"name": format!("agent-{agent_index}")}),
        )
        .await;
        let agent_id = agent["id"].as_i64().unwrap();
        for token_index in 0..2 {
            let token: serde_json::Value = post(
                &http,
                &format!("{base}/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
                serde_json::json!({"name": format!("t{token_index}")}),
            )
            .await;
            fresh_tokens.push(token["token"].as_str().unwrap().to_owned());
        }
    }
    let warm_token = fresh_tokens.pop().unwrap();
    let agent_info = format!("{base}/internal/agents/agentk/agent_info");
    let version = format!("{base}/version");

    let mut results: Vec<(&str, Vec<f64>)> = vec![
        ("baseline", vec![]),
        ("cached", vec![]),
        ("uncached", vec![]),
    ];
    for round in 0..rounds {
        let duration = Duration::from_secs(seconds);
        let baseline = run(concurrency, duration, StatusCode::OK, |_| {
            http.get(&version).header("PRIVATE-TOKEN", ROOT_TOKEN)
        })
        .await;
        let cached = run(concurrency, duration, StatusCode::OK, |_| {
            http.get(&agent_info)
                .header("Gitlab-Kas-Api-Request", &jwt)
                .header("Gitlab-Agent-Api-Request", &warm_token)
        })
        .await;
        let batch: Vec<String> = fresh_tokens.drain(..40.min(fresh_tokens.len())).collect();
        let uncached = run_each(concurrency, &batch, |token| {
            http.get(&agent_info)
                .header("Gitlab-Kas-Api-Request", &jwt)
                .header("Gitlab-Agent-Api-Request", token)
        })
        .await;
        println!(
            "round {round}: baseline {baseline:.0} req/s, cached {cached:.0} req/s, uncached {uncached:.1} req/s"
        );
        results[0].1.push(baseline);
        results[1].1.push(cached);
        results[2].1.push(uncached);
    }
    let medians: Vec<(&str, f64)> = results
        .iter()
        .map(|(name, values)| (*name, median(values)))
        .collect();
    let baseline = medians[0].1;
    println!("\nmedian over {rounds} rounds, {concurrency} concurrent clients:");
    for (name, value) in &medians {
        println!(
            "  {name:<9} {value:>10.1} req/s  ({:.3} x baseline)",
            value / baseline
        );
    }
    println!("  cached / uncached = {:.0} x", medians[1].1 / medians[2].1);

    let mut targets = vec![target(&http, "sled", base, &jwt).await];
    if let Some(url) = database_url {
        let postgres_base = start(&dir.path().join("postgres-data"), &kas_file, Some(url)).await;
        targets.push(target(&http, "postgres", postgres_base, &jwt).await);
    }
    compare_backends(&http, &jwt, &targets, parameters).await;
}

impl BenchDatabase {
    /// Creates a database with a fresh name on the server of `admin_url`.
    async fn create(admin_url: &str) -> BenchDatabase {
        let (admin, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| panic!("connecting to {DATABASE_URL_VARIABLE}: {error}"));
        tokio::spawn(async move { connection.await.ok() });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("agentreg_bench_{}_{nanos}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        println!("PostgreSQL: database {name}, dropped at the end");
        let url = with_database(admin_url, &name);
        BenchDatabase { admin, name, url }
    }

    /// Drops the database, ending the sessions of the service that still uses it.
    async fn drop_database(self) {
        self.admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

/// Starts the service in-process, on PostgreSQL if `database_url` is given, and returns the REST
/// base URL.
async fn start(data_dir: &Path, kas_file: &Path, database_url: Option<String>) -> String {
    let mut settings = Settings::for_tests(data_dir);
    settings.root_token = Some(ROOT_TOKEN.to_owned().into());
    settings.kas_secret_file = Some(PathBuf::from(kas_file));
    settings.database = database_url.map(|url| DatabaseSettings {
        url,
        password_file: None,
        pool_size: DEFAULT_DATABASE_POOL_SIZE,
        statement_timeout: Duration::from_millis(DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS),
    });
    let application = Application::build(settings).await.unwrap();
    let base = format!("http://{}/api/v4", application.http_addr().unwrap());
    tokio::spawn(application.run_until(std::future::pending()));
    base
}

/// A project with one agent and one agent token on `base`, with the token and the personal access
/// token already verified once so that both are cached.
async fn target(http: &reqwest::Client, backend: &'static str, base: String, jwt: &str) -> Target {
    let project: serde_json::Value = post(
        http,
        &format!("{base}/projects"),
        serde_json::json!({"name": "backends"}),
    )
    .await;
    let project_id = project["id"].as_i64().unwrap();
    let agent: serde_json::Value = post(
        http,
        &format!("{base}/projects/{project_id}/cluster_agents"),
        serde_json::json!({"name": "measured"}),
    )
    .await;
    let agent_id = agent["id"].as_i64().unwrap();
    let token: serde_json::Value = post(
        http,
        &format!("{base}/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
        serde_json::json!({"name": "measured"}),
    )
    .await;
    let target = Target {
        backend,
        base,
        project_id,
        agent_id,
        agent_token: token["token"].as_str().unwrap().to_owned(),
    };
    let response = http
        .get(format!("{}/internal/agents/agentk/agent_info", target.base))
        .header("Gitlab-Kas-Api-Request", jwt)
        .header("Gitlab-Agent-Api-Request", &target.agent_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    target
}

/// Measures every target in each round, in alternating order, and prints the medians and the
/// ratios of the second target to the first.
async fn compare_backends(
    http: &reqwest::Client,
    jwt: &str,
    targets: &[Target],
    parameters: Parameters,
) {
    let duration = Duration::from_secs(parameters.backend_seconds);
    let concurrency = parameters.concurrency;
    // Per target, per measurement: the value of each round.
    let mut results = vec![[Vec::new(), Vec::new(), Vec::new()]; targets.len()];
    println!();
    for round in 0..parameters.backend_rounds {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for target_idx in order {
            let target = &targets[target_idx];
            let agents = format!(
                "{}/projects/{}/cluster_agents",
                target.base, target.project_id
            );
            let agent = format!("{agents}/{}", target.agent_id);
            let agent_info = format!("{}/internal/agents/agentk/agent_info", target.base);
            let get_agent = run(concurrency, duration, StatusCode::OK, |_| {
                http.get(&agent).header("PRIVATE-TOKEN", ROOT_TOKEN)
            })
            .await;
            let cached = run(concurrency, duration, StatusCode::OK, |_| {
                http.get(&agent_info)
                    .header("Gitlab-Kas-Api-Request", jwt)
                    .header("Gitlab-Agent-Api-Request", &target.agent_token)
            })
            .await;
            let n_registered = AtomicU64::new(0);
            let registrations = run(concurrency, duration, StatusCode::CREATED, |_| {
                let agent_idx = n_registered.fetch_add(1, Ordering::Relaxed);
                http.post(&agents)
                    .header("PRIVATE-TOKEN", ROOT_TOKEN)
                    .json(&serde_json::json!({"name": format!("registered-{round}-{agent_idx}")}))
            })
            .await;
            println!(
                "backend round {round}: {:<8} GET agent {get_agent:.0} req/s, agent_info {cached:.0} req/s, registrations {registrations:.1}/s",
                target.backend
            );
            for (values, value) in
                results[target_idx]
                    .iter_mut()
                    .zip([get_agent, cached, registrations])
            {
                values.push(value);
            }
        }
    }
    let medians: Vec<[f64; 3]> = results
        .iter()
        .map(|values| values.each_ref().map(|values| median(values)))
        .collect();
    println!(
        "\nbackends, median over {} alternating rounds of {} s per measurement, {concurrency} concurrent clients:",
        parameters.backend_rounds, parameters.backend_seconds
    );
    println!(
        "  {:<16} {:>16} {:>17} {:>17}",
        "backend", "GET agent req/s", "agent_info req/s", "registrations/s"
    );
    for (target, [get_agent, cached, registrations]) in targets.iter().zip(&medians) {
        println!(
            "  {:<16} {get_agent:>16.0} {cached:>17.0} {registrations:>17.1}",
            target.backend
        );
    }
    if let [sled, postgres] = medians.as_slice() {
        let ratios: Vec<String> = postgres
            .iter()
            .zip(sled)
            .map(|(postgres, sled)| format!("{:.3} x", postgres / sled))
            .collect();
        println!(
            "  {:<16} {:>16} {:>17} {:>17}",
            "postgres / sled", ratios[0], ratios[1], ratios[2]
        );
    }
}

/// Requests per second with `concurrency` clients for `duration`; every response must have the
/// status `expected`.
async fn run<'a>(
    concurrency: usize,
    duration: Duration,
    expected: StatusCode,
    request: impl Fn(usize) -> reqwest::RequestBuilder + Sync + 'a,
) -> f64 {
    let started = Instant::now();
    let request = &request;
    let counts = futures::future::join_all((0..concurrency).map(|client| async move {
        let mut n_ok = 0u64;
        while started.elapsed() < duration {
            let response = request(client).send().await.unwrap();
            assert_eq!(response.status(), expected);
            response.bytes().await.unwrap();
            n_ok += 1;
        }
        n_ok
    }))
    .await;
    counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64()
}

/// Requests per second for one request per item, `concurrency` at a time.
async fn run_each(
    concurrency: usize,
    items: &[String],
    request: impl Fn(&str) -> reqwest::RequestBuilder + Sync,
) -> f64 {
    let started = Instant::now();
    let request = &request;
    let chunks: Vec<&[String]> = items
        .chunks(items.len().div_ceil(concurrency).max(1))
        .collect();
    futures::future::join_all(chunks.into_iter().map(|chunk| async move {
        for item in chunk {
            let response = request(item).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    }))
    .await;
    items.len() as f64 / started.elapsed().as_secs_f64()
}

async fn post(http: &reqwest::Client, url: &str, body: serde_json::Value) -> serde_json::Value {
    let response = http
        .post(url)
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&body)
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

/// The server URL `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{DATABASE_URL_VARIABLE} must be a URL such as postgres://..."));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map_or("", |query_start| &rest[authority_end + query_start..]);
    format!("{scheme}://{}/{database}{query}", &rest[..authority_end])
}
