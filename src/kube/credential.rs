//! Where the Kubernetes credential comes from: kubeconfig, token, token file
//! or the pod's service account.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::KubeError;
use super::tls::ClientIdentity;
use super::yaml::yaml_error;
use crate::config::{Credential, K8s};

/// Directory of the pod's service account.
pub const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A bearer token, inline or read from a file before each request so that
/// rotated tokens (projected service account tokens) are picked up.
#[derive(Clone)]
pub(crate) enum Token {
    /// No token.
    None,
    /// Inline token.
    Static(String),
    /// Re-read before each request.
    File(PathBuf),
}

impl Token {
    /// Checks now that a token file is readable and not empty (for
    /// `check-config`; the daemon reads it before each request).
    pub(crate) fn check(&self) -> Result<(), KubeError> {
        if let Self::File(path) = self {
            let text =
                std::fs::read_to_string(path).map_err(|e| read_error("token file", path, &e))?;
            token_in(path, &text)?;
        }
        Ok(())
    }

    /// The current token, `None` when there is none.
    pub(crate) async fn current(&self) -> Result<Option<String>, KubeError> {
        match self {
            Self::None => Ok(None),
            Self::Static(t) => Ok(Some(t.clone())),
            Self::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| read_error("token file", path, &e))?;
                Ok(Some(token_in(path, &text)?.to_string()))
            }
        }
    }
}

/// One reading of the credential: CA, client certificate and token, plus a
/// description of the source for error messages, and the files it came from
/// (see [`super::Credentials`], which re-reads them when they change).
#[derive(Clone)]
pub(crate) struct Loaded {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) ca_origin: String,
    pub(crate) identity: Option<ClientIdentity>,
    pub(crate) token: Token,
    pub(crate) source: String,
    /// Files whose content this reading depends on (token files excluded:
    /// they are read before each request anyway).
    pub(crate) files: Vec<PathBuf>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material or tokens.
        f.debug_struct("Credentials")
            .field("source", &self.source)
            .field("ca_origin", &self.ca_origin)
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// Loads the credential `k8s` names (files are read now; token files are
    /// read again before each request).
    pub(crate) fn load(k8s: &K8s) -> Result<Self, KubeError> {
        let mut creds = match &k8s.credential {
            Credential::None => Self::anonymous("no credential"),
            Credential::Token(t) => Self {
                token: Token::Static(t.clone()),
                ..Self::anonymous("k8s.token")
            },
            Credential::TokenFile(p) => Self {
                token: Token::File(p.clone()),
                ..Self::anonymous(&format!("k8s.token_file {}", p.display()))
            },
            Credential::Kubeconfig(p) => load_kubeconfig(p)?,
            Credential::InCluster => load_in_cluster(Path::new(IN_CLUSTER_DIR))?,
        };
        if let Some(ca) = &k8s.ca_cert {
            creds.ca_pem = Some(read_file("CA bundle (k8s.ca_cert)", ca)?);
            creds.ca_origin = ca.display().to_string();
            creds.files.push(ca.clone());
        }
        Ok(creds)
    }

    fn anonymous(source: &str) -> Self {
        Self {
            ca_pem: None,
            ca_origin: "none".into(),
            identity: None,
            token: Token::None,
            source: source.to_string(),
            files: Vec::new(),
        }
    }
}

/// The token a token file holds: its text without surrounding whitespace,
/// which must be one word (a token never holds spaces or line breaks, and an
/// HTTP header cannot carry them). Errors never quote the file.
fn token_in<'a>(path: &Path, text: &'a str) -> Result<&'a str, KubeError> {
    let token = text.trim();
    let bad = |reason: &str| KubeError::ReadFile {
        what: "token file".into(),
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if token.is_empty() {
        return Err(bad(
            "the file is empty; expected the bearer token on one line",
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "the token holds spaces, line breaks or control characters; expected the bearer token alone on one line",
        ));
    }
    Ok(token)
}

fn read_error(what: &str, path: &Path, e: &std::io::Error) -> KubeError {
    KubeError::ReadFile {
        what: what.to_string(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, KubeError> {
    std::fs::read(path).map_err(|e| read_error(what, path, &e))
}

/// The service account's token (re-read per request) and CA in `dir`.
pub(crate) fn load_in_cluster(dir: &Path) -> Result<Loaded, KubeError> {
    let token = dir.join("token");
    let ca = dir.join("ca.crt");
    // Read once now so a missing mount fails at start, not at the first request.
    read_file("service account token", &token)?;
    Ok(Loaded {
        ca_pem: Some(read_file("service account CA", &ca)?),
        ca_origin: ca.display().to_string(),
        identity: None,
        token: Token::File(token),
        source: format!("in-cluster service account {}", dir.display()),
        files: vec![ca],
    })
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "context", alias = "user")]
    item: T,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    #[serde(default)]
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
}

/// Loads the current context of a kubeconfig. Its `server` is not used:
/// ha-vip talks to `k8s.api_server` (admin.conf points at the VIP itself).
pub(crate) fn load_kubeconfig(path: &Path) -> Result<Loaded, KubeError> {
    let bad = |reason: String| KubeError::Kubeconfig {
        path: path.to_path_buf(),
        at: String::new(),
        reason,
    };
    let mut files = vec![path.to_path_buf()];
    let bytes = read_file("kubeconfig", path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| bad("not UTF-8 text; expected a YAML kubeconfig".into()))?;
    let kc: Kubeconfig = serde_saphyr::from_str(&text).map_err(|e| {
        let (at, reason) = yaml_error(&e);
        KubeError::Kubeconfig {
            path: path.to_path_buf(),
            at,
            reason,
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("/"));
    // Relative paths in a kubeconfig are relative to the kubeconfig's directory.
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let decode = |what: &str, data: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| bad(format!("{what} is not valid base64: {e}")))
    };

    let ctx = match kc.current_context.as_str() {
        "" if kc.contexts.len() == 1 => &kc.contexts[0],
        "" => {
            return Err(bad(
                "no current-context; expected current-context: naming one of its contexts".into(),
            ));
        }
        name => kc.contexts.iter().find(|c| c.name == name).ok_or_else(|| {
            bad(format!(
                "current-context {name:?} is not among its contexts"
            ))
        })?,
    };
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.item.cluster)
        .ok_or_else(|| {
            bad(format!(
                "cluster {:?} of context {:?} not found",
                ctx.item.cluster, ctx.name
            ))
        })?;
    let user_name = ctx.item.user.as_str();
    let default_user = User::default();
    let user = if user_name.is_empty() {
        &default_user
    } else {
        &kc.users
            .iter()
            .find(|u| u.name == user_name)
            .ok_or_else(|| {
                bad(format!(
                    "user {user_name:?} of context {:?} not found",
                    ctx.name
                ))
            })?
            .item
    };
    tracing::debug!(
        kubeconfig = %path.display(),
        ignored_server = %cluster.item.server,
        "the kubeconfig's server is ignored; ha-vip talks to k8s.api_server"
    );
    if cluster.item.insecure_skip_tls_verify {
        tracing::warn!(
            kubeconfig = %path.display(),
            "the kubeconfig's insecure-skip-tls-verify is ignored; set k8s.insecure_skip_tls_verify: true to skip verification"
        );
    }

    let (ca_pem, ca_origin) = match (
        &cluster.item.certificate_authority_data,
        &cluster.item.certificate_authority,
    ) {
        (Some(data), _) => (
            Some(decode("certificate-authority-data", data)?),
            format!("certificate-authority-data of {}", path.display()),
        ),
        (None, Some(file)) => {
            let file = resolve(file);
            files.push(file.clone());
            (
                Some(read_file("kubeconfig certificate-authority", &file)?),
                file.display().to_string(),
            )
        }
        (None, None) => (None, "none".into()),
    };

    let source = format!("kubeconfig {} (user {user_name})", path.display());
    let cert = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(d), _) => Some(decode("client-certificate-data", d)?),
        (None, Some(f)) => {
            files.push(resolve(f));
            Some(read_file("kubeconfig client-certificate", &resolve(f))?)
        }
        (None, None) => None,
    };
    let key = match (&user.client_key_data, &user.client_key) {
        (Some(d), _) => Some(decode("client-key-data", d)?),
        (None, Some(f)) => {
            files.push(resolve(f));
            Some(read_file("kubeconfig client-key", &resolve(f))?)
        }
        (None, None) => None,
    };
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some(ClientIdentity::from_pem(&c, &k, &source)?),
        (None, None) => None,
        _ => {
            return Err(bad(format!(
                "user {user_name:?} has a client certificate without a key or a key without a certificate"
            )));
        }
    };
    let token = match (&user.token, &user.token_file) {
        (Some(t), _) => Token::Static(t.trim().to_string()),
        (None, Some(f)) => Token::File(resolve(f)),
        (None, None) => Token::None,
    };
    if identity.is_none() && matches!(token, Token::None) {
        return Err(bad(format!(
            "user {user_name:?} has neither a client certificate nor a token; expected client-certificate(-data)/client-key(-data), token or tokenFile"
        )));
    }
    Ok(Loaded {
        ca_pem,
        ca_origin,
        identity,
        token,
        source,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBfTCCASOgAwIBAgIUW2/jFaP7i0WZrgY7Jm4hVYpv3WEwCgYIKoZIzj0EAwIw\nFDESMBAGA1UEAwwJbG9jYWxob3N0MB4XDTI0MDEwMTAwMDAwMFoXDTM0MDEwMTAw\nMDAwMFowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0D\nAQcDQgAE3vb4gNc5Rj2wPbNThbOCP3ROwFpo4/Ahb7UXAZKaCDDoU3iEmZA4F0fH\njcdH0OZnGwGQhb1VK2hr3jpcxyr9DaNTMFEwHQYDVR0OBBYEFDwzEV7GvLC3Rc7B\n0x5aVCVqQn6uMB8GA1UdIwQYMBaAFDwzEV7GvLC3Rc7B0x5aVCVqQn6uMA8GA1Ud\nEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAJj7c9H2KJ9vX6L5g6y1h3d7\nfG0tM7yE3WQ2c1n5K9nCAiBQe2h0Yb8qg9qC8XyVQ2yWz3YxF5k9O7r4z2T3pV6T\nKQ==\n-----END CERTIFICATE-----\n";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn kubeconfig_with_relative_files_and_token_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.crt", CERT);
        write(dir.path(), "tok", "abc\n");
        let kc = write(
            dir.path(),
            "kc.yaml",
            "apiVersion: v1\nkind: Config\ncurrent-context: b\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.100:6443\n    certificate-authority: ca.crt\ncontexts:\n- name: a\n  context: {cluster: missing, user: u}\n- name: b\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user:\n    tokenFile: tok\npreferences: {}\n",
        );
        let c = load_kubeconfig(&kc).unwrap();
        assert_eq!(c.ca_pem.as_deref(), Some(CERT.as_bytes()));
        assert!(matches!(&c.token, Token::File(p) if p == &dir.path().join("tok")));
        assert!(c.source.contains("user u"), "{}", c.source);
    }

    #[test]
    fn kubeconfig_with_inline_data_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(CERT);
        let kc = write(
            dir.path(),
            "kc.yaml",
            &format!(
                "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: https://vip:6443\n    certificate-authority-data: {data}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    token: sekret\n"
            ),
        );
        let c = load_kubeconfig(&kc).unwrap();
        assert_eq!(c.ca_pem.as_deref(), Some(CERT.as_bytes()));
        assert!(matches!(&c.token, Token::Static(t) if t == "sekret"));
    }

    #[test]
    fn kubeconfig_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let kc = write(
            dir.path(),
            "kc.yaml",
            "current-context: nope\nclusters: []\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nusers: []\n",
        );
        let e = load_kubeconfig(&kc).unwrap_err().to_string();
        assert!(e.contains("current-context \"nope\""), "{e}");
        let kc = write(
            dir.path(),
            "kc2.yaml",
            "current-context: x\nclusters:\n- name: c\n  cluster: {server: s}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {}\n",
        );
        let e = load_kubeconfig(&kc).unwrap_err().to_string();
        assert!(
            e.contains("neither a client certificate nor a token"),
            "{e}"
        );
    }

    #[test]
    fn yaml_errors_quote_nothing_of_the_file() {
        use crate::kube::redact_quoted;
        let dir = tempfile::tempdir().unwrap();
        let kc = write(
            dir.path(),
            "kc.yaml",
            "current-context: x\nusers:\n- name: u\n  user:\n    token: SEKRET-ONE\n    token: SEKRET-TWO\n",
        );
        let e = load_kubeconfig(&kc).unwrap_err().to_string();
        assert!(!e.contains("SEKRET"), "{e}");
        assert!(e.contains("kc.yaml:6:5: token is set twice"), "{e}");
        let kc = write(dir.path(), "kc2.yaml", "users: []\n---\nusers: []\n");
        let e = load_kubeconfig(&kc).unwrap_err().to_string();
        assert!(e.contains("kc2.yaml:3:1: a second YAML document"), "{e}");
        assert!(!e.contains("from_str_multiple"), "{e}");
        assert_eq!(
            redact_quoted(r#"invalid type: string "SEKRET", expected x"#),
            r#"invalid type: string "<value withheld>", expected x"#
        );
    }

    #[tokio::test]
    async fn in_cluster_token_is_reread_each_time() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.crt", CERT);
        let tok = write(dir.path(), "token", "one");
        let c = load_in_cluster(dir.path()).unwrap();
        assert_eq!(c.token.current().await.unwrap().as_deref(), Some("one"));
        std::fs::write(&tok, "two\n").unwrap();
        assert_eq!(c.token.current().await.unwrap().as_deref(), Some("two"));
        let e = load_in_cluster(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("service account token"), "{e}");
    }
}
