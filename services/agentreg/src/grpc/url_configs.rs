//! `UrlConfigurationService`. As on REST, the app checks the project and the instance setting
//! first.

use super::pb::url_configuration_service_server::UrlConfigurationService;
use super::{caller, id, pb, status, unmodified_since};
use crate::app::url_configs::{NewUrlConfigurationInput, UrlConfigurationView};
use crate::app::{App, Intent};
use agentreg_domain::ids::{AgentId, ProjectRef, UrlConfigurationId};
use secrecy::SecretString;
use tonic::{Request, Response, Status};

pub struct UrlConfigurationGrpc {
    pub app: App,
}

#[tonic::async_trait]
impl UrlConfigurationService for UrlConfigurationGrpc {
    async fn list_url_configurations(
        &self,
        request: Request<pb::ListUrlConfigurationsRequest>,
    ) -> Result<Response<pb::ListUrlConfigurationsResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let configs = self
            .app
            .url_configurations()
            .list(
                &caller,
                &ProjectRef::parse(&request.project),
                Ok(AgentId::from_wire(request.agent_id)),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListUrlConfigurationsResponse {
            url_configurations: configs.into_iter().map(config).collect(),
        }))
    }

    async fn get_url_configuration(
        &self,
        request: Request<pb::GetUrlConfigurationRequest>,
    ) -> Result<Response<pb::UrlConfiguration>, Status> {
        let caller = caller(&self.app, &request, Intent::Read).await?;
        let request = request.into_inner();
        let found = self
            .app
            .url_configurations()
            .get(
                &caller,
                &ProjectRef::parse(&request.project),
                Ok(AgentId::from_wire(request.agent_id)),
                Ok(UrlConfigurationId::from_wire(request.url_configuration_id)),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(config(found)))
    }

    async fn create_url_configuration(
        &self,
        request: Request<pb::CreateUrlConfigurationRequest>,
    ) -> Result<Response<pb::UrlConfiguration>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let input = NewUrlConfigurationInput {
            url: request.url,
            client_cert: request.client_cert,
            client_key: request.client_key.map(SecretString::from),
            ca_cert: request.ca_cert,
            tls_host: request.tls_host,
        };
        let created = self
            .app
            .url_configurations()
            .create(
                &caller,
                &ProjectRef::parse(&request.project),
                Ok(AgentId::from_wire(request.agent_id)),
                Ok(input),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(config(created)))
    }

    async fn delete_url_configuration(
        &self,
        request: Request<pb::DeleteUrlConfigurationRequest>,
    ) -> Result<Response<pb::DeleteUrlConfigurationResponse>, Status> {
        let caller = caller(&self.app, &request, Intent::Write).await?;
        let request = request.into_inner();
        let since = unmodified_since(request.if_unmodified_since);
        self.app
            .url_configurations()
            .delete(
                &caller,
                &ProjectRef::parse(&request.project),
                Ok(AgentId::from_wire(request.agent_id)),
                Ok(UrlConfigurationId::from_wire(request.url_configuration_id)),
                since,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteUrlConfigurationResponse {}))
    }
}

fn config(view: UrlConfigurationView) -> pb::UrlConfiguration {
    pb::UrlConfiguration {
        id: id(view.id),
        agent_id: id(view.agent_id),
        url: view.url,
        public_key: view.public_key,
        client_cert: view.client_cert,
        ca_cert: view.ca_cert,
        tls_host: view.tls_host,
    }
}
