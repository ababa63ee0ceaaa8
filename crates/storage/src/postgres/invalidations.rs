//! The invalidation feed: a dedicated connection (outside the pool) LISTENs on the channel that
//! revocations and agent deletions NOTIFY inside their transactions, and a background task turns
//! each notification into an [`Invalidation`]. When the connection drops the task says so
//! (`Interrupted`), reconnects with backoff and says `Resumed` once it listens again.

use super::errors::{pg, timed_out};
use super::tls::ConnectionSettings;
use crate::StoreError;
use crate::port::{Invalidation, InvalidationFeed};
use agentreg_domain::ids::{AgentTokenId, PersonalAccessTokenId};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;

/// The channel writers notify, with comma-separated agent token ids as the payload.
pub(super) const CHANNEL: &str = "agentreg_invalidations";

/// How many invalidations may wait for the consumer. Past that, the task owes the consumer an
/// `Interrupted` (drop every cache) instead of blocking.
const FEED_CAPACITY: usize = 1024;
/// How often the listening connection is checked, so that a silently dead connection is noticed.
const HEARTBEAT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps the background task alive; dropping it stops the task.
pub(super) struct Listener {
    _stop: oneshot::Sender<()>,
}

/// Connects the listening connection and starts the task. Fails if the first LISTEN fails, so
/// that a storage that connected also receives every notification from then on.
pub(super) async fn start(
    settings: ConnectionSettings,
) -> Result<(Listener, InvalidationFeed), StoreError> {
    let listening = listen(&settings).await?;
    let (sender, receiver) = mpsc::channel(FEED_CAPACITY);
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(run(
        settings,
        listening,
        Feed {
            sender,
            owes_interruption: false,
        },
        stopped,
    ));
    Ok((Listener { _stop: stop }, receiver))
}

/// The payload that invalidates these tokens.
pub(super) fn payload(token_ids: &[AgentTokenId]) -> String {
    token_ids
        .iter()
        .map(|id| id.get().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A connection that listens on [`CHANNEL`], with its notifications.
struct Listening {
    client: tokio_postgres::Client,
    notifications: mpsc::UnboundedReceiver<tokio_postgres::Notification>,
}

/// The consumer's side, with the rule for a full channel.
struct Feed {
    sender: mpsc::Sender<Invalidation>,
    /// A notification was dropped because the channel was full: the consumer must drop its
    /// caches before it hears anything else.
    owes_interruption: bool,
}

impl Feed {
    /// Sends without waiting. If the channel is full, the invalidation is dropped and an
    /// interruption is owed instead. While one is owed, later invalidations are dropped too
    /// (dropping every cache covers them); it is paid, with `Resumed` after it if the feed is
    /// connected, as soon as there is room.
    fn send(&mut self, invalidation: Invalidation, connected: bool) {
        if self.owes_interruption {
            self.settle(connected);
            return;
        }
        if self.sender.try_send(invalidation).is_err() {
            self.owes_interruption = true;
        }
    }

    /// Pays an owed interruption if there is room; returns whether nothing is owed any more.
    fn settle(&mut self, connected: bool) -> bool {
        if !self.owes_interruption {
            return true;
        }
        if self.sender.capacity() < 2 {
            return false;
        }
        self.owes_interruption = false;
        let _sent = self.sender.try_send(Invalidation::Interrupted);
        if connected {
            let _sent = self.sender.try_send(Invalidation::Resumed);
        }
        true
    }
}

async fn run(
    settings: ConnectionSettings,
    mut listening: Listening,
    mut feed: Feed,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = feed.sender.closed() => return,
                notification = listening.notifications.recv() => {
                    let Some(notification) = notification else { break };
                    let (token_ids, pat_ids) = parse_payload(notification.payload());
                    if !token_ids.is_empty() {
                        feed.send(Invalidation::AgentTokens(token_ids), true);
                    }
                    if !pat_ids.is_empty() {
                        feed.send(Invalidation::PersonalAccessTokens(pat_ids), true);
                    }
                }
                _ = heartbeat.tick() => {
                    feed.settle(true);
                    let alive = tokio::time::timeout(
                        settings.statement_timeout,
                        listening.client.simple_query("SELECT 1"),
                    )
                    .await;
                    if !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        drop(listening);
        tracing::warn!("the invalidation feed lost its database connection; reconnecting");
        feed.send(Invalidation::Interrupted, false);
        let mut backoff = FIRST_BACKOFF;
        listening = loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = feed.sender.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            feed.settle(false);
            match listen(&settings).await {
                Ok(listening) => break listening,
                Err(error) => {
                    tracing::debug!(error = %error, "reconnecting the invalidation feed failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        tracing::info!("the invalidation feed is listening again");
        feed.send(Invalidation::Resumed, true);
    }
}

/// Opens a connection and LISTENs on it. The connection's messages are forwarded by a task of
/// their own, which ends when the connection does.
async fn listen(settings: &ConnectionSettings) -> Result<Listening, StoreError> {
    let connecting = settings.config.connect(settings.tls.clone());
    let (client, mut connection) = tokio::time::timeout(settings.connect_timeout, connecting)
        .await
        .map_err(|_| timed_out())?
        .map_err(pg)?;
    let (forward, notifications) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if forward.send(notification).is_err() {
                        break;
                    }
                }
                Ok(_notice) => {}
                Err(error) => {
                    tracing::debug!(error = %error, "the invalidation feed's connection ended");
                    break;
                }
            }
        }
    });
    let statement = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&statement);
    tokio::time::timeout(settings.statement_timeout, listening)
        .await
        .map_err(|_| timed_out())?
        .map_err(pg)?;
    Ok(Listening {
        client,
        notifications,
    })
}

/// The payload that revokes personal access tokens: `pat:<id>` entries, which older builds
/// skip as garbage.
pub(super) fn personal_access_token_payload(token_ids: &[PersonalAccessTokenId]) -> String {
    token_ids
        .iter()
        .map(|id| format!("pat:{}", id.get()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Agent token ids (bare numbers) and personal access token ids (`pat:<id>`); anything else is
/// skipped.
fn parse_payload(payload: &str) -> (Vec<AgentTokenId>, Vec<PersonalAccessTokenId>) {
    let mut agent_tokens = Vec::new();
    let mut personal_tokens = Vec::new();
    for part in payload.split(',').map(str::trim) {
        if let Some(id) = part.strip_prefix("pat:") {
            if let Ok(id) = id.parse::<u64>() {
                personal_tokens.push(PersonalAccessTokenId::new(id));
            }
        } else if let Ok(id) = part.parse::<u64>() {
            agent_tokens.push(AgentTokenId::new(id));
        }
    }
    (agent_tokens, personal_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_skipped() {
        let ids = vec![AgentTokenId::new(3), AgentTokenId::new(41)];
        assert_eq!(payload(&ids), "3,41");
        assert_eq!(parse_payload("3,41"), (ids, Vec::new()));
        assert_eq!(
            parse_payload("x,,7"),
            (vec![AgentTokenId::new(7)], Vec::new())
        );
        let pats = vec![PersonalAccessTokenId::new(5)];
        assert_eq!(personal_access_token_payload(&pats), "pat:5");
        assert_eq!(
            parse_payload("pat:5,9,pat:x"),
            (vec![AgentTokenId::new(9)], pats)
        );
    }

    #[tokio::test]
    async fn a_full_feed_owes_an_interruption_instead_of_blocking() {
        let (sender, mut receiver) = mpsc::channel(2);
        let mut feed = Feed {
            sender,
            owes_interruption: false,
        };
        let tokens = |id| Invalidation::AgentTokens(vec![AgentTokenId::new(id)]);

        feed.send(tokens(1), true);
        feed.send(tokens(2), true);
        feed.send(tokens(3), true);
        assert!(feed.owes_interruption);
        assert_eq!(receiver.recv().await, Some(tokens(1)));
        assert_eq!(receiver.recv().await, Some(tokens(2)));
        feed.send(tokens(4), true);

        assert_eq!(receiver.recv().await, Some(Invalidation::Interrupted));
        assert_eq!(receiver.recv().await, Some(Invalidation::Resumed));
        assert!(!feed.owes_interruption);
        assert!(receiver.try_recv().is_err());
    }
}
