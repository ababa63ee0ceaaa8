//! The OpenAPI 3.1 document of the REST edge, served at `GET /api/v4/openapi.json`. It is
//! generated from the handlers' `#[utoipa::path]` annotations, the request bodies the handlers
//! parse (`rest/bodies.rs`) and the response DTOs, and its tests compare it with the route table
//! in `rest/mod.rs`, so it describes exactly what is served. The reusable responses and
//! parameters the handlers name are in the leaf module [`schemas`]; this module, which lists the
//! handlers, is imported by none of them.

pub(super) mod schemas;

use super::dto::{
    AgentJson, AgentTokenBasicJson, AttributeErrorsJson, AuditEventJson, InsufficientScopeJson,
    InventoryAgentJson, MessageErrorJson, ParameterErrorJson,
};
use super::{admin, agent_tokens, agents, identity, internal, url_configs};
use axum::Json;
use schemas::{
    AgentPage, AgentTokenPage, AuditEventPage, BadRequest, Conflict, Forbidden, InvalidAttributes,
    InvalidParameter, InventoryPage, KasUnauthorized, KeysetUnavailable, NotFound, PayloadTooLarge,
    PreconditionFailed, ScopeForbidden, ServiceUnavailable, Snapshot, TooManyRequests,
    Unauthorized, UnsupportedMediaType, WriteForbidden,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentreg",
        description = "GitLab's Kubernetes agent API (`/api/v4`) as a standalone service. \
            Callers authenticate with a personal access token in `PRIVATE-TOKEN` (or \
            `Authorization: Bearer`, or the `private_token` query parameter); the agent-server \
            routes under `/internal` use the KAS JWT instead. Errors use GitLab's shapes. A \
            client that fails to authenticate too often in a minute gets `429` with \
            `Retry-After`. As in GitLab, an administrator whose token has the `sudo` scope may \
            act as another user with the `Sudo` header or `sudo` query parameter (a user id or \
            username); a non-administrator gets `403 Forbidden - Must be admin to use sudo`, a \
            token without the scope `insufficient_scope` with `scope: sudo`, and an unknown user \
            `404 User with ID or username '...' Not Found`.",
    ),
    paths(
        document,
        identity::version,
        admin::snapshot,
        identity::current_user,
        identity::create_user,
        identity::create_personal_access_token,
        identity::create_project,
        identity::project,
        identity::add_member,
        identity::instance_audit_events,
        identity::audit_events,
        agents::list,
        agents::create,
        agents::show,
        agents::delete,
        agent_tokens::list,
        agent_tokens::create,
        agent_tokens::show,
        agent_tokens::revoke,
        agent_tokens::rotate,
        admin::identify_token,
        admin::agent_inventory,
        admin::revoke_token,
        url_configs::list,
        url_configs::create,
        url_configs::show,
        url_configs::delete,
        internal::agent_info,
        internal::legacy_agent_info,
        internal::receptive_agents,
    ),
    components(
        // The schemas that only the reusable responses below refer to.
        schemas(
            MessageErrorJson,
            ParameterErrorJson,
            InsufficientScopeJson,
            AttributeErrorsJson,
            AgentJson,
            AgentTokenBasicJson,
            AuditEventJson,
            InventoryAgentJson,
        ),
        responses(
            Unauthorized,
            KasUnauthorized,
            Forbidden,
            ScopeForbidden,
            WriteForbidden,
            NotFound,
            InvalidParameter,
            KeysetUnavailable,
            BadRequest,
            InvalidAttributes,
            Conflict,
            PreconditionFailed,
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            ServiceUnavailable,
            Snapshot,
            AgentPage,
            InventoryPage,
            AgentTokenPage,
            AuditEventPage,
        ),
    ),
    modifiers(&SecuritySchemes, &AnyOperationMayBeUnavailable),
    security(("private_token" = []), ("bearer" = []), ("private_token_query" = [])),
    tags(
        (name = "meta", description = "The service itself: this document, the version, backups."),
        (name = "users", description = "Users and their personal access tokens."),
        (name = "projects", description = "Projects, members and audit events."),
        (name = "cluster_agents", description = "Kubernetes agents registered in a project."),
        (name = "agent_tokens", description = "An agent's tokens (at most two active)."),
        (
            name = "url_configurations",
            description = "How the agent server reaches a receptive agent.",
        ),
        (
            name = "internal",
            description = "Routes the agent server (KAS) calls, authenticated with its JWT.",
        ),
    ),
)]
pub(super) struct ApiDoc;

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/v4/openapi.json",
    operation_id = "get_openapi_document",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1).", body = Object)),
)]
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Lists `503` ([`ServiceUnavailable`]) on every operation: a timeout or an unreachable
/// backend can end any of them.
struct AnyOperationMayBeUnavailable;

impl Modify for AnyOperationMayBeUnavailable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Ref, RefOr};
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                operation.responses.responses.insert(
                    "503".to_owned(),
                    RefOr::Ref(Ref::from_response_name("ServiceUnavailable")),
                );
            }
        }
    }
}

/// The ways to authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        components.add_security_scheme(
            "private_token",
            header("PRIVATE-TOKEN", "A personal access token (`glpat-...`)."),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A personal access token in `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "private_token_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "private_token",
                "A personal access token in the query string.",
            ))),
        );
        components.add_security_scheme(
            "kas_jwt",
            header(
                "Gitlab-Kas-Api-Request",
                "The agent server's JWT (HS256, issuer `gitlab-kas`, audience `gitlab`) signed \
                 with the shared secret.",
            ),
        );
        components.add_security_scheme(
            "agent_token",
            header(
                "Gitlab-Agent-Api-Request",
                "An agent token (`glagent-...`).",
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn document_json() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn operations(document: &serde_json::Value) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                if item.get(method).is_some() {
                    operations.insert((method.to_owned(), path.clone()));
                }
            }
        }
        operations
    }

    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        let served: BTreeSet<(String, String)> = super::super::routes()
            .iter()
            .map(|route| {
                (
                    route.method.as_str().to_ascii_lowercase(),
                    route.path.to_owned(),
                )
            })
            .collect();
        let documented = operations(&document_json());
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let not_served: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served but not documented: {undocumented:?}"
        );
        assert!(
            not_served.is_empty(),
            "documented but not served: {not_served:?}"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let document = document_json();
        let mut references = Vec::new();
        collect_references(&document, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            let pointer = reference.strip_prefix('#').unwrap();
            assert!(
                document.pointer(pointer).is_some(),
                "dangling reference {reference}"
            );
        }
    }

    #[test]
    fn every_operation_documents_503() {
        let document = document_json();
        assert!(document["components"]["responses"]["ServiceUnavailable"].is_object());
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                assert_eq!(
                    operation["responses"]["503"]["$ref"],
                    "#/components/responses/ServiceUnavailable",
                    "{method} {path} lacks 503"
                );
            }
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let document = document_json();
        let mut ids = BTreeSet::new();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            }
        }
    }

    #[test]
    fn every_authenticated_operation_documents_401_and_429() {
        let document = document_json();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let public = operation["security"] == json!([{}]);
                let responses = &operation["responses"];
                if !public {
                    for status in ["401", "429"] {
                        assert!(
                            responses.get(status).is_some(),
                            "{method} {path} lacks {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn links_name_existing_operations_and_their_parameters() {
        let document = document_json();
        let mut parameters_by_operation = std::collections::BTreeMap::new();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let names: BTreeSet<String> = operation["parameters"]
                    .as_array()
                    .map(|parameters| {
                        parameters
                            .iter()
                            .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                parameters_by_operation.insert(operation["operationId"].to_string(), names);
            }
        }
        let mut n_links = 0;
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for response in operation["responses"].as_object().unwrap().values() {
                    let Some(links) = response.get("links") else {
                        continue;
                    };
                    for link in links.as_object().unwrap().values() {
                        n_links += 1;
                        let target = &parameters_by_operation[&link["operationId"].to_string()];
                        for name in link["parameters"].as_object().unwrap().keys() {
                            assert!(target.contains(name), "{link} sets an unknown {name}");
                        }
                    }
                }
            }
        }
        assert!(n_links > 0);
    }

    #[test]
    fn optional_entity_keys_are_required_and_nullable() {
        let document = document_json();
        let agent = &document["components"]["schemas"]["ClusterAgent"];
        let required: Vec<&str> = agent["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key.as_str().unwrap())
            .collect();
        assert!(required.contains(&"created_by_user_id"));
        assert_eq!(agent["additionalProperties"], json!(false));
        assert_eq!(
            agent["properties"]["created_by_user_id"]["type"],
            json!(["integer", "null"])
        );
    }

    #[test]
    fn the_token_form_body_is_the_json_body_with_scopes_as_repeated_fields() {
        let document = document_json();
        let schemas = &document["components"]["schemas"];
        let form = &schemas["NewPersonalAccessTokenForm"];
        let mut expected = schemas["NewPersonalAccessToken"]["properties"].clone();

        let scopes = expected.as_object_mut().unwrap().remove("scopes").unwrap();
        expected["scopes[]"] = scopes;

        assert_eq!(form["properties"], expected);
        assert_eq!(form["required"], json!(["name", "scopes[]"]));
    }

    fn collect_references(value: &serde_json::Value, references: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(object) => {
                for (key, child) in object {
                    match (key.as_str(), child) {
                        ("$ref", serde_json::Value::String(reference)) => {
                            references.push(reference.clone())
                        }
                        _ => collect_references(child, references),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    collect_references(item, references);
                }
            }
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::String(_) => {}
        }
    }
}
