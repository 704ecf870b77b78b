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
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::KubeError;
use super::x509::{self, CertInfo};

/// A client certificate chain, its private key and what the certificate
/// says about itself.
#[derive(Debug, Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) certified: Arc<CertifiedKey>,
    pub(crate) info: CertInfo,
}

/// What to do about a key rustls' ring provider cannot sign with.
const KEY_TYPES: &str = "supported keys are ECDSA P-256 or P-384, Ed25519 and RSA 2048 to 8192 bits (PKCS#1, PKCS#8 or SEC1 PEM); reissue the key, e.g. openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256";

impl ClientIdentity {
    /// Parses a PEM certificate chain and a PEM private key; `what` names
    /// their origin in errors. The certificate is read by [`x509::parse`],
    /// not by webpki, so an X.509 v1 certificate (which kubectl and the API
    /// server accept) is accepted too; the key must match its public key.
    pub(crate) fn from_pem(cert: &[u8], key: &[u8], what: &str) -> Result<Self, KubeError> {
        let cert_what = format!("client certificate of {what}");
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&cert_what, &e))?;
        let Some(end_entity) = chain.first() else {
            return Err(KubeError::Pem {
                what: cert_what,
                reason: "no CERTIFICATE block found".into(),
            });
        };
        let info = x509::parse(end_entity).map_err(|reason| KubeError::Certificate {
            what: cert_what.clone(),
            reason: format!("not a readable X.509 certificate ({reason})"),
        })?;
        let key_what = format!("client key of {what}");
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem_error(&key_what, &e))?;
        let signer =
            provider()
                .key_provider
                .load_private_key(key)
                .map_err(|e| KubeError::Certificate {
                    what: key_what.clone(),
                    reason: format!(
                        "cannot sign with this key ({}); {KEY_TYPES}",
                        short_rustls(&e)
                    ),
                })?;
        if let Some(public) = signer.public_key() {
            if public.as_ref() != info.spki.as_slice() {
                return Err(KubeError::Certificate {
                    what: key_what,
                    reason: "the key does not belong to the client certificate (their public keys differ); use the key the certificate was issued for".into(),
                });
            }
        }
        Ok(Self {
            certified: Arc::new(CertifiedKey::new(chain, signer)),
            info,
        })
    }
}

/// A PEM error in words that quote nothing of the file: a malformed
/// `-----BEGIN` line may hold anything, a pasted token included.
pub(crate) fn pem_error(what: &str, e: &rustls_pki_types::pem::Error) -> KubeError {
    use rustls_pki_types::pem::Error as E;
    let reason = match e {
        E::MissingSectionEnd { .. } => "a -----BEGIN line has no matching -----END line",
        E::IllegalSectionStart { .. } => "a line starting with -----BEGIN is malformed",
        E::Base64Decode(_) => "the text between -----BEGIN and -----END is not valid base64",
        E::NoItemsFound => "no PEM block of the expected kind found",
        E::SectionTooLarge => "a PEM block is too large",
        _ => "unreadable PEM",
    };
    KubeError::Pem {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// rustls' handshake error, with what to do for the server certificate
/// shapes webpki refuses although Go clients accept them.
pub(crate) fn explain(e: &rustls::Error) -> String {
    let text = e.to_string();
    if text.contains("UnsupportedCertVersion") {
        return format!(
            "{text}: the server's certificate is X.509 v1 (no extensions), which rustls does not accept from a server; reissue it as v3 with its names, e.g. openssl x509 -req ... -extfile <(printf 'subjectAltName=DNS:kubernetes,IP:127.0.0.1')"
        );
    }
    text
}

/// rustls' error without its Debug-formatted internals where a plain
/// sentence exists.
fn short_rustls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::General(s) => s.clone(),
        other => other.to_string(),
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
            let cert = cert.map_err(|e| pem_error(&format!("CA bundle {}", s.ca_origin), &e))?;
            roots.add(cert).map_err(|e| KubeError::Certificate {
                what: format!("CA bundle {}", s.ca_origin),
                reason: format!(
                    "a certificate cannot be used as a trust anchor ({}); expected the CA certificate that signed the API server's certificate",
                    short_rustls(&e)
                ),
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
        // Not `with_client_auth_cert`: it re-parses the certificate with
        // webpki, which refuses X.509 v1; `from_pem` checked the key match.
        Some(id) => {
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(id.certified)))
        }
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
