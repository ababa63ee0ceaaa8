//! Encryption of private keys at rest: AES-256-GCM under an instance key, with a fresh random
//! nonce per value. A sealed value is `version byte ‖ 12-byte nonce ‖ ciphertext and tag`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use std::fmt;

/// The format of sealed values written by this version.
const SEALED_V1: u8 = 1;
const NONCE_BYTES: usize = 12;
/// Binds ciphertexts to their purpose, so one can't be swapped in for another kind of secret.
const ASSOCIATED_DATA: &[u8] = b"agentreg/v1/url-configuration-private-key";

/// Encrypts and decrypts private keys with the instance key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    /// Keys the handles of chosen tokens; derived from the instance key, so never stored.
    handle_key: std::sync::Arc<SecretBox<[u8; 32]>>,
    snapshots: SnapshotAuthenticator,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

/// Follows a snapshot authenticated with the instance key, before the 32-byte HMAC-SHA256 tag.
const SNAPSHOT_TAG_MARKER: &[u8] = b"AGENTREG-SNAPSHOT-HMAC-SHA256-V1";

/// Authenticates snapshot files with a key derived from the instance key, so that a snapshot
/// altered by anyone without the key (an administrator flag set, a record replaced) is refused.
#[derive(Clone)]
pub struct SnapshotAuthenticator {
    key: std::sync::Arc<SecretBox<[u8; 32]>>,
}

/// A snapshot file failed authentication.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotAuthError {
    #[error(
        "the snapshot carries no authentication tag: it is not an agentreg snapshot, or an older version wrote it"
    )]
    Unauthenticated,
    #[error(
        "the snapshot's authentication tag does not match: it was altered, or it was taken with another encryption key"
    )]
    Mismatch,
}

impl SnapshotAuthenticator {
    pub fn new(instance_key: &SecretBox<[u8; 32]>) -> SnapshotAuthenticator {
        SnapshotAuthenticator {
            key: std::sync::Arc::new(derive_key(instance_key, b"agentreg/v1/snapshot-hmac")),
        }
    }

    /// Appends the marker and the tag to a snapshot.
    pub fn seal(&self, mut snapshot: Vec<u8>) -> Vec<u8> {
        use hmac::Mac as _;
        let tag = self.mac(&snapshot).finalize().into_bytes();
        snapshot.extend_from_slice(SNAPSHOT_TAG_MARKER);
        snapshot.extend_from_slice(&tag);
        snapshot
    }

    /// The snapshot inside an authenticated file, if its tag verifies (in constant time).
    pub fn open<'a>(&self, file: &'a [u8]) -> Result<&'a [u8], SnapshotAuthError> {
        use hmac::Mac as _;
        let trailer = SNAPSHOT_TAG_MARKER.len() + 32;
        if file.len() < trailer {
            return Err(SnapshotAuthError::Unauthenticated);
        }
        let (snapshot, rest) = file.split_at(file.len() - trailer);
        let (marker, tag) = rest.split_at(SNAPSHOT_TAG_MARKER.len());
        if marker != SNAPSHOT_TAG_MARKER {
            return Err(SnapshotAuthError::Unauthenticated);
        }
        self.mac(snapshot)
            .verify_slice(tag)
            .map_err(|_| SnapshotAuthError::Mismatch)?;
        Ok(snapshot)
    }

    #[expect(
        clippy::expect_used,
        reason = "HMAC accepts keys of any length, so building it cannot fail"
    )]
    fn mac(&self, snapshot: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac as _;
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(self.key.expose_secret())
                .expect("HMAC accepts keys of any length");
        mac.update(snapshot);
        mac
    }
}

/// A key for one purpose, derived from the instance key with HMAC-SHA256.
#[expect(
    clippy::expect_used,
    reason = "HMAC accepts keys of any length, so building it cannot fail"
)]
pub(crate) fn derive_key(
    instance_key: &SecretBox<[u8; 32]>,
    purpose: &[u8],
) -> SecretBox<[u8; 32]> {
    use hmac::Mac as _;
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(instance_key.expose_secret())
            .expect("HMAC accepts keys of any length");
    mac.update(purpose);
    let derived: [u8; 32] = mac.finalize().into_bytes().into();
    SecretBox::new(Box::new(derived))
}

/// A sealed value could not be opened: the wrong key, or corrupted data.
#[derive(Debug, thiserror::Error)]
#[error("a sealed private key could not be decrypted")]
pub struct OpenError;

impl Sealer {
    pub fn new(key: &SecretBox<[u8; 32]>) -> Sealer {
        let handle_key = derive_key(key, b"agentreg/v1/token-handle-key");
        let snapshots = SnapshotAuthenticator::new(key);
        let key = Key::<Aes256Gcm>::from_slice(key.expose_secret());
        Sealer {
            cipher: Aes256Gcm::new(key),
            handle_key: std::sync::Arc::new(handle_key),
            snapshots,
        }
    }

    /// Authenticates snapshots with the instance key.
    pub(crate) fn snapshots(&self) -> &SnapshotAuthenticator {
        &self.snapshots
    }

    /// The key of chosen tokens' handles.
    pub(crate) fn handle_key(&self) -> &[u8; 32] {
        self.handle_key.expose_secret()
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: ASSOCIATED_DATA,
        };
        // AES-GCM encryption only fails for messages over 64 GiB; keys are a few KiB.
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, sealed: &[u8]) -> Result<SecretBox<Vec<u8>>, OpenError> {
        let Some((&SEALED_V1, rest)) = sealed.split_first() else {
            return Err(OpenError);
        };
        if rest.len() < NONCE_BYTES {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad: ASSOCIATED_DATA,
        };
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| OpenError)?;
        Ok(SecretBox::new(Box::new(plaintext)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authenticated_snapshot_opens_only_unaltered_and_with_its_key() {
        let authenticator = SnapshotAuthenticator::new(&SecretBox::new(Box::new([1; 32])));
        let other = SnapshotAuthenticator::new(&SecretBox::new(Box::new([2; 32])));
        let sealed = authenticator.seal(b"snapshot bytes".to_vec());
        let mut altered = sealed.clone();
        altered[0] ^= 1;

        assert_eq!(authenticator.open(&sealed).unwrap(), b"snapshot bytes");
        assert!(matches!(
            authenticator.open(&altered),
            Err(SnapshotAuthError::Mismatch)
        ));
        assert!(matches!(
            other.open(&sealed),
            Err(SnapshotAuthError::Mismatch)
        ));
        assert!(matches!(
            authenticator.open(b"snapshot bytes"),
            Err(SnapshotAuthError::Unauthenticated)
        ));
    }

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&SecretBox::new(Box::new([byte; 32])))
    }

    #[test]
    fn sealed_values_open_with_the_same_key() {
        let sealer = sealer(7);
        let sealed = sealer.seal(b"private key");
        assert!(!sealed.windows(11).any(|w| w == b"private key"));
        assert_eq!(
            sealer.open(&sealed).unwrap().expose_secret().as_slice(),
            b"private key"
        );
    }

    #[test]
    fn another_key_or_tampering_fails() {
        let sealed = sealer(7).seal(b"private key");
        assert!(sealer(8).open(&sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer(7).open(&tampered).is_err());
        assert!(sealer(7).open(&[]).is_err());
    }

    #[test]
    fn the_same_value_seals_differently_each_time() {
        let sealer = sealer(1);
        assert_ne!(sealer.seal(b"k"), sealer.seal(b"k"));
    }
}
