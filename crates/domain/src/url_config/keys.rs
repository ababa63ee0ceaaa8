//! The Ed25519 key pair that agentreg generates for a URL configuration in JWT mode, and rebuilds
//! from its stored seed. The seed never appears in `Debug` output.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use rand::{CryptoRng, RngCore};
use rustls_pki_types::PrivatePkcs8KeyDer;
use secrecy::zeroize::{Zeroize as _, Zeroizing};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};

/// The Ed25519 key pair of a URL configuration in JWT mode. `Debug` never prints the seed.
pub struct Ed25519KeyPair {
    seed: SecretBox<[u8; 32]>,
    public_key: [u8; 32],
}

/// A stored Ed25519 seed that the key library refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyPairError {
    #[error("the ed25519 seed was rejected by the key library")]
    SeedRejected(#[source] rcgen::Error),
    #[error("the key library derived a {length}-byte ed25519 public key instead of 32 bytes")]
    UnexpectedPublicKeyLength { length: usize },
}

impl Ed25519KeyPair {
    /// Generates a key pair from a seed drawn from the caller's RNG.
    #[expect(
        clippy::expect_used,
        reason = "every 32-byte string is a valid Ed25519 seed, and the seed is wrapped in a fixed, \
                  well-formed PKCS#8 template"
    )]
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Ed25519KeyPair {
        let seed = SecretBox::init_with_mut(|seed: &mut [u8; 32]| rng.fill_bytes(seed));
        Ed25519KeyPair::from_secret_seed(seed)
            .expect("every 32-byte string is a valid Ed25519 seed")
    }

    /// Rebuilds a key pair from its seed, for example after decrypting a stored key.
    pub fn from_seed(seed: [u8; 32]) -> Result<Ed25519KeyPair, KeyPairError> {
        let mut seed = seed;
        let secret_seed = SecretBox::new(Box::new(seed));
        seed.zeroize();
        Ed25519KeyPair::from_secret_seed(secret_seed)
    }

    /// The raw 32-byte public key, as GitLab stores it.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// Standard base64 (with padding) of the raw public key: the 44-character `public_key` of
    /// GitLab's URL-configuration entity.
    pub fn public_key_base64(&self) -> String {
        BASE64_STANDARD.encode(self.public_key)
    }

    /// The raw 32-byte seed (RFC 8032 private key), for encryption at rest.
    pub fn seed_bytes(&self) -> &[u8; 32] {
        self.seed.expose_secret()
    }

    /// Strict base64 of the seed, as the agent server's internal route returns it.
    pub fn seed_base64(&self) -> SecretString {
        SecretString::from(BASE64_STANDARD.encode(self.seed.expose_secret()))
    }

    fn from_secret_seed(seed: SecretBox<[u8; 32]>) -> Result<Ed25519KeyPair, KeyPairError> {
        let public_key = ed25519_public_key(seed.expose_secret())?;
        Ok(Ed25519KeyPair { seed, public_key })
    }
}

impl fmt::Debug for Ed25519KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519KeyPair")
            .field("public_key", &self.public_key_base64())
            .field("seed", &"[redacted]")
            .finish()
    }
}

/// The DER of an RFC 8410 `OneAsymmetricKey` v1 for Ed25519 up to the 32 seed bytes, which end it.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An RFC 8410 PKCS#8 v1 document holding `seed`.
fn ed25519_pkcs8_v1(seed: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    let mut document = Zeroizing::new(Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + 32));
    document.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
    document.extend_from_slice(seed);
    document
}

fn ed25519_public_key(seed: &[u8; 32]) -> Result<[u8; 32], KeyPairError> {
    let document = ed25519_pkcs8_v1(seed);
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(document.as_slice()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(KeyPairError::SeedRejected)?;
    let public_key = key_pair.public_key_raw();
    <[u8; 32]>::try_from(public_key).map_err(|_| KeyPairError::UnexpectedPublicKeyLength {
        length: public_key.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url_config::fixtures::TestResult;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rcgen::SigningKey as _;
    use secrecy::ExposeSecret;

    // RFC 8032 section 7.1, test 1: the empty message signed with this seed.
    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC_KEY: &str =
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC8032_SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn hex(text: &str) -> TestResult<Vec<u8>> {
        let bytes = (0..text.len())
            .step_by(2)
            .map(|idx| u8::from_str_radix(&text[idx..idx + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(bytes)
    }

    fn rcgen_signer(key_pair: &Ed25519KeyPair) -> TestResult<rcgen::KeyPair> {
        let document = ed25519_pkcs8_v1(key_pair.seed_bytes());
        Ok(rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(document.as_slice()),
            &rcgen::PKCS_ED25519,
        )?)
    }

    #[test]
    fn public_key_base64_is_44_characters_of_standard_base64() -> TestResult {
        let key_pair = Ed25519KeyPair::generate(&mut StdRng::seed_from_u64(1));
        let public_key_base64 = key_pair.public_key_base64();
        assert_eq!(public_key_base64.len(), 44);
        assert!(public_key_base64.ends_with('='));
        assert_eq!(
            BASE64_STANDARD.decode(&public_key_base64)?,
            key_pair.public_key()
        );
        Ok(())
    }

    #[test]
    fn rfc8032_seed_gives_the_rfc8032_public_key_and_signature() -> TestResult {
        let seed: [u8; 32] = hex(RFC8032_SEED)?.as_slice().try_into()?;
        let key_pair = Ed25519KeyPair::from_seed(seed)?;
        assert_eq!(key_pair.public_key().as_slice(), hex(RFC8032_PUBLIC_KEY)?);
        assert_eq!(rcgen_signer(&key_pair)?.sign(b"")?, hex(RFC8032_SIGNATURE)?);
        Ok(())
    }

    #[test]
    fn certificate_signed_with_the_seed_carries_the_public_key() -> TestResult {
        let key_pair = Ed25519KeyPair::generate(&mut StdRng::seed_from_u64(5));
        let certificate = rcgen::CertificateParams::new(vec!["agent".to_owned()])?
            .self_signed(&rcgen_signer(&key_pair)?)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.der())?;
        assert_eq!(
            parsed.public_key().subject_public_key.data.as_ref(),
            key_pair.public_key()
        );
        Ok(())
    }

    #[test]
    fn generation_is_deterministic_for_a_seeded_rng() {
        let first = Ed25519KeyPair::generate(&mut StdRng::seed_from_u64(42));
        let second = Ed25519KeyPair::generate(&mut StdRng::seed_from_u64(42));
        assert_eq!(first.public_key(), second.public_key());
        assert_eq!(first.seed_bytes(), second.seed_bytes());

        let mut rng = StdRng::seed_from_u64(42);
        let _ = Ed25519KeyPair::generate(&mut rng);
        let third = Ed25519KeyPair::generate(&mut rng);
        assert_ne!(first.public_key(), third.public_key());
    }

    #[test]
    fn key_pair_rebuilt_from_its_seed_has_the_same_public_key() -> TestResult {
        let key_pair = Ed25519KeyPair::generate(&mut rand::rng());
        let rebuilt = Ed25519KeyPair::from_seed(*key_pair.seed_bytes())?;
        assert_eq!(rebuilt.public_key(), key_pair.public_key());
        assert_eq!(
            BASE64_STANDARD.decode(key_pair.seed_base64().expose_secret())?,
            key_pair.seed_bytes()
        );
        Ok(())
    }

    #[test]
    fn debug_output_hides_the_seed() {
        let key_pair = Ed25519KeyPair::generate(&mut StdRng::seed_from_u64(9));
        let debug = format!("{key_pair:?}");
        assert!(!debug.contains(key_pair.seed_base64().expose_secret()));
        assert!(debug.contains(&key_pair.public_key_base64()));
    }
}
