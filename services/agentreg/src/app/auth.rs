//! Authenticating callers by personal access token, GitLab's way: from `PRIVATE-TOKEN`,
//! `Authorization: Bearer` or `private_token`, with `read_api` tokens refused on writes.
//! A verified token is cached by digest, so only its first use pays for argon2.

use super::cache::TokenDigest;
use super::{App, AuthCounters, Error};
use agentreg_domain::access::Scope;
use agentreg_domain::entities::User;
use agentreg_domain::ids::UserId;
use agentreg_domain::tokens::personal_access_token_handle;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::net::IpAddr;
use std::time::Instant;
use time::Date;
use time::macros::format_description;

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
    fn can_write(&self) -> bool {
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
    ) -> Result<Caller, Error> {
        let client = credentials.client;
        let caller = self.authenticate_token(credentials.token, client).await;
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
    async fn sudo(&self, caller: Caller, identifier: &str) -> Result<Caller, Error> {
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
        Ok(Caller {
            sudo_by: Some(caller.user.id),
            user,
            ..caller
        })
    }

    /// A cached token answers at once and is never throttled; anything else is throttled per
    /// client address, then looked up and verified with argon2.
    async fn authenticate_token(
        &self,
        token: Option<SecretString>,
        client: Option<IpAddr>,
    ) -> Result<Caller, Error> {
        let today = time::OffsetDateTime::now_utc().date();
        let cache = &self.inner.personal_tokens;
        let digest = token.as_ref().map(TokenDigest::of);
        if let Some(digest) = &digest
            && let Some(caller) = cache.get(digest)
        {
            if caller.expired(today) {
                cache.remove(digest);
                return Err(Error::Unauthorized);
            }
            AuthCounters::bump(&self.inner.counters.cache_hits);
            return Ok(caller);
        }
        self.check_throttle(client)?;
        let (Some(token), Some(digest)) = (token, digest) else {
            return Err(Error::Unauthorized);
        };
        let handle = personal_access_token_handle(token.expose_secret());
        let generation = cache.generation();
        let found = self
            .storage()
            .personal_access_token_by_handle(&handle)
            .await?;
        let Some(credential) = found.filter(|credential| !credential.token.revoked) else {
            return Err(Error::Unauthorized);
        };
        if !self.verify_secret(&token, credential.secret_hash).await? {
            return Err(Error::Unauthorized);
        }
        let (pat, user) = (credential.token, credential.user);
        let scopes = pat
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s).ok())
            .collect();
        let expires_on = match pat.expires_at.as_deref() {
            Some(date) => Some(parse_date(date).ok_or_else(|| {
                Error::internal("stored token expiry is malformed", date.to_owned())
            })?),
            None => None,
        };
        let caller = Caller {
            user,
            scopes,
            sudo_by: None,
            expires_on,
        };
        if caller.expired(today) {
            return Err(Error::Unauthorized);
        }
        cache.insert(generation, digest, pat.id, caller.clone());
        Ok(caller)
    }
}

impl App {
    /// Refuses a client that has failed to authenticate too often this minute.
    pub(crate) fn check_throttle(&self, client: Option<IpAddr>) -> Result<(), Error> {
        let Some(client) = client else {
            return Ok(());
        };
        match self.inner.limiter.retry_after(client, Instant::now()) {
            Some(retry_after_secs) => Err(Error::TooManyRequests { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// Counts a failed authentication towards the client's limit and records an instance
    /// audit event (without the presented credential).
    pub(crate) async fn authentication_failed(
        &self,
        client: Option<IpAddr>,
        credential: &'static str,
    ) {
        AuthCounters::bump(&self.inner.counters.failures);
        if let Some(client) = client {
            self.inner.limiter.record_failure(client, Instant::now());
        }
        let now = super::now_ms();
        let address = client.map(|ip| ip.to_string());
        let event = super::audit::authentication_failure(credential, address);
        if let Err(error) = self.storage().record_audit_event(event, now).await {
            tracing::error!(error = %error, "recording a failed authentication failed");
        }
    }
}

/// Parses an ISO date, `YYYY-MM-DD`.
pub(crate) fn parse_date(text: &str) -> Option<Date> {
    Date::parse(text, format_description!("[year]-[month]-[day]")).ok()
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
