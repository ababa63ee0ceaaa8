//! The administrators' inventory of every agent of the instance (an agentreg extension): each
//! agent with its project path and a summary of its tokens, filtered to find dead agents and
//! tokens that need rotating.

use super::agent_tokens::parse_expiry;
use super::pagination::{PageInfo, Pagination};
use super::{App, Caller, Error, now_ms};
use agentreg_domain::entities::{Agent, Project};

/// `GET /admin/cluster_agents` filters as sent.
#[derive(Debug, Default)]
pub struct InventoryFilters {
    /// Only agents whose tokens were all last used before this time, or never.
    pub unused_since: Option<String>,
    /// Only agents with a usable token that expires before this time.
    pub token_expires_before: Option<String>,
    /// Only agents of projects whose full path starts with this (case-insensitively).
    pub project: Option<String>,
}

/// One agent in the inventory.
#[derive(Debug, Clone)]
pub struct InventoryEntry {
    pub agent: Agent,
    pub project: Project,
    /// Tokens that authenticate now (active, not expired, retiring ones included).
    pub n_active_tokens: u64,
    /// The most recent use of any of the agent's tokens.
    pub last_used_at_ms: Option<i64>,
    /// The earliest expiry among the usable tokens.
    pub earliest_expires_at_ms: Option<i64>,
}

impl App {
    /// A page of the instance's agents, ordered by id (administrators only).
    pub async fn agent_inventory(
        &self,
        caller: &Caller,
        filters: InventoryFilters,
        pagination: Pagination,
    ) -> Result<(Vec<InventoryEntry>, PageInfo), Error> {
        let time = |name: &'static str, text: Option<String>| {
            text.map(|text| parse_expiry(&text).ok_or_else(|| Error::invalid(name)))
                .transpose()
        };
        let unused_since = time("unused_since", filters.unused_since)?;
        let expires_before = time("token_expires_before", filters.token_expires_before)?;
        let project_prefix = filters.project.map(|prefix| prefix.to_lowercase());
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        let now = now_ms();
        let entries: Vec<InventoryEntry> = self
            .storage()
            .all_agents()
            .await?
            .into_iter()
            .map(|found| {
                let usable: Vec<_> = found
                    .tokens
                    .iter()
                    .filter(|token| token.is_usable(now))
                    .collect();
                let last_used_at_ms = found
                    .tokens
                    .iter()
                    .filter_map(|token| self.inner.usage.overlay(token.id, token.last_used_at_ms))
                    .max();
                InventoryEntry {
                    n_active_tokens: u64::try_from(usable.len()).unwrap_or(u64::MAX),
                    earliest_expires_at_ms: usable
                        .iter()
                        .filter_map(|token| token.expires_at_ms)
                        .min(),
                    last_used_at_ms,
                    agent: found.agent,
                    project: found.project,
                }
            })
            .filter(|entry| {
                let unused = unused_since
                    .is_none_or(|since| entry.last_used_at_ms.is_none_or(|used| used < since));
                let expiring = expires_before.is_none_or(|before| {
                    entry
                        .earliest_expires_at_ms
                        .is_some_and(|expires| expires < before)
                });
                let in_project = project_prefix.as_deref().is_none_or(|prefix| {
                    entry
                        .project
                        .path_with_namespace()
                        .to_lowercase()
                        .starts_with(prefix)
                });
                unused && expiring && in_project
            })
            .collect();
        Ok(pagination.slice(entries))
    }
}
