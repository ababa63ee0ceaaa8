//! Instance settings kept with the data: the fingerprint of the instance key that sealed the
//! stored private keys and keys the snapshots, so that a service started with another key (a
//! restore whose key files were not copied) refuses to start instead of failing on every read.

use crate::schema;
use crate::{Store, StoreError, engine};

impl Store {
    /// Records `fingerprint` unless one is recorded already, and returns the recorded one.
    pub fn record_key_fingerprint(&self, fingerprint: &str) -> Result<String, StoreError> {
        let writing = self.writing();
        let swapped = self
            .trees
            .meta
            .compare_and_swap(
                schema::KEY_FINGERPRINT,
                None as Option<&[u8]>,
                Some(fingerprint.as_bytes()),
            )
            .map_err(engine)?;
        match swapped {
            Ok(()) => {
                self.commit(writing)?;
                Ok(fingerprint.to_owned())
            }
            Err(conflict) => Ok(conflict
                .current
                .map(|recorded| String::from_utf8_lossy(&recorded).into_owned())
                .unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fixtures;

    #[test]
    fn the_first_fingerprint_recorded_stays() {
        let store = fixtures::store();

        let first = store.record_key_fingerprint("aaaa").unwrap();
        let second = store.record_key_fingerprint("bbbb").unwrap();

        assert_eq!(first, "aaaa");
        assert_eq!(second, "aaaa");
    }
}
