//! `TestApp`: the real application on ephemeral ports with a temporary data directory, plus
//! typed REST and gRPC helpers. Logs are silent unless `TEST_LOG=1`.

#![allow(
    dead_code,
    reason = "each test module uses a different subset of the helpers"
)]

use agentreg::config::Settings;
use agentreg::grpc::pb;
use agentreg::startup::Application;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Once;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The administrator's token in every test instance.
pub(crate) const ROOT_TOKEN: &str = "glpat-root-token-for-tests-0123456789";
/// The raw KAS shared secret of every test instance.
pub(crate) const KAS_SECRET: [u8; 32] = [42; 32];

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .init();
        }
    });
}

/// A running application.
pub(crate) struct TestApp {
    pub(crate) base_url: String,
    pub(crate) grpc_addr: String,
    pub(crate) http: reqwest::Client,
    pub(crate) channel: Channel,
    pub(crate) data_dir: PathBuf,
    _temp_dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts an instance with default settings.
    pub(crate) async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// Starts an instance after `configure` adjusts its settings.
    pub(crate) async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
        let temp_dir = tempfile::tempdir().expect("temp dir");
        let data_dir = temp_dir.path().join("data");
        let mut app = TestApp::start(&data_dir, configure).await;
        app._temp_dir = Some(temp_dir);
        app
    }

    /// Starts an instance on an existing data directory (after a restart). With
    /// `AGENTREG_TEST_DATABASE_URL` set, the instance runs on PostgreSQL: a fresh database per
    /// data directory, created on first start and reused on restarts.
    pub(crate) async fn start(data_dir: &Path, configure: impl FnOnce(&mut Settings)) -> TestApp {
        init_tracing();
        let database = test_database(data_dir).await;
        let kas_file = data_dir.with_extension("kas_secret");
        std::fs::write(
            &kas_file,
            base64::engine::general_purpose::STANDARD.encode(KAS_SECRET),
        )
        .expect("kas secret");
        let mut settings = Settings::for_tests(data_dir);
        settings.root_token = Some(ROOT_TOKEN.to_owned().into());
        settings.kas_secret_file = Some(kas_file);
        settings.database = database;
        configure(&mut settings);
        let application = build_when_unlocked(settings).await;
        let http_addr = application.http_addr().expect("http addr");
        let grpc_addr = application.grpc_addr().expect("grpc addr");
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until(async move {
            let _ = stop.await;
        }));
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .expect("grpc uri")
            .connect_lazy();
        TestApp {
            base_url: format!("http://{http_addr}"),
            grpc_addr: grpc_addr.to_string(),
            http: reqwest::Client::new(),
            channel,
            data_dir: data_dir.to_path_buf(),
            _temp_dir: None,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Stops gracefully and waits until the store is flushed.
    pub(crate) async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
        self._temp_dir.take()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/api/v4{path}", self.base_url)
    }

    /// A request with `PRIVATE-TOKEN`, or anonymous when `token` is `None`.
    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match token {
            Some(token) => builder.header("PRIVATE-TOKEN", token),
            None => builder,
        }
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let builder = self.request(method, path, token);
        let builder = match body {
            Some(body) => builder.json(&body),
            None => builder,
        };
        let response = builder.send().await.expect("request sent");
        read(response).await
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a user with an `api` token (or the given scopes); returns (user id, token).
    pub(crate) async fn user(&self, username: &str) -> (i64, String) {
        self.user_with_scopes(username, &["api"]).await
    }

    pub(crate) async fn user_with_scopes(&self, username: &str, scopes: &[&str]) -> (i64, String) {
        let (status, user) = self
            .post(
                "/users",
                ROOT_TOKEN,
                json!({"username": username, "name": username.to_uppercase(), "email": format!("{username}@example.com")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        let user_id = user["id"].as_i64().expect("user id");
        let (status, token) = self
            .post(
                &format!("/users/{user_id}/personal_access_tokens"),
                ROOT_TOKEN,
                json!({"name": "test", "scopes": scopes}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{token}");
        (user_id, token["token"].as_str().expect("token").to_owned())
    }

    /// Creates a project owned by the holder of `token`; returns its id.
    pub(crate) async fn project(&self, token: &str, name: &str) -> i64 {
        let (status, project) = self.post("/projects", token, json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{project}");
        project["id"].as_i64().expect("project id")
    }

    pub(crate) async fn add_member(&self, project_id: i64, user_id: i64, access_level: i64) {
        let (status, body) = self
            .post(
                &format!("/projects/{project_id}/members"),
                ROOT_TOKEN,
                json!({"user_id": user_id, "access_level": access_level}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// A new user with the given role in the project; returns their token.
    pub(crate) async fn member(
        &self,
        project_id: i64,
        username: &str,
        access_level: i64,
    ) -> String {
        let (user_id, token) = self.user(username).await;
        self.add_member(project_id, user_id, access_level).await;
        token
    }

    /// Registers an agent as root; returns its id.
    pub(crate) async fn agent(&self, project_id: i64, name: &str) -> i64 {
        let (status, agent) = self
            .post(
                &format!("/projects/{project_id}/cluster_agents"),
                ROOT_TOKEN,
                json!({"name": name}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{agent}");
        agent["id"].as_i64().expect("agent id")
    }

    /// Creates an agent token as root; returns (token id, secret).
    pub(crate) async fn agent_token(
        &self,
        project_id: i64,
        agent_id: i64,
        name: &str,
    ) -> (i64, String) {
        let (status, token) = self
            .post(
                &format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
                ROOT_TOKEN,
                json!({"name": name}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{token}");
        (
            token["id"].as_i64().expect("token id"),
            token["token"].as_str().expect("secret").to_owned(),
        )
    }

    /// A valid agent-server JWT for this instance.
    pub(crate) fn kas_jwt(&self) -> String {
        kas_jwt_signed_with(&KAS_SECRET)
    }

    /// `GET /internal/agents/agentk/agent_info` with a valid KAS JWT.
    pub(crate) async fn agent_info(&self, agent_token: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url("/internal/agents/agentk/agent_info"))
            .header("Gitlab-Kas-Api-Request", self.kas_jwt())
            .header("Gitlab-Agent-Api-Request", agent_token)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    pub(crate) fn grpc_agents(
        &self,
        token: &str,
    ) -> pb::agent_service_client::AgentServiceClient<InterceptedService<Channel, WithToken>> {
        pb::agent_service_client::AgentServiceClient::with_interceptor(
            self.channel.clone(),
            WithToken::new(token),
        )
    }

    pub(crate) fn grpc_tokens(
        &self,
        token: &str,
    ) -> pb::agent_token_service_client::AgentTokenServiceClient<
        InterceptedService<Channel, WithToken>,
    > {
        pb::agent_token_service_client::AgentTokenServiceClient::with_interceptor(
            self.channel.clone(),
            WithToken::new(token),
        )
    }

    pub(crate) fn grpc_admin_tokens(
        &self,
        token: &str,
    ) -> pb::admin_token_service_client::AdminTokenServiceClient<
        InterceptedService<Channel, WithToken>,
    > {
        pb::admin_token_service_client::AdminTokenServiceClient::with_interceptor(
            self.channel.clone(),
            WithToken::new(token),
        )
    }

    pub(crate) fn grpc_url_configs(
        &self,
        token: &str,
    ) -> pb::url_configuration_service_client::UrlConfigurationServiceClient<
        InterceptedService<Channel, WithToken>,
    > {
        pb::url_configuration_service_client::UrlConfigurationServiceClient::with_interceptor(
            self.channel.clone(),
            WithToken::new(token),
        )
    }

    pub(crate) fn grpc_projects(
        &self,
        token: &str,
    ) -> pb::project_service_client::ProjectServiceClient<InterceptedService<Channel, WithToken>>
    {
        pb::project_service_client::ProjectServiceClient::with_interceptor(
            self.channel.clone(),
            WithToken::new(token),
        )
    }

    pub(crate) fn grpc_users(
        &self,
        token: &str,
    ) -> pb::user_service_client::UserServiceClient<InterceptedService<Channel, WithToken>> {
        pb::user_service_client::UserServiceClient::with_interceptor(
            self.channel.clone(),
            WithToken::new(token),
        )
    }

    pub(crate) fn grpc_meta(
        &self,
        token: &str,
    ) -> pb::meta_service_client::MetaServiceClient<InterceptedService<Channel, WithToken>> {
        pb::meta_service_client::MetaServiceClient::with_interceptor(
            self.channel.clone(),
            WithToken::new(token),
        )
    }

    /// The internal service, with the KAS JWT and (optionally) an agent token in the metadata.
    pub(crate) fn grpc_internal(
        &self,
        kas_jwt: Option<String>,
        agent_token: Option<&str>,
    ) -> pb::internal_service_client::InternalServiceClient<InterceptedService<Channel, WithMetadata>>
    {
        let mut pairs = Vec::new();
        if let Some(jwt) = kas_jwt {
            pairs.push(("gitlab-kas-api-request", jwt));
        }
        if let Some(token) = agent_token {
            pairs.push(("gitlab-agent-api-request", token.to_owned()));
        }
        pb::internal_service_client::InternalServiceClient::with_interceptor(
            self.channel.clone(),
            WithMetadata(pairs),
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Whether an error says that a sled directory is still held by a store. A test that stops an
/// instance and reopens its directory in the same process may see this for a moment, while the
/// stopped instance's last tasks drop their handles.
pub(crate) fn is_locked(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<agentreg_storage::OpenError>()
            .is_some_and(agentreg_storage::OpenError::is_locked)
    })
}

/// Builds the application, retrying only while its directory is still locked.
async fn build_when_unlocked(settings: Settings) -> Application {
    for _ in 0..100 {
        match Application::build(settings.clone()).await {
            Ok(application) => return application,
            Err(error) if is_locked(&error) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(error) => panic!("application builds: {error:#}"),
        }
    }
    panic!("the data directory stayed locked for two seconds")
}

/// Reads a response's status and JSON body (`Null` when empty).
pub(crate) async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("body read");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body)
}

/// An HS256 JWT with issuer `gitlab-kas` and audience `gitlab`.
pub(crate) fn kas_jwt_signed_with(secret: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({"iss": "gitlab-kas", "aud": "gitlab", "iat": now, "exp": now + 60});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("jwt encodes")
}

/// Adds `private-token` metadata to every call.
#[derive(Clone)]
pub(crate) struct WithToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl WithToken {
    /// Also for clients the helpers do not build.
    pub(crate) fn new(token: &str) -> WithToken {
        WithToken(token.parse().expect("ascii token"))
    }
}

impl Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("private-token", self.0.clone());
        Ok(request)
    }
}

/// Adds fixed metadata to every call.
#[derive(Clone)]
pub(crate) struct WithMetadata(Vec<(&'static str, String)>);

impl WithMetadata {
    /// Also for clients the helpers do not build.
    pub(crate) fn new(pairs: Vec<(&'static str, String)>) -> WithMetadata {
        WithMetadata(pairs)
    }
}

impl Interceptor for WithMetadata {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (key, value) in &self.0 {
            request
                .metadata_mut()
                .insert(*key, value.parse().expect("ascii metadata"));
        }
        Ok(request)
    }
}

/// The status of a gRPC error and its message.
pub(crate) fn grpc_error<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
) -> (tonic::Code, String) {
    let status = result.expect_err("the call should fail");
    (status.code(), status.message().to_owned())
}

/// REST's spelling of a gRPC token status, to compare the two protocols' answers.
pub(crate) fn status_name(status: pb::TokenStatus) -> &'static str {
    match status {
        pb::TokenStatus::Active => "active",
        pb::TokenStatus::Revoked => "revoked",
        pb::TokenStatus::Unspecified => "unspecified",
    }
}

/// Every file under `dir`, recursively, as bytes.
pub(crate) fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                files.push((path, bytes));
            }
        }
    }
    files
}

/// Whether `needle` occurs anywhere the instance on `dir` stored data: any file under `dir`,
/// and, when it ran on PostgreSQL, any row of its database (as JSON text, and every `bytea`
/// value as raw bytes, so that a secret kept in clear in a binary column is found too).
pub(crate) async fn data_dir_contains(dir: &Path, needle: &[u8]) -> bool {
    let contains = |bytes: &[u8]| bytes.windows(needle.len()).any(|window| window == needle);
    if files_under(dir).iter().any(|(_, bytes)| contains(bytes)) {
        return true;
    }
    let Ok(url) = std::fs::read_to_string(dir.with_extension("database_url")) else {
        return false;
    };
    database_values(&url)
        .await
        .iter()
        .any(|bytes| contains(bytes))
}

/// Every stored value of a PostgreSQL database: each row of each table as JSON text, and each
/// `bytea` value as its raw bytes.
async fn database_values(url: &str) -> Vec<Vec<u8>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test database");
    tokio::spawn(connection);
    let mut values = Vec::new();
    let tables = client
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .expect("listing tables");
    for table in tables {
        let table: String = table.get(0);
        for row in client
            .query(
                &format!("SELECT row_to_json(t)::text FROM \"{table}\" t"),
                &[],
            )
            .await
            .expect("reading a table")
        {
            values.push(row.get::<_, String>(0).into_bytes());
        }
    }
    let binary_columns = client
        .query(
            "SELECT table_name, column_name FROM information_schema.columns \
             WHERE table_schema = 'public' AND data_type = 'bytea'",
            &[],
        )
        .await
        .expect("listing bytea columns");
    for column in binary_columns {
        let (table, column): (String, String) = (column.get(0), column.get(1));
        for row in client
            .query(&format!("SELECT \"{column}\" FROM \"{table}\""), &[])
            .await
            .expect("reading a bytea column")
        {
            if let Some(bytes) = row.get::<_, Option<Vec<u8>>>(0) {
                values.push(bytes);
            }
        }
    }
    values
}

/// The admin URL of the PostgreSQL server the suite runs on, if it runs on one.
pub(crate) fn postgres_admin_url() -> Option<String> {
    std::env::var("AGENTREG_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// A new, empty PostgreSQL database on the test server; returns its URL.
pub(crate) async fn create_database(admin_url: &str) -> String {
    let name = format!("agentreg_it_{:016x}", rand::random::<u64>());
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test PostgreSQL server");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a test database");
    drop(client);
    let _ = connection.await;
    database_url(admin_url, &name)
}

/// `admin_url` with its database name replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_end = base
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The database settings of the instance on `data_dir`, when the suite runs on PostgreSQL: the
/// database is created on first use and remembered beside the data directory for restarts.
pub(crate) async fn test_database(data_dir: &Path) -> Option<agentreg::config::DatabaseSettings> {
    let admin_url = postgres_admin_url()?;
    let marker = data_dir.with_extension("database_url");
    let url = match std::fs::read_to_string(&marker) {
        Ok(url) => url,
        Err(_) => {
            let url = create_database(&admin_url).await;
            std::fs::write(&marker, &url).expect("remembering the test database");
            url
        }
    };
    Some(postgres_settings(url))
}

/// Settings for an instance on the PostgreSQL database at `url`.
pub(crate) fn postgres_settings(url: String) -> agentreg::config::DatabaseSettings {
    agentreg::config::DatabaseSettings {
        url,
        password_file: None,
        pool_size: 8,
        statement_timeout: std::time::Duration::from_secs(5),
    }
}

/// `agentreg backup` of a sled directory this process has just stopped serving, retrying only
/// while the stopped instance still holds it.
pub(crate) async fn backup_when_unlocked(
    database: Option<&agentreg::config::DatabaseSettings>,
    data_dir: &Path,
    out: &Path,
    key_file: Option<&Path>,
) {
    for _ in 0..100 {
        match agentreg::snapshots::backup(database, data_dir, out, key_file).await {
            Ok(_) => return,
            Err(error) if is_locked(&error) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(error) => panic!("backup failed: {error:#}"),
        }
    }
    panic!("the data directory stayed locked for two seconds")
}
