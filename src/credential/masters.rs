//! A client certificate that makes ha-vip cluster-admin.
//!
//! kubeadm's admin.conf is the credential at hand on a control-plane node,
//! and it can do anything: a daemon running on every node with it is a
//! cluster-admin key on every node. ha-vip needs one Lease.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::kube::Credentials;

/// Groups that make a certificate cluster-admin: `system:masters` bypasses
/// RBAC altogether; kubeadm (1.29+) binds `kubeadm:cluster-admins` to
/// cluster-admin for admin.conf.
pub(super) const ADMIN_GROUPS: [&str; 2] = ["system:masters", "kubeadm:cluster-admins"];

/// The cluster-admin groups (subject O=) of the DER certificate `der`;
/// empty when none, or when it does not parse (using it reports that).
pub fn admin_groups(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    cert.subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .filter(|o| ADMIN_GROUPS.contains(o))
        .map(str::to_owned)
        .collect()
}

/// Logs a WARN naming the least-privilege alternative when the client
/// certificate of `creds` is in a cluster-admin group.
pub fn warn_if_cluster_admin(creds: &Credentials) {
    let loaded = creds.current();
    let Some(leaf) = loaded
        .identity
        .as_ref()
        .and_then(|i| i.certified.cert.first())
    else {
        return;
    };
    let groups = admin_groups(leaf);
    if groups.is_empty() {
        return;
    }
    tracing::warn!(
        credential = %creds.source(),
        groups = %groups.join(","),
        "the client certificate is in group {}: ha-vip can do anything in the cluster with it, and so can anyone who reads it on this node; ha-vip needs one Lease: run `ha-vip credential issue` (user {} of rbac.yaml), apply /usr/share/doc/ha-vip/rbac.yaml and set k8s.kubeconfig to the kubeconfig it writes",
        groups.join(" and "),
        super::RBAC_USER,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(orgs: &[&str]) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "x");
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn admin_groups_are_found_in_the_subject() {
        assert_eq!(admin_groups(&cert(&["system:masters"])), ["system:masters"]);
        assert_eq!(
            admin_groups(&cert(&["ha-vip:nodes", "kubeadm:cluster-admins"])),
            ["kubeadm:cluster-admins"]
        );
        assert!(admin_groups(&cert(&["ha-vip:nodes"])).is_empty());
        assert!(admin_groups(&cert(&[])).is_empty());
        assert!(admin_groups(b"not a certificate").is_empty());
    }
}
