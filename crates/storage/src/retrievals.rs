//! Rotated successors' secrets held for the rotation retrieve window: sealed by the app under the
//! instance key, taken at most once by the caller who rotated, and deleted when the window ends.
//! The tree is never part of a snapshot.

use crate::port::RotationRetrieval;
use crate::records::{encode, v1};
use crate::schema;
use crate::{Store, StoreError, decode, engine};
use agentreg_domain::ids::{AgentTokenId, UserId};

fn retrieval_key(predecessor_id: AgentTokenId, idempotency_key: &str) -> Vec<u8> {
    let mut key = schema::id_key(predecessor_id.get()).to_vec();
    key.extend_from_slice(idempotency_key.as_bytes());
    key
}

impl Store {
    /// Holds a successor's sealed secret until `expires_at_ms`; a key used before is replaced.
    pub fn hold_rotation_secret(&self, retrieval: RotationRetrieval) -> Result<(), StoreError> {
        let record = v1::RotationRetrieval {
            user_id: retrieval.user_id.get(),
            successor_id: retrieval.successor_id.get(),
            sealed_secret: retrieval.sealed_secret,
            expires_at_ms: retrieval.expires_at_ms,
        };
        let writing = self.writing();
        self.trees
            .rotation_retrievals
            .insert(
                retrieval_key(retrieval.predecessor_id, &retrieval.idempotency_key),
                encode(&record),
            )
            .map_err(engine)?;
        self.commit(writing)
    }

    /// Takes the held secret of this rotation, once, if `user_id` rotated it with this key and
    /// the window is still open.
    pub fn take_rotation_secret(
        &self,
        predecessor_id: AgentTokenId,
        idempotency_key: &str,
        user_id: UserId,
        now_ms: i64,
    ) -> Result<Option<(AgentTokenId, Vec<u8>)>, StoreError> {
        let key = retrieval_key(predecessor_id, idempotency_key);
        let tree = &self.trees.rotation_retrievals;
        let Some(bytes) = tree.get(&key).map_err(engine)? else {
            return Ok(None);
        };
        let record: v1::RotationRetrieval = decode(schema::ROTATION_RETRIEVALS, &bytes)?;
        if record.user_id != user_id.get() || record.expires_at_ms <= now_ms {
            return Ok(None);
        }
        let writing = self.writing();
        // Only the caller whose compare-and-swap removes the record gets the secret.
        let taken = tree
            .compare_and_swap(&key, Some(&bytes), None as Option<&[u8]>)
            .map_err(engine)?;
        if taken.is_err() {
            return Ok(None);
        }
        self.commit(writing)?;
        Ok(Some((
            AgentTokenId::new(record.successor_id),
            record.sealed_secret,
        )))
    }

    /// Deletes every held secret whose window has ended; returns how many went.
    pub fn purge_rotation_secrets(&self, now_ms: i64) -> Result<u64, StoreError> {
        let tree = &self.trees.rotation_retrievals;
        let mut n_purged = 0;
        for entry in tree.iter() {
            let (key, bytes) = entry.map_err(engine)?;
            let record: v1::RotationRetrieval = decode(schema::ROTATION_RETRIEVALS, &bytes)?;
            if record.expires_at_ms <= now_ms {
                let _writing = self.writing();
                tree.remove(key).map_err(engine)?;
                n_purged += 1;
            }
        }
        if n_purged > 0 {
            self.flush()?;
        }
        Ok(n_purged)
    }
}
