//! Credentials that rotate: the files a credential was read from are
//! compared with what was loaded every [`CHECK_PERIOD`], and a change is
//! loaded in place, as the kubelet does with its rotated client certificate.
//!
//! Why a period and not inotify: certificates are renewed by replacing
//! files (`mv`, cert-manager's and the kubelet's `..data` symlink swap,
//! kubeadm writing a new file), which an inotify watch on the old inode
//! does not see without re-arming on every event; comparing the content of
//! three or four small files every few seconds sees every way of replacing
//! them, needs no new dependency and costs a few reads of local files.
//!
//! Every clone of a [`Credentials`] shares the same state, so the API
//! client, the health probe and the daemon's status see the same reading;
//! each HTTP client rebuilds its TLS configuration when the
//! [`Credentials::generation`] it was built for is no longer current.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::credential::Loaded;
use super::{CertInfo, KubeError};
use crate::config::K8s;

/// How often the credential's files are compared with what was loaded.
pub const CHECK_PERIOD: Duration = Duration::from_secs(5);

/// A client certificate this close to its end is warned about (daily).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The Kubernetes credential, re-read from disk when its files change.
/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Credentials {
    shared: Arc<Shared>,
}

struct Shared {
    k8s: K8s,
    state: Mutex<State>,
}

struct State {
    loaded: Loaded,
    /// Hash of the content of `loaded.files` when it was loaded.
    stamp: u64,
    /// Bumped at every reload.
    generation: u64,
    checked: Option<Instant>,
    /// The last reload error, so that it is logged once, not every period.
    last_error: Option<String>,
    warned: Option<Instant>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lock().loaded.fmt(f)
    }
}

impl Credentials {
    /// Loads the credential `k8s` names (files are read now; token files are
    /// read again before each request; the other files are watched).
    pub fn load(k8s: &K8s) -> Result<Self, KubeError> {
        let loaded = Loaded::load(k8s)?;
        let stamp = stamp(&loaded.files);
        let creds = Self {
            shared: Arc::new(Shared {
                k8s: k8s.clone(),
                state: Mutex::new(State {
                    loaded,
                    stamp,
                    generation: 0,
                    checked: Some(Instant::now()),
                    last_error: None,
                    warned: None,
                }),
            }),
        };
        creds.warn_if_expiring(SystemTime::now());
        Ok(creds)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; a poisoned one still holds
        // a complete reading.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current reading.
    pub(crate) fn current(&self) -> Loaded {
        self.lock().loaded.clone()
    }

    /// Number of reloads so far: an HTTP client built for an older
    /// generation rebuilds its TLS configuration.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Checks now what is otherwise read at each request: that a token file
    /// holds a token.
    pub fn check_token(&self) -> Result<(), KubeError> {
        self.current().token.check()
    }

    /// The bearer token to send, read now from its file if it has one.
    pub(crate) async fn token(&self) -> Result<Option<String>, KubeError> {
        let token = self.lock().loaded.token.clone();
        token.current().await
    }

    /// What the current client certificate says about itself, if there is one.
    pub fn client_certificate(&self) -> Option<CertInfo> {
        self.lock().loaded.identity.as_ref().map(|i| i.info.clone())
    }

    /// Where the credential came from, e.g. `kubeconfig /etc/kubernetes/admin.conf (user kubernetes-admin)`.
    pub fn source(&self) -> String {
        self.lock().loaded.source.clone()
    }

    /// Re-reads the credential from disk now, changed or not (SIGHUP).
    /// On error the running credential stays and the error is returned.
    pub fn reload(&self) -> Result<(), KubeError> {
        self.reload_if(true).map(|_| ())
    }

    /// At most every [`CHECK_PERIOD`]: reloads the credential if one of its
    /// files changed. Errors are logged (once per distinct error) and the
    /// running credential kept: a certificate and key replaced one after
    /// the other are a mismatch for a moment.
    pub fn refresh(&self) {
        {
            let mut st = self.lock();
            if st.checked.is_some_and(|t| t.elapsed() < CHECK_PERIOD) {
                return;
            }
            st.checked = Some(Instant::now());
        }
        match self.reload_if(false) {
            Ok(_) => self.lock().last_error = None,
            Err(e) => {
                let text = e.to_string();
                let mut st = self.lock();
                if st.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(
                        error = %text,
                        "a file of the credential changed but cannot be used; still using the loaded credential (fix the file: it is read again every {}s)",
                        CHECK_PERIOD.as_secs()
                    );
                    st.last_error = Some(text);
                }
            }
        }
        self.warn_if_expiring(SystemTime::now());
    }

    /// Reloads when `force` or when the files' content changed; true when
    /// a new reading was loaded.
    fn reload_if(&self, force: bool) -> Result<bool, KubeError> {
        let (files, old_stamp) = {
            let st = self.lock();
            (st.loaded.files.clone(), st.stamp)
        };
        if !force && stamp(&files) == old_stamp {
            return Ok(false);
        }
        let loaded = Loaded::load(&self.shared.k8s)?;
        let stamp = stamp(&loaded.files);
        let cert = loaded.identity.as_ref().map(|i| describe(&i.info));
        let mut st = self.lock();
        st.loaded = loaded;
        st.stamp = stamp;
        st.generation += 1;
        st.warned = None;
        tracing::info!(
            source = %st.loaded.source,
            client_certificate = cert.as_deref().unwrap_or("none"),
            "loaded the credential from disk; the next requests use it"
        );
        Ok(true)
    }

    /// A WARN, at most once a day, from [`EXPIRY_WARNING`] before the client
    /// certificate's end; an ERROR once it has ended.
    fn warn_if_expiring(&self, now: SystemTime) {
        let Some((info, left, source)) = self.expiry_due(now) else {
            return;
        };
        if left.is_zero() {
            tracing::error!(
                credential = %source,
                client_certificate = %describe(&info),
                "the client certificate has expired: the API server refuses it and this node cannot hold the VIP; renew it (kubeadm certs renew, or issue a new one) at the same paths, ha-vip picks it up within {}s",
                CHECK_PERIOD.as_secs()
            );
        } else {
            tracing::warn!(
                credential = %source,
                client_certificate = %describe(&info),
                days_left = left.as_secs() / 86_400,
                "the client certificate expires in {} days; renew it at the same paths before then, ha-vip picks it up within {}s",
                left.as_secs() / 86_400,
                CHECK_PERIOD.as_secs()
            );
        }
    }
}

impl Credentials {
    /// The certificate, its time left and the source when an expiry notice
    /// is due now (and records that it was given).
    fn expiry_due(&self, now: SystemTime) -> Option<(CertInfo, Duration, String)> {
        let mut st = self.lock();
        let info = st.loaded.identity.as_ref().map(|i| i.info.clone())?;
        let left = info.not_after.duration_since(now).unwrap_or(Duration::ZERO);
        let recently = st
            .warned
            .is_some_and(|t| t.elapsed() < Duration::from_secs(24 * 3600));
        if left > EXPIRY_WARNING || recently {
            return None;
        }
        st.warned = Some(Instant::now());
        Some((info, left, st.loaded.source.clone()))
    }
}

/// `CN=ha-vip-node, O=system:nodes`.
pub fn describe_subject(info: &CertInfo) -> String {
    let mut s = format!("CN={}", info.common_name.as_deref().unwrap_or(""));
    for o in &info.organizations {
        s.push_str(&format!(", O={o}"));
    }
    s
}

/// `CN=ha-vip-node (X.509 v3) valid until 2026-05-01T00:00:00Z`.
pub(crate) fn describe(info: &CertInfo) -> String {
    let s = describe_subject(info);
    format!(
        "{s} (X.509 v{}) valid until {}",
        info.version,
        humantime::format_rfc3339_seconds(info.not_after)
    )
}

/// A hash of the files' content (a read error counts as content, so a file
/// that comes back is noticed too).
fn stamp(files: &[std::path::PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::read(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Credential;

    /// A kubeconfig in `dir` with a client certificate valid until `days` from now.
    fn kubeconfig(dir: &Path, days: u64, cn: &str) -> K8s {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let end = SystemTime::now() + Duration::from_secs(days * 86_400);
        params.not_after = end.into();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("c.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("c.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
        let kc = dir.join("kc.yaml");
        std::fs::write(
            &kc,
            "current-context: x\nclusters:\n- name: c\n  cluster: {server: s, certificate-authority: ca.crt}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {client-certificate: c.crt, client-key: c.key}\n",
        )
        .unwrap();
        K8s {
            enabled: true,
            api_server: "https://127.0.0.1:6443".into(),
            credential: Credential::Kubeconfig(kc),
            ca_cert: None,
            tls_server_name: "kubernetes".into(),
            insecure_skip_tls_verify: false,
        }
    }

    #[test]
    fn expiry_is_warned_from_30_days_and_once_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::load(&kubeconfig(dir.path(), 90, "far")).unwrap();
        assert!(creds.expiry_due(SystemTime::now()).is_none());
        let creds = Credentials::load(&kubeconfig(dir.path(), 10, "near")).unwrap();
        // Load itself gave the notice; a day later it is due again.
        assert!(creds.expiry_due(SystemTime::now()).is_none());
        creds.lock().warned = None;
        let (info, left, _) = creds.expiry_due(SystemTime::now()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("near"));
        assert!(left <= Duration::from_secs(10 * 86_400));
        assert!(left > Duration::from_secs(9 * 86_400));
        assert!(creds.expiry_due(SystemTime::now()).is_none());
    }

    #[test]
    fn a_changed_file_is_loaded_and_a_broken_one_keeps_the_running_reading() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::load(&kubeconfig(dir.path(), 90, "one")).unwrap();
        assert_eq!(creds.generation(), 0);
        assert!(!creds.reload_if(false).unwrap());
        kubeconfig(dir.path(), 90, "two");
        assert!(creds.reload_if(false).unwrap());
        assert_eq!(creds.generation(), 1);
        let cn = creds.client_certificate().unwrap().common_name;
        assert_eq!(cn.as_deref(), Some("two"));
        // A key that does not match: the reload fails, "two" stays.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("c.key"), other.serialize_pem()).unwrap();
        let e = creds.reload_if(false).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        assert_eq!(creds.generation(), 1);
        let cn = creds.client_certificate().unwrap().common_name;
        assert_eq!(cn.as_deref(), Some("two"));
        // SIGHUP reloads even when nothing changed.
        kubeconfig(dir.path(), 90, "three");
        creds.reload().unwrap();
        creds.reload().unwrap();
        assert_eq!(creds.generation(), 3);
    }
}
