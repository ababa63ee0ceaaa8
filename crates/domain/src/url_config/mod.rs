//! URL configurations of receptive agents: validation of what a client sends (the agent's URL, TLS
//! settings, and either mTLS credentials or nothing for JWT mode), and the Ed25519 key pair that
//! JWT mode signs with. Validation messages are GitLab's full messages, in GitLab's order.
//! This module owns the input, the validated spec and the violations; the URI grammar is in
//! `url`, PEM, X.509 and key parsing in `pem`, and the Ed25519 key pair in `keys`.

#[cfg(test)]
mod fixtures;
mod keys;
mod pem;
mod url;

use std::fmt;

use secrecy::SecretString;

pub use keys::{Ed25519KeyPair, KeyPairError};
pub use pem::pem_from_pem_or_base64;

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
        violations.extend(url::url_violation(input.url));
        violations.extend(ca_cert.and_then(pem::ca_cert_violation));
        violations.extend(tls_host.and_then(url::tls_host_violation));
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

/// The parameters of a URL configuration that validation messages name.
#[derive(Debug, Clone, Copy)]
enum UrlConfigField {
    Url,
    CaCert,
    TlsHost,
    ClientCert,
    ClientKey,
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

/// Chooses the mode (a client key means mTLS, as in GitLab) and, in mTLS mode, checks the client
/// credentials. Returns `None` when the credentials broke a rule, which is then in `violations`.
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
    pem::mtls_auth_spec(client_cert, client_key, violations)
}

#[cfg(test)]
mod tests {
    use super::fixtures::{
        Credentials, RSA_1024_PKCS1_KEY, RSA_2048_CERT, TestResult, URL, der_of, ed25519, input,
        messages, mtls, p256, p384, pem_text, rsa_pkcs8_pem, sec1_pem_of_p256, sec1_pem_of_p384,
    };
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

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

    // All fields together

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
