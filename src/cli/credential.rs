//! `ha-vip credential issue`: a least-privilege credential in one command.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use super::CliError;
use crate::credential::{IssueRequest, RBAC_USER, issue};

/// `ha-vip credential` subcommands.
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Issue a client certificate for the user of rbac.yaml (ha-vip-node),
    /// signed by the cluster CA, and a kubeconfig for k8s.kubeconfig. Run as
    /// root on a kubeadm control-plane node; refuses to overwrite without --force.
    Issue(IssueArgs),
}

/// Options of `ha-vip credential issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// CA certificate that signs the client certificate (the API server's --client-ca-file).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/kubernetes/pki/ca.crt"
    )]
    pub ca_cert: PathBuf,
    /// Private key of that CA.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/kubernetes/pki/ca.key"
    )]
    pub ca_key: PathBuf,
    /// CA that verifies the API server's certificate. Default: --ca-cert (kubeadm uses one CA for both).
    #[arg(long, value_name = "PATH")]
    pub server_ca: Option<PathBuf>,
    /// API server written into the kubeconfig (ha-vip itself uses k8s.api_server).
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:6443")]
    pub server: String,
    /// Name the API server's certificate is verified against.
    #[arg(long, value_name = "NAME", default_value = "kubernetes")]
    pub tls_server_name: String,
    /// User (certificate CN); rbac.yaml binds ha-vip-node.
    #[arg(long, value_name = "NAME", default_value = RBAC_USER)]
    pub user: String,
    /// Group (certificate O), repeatable; e.g. ha-vip:nodes with the group binding of rbac.yaml.
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Validity in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Directory for kubeconfig, client.crt and client.key (0600).
    #[arg(long, value_name = "DIR", default_value = "/etc/ha-vip")]
    pub out_dir: PathBuf,
    /// Replace an existing kubeconfig, certificate and key.
    #[arg(long)]
    pub force: bool,
}

/// Runs `ha-vip credential SUBCOMMAND`, telling the operator on `out` what
/// was written and what to put in config.yaml.
pub fn credential(command: CredentialCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let CredentialCommand::Issue(a) = command;
    let req = IssueRequest {
        server_ca: a.server_ca.unwrap_or_else(|| a.ca_cert.clone()),
        ca_cert: a.ca_cert,
        ca_key: a.ca_key,
        server: a.server,
        tls_server_name: a.tls_server_name,
        user: a.user,
        groups: a.groups,
        valid_for: Duration::from_secs(u64::from(a.days) * 86_400),
        out_dir: a.out_dir,
        force: a.force,
    };
    let issued = issue(&req, SystemTime::now())?;
    let groups = if req.groups.is_empty() {
        String::new()
    } else {
        format!(", groups {}", req.groups.join(","))
    };
    let p = |p: &PathBuf| p.display().to_string();
    let text = format!(
        "Issued a client certificate for user {user}{groups}, signed by {ca}, valid until {until}.\n\
         Wrote {key} (0600), {cert} and {kc} (0600).\n\
         \n\
         It has no rights until the RBAC objects exist (once per cluster):\n  \
           kubectl apply -f /usr/share/doc/ha-vip/rbac.yaml\n\
         \n\
         In /etc/ha-vip/config.yaml:\n  \
           k8s:\n    \
             kubeconfig: {kc}\n\
         then: ha-vip check-config && systemctl reload-or-restart ha-vip\n\
         Renew before {until} with: ha-vip credential issue --force\n",
        user = req.user,
        ca = req.ca_cert.display(),
        until = humantime::format_rfc3339_seconds(issued.not_after),
        key = p(&issued.key),
        cert = p(&issued.cert),
        kc = p(&issued.kubeconfig),
    );
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}
