//! `InternalService`: the agent-server facing calls, authenticated by the KAS JWT in the
//! `gitlab-kas-api-request` metadata.

use super::pb::internal_service_server::InternalService;
use super::{id, pb, status};
use crate::app::App;
use crate::app::credentials::{AGENT_TOKEN_HEADER, KAS_JWT_HEADER};
use crate::app::internal::ReceptiveAuth;
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

pub struct InternalGrpc {
    pub app: App,
}

fn metadata_text<T>(request: &Request<T>, key: &str) -> Option<String> {
    request
        .metadata()
        .get(key)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
}

#[tonic::async_trait]
impl InternalService for InternalGrpc {
    async fn authenticate_agent_token(
        &self,
        request: Request<pb::AuthenticateAgentTokenRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let jwt = metadata_text(&request, KAS_JWT_HEADER);
        let token = metadata_text(&request, AGENT_TOKEN_HEADER).map(SecretString::from);
        let agent = self
            .app
            .authenticate_agent(jwt.as_deref(), token, super::client_address(&request))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AgentInfo {
            project_id: id(agent.project_id),
            agent_id: id(agent.agent_id),
            agent_name: agent.agent_name,
        }))
    }

    async fn list_receptive_agents(
        &self,
        request: Request<pb::ListReceptiveAgentsRequest>,
    ) -> Result<Response<pb::ListReceptiveAgentsResponse>, Status> {
        let jwt = metadata_text(&request, KAS_JWT_HEADER);
        let agents = self
            .app
            .receptive_agents(jwt.as_deref(), super::client_address(&request))
            .await
            .map_err(status)?;
        let agents = agents
            .into_iter()
            .map(|agent| pb::ReceptiveAgent {
                id: id(agent.agent_id),
                url: agent.url,
                ca_cert: agent.ca_cert,
                tls_host: agent.tls_host,
                auth: Some(match agent.auth {
                    ReceptiveAuth::Jwt { private_key } => {
                        pb::receptive_agent::Auth::Jwt(pb::JwtAuth {
                            private_key: private_key.expose_secret().to_owned(),
                        })
                    }
                    ReceptiveAuth::Mtls {
                        client_cert,
                        client_key,
                    } => pb::receptive_agent::Auth::Mtls(pb::MtlsAuth {
                        client_cert,
                        client_key: client_key.expose_secret().to_owned(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::ListReceptiveAgentsResponse { agents }))
    }
}
