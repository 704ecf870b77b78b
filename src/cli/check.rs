//! `ha-vip check-config`: validate a file and say what it means.

use std::io::Write;
use std::path::Path;

use humantime::format_duration as human;

use super::CliError;
use crate::config::{Config, Credential};
use crate::health::HttpProbe;
use crate::kube::{Credentials, KubeClient, request_timeout};

/// Validates the file at `path` and the files it names: the kubeconfig is
/// parsed, certificates, keys and CA bundles are loaded, a token file must
/// hold a token. On success writes `OK: <path>` and a summary to `out`, and
/// a warning to `warn` for each named file that does not exist (yet); the
/// token itself is never written. On failure returns the located error, or
/// writes each problem with its file to `warn` (exit 78 either way).
pub fn check_config(
    path: &Path,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<(), CliError> {
    let config = Config::load(path)?;
    let problems = file_problems(&config);
    if !problems.is_empty() {
        for p in &problems {
            writeln!(warn, "{}: {p}", path.display()).map_err(CliError::Output)?;
        }
        return Err(CliError::Exit(super::exit::CONFIG));
    }
    summarize(path, &config, out).map_err(CliError::Output)?;
    crate::credential::write_file_warnings(path, &config, warn).map_err(CliError::Output)?;
    warnings(&config, warn).map_err(CliError::Output)
}

/// Loads what the daemon loads at start, as far as the files exist (a
/// missing one is only a warning: it may be installed later). Each problem
/// names the key, the file and, in a kubeconfig, the line and column.
fn file_problems(c: &Config) -> Vec<String> {
    let exists = |key: &str| {
        c.referenced_files()
            .iter()
            .filter(|(k, _)| *k == key)
            .all(|(_, p)| p.try_exists().unwrap_or(false))
    };
    let mut problems = Vec::new();
    let mut creds = None;
    let k8s_files = [
        "k8s.kubeconfig",
        "k8s.token_file",
        "k8s.in_cluster",
        "k8s.ca_cert",
    ];
    if c.k8s.enabled && k8s_files.iter().all(|k| exists(k)) {
        let key = credential_key(&c.k8s.credential);
        match Credentials::load(&c.k8s) {
            Ok(loaded) => {
                if let Err(e) = loaded.check_token() {
                    problems.push(format!("{key}: {e}"));
                }
                let timeout = request_timeout(c.lease.renew_deadline);
                match KubeClient::new(&c.k8s, loaded.clone(), timeout) {
                    Ok(_) => creds = Some(loaded),
                    Err(e) => problems.push(format!("{key}: {e}")),
                }
            }
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
    let k8s_ok = !c.k8s.enabled || creds.is_some();
    if exists("health.ca_cert") && (k8s_ok || c.health.ca_cert.is_some()) {
        if let Err(e) = HttpProbe::new(&c.health, creds.as_ref()) {
            problems.push(e.to_string());
        }
    }
    problems
}

/// The key that names the credential, for messages.
fn credential_key(c: &Credential) -> &'static str {
    match c {
        Credential::Kubeconfig(_) => "k8s.kubeconfig",
        Credential::TokenFile(_) => "k8s.token_file",
        Credential::Token(_) => "k8s.token",
        Credential::InCluster => "k8s.in_cluster",
        Credential::None => "k8s",
    }
}

fn summarize(path: &Path, c: &Config, out: &mut dyn Write) -> std::io::Result<()> {
    let vips: Vec<String> = c.vips.iter().map(ToString::to_string).collect();
    let l = &c.lease;
    let h = &c.health;
    writeln!(out, "OK: {}", path.display())?;
    writeln!(out, "  node:        {}", c.node_name)?;
    writeln!(out, "  interface:   {}", c.interface)?;
    writeln!(out, "  vips:        {}", vips.join(", "))?;
    if c.k8s.enabled {
        writeln!(
            out,
            "  lease:       {}/{}: duration {}, renew deadline {}, retry period {}",
            l.namespace,
            l.name,
            human(l.duration),
            human(l.renew_deadline),
            human(l.retry_period)
        )?;
        writeln!(out, "  fence:       {}: {}", c.fence, l.inequality(c.fence))?;
        writeln!(out, "  credential:  {}", c.k8s.credential)?;
        writeln!(
            out,
            "  api server:  {} (certificate name {})",
            c.k8s.api_server, c.k8s.tls_server_name
        )?;
        let discovery = if c.peers.discover {
            "endpoints/kubernetes"
        } else {
            "no discovery"
        };
        let listed = if c.peers.servers.is_empty() {
            "none listed".to_string()
        } else {
            c.peers.servers.join(", ")
        };
        writeln!(
            out,
            "  peers:       {listed} (+ {discovery}), for the release only"
        )?;
    } else {
        writeln!(
            out,
            "  lease:       none (k8s.enabled: false, single node: no election)"
        )?;
    }
    writeln!(
        out,
        "  health:      {} every {}, {} while holding (timeout {}, stability buffer {}, rise {}, decisive after {} refusals or a shutdown answer)",
        h.endpoint,
        human(h.interval),
        human(h.holding_interval),
        human(h.timeout),
        human(h.stability_buffer),
        human(h.rise),
        h.decisive_refusals
    )?;
    match c.metrics_listen {
        Some(a) => writeln!(out, "  metrics:     http://{a}/metrics")?,
        None => writeln!(out, "  metrics:     disabled")?,
    }
    writeln!(out, "  log level:   {}", c.log_level)?;
    Ok(())
}

fn warnings(c: &Config, warn: &mut dyn Write) -> std::io::Result<()> {
    for (key, file) in c.referenced_files() {
        match file.try_exists() {
            Ok(true) => {}
            Ok(false) => writeln!(
                warn,
                "warning: {key}: {} does not exist; ha-vip run needs it",
                file.display()
            )?,
            Err(e) => writeln!(warn, "warning: {key}: cannot check {}: {e}", file.display())?,
        }
    }
    if c.k8s.enabled && c.k8s.insecure_skip_tls_verify {
        writeln!(
            warn,
            "warning: k8s.insecure_skip_tls_verify: the API server's certificate is not verified"
        )?;
    }
    if c.health.insecure_skip_tls_verify {
        writeln!(
            warn,
            "warning: health.insecure_skip_tls_verify: the probed server's certificate is not verified"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> (Result<(), CliError>, String, String) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(yaml.as_bytes()).expect("write");
        let (mut out, mut warn) = (Vec::new(), Vec::new());
        let r = check_config(file.path(), &mut out, &mut warn);
        let s = |v: Vec<u8>| String::from_utf8(v).expect("utf-8");
        (r, s(out), s(warn))
    }

    #[test]
    fn summary_names_the_essentials_but_not_the_token() {
        let (r, out, warn) = check(
            "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100, fd00::100]\nk8s:\n  token: s3cret\n  ca_cert: /nonexistent/ca.crt\n",
        );
        assert!(r.is_ok(), "{r:?}");
        assert!(out.starts_with("OK: "), "{out}");
        for want in [
            "node:        cp1",
            "interface:   eth0",
            "10.0.0.100/32, fd00::100/128",
            "kube-system/ha-vip: duration 4s, renew deadline 2s, retry period 500ms",
            "inline token",
            "fence:       precise: duration 4s >= renew_deadline 2s + 250ms",
            "holds with 1.75s to spare",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
        assert!(!out.contains("s3cret") && !warn.contains("s3cret"));
        assert_eq!(
            warn,
            "warning: k8s.ca_cert: /nonexistent/ca.crt does not exist; ha-vip run needs it\n"
        );
    }

    #[test]
    fn existing_files_raise_no_warning() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.crt");
        let cert = rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).expect("cert");
        std::fs::write(&ca, cert.cert.pem()).expect("write");
        let token = dir.path().join("token");
        std::fs::write(&token, "abc\n").expect("write");
        // As a credential should be: no warning about who can read it.
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let (r, _, warn) = check(&format!(
            "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100]\nk8s:\n  token_file: {}\n  ca_cert: {}\n",
            token.display(),
            ca.display()
        ));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(warn, "");
    }

    #[test]
    fn the_files_it_names_are_loaded_and_each_problem_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let token = dir.path().join("token");
        std::fs::write(&token, "\n").expect("write");
        let (r, out, warn) = check(&format!(
            "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100]\nk8s:\n  token_file: {}\n  ca_cert: {}\n",
            token.display(),
            ca.display()
        ));
        assert_eq!(r.expect_err("bad").exit_code(), 78);
        assert_eq!(out, "");
        assert!(
            warn.contains(&format!(
                "k8s.token_file: failed to read token file {}: the file is empty",
                token.display()
            )),
            "{warn}"
        );
        assert!(
            warn.contains(&format!(
                "invalid CA bundle {}: no CERTIFICATE block found",
                ca.display()
            )),
            "{warn}"
        );
        // A file that is no kubeconfig at all.
        let (r, _, warn) = check(
            "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100]\nk8s:\n  kubeconfig: /etc/hosts\n",
        );
        assert_eq!(r.expect_err("bad").exit_code(), 78);
        assert!(
            warn.contains("k8s.kubeconfig: kubeconfig /etc/hosts:"),
            "{warn}"
        );
    }

    #[test]
    fn a_bad_file_writes_nothing() {
        let (r, out, warn) = check("interface: eth0\n");
        assert_eq!(r.expect_err("bad").exit_code(), 78);
        assert_eq!((out.as_str(), warn.as_str()), ("", ""));
    }
}
