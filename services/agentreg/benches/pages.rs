//! Deep pages of a large project, run with `cargo bench -p agentreg --bench pages`.
//!
//! It builds a store with a project of 120,000 agents (`BENCH_PAGES_AGENTS`) and one of 100,
//! seeded in bulk through the storage port (a temporary store restored from a fresh instance's
//! snapshot, filled, and restored into the measured store) rather than by 120,000 HTTP posts,
//! starts the real service in-process on port 0 over it, and measures over HTTP with
//! `BENCH_CONCURRENCY` (default 32) concurrent clients:
//! - `first page`: `GET .../cluster_agents?page=1&per_page=20` of the large project;
//! - `last page`: the same at the last page (offset 119,980);
//! - `keyset deep`: a keyset page by name (`pagination=keyset&order_by=name&sort=asc`) whose
//!   cursor is the 119,980th name;
//! - `small first page`: the first page of the 100-agent project.
//!
//! Each round (`BENCH_ROUNDS`, default 3, of `BENCH_SECONDS`, default 3, per measurement)
//! measures every case on every backend, in alternating order; it prints the medians, the ratios
//! last / first, keyset deep / first and first / small first, the time `Application::build`
//! takes to open the sled store of 120,100 agents, and the sled store's bytes per agent.
//!
//! On sled always; with `AGENTREG_BENCH_DATABASE_URL` set to a PostgreSQL admin URL (for example
//! `postgres://postgres@127.0.0.1:5432/postgres`) also on a fresh database there, restored from
//! the same snapshot and dropped at the end.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark binary"
)]

use agentreg::config::{
    DEFAULT_DATABASE_POOL_SIZE, DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS, DatabaseSettings, Settings,
};
use agentreg::startup::Application;
use agentreg_domain::names::{AgentName, ProjectNaming};
use agentreg_storage::embedded::SledStorage;
use agentreg_storage::port::Storage;
use agentreg_storage::postgres::{PostgresOptions, PostgresStorage};
use base64::Engine as _;
use futures::StreamExt as _;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT_TOKEN: &str = "glpat-benchmark-root-token-0123456789";
/// An admin URL of a PostgreSQL server where the benchmark may create and drop a database.
const DATABASE_URL_VARIABLE: &str = "AGENTREG_BENCH_DATABASE_URL";
const N_SMALL: usize = 100;
const PER_PAGE: usize = 20;
const CASES: [&str; 4] = ["first page", "last page", "keyset deep", "small first page"];

/// The benchmark's settings, from the environment.
#[derive(Clone, Copy)]
struct Parameters {
    n_agents: usize,
    rounds: usize,
    seconds: u64,
    concurrency: usize,
}

/// A running service over the seeded data, and the URL of each case.
struct Target {
    backend: &'static str,
    urls: [String; 4],
    /// Kept until the end: stopping the service when the target goes.
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// The files every instance shares: the KAS secret and the instance key.
struct Keys {
    kas_file: PathBuf,
    encryption_key_file: PathBuf,
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
        n_agents: env_number("BENCH_PAGES_AGENTS", 120_000) as usize,
        rounds: env_number("BENCH_ROUNDS", 3).max(1) as usize,
        seconds: env_number("BENCH_SECONDS", 3),
        concurrency: env_number("BENCH_CONCURRENCY", 32) as usize,
    };
    let admin_url = std::env::var(DATABASE_URL_VARIABLE)
        .ok()
        .filter(|url| !url.is_empty());
    if admin_url.is_none() {
        println!(
            "PostgreSQL skipped: set {DATABASE_URL_VARIABLE} to an admin URL to measure it too"
        );
    }
    let database = match &admin_url {
        Some(admin_url) => Some(create_database(admin_url).await),
        None => None,
    };
    // The measurements run in their own task so that the database is dropped even if they panic.
    let outcome = tokio::spawn(measure(
        parameters,
        database.as_ref().map(|(_, _, url)| url.clone()),
    ))
    .await;
    if let Some((admin, name, _)) = database {
        admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .unwrap();
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn measure(parameters: Parameters, database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys {
        kas_file: dir.path().join("kas_secret"),
        encryption_key_file: dir.path().join("encryption_key"),
    };
    std::fs::write(
        &keys.kas_file,
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    )
    .unwrap();

    let started = Instant::now();
    let snapshot = seeded_snapshot(dir.path(), &keys, parameters.n_agents).await;
    println!(
        "seeded {} + {N_SMALL} agents in {:.1} s ({} MiB snapshot)",
        parameters.n_agents,
        started.elapsed().as_secs_f64(),
        snapshot.len() / (1024 * 1024)
    );

    let sled_dir = dir.path().join("sled");
    let store = SledStorage::open(&sled_dir.join("db")).unwrap();
    store.restore(snapshot.clone()).await.unwrap();
    drop(store);
    let n_stored = parameters.n_agents + N_SMALL;
    let bytes = directory_bytes(&sled_dir.join("db"));
    let (sled, startup) = start(&sled_dir, &keys, None, parameters.n_agents).await;
    println!(
        "sled: Application::build with {n_stored} agents took {:.3} s; the store holds {} bytes, {:.0} per agent",
        startup.as_secs_f64(),
        bytes,
        bytes as f64 / n_stored as f64
    );
    let mut targets = vec![sled];
    if let Some(url) = database_url {
        let started = Instant::now();
        let storage = PostgresStorage::connect(postgres_options(&url))
            .await
            .unwrap();
        storage.restore(snapshot).await.unwrap();
        drop(storage);
        println!(
            "postgres: restored {n_stored} agents in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let (postgres, _) = start(
            &dir.path().join("postgres"),
            &keys,
            Some(url),
            parameters.n_agents,
        )
        .await;
        targets.push(postgres);
    }
    compare(&targets, parameters).await;
}

/// A snapshot of a fresh instance (its administrator and instance key) with the two projects
/// and their agents added through the storage port of a temporary store.
async fn seeded_snapshot(dir: &Path, keys: &Keys, n_agents: usize) -> Vec<u8> {
    let seed_dir = dir.join("seed");
    // The first start generates the instance key in the data directory; every later instance
    // reads that one.
    let mut settings = settings(&seed_dir, keys, None);
    settings.encryption_key_file = None;
    let application = Application::build(settings).await.unwrap();
    application.run_until(std::future::ready(())).await.unwrap();
    std::fs::copy(seed_dir.join("encryption_key"), &keys.encryption_key_file).unwrap();
    let fresh = SledStorage::open(&seed_dir.join("db")).unwrap();
    let fresh_snapshot = fresh.snapshot().await.unwrap();
    drop(fresh);

    let temporary = SledStorage::temporary().unwrap();
    temporary.restore(fresh_snapshot).await.unwrap();
    let root = temporary.user_by_username("root").await.unwrap().unwrap();
    let mut project_ids = Vec::new();
    for path in ["large", "small"] {
        let naming = ProjectNaming::parse(Some(path), None).unwrap();
        let project = temporary
            .create_project(root.id, naming, None, 1)
            .await
            .unwrap();
        project_ids.push(project.id);
    }
    let mut names: Vec<(usize, String)> = (0..n_agents)
        .map(|idx| (0, format!("agent-{idx:06}")))
        .chain((0..N_SMALL).map(|idx| (1, format!("agent-{idx:06}"))))
        .collect();
    // Registered in no particular order, as real agents are.
    names.shuffle(&mut rand::rngs::StdRng::seed_from_u64(1));
    let temporary = &temporary;
    let project_ids = &project_ids;
    futures::stream::iter(names)
        .map(|(project_idx, name)| async move {
            let name = AgentName::parse(&name).unwrap();
            temporary
                .create_agent(project_ids[project_idx], name, Some(root.id), 1, None)
                .await
                .unwrap();
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    temporary.snapshot().await.unwrap()
}

/// Starts the service over `data_dir` (or PostgreSQL) and returns it with the time
/// `Application::build` took.
async fn start(
    data_dir: &Path,
    keys: &Keys,
    database_url: Option<String>,
    n_agents: usize,
) -> (Target, Duration) {
    let backend = if database_url.is_some() {
        "postgres"
    } else {
        "sled"
    };
    let settings = settings(data_dir, keys, database_url);
    let started = Instant::now();
    let application = Application::build(settings).await.unwrap();
    let startup = started.elapsed();
    let base = format!("http://{}/api/v4", application.http_addr().unwrap());
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application.run_until(async move {
        stopped.await.ok();
    }));
    let http = reqwest::Client::new();
    let project = |path: &str| format!("{base}/projects/root%2F{path}/cluster_agents");
    let last_page = n_agents.div_ceil(PER_PAGE);
    // The cursor of the name just before the last page: the keyset twin of the last page.
    let before_last = format!(
        "{}?page={}&per_page=1",
        project("large"),
        (last_page - 1) * PER_PAGE
    );
    let before_last: serde_json::Value = get(&http, &before_last).await.json().await.unwrap();
    let cursor_name = before_last[0]["name"].as_str().unwrap();
    let cursor = base64::engine::general_purpose::URL_SAFE
        .encode(serde_json::json!({"name": cursor_name, "_kd": "n"}).to_string());
    let urls = [
        format!("{}?page=1&per_page={PER_PAGE}", project("large")),
        format!("{}?page={last_page}&per_page={PER_PAGE}", project("large")),
        format!(
            "{}?pagination=keyset&order_by=name&sort=asc&per_page={PER_PAGE}&cursor={cursor}",
            project("large")
        ),
        format!("{}?page=1&per_page={PER_PAGE}", project("small")),
    ];
    for url in &urls {
        let page: serde_json::Value = get(&http, url).await.json().await.unwrap();
        assert_eq!(page.as_array().unwrap().len(), PER_PAGE, "{url}");
    }
    (
        Target {
            backend,
            urls,
            _shutdown: shutdown,
        },
        startup,
    )
}

fn settings(data_dir: &Path, keys: &Keys, database_url: Option<String>) -> Settings {
    let mut settings = Settings::for_tests(data_dir);
    settings.root_token = Some(ROOT_TOKEN.to_owned().into());
    settings.kas_secret_file = Some(keys.kas_file.clone());
    settings.encryption_key_file = Some(keys.encryption_key_file.clone());
    settings.database = database_url.map(|url| DatabaseSettings {
        url,
        password_file: None,
        pool_size: DEFAULT_DATABASE_POOL_SIZE,
        statement_timeout: Duration::from_millis(DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS),
    });
    settings
}

/// Measures every case of every target in each round, in alternating order, and prints the
/// medians and ratios.
async fn compare(targets: &[Target], parameters: Parameters) {
    let http = reqwest::Client::new();
    let duration = Duration::from_secs(parameters.seconds);
    // Per target, per case: the requests per second of each round.
    let mut results = vec![vec![Vec::new(); CASES.len()]; targets.len()];
    for round in 0..parameters.rounds {
        let mut order: Vec<(usize, usize)> = (0..targets.len())
            .flat_map(|target_idx| (0..CASES.len()).map(move |case_idx| (target_idx, case_idx)))
            .collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for (target_idx, case_idx) in order {
            let target = &targets[target_idx];
            let url = &target.urls[case_idx];
            let per_second = run(&http, parameters.concurrency, duration, url).await;
            println!(
                "round {round}: {:<8} {:<16} {per_second:>8.0} req/s",
                target.backend, CASES[case_idx]
            );
            results[target_idx][case_idx].push(per_second);
        }
    }
    println!(
        "\nmedians over {} alternating rounds of {} s, {} concurrent clients, {} agents, {PER_PAGE} per page:",
        parameters.rounds, parameters.seconds, parameters.concurrency, parameters.n_agents
    );
    println!(
        "  {:<8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>13} {:>13}",
        "backend",
        "first req/s",
        "last req/s",
        "keyset req/s",
        "small req/s",
        "last/first",
        "keyset/first",
        "first/small"
    );
    for (target, values) in targets.iter().zip(&results) {
        let [first, last, keyset, small] = [0, 1, 2, 3].map(|case_idx| median(&values[case_idx]));
        println!(
            "  {:<8} {first:>12.0} {last:>12.0} {keyset:>12.0} {small:>12.0} {:>12.3} {:>13.3} {:>13.3}",
            target.backend,
            last / first,
            keyset / first,
            first / small
        );
    }
}

/// Requests per second with `concurrency` clients for `duration`; every answer must be 200.
async fn run(http: &reqwest::Client, concurrency: usize, duration: Duration, url: &str) -> f64 {
    let started = Instant::now();
    let counts = futures::future::join_all((0..concurrency).map(|_| async move {
        let mut n_ok = 0u64;
        while started.elapsed() < duration {
            get(http, url).await.bytes().await.unwrap();
            n_ok += 1;
        }
        n_ok
    }))
    .await;
    counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64()
}

/// `GET url` as the administrator; the answer must be 200.
async fn get(http: &reqwest::Client, url: &str) -> reqwest::Response {
    let response = http
        .get(url)
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The bytes of every file under `dir`.
fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                directory_bytes(&entry.path())
            } else {
                metadata.len()
            }
        })
        .sum()
}

/// Creates a database with a fresh name on the server of `admin_url`; returns the admin
/// connection, the name and the database's URL.
async fn create_database(admin_url: &str) -> (tokio_postgres::Client, String, String) {
    let (admin, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connecting to {DATABASE_URL_VARIABLE}: {error}"));
    tokio::spawn(async move { connection.await.ok() });
    let name = format!("agentreg_bench_pages_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    println!("PostgreSQL: database {name}, dropped at the end");
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    let url = if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    };
    (admin, name, url)
}

fn postgres_options(url: &str) -> PostgresOptions {
    PostgresOptions {
        url: url.to_owned(),
        password: None,
        pool_size: 4,
        statement_timeout: Duration::from_secs(600),
        connect_timeout: Duration::from_secs(10),
    }
}
