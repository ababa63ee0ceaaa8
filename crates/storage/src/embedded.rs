//! The embedded backend: the port over the sled engine ([`Store`]). Writes wait for a flush and
//! scans walk trees, so they run on the blocking pool; point reads are served from sled's page
//! cache in microseconds and run inline, which spares every request a thread hop.

use crate::agent_tokens::{CreateAgentTokenError, RevokeAgentTokenError, RotateAgentTokenError};
use crate::agents::{AgentSeek, CreateAgentError, DeleteAgentError, DeletedAgent, UnmodifiedSince};
use crate::audit::NewAuditEvent;
use crate::backup::{RestoreError, SnapshotError, SnapshotSummary};
use crate::identity::{
    AddMemberError, CreatePersonalAccessTokenError, CreateProjectError, CreateUserError,
};
use crate::port::{
    AgentTokenCredential, Audit, Counts, InvalidationFeed, InventoryAgent, NewAgentToken,
    NewPersonalAccessToken, NewRotation, NewUrlConfiguration, PersonalAccessTokenCredential,
    ProjectWithAccess, RevokeAgentToken, RotatedAgentToken, RotationRetrieval, Storage,
    TokenDeadlines,
};
use crate::url_configs::{CreateUrlConfigurationError, DeleteUrlConfigurationError};
use crate::{EngineError, OpenError, Page, PageWindow, Store, StoreError};
use agentreg_domain::access::AccessLevel;
use agentreg_domain::entities::{
    Agent, AgentToken, AuditEvent, AuditScope, Member, PersonalAccessToken, Project,
    UrlConfiguration, User,
};
use agentreg_domain::ids::{
    AgentId, AgentTokenId, PersonalAccessTokenId, ProjectId, ProjectRef, UrlConfigurationId, UserId,
};
use agentreg_domain::names::{AgentName, ProjectNaming, UserIdentity};
use agentreg_domain::tokens::{AgentTokenSet, TokenHandle};
use std::path::Path;

/// The port over an embedded sled database. Cheap to clone.
#[derive(Clone)]
pub struct SledStorage {
    store: Store,
}

impl SledStorage {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<SledStorage, OpenError> {
        Ok(SledStorage {
            store: Store::open(dir)?,
        })
    }

    /// An in-memory database that disappears when dropped, for tests.
    pub fn temporary() -> Result<SledStorage, OpenError> {
        Ok(SledStorage {
            store: Store::temporary()?,
        })
    }

    /// Runs an engine call on the blocking pool.
    async fn blocking<T, E, F>(&self, operation: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Store) -> Result<T, E> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || operation(&store)).await {
            Ok(result) => result,
            Err(error) => Err(E::from(StoreError::Engine(EngineError::new(error)))),
        }
    }
}

#[async_trait::async_trait]
impl Storage for SledStorage {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.blocking(|store| store.flush()).await
    }

    fn invalidations(&self) -> Option<InvalidationFeed> {
        None
    }

    async fn hold_rotation_secret(&self, retrieval: RotationRetrieval) -> Result<(), StoreError> {
        self.blocking(move |store| store.hold_rotation_secret(retrieval))
            .await
    }

    async fn take_rotation_secret(
        &self,
        predecessor_id: AgentTokenId,
        idempotency_key: &str,
        user_id: UserId,
        now_ms: i64,
    ) -> Result<Option<(AgentTokenId, Vec<u8>)>, StoreError> {
        let idempotency_key = idempotency_key.to_owned();
        self.blocking(move |store| {
            store.take_rotation_secret(predecessor_id, &idempotency_key, user_id, now_ms)
        })
        .await
    }

    async fn purge_rotation_secrets(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.blocking(move |store| store.purge_rotation_secrets(now_ms))
            .await
    }

    async fn record_key_fingerprint(&self, fingerprint: &str) -> Result<String, StoreError> {
        let fingerprint = fingerprint.to_owned();
        self.blocking(move |store| store.record_key_fingerprint(&fingerprint))
            .await
    }

    async fn has_users(&self) -> Result<bool, StoreError> {
        self.store.has_users()
    }

    async fn create_user(
        &self,
        identity: UserIdentity,
        is_admin: bool,
        now_ms: i64,
    ) -> Result<User, CreateUserError> {
        self.blocking(move |store| store.create_user(&identity, is_admin, now_ms))
            .await
    }

    async fn user(&self, user_id: UserId) -> Result<Option<User>, StoreError> {
        self.store.user(user_id.get())
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.store.user_by_username(username)
    }

    async fn create_personal_access_token(
        &self,
        new: NewPersonalAccessToken,
        now_ms: i64,
    ) -> Result<PersonalAccessToken, CreatePersonalAccessTokenError> {
        self.blocking(move |store| store.create_personal_access_token(new, now_ms))
            .await
    }

    async fn personal_access_token_by_handle(
        &self,
        handle: &TokenHandle,
    ) -> Result<Option<PersonalAccessTokenCredential>, StoreError> {
        self.store.personal_access_token_by_handle(handle)
    }

    async fn revoke_personal_access_token(
        &self,
        token_id: PersonalAccessTokenId,
        now_ms: i64,
        audit: Audit<PersonalAccessToken>,
    ) -> Result<Option<PersonalAccessToken>, StoreError> {
        self.blocking(move |store| {
            store.revoke_personal_access_token(
                token_id.get(),
                now_ms,
                audit.as_deref().map(|audit| audit as _),
            )
        })
        .await
    }

    async fn create_project(
        &self,
        owner_id: UserId,
        naming: ProjectNaming,
        description: Option<String>,
        now_ms: i64,
    ) -> Result<Project, CreateProjectError> {
        self.blocking(move |store| {
            store.create_project(owner_id.get(), &naming, description.as_deref(), now_ms)
        })
        .await
    }

    async fn project(&self, project_id: ProjectId) -> Result<Option<Project>, StoreError> {
        self.store.project(project_id.get())
    }

    async fn project_by_full_path(&self, full_path: &str) -> Result<Option<Project>, StoreError> {
        self.store.project_by_full_path(full_path)
    }

    async fn access_level(
        &self,
        project_id: ProjectId,
        user_id: UserId,
    ) -> Result<Option<AccessLevel>, StoreError> {
        self.store.access_level(project_id.get(), user_id.get())
    }

    async fn project_with_access(
        &self,
        project_ref: &ProjectRef,
        member: Option<UserId>,
        agent_id: Option<AgentId>,
    ) -> Result<Option<ProjectWithAccess>, StoreError> {
        let project = match project_ref {
            ProjectRef::Id(project_id) => self.store.project(project_id.get())?,
            ProjectRef::FullPath(full_path) => self.store.project_by_full_path(full_path)?,
            ProjectRef::Nothing => None,
        };
        let Some(project) = project else {
            return Ok(None);
        };
        let access_level = match member {
            Some(user_id) => self.store.access_level(project.id.get(), user_id.get())?,
            None => None,
        };
        let agent = match agent_id {
            Some(agent_id) => self.store.agent(project.id.get(), agent_id.get())?,
            None => None,
        };
        Ok(Some(ProjectWithAccess {
            project,
            access_level,
            agent,
        }))
    }

    async fn add_member(
        &self,
        project_id: ProjectId,
        user_id: UserId,
        access_level: AccessLevel,
        now_ms: i64,
    ) -> Result<Member, AddMemberError> {
        self.blocking(move |store| {
            store.add_member(project_id.get(), user_id.get(), access_level, now_ms)
        })
        .await
    }

    async fn create_agent(
        &self,
        project_id: ProjectId,
        name: AgentName,
        created_by_user_id: Option<UserId>,
        now_ms: i64,
        audit: Audit<Agent>,
    ) -> Result<Agent, CreateAgentError> {
        self.store
            .register_together(crate::agents::NewRegistration {
                project_id: project_id.get(),
                name,
                created_by_user_id: created_by_user_id.map(UserId::get),
                now_ms,
                audit,
            })
            .await
    }

    async fn agent(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Agent>, StoreError> {
        self.store.agent(project_id.get(), agent_id.get())
    }

    async fn agents_page(
        &self,
        project_id: ProjectId,
        window: PageWindow,
    ) -> Result<Page<Agent>, StoreError> {
        self.blocking(move |store| store.agents_page(project_id.get(), window))
            .await
    }

    async fn agents_keyset_page(
        &self,
        project_id: ProjectId,
        seek: AgentSeek,
        limit: u64,
    ) -> Result<Vec<Agent>, StoreError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.blocking(move |store| store.agents_keyset_page(project_id.get(), &seek, limit))
            .await
    }

    async fn delete_agent(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        precondition: Option<UnmodifiedSince>,
        now_ms: i64,
        audit: Audit<DeletedAgent>,
    ) -> Result<DeletedAgent, DeleteAgentError> {
        self.blocking(move |store| {
            store.delete_agent(
                project_id.get(),
                agent_id.get(),
                precondition,
                now_ms,
                audit.as_deref().map(|audit| audit as _),
            )
        })
        .await
    }

    async fn agent_token_set(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<AgentTokenSet>, StoreError> {
        self.store.agent_token_set(project_id.get(), agent_id.get())
    }

    async fn create_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        new: NewAgentToken,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<AgentToken, CreateAgentTokenError> {
        self.blocking(move |store| {
            store.create_agent_token(
                project_id.get(),
                agent_id.get(),
                new,
                now_ms,
                audit.as_deref().map(|audit| audit as _),
            )
        })
        .await
    }

    async fn active_agent_tokens(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<AgentToken>>, StoreError> {
        self.store
            .active_agent_tokens(project_id.get(), agent_id.get())
    }

    async fn all_agent_tokens(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<AgentToken>>, StoreError> {
        self.store
            .all_agent_tokens(project_id.get(), agent_id.get())
    }

    async fn agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
    ) -> Result<Option<AgentToken>, StoreError> {
        self.store
            .agent_token(project_id.get(), agent_id.get(), token_id.get())
    }

    async fn revoke_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
        revoke: RevokeAgentToken,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<AgentToken, RevokeAgentTokenError> {
        self.blocking(move |store| {
            store.revoke_agent_token(
                project_id.get(),
                agent_id.get(),
                token_id.get(),
                &revoke,
                now_ms,
                audit.as_deref().map(|audit| audit as _),
            )
        })
        .await
    }

    async fn rotate_agent_token(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        token_id: AgentTokenId,
        rotation: NewRotation,
        now_ms: i64,
        audit: Audit<RotatedAgentToken>,
    ) -> Result<RotatedAgentToken, RotateAgentTokenError> {
        self.blocking(move |store| {
            store.rotate_agent_token(
                project_id.get(),
                agent_id.get(),
                token_id.get(),
                rotation,
                now_ms,
                audit.as_deref().map(|audit| audit as _),
            )
        })
        .await
    }

    async fn complete_agent_token_rotation(
        &self,
        successor_id: AgentTokenId,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<Option<AgentToken>, StoreError> {
        self.blocking(move |store| {
            store.complete_agent_token_rotation(
                successor_id.get(),
                now_ms,
                audit.as_deref().map(|audit| audit as _),
            )
        })
        .await
    }

    async fn retire_ended_agent_tokens(
        &self,
        now_ms: i64,
        audit: Audit<AgentToken>,
    ) -> Result<Vec<AgentToken>, StoreError> {
        self.blocking(move |store| {
            store.retire_ended_agent_tokens(now_ms, audit.as_deref().map(|audit| audit as _))
        })
        .await
    }

    async fn agent_token_by_handle(
        &self,
        handle: &TokenHandle,
    ) -> Result<Option<AgentTokenCredential>, StoreError> {
        self.store.agent_token_by_handle(handle)
    }

    async fn record_agent_token_use(
        &self,
        uses: Vec<(AgentTokenId, i64)>,
    ) -> Result<(), StoreError> {
        let uses: Vec<(u64, i64)> = uses
            .into_iter()
            .map(|(token_id, used_at_ms)| (token_id.get(), used_at_ms))
            .collect();
        self.blocking(move |store| store.record_agent_token_use(&uses))
            .await
    }

    async fn all_agents(&self) -> Result<Vec<InventoryAgent>, StoreError> {
        self.blocking(|store| store.all_agents()).await
    }

    async fn create_url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        new: NewUrlConfiguration,
        now_ms: i64,
        audit: Audit<UrlConfiguration>,
    ) -> Result<UrlConfiguration, CreateUrlConfigurationError> {
        self.blocking(move |store| {
            store.create_url_configuration(
                project_id.get(),
                agent_id.get(),
                new,
                now_ms,
                audit.as_deref().map(|audit| audit as _),
            )
        })
        .await
    }

    async fn url_configurations(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
    ) -> Result<Option<Vec<UrlConfiguration>>, StoreError> {
        self.store
            .url_configurations(project_id.get(), agent_id.get())
    }

    async fn url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        url_configuration_id: UrlConfigurationId,
    ) -> Result<Option<UrlConfiguration>, StoreError> {
        self.store
            .url_configuration(project_id.get(), agent_id.get(), url_configuration_id.get())
    }

    async fn delete_url_configuration(
        &self,
        project_id: ProjectId,
        agent_id: AgentId,
        url_configuration_id: UrlConfigurationId,
        precondition: Option<UnmodifiedSince>,
        now_ms: i64,
        audit: Audit<UrlConfiguration>,
    ) -> Result<UrlConfiguration, DeleteUrlConfigurationError> {
        self.blocking(move |store| {
            store.delete_url_configuration(
                project_id.get(),
                agent_id.get(),
                url_configuration_id.get(),
                precondition,
                now_ms,
                audit.as_deref().map(|audit| audit as _),
            )
        })
        .await
    }

    async fn all_url_configurations(&self) -> Result<Vec<UrlConfiguration>, StoreError> {
        self.blocking(|store| store.all_url_configurations()).await
    }

    async fn replace_sealed_key(
        &self,
        url_configuration_id: UrlConfigurationId,
        sealed: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.blocking(move |store| store.replace_sealed_key(url_configuration_id.get(), sealed))
            .await
    }

    async fn record_audit_event(
        &self,
        event: NewAuditEvent,
        now_ms: i64,
    ) -> Result<AuditEvent, StoreError> {
        self.blocking(move |store| store.record_audit_event(event, now_ms))
            .await
    }

    async fn delete_instance_audit_events_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.blocking(move |store| store.delete_instance_audit_events_before(before_ms))
            .await
    }

    async fn audit_events_page(
        &self,
        scope: AuditScope,
        window: PageWindow,
    ) -> Result<Page<AuditEvent>, StoreError> {
        self.blocking(move |store| store.audit_events_page(scope, window))
            .await
    }

    async fn agent_token_deadlines(&self) -> Result<Vec<TokenDeadlines>, StoreError> {
        self.blocking(|store| store.agent_token_deadlines()).await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.blocking(|store| {
            Ok(Counts {
                agents: store.count_agents() as u64,
                active_agent_tokens: store.count_active_agent_tokens()? as u64,
                url_configurations: store.count_url_configurations() as u64,
            })
        })
        .await
    }

    async fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        self.blocking(|store| {
            let mut bytes = Vec::new();
            store.write_snapshot(&mut bytes).map(|_| bytes)
        })
        .await
    }

    async fn restore(&self, snapshot: Vec<u8>) -> Result<SnapshotSummary, RestoreError> {
        self.blocking(move |store| store.restore_into(&snapshot))
            .await
    }
}
