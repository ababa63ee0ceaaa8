//! Argon2id hashing of token secrets. Only the PHC-format hash is ever stored. Hashing and
//! verifying take tens of milliseconds by design, so callers run them on a blocking thread, and
//! never inside a sled transaction closure (which may re-run).

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// Argon2id memory cost in KiB (OWASP's recommended minimum).
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// Argon2id passes over memory.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Argon2id lanes.
pub const ARGON2_PARALLELISM: u32 = 1;

/// A PHC-format argon2id hash of a secret. Not a secret itself, but kept out of logs anyway.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(String);

impl SecretHash {
    pub(crate) fn from_stored(phc: String) -> SecretHash {
        SecretHash(phc)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash([redacted])")
    }
}

/// Hashing failed: the parameters or the platform's RNG were unusable.
#[derive(Debug, thiserror::Error)]
#[error("hashing a secret failed")]
pub struct HashError(#[source] argon2::password_hash::Error);

/// Hashes and verifies secrets with fixed argon2id parameters.
#[derive(Clone)]
pub struct SecretHasher {
    params: Params,
}

impl SecretHasher {
    /// The production parameters: m=19456 KiB, t=2, p=1.
    pub fn new() -> SecretHasher {
        SecretHasher::with_cost(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS)
    }

    /// Cheap parameters for tests that hash in bulk. Never use it to store real secrets.
    pub fn insecure_for_tests() -> SecretHasher {
        SecretHasher::with_cost(argon2::Params::MIN_M_COST, 1)
    }

    fn with_cost(memory_kib: u32, iterations: u32) -> SecretHasher {
        let params = Params::new(memory_kib, iterations, ARGON2_PARALLELISM, None)
            .unwrap_or_else(|_| Params::default());
        SecretHasher { params }
    }

    /// Hashes `secret` with a fresh random salt. Blocks for tens of milliseconds.
    pub fn hash(&self, secret: &SecretString) -> Result<SecretHash, HashError> {
        let phc = self
            .argon2()
            .hash_password(secret.expose_secret().as_bytes())
            .map_err(HashError)?;
        Ok(SecretHash(phc.to_string()))
    }

    /// Whether `secret` matches `hash`, using the parameters recorded in the hash. A malformed
    /// hash never matches. Blocks for tens of milliseconds.
    pub fn verify(&self, secret: &SecretString, hash: &SecretHash) -> bool {
        let Ok(parsed) = PasswordHash::new(hash.as_str()) else {
            return false;
        };
        self.argon2()
            .verify_password(secret.expose_secret().as_bytes(), &parsed)
            .is_ok()
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }
}

impl Default for SecretHasher {
    fn default() -> SecretHasher {
        SecretHasher::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_hash_uses_the_named_parameters() {
        let hash = SecretHasher::new()
            .hash(&SecretString::from("glpat-secret"))
            .unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }

    #[test]
    fn matching_secret_verifies_and_other_secret_does_not() {
        let hasher = SecretHasher::insecure_for_tests();
        let hash = hasher.hash(&SecretString::from("right")).unwrap();
        assert!(hasher.verify(&SecretString::from("right"), &hash));
        assert!(!hasher.verify(&SecretString::from("wrong"), &hash));
    }

    #[test]
    fn malformed_hash_never_verifies() {
        let hash = SecretHash::from_stored("not a phc string".to_owned());
        assert!(!SecretHasher::insecure_for_tests().verify(&SecretString::from("x"), &hash));
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let hash = SecretHasher::insecure_for_tests()
            .hash(&SecretString::from("s"))
            .unwrap();
        assert_eq!(format!("{hash:?}"), "SecretHash([redacted])");
    }
}
