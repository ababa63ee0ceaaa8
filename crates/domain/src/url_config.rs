//! URL configurations of receptive agents: validation of what a client sends (the agent's URL, TLS
//! settings, and either mTLS credentials or nothing for JWT mode), and the Ed25519 key pair that
//! JWT mode signs with. Validation messages are GitLab's full messages, in GitLab's order.

use std::fmt;
use std::net::Ipv6Addr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use p256::NistP256;
use p256::pkcs8::{AssociatedOid as _, DecodePrivateKey as _, DecodePublicKey as _};
use p384::NistP384;
use pkcs1::der::Decode as _;
use rand::{CryptoRng, RngCore};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use rustls_pki_types::PrivatePkcs8KeyDer;
use secrecy::zeroize::{Zeroize as _, Zeroizing};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use spki::ObjectIdentifier;

/// Raw inputs exactly as a client sent them (`None` = parameter absent).
///
/// `Debug` never prints `client_key`.
#[derive(Clone, Copy, Default)]
pub struct UrlConfigInput<'a> {
    pub url: &'a str,
    pub client_cert: Option<&'a str>,
    pub client_key: Option<&'a str>,
    pub ca_cert: Option<&'a str>,
    pub tls_host: Option<&'a str>,
}

/// A validated URL configuration. Values are kept exactly as the client sent them; blank optional
/// values have become `None`.
#[derive(Debug, Clone)]
pub struct UrlConfigSpec {
    url: String,
    ca_cert: Option<String>,
    tls_host: Option<String>,
    auth: UrlAuthSpec,
}

/// How agentreg's agent server authenticates to the agent. `Debug` never prints the client key.
#[derive(Debug, Clone)]
pub enum UrlAuthSpec {
    /// No client credentials were sent: the server signs JWTs with a key pair agentreg generates.
    Jwt,
    /// mTLS with the client's certificate (one or more PEM certificates, leaf first) and the
    /// private key that belongs to the leaf.
    Mtls {
        client_cert: String,
        client_key: SecretString,
    },
}

/// One rule that a URL configuration breaks. `Display` is GitLab's full validation message
/// (`Tls host must be a valid hostname!`), which is why these messages break the house rule of
/// lowercase error messages: clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlConfigViolation {
    UrlInvalid,
    UrlTooLong,
    CaCertInvalid,
    CaCertTooLong,
    TlsHostInvalid,
    TlsHostTooLong,
    ClientCertNotBlank,
    ClientCertInvalid,
    ClientCertTooLong,
    ClientKeyInvalid,
    ClientKeyTooLong,
    ClientKeyMismatch,
}

/// All validation failures, as GitLab full messages in GitLab's validator order. Never empty.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{}", .messages.join(", "))]
pub struct UrlConfigErrors {
    violations: Vec<UrlConfigViolation>,
    messages: Vec<String>,
}

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

impl fmt::Debug for UrlConfigInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlConfigInput")
            .field("url", &self.url)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key.map(|_| "[redacted]"))
            .field("ca_cert", &self.ca_cert)
            .field("tls_host", &self.tls_host)
            .finish()
    }
}

impl UrlConfigSpec {
    /// Validates every field and returns all failures at once, in the order url, ca_cert,
    /// tls_host, then the client certificate and key.
    pub fn parse(input: &UrlConfigInput<'_>) -> Result<UrlConfigSpec, UrlConfigErrors> {
        let ca_cert = non_blank(input.ca_cert);
        let tls_host = non_blank(input.tls_host);
        let client_cert = non_blank(input.client_cert);
        let client_key = non_blank(input.client_key);

        let mut violations = Vec::new();
        violations.extend(url_violation(input.url));
        violations.extend(ca_cert.and_then(ca_cert_violation));
        violations.extend(tls_host.and_then(tls_host_violation));
        let auth = auth_spec(client_cert, client_key, &mut violations);

        match auth {
            Some(auth) if violations.is_empty() => Ok(UrlConfigSpec {
                url: input.url.to_owned(),
                ca_cert: ca_cert.map(str::to_owned),
                tls_host: tls_host.map(str::to_owned),
                auth,
            }),
            Some(_) | None => Err(UrlConfigErrors::new(violations)),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn ca_cert(&self) -> Option<&str> {
        self.ca_cert.as_deref()
    }

    pub fn tls_host(&self) -> Option<&str> {
        self.tls_host.as_deref()
    }

    pub fn auth(&self) -> &UrlAuthSpec {
        &self.auth
    }
}

impl UrlConfigViolation {
    /// The parameter that broke the rule (`tls_host`), as GitLab keys model errors.
    pub fn attribute(self) -> &'static str {
        self.field().name()
    }

    /// The message without the attribute (`must be a valid hostname!`).
    pub fn message(self) -> &'static str {
        match self {
            UrlConfigViolation::UrlInvalid => "is not a valid URL",
            UrlConfigViolation::UrlTooLong | UrlConfigViolation::TlsHostTooLong => {
                "is too long (maximum is 2048 characters)"
            }
            UrlConfigViolation::CaCertInvalid | UrlConfigViolation::ClientCertInvalid => {
                "must be a valid PEM certificate"
            }
            UrlConfigViolation::CaCertTooLong
            | UrlConfigViolation::ClientCertTooLong
            | UrlConfigViolation::ClientKeyTooLong => "is too long (maximum is 16384 characters)",
            UrlConfigViolation::TlsHostInvalid => "must be a valid hostname!",
            UrlConfigViolation::ClientCertNotBlank => "must be blank",
            UrlConfigViolation::ClientKeyInvalid => "must be a valid PEM private key",
            UrlConfigViolation::ClientKeyMismatch => "does not match the client certificate",
        }
    }

    fn field(self) -> UrlConfigField {
        match self {
            UrlConfigViolation::UrlInvalid | UrlConfigViolation::UrlTooLong => UrlConfigField::Url,
            UrlConfigViolation::CaCertInvalid | UrlConfigViolation::CaCertTooLong => {
                UrlConfigField::CaCert
            }
            UrlConfigViolation::TlsHostInvalid | UrlConfigViolation::TlsHostTooLong => {
                UrlConfigField::TlsHost
            }
            UrlConfigViolation::ClientCertNotBlank
            | UrlConfigViolation::ClientCertInvalid
            | UrlConfigViolation::ClientCertTooLong => UrlConfigField::ClientCert,
            UrlConfigViolation::ClientKeyInvalid
            | UrlConfigViolation::ClientKeyTooLong
            | UrlConfigViolation::ClientKeyMismatch => UrlConfigField::ClientKey,
        }
    }
}

impl fmt::Display for UrlConfigViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field().label(), self.message())
    }
}

impl std::error::Error for UrlConfigViolation {}

impl UrlConfigErrors {
    /// GitLab's full messages, for the `400 Bad request - [...]` body.
    pub fn messages(&self) -> &[String] {
        &self.messages
    }

    /// The same failures as typed values, in the same order as [`UrlConfigErrors::messages`].
    pub fn violations(&self) -> &[UrlConfigViolation] {
        &self.violations
    }

    fn new(violations: Vec<UrlConfigViolation>) -> UrlConfigErrors {
        let messages = violations
            .iter()
            .map(UrlConfigViolation::to_string)
            .collect();
        UrlConfigErrors {
            violations,
            messages,
        }
    }
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

// Limits of GitLab's database columns, which agentreg enforces as validation errors.
const MAX_URL_CHARS: usize = 2048;
const MAX_TLS_HOST_CHARS: usize = 2048;
const MAX_PEM_CHARS: usize = 16384;

const CERTIFICATE_LABEL: &str = "CERTIFICATE";
const PRIVATE_KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];
// `openssl ecparam -genkey` writes this block before the key itself.
const EC_PARAMETERS_LABEL: &str = "EC PARAMETERS";

const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The DER of an RFC 8410 `OneAsymmetricKey` v1 for Ed25519 up to the 32 seed bytes, which end it.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The parameters of a URL configuration that validation messages name.
#[derive(Debug, Clone, Copy)]
enum UrlConfigField {
    Url,
    CaCert,
    TlsHost,
    ClientCert,
    ClientKey,
}

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

impl UrlConfigField {
    fn name(self) -> &'static str {
        match self {
            UrlConfigField::Url => "url",
            UrlConfigField::CaCert => "ca_cert",
            UrlConfigField::TlsHost => "tls_host",
            UrlConfigField::ClientCert => "client_cert",
            UrlConfigField::ClientKey => "client_key",
        }
    }

    /// Rails' humanized attribute name, which starts a full message.
    fn label(self) -> &'static str {
        match self {
            UrlConfigField::Url => "Url",
            UrlConfigField::CaCert => "Ca cert",
            UrlConfigField::TlsHost => "Tls host",
            UrlConfigField::ClientCert => "Client cert",
            UrlConfigField::ClientKey => "Client key",
        }
    }
}

/// GitLab's `nullify_if_blank`: empty or whitespace-only values count as absent.
fn non_blank(value: Option<&str>) -> Option<&str> {
    value.filter(|value| !value.trim().is_empty())
}

fn is_longer_than(value: &str, max_chars: usize) -> bool {
    // A string has at most as many characters as bytes, so short strings need no counting.
    value.len() > max_chars && value.chars().count() > max_chars
}

fn url_violation(url: &str) -> Option<UrlConfigViolation> {
    if is_longer_than(url, MAX_URL_CHARS) {
        Some(UrlConfigViolation::UrlTooLong)
    } else if is_agent_url(url) {
        None
    } else {
        Some(UrlConfigViolation::UrlInvalid)
    }
}

fn ca_cert_violation(ca_cert: &str) -> Option<UrlConfigViolation> {
    if is_longer_than(ca_cert, MAX_PEM_CHARS) {
        Some(UrlConfigViolation::CaCertTooLong)
    } else if parse_certificate_bundle(ca_cert).is_some() {
        None
    } else {
        Some(UrlConfigViolation::CaCertInvalid)
    }
}

fn tls_host_violation(tls_host: &str) -> Option<UrlConfigViolation> {
    if is_longer_than(tls_host, MAX_TLS_HOST_CHARS) {
        Some(UrlConfigViolation::TlsHostTooLong)
    } else if is_bare_host(tls_host) {
        None
    } else {
        Some(UrlConfigViolation::TlsHostInvalid)
    }
}

/// Chooses the mode (a client key means mTLS, as in GitLab) and checks the client credentials.
/// Returns `None` when the credentials broke a rule, which is then in `violations`.
fn auth_spec(
    client_cert: Option<&str>,
    client_key: Option<&str>,
    violations: &mut Vec<UrlConfigViolation>,
) -> Option<UrlAuthSpec> {
    let Some(client_key) = client_key else {
        if client_cert.is_some() {
            violations.push(UrlConfigViolation::ClientCertNotBlank);
            return None;
        }
        return Some(UrlAuthSpec::Jwt);
    };

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

/// What the `validate_url` gem accepts with schemes `grpc` and `grpcs`: the whole value is a URI
/// (ASCII only, complete percent escapes), the scheme is exactly `grpc` or `grpcs`, and there is a
/// non-empty host.
fn is_agent_url(value: &str) -> bool {
    let has_agent_scheme = value.starts_with("grpc://") || value.starts_with("grpcs://");
    if !has_agent_scheme || !value.bytes().all(is_uri_byte) || !has_complete_percent_escapes(value)
    {
        return false;
    }
    // Credentials in the URL would be shown to every Developer who reads the configuration,
    // and a percent-escape in the host (`%00`) names no host a resolver would look up.
    url::Url::parse(value).is_ok_and(|url| {
        url.username().is_empty()
            && url.password().is_none()
            && url
                .host_str()
                .is_some_and(|host| !host.is_empty() && !host.contains('%'))
    })
}

/// GitLab's `HostValidator`: `URI.parse("http://" + value).host == value`, that is an RFC 3986
/// host (a registered name, an IPv4 address or a bracketed IP literal) with nothing around it.
fn is_bare_host(value: &str) -> bool {
    if let Some(literal) = value
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return literal.parse::<Ipv6Addr>().is_ok() || is_ip_future(literal);
    }
    !value.is_empty()
        && value
            .bytes()
            .all(|byte| is_unreserved(byte) || is_sub_delim(byte) || byte == b'%')
        && has_complete_percent_escapes(value)
}

/// RFC 3986 `IPvFuture`: `v` 1*HEXDIG `.` 1*( unreserved / sub-delims / `:` ).
fn is_ip_future(literal: &str) -> bool {
    let Some(rest) = literal
        .strip_prefix('v')
        .or_else(|| literal.strip_prefix('V'))
    else {
        return false;
    };
    let Some((version, address)) = rest.split_once('.') else {
        return false;
    };
    !version.is_empty()
        && version.bytes().all(|byte| byte.is_ascii_hexdigit())
        && !address.is_empty()
        && address
            .bytes()
            .all(|byte| is_unreserved(byte) || is_sub_delim(byte) || byte == b':')
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_uri_byte(byte: u8) -> bool {
    is_unreserved(byte)
        || is_sub_delim(byte)
        || matches!(byte, b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@' | b'%')
}

fn has_complete_percent_escapes(value: &str) -> bool {
    let mut bytes = value.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let is_escape = matches!(
                (bytes.next(), bytes.next()),
                (Some(high), Some(low)) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit()
            );
            if !is_escape {
                return false;
            }
        }
    }
    true
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

#[cfg(test)]
mod tests {

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

    use super::*;
    use p256::pkcs8::EncodePrivateKey as _;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rcgen::SigningKey as _;
    use secrecy::ExposeSecret;
    use std::sync::LazyLock;

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    // Generated with `openssl genrsa -traditional 2048` and
    // `openssl req -new -x509 -key rsa2048.pem -subj /CN=agent.example.com -days 36500`.
    const RSA_2048_PKCS1_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEA200qovCqPkrXEbaA7EpB0OFbCBVmuZQOYfgnJ5qxls8BtxTI
mE/DJK/dQtG3teXVCfUcxiH00GkOztGKYBds73sD+XRM/AVk/Mh0CHOY3l4vZkQq
duNSvQv8feuP/tfsVxwJ9fv6h0FjNIpyBPsOophc1E5NbfiIuyzCEgCDGLB7NeIs
UrFqtpQvlfsaxrNJp9J0HnHHzyrok8JG/Dnyqi+rZYDCx8KPT/XrjN+kS8BxH2ki
0xW43aY4zFhSgZSpFoHm4vTFjrDtGkCCZS+0xltuMTJdJ6Ogbt/Xjtm//qb7y0YA
86rgtM8+Oak62EfZQMLRJX0cyz8hdJyXqeBwGQIDAQABAoIBAAbo8ov5y1N1Jjuv
pXZMjLBZOXYSvo7gZGef2xP7YtcepK4xIHT0JnD0faNKWmCH4mOS7pornbwnY0kO
/y4x7sPI+4ITsQ1L2jfA1S8i/VEcZJ/zS+c9GHFOfGE3V+0uvoqsHoA6tVUnsUmJ
hzgy9O4YoOwrn3L0ntJPAbpxe6/+aKD5lLYh09gxQIlHxYV6jMYVUoln68QBvVEN
iQeoBrPI/YzIOSSs3NkArq2yocXXVYYKEF5gQUk07KSNwcAhIGrusCwJLR6dNWou
f12yYcT1MSGs0Qwn7bLCHExTtzOfW2qeZuHuk1owgWngLPrwmP94UxwQa3F4yN+e
08g6cvUCgYEA9/b+TlHV9ZziddKOsSD/2FdZFXme3jIIWHzNncLZwfQclb9wSHdP
BCfnbT334uHz/W9S62h4vpZLDwA0yhs/gPtHe8xwCvziaL+d80vnP2+r3LtAOMci
Q595g9KxTrbkaJJqVWLonKu3izQnyV+qBky7GJlo6f53YZ00qA+Q9ncCgYEA4mhk
9belx+kV7YRoeF5oqCes/RzFYOIADw/IpB4YXdwr9hB1pbd4cAYF2t4Nod2yvqTb
R5okBh9pUIqCNXou5+HRB7KOAeD7w0hsEV49/Kw7BkICKzLjEdi4owWryUH89eft
dbh/KYjsm0u5Xzus1Q1neoN1k6J6WURp3pyjIe8CgYAYP75E2HntCAeZcBrmNYzv
kjMzB27C2e+4/5N4DxsOfZniBxOq8of2pxRZuYqpVGFw8lcQkGnmcXoroGCJNzrx
mSE3eRmn6W0Ww05mAZE+wePztRgltUujg0/11T/jq70QgOkHKqIG2EAdy97sMX/G
F/DgCfiZkXoJQL9qhAMwJwKBgHGk9QhhplUyKk+OpuHEgcPmJm7mgiyfRGhLA+td
L93tJiPdHzCPZ2TToRy7WRxmq9IF7guC05I/Mh27aKBvNBwwvTuf5KgMxlK/h38w
Tu0FhpsdhvkoEdJjdkpeDlx3QwIr6IWuliXDFQDega3LxnUqxUY5tkrkw4ULUhjr
hvcBAoGBAMWqo3WxONvcCr0PuW7QDovPYUC++Yx8+RxRkdtO2Gdz/iHG3uykgxvx
P9o1IeoCJDTOgfEb4F+BARlHdJtw57WB3vpaaya2GD1rEFEZnJtjDYm+XMacsrod
Kx8HNj/NQw/jHRJFULyKuFCLxX1WUMoK0QKDcGPA39xEBCo3tfuM
-----END RSA PRIVATE KEY-----
";

    const RSA_2048_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIDGzCCAgOgAwIBAgIUPeIRxX44Ikp5Cmd1SIk2AlD2smEwDQYJKoZIhvcNAQEL
BQAwHDEaMBgGA1UEAwwRYWdlbnQuZXhhbXBsZS5jb20wIBcNMjYxMTIyMDMxNTQ2
WhgPMjEyNjEwMjkwMzE1NDZaMBwxGjAYBgNVBAMMEWFnZW50LmV4YW1wbGUuY29t
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA200qovCqPkrXEbaA7EpB
0OFbCBVmuZQOYfgnJ5qxls8BtxTImE/DJK/dQtG3teXVCfUcxiH00GkOztGKYBds
73sD+XRM/AVk/Mh0CHOY3l4vZkQqduNSvQv8feuP/tfsVxwJ9fv6h0FjNIpyBPsO
ophc1E5NbfiIuyzCEgCDGLB7NeIsUrFqtpQvlfsaxrNJp9J0HnHHzyrok8JG/Dny
qi+rZYDCx8KPT/XrjN+kS8BxH2ki0xW43aY4zFhSgZSpFoHm4vTFjrDtGkCCZS+0
xltuMTJdJ6Ogbt/Xjtm//qb7y0YA86rgtM8+Oak62EfZQMLRJX0cyz8hdJyXqeBw
GQIDAQABo1MwUTAdBgNVHQ4EFgQUofME27iJNaPMhF8MdJ60o8zVEe0wHwYDVR0j
BBgwFoAUofME27iJNaPMhF8MdJ60o8zVEe0wDwYDVR0TAQH/BAUwAwEB/zANBgkq
hkiG9w0BAQsFAAOCAQEAzzp+/XFjsPF/P6VaafhfKjuGdqfEQaEZfAk0AvOYmcZo
gR7cgxZnXlndRJg31cCFqtk2f1Gh5LZTcs/4KpY0DlPDD92Ha6uDs5HXWQT5c1wk
zwbulU6eMOQD/g41GNiRcEaXBKetvKNrvTU87NkUrWAPeLVf7QNitTTrAS5ObGSA
nXd308qAgULmLuyNr57yq0nKPsvO9+mZLkuJzBHFDNDUk159EcF70ZLJuTl8yFtb
B3cXYqTAES+TLmLKWW5YNYztnFYljWV02w1oMc0xloQz7twhKHQo6Ry3AafDaGL6
cuWsJyxtCup+CewLYMbVYB1SLIdIfHaBpC0Bpa5vpw==
-----END CERTIFICATE-----
";

    // Generated with `openssl genrsa -traditional 1024`; it belongs to no certificate here.
    const RSA_1024_PKCS1_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIICXgIBAAKBgQC+5JSUuLFc7znTPzYYcqS4rRyWOVICxYhz5xQ3udt6RVsnKkh8
yDrOh6J3tqDt1Cxti2jWZWtWH7K7SR1nA0by2vjVrQRRmKVrODbhrl/Yflw5bgyM
qTlz45KsFJJvPUiI7WOdeLLmtDEP2DClAZhS6AoUyIees9v3U2nkp8Pw5QIDAQAB
AoGASE/aoQPd3DCbHRTi7xvuni6ll5qbIIWnjRBKLlnvdD/1qb5wuyQ2cqoat3Kt
P6qSMeUPj7fXk0ZqtFucEbvCEfF2LG7ggVrR3V70lotTQcsTb8Eh/xjJtO61AjrM
NCiuoMl7/CXhUxTA2kd9+PD/jUmYJt04swgix5njdesUnkECQQDpzLt+gyLt4lrd
hGkW9GzPF+gM5sEoeouMCTun1UvThwhrlgiJFYf6XcmTtAXlJxqsCGg33qxShsUO
8v5SEtv5AkEA0QTbVLXaOHlvldiMGizGgdydOhwewIarihs86L5i8fITbZA7BMzw
STiwvklt70BBpcUT0B+CSFwRE8gt2gG/TQJBAMrrf9wZE0rmiDj1AIUE1h+UPzpb
WVC5s75yEQ3lCa/o5j0CdhwMzP1XQ2pn+Cngm7yue03qfSQPhp8n9eXkKnkCQQCk
WwpQcPKYB70befyotF6fTKeBQw1XXE3UuhhJ9zL8htqKA6i03KVxHhe0eS7tu3wj
anVq6OvcFDEFehm73DXdAkEA3D65nQ5RXFjnsLDuA0OPmUrci6RTwoqQFUtP2xsQ
PpiZQ9hnQk/S06ajzrjvr+N9bcZwkmlm5TjkTqT96nZ+UA==
-----END RSA PRIVATE KEY-----
";

    // RFC 8032 section 7.1, test 1: the empty message signed with this seed.
    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC_KEY: &str =
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC8032_SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    const URL: &str = "grpc://agent.example.com";

    /// A self-signed certificate and its PKCS#8 key.
    struct Credentials {
        cert_pem: String,
        key_pem: String,
        key_der: Vec<u8>,
    }

    fn credentials(algorithm: &'static rcgen::SignatureAlgorithm) -> TestResult<Credentials> {
        let key_pair = rcgen::KeyPair::generate_for(algorithm)?;
        let certificate = rcgen::CertificateParams::new(vec!["agent.example.com".to_owned()])?
            .self_signed(&key_pair)?;
        Ok(Credentials {
            cert_pem: certificate.pem(),
            key_pem: key_pair.serialize_pem(),
            key_der: key_pair.serialize_der(),
        })
    }

    fn ed25519() -> TestResult<Credentials> {
        credentials(&rcgen::PKCS_ED25519)
    }

    fn p256() -> TestResult<Credentials> {
        credentials(&rcgen::PKCS_ECDSA_P256_SHA256)
    }

    fn p384() -> TestResult<Credentials> {
        credentials(&rcgen::PKCS_ECDSA_P384_SHA384)
    }

    fn pem_text(label: &str, contents: &[u8]) -> String {
        pem::encode(&pem::Pem::new(label, contents.to_vec()))
    }

    fn der_of(pem_text: &str) -> TestResult<Vec<u8>> {
        Ok(pem::parse(pem_text)?.into_contents())
    }

    fn sec1_pem_of_p256(credentials: &Credentials) -> TestResult<String> {
        let secret_key = p256::SecretKey::from_pkcs8_der(&credentials.key_der)?;
        Ok(pem_text("EC PRIVATE KEY", &secret_key.to_sec1_der()?))
    }

    fn sec1_pem_of_p384(credentials: &Credentials) -> TestResult<String> {
        let secret_key = p384::SecretKey::from_pkcs8_der(&credentials.key_der)?;
        Ok(pem_text("EC PRIVATE KEY", &secret_key.to_sec1_der()?))
    }

    fn rsa_pkcs8_pem(pkcs1_pem: &str) -> TestResult<String> {
        let private_key = rsa::RsaPrivateKey::from_pkcs1_der(&der_of(pkcs1_pem)?)?;
        Ok(pem_text(
            "PRIVATE KEY",
            private_key.to_pkcs8_der()?.as_bytes(),
        ))
    }

    fn hex(text: &str) -> TestResult<Vec<u8>> {
        let bytes = (0..text.len())
            .step_by(2)
            .map(|idx| u8::from_str_radix(&text[idx..idx + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(bytes)
    }

    fn input(url: &str) -> UrlConfigInput<'_> {
        UrlConfigInput {
            url,
            ..UrlConfigInput::default()
        }
    }

    fn mtls<'a>(client_cert: &'a str, client_key: &'a str) -> UrlConfigInput<'a> {
        UrlConfigInput {
            url: URL,
            client_cert: Some(client_cert),
            client_key: Some(client_key),
            ..UrlConfigInput::default()
        }
    }

    /// The messages of a rejected input; an accepted input has none.
    fn messages(input: &UrlConfigInput<'_>) -> Vec<String> {
        match UrlConfigSpec::parse(input) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.messages().to_vec(),
        }
    }

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

    fn rcgen_signer(key_pair: &Ed25519KeyPair) -> TestResult<rcgen::KeyPair> {
        let document = ed25519_pkcs8_v1(key_pair.seed_bytes());
        Ok(rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(document.as_slice()),
            &rcgen::PKCS_ED25519,
        )?)
    }

    // URL

    #[test]
    fn grpc_url_is_accepted_and_kept_as_sent() -> TestResult {
        let spec = UrlConfigSpec::parse(&input(URL))?;
        assert_eq!(spec.url(), URL);
        assert_eq!(spec.ca_cert(), None);
        assert_eq!(spec.tls_host(), None);
        assert!(matches!(spec.auth(), UrlAuthSpec::Jwt));
        Ok(())
    }

    #[test]
    fn grpcs_url_to_localhost_with_port_and_path_is_accepted() -> TestResult {
        for url in [
            "grpcs://localhost:4242",
            "grpcs://10.0.0.1:8443/agent/path?x=1",
            "grpc://[::1]:4242",
            "grpc://agent.example.com/a%20b",
        ] {
            UrlConfigSpec::parse(&input(url))?;
        }
        Ok(())
    }

    #[test]
    fn https_url_is_rejected() {
        assert_eq!(
            messages(&input("https://agent.example.com")),
            ["Url is not a valid URL"]
        );
    }

    #[test]
    fn url_without_scheme_is_rejected() {
        assert_eq!(messages(&input("not.a.url")), ["Url is not a valid URL"]);
    }

    #[test]
    fn empty_url_is_rejected() {
        assert_eq!(messages(&input("")), ["Url is not a valid URL"]);
        assert_eq!(messages(&input("   ")), ["Url is not a valid URL"]);
    }

    #[test]
    fn url_without_host_is_rejected() {
        for url in [
            "grpc://",
            "grpc:agent.example.com",
            "grpc:///path",
            "grpcs://:4242",
        ] {
            assert_eq!(messages(&input(url)), ["Url is not a valid URL"], "{url}");
        }
    }

    #[test]
    fn url_that_is_not_a_whole_uri_is_rejected() {
        for url in [
            " grpc://agent.example.com",
            "grpc://agent.example.com ",
            "grpc://agent example.com",
            "GRPC://agent.example.com",
            "grpc://agént.example.com",
            "grpc://agent.example.com/%zz",
            "grpc://agent.example.com:99999",
        ] {
            assert_eq!(messages(&input(url)), ["Url is not a valid URL"], "{url}");
        }
    }

    #[test]
    fn url_with_credentials_or_an_escaped_host_is_rejected() {
        for url in [
            "grpc://user:pass@agent.example.com:443",
            "grpcs://user@agent.example.com",
            "grpc://agent%00.example.com",
            "grpc://%61gent.example.com",
        ] {
            assert_eq!(messages(&input(url)), ["Url is not a valid URL"], "{url}");
        }
    }

    #[test]
    fn url_of_2048_characters_is_accepted() -> TestResult {
        let url = format!("{URL}/{}", "a".repeat(2048 - URL.len() - 1));
        assert_eq!(url.len(), 2048);
        UrlConfigSpec::parse(&input(&url))?;
        Ok(())
    }

    #[test]
    fn url_over_2048_characters_is_too_long() {
        let url = format!("{URL}/{}", "a".repeat(2048 - URL.len()));
        assert_eq!(
            messages(&input(&url)),
            ["Url is too long (maximum is 2048 characters)"]
        );
        let garbage = "x".repeat(100_000);
        assert_eq!(
            messages(&input(&garbage)),
            ["Url is too long (maximum is 2048 characters)"]
        );
    }

    // tls_host

    #[test]
    fn hostname_tls_host_is_accepted() -> TestResult {
        for tls_host in [
            "host.example.com",
            "example.com",
            "10.1.2.3",
            "[::1]",
            "Host-1.Example",
        ] {
            let spec = UrlConfigSpec::parse(&UrlConfigInput {
                tls_host: Some(tls_host),
                ..input(URL)
            })?;
            assert_eq!(spec.tls_host(), Some(tls_host));
        }
        Ok(())
    }

    #[test]
    fn tls_host_with_scheme_port_path_or_userinfo_is_rejected() {
        for tls_host in [
            "https://exmple.com/path",
            "host:443",
            "host/",
            "user@host",
            "host?query",
            "host#fragment",
            "exa mple.com",
            "[not-an-ip]",
            "hést.example.com",
        ] {
            assert_eq!(
                messages(&UrlConfigInput {
                    tls_host: Some(tls_host),
                    ..input(URL)
                }),
                ["Tls host must be a valid hostname!"],
                "{tls_host}"
            );
        }
    }

    #[test]
    fn blank_tls_host_counts_as_absent() -> TestResult {
        let spec = UrlConfigSpec::parse(&UrlConfigInput {
            tls_host: Some(" \t\n"),
            ..input(URL)
        })?;
        assert_eq!(spec.tls_host(), None);
        Ok(())
    }

    #[test]
    fn tls_host_over_2048_characters_is_too_long() -> TestResult {
        let longest = "a".repeat(2048);
        UrlConfigSpec::parse(&UrlConfigInput {
            tls_host: Some(&longest),
            ..input(URL)
        })?;
        let too_long = "a".repeat(2049);
        assert_eq!(
            messages(&UrlConfigInput {
                tls_host: Some(&too_long),
                ..input(URL)
            }),
            ["Tls host is too long (maximum is 2048 characters)"]
        );
        Ok(())
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

    // Mode selection and JWT mode

    #[test]
    fn client_cert_without_key_is_rejected_in_jwt_mode() -> TestResult {
        assert_eq!(
            messages(&UrlConfigInput {
                client_cert: Some(&p256()?.cert_pem),
                ..input(URL)
            }),
            ["Client cert must be blank"]
        );
        Ok(())
    }

    #[test]
    fn blank_client_key_and_cert_select_jwt_mode() -> TestResult {
        let spec = UrlConfigSpec::parse(&UrlConfigInput {
            client_cert: Some(" "),
            client_key: Some(""),
            ..input(URL)
        })?;
        assert!(matches!(spec.auth(), UrlAuthSpec::Jwt));
        Ok(())
    }

    #[test]
    fn client_key_without_cert_is_rejected() -> TestResult {
        let p256 = p256()?;
        assert_eq!(
            messages(&UrlConfigInput {
                client_key: Some(&p256.key_pem),
                ..input(URL)
            }),
            ["Client cert must be a valid PEM certificate"]
        );
        assert_eq!(
            messages(&mtls("\n", &p256.key_pem)),
            ["Client cert must be a valid PEM certificate"]
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

    #[test]
    fn all_failures_are_reported_in_gitlab_order() -> TestResult {
        let result = UrlConfigSpec::parse(&UrlConfigInput {
            url: "https://agent.example.com",
            client_cert: Some("invalid"),
            client_key: Some("invalid"),
            ca_cert: Some("invalid"),
            tls_host: Some("host:443"),
        });
        let Err(errors) = result else {
            return Err("invalid input was accepted".into());
        };
        assert_eq!(
            errors.violations(),
            [
                UrlConfigViolation::UrlInvalid,
                UrlConfigViolation::CaCertInvalid,
                UrlConfigViolation::TlsHostInvalid,
                UrlConfigViolation::ClientCertInvalid,
                UrlConfigViolation::ClientKeyInvalid,
            ]
        );
        assert_eq!(
            errors.to_string(),
            "Url is not a valid URL, Ca cert must be a valid PEM certificate, \
             Tls host must be a valid hostname!, Client cert must be a valid PEM certificate, \
             Client key must be a valid PEM private key"
        );
        Ok(())
    }

    #[test]
    fn violations_name_their_attribute_and_message() {
        let violation = UrlConfigViolation::TlsHostInvalid;
        assert_eq!(violation.attribute(), "tls_host");
        assert_eq!(violation.message(), "must be a valid hostname!");
        assert_eq!(violation.to_string(), "Tls host must be a valid hostname!");
        assert_eq!(
            UrlConfigViolation::ClientKeyMismatch.attribute(),
            "client_key"
        );
    }

    #[test]
    fn debug_output_hides_the_client_key() -> TestResult {
        let p256 = p256()?;
        let input = mtls(&p256.cert_pem, &p256.key_pem);
        let spec = UrlConfigSpec::parse(&input)?;
        let key_body = p256.key_pem.lines().nth(1).ok_or("key PEM has no body")?;
        assert!(!format!("{spec:?}").contains(key_body));
        assert!(!format!("{input:?}").contains(key_body));
        Ok(())
    }

    // Ed25519 key pairs

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

    // Robustness

    /// Valid DER of every kind of block this module parses, to mutate, and a valid P-256 pair.
    struct FuzzFixtures {
        ders: Vec<(&'static str, Vec<u8>)>,
        p256: Credentials,
    }

    static FUZZ_FIXTURES: LazyLock<Result<FuzzFixtures, String>> =
        LazyLock::new(|| fuzz_fixtures().map_err(|error| error.to_string()));

    fn fuzz_fixtures() -> TestResult<FuzzFixtures> {
        let (ed25519, p256, p384) = (ed25519()?, p256()?, p384()?);
        let ders = vec![
            ("CERTIFICATE", der_of(&p256.cert_pem)?),
            ("CERTIFICATE", der_of(&ed25519.cert_pem)?),
            ("CERTIFICATE", der_of(RSA_2048_CERT)?),
            ("PRIVATE KEY", ed25519.key_der.clone()),
            ("PRIVATE KEY", p256.key_der.clone()),
            ("PRIVATE KEY", p384.key_der.clone()),
            ("PRIVATE KEY", der_of(&rsa_pkcs8_pem(RSA_1024_PKCS1_KEY)?)?),
            ("RSA PRIVATE KEY", der_of(RSA_1024_PKCS1_KEY)?),
            ("EC PRIVATE KEY", der_of(&sec1_pem_of_p256(&p256)?)?),
            ("EC PRIVATE KEY", der_of(&sec1_pem_of_p384(&p384)?)?),
        ];
        Ok(FuzzFixtures { ders, p256 })
    }

    fn armoured(label: &str, body: &str) -> String {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    fn any_label() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "CERTIFICATE",
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "EC PARAMETERS",
        ])
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(
            url in any::<String>(),
            client_cert in proptest::option::of(any::<String>()),
            client_key in proptest::option::of(any::<String>()),
            ca_cert in proptest::option::of(any::<String>()),
            tls_host in proptest::option::of(any::<String>()),
        ) {
            let _ = UrlConfigSpec::parse(&UrlConfigInput {
                url: &url,
                client_cert: client_cert.as_deref(),
                client_key: client_key.as_deref(),
                ca_cert: ca_cert.as_deref(),
                tls_host: tls_host.as_deref(),
            });
        }

        #[test]
        fn parse_never_panics_on_arbitrary_text_in_pem_armour(
            cert_body in any::<String>(),
            key_body in any::<String>(),
            key_label in any_label(),
        ) {
            let client_cert = armoured("CERTIFICATE", &cert_body);
            let client_key = armoured(key_label, &key_body);
            let _ = UrlConfigSpec::parse(&UrlConfigInput {
                url: URL,
                client_cert: Some(&client_cert),
                client_key: Some(&client_key),
                ca_cert: Some(&client_cert),
                tls_host: None,
            });
        }

        #[test]
        fn parse_never_panics_on_arbitrary_bytes_in_pem_armour(
            cert_bytes in proptest::collection::vec(any::<u8>(), 0..600),
            key_bytes in proptest::collection::vec(any::<u8>(), 0..600),
            key_label in any_label(),
        ) {
            let client_cert = pem_text("CERTIFICATE", &cert_bytes);
            let client_key = pem_text(key_label, &key_bytes);
            let _ = UrlConfigSpec::parse(&UrlConfigInput {
                url: URL,
                client_cert: Some(&client_cert),
                client_key: Some(&client_key),
                ca_cert: Some(&client_cert),
                tls_host: None,
            });
        }

        #[test]
        fn parse_never_panics_on_mutated_certificates_and_keys(
            der_idx in any::<prop::sample::Index>(),
            mutations in proptest::collection::vec(
                (any::<prop::sample::Index>(), any::<u8>()),
                1..4,
            ),
            truncate_to in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let fixtures = FUZZ_FIXTURES
                .as_ref()
                .map_err(|error| TestCaseError::fail(error.clone()))?;
            let (label, der) = &fixtures.ders[der_idx.index(fixtures.ders.len())];
            let mut der = der.clone();
            for (position, value) in &mutations {
                let position = position.index(der.len());
                der[position] = *value;
            }
            if let Some(truncate_to) = truncate_to {
                der.truncate(truncate_to.index(der.len()));
            }
            let text = pem_text(label, &der);
            let _ = UrlConfigSpec::parse(&UrlConfigInput {
                url: URL,
                client_cert: Some(&text),
                client_key: Some(&text),
                ca_cert: Some(&text),
                tls_host: Some(&text),
            });
            let _ = UrlConfigSpec::parse(&mtls(&fixtures.p256.cert_pem, &text));
            let _ = UrlConfigSpec::parse(&mtls(&text, &fixtures.p256.key_pem));
        }
    }
}
