//! Settings: built once in `main` from defaults, then an optional TOML file, then environment
//! variables and flags (a flag beats its environment variable), and passed down explicitly.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// GitLab's Kubernetes agent API as a standalone service: register agents, issue agent tokens and
/// configure receptive agents over GitLab-compatible REST and a gRPC API, stored in embedded sled
/// or, for many interchangeable replicas, in PostgreSQL (--database-url).
#[derive(Debug, Parser)]
#[command(name = "agentreg", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the REST API and the gRPC API until SIGTERM or Ctrl-C.
    #[command(
        after_help = "Environment only: AGENTREG_ROOT_TOKEN (at least 20 characters) is the administrator's token to create on first start; without it a token is generated and written to <data-dir>/initial_root_token (mode 0600)."
    )]
    Serve(Box<ServeArgs>),
    /// Write a consistent, versioned snapshot of the database to a file: a stopped service's
    /// sled data directory, or a PostgreSQL database with --database-url (which may be in use).
    /// (While the service runs, `GET /api/v4/admin/snapshot` also works, on either backend.)
    Backup(BackupArgs),
    /// Restore a snapshot into an empty sled data directory, or an empty PostgreSQL database
    /// with --database-url. Snapshots of either backend restore into either.
    Restore(RestoreArgs),
    /// Apply the PostgreSQL schema migrations and exit (`serve` also applies them at start).
    Migrate(MigrateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Data directory of the (stopped) service [default: ./data]
    #[arg(long, env = "AGENTREG_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// File to write; it is created with mode 0600 and must not exist
    #[arg(long)]
    pub out: PathBuf,
    /// The instance's encryption key, which authenticates the snapshot
    /// [default: <data-dir>/encryption_key]
    #[arg(long, env = "AGENTREG_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// Snapshot file written by `agentreg backup` or the snapshot route
    #[arg(long = "in")]
    pub input: PathBuf,
    /// sled data directory to restore into; it must hold no database (it may already hold the
    /// key files). Copy `encryption_key` and `kas_secret` into it too (snapshots do not contain
    /// them). Ignored with --database-url.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// The encryption key of the instance that took the snapshot, which authenticates it
    /// [default: <data-dir>/encryption_key]
    #[arg(long, env = "AGENTREG_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The PostgreSQL backend's settings; without a URL the service uses embedded sled.
#[derive(Debug, Clone, Default, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://agentreg@db:5432/agentreg?sslmode=require. Selects the
    /// PostgreSQL backend, which any number of replicas may share [default: embedded sled]
    #[arg(long, env = "AGENTREG_DATABASE_URL")]
    pub database_url: Option<String>,
    /// File holding the database password, so that it stays out of process listings; it
    /// overrides a password in the URL
    #[arg(long, env = "AGENTREG_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
    /// Connections in this replica's pool [default: 16]
    #[arg(long, env = "AGENTREG_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<usize>,
    /// Longest a query (or a wait for a pooled connection) may take before the request fails
    /// with 503, in milliseconds [default: 5000]
    #[arg(long, env = "AGENTREG_DATABASE_STATEMENT_TIMEOUT_MS")]
    pub database_statement_timeout_ms: Option<u64>,
}

/// The PostgreSQL backend's resolved settings.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub pool_size: usize,
    pub statement_timeout: std::time::Duration,
}

/// The default of `--database-pool-size`.
pub const DEFAULT_DATABASE_POOL_SIZE: usize = 16;
/// The default of `--database-statement-timeout-ms`.
pub const DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS: u64 = 5_000;

impl DatabaseArgs {
    /// The PostgreSQL settings, if a URL was given (here or in the config file).
    pub fn resolve(self, file: DatabaseArgs) -> Option<DatabaseSettings> {
        let url = self.database_url.or(file.database_url)?;
        Some(DatabaseSettings {
            url,
            password_file: self.database_password_file.or(file.database_password_file),
            pool_size: self
                .database_pool_size
                .or(file.database_pool_size)
                .unwrap_or(DEFAULT_DATABASE_POOL_SIZE)
                .max(1),
            statement_timeout: std::time::Duration::from_millis(
                self.database_statement_timeout_ms
                    .or(file.database_statement_timeout_ms)
                    .unwrap_or(DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS)
                    .max(1),
            ),
        })
    }
}

/// Every setting of `agentreg serve`. Unset values come from the config file, then the defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flag names, with `_` for `-`).
    #[arg(long, env = "AGENTREG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the database, the generated secrets and the initial root token [default: ./data]
    #[arg(long, env = "AGENTREG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the REST listener [default: 127.0.0.1:8080]
    #[arg(long, env = "AGENTREG_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address of the gRPC listener [default: 127.0.0.1:50051]
    #[arg(long, env = "AGENTREG_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Base URL for absolute links such as pagination `Link` headers, e.g. https://agents.example.com
    /// [default: taken from each request's Host header]
    #[arg(long, env = "AGENTREG_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// Log format [default: text]
    #[arg(long, env = "AGENTREG_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// File holding the base64 shared secret that signs agent-server (KAS) JWTs
    /// [default: <data-dir>/kas_secret, generated on first start]
    #[arg(long, env = "AGENTREG_KAS_SECRET_FILE")]
    pub kas_secret_file: Option<PathBuf>,
    /// File holding the base64 AES-256 key that encrypts private keys at rest
    /// [default: <data-dir>/encryption_key, generated on first start]
    #[arg(long, env = "AGENTREG_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// Serve the receptive-agent URL-configuration routes [default: true]
    #[arg(long, env = "AGENTREG_RECEPTIVE_AGENTS_ENABLED")]
    pub receptive_agents_enabled: Option<bool>,
    /// PEM certificate chain: with --tls-key, both listeners serve TLS
    #[arg(long, env = "AGENTREG_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "AGENTREG_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve /metrics on this address instead of on the REST listener
    #[arg(long, env = "AGENTREG_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// File holding a token that /metrics then requires as `Authorization: Bearer <token>`
    /// [default: none, /metrics is open]
    #[arg(long, env = "AGENTREG_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Failed authentications a client address may make per minute before it gets 429 [default: 30]
    #[arg(long, env = "AGENTREG_AUTH_FAILURES_PER_MINUTE")]
    pub auth_failures_per_minute: Option<u32>,
    /// Failed agent-token authentications, over all agents, allowed per minute before uncached
    /// agent tokens get 429 [default: 600]
    #[arg(long, env = "AGENTREG_AGENT_TOKEN_FAILURES_PER_MINUTE")]
    pub agent_token_failures_per_minute: Option<u32>,
    /// Requests waiting for argon2 (token creation, first use of a token) beyond which new ones
    /// are refused at once with 503 and Retry-After; argon2 runs on max(1, CPUs - 1) threads of
    /// its own [default: 64]
    #[arg(long, env = "AGENTREG_ARGON2_QUEUE_LIMIT")]
    pub argon2_queue_limit: Option<usize>,
    /// How the threads that hash new secrets (token creations) yield to requests and logins on
    /// Linux: `idle` (SCHED_IDLE: a woken request worker takes their core at once, and a busy
    /// process leaves them little), or 0 to 19 niceness steps below the process; verifying a
    /// presented secret keeps the process's priority [default: idle]
    #[arg(long, env = "AGENTREG_ARGON2_NICE")]
    pub argon2_nice: Option<HashPriority>,
    /// Comma-separated CIDRs of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are
    /// believed, e.g. 10.0.0.0/8,::1/128 [default: none]
    #[arg(long, env = "AGENTREG_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<Cidr>>,
    /// Days instance audit events (failed authentications, users and tokens created, snapshots
    /// downloaded) are kept; 0 keeps them forever. Project events are always kept [default: 90]
    #[arg(long, env = "AGENTREG_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// Open connections per listener; more are closed as soon as they are accepted [default: 10000]
    #[arg(long, env = "AGENTREG_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections per client address (IPv6 by /64) per listener [default: 256]
    #[arg(long, env = "AGENTREG_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Seconds a client may take to send a request's headers (HTTP/1.1) or its TLS handshake
    /// [default: 10]
    #[arg(long, env = "AGENTREG_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a connection may stay open with no request in progress [default: 60]
    #[arg(long, env = "AGENTREG_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a request may take before it is answered with a timeout [default: 30]
    #[arg(long, env = "AGENTREG_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Concurrent HTTP/2 streams (gRPC calls) per connection [default: 100]
    #[arg(long, env = "AGENTREG_HTTP2_MAX_CONCURRENT_STREAMS")]
    pub http2_max_concurrent_streams: Option<u32>,
    /// Seconds between HTTP/2 keep-alive pings; a ping unanswered for as long closes the
    /// connection [default: 20]
    #[arg(long, env = "AGENTREG_HTTP2_KEEPALIVE_SECS")]
    pub http2_keepalive_secs: Option<u64>,
    /// Largest request header block in bytes [default: 16384]
    #[arg(long, env = "AGENTREG_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<u32>,
    /// Largest decoded gRPC message in bytes [default: 65536]
    #[arg(long, env = "AGENTREG_GRPC_MAX_MESSAGE_BYTES")]
    pub grpc_max_message_bytes: Option<usize>,
    /// Longest lifetime of an agent token's `expires_at`, as a number with a unit: 30d, 12h,
    /// 90m, 3600s [default: no limit]
    #[arg(long, env = "AGENTREG_AGENT_TOKEN_MAX_LIFETIME")]
    pub agent_token_max_lifetime: Option<String>,
    /// Refuse agent tokens created without an `expires_at` [default: false]
    #[arg(long, env = "AGENTREG_REQUIRE_AGENT_TOKEN_EXPIRY")]
    pub require_agent_token_expiry: Option<bool>,
    /// Longest overlap a token rotation may ask for with `overlap_seconds`; longer requests are
    /// cut to it [default: 7d]
    #[arg(long, env = "AGENTREG_MAX_ROTATION_OVERLAP")]
    pub max_rotation_overlap: Option<String>,
    /// How long the caller who rotated a token may fetch the successor's secret once more, by
    /// repeating the rotation with the same Idempotency-Key; 0 turns it off, and the secret is
    /// then never held [default: 0]
    #[arg(long, env = "AGENTREG_ROTATION_RETRIEVE_WINDOW")]
    pub rotation_retrieve_window: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved settings of a running service.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub external_url: Option<String>,
    pub log_format: LogFormat,
    pub kas_secret_file: Option<PathBuf>,
    pub encryption_key_file: Option<PathBuf>,
    pub receptive_agents_enabled: bool,
    /// `AGENTREG_ROOT_TOKEN`: the administrator's token to create on first start.
    pub root_token: Option<secrecy::SecretString>,
    /// A certificate chain and key: both listeners serve TLS.
    pub tls: Option<TlsFiles>,
    pub metrics_addr: Option<SocketAddr>,
    /// A file whose token `/metrics` requires.
    pub metrics_token_file: Option<PathBuf>,
    pub auth_failures_per_minute: u32,
    /// Failed agent-token authentications over all agents per minute.
    pub agent_token_failures_per_minute: u32,
    /// Callers waiting for argon2 beyond which new ones are refused at once.
    pub argon2_queue_limit: usize,
    /// How the threads that hash new secrets yield to the rest of the process.
    pub argon2_nice: HashPriority,
    /// Reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// How long instance audit events are kept; `None` keeps them forever.
    pub audit_retention: Option<Duration>,
    /// Limits and timeouts of every listener.
    pub connections: ConnectionLimits,
    /// How far ahead an agent token may expire; `None` for no limit.
    pub agent_token_max_lifetime: Option<std::time::Duration>,
    /// Refuse agent tokens without an expiry.
    pub require_agent_token_expiry: bool,
    /// The longest overlap of a token rotation.
    pub max_rotation_overlap: std::time::Duration,
    /// How long a rotated successor's secret is held for one more fetch; `None` when off.
    pub rotation_retrieve_window: Option<std::time::Duration>,
    /// PostgreSQL; `None` means embedded sled in `<data_dir>/db`.
    pub database: Option<DatabaseSettings>,
}

/// The PEM files of the listeners' TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The default of `--max-rotation-overlap`: a week.
pub const DEFAULT_MAX_ROTATION_OVERLAP: std::time::Duration =
    std::time::Duration::from_secs(7 * 86_400);

/// The default of `--auth-failures-per-minute`.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 30;
/// The default of `--agent-token-failures-per-minute`.
pub const DEFAULT_AGENT_TOKEN_FAILURES_PER_MINUTE: u32 = 600;
/// The default of `--audit-retention-days`.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 90;
/// The default of `--argon2-queue-limit`.
pub const DEFAULT_ARGON2_QUEUE_LIMIT: usize = 64;
/// The default of `--argon2-nice`.
pub const DEFAULT_ARGON2_NICE: HashPriority = HashPriority::Idle;
/// The largest `--argon2-nice`: Linux's lowest priority is niceness 19.
pub(crate) const MAX_ARGON2_NICE: u8 = 19;

/// What one listener allows a connection; each field is a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    pub http2_keepalive: Duration,
    pub max_header_bytes: u32,
    pub grpc_max_message_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 10_000,
            max_connections_per_address: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            http2_max_concurrent_streams: 100,
            http2_keepalive: Duration::from_secs(20),
            max_header_bytes: 16 * 1024,
            grpc_max_message_bytes: 64 * 1024,
        }
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Whether `address` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix_len) = match text.split_once('/') {
            Some((address, prefix_len)) => (address, Some(prefix_len)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max_len = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_len {
            Some(prefix_len) => prefix_len
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= max_len)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
            None => max_len,
        };
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How the threads that hash new secrets are scheduled against the rest of the process (Linux;
/// elsewhere they keep the process's priority). `--argon2-nice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPriority {
    /// Linux's `SCHED_IDLE`: any other thread of the process that wakes takes the core at once,
    /// and while the process keeps the cores busy these threads get a minimal share of them.
    Idle,
    /// This many niceness steps below the process (0: the same priority), at most
    /// [`MAX_ARGON2_NICE`].
    Nice(u8),
}

impl std::str::FromStr for HashPriority {
    type Err = String;

    fn from_str(text: &str) -> Result<HashPriority, String> {
        match text.trim() {
            "idle" => Ok(HashPriority::Idle),
            steps => steps
                .parse::<u8>()
                .ok()
                .filter(|steps| *steps <= MAX_ARGON2_NICE)
                .map(HashPriority::Nice)
                .ok_or_else(|| {
                    format!(
                        "{text:?} is neither idle nor a niceness step from 0 to {MAX_ARGON2_NICE}"
                    )
                }),
        }
    }
}

impl std::fmt::Display for HashPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashPriority::Idle => f.write_str("idle"),
            HashPriority::Nice(steps) => write!(f, "{steps}"),
        }
    }
}

/// `argon2_nice` as a config file writes it: `"idle"` or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HashPriorityValue {
    Steps(i64),
    Word(String),
}

impl std::fmt::Display for HashPriorityValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashPriorityValue::Steps(steps) => write!(f, "{steps}"),
            HashPriorityValue::Word(word) => f.write_str(word),
        }
    }
}

/// The config file's shape: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    external_url: Option<String>,
    log_format: Option<LogFormat>,
    kas_secret_file: Option<PathBuf>,
    encryption_key_file: Option<PathBuf>,
    receptive_agents_enabled: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
    metrics_token_file: Option<PathBuf>,
    auth_failures_per_minute: Option<u32>,
    agent_token_failures_per_minute: Option<u32>,
    argon2_queue_limit: Option<usize>,
    argon2_nice: Option<HashPriorityValue>,
    trusted_proxies: Option<Vec<Cidr>>,
    audit_retention_days: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    http2_max_concurrent_streams: Option<u32>,
    http2_keepalive_secs: Option<u64>,
    max_header_bytes: Option<u32>,
    grpc_max_message_bytes: Option<usize>,
    agent_token_max_lifetime: Option<String>,
    require_agent_token_expiry: Option<bool>,
    max_rotation_overlap: Option<String>,
    rotation_retrieve_window: Option<String>,
    database_url: Option<String>,
    database_password_file: Option<PathBuf>,
    database_pool_size: Option<usize>,
    database_statement_timeout_ms: Option<u64>,
}

/// The settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {path}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("AGENTREG_ROOT_TOKEN must be at least 20 characters")]
    RootTokenTooShort,
    #[error(
        "AGENTREG_ROOT_TOKEN is too easy to guess: use at least 20 random characters from a mix of letters, digits and symbols (for example the output of `openssl rand -base64 32`), or leave it unset to have one generated"
    )]
    RootTokenWeak,
    #[error("external URL {0:?} must start with http:// or https://")]
    ExternalUrl(String),
    #[error("TLS needs both a certificate and a key")]
    IncompleteTls,
    #[error("duration {0:?} must be a positive number followed by s, m, h or d")]
    Duration(String),
    #[error("argon2_nice must be idle or 0 to {max}, not {0}", max = MAX_ARGON2_NICE)]
    Argon2Nice(String),
}

/// The shortest root token accepted from `AGENTREG_ROOT_TOKEN`.
pub const ROOT_TOKEN_MIN_CHARS: usize = 20;
/// The least estimated entropy of a root token from `AGENTREG_ROOT_TOKEN`.
const ROOT_TOKEN_MIN_ENTROPY_BITS: f64 = 70.0;

/// A generous estimate of a chosen token's entropy: its length times the bits of the character
/// classes it draws from, counting only the distinct characters, so that `aaaa…` or `abab…`
/// scores low however long it is.
fn estimated_entropy_bits(token: &str) -> f64 {
    let distinct: std::collections::BTreeSet<char> = token.chars().collect();
    let mut pool = 0u32;
    if distinct.iter().any(char::is_ascii_lowercase) {
        pool += 26;
    }
    if distinct.iter().any(char::is_ascii_uppercase) {
        pool += 26;
    }
    if distinct.iter().any(char::is_ascii_digit) {
        pool += 10;
    }
    if distinct.iter().any(|c| !c.is_ascii_alphanumeric()) {
        pool += 33;
    }
    let bits_per_char = f64::from(pool.max(1)).log2();
    // Repeated characters add little: count each distinct one fully and repeats at one bit.
    let n_distinct = distinct.len();
    let n_repeats = token.chars().count().saturating_sub(n_distinct);
    (n_distinct as f64) * bits_per_char + n_repeats as f64
}

impl Settings {
    /// Resolves flags and environment over the config file over the defaults.
    pub fn resolve(args: ServeArgs, root_token: Option<String>) -> Result<Settings, SettingsError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let root_token = match root_token {
            Some(token) if token.chars().count() < ROOT_TOKEN_MIN_CHARS => {
                return Err(SettingsError::RootTokenTooShort);
            }
            Some(token) if estimated_entropy_bits(&token) < ROOT_TOKEN_MIN_ENTROPY_BITS => {
                return Err(SettingsError::RootTokenWeak);
            }
            Some(token) => Some(secrecy::SecretString::from(token)),
            None => None,
        };
        let external_url = args.external_url.or(file.external_url);
        if let Some(url) = &external_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(SettingsError::ExternalUrl(url.clone()));
        }
        Ok(Settings {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("data")),
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            grpc_addr: args
                .grpc_addr
                .or(file.grpc_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051))),
            external_url: external_url.map(|url| url.trim_end_matches('/').to_owned()),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            kas_secret_file: args.kas_secret_file.or(file.kas_secret_file),
            encryption_key_file: args.encryption_key_file.or(file.encryption_key_file),
            receptive_agents_enabled: args
                .receptive_agents_enabled
                .or(file.receptive_agents_enabled)
                .unwrap_or(true),
            root_token,
            tls: match (
                args.tls_cert.or(file.tls_cert),
                args.tls_key.or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                (Some(_), None) | (None, Some(_)) => return Err(SettingsError::IncompleteTls),
            },
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
            metrics_token_file: args.metrics_token_file.or(file.metrics_token_file),
            auth_failures_per_minute: args
                .auth_failures_per_minute
                .or(file.auth_failures_per_minute)
                .unwrap_or(DEFAULT_AUTH_FAILURES_PER_MINUTE),
            agent_token_failures_per_minute: args
                .agent_token_failures_per_minute
                .or(file.agent_token_failures_per_minute)
                .unwrap_or(DEFAULT_AGENT_TOKEN_FAILURES_PER_MINUTE),
            argon2_queue_limit: args
                .argon2_queue_limit
                .or(file.argon2_queue_limit)
                .unwrap_or(DEFAULT_ARGON2_QUEUE_LIMIT),
            argon2_nice: match (args.argon2_nice, file.argon2_nice) {
                (Some(priority), _) => priority,
                (None, Some(value)) => value
                    .to_string()
                    .parse()
                    .map_err(|_| SettingsError::Argon2Nice(value.to_string()))?,
                (None, None) => DEFAULT_ARGON2_NICE,
            },
            trusted_proxies: args
                .trusted_proxies
                .or(file.trusted_proxies)
                .unwrap_or_default(),
            audit_retention: match args
                .audit_retention_days
                .or(file.audit_retention_days)
                .unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS)
            {
                0 => None,
                days => Some(Duration::from_secs(u64::from(days) * 24 * 3600)),
            },
            connections: {
                let defaults = ConnectionLimits::default();
                let secs = |flag: Option<u64>, file: Option<u64>, default: Duration| {
                    flag.or(file)
                        .map_or(default, |secs| Duration::from_secs(secs.max(1)))
                };
                ConnectionLimits {
                    max_connections: args
                        .max_connections
                        .or(file.max_connections)
                        .unwrap_or(defaults.max_connections)
                        .max(1),
                    max_connections_per_address: args
                        .max_connections_per_address
                        .or(file.max_connections_per_address)
                        .unwrap_or(defaults.max_connections_per_address)
                        .max(1),
                    header_read_timeout: secs(
                        args.header_read_timeout_secs,
                        file.header_read_timeout_secs,
                        defaults.header_read_timeout,
                    ),
                    idle_timeout: secs(
                        args.idle_timeout_secs,
                        file.idle_timeout_secs,
                        defaults.idle_timeout,
                    ),
                    request_timeout: secs(
                        args.request_timeout_secs,
                        file.request_timeout_secs,
                        defaults.request_timeout,
                    ),
                    http2_max_concurrent_streams: args
                        .http2_max_concurrent_streams
                        .or(file.http2_max_concurrent_streams)
                        .unwrap_or(defaults.http2_max_concurrent_streams)
                        .max(1),
                    http2_keepalive: secs(
                        args.http2_keepalive_secs,
                        file.http2_keepalive_secs,
                        defaults.http2_keepalive,
                    ),
                    max_header_bytes: args
                        .max_header_bytes
                        .or(file.max_header_bytes)
                        .unwrap_or(defaults.max_header_bytes)
                        .max(1024),
                    grpc_max_message_bytes: args
                        .grpc_max_message_bytes
                        .or(file.grpc_max_message_bytes)
                        .unwrap_or(defaults.grpc_max_message_bytes)
                        .max(1024),
                }
            },
            agent_token_max_lifetime: args
                .agent_token_max_lifetime
                .or(file.agent_token_max_lifetime)
                .map(|text| parse_duration(&text))
                .transpose()?,
            require_agent_token_expiry: args
                .require_agent_token_expiry
                .or(file.require_agent_token_expiry)
                .unwrap_or(false),
            rotation_retrieve_window: match args
                .rotation_retrieve_window
                .or(file.rotation_retrieve_window)
                .as_deref()
            {
                None | Some("0") => None,
                Some(text) => Some(parse_duration(text)?),
            },
            max_rotation_overlap: args
                .max_rotation_overlap
                .or(file.max_rotation_overlap)
                .map(|text| parse_duration(&text))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_ROTATION_OVERLAP),
            database: args.database.resolve(DatabaseArgs {
                database_url: file.database_url,
                database_password_file: file.database_password_file,
                database_pool_size: file.database_pool_size,
                database_statement_timeout_ms: file.database_statement_timeout_ms,
            }),
        })
    }

    /// Settings for tests: a data dir, ephemeral loopback ports, defaults otherwise.
    pub fn for_tests(data_dir: &Path) -> Settings {
        Settings {
            data_dir: data_dir.to_path_buf(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            external_url: None,
            log_format: LogFormat::Text,
            kas_secret_file: None,
            encryption_key_file: None,
            receptive_agents_enabled: true,
            root_token: None,
            tls: None,
            metrics_addr: None,
            metrics_token_file: None,
            auth_failures_per_minute: DEFAULT_AUTH_FAILURES_PER_MINUTE,
            agent_token_failures_per_minute: DEFAULT_AGENT_TOKEN_FAILURES_PER_MINUTE,
            argon2_queue_limit: DEFAULT_ARGON2_QUEUE_LIMIT,
            argon2_nice: DEFAULT_ARGON2_NICE,
            trusted_proxies: Vec::new(),
            audit_retention: Some(Duration::from_secs(
                u64::from(DEFAULT_AUDIT_RETENTION_DAYS) * 24 * 3600,
            )),
            connections: ConnectionLimits::default(),
            agent_token_max_lifetime: None,
            require_agent_token_expiry: false,
            max_rotation_overlap: DEFAULT_MAX_ROTATION_OVERLAP,
            rotation_retrieve_window: None,
            database: None,
        }
    }
}

/// `<n>s`, `<n>m`, `<n>h` or `<n>d`, with `n` positive.
fn parse_duration(text: &str) -> Result<std::time::Duration, SettingsError> {
    let invalid = || SettingsError::Duration(text.to_owned());
    let trimmed = text.trim();
    let split = trimmed.len().saturating_sub(1);
    let (number, unit) = (trimmed.get(..split), trimmed.get(split..));
    let seconds_per_unit: u64 = match unit {
        Some("s") => 1,
        Some("m") => 60,
        Some("h") => 3_600,
        Some("d") => 86_400,
        Some(_) | None => return Err(invalid()),
    };
    let number: u64 = number
        .and_then(|number| number.parse().ok())
        .filter(|number| *number > 0)
        .ok_or_else(invalid)?;
    let seconds = number.checked_mul(seconds_per_unit).ok_or_else(invalid)?;
    Ok(std::time::Duration::from_secs(seconds))
}

fn read_file(path: &Path) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| SettingsError::Parse {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let settings = Settings::resolve(ServeArgs::default(), None).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("data"));
        assert_eq!(settings.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:50051");
        assert!(settings.receptive_agents_enabled);
        assert_eq!(settings.argon2_nice, DEFAULT_ARGON2_NICE);
    }

    #[test]
    fn argon2_nice_is_idle_or_a_linux_niceness_step_from_the_flag_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentreg.toml");
        let from_file = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Settings::resolve(
                ServeArgs {
                    config: Some(path.clone()),
                    ..ServeArgs::default()
                },
                None,
            )
            .map(|settings| settings.argon2_nice)
        };
        assert_eq!(
            from_file("argon2_nice = 3\n").unwrap(),
            HashPriority::Nice(3)
        );
        assert_eq!(
            from_file("argon2_nice = \"idle\"\n").unwrap(),
            HashPriority::Idle
        );
        for refused in [
            "argon2_nice = 20\n",
            "argon2_nice = -1\n",
            "argon2_nice = \"low\"\n",
        ] {
            assert!(
                matches!(from_file(refused), Err(SettingsError::Argon2Nice(_))),
                "{refused}"
            );
        }
        let flag = ServeArgs {
            config: Some(path.clone()),
            argon2_nice: Some(HashPriority::Nice(0)),
            ..ServeArgs::default()
        };
        assert_eq!(
            Settings::resolve(flag, None).unwrap().argon2_nice,
            HashPriority::Nice(0),
            "the flag beats the file"
        );
        let parse = |value: &str| {
            Cli::try_parse_from(["agentreg", "serve", "--argon2-nice", value]).map(|cli| {
                let Command::Serve(args) = cli.command else {
                    unreachable!("parsed serve")
                };
                args.argon2_nice
            })
        };
        assert_eq!(parse("19").unwrap(), Some(HashPriority::Nice(19)));
        assert_eq!(parse("idle").unwrap(), Some(HashPriority::Idle));
        assert!(parse("20").is_err());
        assert!(parse("lowest").is_err());
    }

    #[test]
    fn flags_beat_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentreg.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from-file\"\nhttp_addr = \"0.0.0.0:9000\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            http_addr: Some("127.0.0.1:9100".parse().unwrap()),
            ..ServeArgs::default()
        };
        let settings = Settings::resolve(args, None).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/from-file"));
        assert_eq!(settings.http_addr.to_string(), "127.0.0.1:9100");
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentreg.toml");
        std::fs::write(&path, "datadir = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert!(matches!(
            Settings::resolve(args, None),
            Err(SettingsError::Parse { .. })
        ));
    }

    #[test]
    fn cidrs_parse_and_match_addresses() {
        let network: Cidr = "10.1.0.0/16".parse().unwrap();
        let host: Cidr = "::1".parse().unwrap();

        assert!(network.contains("10.1.200.3".parse().unwrap()));
        assert!(network.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!network.contains("10.2.0.1".parse().unwrap()));
        assert!(host.contains("::1".parse().unwrap()));
        assert!(!host.contains("127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("proxy".parse::<Cidr>().is_err());
    }

    #[test]
    fn limits_come_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentreg.toml");
        std::fs::write(
            &path,
            "trusted_proxies = [\"10.0.0.0/8\"]\nheader_read_timeout_secs = 3\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };

        let settings = Settings::resolve(args, None).unwrap();

        assert_eq!(
            settings.trusted_proxies,
            vec!["10.0.0.0/8".parse().unwrap()]
        );
        assert_eq!(
            settings.connections.header_read_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(settings.connections.max_connections_per_address, 256);
    }

    #[test]
    fn a_low_entropy_root_token_is_refused() {
        for weak in [
            "aaaaaaaaaaaaaaaaaaaa",
            "abababababababababababab",
            "12345678901234567890",
            "passwordpassword1234",
        ] {
            assert!(
                matches!(
                    Settings::resolve(ServeArgs::default(), Some(weak.to_owned())),
                    Err(SettingsError::RootTokenWeak)
                ),
                "{weak}"
            );
        }
        let strong = "glpat-root-token-for-tests-0123456789";
        assert!(Settings::resolve(ServeArgs::default(), Some(strong.to_owned())).is_ok());
    }

    #[test]
    fn durations_take_a_unit_and_must_be_positive() {
        assert_eq!(parse_duration("90d").unwrap().as_secs(), 90 * 86_400);
        assert_eq!(parse_duration("12h").unwrap().as_secs(), 12 * 3_600);
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        for invalid in ["", "d", "0d", "10", "-1d", "1w", "1.5h"] {
            assert!(parse_duration(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn short_root_token_is_refused() {
        assert!(matches!(
            Settings::resolve(ServeArgs::default(), Some("short".to_owned())),
            Err(SettingsError::RootTokenTooShort)
        ));
    }
}
