//! A real etcd + kube-apiserver for one test, started by
//! tests/support/kube-apiserver.sh in a temporary directory and stopped on
//! drop.
//!
//! Never skips silently: if the harness cannot start, the test fails, unless
//! HAVIP_SKIP_APISERVER=1 is set outside CI (then it says loudly it skipped).
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ha_vip::config::{Credential, K8s};
use ha_vip::kube::{Credentials, KubeClient, Operation};

/// A running harness.
pub struct ApiServer {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    /// How long `start` took.
    pub startup: Duration,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kube-apiserver.sh")
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`kube-apiserver.sh {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl ApiServer {
    /// Starts a harness; `None` only when skipping was explicitly asked for.
    pub fn start() -> Option<Self> {
        match Self::try_start() {
            Ok(s) => Some(s),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("CI: the kube-apiserver harness must start: {e}")
            }
            Err(e) if std::env::var("HAVIP_SKIP_APISERVER").as_deref() == Ok("1") => {
                eprintln!(
                    "SKIPPED (HAVIP_SKIP_APISERVER=1): the kube-apiserver harness did not start: {e}"
                );
                None
            }
            Err(e) => panic!(
                "the kube-apiserver harness did not start: {e}\n(set HAVIP_SKIP_APISERVER=1 to skip tests that need it)"
            ),
        }
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("havip-apiserver-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let dir_s = dir.path().to_str().ok_or("non-UTF-8 temp dir")?.to_string();
        let t0 = Instant::now();
        let started = run(&["start", &dir_s]);
        let startup = t0.elapsed();
        let mut s = Self {
            dir,
            env: HashMap::new(),
            startup,
        };
        // On failure `s` drops here and stops whatever did start.
        if let Err(e) = started {
            let logs: Vec<String> = ["kube-apiserver.log", "etcd.log"]
                .iter()
                .map(|f| {
                    let text = std::fs::read_to_string(s.dir.path().join(f)).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    format!(
                        "---- tail of {f}:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            return Err(format!("{e}\n{}", logs.join("\n")));
        }
        s.reload_env()?;
        eprintln!(
            "kube-apiserver harness ready in {} ms at {}",
            startup.as_millis(),
            s.server()
        );
        Ok(s)
    }

    fn reload_env(&mut self) -> Result<(), String> {
        let text = std::fs::read_to_string(self.dir.path().join("env"))
            .map_err(|e| format!("reading env: {e}"))?;
        self.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(())
    }

    /// A value of DIR/env.
    pub fn var(&self, key: &str) -> String {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the harness env"))
            .clone()
    }

    /// The harness directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// https://127.0.0.1:PORT
    pub fn server(&self) -> String {
        self.var("KUBE_SERVER")
    }

    /// The CA of the serving certificate.
    pub fn ca(&self) -> PathBuf {
        self.var("KUBE_CA").into()
    }

    /// k8s settings for `credential`, verifying the serving cert as `kubernetes`.
    pub fn k8s(&self, credential: Credential) -> K8s {
        let ca_cert = match credential {
            Credential::Kubeconfig(_) | Credential::InCluster => None,
            _ => Some(self.ca()),
        };
        K8s {
            enabled: true,
            api_server: self.server(),
            credential,
            ca_cert,
            tls_server_name: "kubernetes".into(),
            insecure_skip_tls_verify: false,
        }
    }

    /// A client with `credential`, verifying the serving cert as `kubernetes`.
    pub fn client(&self, credential: Credential, timeout: Duration) -> KubeClient {
        let k8s = self.k8s(credential);
        KubeClient::new(&k8s, Credentials::load(&k8s).unwrap(), timeout).unwrap()
    }

    /// A client with the admin token (system:masters).
    pub fn admin(&self) -> KubeClient {
        self.client(
            Credential::Token(self.var("KUBE_ADMIN_TOKEN")),
            Duration::from_secs(5),
        )
    }

    /// Stops kube-apiserver only (etcd keeps the data).
    pub async fn stop_apiserver(&self) {
        self.script_async("stop-apiserver").await;
    }

    /// Starts kube-apiserver again on the same port.
    pub async fn start_apiserver(&self) {
        self.script_async("start-apiserver").await;
    }

    /// Starts another kube-apiserver on this harness's etcd, listening on
    /// `addr`:KUBE_PORT (a loopback address such as 127.0.0.2) with `args`
    /// appended: a second control-plane node's API server. Its serving
    /// certificate is the harness's (verify it as `kubernetes`).
    pub async fn start_peer(&self, name: &str, addr: &str, args: &[&str]) -> PeerApiServer {
        let dir = self.dir.path().to_str().expect("UTF-8 dir").to_string();
        let mut all = vec!["start-peer", dir.as_str(), name, addr];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run(&refs)
        })
        .await
        .unwrap();
        if let Err(e) = out {
            panic!("{e}");
        }
        PeerApiServer {
            dir,
            name: name.to_string(),
            server: format!("https://{addr}:{}", self.var("KUBE_PORT")),
        }
    }

    async fn script_async(&self, cmd: &str) {
        let out = tokio::process::Command::new("bash")
            .arg(script())
            .arg(cmd)
            .arg(self.dir.path())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "kube-apiserver.sh {cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates every object of a multi-document YAML file as admin (there
    /// is no kubectl): RBAC objects and namespaces.
    pub async fn apply(&self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let admin = self.admin();
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            let ns = doc["metadata"]["namespace"].as_str().map(String::from);
            let (resource, url) = match (kind.as_str(), &ns) {
                ("Role", Some(ns)) => (
                    "roles",
                    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
                ),
                ("RoleBinding", Some(ns)) => (
                    "rolebindings",
                    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
                ),
                ("ClusterRole", None) => (
                    "clusterroles",
                    "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
                ),
                ("ClusterRoleBinding", None) => (
                    "clusterrolebindings",
                    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
                ),
                ("Namespace", None) => ("namespaces", "/api/v1/namespaces".into()),
                ("CustomResourceDefinition", None) => (
                    "customresourcedefinitions.apiextensions.k8s.io",
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions".into(),
                ),
                other => panic!("apply: unsupported object {other:?}"),
            };
            let op = Operation {
                verb: "create",
                resource,
                namespace: ns.as_deref().map(Into::into),
                name: None,
            };
            let _: serde_json::Value = admin
                .post(&op, &url, &doc)
                .await
                .unwrap_or_else(|e| panic!("apply {kind}: {e}"));
            if kind == "CustomResourceDefinition" {
                self.wait_served(&doc).await;
            }
        }
    }

    /// Waits until the API server serves the resource of the CRD `crd`
    /// (it is established a moment after it is created).
    async fn wait_served(&self, crd: &serde_json::Value) {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap();
        let plural = spec["names"]["plural"].as_str().unwrap();
        let version = spec["versions"][0]["name"].as_str().unwrap();
        let url = format!("/apis/{group}/{version}/{plural}");
        let op = Operation {
            verb: "list",
            resource: "custom resources",
            namespace: None,
            name: None,
        };
        let admin = self.admin();
        let start = std::time::Instant::now();
        while admin.get::<serde_json::Value>(&op, &url).await.is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "{url} not served 20 s after its CRD was created"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// A second kube-apiserver of a harness ([`ApiServer::start_peer`]);
/// stopped when dropped.
pub struct PeerApiServer {
    dir: String,
    name: String,
    /// https://ADDRESS:PORT
    pub server: String,
}

impl PeerApiServer {
    /// Its process id (the leader of its own process group).
    pub fn pid(&self) -> i32 {
        let path = Path::new(&self.dir).join(format!("{}.pid", self.name));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .expect("pid")
    }

    /// Stops it (TERM, KILL after a grace) and waits until it is gone.
    pub fn stop(&self) {
        if let Err(e) = run(&["stop-peer", &self.dir, &self.name]) {
            eprintln!("stopping {}: {e}", self.name);
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(Path::new(&self.dir).join(format!("{}.log", self.name)))
            .unwrap_or_default()
    }
}

impl Drop for PeerApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.path().to_str()
            && let Err(e) = run(&["stop", dir])
        {
            eprintln!("stopping the harness: {e}");
        }
    }
}
