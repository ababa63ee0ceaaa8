//! How a connection to PostgreSQL is made: the URL with libpq's `sslmode` and `sslrootcert`
//! (tokio-postgres knows only disable/prefer/require and no root file), the per-connection
//! settings that bound every statement, and TLS over rustls with the ring provider.

use super::{ConnectError, PostgresOptions};
use crate::EngineError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Everything needed to open a connection: the driver's configuration and the TLS connector.
#[derive(Clone)]
pub(super) struct ConnectionSettings {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: RustlsConnect,
    pub(super) connect_timeout: Duration,
    pub(super) statement_timeout: Duration,
}

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Parses the options into connection settings; reads `sslrootcert` if the URL names one.
pub(super) async fn settings(
    options: &PostgresOptions,
) -> Result<ConnectionSettings, ConnectError> {
    let (url, ssl_mode, root_cert) = split_tls_parameters(&options.url)?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|error| ConnectError::InvalidUrl(EngineError::new(error)))?;
    if let Some(password) = &options.password {
        config.password(password.as_bytes());
    }
    config.ssl_mode(match ssl_mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    config.connect_timeout(options.connect_timeout);
    // Keepalives find a peer that vanished without closing the connection (a failed-over
    // primary), so that the pool drops the connection instead of waiting on it.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("agentreg");
    }
    // Every statement on every connection ends within the statement timeout, and a transaction
    // left open by a client that vanished releases its row locks soon after.
    let statement_ms = options.statement_timeout.as_millis().max(1);
    let bounds = format!(
        "-c statement_timeout={statement_ms} -c idle_in_transaction_session_timeout={}",
        statement_ms.saturating_mul(4)
    );
    let startup_options = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {bounds}"),
        Some(_) | None => bounds,
    };
    config.options(&startup_options);
    let tls = RustlsConnect {
        config: Arc::new(client_config(ssl_mode, root_cert.as_deref()).await?),
    };
    Ok(ConnectionSettings {
        config,
        tls,
        connect_timeout: options.connect_timeout,
        statement_timeout: options.statement_timeout,
    })
}

/// The TLS connector tokio-postgres calls for each connection.
#[derive(Clone)]
pub(super) struct RustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnector, io::Error> {
        // The name is checked only when TLS is used: with `sslmode=disable`, or a Unix socket,
        // there is no server name to check.
        Ok(RustlsConnector {
            config: Arc::clone(&self.config),
            domain: domain.to_owned(),
        })
    }
}

/// Connects one stream.
pub(super) struct RustlsConnector {
    config: Arc<ClientConfig>,
    domain: String,
}

impl<S> TlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, io::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let server_name = ServerName::try_from(self.domain)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
            let connector = tokio_rustls::TlsConnector::from(self.config);
            let stream = connector.connect(server_name, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS connection to the server.
pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding, as libpq's default `channel_binding=prefer` falls back
        // to.
        ChannelBinding::none()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL, which tokio-postgres would
/// refuse or misread. A key=value connection string is passed through as it is.
fn split_tls_parameters(url: &str) -> Result<(String, SslMode, Option<String>), ConnectError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), SslMode::Prefer, None));
    };
    if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
        return Ok((url.to_owned(), SslMode::Prefer, None));
    }
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for parameter in query.split('&').filter(|parameter| !parameter.is_empty()) {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        match key {
            "sslmode" => {
                ssl_mode = match value {
                    "disable" => SslMode::Disable,
                    "allow" => SslMode::Allow,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(ConnectError::InvalidUrl(EngineError::new(format!(
                            "unknown sslmode {other:?}"
                        ))));
                    }
                };
            }
            "sslrootcert" => root_cert = Some(value.to_owned()),
            _ => kept.push(parameter),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, ssl_mode, root_cert))
}

/// The rustls configuration for a mode. As in libpq, `prefer` and `require` encrypt without
/// checking the certificate (unless a root file is given, which makes `require` check the
/// chain), `verify-ca` checks the chain and `verify-full` the chain and the host name. Roots come
/// from `sslrootcert`, or the Mozilla set when it is absent or `system`.
async fn client_config(
    ssl_mode: SslMode,
    root_cert: Option<&str>,
) -> Result<ClientConfig, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| ConnectError::Tls(EngineError::new(error)))?;
    let verify_chain = match ssl_mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        SslMode::Require => root_cert.is_some_and(|path| path != "system"),
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => false,
    };
    if !verify_chain {
        let verifier = Arc::new(AnyCertificate { provider });
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth());
    }
    let roots = Arc::new(root_store(root_cert).await?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|error| ConnectError::Tls(EngineError::new(error)))?;
    if ssl_mode == SslMode::VerifyFull {
        return Ok(builder.with_webpki_verifier(webpki).with_no_client_auth());
    }
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly { webpki }))
        .with_no_client_auth())
}

async fn root_store(root_cert: Option<&str>) -> Result<RootCertStore, ConnectError> {
    let Some(path) = root_cert.filter(|path| *path != "system") else {
        return Ok(webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect());
    };
    let pem = tokio::fs::read(path)
        .await
        .map_err(|error| ConnectError::Tls(EngineError::new(error)))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate =
            certificate.map_err(|error| ConnectError::Tls(EngineError::new(error)))?;
        roots
            .add(certificate)
            .map_err(|error| ConnectError::Tls(EngineError::new(error)))?;
    }
    if roots.is_empty() {
        return Err(ConnectError::Tls(EngineError::new(format!(
            "sslrootcert {path} holds no certificate"
        ))));
    }
    Ok(roots)
}

/// `sslmode=prefer` and `require`: the connection is encrypted, the certificate is not checked.
/// Handshake signatures are still verified.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let wrong_name_only = matches!(
            &verified,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        );
        if wrong_name_only {
            return Ok(ServerCertVerified::assertion());
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (url, mode, root) = split_tls_parameters(
            "postgres://u@db:5432/agentreg?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@db:5432/agentreg?application_name=x");
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_unknown_modes_are_refused() {
        let (url, mode, _) = split_tls_parameters("postgres://u@db/agentreg").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("postgres://u@db/agentreg", SslMode::Prefer)
        );
        assert!(matches!(
            split_tls_parameters("postgres://db/a?sslmode=sometimes"),
            Err(ConnectError::InvalidUrl(_))
        ));
    }

    #[tokio::test]
    async fn every_mode_builds_a_client_configuration() {
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            client_config(mode, None).await.unwrap();
        }
    }
}
