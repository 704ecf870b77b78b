//! rustls client configuration shared by the API client and the health probe.
//!
//! The API server is reached at one address (usually 127.0.0.1) but its
//! certificate is verified as another name (kubeadm's serving certificate has
//! the SAN `kubernetes`, not 127.0.0.1). [`NamedVerifier`] wraps rustls' WebPKI
//! verifier and substitutes the configured name, whatever host the URL has.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::KubeError;

/// A client certificate chain and its private key.
#[derive(Debug)]
pub(crate) struct ClientIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientIdentity {
    /// Parses a PEM certificate chain and a PEM private key; `what` names
    /// their origin in errors.
    pub(crate) fn from_pem(cert: &[u8], key: &[u8], what: &str) -> Result<Self, KubeError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KubeError::Pem {
                what: format!("client certificate of {what}"),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(KubeError::Pem {
                what: format!("client certificate of {what}"),
                reason: "no CERTIFICATE block found".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| KubeError::Pem {
            what: format!("client key of {what}"),
            reason: e.to_string(),
        })?;
        Ok(Self { chain, key })
    }
}

/// What a TLS client configuration is built from.
pub(crate) struct TlsSettings<'a> {
    /// PEM CA bundle; `None` only with `insecure`.
    pub(crate) ca_pem: Option<&'a [u8]>,
    /// Where the CA came from, for error messages.
    pub(crate) ca_origin: &'a str,
    /// Name the server certificate must carry.
    pub(crate) server_name: &'a str,
    /// Accept any certificate.
    pub(crate) insecure: bool,
    /// Client certificate to present.
    pub(crate) identity: Option<ClientIdentity>,
}

/// The crypto provider of ha-vip: ring, chosen explicitly so no process-wide
/// default needs installing.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a rustls client configuration speaking HTTP/1.1 (one connection per
/// watch keeps a stalled watch from stalling the renewals).
pub(crate) fn client_config(s: TlsSettings<'_>) -> Result<rustls::ClientConfig, KubeError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = if s.insecure {
        Arc::new(AcceptAnyCertificate { algorithms })
    } else {
        let pem = s.ca_pem.ok_or_else(|| KubeError::Tls {
            server: s.server_name.to_string(),
            reason: "no CA certificate to verify the API server; set k8s.ca_cert / health.ca_cert"
                .into(),
        })?;
        let mut roots = RootCertStore::empty();
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| KubeError::Pem {
                what: format!("CA bundle {}", s.ca_origin),
                reason: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| KubeError::Pem {
                what: format!("CA bundle {}", s.ca_origin),
                reason: e.to_string(),
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(KubeError::Pem {
                what: format!("CA bundle {}", s.ca_origin),
                reason: "no CERTIFICATE block found".into(),
            });
        }
        let name = ServerName::try_from(s.server_name.to_string()).map_err(|e| KubeError::Tls {
            server: s.server_name.to_string(),
            reason: format!("invalid tls_server_name {:?}: {e}", s.server_name),
        })?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| KubeError::Tls {
                server: s.server_name.to_string(),
                reason: format!("cannot build the certificate verifier: {e}"),
            })?;
        Arc::new(NamedVerifier { inner, name })
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeError::Tls {
            server: s.server_name.to_string(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match s.identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| KubeError::Pem {
                what: "client certificate and key".into(),
                reason: e.to_string(),
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies the chain against the CA and the certificate against a fixed
/// name, ignoring the host of the URL.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _url_host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_tls_verify`: any certificate is accepted, but the handshake
/// signatures are still checked so the session keys belong to that certificate.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
