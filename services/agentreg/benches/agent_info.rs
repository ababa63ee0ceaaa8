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

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark binary"
)]

use agentreg::config::Settings;
use agentreg::startup::Application;
use base64::Engine as _;
use std::time::{Duration, Instant};

const ROOT_TOKEN: &str = "glpat-benchmark-root-token-0123456789";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let rounds = env_number("BENCH_ROUNDS", 5);
    let seconds = env_number("BENCH_SECONDS", 3);
    let concurrency = env_number("BENCH_CONCURRENCY", 16) as usize;

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
    settings.kas_secret_file = Some(kas_file);
    let application = Application::build(settings).await.unwrap();
    let base = format!("http://{}/api/v4", application.http_addr().unwrap());
    tokio::spawn(application.run_until(std::future::pending()));

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
        let baseline = run(concurrency, duration, |_| {
            http.get(&version).header("PRIVATE-TOKEN", ROOT_TOKEN)
        })
        .await;
        let cached = run(concurrency, duration, |_| {
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
}

/// Requests per second with `concurrency` clients for `duration`; every response must be 200.
async fn run<'a>(
    concurrency: usize,
    duration: Duration,
    request: impl Fn(usize) -> reqwest::RequestBuilder + Sync + 'a,
) -> f64 {
    let started = Instant::now();
    let request = &request;
    let counts = futures::future::join_all((0..concurrency).map(|client| async move {
        let mut n_ok = 0u64;
        while started.elapsed() < duration {
            let response = request(client).send().await.unwrap();
            assert_eq!(response.status(), 200);
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

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn kas_jwt(secret: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        serde_json::json!({"iss": "gitlab-kas", "aud": "gitlab", "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}
