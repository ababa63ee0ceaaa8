//! Encryption of private keys at rest: AES-256-GCM under an instance key, with a fresh random
//! nonce per value. A sealed value is `version byte ‖ 12-byte nonce ‖ ciphertext and tag`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use std::fmt;

/// Sealed values of earlier versions: bound to their purpose only. Still opened, never written.
const SEALED_V1: u8 = 1;
/// The format of sealed values written by this version: bound to their record as well.
const SEALED_V2: u8 = 2;
const NONCE_BYTES: usize = 12;
/// The associated data of [`SEALED_V1`] values.
const ASSOCIATED_DATA_V1: &[u8] = b"agentreg/v1/url-configuration-private-key";

/// The record a sealed key belongs to, bound into its associated data so that a sealed key
/// copied into another record (or another mode) does not open there. An agent has at most one
/// URL configuration, so the agent names the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedFor {
    pub agent_id: u64,
    pub mode: SealedMode,
}

/// Which key of a URL configuration is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedMode {
    /// JWT mode's Ed25519 seed.
    Jwt,
    /// mTLS mode's client key.
    Mtls,
    /// Not a URL configuration's key: a rotated agent token's secret, held for the rotation
    /// retrieve window (bound to the agent it belongs to).
    RotationSecret,
}

impl SealedFor {
    fn associated_data(self) -> Vec<u8> {
        let mode = match self.mode {
            SealedMode::Jwt => "jwt",
            SealedMode::Mtls => "mtls",
            SealedMode::RotationSecret => {
                return format!("agentreg/v2/rotation-secret/agent/{}", self.agent_id).into_bytes();
            }
        };
        format!(
            "agentreg/v2/url-configuration-private-key/agent/{}/{mode}",
            self.agent_id
        )
        .into_bytes()
    }
}

/// Encrypts and decrypts private keys with the instance key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    /// Names the instance key without revealing it: hex of an HMAC of a fixed label under it.
    fingerprint: String,
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
        let fingerprint = derive_key(key, b"agentreg/v1/key-fingerprint")
            .expose_secret()
            .iter()
            .take(16)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let snapshots = SnapshotAuthenticator::new(key);
        let key = Key::<Aes256Gcm>::from_slice(key.expose_secret());
        Sealer {
            cipher: Aes256Gcm::new(key),
            fingerprint,
            handle_key: std::sync::Arc::new(handle_key),
            snapshots,
        }
    }

    /// The instance key's fingerprint, which storage records beside the data it sealed.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Authenticates snapshots with the instance key.
    pub(crate) fn snapshots(&self) -> &SnapshotAuthenticator {
        &self.snapshots
    }

    /// The key of chosen tokens' handles.
    pub(crate) fn handle_key(&self) -> &[u8; 32] {
        self.handle_key.expose_secret()
    }

    pub fn seal(&self, plaintext: &[u8], sealed_for: SealedFor) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let associated_data = sealed_for.associated_data();
        let payload = Payload {
            msg: plaintext,
            aad: &associated_data,
        };
        // AES-GCM encryption only fails for messages over 64 GiB; keys are a few KiB.
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        sealed.push(SEALED_V2);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Whether a sealed value was written by an earlier version, unbound to its record.
    pub(crate) fn is_legacy(sealed: &[u8]) -> bool {
        sealed.first() == Some(&SEALED_V1)
    }

    /// Seals as versions before record binding did; only tests write legacy values.
    #[cfg(test)]
    pub(crate) fn seal_legacy(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: ASSOCIATED_DATA_V1,
        };
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut sealed = vec![SEALED_V1];
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(
        &self,
        sealed: &[u8],
        sealed_for: SealedFor,
    ) -> Result<SecretBox<Vec<u8>>, OpenError> {
        let associated_data = match sealed.split_first() {
            Some((&SEALED_V2, _)) => sealed_for.associated_data(),
            Some((&SEALED_V1, _)) => ASSOCIATED_DATA_V1.to_vec(),
            Some(_) | None => return Err(OpenError),
        };
        let rest = &sealed[1..];
        if rest.len() < NONCE_BYTES {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad: &associated_data,
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

    const FOR_AGENT_1: SealedFor = SealedFor {
        agent_id: 1,
        mode: SealedMode::Jwt,
    };

    #[test]
    fn sealed_values_open_with_the_same_key() {
        let sealer = sealer(7);
        let sealed = sealer.seal(b"private key", FOR_AGENT_1);
        assert!(!sealed.windows(11).any(|w| w == b"private key"));
        assert_eq!(
            sealer
                .open(&sealed, FOR_AGENT_1)
                .unwrap()
                .expose_secret()
                .as_slice(),
            b"private key"
        );
    }

    #[test]
    fn another_key_or_tampering_fails() {
        let sealed = sealer(7).seal(b"private key", FOR_AGENT_1);
        assert!(sealer(8).open(&sealed, FOR_AGENT_1).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer(7).open(&tampered, FOR_AGENT_1).is_err());
        assert!(sealer(7).open(&[], FOR_AGENT_1).is_err());
    }

    #[test]
    fn a_sealed_key_does_not_open_in_another_record_or_mode() {
        let sealer = sealer(7);
        let sealed = sealer.seal(b"private key", FOR_AGENT_1);
        let other_agent = SealedFor {
            agent_id: 2,
            ..FOR_AGENT_1
        };
        let other_mode = SealedFor {
            mode: SealedMode::Mtls,
            ..FOR_AGENT_1
        };

        assert!(sealer.open(&sealed, other_agent).is_err());
        assert!(sealer.open(&sealed, other_mode).is_err());
    }

    #[test]
    fn keys_sealed_by_earlier_versions_still_open() {
        let sealer = sealer(7);
        let legacy = sealer.seal_legacy(b"legacy key");

        let opened = sealer.open(&legacy, FOR_AGENT_1).unwrap();

        assert_eq!(opened.expose_secret().as_slice(), b"legacy key");
    }

    #[test]
    fn the_same_value_seals_differently_each_time() {
        let sealer = sealer(1);
        assert_ne!(
            sealer.seal(b"k", FOR_AGENT_1),
            sealer.seal(b"k", FOR_AGENT_1)
        );
    }
}
