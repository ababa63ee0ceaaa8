//! The agent-server (KAS) facing operations: authenticating an agent by its token, and listing
//! receptive agents' configurations. Every call carries a KAS JWT (HS256, issuer `gitlab-kas`,
//! audience `gitlab`) signed with the shared secret.

use super::cache::TokenDigest;
use super::{App, AuthCounters, Error, now_ms};
use agentreg_domain::entities::SealedUrlAuth;
use agentreg_domain::ids::{AgentId, AgentTokenId, ProjectId};
use agentreg_domain::tokens::{TokenKind, token_handle};
use agentreg_domain::url_config::Ed25519KeyPair;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

/// The issuer of agent-server JWTs.
pub const KAS_ISSUER: &str = "gitlab-kas";
/// The audience of agent-server JWTs.
pub const KAS_AUDIENCE: &str = "gitlab";

/// Checks the `Gitlab-Kas-Api-Request` JWT.
#[derive(Clone)]
pub struct KasVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for KasVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KasVerifier([redacted])")
    }
}

impl KasVerifier {
    /// `secret` is the decoded content of the shared secret file.
    pub fn new(secret: &SecretBox<Vec<u8>>) -> KasVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[KAS_ISSUER]);
        validation.set_audience(&[KAS_AUDIENCE]);
        // GitLab checks `exp` when present but does not require it.
        validation.required_spec_claims = HashSet::from(["iss".to_owned(), "aud".to_owned()]);
        KasVerifier {
            key: DecodingKey::from_secret(secret.expose_secret()),
            validation,
        }
    }

    fn verify(&self, jwt: Option<&str>) -> Result<(), Error> {
        let Some(jwt) = jwt.filter(|jwt| !jwt.is_empty()) else {
            return Err(Error::KasUnauthorized);
        };
        jsonwebtoken::decode::<serde_json::Value>(jwt, &self.key, &self.validation)
            .map(drop)
            .map_err(|_| Error::KasUnauthorized)
    }
}

/// The agent an agent token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedAgent {
    pub token_id: AgentTokenId,
    pub project_id: ProjectId,
    pub agent_id: AgentId,
    pub agent_name: String,
    /// When the token stops working on its own (its expiry, or the end of a rotation's
    /// overlap), checked on every use, cached or not.
    pub usable_until_ms: Option<i64>,
    /// The token this one replaced, while it is still retiring: this token's first use retires
    /// it.
    pub pending_predecessor_id: Option<AgentTokenId>,
}

/// How the agent server authenticates to a receptive agent, with the key in clear.
pub enum ReceptiveAuth {
    /// Standard base64 of the 32-byte Ed25519 seed.
    Jwt { private_key: SecretString },
    Mtls {
        client_cert: String,
        client_key: SecretString,
    },
}

/// One receptive agent's configuration, as the agent server reads it.
pub struct ReceptiveAgent {
    pub agent_id: AgentId,
    pub url: String,
    pub ca_cert: Option<String>,
    pub tls_host: Option<String>,
    pub auth: ReceptiveAuth,
}

impl App {
    /// Authenticates an agent token for the agent server and records its use.
    pub async fn authenticate_agent(
        &self,
        kas_jwt: Option<&str>,
        agent_token: Option<SecretString>,
        client: Option<IpAddr>,
    ) -> Result<AuthenticatedAgent, Error> {
        let digest = agent_token.as_ref().map(TokenDigest::of);
        let cached = digest.and_then(|digest| self.inner.agent_tokens.get(&digest));
        if cached.is_none() {
            self.check_throttle(client)?;
        }
        if let Err(error) = self.inner.kas.verify(kas_jwt) {
            self.authentication_failed(client, "kas_jwt").await;
            return Err(error);
        }
        let now = now_ms();
        let result = match cached {
            Some(agent) => {
                AuthCounters::bump(&self.inner.counters.cache_hits);
                Ok(agent)
            }
            None => self.verify_agent_token(agent_token, digest, now).await,
        };
        // An expired token fails exactly like a revoked one, even from the cache.
        let result = result.and_then(|agent| match agent.usable_until_ms {
            Some(until_ms) if until_ms <= now => Err(Error::Unauthorized),
            Some(_) | None => Ok(agent),
        });
        if let Err(Error::Unauthorized) = &result {
            self.authentication_failed(client, "agent_token").await;
        }
        let agent = result?;
        self.inner.usage.record(agent.token_id, now);
        if agent.pending_predecessor_id.is_some() {
            self.complete_rotation(agent.token_id, now).await;
        }
        Ok(agent)
    }

    /// The slow path: look the token up by its handle, verify it with argon2, and cache it.
    async fn verify_agent_token(
        &self,
        agent_token: Option<SecretString>,
        digest: Option<TokenDigest>,
        now: i64,
    ) -> Result<AuthenticatedAgent, Error> {
        let (Some(token), Some(digest)) = (agent_token, digest) else {
            return Err(Error::Unauthorized);
        };
        let Some(handle) = token_handle(TokenKind::Agent, token.expose_secret()) else {
            return Err(Error::Unauthorized);
        };
        let cache = &self.inner.agent_tokens;
        let generation = cache.generation();
        let found = self.storage().agent_token_by_handle(&handle).await?;
        let Some(stored) = found.filter(|stored| stored.token.is_usable(now)) else {
            return Err(Error::Unauthorized);
        };
        if !self.verify_secret(&token, stored.secret_hash).await? {
            return Err(Error::Unauthorized);
        }
        let stored = stored.token;
        let Some(found_agent) = self
            .storage()
            .agent(stored.project_id, stored.agent_id)
            .await?
        else {
            return Err(Error::Unauthorized);
        };
        let agent = AuthenticatedAgent {
            token_id: stored.id,
            project_id: stored.project_id,
            agent_id: found_agent.id,
            agent_name: found_agent.name,
            usable_until_ms: stored.usable_until_ms(),
            pending_predecessor_id: stored.pending_predecessor_id,
        };
        cache.insert(generation, digest, agent.token_id, agent.clone());
        Ok(agent)
    }

    /// Every receptive agent's configuration, keys decrypted, for the agent server.
    pub async fn receptive_agents(
        &self,
        kas_jwt: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Vec<ReceptiveAgent>, Error> {
        self.check_throttle(client)?;
        if let Err(error) = self.inner.kas.verify(kas_jwt) {
            self.authentication_failed(client, "kas_jwt").await;
            return Err(error);
        }
        if !self.inner.config.receptive_agents_enabled {
            return Err(Error::NotFound);
        }
        let configs = self.storage().all_url_configurations().await?;
        let sealer = &self.inner.sealer;
        configs
            .into_iter()
            .map(|config| {
                let auth = match config.auth {
                    SealedUrlAuth::Jwt {
                        sealed_private_key, ..
                    } => {
                        let seed = sealer.open(&sealed_private_key).map_err(|error| {
                            Error::internal("opening a private key failed", error)
                        })?;
                        let seed: [u8; 32] =
                            seed.expose_secret().as_slice().try_into().map_err(|_| {
                                Error::internal("a stored seed has the wrong length", "length")
                            })?;
                        let key_pair = Ed25519KeyPair::from_seed(seed)
                            .map_err(|error| Error::internal("a stored seed is unusable", error))?;
                        ReceptiveAuth::Jwt {
                            private_key: key_pair.seed_base64(),
                        }
                    }
                    SealedUrlAuth::Mtls {
                        client_cert,
                        sealed_client_key,
                    } => {
                        let key = sealer.open(&sealed_client_key).map_err(|error| {
                            Error::internal("opening a client key failed", error)
                        })?;
                        let key =
                            String::from_utf8(key.expose_secret().clone()).map_err(|error| {
                                Error::internal("a stored client key is not text", error)
                            })?;
                        ReceptiveAuth::Mtls {
                            client_cert,
                            client_key: SecretString::from(key),
                        }
                    }
                };
                Ok(ReceptiveAgent {
                    agent_id: config.agent_id,
                    url: config.url,
                    ca_cert: config.ca_cert,
                    tls_host: config.tls_host,
                    auth,
                })
            })
            .collect()
    }
}
