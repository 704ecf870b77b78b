//! `ha-vip credential issue`: a client certificate for the RBAC user of
//! rbac.yaml, signed by the cluster CA on a kubeadm control-plane node, and a
//! kubeconfig that uses it.
//!
//! The CA key is used through rustls's ring provider, which reads every form
//! kubeadm writes (PKCS#1 RSA, SEC1 EC, PKCS#8); rcgen builds and signs the
//! certificate. The new key is ECDSA P-256, generated here, written 0600
//! and never printed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SignatureAlgorithm, SigningKey,
};
use rustls::SignatureScheme;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use super::masters::ADMIN_GROUPS;

/// Backdating of notBefore, for nodes whose clocks run slightly ahead.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// What to issue, and where.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The CA certificate that signs (kubeadm: /etc/kubernetes/pki/ca.crt).
    pub ca_cert: PathBuf,
    /// Its private key (kubeadm: /etc/kubernetes/pki/ca.key).
    pub ca_key: PathBuf,
    /// The CA that verifies the API server's certificate; kubeadm uses the
    /// same CA for both.
    pub server_ca: PathBuf,
    /// The API server the kubeconfig names (ha-vip itself uses k8s.api_server).
    pub server: String,
    /// The name the API server's certificate is verified against.
    pub tls_server_name: String,
    /// The certificate's user (CN).
    pub user: String,
    /// Its groups (O); never a cluster-admin group.
    pub groups: Vec<String>,
    /// Validity.
    pub valid_for: Duration,
    /// Directory of the kubeconfig, certificate and key.
    pub out_dir: PathBuf,
    /// Replace existing files.
    pub force: bool,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The kubeconfig to set as `k8s.kubeconfig`.
    pub kubeconfig: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client key (mode 0600).
    pub key: PathBuf,
    /// End of the certificate's validity.
    pub not_after: SystemTime,
}

/// Issuing failed; nothing was written unless said so.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A CA file could not be read.
    #[error(
        "cannot read {what} {path}: {source} (on a kubeadm control-plane node it is in /etc/kubernetes/pki; run as root, or name it with --ca-cert/--ca-key)",
        path = path.display()
    )]
    Read {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The CA certificate is not a PEM certificate.
    #[error("{path}: not a usable CA certificate: {reason}", path = path.display())]
    CaCert {
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA key is not a usable PEM private key (its content is never shown).
    #[error("{path}: not a usable CA private key: {reason}", path = path.display())]
    CaKey {
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error(
        "{key} is not the private key of {cert}; name the matching pair with --ca-cert and --ca-key",
        key = key.display(),
        cert = cert.display()
    )]
    KeyMismatch {
        /// The CA certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// A cluster-admin group was asked for.
    #[error(
        "refusing to issue a certificate in group {0}: that is cluster-admin, the opposite of what this command is for"
    )]
    AdminGroup(String),
    /// A file to write exists.
    #[error(
        "{path} exists; refusing to overwrite it (pass --force to replace the credential, then reload ha-vip)",
        path = path.display()
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Signing failed.
    #[error("cannot sign the certificate with {key}: {reason}", key = key.display())]
    Sign {
        /// The CA key.
        key: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}", path = path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Issues the certificate and writes `client.key` (0600), `client.crt` and
/// `kubeconfig` (0600) into `req.out_dir`.
pub fn issue(req: &IssueRequest, now: SystemTime) -> Result<Issued, IssueError> {
    if let Some(g) = req
        .groups
        .iter()
        .find(|g| ADMIN_GROUPS.contains(&g.as_str()))
    {
        return Err(IssueError::AdminGroup(g.clone()));
    }
    let out = Issued {
        kubeconfig: req.out_dir.join("kubeconfig"),
        cert: req.out_dir.join("client.crt"),
        key: req.out_dir.join("client.key"),
        not_after: now + req.valid_for,
    };
    if !req.force {
        for p in [&out.kubeconfig, &out.cert, &out.key] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(IssueError::Exists { path: p.clone() });
            }
        }
    }
    let ca_pem = read("CA certificate", &req.ca_cert)?;
    let ca_pem = String::from_utf8(ca_pem).map_err(|_| IssueError::CaCert {
        path: req.ca_cert.clone(),
        reason: "not PEM text".into(),
    })?;
    let signer = CaKey::load(&req.ca_key)?;
    let ca_der = pem_cert(&ca_pem).ok_or_else(|| IssueError::CaCert {
        path: req.ca_cert.clone(),
        reason: "no CERTIFICATE block".into(),
    })?;
    let (_, ca) = X509Certificate::from_der(&ca_der).map_err(|e| IssueError::CaCert {
        path: req.ca_cert.clone(),
        reason: e.to_string(),
    })?;
    if ca.public_key().subject_public_key.data.as_ref() != signer.public.as_slice() {
        return Err(IssueError::KeyMismatch {
            cert: req.ca_cert.clone(),
            key: req.ca_key.clone(),
        });
    }
    let issuer = Issuer::from_ca_cert_der(&ca_der.clone().into(), signer).map_err(|e| {
        IssueError::CaCert {
            path: req.ca_cert.clone(),
            reason: e.to_string(),
        }
    })?;

    let key = KeyPair::generate().map_err(|e| IssueError::Sign {
        key: req.ca_key.clone(),
        reason: format!("generating the client key: {e}"),
    })?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, &req.user);
    for g in &req.groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, g.as_str());
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now));
    params.not_after = offset(out.not_after);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| IssueError::Sign {
            key: req.ca_key.clone(),
            reason: e.to_string(),
        })?;

    if let Some(dir) = out.key.parent() {
        fs::create_dir_all(dir).map_err(|source| IssueError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // Key first, kubeconfig last: a kubeconfig never names a missing file.
    replace(&out.key, key.serialize_pem().as_bytes(), 0o600)?;
    replace(&out.cert, cert.pem().as_bytes(), 0o644)?;
    let kubeconfig = kubeconfig(req, &out);
    replace(&out.kubeconfig, kubeconfig.as_bytes(), 0o600)?;
    Ok(out)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, IssueError> {
    fs::read(path).map_err(|source| IssueError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The first CERTIFICATE block of `pem`, as DER.
fn pem_cert(pem: &str) -> Option<Vec<u8>> {
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    // Invariant: any u64 seconds count below year 9999 converts; the CA
    // and a validity in days keep us far below that.
    time::OffsetDateTime::from_unix_timestamp(secs as i64).expect("a time before year 9999")
}

/// The kubeconfig: the local API server, the CA file, and the new pair.
fn kubeconfig(req: &IssueRequest, out: &Issued) -> String {
    // JSON strings are YAML double-quoted scalars: any path is quoted safely.
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let p = |p: &Path| q(&p.display().to_string());
    let user = q(&req.user);
    format!(
        "# Written by `ha-vip credential issue`: user {user_raw}, valid until {until}.\n\
         # Renew with `ha-vip credential issue --force` before then.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kubernetes\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority: {ca}\n    \
             tls-server-name: {tls}\n\
         users:\n\
         - name: {user}\n  \
           user:\n    \
             client-certificate: {cert}\n    \
             client-key: {key}\n\
         contexts:\n\
         - name: ha-vip\n  \
           context:\n    \
             cluster: kubernetes\n    \
             user: {user}\n\
         current-context: ha-vip\n",
        user_raw = req.user,
        until = humantime::format_rfc3339_seconds(out.not_after),
        server = q(&req.server),
        ca = p(&req.server_ca),
        tls = q(&req.tls_server_name),
        cert = p(&out.cert),
        key = p(&out.key),
    )
}

/// Writes `path` with `mode` through a fresh temporary file renamed over it:
/// a reader (the running daemon) sees the old file or the new one, and a
/// link planted at the path or the temporary name is never followed.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IssueError> {
    let err = |source| IssueError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            // The umask may have narrowed the mode; never widened.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(e)
    })
}

/// The CA's private key, signing through rustls's ring provider.
struct CaKey {
    key: Arc<dyn rustls::sign::SigningKey>,
    scheme: SignatureScheme,
    algorithm: &'static SignatureAlgorithm,
    /// The subjectPublicKey bits, to match against the certificate.
    public: Vec<u8>,
}

impl CaKey {
    fn load(path: &Path) -> Result<Self, IssueError> {
        let bad = |reason: String| IssueError::CaKey {
            path: path.to_path_buf(),
            reason,
        };
        let pem = read("CA private key", path)?;
        // The parser's error names the PEM problem, never the key bytes.
        let der = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| bad(format!("no PEM private key ({e})")))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| {
            bad(format!(
                "unsupported key ({e}); expected RSA, ECDSA P-256/P-384 or Ed25519"
            ))
        })?;
        let candidates: [(SignatureScheme, &'static SignatureAlgorithm); 4] = [
            (SignatureScheme::RSA_PKCS1_SHA256, &rcgen::PKCS_RSA_SHA256),
            (
                SignatureScheme::ECDSA_NISTP256_SHA256,
                &rcgen::PKCS_ECDSA_P256_SHA256,
            ),
            (
                SignatureScheme::ECDSA_NISTP384_SHA384,
                &rcgen::PKCS_ECDSA_P384_SHA384,
            ),
            (SignatureScheme::ED25519, &rcgen::PKCS_ED25519),
        ];
        let (scheme, algorithm) = candidates
            .into_iter()
            .find(|(s, _)| key.choose_scheme(&[*s]).is_some())
            .ok_or_else(|| bad("no signature scheme for this key".into()))?;
        let spki = key
            .public_key()
            .ok_or_else(|| bad("its public key is not available".into()))?;
        let (_, spki) = SubjectPublicKeyInfo::from_der(spki.as_ref())
            .map_err(|e| bad(format!("its public key does not parse: {e}")))?;
        let public = spki.subject_public_key.data.to_vec();
        Ok(Self {
            key,
            scheme,
            algorithm,
            public,
        })
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or(rcgen::Error::RemoteKeyError)?;
        signer.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

#[cfg(test)]
mod tests;
