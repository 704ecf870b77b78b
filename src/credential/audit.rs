//! Files that hold the credential, checked for who else can read or replace
//! them. A warning, not an error: the daemon still works, but any local user
//! who can read the file can act as this node in the cluster, and one who can
//! write it can choose what ha-vip trusts.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Config, Credential};

/// A credential file that is open to other users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWarning {
    /// What the file is (`k8s.token_file`, `client-key of kubeconfig ...`).
    pub what: String,
    /// The file.
    pub path: PathBuf,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl fmt::Display for FileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.what, self.path.display(), self.problem)
    }
}

/// Every credential file of `cfg` (loaded from `config_path`) that group or
/// others can read or write, or that root does not own. Missing or
/// unreadable files are skipped: loading them reports those.
pub fn file_warnings(config_path: &Path, cfg: &Config) -> Vec<FileWarning> {
    if !cfg.k8s.enabled {
        return Vec::new();
    }
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    match &cfg.k8s.credential {
        Credential::Token(_) => files.push((
            "configuration with an inline k8s.token".into(),
            config_path.to_path_buf(),
        )),
        Credential::TokenFile(p) => files.push(("k8s.token_file".into(), p.clone())),
        Credential::Kubeconfig(p) => {
            files.push(("k8s.kubeconfig".into(), p.clone()));
            files.extend(kubeconfig_secrets(p));
        }
        // The kubelet owns the service account's files.
        Credential::InCluster | Credential::None => {}
    }
    files
        .into_iter()
        .filter_map(|(what, path)| {
            let problem = problem(&path)?;
            Some(FileWarning {
                what,
                path,
                problem,
            })
        })
        .collect()
}

/// Logs each of [`file_warnings`] as a WARN (at `ha-vip run`).
pub fn log_file_warnings(config_path: &Path, cfg: &Config) {
    for w in file_warnings(config_path, cfg) {
        tracing::warn!(file = %w.path.display(), "{w}");
    }
}

/// Writes each of [`file_warnings`] as a `warning:` line (for `check-config`).
pub fn write_file_warnings(
    config_path: &Path,
    cfg: &Config,
    out: &mut dyn Write,
) -> io::Result<()> {
    for w in file_warnings(config_path, cfg) {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}

/// What is wrong with `path`'s owner or mode, with the fix; `None` if nothing.
fn problem(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    let euid = nix::unistd::geteuid().as_raw();
    let shown = path.display();
    // The user the daemon runs as may own its files (root in production).
    if meta.uid() != 0 && meta.uid() != euid {
        return Some(format!(
            "is owned by uid {}, not root: that user can read the credential and replace it; fix: chown root:root {shown} && chmod 0600 {shown}",
            meta.uid()
        ));
    }
    let who = match (mode & 0o044 != 0, mode & 0o022 != 0) {
        (_, true) => "group or others can write it",
        (true, false) => "group or others can read it",
        (false, false) => return None,
    };
    Some(format!(
        "has mode {mode:04o}: {who}, and it holds the cluster credential; fix: chmod 0600 {shown}"
    ))
}

/// The files a kubeconfig names that hold secrets (client keys, token
/// files), resolved against its directory. A kubeconfig that does not parse
/// gives none: loading it reports why, and its content must not reach a log.
fn kubeconfig_secrets(kubeconfig: &Path) -> Vec<(String, PathBuf)> {
    #[derive(Deserialize)]
    struct Kc {
        #[serde(default)]
        users: Vec<Named>,
    }
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        user: Option<User>,
    }
    #[derive(Deserialize)]
    struct User {
        #[serde(rename = "client-key", default)]
        client_key: Option<PathBuf>,
        #[serde(rename = "tokenFile", default)]
        token_file: Option<PathBuf>,
    }
    let Ok(text) = std::fs::read_to_string(kubeconfig) else {
        return Vec::new();
    };
    let Ok(kc) = serde_saphyr::from_str::<Kc>(&text) else {
        return Vec::new();
    };
    let base = kubeconfig.parent().unwrap_or(Path::new("/"));
    let of = kubeconfig.display();
    kc.users
        .into_iter()
        .filter_map(|u| u.user)
        .flat_map(|u| {
            [
                u.client_key
                    .map(|p| (format!("client-key of kubeconfig {of}"), p)),
                u.token_file
                    .map(|p| (format!("tokenFile of kubeconfig {of}"), p)),
            ]
        })
        .flatten()
        .map(|(what, p)| (what, base.join(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn open_key_files_named_by_a_kubeconfig_warn() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        let token = dir.path().join("token");
        fs::write(&key, "").unwrap();
        fs::write(&token, "").unwrap();
        let kc = dir.path().join("kubeconfig");
        fs::write(
            &kc,
            "users:\n- name: a\n  user:\n    client-key: client.key\n- name: b\n  user:\n    tokenFile: token\n",
        )
        .unwrap();
        chmod(&kc, 0o600);
        chmod(&key, 0o644);
        chmod(&token, 0o660);
        let cfg = Config::parse(
            &format!(
                "interface: eth0\nvips: [10.0.0.1]\nk8s:\n  kubeconfig: {}\n",
                kc.display()
            ),
            Path::new("c.yaml"),
        )
        .unwrap();
        let got: Vec<String> = file_warnings(Path::new("c.yaml"), &cfg)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("client-key of kubeconfig")
                && got[0].contains("mode 0644: group or others can read it")
                && got[0].contains(&format!("chmod 0600 {}", key.display())),
            "{got:#?}"
        );
        assert!(
            got[1].contains("tokenFile") && got[1].contains("0660"),
            "{got:#?}"
        );

        chmod(&key, 0o600);
        chmod(&token, 0o400);
        assert_eq!(file_warnings(Path::new("c.yaml"), &cfg), vec![]);
        chmod(&kc, 0o666);
        let got = file_warnings(Path::new("c.yaml"), &cfg);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].problem.contains("can write it"), "{got:#?}");
    }

    #[test]
    fn an_unparsable_kubeconfig_gives_no_paths_and_no_content() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        fs::write(&kc, "users: [\n  token: SECRET-in-broken-yaml\n").unwrap();
        assert_eq!(kubeconfig_secrets(&kc), vec![]);
    }

    #[test]
    fn an_inline_token_makes_the_configuration_itself_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(
            &path,
            "interface: eth0\nvips: [10.0.0.1]\nk8s:\n  token: abc\n  ca_cert: /x\n",
        )
        .unwrap();
        chmod(&path, 0o640);
        let cfg = Config::load(&path).unwrap();
        let got = file_warnings(&path, &cfg);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].what.contains("inline k8s.token"), "{got:#?}");
        assert!(!got[0].to_string().contains("abc"));
        chmod(&path, 0o600);
        assert_eq!(file_warnings(&path, &cfg), vec![]);
    }

    #[test]
    fn a_file_owned_by_another_user_warns() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        fs::write(&token, "t").unwrap();
        chmod(&token, 0o600);
        nix::unistd::chown(&token, Some(nix::unistd::Uid::from_raw(4242)), None)
            .expect("giving a file away needs root (tests run as root)");
        let cfg = Config::parse(
            &format!(
                "interface: eth0\nvips: [10.0.0.1]\nk8s:\n  token_file: {}\n  ca_cert: /x\n",
                token.display()
            ),
            Path::new("c.yaml"),
        )
        .unwrap();
        let got = file_warnings(Path::new("c.yaml"), &cfg);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].problem.contains("owned by uid 4242, not root")
                && got[0].problem.contains("chown root:root"),
            "{got:#?}"
        );
    }
}
