//! The Kubernetes credential, and the CAs and server names that let the API
//! client and the health probe verify the API server.

use super::values::fmt_d;
use super::{Pos, Resolver, TOP, at, d, pos};
use crate::config::file;
use crate::config::{ConfigError, Credential, Health, K8s};

impl Resolver<'_> {
    pub(super) fn k8s(&self, k: &file::K8s) -> Result<K8s, ConfigError> {
        let enabled = k.enabled.as_ref().is_none_or(|s| s.value);
        let api_server = self.https_url(&k.api_server, "k8s.api_server", d::K8S_API_SERVER)?;
        let credential = self.credential(k)?;
        if enabled && credential == Credential::None {
            return Err(self.err(
                TOP,
                "k8s: no credential for the Lease; expected one of k8s.kubeconfig (e.g. /etc/kubernetes/admin.conf), k8s.token_file, k8s.token or k8s.in_cluster: true (or k8s.enabled: false for a single node)",
            ));
        }
        let ca_cert = match &k.ca_cert {
            None => None,
            Some(s) => {
                if credential.carries_ca() {
                    return Err(self.err(
                        at(s),
                        format!("k8s.ca_cert: the {credential} carries its own CA; expected no k8s.ca_cert with it"),
                    ));
                }
                Some(self.abs_path(s, "k8s.ca_cert", "/etc/kubernetes/pki/ca.crt")?)
            }
        };
        let insecure_skip_tls_verify = k.insecure_skip_tls_verify.as_ref().is_some_and(|s| s.value);
        if enabled
            && !insecure_skip_tls_verify
            && ca_cert.is_none()
            && matches!(credential, Credential::Token(_) | Credential::TokenFile(_))
        {
            let pos = k.token.as_ref().or(k.token_file.as_ref()).map_or(TOP, at);
            return Err(self.err(
                pos,
                "k8s: a token needs k8s.ca_cert to verify the API server; expected e.g. ca_cert: /etc/kubernetes/pki/ca.crt",
            ));
        }
        let tls_server_name = self.server_name(
            &k.tls_server_name,
            "k8s.tls_server_name",
            d::K8S_TLS_SERVER_NAME,
        )?;
        Ok(K8s {
            enabled,
            api_server,
            credential,
            ca_cert,
            tls_server_name,
            insecure_skip_tls_verify,
        })
    }

    /// The one credential source the section names, if any.
    fn credential(&self, k: &file::K8s) -> Result<Credential, ConfigError> {
        let admin = "/etc/kubernetes/admin.conf";
        let mut sources: Vec<(Pos, &str, Credential)> = Vec::new();
        if let Some(s) = &k.kubeconfig {
            let p = self.abs_path(s, "k8s.kubeconfig", admin)?;
            sources.push((at(s), "kubeconfig", Credential::Kubeconfig(p)));
        }
        if let Some(s) = &k.token_file {
            let p = self.abs_path(s, "k8s.token_file", "/etc/ha-vip/token")?;
            sources.push((at(s), "token_file", Credential::TokenFile(p)));
        }
        if let Some(s) = &k.token {
            let token = s.value.trim();
            if token.is_empty() {
                return Err(self.err(
                    at(s),
                    "k8s.token is empty; expected a bearer token, or use token_file",
                ));
            }
            sources.push((at(s), "token", Credential::Token(token.to_string())));
        }
        if let Some(s) = k.in_cluster.as_ref().filter(|s| s.value) {
            sources.push((at(s), "in_cluster", Credential::InCluster));
        }
        if sources.len() > 1 {
            let names: Vec<&str> = sources.iter().map(|(_, n, _)| *n).collect();
            return Err(self.err(
                sources[1].0,
                format!("k8s: {} are mutually exclusive credential sources; expected exactly one of kubeconfig, token_file, token, in_cluster", names.join(" and ")),
            ));
        }
        Ok(sources.pop().map_or(Credential::None, |(_, _, c)| c))
    }

    pub(super) fn health(&self, h: &file::Health, k8s: &K8s) -> Result<Health, ConfigError> {
        let endpoint = self.https_url(&h.endpoint, "health.endpoint", d::HEALTH_ENDPOINT)?;
        let interval = self.duration(&h.interval, "health.interval", d::HEALTH_INTERVAL)?;
        let stability_buffer = self.duration(
            &h.stability_buffer,
            "health.stability_buffer",
            d::HEALTH_STABILITY_BUFFER,
        )?;
        let rise = self.duration(&h.rise, "health.rise", stability_buffer)?;
        let holding_interval = match &h.holding_interval {
            None => d::HEALTH_HOLDING_INTERVAL.min(interval),
            Some(_) => self.duration(
                &h.holding_interval,
                "health.holding_interval",
                d::HEALTH_HOLDING_INTERVAL,
            )?,
        };
        if holding_interval > interval {
            return Err(self.err(
                pos(&h.holding_interval),
                format!(
                    "health.holding_interval: {} is longer than health.interval {}; expected the holder to probe at least as often, e.g. 500ms with 2s",
                    fmt_d(holding_interval),
                    fmt_d(interval)
                ),
            ));
        }
        let decisive_refusals = match &h.decisive_refusals {
            None => d::HEALTH_DECISIVE_REFUSALS,
            Some(s) if (1..=10).contains(&s.value) => s.value,
            Some(s) => {
                return Err(self.err(
                    at(s),
                    format!(
                        "health.decisive_refusals: {} is out of range; expected 1 to 10 refused connections in a row (default {})",
                        s.value,
                        d::HEALTH_DECISIVE_REFUSALS
                    ),
                ));
            }
        };
        let timeout = match &h.timeout {
            Some(_) => self.duration(&h.timeout, "health.timeout", d::HEALTH_TIMEOUT)?,
            // The default must stay below a short interval too.
            None => d::HEALTH_TIMEOUT.min(interval / 2),
        };
        if timeout >= interval {
            return Err(self.err(
                pos(&h.timeout),
                format!(
                    "health.timeout: {} is not shorter than health.interval {}; expected a timeout below the interval, e.g. 1s with 2s",
                    fmt_d(timeout),
                    fmt_d(interval)
                ),
            ));
        }
        let ca_cert = h
            .ca_cert
            .as_ref()
            .map(|s| self.abs_path(s, "health.ca_cert", "/etc/kubernetes/pki/ca.crt"))
            .transpose()?;
        let insecure_skip_tls_verify = h.insecure_skip_tls_verify.as_ref().is_some_and(|s| s.value);
        let k8s_has_ca = k8s.ca_cert.is_some() || k8s.credential.carries_ca();
        if !insecure_skip_tls_verify && ca_cert.is_none() && !k8s_has_ca {
            return Err(self.err(
                pos(&h.endpoint),
                "health: no CA to verify the local API server; expected health.ca_cert (e.g. /etc/kubernetes/pki/ca.crt), a k8s credential that carries a CA, or health.insecure_skip_tls_verify: true",
            ));
        }
        let tls_server_name = self.server_name(
            &h.tls_server_name,
            "health.tls_server_name",
            &k8s.tls_server_name,
        )?;
        let authenticate = h
            .authenticate
            .as_ref()
            .map_or(d::HEALTH_AUTHENTICATE, |s| s.value);
        if authenticate && matches!(k8s.credential, Credential::None) {
            return Err(self.err(
                pos(&h.authenticate),
                "health.authenticate: true sends the k8s credential, but none is configured; expected a k8s credential (kubeconfig, token_file, token, in_cluster) or authenticate: false",
            ));
        }
        Ok(Health {
            authenticate,
            endpoint,
            interval,
            holding_interval,
            timeout,
            stability_buffer,
            rise,
            decisive_refusals,
            ca_cert,
            tls_server_name,
            insecure_skip_tls_verify,
        })
    }
}
