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
        let mut st = self.lock();
        let Some(info) = st.loaded.identity.as_ref().map(|i| i.info.clone()) else {
            return;
        };
        let left = info.not_after.duration_since(now).unwrap_or(Duration::ZERO);
        if left > EXPIRY_WARNING
            || st
                .warned
                .is_some_and(|t| t.elapsed() < Duration::from_secs(24 * 3600))
        {
            return;
        }
        st.warned = Some(Instant::now());
        let source = st.loaded.source.clone();
        drop(st);
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
