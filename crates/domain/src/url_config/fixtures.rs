//! Certificates, keys and inputs shared by the URL-configuration tests: fixed RSA material made
//! with openssl, freshly generated Ed25519 and ECDSA pairs, and shorthands for inputs and messages.

use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rsa::pkcs1::DecodeRsaPrivateKey as _;

use super::{UrlConfigInput, UrlConfigSpec};

pub(super) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

// Generated with `openssl genrsa -traditional 2048` and
// `openssl req -new -x509 -key rsa2048.pem -subj /CN=agent.example.com -days 36500`.
pub(super) const RSA_2048_PKCS1_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
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

pub(super) const RSA_2048_CERT: &str = "-----BEGIN CERTIFICATE-----
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
pub(super) const RSA_1024_PKCS1_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
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

pub(super) const URL: &str = "grpc://agent.example.com";

/// A self-signed certificate and its PKCS#8 key.
pub(super) struct Credentials {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
    pub(super) key_der: Vec<u8>,
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

pub(super) fn ed25519() -> TestResult<Credentials> {
    credentials(&rcgen::PKCS_ED25519)
}

pub(super) fn p256() -> TestResult<Credentials> {
    credentials(&rcgen::PKCS_ECDSA_P256_SHA256)
}

pub(super) fn p384() -> TestResult<Credentials> {
    credentials(&rcgen::PKCS_ECDSA_P384_SHA384)
}

pub(super) fn pem_text(label: &str, contents: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, contents.to_vec()))
}

pub(super) fn der_of(pem_text: &str) -> TestResult<Vec<u8>> {
    Ok(pem::parse(pem_text)?.into_contents())
}

pub(super) fn sec1_pem_of_p256(credentials: &Credentials) -> TestResult<String> {
    let secret_key = p256::SecretKey::from_pkcs8_der(&credentials.key_der)?;
    Ok(pem_text("EC PRIVATE KEY", &secret_key.to_sec1_der()?))
}

pub(super) fn sec1_pem_of_p384(credentials: &Credentials) -> TestResult<String> {
    let secret_key = p384::SecretKey::from_pkcs8_der(&credentials.key_der)?;
    Ok(pem_text("EC PRIVATE KEY", &secret_key.to_sec1_der()?))
}

pub(super) fn rsa_pkcs8_pem(pkcs1_pem: &str) -> TestResult<String> {
    let private_key = rsa::RsaPrivateKey::from_pkcs1_der(&der_of(pkcs1_pem)?)?;
    Ok(pem_text(
        "PRIVATE KEY",
        private_key.to_pkcs8_der()?.as_bytes(),
    ))
}

pub(super) fn input(url: &str) -> UrlConfigInput<'_> {
    UrlConfigInput {
        url,
        ..UrlConfigInput::default()
    }
}

pub(super) fn mtls<'a>(client_cert: &'a str, client_key: &'a str) -> UrlConfigInput<'a> {
    UrlConfigInput {
        url: URL,
        client_cert: Some(client_cert),
        client_key: Some(client_key),
        ..UrlConfigInput::default()
    }
}

/// The messages of a rejected input; an accepted input has none.
pub(super) fn messages(input: &UrlConfigInput<'_>) -> Vec<String> {
    match UrlConfigSpec::parse(input) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.messages().to_vec(),
    }
}
