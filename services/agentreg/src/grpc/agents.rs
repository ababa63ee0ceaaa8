//! `AgentService`, `AgentTokenService` and `AdminTokenService`.

use super::pb::admin_token_service_server::AdminTokenService;
use super::pb::agent_service_server::AgentService;
use super::pb::agent_token_service_server::AgentTokenService;
use super::{
    caller, id, keyset_request, page_info, pagination, pb, status, timestamp, unmodified_since,
};
use crate::app::admin_tokens::IdentifiedToken;
use crate::app::agent_tokens::{NewAgentTokenInput, RotateAgentTokenInput, TokenListStatus};
use crate::app::agents::AgentDetails;
use crate::app::inventory::InventoryFilters;
use crate::app::refusals::ParameterError;
use crate::app::{App, Error, Intent};
use agentreg_domain::access::Scope;
use agentreg_domain::entities::{AgentToken, TokenStatus};
use agentreg_domain::ids::{AgentId, AgentTokenId, ProjectRef};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

pub struct AgentGrpc {
    pub app: App,
}

pub struct AgentTokenGrpc {
    pub app: App,
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn list_instance_agents(
        &self,
        request: Request<pb::ListInstanceAgentsRequest>,
    ) -> Result<Response<pb::ListInstanceAgentsResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let pagination = pagination(request.page)?;
        let filters = InventoryFilters {
            unused_since: request.unused_since,
            token_expires_before: request.token_expires_before,
            project: request.project,
        };
        let (entries, info) = self
            .app
            .agent_inventory(&caller, filters, pagination)
            .await
            .map_err(status)?;
        let agents = entries
            .iter()
            .map(|entry| pb::InventoryAgent {
                agent: Some(agent(&AgentDetails {
                    agent: entry.agent.clone(),
                    project: entry.project.clone(),
                })),
                project_path: entry.project.path_with_namespace(),
                active_tokens: i64::try_from(entry.n_active_tokens).unwrap_or(i64::MAX),
                last_used_at: entry.last_used_at_ms.map(timestamp),
                earliest_expires_at: entry.earliest_expires_at_ms.map(timestamp),
            })
            .collect();
        Ok(Response::new(pb::ListInstanceAgentsResponse {
            agents,
            page_info: Some(page_info(&info)),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let project = ProjectRef::parse(&request.project);
        match (request.page, request.keyset) {
            (page, None) => {
                let pagination = pagination(page)?;
                let (agents, info) = self
                    .app
                    .agents()
                    .list(&caller, &project, pagination)
                    .await
                    .map_err(status)?;
                Ok(Response::new(pb::ListAgentsResponse {
                    agents: agents.iter().map(agent).collect(),
                    page_info: Some(page_info(&info)),
                    next_cursor: None,
                }))
            }
            (None, Some(keyset)) => {
                let keyset = keyset_request(keyset)?;
                let (agents, info) = self
                    .app
                    .agents()
                    .list_keyset(&caller, &project, &keyset)
                    .await
                    .map_err(status)?;
                Ok(Response::new(pb::ListAgentsResponse {
                    agents: agents.iter().map(agent).collect(),
                    page_info: None,
                    next_cursor: info.next_cursor,
                }))
            }
            (Some(_), Some(_)) => Err(status(Error::InvalidParameter(
                ParameterError::MutuallyExclusive(["page", "keyset"]),
            ))),
        }
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let details = self
            .app
            .agents()
            .get(
                &caller,
                &ProjectRef::parse(&request.project),
                AgentId::from_wire(request.agent_id),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(agent(&details)))
    }

    async fn create_agent(
        &self,
        request: Request<pb::CreateAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let details = self
            .app
            .agents()
            .create(&caller, &ProjectRef::parse(&request.project), request.name)
            .await
            .map_err(status)?;
        Ok(Response::new(agent(&details)))
    }

    async fn delete_agent(
        &self,
        request: Request<pb::DeleteAgentRequest>,
    ) -> Result<Response<pb::DeleteAgentResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let since = unmodified_since(request.if_unmodified_since);
        self.app
            .agents()
            .delete(
                &caller,
                &ProjectRef::parse(&request.project),
                AgentId::from_wire(request.agent_id),
                since,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteAgentResponse {}))
    }
}

#[tonic::async_trait]
impl AgentTokenService for AgentTokenGrpc {
    async fn list_agent_tokens(
        &self,
        request: Request<pb::ListAgentTokensRequest>,
    ) -> Result<Response<pb::ListAgentTokensResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let pagination = pagination(request.page)?;
        let token_status = token_list_status(request.status).map_err(status)?;
        let (tokens, info) = self
            .app
            .agent_tokens()
            .list(
                &caller,
                &ProjectRef::parse(&request.project),
                AgentId::from_wire(request.agent_id),
                token_status,
                pagination,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListAgentTokensResponse {
            tokens: tokens.iter().map(|t| token(t, false)).collect(),
            page_info: Some(page_info(&info)),
        }))
    }

    async fn get_agent_token(
        &self,
        request: Request<pb::GetAgentTokenRequest>,
    ) -> Result<Response<pb::AgentToken>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let found = self
            .app
            .agent_tokens()
            .get(
                &caller,
                &ProjectRef::parse(&request.project),
                AgentId::from_wire(request.agent_id),
                AgentTokenId::from_wire(request.token_id),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(token(&found, true)))
    }

    async fn create_agent_token(
        &self,
        request: Request<pb::CreateAgentTokenRequest>,
    ) -> Result<Response<pb::AgentToken>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let input = NewAgentTokenInput {
            name: request.name,
            description: request.description,
            expires_at: request.expires_at,
        };
        let created = self
            .app
            .agent_tokens()
            .create(
                &caller,
                &ProjectRef::parse(&request.project),
                AgentId::from_wire(request.agent_id),
                input,
            )
            .await
            .map_err(status)?;
        let mut response = token(&created.token, true);
        response.token = Some(created.plaintext.expose_secret().to_owned());
        Ok(Response::new(response))
    }

    async fn revoke_agent_token(
        &self,
        request: Request<pb::RevokeAgentTokenRequest>,
    ) -> Result<Response<pb::RevokeAgentTokenResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        self.app
            .agent_tokens()
            .revoke(
                &caller,
                &ProjectRef::parse(&request.project),
                AgentId::from_wire(request.agent_id),
                AgentTokenId::from_wire(request.token_id),
                request.reason,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeAgentTokenResponse {}))
    }

    async fn rotate_agent_token(
        &self,
        request: Request<pb::RotateAgentTokenRequest>,
    ) -> Result<Response<pb::RotateAgentTokenResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let idempotency_key = request
            .metadata()
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let request = request.into_inner();
        let input = RotateAgentTokenInput {
            idempotency_key,
            name: request.name,
            description: request.description,
            expires_at: request.expires_at,
            overlap_seconds: request.overlap_seconds,
        };
        let rotated = self
            .app
            .agent_tokens()
            .rotate(
                &caller,
                &ProjectRef::parse(&request.project),
                AgentId::from_wire(request.agent_id),
                AgentTokenId::from_wire(request.token_id),
                input,
            )
            .await
            .map_err(status)?;
        let mut successor = token(&rotated.successor.token, true);
        successor.token = Some(rotated.successor.plaintext.expose_secret().to_owned());
        Ok(Response::new(pb::RotateAgentTokenResponse {
            successor: Some(successor),
            predecessor: Some(token(&rotated.predecessor, true)),
        }))
    }
}

/// `AdminTokenService`.
pub struct AdminTokenGrpc {
    pub app: App,
}

#[tonic::async_trait]
impl AdminTokenService for AdminTokenGrpc {
    async fn identify_token(
        &self,
        request: Request<pb::IdentifyTokenRequest>,
    ) -> Result<Response<pb::IdentifiedToken>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let value = request.into_inner().token.map(SecretString::from);
        let identified = self
            .app
            .admin_tokens()
            .identify(&caller, value)
            .await
            .map_err(status)?;
        let found = match &identified {
            IdentifiedToken::Agent(agent_token) => {
                pb::identified_token::Token::AgentToken(token(agent_token, true))
            }
            IdentifiedToken::PersonalAccess(pat) => {
                pb::identified_token::Token::PersonalAccessToken(pb::PersonalAccessToken {
                    id: id(pat.id),
                    name: pat.name.clone(),
                    revoked: pat.revoked,
                    created_at: Some(timestamp(pat.created_at_ms)),
                    scopes: Scope::names(&pat.scopes),
                    user_id: id(pat.user_id),
                    active: !pat.revoked,
                    expires_at: pat.expires_at.map(|expires_at| expires_at.to_string()),
                    token: String::new(),
                })
            }
        };
        Ok(Response::new(pb::IdentifiedToken { token: Some(found) }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let value = request.into_inner().token.map(SecretString::from);
        self.app
            .admin_tokens()
            .revoke(&caller, value)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}

pub(super) fn agent(details: &AgentDetails) -> pb::Agent {
    pb::Agent {
        id: id(details.agent.id),
        name: details.agent.name.clone(),
        config_project: Some(super::identity::project(&details.project)),
        created_at: Some(timestamp(details.agent.created_at_ms)),
        created_by_user_id: details.agent.created_by_user_id.map(id),
        is_receptive: details.agent.is_receptive(),
    }
}

/// The list filter of `ListAgentTokensRequest.status`: unset or unspecified is the default, and
/// a number the enum does not name is refused as REST refuses an unknown `status`.
fn token_list_status(value: Option<i32>) -> Result<TokenListStatus, Error> {
    match value.map(pb::TokenStatus::try_from) {
        None | Some(Ok(pb::TokenStatus::Unspecified)) => Ok(TokenListStatus::default()),
        Some(Ok(pb::TokenStatus::Active)) => Ok(TokenListStatus::Active),
        Some(Ok(pb::TokenStatus::Revoked)) => Ok(TokenListStatus::Revoked),
        Some(Err(_)) => Err(TokenListStatus::invalid()),
    }
}

/// A token message; `with_last_used` mirrors REST's `AgentToken` versus `AgentTokenBasic`.
fn token(token: &AgentToken, with_last_used: bool) -> pb::AgentToken {
    pb::AgentToken {
        id: id(token.id),
        name: token.name.clone(),
        description: token.description.clone(),
        agent_id: id(token.agent_id),
        status: match token.status {
            TokenStatus::Active => pb::TokenStatus::Active,
            TokenStatus::Revoked => pb::TokenStatus::Revoked,
        }
        .into(),
        created_at: Some(timestamp(token.created_at_ms)),
        created_by_user_id: token.created_by_user_id.map(id),
        last_used_at: if with_last_used {
            token.last_used_at_ms.map(timestamp)
        } else {
            None
        },
        token: None,
        expires_at: token.expires_at_ms.map(timestamp),
        revoked_at: token
            .revocation
            .as_ref()
            .map(|revocation| timestamp(revocation.revoked_at_ms)),
        revoked_by_user_id: token
            .revocation
            .as_ref()
            .and_then(|revocation| revocation.revoked_by_user_id.map(id)),
        revoked_reason: token
            .revocation
            .as_ref()
            .map(|revocation| revocation.reason.as_str().to_owned()),
        retiring_until: token.retiring_until_ms.map(timestamp),
        successor_id: token.successor_id.map(id),
    }
}
