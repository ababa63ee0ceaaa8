//! The role matrix (issue 5): every cluster-agent route, for every kind of caller, answers with
//! the exact status and body the reference gives it (§1.1–§1.5, §2, §3, §5.1–§5.2 and
//! agentreg's decision that Developers read URL configurations), over REST and gRPC alike; and
//! nobody reaches another project's agents, tokens or configurations by any route or id.

use crate::helpers::{ROOT_TOKEN, TestApp};
use agentreg::grpc::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const GUEST: i64 = 10;
const REPORTER: i64 = 20;
const DEVELOPER: i64 = 30;
const MAINTAINER: i64 = 40;

/// The URL every configuration in these tests points at.
const AGENT_URL: &str = "grpc://agent.example.com";
/// A personal access token that was never issued.
const UNKNOWN_TOKEN: &str = "glpat-this-token-was-never-issued-by-anyone";
const INSUFFICIENT_SCOPE_DESCRIPTION: &str =
    "The request requires higher privileges than provided by the access token.";

#[tokio::test]
async fn every_route_answers_every_kind_of_caller_as_the_reference_says() {
    let world = World::build().await;
    let targets = world.targets_for_every_caller().await;

    let mut mismatches = run_matrix(&world, &targets, Transport::Rest).await;
    mismatches.extend(check_effects(&world, &targets).await);

    assert!(
        mismatches.is_empty(),
        "{} REST cells differ from the reference:\n{}",
        mismatches.len(),
        table(&mismatches)
    );
}

#[tokio::test]
async fn grpc_answers_every_kind_of_caller_with_the_codes_and_messages_of_rest() {
    let world = World::build().await;
    let targets = world.targets_for_every_caller().await;

    let mut mismatches = run_matrix(&world, &targets, Transport::Grpc).await;
    mismatches.extend(check_effects(&world, &targets).await);

    assert!(
        mismatches.is_empty(),
        "{} gRPC cells differ from the reference:\n{}",
        mismatches.len(),
        table(&mismatches)
    );
}

#[tokio::test]
async fn no_caller_reaches_another_projects_agents_tokens_or_configurations() {
    let world = World::build().await;
    let own = Resources::of_project(&world);
    let other = Resources::of_other_project(&world);
    let maintainer = world.token(CallerKind::Maintainer);
    let owner = world.token(CallerKind::Owner);
    let mut probes = Vec::new();
    for (caller, token) in [
        ("maintainer of P", maintainer),
        ("owner of P", owner),
        ("admin", Some(ROOT_TOKEN)),
    ] {
        probes.extend(foreign_ids_through_own_project(caller, token, &own, &other));
    }
    for (caller, token) in [("maintainer of P", maintainer), ("owner of P", owner)] {
        probes.extend(project_of_which_caller_is_no_member(caller, token, &other));
    }
    let other_owner = Some(world.other_owner_token.as_str());
    probes.extend(foreign_ids_through_own_project(
        "owner of Q",
        other_owner,
        &other,
        &own,
    ));

    let mut mismatches = Vec::new();
    for transport in [Transport::Rest, Transport::Grpc] {
        for probe in &probes {
            let observed = perform(&world.app, &probe.call, probe.token, transport).await;
            if let Some((expected, got)) = compare(&probe.call, probe.outcome, &observed) {
                mismatches.push(Mismatch {
                    request: describe_request(&probe.call, transport),
                    caller: probe.caller.to_owned(),
                    expected,
                    got,
                });
            }
        }
    }
    mismatches.extend(check_unchanged(&world.app, &own, "P").await);
    mismatches.extend(check_unchanged(&world.app, &other, "Q").await);

    assert!(
        mismatches.is_empty(),
        "{} cross-project probes or checks failed:\n{}",
        mismatches.len(),
        table(&mismatches)
    );
}

/// The ten kinds of caller issue 5 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerKind {
    Anonymous,
    UnknownToken,
    /// A Maintainer of P whose token has only the `read_api` scope.
    ReadApiMaintainer,
    NonMember,
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
    Admin,
}

const CALLERS: [CallerKind; 10] = [
    CallerKind::Anonymous,
    CallerKind::UnknownToken,
    CallerKind::ReadApiMaintainer,
    CallerKind::NonMember,
    CallerKind::Guest,
    CallerKind::Reporter,
    CallerKind::Developer,
    CallerKind::Maintainer,
    CallerKind::Owner,
    CallerKind::Admin,
];

/// Every cluster-agent route; each has a REST path and a gRPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    ListAgents,
    GetAgent,
    CreateAgent,
    DeleteAgent,
    ListTokens,
    GetToken,
    CreateToken,
    RevokeToken,
    ListUrlConfigurations,
    GetUrlConfiguration,
    CreateUrlConfiguration,
    DeleteUrlConfiguration,
}

const ROUTES: [Route; 12] = [
    Route::ListAgents,
    Route::GetAgent,
    Route::CreateAgent,
    Route::DeleteAgent,
    Route::ListTokens,
    Route::GetToken,
    Route::CreateToken,
    Route::RevokeToken,
    Route::ListUrlConfigurations,
    Route::GetUrlConfiguration,
    Route::CreateUrlConfiguration,
    Route::DeleteUrlConfiguration,
];

/// What a cell should answer. Each error carries one message that REST puts in its body and
/// gRPC in its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Unauthorized,
    InsufficientScope,
    Forbidden,
    ProjectNotFound,
    ClusterAgentsNotFound,
    /// GitLab's `RecordNotFound`, `404 Not found` with a lower-case "f".
    RecordNotFound,
    /// GitLab's `not_found!`, `404 Not Found`.
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Rest,
    Grpc,
}

/// One request: a route and the ids in its path. Ids a route does not take are ignored, except
/// that a list's expected member is `agent_id` (agents) or `item_id` (tokens, configurations).
#[derive(Debug, Clone)]
struct Call {
    route: Route,
    project_id: i64,
    agent_id: i64,
    /// The token or URL configuration in the path.
    item_id: i64,
    /// The name to register (`CreateAgent` only).
    agent_name: String,
}

/// What came back: REST's status and body, or gRPC's result with the response flattened into
/// JSON with REST's key names (only the keys the checks need).
#[derive(Debug)]
enum Observed {
    Rest(StatusCode, Value),
    Grpc(Result<Value, tonic::Status>),
}

/// A cell that differs from the reference, for the failure table.
#[derive(Debug)]
struct Mismatch {
    request: String,
    caller: String,
    expected: String,
    got: String,
}

/// One TestApp with project P (owned by "owner") holding agent A, its active token T and its URL
/// configuration C; project Q (owned by "other-owner") holding B, TB and CB; and a token for
/// every kind of caller.
struct World {
    app: TestApp,
    project_id: i64,
    agent_id: i64,
    token_id: i64,
    url_configuration_id: i64,
    other_project_id: i64,
    other_agent_id: i64,
    other_token_id: i64,
    other_url_configuration_id: i64,
    caller_tokens: Vec<(CallerKind, Option<String>)>,
    other_owner_token: String,
}

/// Per caller, fresh records for the rows that change something, so that every row is
/// independent of the others and of the order they run in.
struct Targets {
    caller: CallerKind,
    new_agent_name: String,
    doomed_agent_id: i64,
    tokenless_agent_id: i64,
    revocable_agent_id: i64,
    revocable_token_id: i64,
    unconfigured_agent_id: i64,
    configured_agent_id: i64,
    configured_url_configuration_id: i64,
}

/// A project's agent, token and configuration, for the isolation test.
struct Resources {
    project_id: i64,
    agent_id: i64,
    agent_name: &'static str,
    token_id: i64,
    url_configuration_id: i64,
}

/// One isolation request with the answer it must get.
struct Probe<'a> {
    caller: &'static str,
    token: Option<&'a str>,
    call: Call,
    outcome: Outcome,
}

/// Adds `private-token` metadata when there is a token, and nothing for anonymous callers.
#[derive(Clone)]
struct OptionalToken(Option<MetadataValue<Ascii>>);

impl CallerKind {
    fn label(self) -> &'static str {
        match self {
            CallerKind::Anonymous => "anonymous",
            CallerKind::UnknownToken => "unknown-token",
            CallerKind::ReadApiMaintainer => "read-api-maintainer",
            CallerKind::NonMember => "non-member",
            CallerKind::Guest => "guest",
            CallerKind::Reporter => "reporter",
            CallerKind::Developer => "developer",
            CallerKind::Maintainer => "maintainer",
            CallerKind::Owner => "owner",
            CallerKind::Admin => "admin",
        }
    }
}

impl Route {
    fn writes(self) -> bool {
        match self {
            Route::CreateAgent
            | Route::DeleteAgent
            | Route::CreateToken
            | Route::RevokeToken
            | Route::CreateUrlConfiguration
            | Route::DeleteUrlConfiguration => true,
            Route::ListAgents
            | Route::GetAgent
            | Route::ListTokens
            | Route::GetToken
            | Route::ListUrlConfigurations
            | Route::GetUrlConfiguration => false,
        }
    }

    fn is_url_configuration_route(self) -> bool {
        matches!(
            self,
            Route::ListUrlConfigurations
                | Route::GetUrlConfiguration
                | Route::CreateUrlConfiguration
                | Route::DeleteUrlConfiguration
        )
    }

    fn method(self) -> Method {
        match self {
            Route::ListAgents
            | Route::GetAgent
            | Route::ListTokens
            | Route::GetToken
            | Route::ListUrlConfigurations
            | Route::GetUrlConfiguration => Method::GET,
            Route::CreateAgent | Route::CreateToken | Route::CreateUrlConfiguration => Method::POST,
            Route::DeleteAgent | Route::RevokeToken | Route::DeleteUrlConfiguration => {
                Method::DELETE
            }
        }
    }

    fn success_status(self) -> StatusCode {
        match self.method() {
            Method::POST => StatusCode::CREATED,
            Method::DELETE => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        }
    }

    fn label(self, transport: Transport) -> String {
        const AGENTS: &str = "/projects/:id/cluster_agents";
        const AGENT: &str = "/projects/:id/cluster_agents/:agent_id";
        let path = match self {
            Route::ListAgents | Route::CreateAgent => AGENTS.to_owned(),
            Route::GetAgent | Route::DeleteAgent => AGENT.to_owned(),
            Route::ListTokens | Route::CreateToken => format!("{AGENT}/tokens"),
            Route::GetToken | Route::RevokeToken => format!("{AGENT}/tokens/:token_id"),
            Route::ListUrlConfigurations | Route::CreateUrlConfiguration => {
                format!("{AGENT}/url_configurations")
            }
            Route::GetUrlConfiguration | Route::DeleteUrlConfiguration => {
                format!("{AGENT}/url_configurations/:url_configuration_id")
            }
        };
        match transport {
            Transport::Rest => format!("{} {path}", self.method()),
            Transport::Grpc => self.grpc_method().to_owned(),
        }
    }

    fn grpc_method(self) -> &'static str {
        match self {
            Route::ListAgents => "AgentService.ListAgents",
            Route::GetAgent => "AgentService.GetAgent",
            Route::CreateAgent => "AgentService.CreateAgent",
            Route::DeleteAgent => "AgentService.DeleteAgent",
            Route::ListTokens => "AgentTokenService.ListAgentTokens",
            Route::GetToken => "AgentTokenService.GetAgentToken",
            Route::CreateToken => "AgentTokenService.CreateAgentToken",
            Route::RevokeToken => "AgentTokenService.RevokeAgentToken",
            Route::ListUrlConfigurations => "UrlConfigurationService.ListUrlConfigurations",
            Route::GetUrlConfiguration => "UrlConfigurationService.GetUrlConfiguration",
            Route::CreateUrlConfiguration => "UrlConfigurationService.CreateUrlConfiguration",
            Route::DeleteUrlConfiguration => "UrlConfigurationService.DeleteUrlConfiguration",
        }
    }
}

impl Outcome {
    /// The reference's answer for a caller on P's own records. A `read_api` token reads as its
    /// role would (§1.1); Guests and Reporters get 404 on agent and token reads (§1.5, §2.1,
    /// §2.2, §3.1, §3.2) but 403 on URL-configuration reads (§5.2); Developers read everything,
    /// URL configurations included (agentreg's decision), and write nothing.
    fn expected(route: Route, caller: CallerKind) -> Outcome {
        match caller {
            CallerKind::Anonymous | CallerKind::UnknownToken => Outcome::Unauthorized,
            CallerKind::ReadApiMaintainer if route.writes() => Outcome::InsufficientScope,
            CallerKind::NonMember => Outcome::ProjectNotFound,
            CallerKind::Guest | CallerKind::Reporter
                if route.writes() || route.is_url_configuration_route() =>
            {
                Outcome::Forbidden
            }
            CallerKind::Guest | CallerKind::Reporter if route == Route::ListAgents => {
                Outcome::ClusterAgentsNotFound
            }
            CallerKind::Guest | CallerKind::Reporter => Outcome::RecordNotFound,
            CallerKind::Developer if route.writes() => Outcome::Forbidden,
            CallerKind::Developer
            | CallerKind::ReadApiMaintainer
            | CallerKind::Maintainer
            | CallerKind::Owner
            | CallerKind::Admin => Outcome::Success,
        }
    }

    /// The text of an error: REST's `message` and gRPC's status message. A scope failure has
    /// no `message` in REST (its body is OAuth's); gRPC joins that body's `error` and
    /// `error_description`.
    fn message(self) -> String {
        match self {
            Outcome::Success => String::new(),
            Outcome::Unauthorized => "401 Unauthorized".to_owned(),
            Outcome::InsufficientScope => {
                format!("insufficient_scope: {INSUFFICIENT_SCOPE_DESCRIPTION}")
            }
            Outcome::Forbidden => "403 Forbidden".to_owned(),
            Outcome::ProjectNotFound => "404 Project Not Found".to_owned(),
            Outcome::ClusterAgentsNotFound => "404 ClusterAgents Not Found".to_owned(),
            Outcome::RecordNotFound => "404 Not found".to_owned(),
            Outcome::NotFound => "404 Not Found".to_owned(),
        }
    }

    /// The REST status and, for errors, the exact body (§1.1, §1.3).
    fn rest(self, route: Route) -> (StatusCode, Option<Value>) {
        match self {
            Outcome::Success => (route.success_status(), None),
            Outcome::InsufficientScope => (
                StatusCode::FORBIDDEN,
                Some(json!({
                    "error": "insufficient_scope",
                    "error_description": INSUFFICIENT_SCOPE_DESCRIPTION,
                    "scope": "api",
                })),
            ),
            Outcome::Unauthorized => (StatusCode::UNAUTHORIZED, Some(self.message_body())),
            Outcome::Forbidden => (StatusCode::FORBIDDEN, Some(self.message_body())),
            Outcome::ProjectNotFound
            | Outcome::ClusterAgentsNotFound
            | Outcome::RecordNotFound
            | Outcome::NotFound => (StatusCode::NOT_FOUND, Some(self.message_body())),
        }
    }

    fn message_body(self) -> Value {
        json!({ "message": self.message() })
    }

    /// The gRPC code; the message is [`Outcome::message`].
    fn grpc_code(self) -> Code {
        match self {
            Outcome::Success => Code::Ok,
            Outcome::Unauthorized => Code::Unauthenticated,
            Outcome::InsufficientScope | Outcome::Forbidden => Code::PermissionDenied,
            Outcome::ProjectNotFound
            | Outcome::ClusterAgentsNotFound
            | Outcome::RecordNotFound
            | Outcome::NotFound => Code::NotFound,
        }
    }
}

impl World {
    async fn build() -> World {
        // Anonymous and unknown-token cells fail authentication on purpose; the failure
        // throttle is not what these tests are about.
        let app = TestApp::spawn_with(|settings| settings.auth_failures_per_minute = 10_000).await;
        let (_, owner) = app.user("owner").await;
        let project_id = app.project(&owner, "platform").await;
        let (read_api_user_id, read_api) = app
            .user_with_scopes("read-api-maintainer", &["read_api"])
            .await;
        app.add_member(project_id, read_api_user_id, MAINTAINER)
            .await;
        let (_, non_member) = app.user("non-member").await;
        let guest = app.member(project_id, "guest", GUEST).await;
        let reporter = app.member(project_id, "reporter", REPORTER).await;
        let developer = app.member(project_id, "developer", DEVELOPER).await;
        let maintainer = app.member(project_id, "maintainer", MAINTAINER).await;
        let (_, other_owner_token) = app.user("other-owner").await;
        let other_project_id = app.project(&other_owner_token, "quarantine").await;

        let agent_id = app.agent(project_id, "primary").await;
        let (token_id, _) = app.agent_token(project_id, agent_id, "primary").await;
        let url_configuration_id = url_configuration(&app, project_id, agent_id).await;
        let other_agent_id = app.agent(other_project_id, "foreign").await;
        let (other_token_id, _) = app
            .agent_token(other_project_id, other_agent_id, "foreign")
            .await;
        let other_url_configuration_id =
            url_configuration(&app, other_project_id, other_agent_id).await;

        let caller_tokens = vec![
            (CallerKind::Anonymous, None),
            (CallerKind::UnknownToken, Some(UNKNOWN_TOKEN.to_owned())),
            (CallerKind::ReadApiMaintainer, Some(read_api)),
            (CallerKind::NonMember, Some(non_member)),
            (CallerKind::Guest, Some(guest)),
            (CallerKind::Reporter, Some(reporter)),
            (CallerKind::Developer, Some(developer)),
            (CallerKind::Maintainer, Some(maintainer)),
            (CallerKind::Owner, Some(owner)),
            (CallerKind::Admin, Some(ROOT_TOKEN.to_owned())),
        ];
        World {
            app,
            project_id,
            agent_id,
            token_id,
            url_configuration_id,
            other_project_id,
            other_agent_id,
            other_token_id,
            other_url_configuration_id,
            caller_tokens,
            other_owner_token,
        }
    }

    fn token(&self, caller: CallerKind) -> Option<&str> {
        self.caller_tokens
            .iter()
            .find(|(kind, _)| *kind == caller)
            .and_then(|(_, token)| token.as_deref())
    }

    async fn targets_for_every_caller(&self) -> Vec<Targets> {
        futures::future::join_all(CALLERS.map(|caller| self.targets(caller))).await
    }

    /// Fresh records in P for `caller`'s rows that change something, created as root.
    async fn targets(&self, caller: CallerKind) -> Targets {
        let app = &self.app;
        let prefix = caller.label();
        let project_id = self.project_id;
        let doomed_agent_id = app.agent(project_id, &format!("{prefix}-doomed")).await;
        let tokenless_agent_id = app.agent(project_id, &format!("{prefix}-tokenless")).await;
        let revocable_agent_id = app.agent(project_id, &format!("{prefix}-revocable")).await;
        let (revocable_token_id, _) = app
            .agent_token(project_id, revocable_agent_id, "revocable")
            .await;
        let unconfigured_agent_id = app
            .agent(project_id, &format!("{prefix}-unconfigured"))
            .await;
        let configured_agent_id = app.agent(project_id, &format!("{prefix}-configured")).await;
        let configured_url_configuration_id =
            url_configuration(app, project_id, configured_agent_id).await;
        Targets {
            caller,
            new_agent_name: format!("{prefix}-created"),
            doomed_agent_id,
            tokenless_agent_id,
            revocable_agent_id,
            revocable_token_id,
            unconfigured_agent_id,
            configured_agent_id,
            configured_url_configuration_id,
        }
    }

    /// The request of `route`'s row for the caller of `targets`: reads address A, T and C;
    /// writes address the caller's own fresh records.
    fn matrix_call(&self, targets: &Targets, route: Route) -> Call {
        let (agent_id, item_id) = match route {
            Route::ListAgents
            | Route::GetAgent
            | Route::CreateAgent
            | Route::ListTokens
            | Route::GetToken => (self.agent_id, self.token_id),
            Route::DeleteAgent => (targets.doomed_agent_id, 0),
            Route::CreateToken => (targets.tokenless_agent_id, 0),
            Route::RevokeToken => (targets.revocable_agent_id, targets.revocable_token_id),
            Route::ListUrlConfigurations | Route::GetUrlConfiguration => {
                (self.agent_id, self.url_configuration_id)
            }
            Route::CreateUrlConfiguration => (targets.unconfigured_agent_id, 0),
            Route::DeleteUrlConfiguration => (
                targets.configured_agent_id,
                targets.configured_url_configuration_id,
            ),
        };
        Call {
            route,
            project_id: self.project_id,
            agent_id,
            item_id,
            agent_name: targets.new_agent_name.clone(),
        }
    }
}

impl Resources {
    fn of_project(world: &World) -> Resources {
        Resources {
            project_id: world.project_id,
            agent_id: world.agent_id,
            agent_name: "primary",
            token_id: world.token_id,
            url_configuration_id: world.url_configuration_id,
        }
    }

    fn of_other_project(world: &World) -> Resources {
        Resources {
            project_id: world.other_project_id,
            agent_id: world.other_agent_id,
            agent_name: "foreign",
            token_id: world.other_token_id,
            url_configuration_id: world.other_url_configuration_id,
        }
    }
}

impl OptionalToken {
    fn new(token: Option<&str>) -> OptionalToken {
        OptionalToken(token.map(|token| token.parse().expect("ascii token")))
    }
}

impl Interceptor for OptionalToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("private-token", token.clone());
        }
        Ok(request)
    }
}

/// Runs every (route, caller) cell and returns the ones that differ from the reference.
async fn run_matrix(world: &World, targets: &[Targets], transport: Transport) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    for route in ROUTES {
        for caller_targets in targets {
            let caller = caller_targets.caller;
            let call = world.matrix_call(caller_targets, route);
            let outcome = Outcome::expected(route, caller);
            let observed = perform(&world.app, &call, world.token(caller), transport).await;
            if let Some((expected, got)) = compare(&call, outcome, &observed) {
                mismatches.push(Mismatch {
                    request: route.label(transport),
                    caller: caller.label().to_owned(),
                    expected,
                    got,
                });
            }
        }
    }
    mismatches
}

/// Checks, as root, that every write row changed its record exactly when it succeeded.
async fn check_effects(world: &World, targets: &[Targets]) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    for route in ROUTES.into_iter().filter(|route| route.writes()) {
        for caller_targets in targets {
            let call = world.matrix_call(caller_targets, route);
            let expected = Outcome::expected(route, caller_targets.caller) == Outcome::Success;
            let applied = write_applied(&world.app, &call).await;
            if applied != expected {
                let describe =
                    |applied: bool| if applied { "applied" } else { "not applied" }.to_owned();
                mismatches.push(Mismatch {
                    request: format!("effect of {}", route.label(Transport::Rest)),
                    caller: caller_targets.caller.label().to_owned(),
                    expected: describe(expected),
                    got: describe(applied),
                });
            }
        }
    }
    mismatches
}

/// Whether a matrix write row's change is visible to root. Rows work on fresh records, so a
/// created token or configuration means the row's create succeeded.
async fn write_applied(app: &TestApp, call: &Call) -> bool {
    let agents = format!("/projects/{}/cluster_agents", call.project_id);
    let agent = format!("{agents}/{}", call.agent_id);
    let non_empty = |body: &Value| body.as_array().is_some_and(|items| !items.is_empty());
    match call.route {
        Route::CreateAgent => {
            let (_, body) = app.get(&format!("{agents}?per_page=100"), ROOT_TOKEN).await;
            body.as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|item| item["name"] == call.agent_name.as_str())
            })
        }
        Route::DeleteAgent => app.get(&agent, ROOT_TOKEN).await.0 == StatusCode::NOT_FOUND,
        Route::CreateToken => non_empty(&app.get(&format!("{agent}/tokens"), ROOT_TOKEN).await.1),
        Route::RevokeToken => {
            let path = format!("{agent}/tokens/{}", call.item_id);
            app.get(&path, ROOT_TOKEN).await.0 == StatusCode::NOT_FOUND
        }
        Route::CreateUrlConfiguration => {
            let path = format!("{agent}/url_configurations");
            non_empty(&app.get(&path, ROOT_TOKEN).await.1)
        }
        Route::DeleteUrlConfiguration => {
            let path = format!("{agent}/url_configurations/{}", call.item_id);
            app.get(&path, ROOT_TOKEN).await.0 == StatusCode::NOT_FOUND
        }
        Route::ListAgents
        | Route::GetAgent
        | Route::ListTokens
        | Route::GetToken
        | Route::ListUrlConfigurations
        | Route::GetUrlConfiguration => false,
    }
}

/// Every route that takes ids, by a caller of `own` project addressing `foreign` records
/// through its own project's path: all are 404s from the finders, never the foreign record.
fn foreign_ids_through_own_project<'a>(
    caller: &'static str,
    token: Option<&'a str>,
    own: &Resources,
    foreign: &Resources,
) -> Vec<Probe<'a>> {
    let probe = |route: Route, agent_id: i64, item_id: i64, outcome: Outcome| Probe {
        caller,
        token,
        call: Call {
            route,
            project_id: own.project_id,
            agent_id,
            item_id,
            agent_name: "intruder".to_owned(),
        },
        outcome,
    };
    let foreign_agent = foreign.agent_id;
    let foreign_token = foreign.token_id;
    let foreign_config = foreign.url_configuration_id;
    vec![
        probe(Route::GetAgent, foreign_agent, 0, Outcome::RecordNotFound),
        probe(
            Route::DeleteAgent,
            foreign_agent,
            0,
            Outcome::RecordNotFound,
        ),
        probe(Route::ListTokens, foreign_agent, 0, Outcome::RecordNotFound),
        probe(
            Route::GetToken,
            foreign_agent,
            foreign_token,
            Outcome::RecordNotFound,
        ),
        probe(
            Route::CreateToken,
            foreign_agent,
            0,
            Outcome::RecordNotFound,
        ),
        probe(
            Route::RevokeToken,
            foreign_agent,
            foreign_token,
            Outcome::RecordNotFound,
        ),
        probe(
            Route::GetToken,
            own.agent_id,
            foreign_token,
            Outcome::RecordNotFound,
        ),
        probe(
            Route::RevokeToken,
            own.agent_id,
            foreign_token,
            Outcome::RecordNotFound,
        ),
        probe(
            Route::ListUrlConfigurations,
            foreign_agent,
            0,
            Outcome::RecordNotFound,
        ),
        probe(
            Route::GetUrlConfiguration,
            foreign_agent,
            foreign_config,
            Outcome::RecordNotFound,
        ),
        probe(
            Route::CreateUrlConfiguration,
            foreign_agent,
            0,
            Outcome::RecordNotFound,
        ),
        probe(
            Route::DeleteUrlConfiguration,
            foreign_agent,
            foreign_config,
            Outcome::RecordNotFound,
        ),
        // The agent is the caller's own, so the finder succeeds; the configuration id then
        // does not match the agent's configuration (§5.4, §5.6).
        probe(
            Route::GetUrlConfiguration,
            own.agent_id,
            foreign_config,
            Outcome::NotFound,
        ),
        probe(
            Route::DeleteUrlConfiguration,
            own.agent_id,
            foreign_config,
            Outcome::NotFound,
        ),
    ]
}

/// Every route on a project the caller is not a member of, with that project's real ids.
fn project_of_which_caller_is_no_member<'a>(
    caller: &'static str,
    token: Option<&'a str>,
    foreign: &Resources,
) -> Vec<Probe<'a>> {
    ROUTES
        .into_iter()
        .map(|route| {
            let item_id = if route.is_url_configuration_route() {
                foreign.url_configuration_id
            } else {
                foreign.token_id
            };
            Probe {
                caller,
                token,
                call: Call {
                    route,
                    project_id: foreign.project_id,
                    agent_id: foreign.agent_id,
                    item_id,
                    agent_name: "intruder".to_owned(),
                },
                outcome: Outcome::ProjectNotFound,
            }
        })
        .collect()
}

/// Checks as root that a project still has exactly its one agent, with its one active token and
/// its one configuration.
async fn check_unchanged(app: &TestApp, resources: &Resources, project: &str) -> Vec<Mismatch> {
    let agents = format!("/projects/{}/cluster_agents", resources.project_id);
    let agent = format!("{agents}/{}", resources.agent_id);
    let names: fn(&Value) -> Value = |body| column(body, "name");
    let ids: fn(&Value) -> Value = |body| column(body, "id");
    let id: fn(&Value) -> Value = |body| body["id"].clone();
    let status_of: fn(&Value) -> Value = |body| body["status"].clone();
    let url: fn(&Value) -> Value = |body| body["url"].clone();
    let checks = [
        (
            agents.clone(),
            "names of agents",
            names,
            json!([resources.agent_name]),
        ),
        (agent.clone(), "agent id", id, json!(resources.agent_id)),
        (
            format!("{agent}/tokens"),
            "ids of active tokens",
            ids,
            json!([resources.token_id]),
        ),
        (
            format!("{agent}/tokens/{}", resources.token_id),
            "token status",
            status_of,
            json!("active"),
        ),
        (
            format!("{agent}/url_configurations"),
            "ids of configurations",
            ids,
            json!([resources.url_configuration_id]),
        ),
        (
            format!(
                "{agent}/url_configurations/{}",
                resources.url_configuration_id
            ),
            "configuration url",
            url,
            json!(AGENT_URL),
        ),
    ];
    let mut mismatches = Vec::new();
    for (path, what, extract, expected) in checks {
        let (status, body) = app.get(&path, ROOT_TOKEN).await;
        let got = extract(&body);
        if status != StatusCode::OK || got != expected {
            mismatches.push(Mismatch {
                request: format!("afterwards, as root: GET {path}"),
                caller: format!("{what} of {project}"),
                expected: format!("200 {expected}"),
                got: format!("{} {got} (body {body})", status.as_u16()),
            });
        }
    }
    mismatches
}

/// The values of `key` in a JSON array of objects (or the body itself if it is no array).
fn column(body: &Value, key: &str) -> Value {
    body.as_array()
        .map(|items| items.iter().map(|item| item[key].clone()).collect())
        .unwrap_or_else(|| body.clone())
}

/// Sends `call` as the holder of `token` over `transport`.
async fn perform(
    app: &TestApp,
    call: &Call,
    token: Option<&str>,
    transport: Transport,
) -> Observed {
    match transport {
        Transport::Rest => {
            let (method, path, body) = rest_request(call);
            let (status, body) = app.call(method, &path, token, body).await;
            Observed::Rest(status, body)
        }
        Transport::Grpc => Observed::Grpc(grpc_call(app, call, token).await),
    }
}

/// `Some((expected, got))` when the answer differs from `outcome`, both as readable text.
fn compare(call: &Call, outcome: Outcome, observed: &Observed) -> Option<(String, String)> {
    match observed {
        Observed::Rest(status, body) => {
            let (expected_status, expected_body) = outcome.rest(call.route);
            let matches = *status == expected_status
                && match &expected_body {
                    Some(expected_body) => body == expected_body,
                    None => success_matches(call, body),
                };
            let expected = match expected_body {
                Some(expected_body) => format!("{} {expected_body}", expected_status.as_u16()),
                None => format!("{} {}", expected_status.as_u16(), success_shape(call)),
            };
            (!matches).then(|| (expected, format!("{} {body}", status.as_u16())))
        }
        Observed::Grpc(result) => {
            let expected_code = outcome.grpc_code();
            let expected_message = outcome.message();
            let matches = match result {
                Ok(body) => outcome == Outcome::Success && success_matches(call, body),
                Err(status) => {
                    status.code() == expected_code && status.message() == expected_message
                }
            };
            let expected = match outcome {
                Outcome::Success => format!("Ok {}", success_shape(call)),
                Outcome::Unauthorized
                | Outcome::InsufficientScope
                | Outcome::Forbidden
                | Outcome::ProjectNotFound
                | Outcome::ClusterAgentsNotFound
                | Outcome::RecordNotFound
                | Outcome::NotFound => format!("{expected_code:?} {expected_message:?}"),
            };
            let got = match result {
                Ok(body) => format!("Ok {body}"),
                Err(status) => format!("{:?} {:?}", status.code(), status.message()),
            };
            (!matches).then_some((expected, got))
        }
    }
}

/// Whether a successful answer is the right one: reads return the addressed records, creates
/// return what was created, deletes return nothing.
fn success_matches(call: &Call, body: &Value) -> bool {
    let lists = |id: i64| {
        body.as_array()
            .is_some_and(|items| items.iter().any(|item| item["id"] == id))
    };
    match call.route {
        Route::ListAgents => lists(call.agent_id),
        Route::GetAgent => body["id"] == call.agent_id,
        Route::CreateAgent => body["name"] == call.agent_name.as_str(),
        Route::ListTokens | Route::ListUrlConfigurations => lists(call.item_id),
        Route::GetToken | Route::GetUrlConfiguration => {
            body["id"] == call.item_id && body["agent_id"] == call.agent_id
        }
        Route::CreateToken => {
            body["agent_id"] == call.agent_id
                && body["token"]
                    .as_str()
                    .is_some_and(|token| token.starts_with("glagent-"))
        }
        Route::CreateUrlConfiguration => {
            body["agent_id"] == call.agent_id && body["url"] == AGENT_URL
        }
        Route::DeleteAgent | Route::RevokeToken | Route::DeleteUrlConfiguration => body.is_null(),
    }
}

/// What `success_matches` looks for, for the failure table.
fn success_shape(call: &Call) -> String {
    match call.route {
        Route::ListAgents => format!("a list with agent {}", call.agent_id),
        Route::GetAgent => format!("agent {}", call.agent_id),
        Route::CreateAgent => format!("an agent named {}", call.agent_name),
        Route::ListTokens => format!("a list with token {}", call.item_id),
        Route::ListUrlConfigurations => format!("a list with configuration {}", call.item_id),
        Route::GetToken => format!("token {} of agent {}", call.item_id, call.agent_id),
        Route::GetUrlConfiguration => {
            format!("configuration {} of agent {}", call.item_id, call.agent_id)
        }
        Route::CreateToken => format!("a glagent- token of agent {}", call.agent_id),
        Route::CreateUrlConfiguration => {
            format!("a configuration of agent {} for {AGENT_URL}", call.agent_id)
        }
        Route::DeleteAgent | Route::RevokeToken | Route::DeleteUrlConfiguration => {
            "no body".to_owned()
        }
    }
}

/// The REST method, path (under `/api/v4`) and body of `call`.
fn rest_request(call: &Call) -> (Method, String, Option<Value>) {
    let agents = format!("/projects/{}/cluster_agents", call.project_id);
    let agent = format!("{agents}/{}", call.agent_id);
    let item = call.item_id;
    let (path, body) = match call.route {
        // Every caller's fresh agents share P with A, so one page must hold them all.
        Route::ListAgents => (format!("{agents}?per_page=100"), None),
        Route::CreateAgent => (agents, Some(json!({"name": call.agent_name}))),
        Route::GetAgent | Route::DeleteAgent => (agent, None),
        Route::ListTokens => (format!("{agent}/tokens"), None),
        Route::CreateToken => (format!("{agent}/tokens"), Some(json!({"name": "matrix"}))),
        Route::GetToken | Route::RevokeToken => (format!("{agent}/tokens/{item}"), None),
        Route::ListUrlConfigurations => (format!("{agent}/url_configurations"), None),
        Route::CreateUrlConfiguration => (
            format!("{agent}/url_configurations"),
            Some(json!({"url": AGENT_URL})),
        ),
        Route::GetUrlConfiguration | Route::DeleteUrlConfiguration => {
            (format!("{agent}/url_configurations/{item}"), None)
        }
    };
    (call.route.method(), path, body)
}

/// `call` with its real ids, for the isolation table.
fn describe_request(call: &Call, transport: Transport) -> String {
    match transport {
        Transport::Rest => {
            let (method, path, _) = rest_request(call);
            format!("REST {method} {path}")
        }
        Transport::Grpc => format!(
            "gRPC {} (project {}, agent {}, item {})",
            call.route.grpc_method(),
            call.project_id,
            call.agent_id,
            call.item_id
        ),
    }
}

/// Calls the gRPC twin of `call`'s route; a success is flattened into JSON with REST's keys.
async fn grpc_call(
    app: &TestApp,
    call: &Call,
    token: Option<&str>,
) -> Result<Value, tonic::Status> {
    let interceptor = OptionalToken::new(token);
    let project = call.project_id.to_string();
    let agent_id = call.agent_id;
    let agents = || agent_client(&app.channel, interceptor.clone());
    let tokens = || token_client(&app.channel, interceptor.clone());
    let url_configs = || url_config_client(&app.channel, interceptor.clone());
    let listed = |ids: Vec<i64>| {
        json!(
            ids.into_iter()
                .map(|id| json!({"id": id}))
                .collect::<Vec<_>>()
        )
    };
    match call.route {
        Route::ListAgents => {
            let request = pb::ListAgentsRequest {
                project,
                page: Some(pb::PageRequest {
                    page: None,
                    per_page: Some(100),
                }),
                keyset: None,
            };
            let response = agents().list_agents(request).await?.into_inner();
            Ok(listed(
                response.agents.iter().map(|agent| agent.id).collect(),
            ))
        }
        Route::GetAgent => {
            let request = pb::GetAgentRequest { project, agent_id };
            let agent = agents().get_agent(request).await?.into_inner();
            Ok(json!({"id": agent.id, "name": agent.name}))
        }
        Route::CreateAgent => {
            let request = pb::CreateAgentRequest {
                project,
                name: Some(call.agent_name.clone()),
            };
            let agent = agents().create_agent(request).await?.into_inner();
            Ok(json!({"id": agent.id, "name": agent.name}))
        }
        Route::DeleteAgent => {
            let request = pb::DeleteAgentRequest {
                project,
                agent_id,
                if_unmodified_since: None,
            };
            agents().delete_agent(request).await?;
            Ok(Value::Null)
        }
        Route::ListTokens => {
            let request = pb::ListAgentTokensRequest {
                status: None,
                project,
                agent_id,
                page: None,
            };
            let response = tokens().list_agent_tokens(request).await?.into_inner();
            Ok(listed(
                response.tokens.iter().map(|token| token.id).collect(),
            ))
        }
        Route::GetToken => {
            let request = pb::GetAgentTokenRequest {
                project,
                agent_id,
                token_id: call.item_id,
            };
            let token = tokens().get_agent_token(request).await?.into_inner();
            Ok(json!({"id": token.id, "agent_id": token.agent_id}))
        }
        Route::CreateToken => {
            let request = pb::CreateAgentTokenRequest {
                expires_at: None,
                project,
                agent_id,
                name: Some("matrix".to_owned()),
                description: None,
            };
            let token = tokens().create_agent_token(request).await?.into_inner();
            Ok(json!({"id": token.id, "agent_id": token.agent_id, "token": token.token}))
        }
        Route::RevokeToken => {
            let request = pb::RevokeAgentTokenRequest {
                reason: None,
                project,
                agent_id,
                token_id: call.item_id,
            };
            tokens().revoke_agent_token(request).await?;
            Ok(Value::Null)
        }
        Route::ListUrlConfigurations => {
            let request = pb::ListUrlConfigurationsRequest { project, agent_id };
            let response = url_configs()
                .list_url_configurations(request)
                .await?
                .into_inner();
            Ok(listed(
                response
                    .url_configurations
                    .iter()
                    .map(|config| config.id)
                    .collect(),
            ))
        }
        Route::GetUrlConfiguration => {
            let request = pb::GetUrlConfigurationRequest {
                project,
                agent_id,
                url_configuration_id: call.item_id,
            };
            let config = url_configs()
                .get_url_configuration(request)
                .await?
                .into_inner();
            Ok(json!({"id": config.id, "agent_id": config.agent_id, "url": config.url}))
        }
        Route::CreateUrlConfiguration => {
            let request = pb::CreateUrlConfigurationRequest {
                project,
                agent_id,
                url: Some(AGENT_URL.to_owned()),
                ..Default::default()
            };
            let config = url_configs()
                .create_url_configuration(request)
                .await?
                .into_inner();
            Ok(json!({"id": config.id, "agent_id": config.agent_id, "url": config.url}))
        }
        Route::DeleteUrlConfiguration => {
            let request = pb::DeleteUrlConfigurationRequest {
                project,
                agent_id,
                url_configuration_id: call.item_id,
                if_unmodified_since: None,
            };
            url_configs().delete_url_configuration(request).await?;
            Ok(Value::Null)
        }
    }
}

fn agent_client(
    channel: &Channel,
    interceptor: OptionalToken,
) -> pb::agent_service_client::AgentServiceClient<InterceptedService<Channel, OptionalToken>> {
    pb::agent_service_client::AgentServiceClient::with_interceptor(channel.clone(), interceptor)
}

fn token_client(
    channel: &Channel,
    interceptor: OptionalToken,
) -> pb::agent_token_service_client::AgentTokenServiceClient<
    InterceptedService<Channel, OptionalToken>,
> {
    pb::agent_token_service_client::AgentTokenServiceClient::with_interceptor(
        channel.clone(),
        interceptor,
    )
}

fn url_config_client(
    channel: &Channel,
    interceptor: OptionalToken,
) -> pb::url_configuration_service_client::UrlConfigurationServiceClient<
    InterceptedService<Channel, OptionalToken>,
> {
    pb::url_configuration_service_client::UrlConfigurationServiceClient::with_interceptor(
        channel.clone(),
        interceptor,
    )
}

/// Creates a JWT-mode URL configuration as root; returns its id.
async fn url_configuration(app: &TestApp, project_id: i64, agent_id: i64) -> i64 {
    let (status, config) = app
        .post(
            &format!("/projects/{project_id}/cluster_agents/{agent_id}/url_configurations"),
            ROOT_TOKEN,
            json!({"url": AGENT_URL}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{config}");
    config["id"].as_i64().expect("configuration id")
}

/// The mismatches as an aligned table.
fn table(mismatches: &[Mismatch]) -> String {
    let header = ["request", "caller", "expected", "got"];
    let rows: Vec<[&str; 4]> = mismatches
        .iter()
        .map(|mismatch| {
            [
                mismatch.request.as_str(),
                mismatch.caller.as_str(),
                mismatch.expected.as_str(),
                shortened(&mismatch.got),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (column_idx, cell) in row.iter().enumerate() {
            widths[column_idx] = widths[column_idx].max(cell.len());
        }
    }
    std::iter::once(header)
        .chain(rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join(" | ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most `MAX_CELL_CHARS` characters of a table cell, so that a whole list in a body does not
/// bury the table.
fn shortened(text: &str) -> &str {
    const MAX_CELL_CHARS: usize = 200;
    match text.char_indices().nth(MAX_CELL_CHARS) {
        Some((byte_idx, _)) => &text[..byte_idx],
        None => text,
    }
}
