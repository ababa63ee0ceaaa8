//! PEM, X.509 and private-key parsing for URL configurations: CA certificates, the mTLS client
//! certificate chain and its private key, and the check that the key belongs to the leaf
//! certificate. Keys are compared as public keys, so that every encoding of one key matches.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use p256::NistP256;
use p256::pkcs8::{AssociatedOid as _, DecodePrivateKey as _, DecodePublicKey as _};
use p384::NistP384;
use pkcs1::der::Decode as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use rustls_pki_types::PrivatePkcs8KeyDer;
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;
use spki::ObjectIdentifier;

use super::{UrlAuthSpec, UrlConfigViolation, is_longer_than};

/// GitLab's `url_configurations` parameters say "base64-encoded ... in PEM format" while its
/// API page shows raw PEM; agentreg takes both. A value that is not PEM but whose standard
/// base64 (line breaks allowed) decodes to PEM text is that PEM; any other value comes back
/// unchanged, so validation refuses it with the usual messages.
pub fn pem_from_pem_or_base64(value: &str) -> Zeroizing<String> {
    if value.contains("-----BEGIN ") {
        return Zeroizing::new(value.to_owned());
    }
    let compact: Zeroizing<String> =
        Zeroizing::new(value.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    let decoded = BASE64_STANDARD
        .decode(compact.as_bytes())
        .ok()
        .map(Zeroizing::new)
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok().map(Zeroizing::new));
    match decoded {
        Some(pem) if pem.trim_start().starts_with("-----BEGIN ") => pem,
        Some(_) | None => Zeroizing::new(value.to_owned()),
    }
}

// The limit of GitLab's database columns, which agentreg enforces as a validation error.
const MAX_PEM_CHARS: usize = 16384;

const CERTIFICATE_LABEL: &str = "CERTIFICATE";
const PRIVATE_KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];
// `openssl ecparam -genkey` writes this block before the key itself.
const EC_PARAMETERS_LABEL: &str = "EC PARAMETERS";

const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A public key in a form where two encodings of the same key compare equal (for example a
/// compressed and an uncompressed EC point, or RSA integers with and without a leading zero).
#[derive(Debug, PartialEq, Eq)]
enum PublicKeyMaterial {
    Ed25519(Vec<u8>),
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    Rsa {
        modulus: Vec<u8>,
        public_exponent: Vec<u8>,
    },
}

/// A bundle of PEM certificates that all parse. The first one is the leaf.
struct CertificateBundle {
    /// `None` when the leaf's key algorithm is one agentreg cannot compare.
    leaf_public_key: Option<PublicKeyMaterial>,
}

pub(super) fn ca_cert_violation(ca_cert: &str) -> Option<UrlConfigViolation> {
    if is_longer_than(ca_cert, MAX_PEM_CHARS) {
        Some(UrlConfigViolation::CaCertTooLong)
    } else if parse_certificate_bundle(ca_cert).is_some() {
        None
    } else {
        Some(UrlConfigViolation::CaCertInvalid)
    }
}

/// Checks mTLS credentials: the client certificate chain, its private key and that the key
/// belongs to the chain's first certificate. Returns `None` when they broke a rule, which is then
/// in `violations`.
pub(super) fn mtls_auth_spec(
    client_cert: Option<&str>,
    client_key: &str,
    violations: &mut Vec<UrlConfigViolation>,
) -> Option<UrlAuthSpec> {
    let certificate_bundle = match client_cert {
        None => {
            violations.push(UrlConfigViolation::ClientCertInvalid);
            None
        }
        Some(client_cert) if is_longer_than(client_cert, MAX_PEM_CHARS) => {
            violations.push(UrlConfigViolation::ClientCertTooLong);
            None
        }
        Some(client_cert) => {
            let certificate_bundle = parse_certificate_bundle(client_cert);
            if certificate_bundle.is_none() {
                violations.push(UrlConfigViolation::ClientCertInvalid);
            }
            certificate_bundle
        }
    };

    let key_public_key = if is_longer_than(client_key, MAX_PEM_CHARS) {
        violations.push(UrlConfigViolation::ClientKeyTooLong);
        None
    } else {
        let key_public_key = private_key_public_key(client_key);
        if key_public_key.is_none() {
            violations.push(UrlConfigViolation::ClientKeyInvalid);
        }
        key_public_key
    };

    let (Some(certificate_bundle), Some(key_public_key)) = (certificate_bundle, key_public_key)
    else {
        return None;
    };
    if certificate_bundle.leaf_public_key != Some(key_public_key) {
        violations.push(UrlConfigViolation::ClientKeyMismatch);
        return None;
    }
    Some(UrlAuthSpec::Mtls {
        client_cert: client_cert?.to_owned(),
        client_key: SecretString::from(client_key),
    })
}

/// Splits text into PEM blocks. Text outside the blocks is ignored, as RFC 7468 allows; a block
/// without its END line, or with RFC 1421 headers (legacy encrypted keys), makes the text invalid.
fn pem_blocks(text: &str) -> Option<Vec<pem::Pem>> {
    let blocks = pem::parse_many(text).ok()?;
    // The parser silently skips a block that has no END line; counting BEGIN lines catches it.
    let n_begin_lines = text.matches("-----BEGIN ").count();
    let has_headers = blocks
        .iter()
        .any(|block| block.headers().iter().next().is_some());
    if blocks.is_empty() || blocks.len() != n_begin_lines || has_headers {
        return None;
    }
    Some(blocks)
}

/// One or more PEM blocks, each a `CERTIFICATE` that parses as X.509 with nothing after it.
fn parse_certificate_bundle(text: &str) -> Option<CertificateBundle> {
    let blocks = pem_blocks(text)?;
    let mut leaf_public_key = None;
    for (block_idx, block) in blocks.iter().enumerate() {
        if block.tag() != CERTIFICATE_LABEL {
            return None;
        }
        let (rest, certificate) = x509_parser::parse_x509_certificate(block.contents()).ok()?;
        if !rest.is_empty() {
            return None;
        }
        if block_idx == 0 {
            leaf_public_key = certificate_public_key(certificate.public_key().raw);
        }
    }
    Some(CertificateBundle { leaf_public_key })
}

/// The public key of a certificate's DER `SubjectPublicKeyInfo`, for the algorithms agentreg
/// can compare.
fn certificate_public_key(spki_der: &[u8]) -> Option<PublicKeyMaterial> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).ok()?;
    let algorithm_oid = spki.algorithm.oid;
    if algorithm_oid == ED25519_OID {
        if spki.algorithm.parameters.is_some() {
            return None;
        }
        let public_key = spki.subject_public_key.as_bytes()?;
        return (public_key.len() == 32).then(|| PublicKeyMaterial::Ed25519(public_key.to_vec()));
    }
    if algorithm_oid == p256::elliptic_curve::ALGORITHM_OID {
        return p256::PublicKey::from_public_key_der(spki_der)
            .ok()
            .map(PublicKeyMaterial::P256)
            .or_else(|| {
                p384::PublicKey::from_public_key_der(spki_der)
                    .ok()
                    .map(PublicKeyMaterial::P384)
            });
    }
    if algorithm_oid == pkcs1::ALGORITHM_OID {
        // The `rsa` crate refuses public keys over 4096 bits, so RSA keys are compared as the
        // integers of their PKCS#1 encoding instead.
        let rsa_public_key =
            pkcs1::RsaPublicKey::from_der(spki.subject_public_key.as_bytes()?).ok()?;
        return Some(PublicKeyMaterial::Rsa {
            modulus: rsa_public_key.modulus.as_bytes().to_vec(),
            public_exponent: rsa_public_key.public_exponent.as_bytes().to_vec(),
        });
    }
    None
}

/// The public key of a PEM private key: PKCS#8 (Ed25519, ECDSA P-256/P-384 or RSA), PKCS#1 RSA
/// or SEC1 EC (P-256/P-384). The text holds exactly one key block, optionally beside
/// `EC PARAMETERS` blocks.
fn private_key_public_key(text: &str) -> Option<PublicKeyMaterial> {
    let blocks = pem_blocks(text)?;
    let mut key_blocks = blocks
        .iter()
        .filter(|block| PRIVATE_KEY_LABELS.contains(&block.tag()));
    let key_block = key_blocks.next()?;
    let has_other_blocks = blocks.iter().any(|block| {
        !PRIVATE_KEY_LABELS.contains(&block.tag()) && block.tag() != EC_PARAMETERS_LABEL
    });
    if key_blocks.next().is_some() || has_other_blocks {
        return None;
    }
    let der = Zeroizing::new(key_block.contents().to_vec());
    match key_block.tag() {
        "PRIVATE KEY" => pkcs8_public_key(&der),
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .ok()
            .map(|private_key| rsa_public_key(&private_key)),
        "EC PRIVATE KEY" => sec1_public_key(&der),
        _ => None,
    }
}

fn pkcs8_public_key(der: &[u8]) -> Option<PublicKeyMaterial> {
    // Each parser checks the algorithm identifier first, so at most one of them accepts the key.
    let pkcs8_der = PrivatePkcs8KeyDer::from(der);
    if let Ok(key_pair) =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_der, &rcgen::PKCS_ED25519)
    {
        return Some(PublicKeyMaterial::Ed25519(
            key_pair.public_key_raw().to_vec(),
        ));
    }
    if let Ok(secret_key) = p256::SecretKey::from_pkcs8_der(der) {
        return Some(PublicKeyMaterial::P256(secret_key.public_key()));
    }
    if let Ok(secret_key) = p384::SecretKey::from_pkcs8_der(der) {
        return Some(PublicKeyMaterial::P384(secret_key.public_key()));
    }
    rsa::RsaPrivateKey::from_pkcs8_der(der)
        .ok()
        .map(|private_key| rsa_public_key(&private_key))
}

fn sec1_public_key(der: &[u8]) -> Option<PublicKeyMaterial> {
    let ec_private_key = sec1::EcPrivateKey::from_der(der).ok()?;
    let named_curve = ec_private_key
        .parameters
        .and_then(|parameters| parameters.named_curve());
    let p256_key = || {
        p256::SecretKey::from_sec1_der(der)
            .ok()
            .map(|secret_key| PublicKeyMaterial::P256(secret_key.public_key()))
    };
    let p384_key = || {
        p384::SecretKey::from_sec1_der(der)
            .ok()
            .map(|secret_key| PublicKeyMaterial::P384(secret_key.public_key()))
    };
    match named_curve {
        Some(curve) if curve == NistP256::OID => p256_key(),
        Some(curve) if curve == NistP384::OID => p384_key(),
        Some(_) => None,
        // Without parameters the curve follows from the key's length; the embedded public key,
        // when present, is checked against the private key.
        None => p256_key().or_else(p384_key),
    }
}

fn rsa_public_key(private_key: &rsa::RsaPrivateKey) -> PublicKeyMaterial {
    PublicKeyMaterial::Rsa {
        modulus: private_key.n().to_bytes_be(),
        public_exponent: private_key.e().to_bytes_be(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url_config::fixtures::{
        RSA_1024_PKCS1_KEY, RSA_2048_CERT, RSA_2048_PKCS1_KEY, TestResult, URL, der_of, ed25519,
        input, messages, mtls, p256, p384, pem_text, rsa_pkcs8_pem, sec1_pem_of_p256,
        sec1_pem_of_p384,
    };
    use crate::url_config::{UrlConfigInput, UrlConfigSpec};
    use secrecy::ExposeSecret;

    fn assert_mtls_accepted(client_cert: &str, client_key: &str) -> TestResult {
        let spec = UrlConfigSpec::parse(&mtls(client_cert, client_key))?;
        let UrlAuthSpec::Mtls {
            client_cert: stored_cert,
            client_key: stored_key,
        } = spec.auth()
        else {
            return Err("expected mTLS".into());
        };
        assert_eq!(stored_cert, client_cert);
        assert_eq!(stored_key.expose_secret(), client_key);
        Ok(())
    }

    #[test]
    fn base64_of_pem_is_taken_as_that_pem_and_anything_else_is_left_alone() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let encoded = BASE64_STANDARD.encode(pem);
        let wrapped = format!("{}\n{}", &encoded[..20], &encoded[20..]);
        assert_eq!(pem_from_pem_or_base64(pem).as_str(), pem);
        assert_eq!(pem_from_pem_or_base64(&encoded).as_str(), pem);
        assert_eq!(pem_from_pem_or_base64(&wrapped).as_str(), pem);
        let not_pem = BASE64_STANDARD.encode("hello");
        assert_eq!(pem_from_pem_or_base64(&not_pem).as_str(), not_pem);
        assert_eq!(pem_from_pem_or_base64("%%%").as_str(), "%%%");
    }

    // ca_cert

    #[test]
    fn pem_ca_cert_is_accepted_and_kept_as_sent() -> TestResult {
        let p256 = p256()?;
        let spec = UrlConfigSpec::parse(&UrlConfigInput {
            ca_cert: Some(&p256.cert_pem),
            ..input(URL)
        })?;
        assert_eq!(spec.ca_cert(), Some(p256.cert_pem.as_str()));
        Ok(())
    }

    #[test]
    fn ca_cert_bundle_with_explanatory_text_is_accepted() -> TestResult {
        let bundle = format!(
            "subject=CN = agent.example.com\n{}\n{}{}",
            p256()?.cert_pem,
            ed25519()?.cert_pem,
            RSA_2048_CERT
        );
        UrlConfigSpec::parse(&UrlConfigInput {
            ca_cert: Some(&bundle),
            ..input(URL)
        })?;
        Ok(())
    }

    #[test]
    fn invalid_ca_cert_is_rejected() -> TestResult {
        let p256 = p256()?;
        let truncated = &p256.cert_pem[..p256.cert_pem.len() / 2];
        let truncated_second_block = format!("{}{truncated}", p256.cert_pem);
        let unterminated_base64 = p256.cert_pem.replace("-----END", "!-----END");
        let bad_second_block = format!(
            "{}{}",
            p256.cert_pem,
            pem_text("CERTIFICATE", b"not a certificate")
        );
        let mut der_with_trailing_byte = der_of(&p256.cert_pem)?;
        der_with_trailing_byte.push(0);
        let trailing_byte = pem_text("CERTIFICATE", &der_with_trailing_byte);
        for ca_cert in [
            "invalid",
            truncated,
            &truncated_second_block,
            &unterminated_base64,
            &p256.key_pem,
            &bad_second_block,
            &trailing_byte,
        ] {
            assert_eq!(
                messages(&UrlConfigInput {
                    ca_cert: Some(ca_cert),
                    ..input(URL)
                }),
                ["Ca cert must be a valid PEM certificate"],
                "{ca_cert}"
            );
        }
        Ok(())
    }

    #[test]
    fn blank_ca_cert_counts_as_absent() -> TestResult {
        let spec = UrlConfigSpec::parse(&UrlConfigInput {
            ca_cert: Some(""),
            ..input(URL)
        })?;
        assert_eq!(spec.ca_cert(), None);
        Ok(())
    }

    #[test]
    fn ca_cert_over_16384_characters_is_too_long() -> TestResult {
        let too_long = format!("{}{}", p256()?.cert_pem, "x".repeat(16384));
        assert_eq!(
            messages(&UrlConfigInput {
                ca_cert: Some(&too_long),
                ..input(URL)
            }),
            ["Ca cert is too long (maximum is 16384 characters)"]
        );
        Ok(())
    }

    // mTLS: accepted pairs

    #[test]
    fn ed25519_pkcs8_pair_is_accepted() -> TestResult {
        let ed25519 = ed25519()?;
        assert_mtls_accepted(&ed25519.cert_pem, &ed25519.key_pem)
    }

    #[test]
    fn p256_pkcs8_and_sec1_pairs_are_accepted() -> TestResult {
        let p256 = p256()?;
        assert_mtls_accepted(&p256.cert_pem, &p256.key_pem)?;
        assert_mtls_accepted(&p256.cert_pem, &sec1_pem_of_p256(&p256)?)
    }

    #[test]
    fn p384_pkcs8_and_sec1_pairs_are_accepted() -> TestResult {
        let p384 = p384()?;
        assert_mtls_accepted(&p384.cert_pem, &p384.key_pem)?;
        assert_mtls_accepted(&p384.cert_pem, &sec1_pem_of_p384(&p384)?)
    }

    #[test]
    fn sec1_key_after_ec_parameters_is_accepted() -> TestResult {
        let p256 = p256()?;
        let parameters = pem_text("EC PARAMETERS", &spki::der::Encode::to_der(&NistP256::OID)?);
        let key = format!("{parameters}{}", sec1_pem_of_p256(&p256)?);
        assert_mtls_accepted(&p256.cert_pem, &key)
    }

    #[test]
    fn rsa_pkcs1_and_pkcs8_pairs_are_accepted() -> TestResult {
        assert_mtls_accepted(RSA_2048_CERT, RSA_2048_PKCS1_KEY)?;
        assert_mtls_accepted(RSA_2048_CERT, &rsa_pkcs8_pem(RSA_2048_PKCS1_KEY)?)
    }

    #[test]
    fn client_cert_chain_is_matched_by_its_first_certificate() -> TestResult {
        let p256 = p256()?;
        let chain = format!("{}{}", p256.cert_pem, RSA_2048_CERT);
        assert_mtls_accepted(&chain, &p256.key_pem)?;
        let reversed = format!("{}{}", RSA_2048_CERT, p256.cert_pem);
        assert_eq!(
            messages(&mtls(&reversed, &p256.key_pem)),
            ["Client key does not match the client certificate"]
        );
        Ok(())
    }

    // mTLS: rejected keys and certificates

    #[test]
    fn key_of_another_certificate_is_rejected() -> TestResult {
        let (p256, other_p256) = (p256()?, p256()?);
        let (ed25519, other_ed25519) = (ed25519()?, ed25519()?);
        let p384 = p384()?;
        let other_p256_sec1 = sec1_pem_of_p256(&other_p256)?;
        let rsa_1024_pkcs8 = rsa_pkcs8_pem(RSA_1024_PKCS1_KEY)?;
        for (client_cert, client_key) in [
            (p256.cert_pem.as_str(), other_p256.key_pem.as_str()),
            (p256.cert_pem.as_str(), &other_p256_sec1),
            (ed25519.cert_pem.as_str(), other_ed25519.key_pem.as_str()),
            (p256.cert_pem.as_str(), ed25519.key_pem.as_str()),
            (p384.cert_pem.as_str(), p256.key_pem.as_str()),
            (RSA_2048_CERT, RSA_1024_PKCS1_KEY),
            (RSA_2048_CERT, &rsa_1024_pkcs8),
            (p256.cert_pem.as_str(), RSA_2048_PKCS1_KEY),
        ] {
            assert_eq!(
                messages(&mtls(client_cert, client_key)),
                ["Client key does not match the client certificate"],
                "{client_key}"
            );
        }
        Ok(())
    }

    #[test]
    fn invalid_client_key_is_rejected() -> TestResult {
        let p256 = p256()?;
        let garbage_in_armour = pem_text("PRIVATE KEY", b"not a key");
        let two_keys = format!("{}{}", p256.key_pem, p256.key_pem);
        let encrypted_label = pem_text("ENCRYPTED PRIVATE KEY", &p256.key_der);
        let wrong_label = pem_text("RSA PRIVATE KEY", &p256.key_der);
        let truncated = &p256.key_pem[..p256.key_pem.len() - 30];
        let truncated_der = pem_text("PRIVATE KEY", &p256.key_der[..p256.key_der.len() - 1]);
        let legacy_encrypted = RSA_1024_PKCS1_KEY.replace(
            "-----BEGIN RSA PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
        );
        for client_key in [
            "invalid",
            &garbage_in_armour,
            &p256.cert_pem,
            &two_keys,
            &encrypted_label,
            &wrong_label,
            truncated,
            &truncated_der,
            &legacy_encrypted,
        ] {
            assert_eq!(
                messages(&mtls(&p256.cert_pem, client_key)),
                ["Client key must be a valid PEM private key"],
                "{client_key}"
            );
        }
        Ok(())
    }

    #[test]
    fn invalid_client_cert_is_rejected() -> TestResult {
        let p256 = p256()?;
        for client_cert in ["invalid", p256.key_pem.as_str()] {
            assert_eq!(
                messages(&mtls(client_cert, &p256.key_pem)),
                ["Client cert must be a valid PEM certificate"],
                "{client_cert}"
            );
        }
        Ok(())
    }

    #[test]
    fn invalid_client_cert_and_key_are_both_reported() {
        assert_eq!(
            messages(&mtls("invalid", "invalid")),
            [
                "Client cert must be a valid PEM certificate",
                "Client key must be a valid PEM private key"
            ]
        );
    }

    #[test]
    fn client_cert_and_key_over_16384_characters_are_too_long() -> TestResult {
        let p256 = p256()?;
        let long_cert = format!("{}{}", p256.cert_pem, " ".repeat(16384));
        let long_key = format!("{}{}", p256.key_pem, " ".repeat(16384));
        assert_eq!(
            messages(&mtls(&long_cert, &long_key)),
            [
                "Client cert is too long (maximum is 16384 characters)",
                "Client key is too long (maximum is 16384 characters)"
            ]
        );
        Ok(())
    }
}
