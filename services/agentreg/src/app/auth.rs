//! Authenticating callers by personal access token, GitLab's way: from `PRIVATE-TOKEN`,
//! `Authorization: Bearer` or `private_token`, with `read_api` tokens refused on writes.
//! A verified token is cached by digest, so only its first use pays for argon2.

use super::cache::TokenDigest;
use super::limiter::{ThrottleKey, address_key};
use super::{App, AuthCounters, Error};
use agentreg_domain::access::{ExpiryDate, Scope};
use agentreg_domain::entities::User;
use agentreg_domain::ids::UserId;
use agentreg_domain::tokens::{
    TokenHandle, TokenKind, keyed_personal_access_token_handle, personal_access_token_handle,
    token_handle,
};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use time::Date;

/// A caller's presented token, if any, and the address it came from. Edges fill it from
/// headers, query or metadata, and the connection.
pub struct Credentials {
    pub token: Option<SecretString>,
    pub client: Option<IpAddr>,
    /// GitLab's `Sudo` header or `sudo` parameter: a user id or username to act as.
    pub sudo: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("client", &self.client)
            .finish()
    }
}

/// Whether the route reads or writes; writes need the `api` scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Read,
    Write,
}

/// An authenticated user and the scopes of the token they used.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who the request acts as: the token's owner, or the user named by `Sudo`.
    pub user: User,
    pub scopes: Vec<Scope>,
    /// The administrator whose token used `Sudo`, recorded in audit events.
    pub sudo_by: Option<UserId>,
    /// The first day on which the token no longer works, if it expires.
    expires_on: Option<Date>,
}

impl Caller {
    pub(crate) fn can_write(&self) -> bool {
        self.scopes.iter().any(|scope| scope.allows_write())
    }

    fn can_read(&self) -> bool {
        self.scopes.iter().any(|scope| scope.allows_read())
    }

    fn expired(&self, today: Date) -> bool {
        self.expires_on
            .is_some_and(|expires_on| today >= expires_on)
    }
}

impl App {
    /// Authenticates a personal access token, then checks its scope against `intent`.
    pub async fn authenticate(
        &self,
        credentials: Credentials,
        intent: Intent,
    ) -> Result<Arc<Caller>, Error> {
        let client = credentials.client;
        // A request without any credential is anonymous, not a failed authentication: it
        // neither feeds the throttle nor writes an audit event.
        let Some(token) = credentials
            .token
            .filter(|token| !token.expose_secret().is_empty())
        else {
            return Err(Error::Unauthorized);
        };
        let caller = self.authenticate_token(token, client).await;
        if let Err(Error::Unauthorized) = &caller {
            self.authentication_failed(client, "personal_access_token")
                .await;
        }
        let caller = caller?;
        let allowed = match intent {
            Intent::Write => caller.can_write(),
            Intent::Read => caller.can_read(),
        };
        if !allowed {
            return Err(Error::InsufficientScope);
        }
        match credentials.sudo {
            Some(identifier) => self.sudo(caller, &identifier).await,
            None => Ok(caller),
        }
    }

    /// GitLab's `sudo!`: only an administrator, only with a token that has the `sudo` scope,
    /// acts as the user named by id or (case-insensitive) username.
    async fn sudo(&self, caller: Arc<Caller>, identifier: &str) -> Result<Arc<Caller>, Error> {
        if !caller.user.is_admin {
            return Err(Error::SudoForbidden);
        }
        if !caller.scopes.contains(&Scope::Sudo) {
            return Err(Error::SudoScopeMissing);
        }
        let by_id = match identifier.parse::<u64>() {
            Ok(user_id) => self.storage().user(UserId::new(user_id)).await?,
            Err(_) => None,
        };
        let found = match by_id {
            Some(user) => Some(user),
            None => self.storage().user_by_username(identifier).await?,
        };
        let Some(user) = found else {
            return Err(Error::SudoUserNotFound(identifier.to_owned()));
        };
        Ok(Arc::new(Caller {
            sudo_by: Some(caller.user.id),
            user,
            ..Caller::clone(&caller)
        }))
    }

    /// A cached token answers at once and is never throttled. Anything else that could be a
    /// token reserves a failure slot for its client address and handle, waits for the
    /// address's turn, and is then looked up and verified with argon2.
    async fn authenticate_token(
        &self,
        token: SecretString,
        client: Option<IpAddr>,
    ) -> Result<Arc<Caller>, Error> {
        let digest = TokenDigest::of(&token);
        if let Some(caller) = self.cached_caller(&digest)? {
            return Ok(caller);
        }
        // Strings that cannot be a token never reach storage or argon2, and do not count.
        if !could_be_personal_access_token(token.expose_secret()) {
            return Err(Error::Unauthorized);
        }
        let handle = keyed_personal_access_token_handle(
            token.expose_secret(),
            self.inner.sealer.handle_key(),
        );
        let key = client.map(|client| {
            ThrottleKey::AddressAndHandle(address_key(client), handle.as_str().to_owned())
        });
        if let Some(key) = &key {
            self.inner
                .limiter
                .reserve(
                    key,
                    self.inner.config.auth_failures_per_minute,
                    Instant::now(),
                )
                .map_err(|retry_after_secs| Error::TooManyRequests { retry_after_secs })?;
        }
        let result = self
            .verify_personal_token(token, digest, handle, client)
            .await;
        if let Some(key) = &key
            && !matches!(result, Err(Error::Unauthorized))
        {
            self.inner.limiter.release(key);
        }
        result
    }

    /// The cached caller of a token, unless it expired since it was cached.
    fn cached_caller(&self, digest: &TokenDigest) -> Result<Option<Arc<Caller>>, Error> {
        let today = time::OffsetDateTime::now_utc().date();
        let cache = &self.inner.personal_tokens;
        let Some(caller) = cache.get(digest) else {
            return Ok(None);
        };
        if caller.expired(today) {
            cache.remove(digest);
            return Err(Error::Unauthorized);
        }
        AuthCounters::bump(&self.inner.counters.cache_hits);
        Ok(Some(caller))
    }

    async fn verify_personal_token(
        &self,
        token: SecretString,
        digest: TokenDigest,
        handle: TokenHandle,
        client: Option<IpAddr>,
    ) -> Result<Arc<Caller>, Error> {
        let _turn = match client {
            Some(client) => Some(self.inner.turns.take(address_key(client)).await),
            None => None,
        };
        // The caller before us in the queue may have verified this very token.
        if let Some(caller) = self.cached_caller(&digest)? {
            return Ok(caller);
        }
        let today = time::OffsetDateTime::now_utc().date();
        let cache = &self.inner.personal_tokens;
        let generation = cache.generation();
        let mut found = self
            .storage()
            .personal_access_token_by_handle(&handle)
            .await?;
        if found.is_none() && handle.as_str().starts_with('~') {
            // A chosen root token stored before handles were keyed.
            let legacy = personal_access_token_handle(token.expose_secret());
            found = self
                .storage()
                .personal_access_token_by_handle(&legacy)
                .await?;
        }
        let Some(credential) = found.filter(|credential| !credential.token.revoked) else {
            return Err(Error::Unauthorized);
        };
        if !self.verify_secret(&token, credential.secret_hash).await? {
            return Err(Error::Unauthorized);
        }
        let (pat, user) = (credential.token, credential.user);
        let caller = Arc::new(Caller {
            user,
            scopes: pat.scopes,
            sudo_by: None,
            expires_on: pat.expires_at.map(ExpiryDate::date),
        });
        if caller.expired(today) {
            return Err(Error::Unauthorized);
        }
        cache.insert(generation, digest, pat.id, caller.clone());
        Ok(caller)
    }
}

impl App {
    /// Refuses a client address that presented too many bad KAS JWTs this minute.
    pub(crate) fn check_address_throttle(&self, client: Option<IpAddr>) -> Result<(), Error> {
        let Some(client) = client else {
            return Ok(());
        };
        let key = ThrottleKey::Address(address_key(client));
        let allowed = self.inner.config.auth_failures_per_minute;
        match self
            .inner
            .limiter
            .retry_after(&key, allowed, Instant::now())
        {
            Some(retry_after_secs) => Err(Error::TooManyRequests { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// Counts a bad KAS JWT against its client address.
    pub(crate) fn record_address_failure(&self, client: Option<IpAddr>) {
        if let Some(client) = client {
            let key = ThrottleKey::Address(address_key(client));
            self.inner.limiter.record_failure(&key, Instant::now());
        }
    }

    /// Records a failed authentication as an instance audit event (without the presented
    /// credential): the first of its client address and kind in a minute at once, the rest as
    /// one aggregated event when the minute is over.
    pub(crate) async fn authentication_failed(
        &self,
        client: Option<IpAddr>,
        credential: &'static str,
    ) {
        AuthCounters::bump(&self.inner.counters.failures);
        let client = client.map(address_key);
        if !self
            .inner
            .failure_audit
            .note(client, credential, Instant::now())
        {
            return;
        }
        self.record_failure_event(client, credential, 1).await;
    }

    /// Writes the aggregated failure events whose minute is over (every pending one with
    /// `everything`, at shutdown).
    pub async fn flush_failure_audit(&self, everything: bool) {
        let due = self
            .inner
            .failure_audit
            .take_due(Instant::now(), everything);
        for aggregated in due {
            self.record_failure_event(
                aggregated.client,
                aggregated.credential,
                aggregated.n_failures,
            )
            .await;
        }
    }

    async fn record_failure_event(
        &self,
        client: Option<IpAddr>,
        credential: &'static str,
        n_failures: u64,
    ) {
        let now = super::now_ms();
        let address = client.map(|ip| ip.to_string());
        let event = super::audit::authentication_failure(credential, address, n_failures);
        if let Err(error) = self.storage().record_audit_event(event, now).await {
            tracing::error!(error = %error, "recording a failed authentication failed");
        }
    }
}

/// Whether `presented` could be a personal access token: a generated `glpat-` token, or a
/// chosen root token (at least 20 printable characters, at most 255).
fn could_be_personal_access_token(presented: &str) -> bool {
    if token_handle(TokenKind::PersonalAccess, presented).is_some() {
        return true;
    }
    let n_chars = presented.chars().count();
    (crate::config::ROOT_TOKEN_MIN_CHARS..=255).contains(&n_chars)
        && !presented.chars().any(char::is_control)
}

/// Parses an ISO date, `YYYY-MM-DD`.
pub(crate) fn parse_date(text: &str) -> Option<Date> {
    ExpiryDate::parse(text).ok().map(ExpiryDate::date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_in_iso_format_only() {
        assert!(parse_date("2030-01-31").is_some());
        assert!(parse_date("31/01/2030").is_none());
        assert!(parse_date("2030-02-30").is_none());
    }

    #[tokio::test]
    async fn a_chosen_root_token_stored_under_its_legacy_handle_still_authenticates() {
        use agentreg_domain::names::UserIdentity;
        use agentreg_storage::port::{NewPersonalAccessToken, Storage};
        let storage: std::sync::Arc<dyn Storage> =
            std::sync::Arc::new(agentreg_storage::embedded::SledStorage::temporary().unwrap());
        let hasher = agentreg_storage::SecretHasher::insecure_for_tests();
        let chosen = SecretString::from("chosen-Root-token-0123456789!");
        let identity = UserIdentity::parse("root", "Administrator", "admin@example.com").unwrap();
        let root = storage.create_user(identity, true, 0).await.unwrap();
        storage
            .create_personal_access_token(
                NewPersonalAccessToken {
                    user_id: root.id,
                    name: "initial root token".to_owned(),
                    scopes: vec![Scope::Api],
                    expires_at: None,
                    handle: personal_access_token_handle(chosen.expose_secret()),
                    secret_hash: hasher.hash(&chosen).unwrap(),
                },
                0,
            )
            .await
            .unwrap();
        let app = App::new(
            storage,
            hasher,
            super::super::AppConfig {
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
            super::super::crypto::Sealer::new(&secrecy::SecretBox::new(Box::new([9; 32]))),
            super::super::internal::KasVerifier::new(&secrecy::SecretBox::new(Box::new(vec![
                7;
                32
            ]))),
        );

        let caller = app
            .authenticate(
                Credentials {
                    token: Some(chosen),
                    client: None,
                    sudo: None,
                },
                Intent::Write,
            )
            .await
            .unwrap();

        assert_eq!(caller.user.username, "root");
    }

    #[test]
    fn credentials_debug_hides_the_token() {
        let credentials = Credentials {
            token: Some(SecretString::from("glpat-secret")),
            client: None,
            sudo: None,
        };
        assert!(!format!("{credentials:?}").contains("glpat-secret"));
    }
}
