//! Online backup: an administrator reads a consistent snapshot of the running service,
//! authenticated with the instance key.

use super::audit::{AuditEntry, instance_event};
use super::{App, Caller, Error, author};

impl App {
    /// The whole database as an authenticated snapshot file (administrators with an `api`
    /// token: the file holds every hash and sealed key, so a read-only token is not enough).
    pub async fn snapshot(&self, caller: &Caller) -> Result<Vec<u8>, Error> {
        if !caller.user.is_admin {
            return Err(Error::Forbidden);
        }
        if !caller.can_write() {
            return Err(Error::InsufficientScope);
        }
        match self.storage().snapshot().await {
            Ok(bytes) => {
                let entry = AuditEntry {
                    event_name: "snapshot_downloaded",
                    message: "Downloaded a snapshot of the whole database".to_owned(),
                    entity_type: "Instance",
                    entity_id: 0,
                    target_details: "snapshot",
                };
                self.record_instance_event(instance_event(author(caller), entry))
                    .await;
                Ok(self.inner.sealer.snapshots().seal(bytes))
            }
            Err(agentreg_storage::backup::SnapshotError::Store(error)) => Err(error.into()),
            Err(error) => Err(Error::internal("writing a snapshot failed", error)),
        }
    }
}
