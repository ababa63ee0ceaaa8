//! Registering, listing, reading and deleting a project's Kubernetes agents, with GitLab's order
//! of checks: parameters, then the project, then the role, then the record.

use super::audit::{self, AuditEntry};
use super::pagination::{KeysetPageInfo, KeysetRequest, PageInfo, Pagination};
use super::{AgentAccess, App, Caller, Error, author, now_ms};
use agentreg_domain::access::ClusterPermission;
use agentreg_domain::entities::{Agent, Project};
use agentreg_domain::ids::{AgentId, ProjectRef};
use agentreg_domain::names::AgentName;
use agentreg_storage::agents::{CreateAgentError, DeleteAgentError, DeletedAgent, UnmodifiedSince};
use std::sync::Arc;

/// GitLab's entity type for agents in audit events.
pub(crate) const AGENT_ENTITY: &str = "Clusters::Agent";

/// An agent with the project it belongs to (GitLab's `config_project`).
#[derive(Debug, Clone)]
pub struct AgentDetails {
    pub agent: Agent,
    pub project: Project,
}

/// A delete's `If-Unmodified-Since`, in whole seconds since the epoch as HTTP dates carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnmodifiedSinceSeconds(pub i64);

impl UnmodifiedSinceSeconds {
    /// HTTP dates have one-second resolution, so a record modified within the named second
    /// still satisfies the precondition.
    pub(crate) fn precondition(self) -> UnmodifiedSince {
        UnmodifiedSince {
            latest_allowed_ms: self.0.saturating_mul(1000).saturating_add(999),
        }
    }
}

/// A project's agents: `app.agents()`.
#[derive(Clone, Copy)]
pub struct Agents<'a> {
    app: &'a App,
}

impl App {
    pub fn agents(&self) -> Agents<'_> {
        Agents { app: self }
    }
}

impl Agents<'_> {
    pub async fn list(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        pagination: Pagination,
    ) -> Result<(Vec<AgentDetails>, PageInfo), Error> {
        let access = self.app.project_access(caller, project_ref).await?;
        if !access.role.can_read_cluster() {
            return Err(Error::ClusterAgentsNotFound);
        }
        let page = self
            .app
            .storage()
            .agents_page(access.project.id, pagination.window())
            .await?;
        let info = pagination.info(page.total);
        Ok((with_project(page.items, &access.project), info))
    }

    /// A keyset page of the project's agents (`pagination=keyset`): by id or by name, either
    /// way, from a cursor. Its order and cursor are checked after the project and the role.
    pub async fn list_keyset(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        request: &KeysetRequest,
    ) -> Result<(Vec<AgentDetails>, KeysetPageInfo), Error> {
        let access = self.app.project_access(caller, project_ref).await?;
        if !access.role.can_read_cluster() {
            return Err(Error::ClusterAgentsNotFound);
        }
        let keyset = request.pagination()?;
        // One more than the page: whether it exists decides the next link.
        let mut agents = self
            .app
            .storage()
            .agents_keyset_page(access.project.id, keyset.seek(), keyset.per_page() + 1)
            .await?;
        let info = keyset.finish(&mut agents);
        Ok((with_project(agents, &access.project), info))
    }

    pub async fn get(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
    ) -> Result<AgentDetails, Error> {
        let AgentAccess { project, agent } = self
            .app
            .agent_access(
                caller,
                project_ref,
                agent_id,
                ClusterPermission::Read,
                Error::RecordNotFound,
            )
            .await?;
        Ok(AgentDetails { agent, project })
    }

    /// Registers an agent. `name` is `None` when the parameter was absent.
    pub async fn create(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        name: Option<String>,
    ) -> Result<AgentDetails, Error> {
        let Some(name) = name else {
            return Err(Error::missing("name"));
        };
        let access = self.app.project_access(caller, project_ref).await?;
        if !access.role.can_admin_cluster() {
            return Err(Error::Forbidden);
        }
        let name = AgentName::parse(&name)?;
        let project_id = access.project.id;
        let author = author(caller);
        let user_id = author.user_id;
        let now = now_ms();
        let audit = Arc::new(move |agent: &Agent| {
            let entry = AuditEntry {
                event_name: "cluster_agent_created",
                message: format!("Created cluster agent '{}'", agent.name),
                entity_type: AGENT_ENTITY,
                entity_id: agent.id.get(),
                target_details: &agent.name,
            };
            audit::event(project_id, author, entry)
        });
        let created = self
            .app
            .storage()
            .create_agent(project_id, name, user_id, now, Some(audit))
            .await;
        match created {
            Ok(agent) => Ok(AgentDetails {
                agent,
                project: access.project,
            }),
            Err(CreateAgentError::NameTaken) => Err(Error::Invalid(vec![
                "Name has already been taken".to_owned(),
            ])),
            Err(CreateAgentError::Store(error)) => Err(error.into()),
        }
    }

    /// Deletes an agent with its tokens and URL configuration. Its tokens stop authenticating
    /// at once.
    pub async fn delete(
        &self,
        caller: &Caller,
        project_ref: &ProjectRef,
        agent_id: AgentId,
        unmodified_since: Option<UnmodifiedSinceSeconds>,
    ) -> Result<(), Error> {
        let access = self.app.project_access(caller, project_ref).await?;
        if !access.role.can_admin_cluster() {
            return Err(Error::Forbidden);
        }
        let project_id = access.project.id;
        let precondition = unmodified_since.map(UnmodifiedSinceSeconds::precondition);
        let author = author(caller);
        let now = now_ms();
        let audit = Arc::new(move |deleted: &DeletedAgent| {
            let entry = AuditEntry {
                event_name: "cluster_agent_deleted",
                message: format!("Deleted cluster agent '{}'", deleted.agent.name),
                entity_type: AGENT_ENTITY,
                entity_id: deleted.agent.id.get(),
                target_details: &deleted.agent.name,
            };
            audit::event(project_id, author, entry)
        });
        let deleted = self
            .app
            .storage()
            .delete_agent(project_id, agent_id, precondition, now, Some(audit))
            .await;
        match deleted {
            Ok(deleted) => {
                self.app.inner.agent_tokens.invalidate(&deleted.token_ids);
                Ok(())
            }
            Err(DeleteAgentError::NotFound) => Err(Error::RecordNotFound),
            Err(DeleteAgentError::PreconditionFailed) => Err(Error::PreconditionFailed),
            Err(DeleteAgentError::Store(error)) => Err(error.into()),
        }
    }
}

fn with_project(agents: Vec<Agent>, project: &Project) -> Vec<AgentDetails> {
    agents
        .into_iter()
        .map(|agent| AgentDetails {
            agent,
            project: project.clone(),
        })
        .collect()
}
