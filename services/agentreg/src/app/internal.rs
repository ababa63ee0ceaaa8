//! The agent-server (KAS) facing operations: authenticating an agent by its token, and listing
//! receptive agents' configurations. Every call carries a KAS JWT (HS256, issuer `gitlab-kas`,
//! audience `gitlab`) signed with the shared secret.

use super::cache::TokenDigest;
use super::crypto::{SealedFor, SealedMode};
use super::limiter::ThrottleKey;
use super::{App, AuthCounters, Error, now_ms};
use agentreg_domain::entities::SealedUrlAuth;
use agentreg_domain::ids::{AgentId, AgentTokenId, ProjectId};
use agentreg_domain::tokens::{TokenHandle, TokenKind, token_handle};
use agentreg_domain::url_config::Ed25519KeyPair;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

/// The issuer of agent-server JWTs.
pub const KAS_ISSUER: &str = "gitlab-kas";
/// The audience of agent-server JWTs.
pub const KAS_AUDIENCE: &str = "gitlab";

/// Clock skew tolerated on `exp` and `nbf`.
const KAS_JWT_LEEWAY_SECS: u64 = 5;
/// The furthest in the future an agent-server JWT may expire; the agent server issues tokens
/// that live 5 seconds, so anything longer-lived was not made by it.
const KAS_JWT_MAX_LIFETIME_SECS: i64 = 300;

/// The claims of an agent-server JWT that are checked beyond the library's validation.
#[derive(serde::Deserialize)]
struct KasClaims {
    exp: i64,
}

/// Verified agent-server JWTs remembered at most, until each one's `exp`.
const VERIFIED_JWTS_CAPACITY: usize = 1024;

/// Checks the `Gitlab-Kas-Api-Request` JWT.
///
/// The agent server signs one JWT per second with second-granular claims, so under load many
/// requests carry the very same JWT. A JWT that passed verification is remembered by its SHA-256
/// until its `exp` (never longer than [`KAS_JWT_MAX_LIFETIME_SECS`]), and the same bytes are
/// then accepted without decoding and checking the signature again.
#[derive(Clone)]
pub struct KasVerifier {
    key: DecodingKey,
    validation: Validation,
    /// SHA-256 of a verified JWT, with its `exp`.
    verified: std::sync::Arc<std::sync::Mutex<HashMap<[u8; 32], i64>>>,
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
        // The agent server issues tokens that live seconds; a token without `exp` would be a
        // credential forever if it leaked, so `exp` is required, unlike in GitLab.
        validation.required_spec_claims =
            HashSet::from(["iss".to_owned(), "aud".to_owned(), "exp".to_owned()]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = KAS_JWT_LEEWAY_SECS;
        KasVerifier {
            key: DecodingKey::from_secret(secret.expose_secret()),
            validation,
            verified: std::sync::Arc::default(),
        }
    }

    fn verify(&self, jwt: Option<&str>) -> Result<(), Error> {
        let Some(jwt) = jwt.filter(|jwt| !jwt.is_empty()) else {
            return Err(Error::KasUnauthorized);
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let digest: [u8; 32] = Sha256::digest(jwt.as_bytes()).into();
        if self.remembered().get(&digest).is_some_and(|exp| now < *exp) {
            return Ok(());
        }
        let claims = jsonwebtoken::decode::<KasClaims>(jwt, &self.key, &self.validation)
            .map_err(|_| Error::KasUnauthorized)?
            .claims;
        if claims.exp > now.saturating_add(KAS_JWT_MAX_LIFETIME_SECS) {
            return Err(Error::KasUnauthorized);
        }
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_JWTS_CAPACITY {
            verified.retain(|_, exp| now < *exp);
            if verified.len() >= VERIFIED_JWTS_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(digest, claims.exp);
        Ok(())
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], i64>> {
        // Entries are inserted whole, so a poisoned map holds nothing half-written.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    /// Authenticates an agent token for the agent server and records its use. Bad KAS JWTs
    /// are throttled per client address; once the JWT is valid, bad agent tokens are throttled
    /// per token handle and over all agents, never per address, because every agent's traffic
    /// comes from the agent server's address.
    pub async fn authenticate_agent(
        &self,
        kas_jwt: Option<&str>,
        agent_token: Option<SecretString>,
        client: Option<IpAddr>,
    ) -> Result<AuthenticatedAgent, Error> {
        let agent_token = agent_token.filter(|token| !token.expose_secret().is_empty());
        let digest = agent_token.as_ref().map(TokenDigest::of);
        let cached = digest.and_then(|digest| self.inner.agent_tokens.get(&digest));
        if cached.is_none() {
            self.check_address_throttle(client)?;
        }
        if let Err(error) = self.inner.kas.verify(kas_jwt) {
            self.record_address_failure(client);
            self.authentication_failed(client, "kas_jwt").await;
            return Err(error);
        }
        let now = now_ms();
        let result = match (cached, agent_token, digest) {
            (Some(agent), _, _) => {
                AuthCounters::bump(&self.inner.counters.cache_hits);
                Ok(agent)
            }
            (None, Some(token), Some(digest)) => {
                self.throttled_agent_token(token, digest, now).await
            }
            (None, None, _) | (None, Some(_), None) => Err(Error::Unauthorized),
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

    /// Reserves a failure slot for the token's handle and one over all agents, verifies, and
    /// gives both back unless the token was refused.
    async fn throttled_agent_token(
        &self,
        token: SecretString,
        digest: TokenDigest,
        now_ms: i64,
    ) -> Result<AuthenticatedAgent, Error> {
        // A string that cannot be an agent token never reaches storage or argon2.
        let Some(handle) = token_handle(TokenKind::Agent, token.expose_secret()) else {
            return Err(Error::Unauthorized);
        };
        let limiter = &self.inner.limiter;
        let now = Instant::now();
        let per_handle = ThrottleKey::AgentHandle(handle.as_str().to_owned());
        let config = &self.inner.config;
        limiter
            .reserve(&per_handle, config.auth_failures_per_minute, now)
            .map_err(|retry_after_secs| Error::TooManyRequests { retry_after_secs })?;
        if let Err(retry_after_secs) = limiter.reserve(
            &ThrottleKey::AllAgentTokens,
            config.agent_token_failures_per_minute,
            now,
        ) {
            limiter.release(&per_handle);
            return Err(Error::TooManyRequests { retry_after_secs });
        }
        let result = self.verify_agent_token(token, digest, handle, now_ms).await;
        if !matches!(result, Err(Error::Unauthorized)) {
            limiter.release(&per_handle);
            limiter.release(&ThrottleKey::AllAgentTokens);
        }
        result
    }

    /// The slow path: look the token up by its handle, verify it with argon2, and cache it.
    async fn verify_agent_token(
        &self,
        token: SecretString,
        digest: TokenDigest,
        handle: TokenHandle,
        now: i64,
    ) -> Result<AuthenticatedAgent, Error> {
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

    /// Records the instance key's fingerprint with the data on first start, and tells whether
    /// the data was sealed under this key: `false` means this process holds another key (a
    /// restore whose key file was not copied), and must not serve.
    pub async fn instance_key_matches(&self) -> Result<bool, Error> {
        let ours = self.inner.sealer.fingerprint();
        let recorded = self.storage().record_key_fingerprint(ours).await?;
        Ok(recorded == ours)
    }

    /// Checks that the instance key opens a stored private key, if any is stored, so that a
    /// service started with the wrong key refuses to start instead of answering 500 later.
    pub async fn check_sealing_key(&self) -> Result<(), Error> {
        let configs = self.storage().all_url_configurations().await?;
        let Some(config) = configs.first() else {
            return Ok(());
        };
        let (sealed, mode) = match &config.auth {
            SealedUrlAuth::Jwt {
                sealed_private_key, ..
            } => (sealed_private_key, SealedMode::Jwt),
            SealedUrlAuth::Mtls {
                sealed_client_key, ..
            } => (sealed_client_key, SealedMode::Mtls),
        };
        let sealed_for = SealedFor {
            agent_id: config.agent_id.get(),
            mode,
        };
        self.inner
            .sealer
            .open(sealed, sealed_for)
            .map(drop)
            .map_err(|error| Error::internal("opening a stored private key failed", error))
    }

    /// Reseals keys that earlier versions sealed unbound to their record, binding each to its
    /// agent and mode; returns how many were resealed. Runs at start and is idempotent.
    pub async fn reseal_legacy_keys(&self) -> Result<u64, Error> {
        let mut n_resealed = 0;
        for config in self.storage().all_url_configurations().await? {
            let (sealed, mode) = match &config.auth {
                SealedUrlAuth::Jwt {
                    sealed_private_key, ..
                } => (sealed_private_key, SealedMode::Jwt),
                SealedUrlAuth::Mtls {
                    sealed_client_key, ..
                } => (sealed_client_key, SealedMode::Mtls),
            };
            if !crate::app::crypto::Sealer::is_legacy(sealed) {
                continue;
            }
            let sealed_for = SealedFor {
                agent_id: config.agent_id.get(),
                mode,
            };
            let sealer = &self.inner.sealer;
            let key = sealer
                .open(sealed, sealed_for)
                .map_err(|error| Error::internal("opening a legacy sealed key failed", error))?;
            let resealed = sealer.seal(key.expose_secret(), sealed_for);
            if self
                .storage()
                .replace_sealed_key(config.id, resealed)
                .await?
            {
                n_resealed += 1;
            }
        }
        Ok(n_resealed)
    }

    /// Every receptive agent's configuration, keys decrypted, for the agent server.
    pub async fn receptive_agents(
        &self,
        kas_jwt: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Vec<ReceptiveAgent>, Error> {
        self.check_address_throttle(client)?;
        if let Err(error) = self.inner.kas.verify(kas_jwt) {
            self.record_address_failure(client);
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
                        let sealed_for = SealedFor {
                            agent_id: config.agent_id.get(),
                            mode: SealedMode::Jwt,
                        };
                        let seed =
                            sealer
                                .open(&sealed_private_key, sealed_for)
                                .map_err(|error| {
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
                        let sealed_for = SealedFor {
                            agent_id: config.agent_id.get(),
                            mode: SealedMode::Mtls,
                        };
                        let key = sealer
                            .open(&sealed_client_key, sealed_for)
                            .map_err(|error| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppConfig;
    use crate::app::crypto::Sealer;
    use agentreg_domain::names::{AgentName, ProjectNaming, UserIdentity};
    use agentreg_storage::port::{NewUrlConfiguration, Storage};
    use secrecy::SecretBox;
    use std::sync::Arc;

    fn kas_jwt(secret: &[u8], exp: i64) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims =
            serde_json::json!({"iss": KAS_ISSUER, "aud": KAS_AUDIENCE, "iat": now, "exp": exp});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_remembered_jwt_is_accepted_only_until_its_exp_and_a_forged_one_never() {
        let secret = [7u8; 32];
        let verifier = KasVerifier::new(&SecretBox::new(Box::new(secret.to_vec())));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let jwt = kas_jwt(&secret, now + 2);
        verifier.verify(Some(&jwt)).unwrap();
        verifier.verify(Some(&jwt)).unwrap();
        assert_eq!(verifier.remembered().len(), 1);

        let forged = kas_jwt(&[8u8; 32], now + 60);
        assert!(verifier.verify(Some(&forged)).is_err());
        assert!(
            verifier.verify(Some(&forged)).is_err(),
            "a refusal is not remembered"
        );

        // Past its `exp` the remembered JWT no longer passes, nor does the library (with its
        // five seconds of leeway) once that has passed too.
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        let expired = verifier
            .remembered()
            .get(&<[u8; 32]>::from(Sha256::digest(jwt.as_bytes())))
            .is_some_and(|exp| time::OffsetDateTime::now_utc().unix_timestamp() < *exp);
        assert!(!expired, "the memory does not outlive exp");
    }

    #[tokio::test]
    async fn legacy_sealed_keys_are_resealed_bound_to_their_agent() {
        let storage: Arc<dyn Storage> =
            Arc::new(agentreg_storage::embedded::SledStorage::temporary().unwrap());
        let sealer = Sealer::new(&SecretBox::new(Box::new([9; 32])));
        let identity = UserIdentity::parse("root", "Administrator", "admin@example.com").unwrap();
        let root = storage.create_user(identity, true, 0).await.unwrap();
        let naming = ProjectNaming::parse(Some("p"), None).unwrap();
        let project = storage
            .create_project(root.id, naming, None, 0)
            .await
            .unwrap();
        let agent = storage
            .create_agent(project.id, AgentName::parse("a").unwrap(), None, 0, None)
            .await
            .unwrap();
        let new = NewUrlConfiguration {
            url: "grpc://agent.example.com".to_owned(),
            ca_cert: None,
            tls_host: None,
            auth: SealedUrlAuth::Jwt {
                public_key: vec![1; 32],
                sealed_private_key: sealer.seal_legacy(&[5; 32]),
            },
            created_by_user_id: None,
        };
        storage
            .create_url_configuration(project.id, agent.id, new, 0, None)
            .await
            .unwrap();
        let app = App::new(
            storage.clone(),
            agentreg_storage::SecretHasher::insecure_for_tests(),
            AppConfig {
                receptive_agents_enabled: true,
                auth_failures_per_minute: 30,
                agent_token_failures_per_minute: 600,
                argon2_queue_limit: 64,
                argon2_nice: crate::config::HashPriority::Nice(0),
                agent_token_max_lifetime: None,
                require_agent_token_expiry: false,
                max_rotation_overlap: crate::config::DEFAULT_MAX_ROTATION_OVERLAP,
                rotation_retrieve_window: None,
            },
            sealer.clone(),
            KasVerifier::new(&SecretBox::new(Box::new(vec![7; 32]))),
        );

        let n_resealed = app.reseal_legacy_keys().await.unwrap();
        let again = app.reseal_legacy_keys().await.unwrap();

        assert_eq!((n_resealed, again), (1, 0));
        let configs = storage.all_url_configurations().await.unwrap();
        let SealedUrlAuth::Jwt {
            sealed_private_key, ..
        } = &configs[0].auth
        else {
            panic!("JWT mode expected");
        };
        assert!(!Sealer::is_legacy(sealed_private_key));
        let sealed_for = SealedFor {
            agent_id: agent.id.get(),
            mode: SealedMode::Jwt,
        };
        let opened = sealer.open(sealed_private_key, sealed_for).unwrap();
        assert_eq!(opened.expose_secret().as_slice(), &[5; 32]);
    }
}
