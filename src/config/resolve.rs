//! From the file as written to a validated [`Config`], defaults applied.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::defaults as d;
use super::file::{File, Leaf};
use super::{Announce, Config, ConfigError, Credential, Health, K8s, Lease, Vip};

/// Parses `text` (read from `path`) and resolves it.
pub(super) fn resolve(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let r = Resolver { path };
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| r.syntax(&e))?
    };
    r.config(&file)
}

/// A place in the file: where a value was written, or the top of the file
/// when the value was left to its default.
#[derive(Clone, Copy)]
struct Pos {
    line: u64,
    column: u64,
}

const TOP: Pos = Pos { line: 1, column: 1 };

fn pos_of(loc: &Location) -> Pos {
    let (line, column) = (loc.line(), loc.column());
    if line == 0 {
        TOP
    } else {
        Pos {
            line,
            column: column.max(1),
        }
    }
}

fn pos<T>(leaf: &Leaf<T>) -> Pos {
    leaf.as_ref().map_or(TOP, |s| pos_of(&s.referenced))
}

struct Resolver<'a> {
    path: &'a Path,
}

impl Resolver<'_> {
    fn err(&self, at: Pos, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: at.line,
            column: at.column,
            message: message.into(),
        }
    }

    fn syntax(&self, e: &serde_saphyr::Error) -> ConfigError {
        let at = e.location().map_or(TOP, |l| pos_of(&l));
        // The library's own rendering carries a snippet; keep the first line.
        let text = e.without_snippet().to_string();
        let first = text.lines().next().unwrap_or("invalid YAML").trim();
        let first = strip_location_suffix(first);
        self.err(at, explain_syntax(first))
    }

    fn config(&self, f: &File) -> Result<Config, ConfigError> {
        let node_name = match &f.node_name {
            Some(s) => self.node_name(s)?,
            None => hostname().map_err(|e| {
                self.err(
                    TOP,
                    format!(
                        "node_name is not set and the host name cannot be read ({e}); set node_name"
                    ),
                )
            })?,
        };
        let interface = self.interface(&f.interface)?;
        let vips = self.vips(f)?;
        let lease = self.lease(f)?;
        let k8s = self.k8s(f)?;
        let health = self.health(f, &k8s)?;
        let announce = self.announce(f)?;
        let metrics_listen = self.metrics(f)?;
        let log_level = match &f.log.level {
            None => d::LOG_LEVEL.to_string(),
            Some(s) => {
                let v = s.value.trim().to_ascii_lowercase();
                if !["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
                    return Err(self.err(
                        pos_of(&s.referenced),
                        format!("log.level: unknown level {:?}; expected one of error, warn, info, debug, trace", s.value),
                    ));
                }
                v
            }
        };
        let run_dir = match &f.run_dir {
            None => PathBuf::from(d::RUN_DIR),
            Some(s) => self.abs_path(s, "run_dir")?,
        };
        Ok(Config {
            node_name,
            interface,
            vips,
            health,
            lease,
            k8s,
            announce,
            metrics_listen,
            log_level,
            run_dir,
        })
    }

    fn node_name(&self, s: &Spanned<String>) -> Result<String, ConfigError> {
        let v = s.value.trim();
        if v.is_empty() || v.len() > 253 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                pos_of(&s.referenced),
                format!("node_name: {:?} is not a usable holder identity; expected a node name such as cp1 (1-253 characters, no spaces)", s.value),
            ));
        }
        Ok(v.to_string())
    }

    fn interface(&self, leaf: &Leaf<String>) -> Result<String, ConfigError> {
        let Some(s) = leaf else {
            return Err(self.err(TOP, "interface is missing; expected the name of the interface that carries the VIPs, e.g. interface: eth0"));
        };
        let v = s.value.trim();
        let bad = v.is_empty()
            || v.len() > 15
            || v == "."
            || v == ".."
            || v.chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(self.err(
                pos_of(&s.referenced),
                format!("interface: {:?} is not a valid interface name; expected 1-15 characters without '/', ':' or spaces, e.g. eth0", s.value),
            ));
        }
        Ok(v.to_string())
    }

    fn vips(&self, f: &File) -> Result<Vec<Vip>, ConfigError> {
        let written: Vec<&Spanned<String>> = match (&f.vips, &f.vip) {
            (Some(_), Some(single)) => {
                return Err(self.err(
                    pos_of(&single.referenced),
                    "vip and vips are both set; expected only vips (a list)",
                ));
            }
            (Some(list), None) => list.value.iter().collect(),
            (None, Some(single)) => vec![single],
            (None, None) => {
                return Err(self.err(TOP, "vips is missing; expected a list of one or more addresses, e.g. vips: [10.0.0.100]"));
            }
        };
        if written.is_empty() {
            let at = f.vips.as_ref().map_or(TOP, |s| pos_of(&s.referenced));
            return Err(self.err(
                at,
                "vips is empty; expected one or more addresses, e.g. [10.0.0.100, fd00::100]",
            ));
        }
        let mut vips: Vec<Vip> = Vec::with_capacity(written.len());
        for s in written {
            let at = pos_of(&s.referenced);
            let vip = parse_vip(&s.value)
                .map_err(|why| self.err(at, format!("vips: {:?} {why}", s.value)))?;
            if vips.iter().any(|v| v.addr == vip.addr) {
                return Err(self.err(
                    at,
                    format!(
                        "vips: {} is listed twice; expected each address once",
                        vip.addr
                    ),
                ));
            }
            vips.push(vip);
        }
        Ok(vips)
    }

    fn lease(&self, f: &File) -> Result<Lease, ConfigError> {
        let l = &f.lease;
        let name = self.k8s_name(&l.name, "lease.name", d::LEASE_NAME)?;
        let namespace = self.k8s_name(&l.namespace, "lease.namespace", d::LEASE_NAMESPACE)?;
        let duration = self.duration(&l.duration, "lease.duration", d::LEASE_DURATION)?;
        let renew_deadline = self.duration(
            &l.renew_deadline,
            "lease.renew_deadline",
            d::LEASE_RENEW_DEADLINE,
        )?;
        let retry_period =
            self.duration(&l.retry_period, "lease.retry_period", d::LEASE_RETRY_PERIOD)?;
        if duration.subsec_nanos() != 0 {
            return Err(self.err(
                pos(&l.duration),
                format!("lease.duration: {} is not a whole number of seconds; expected e.g. 4s (the Lease stores leaseDurationSeconds)", fmt_d(duration)),
            ));
        }
        if renew_deadline < Duration::from_secs(1) {
            return Err(self.err(
                pos(&l.renew_deadline),
                format!("lease.renew_deadline: {} is too short; expected at least 1s (the kernel fence lifetime is counted in whole seconds)", fmt_d(renew_deadline)),
            ));
        }
        if retry_period.mul_f64(1.2) > renew_deadline {
            return Err(self.err(
                pos(&l.retry_period),
                format!(
                    "lease.retry_period: {} is too long for renew_deadline {}; expected renew_deadline >= 1.2 x retry_period, e.g. retry_period: 500ms",
                    fmt_d(retry_period),
                    fmt_d(renew_deadline)
                ),
            ));
        }
        if duration < renew_deadline + d::FENCE_MARGIN {
            let at = if l.duration.is_some() {
                pos(&l.duration)
            } else {
                pos(&l.renew_deadline)
            };
            return Err(self.err(
                at,
                format!(
                    "lease.duration: {} must exceed lease.renew_deadline {} by at least {}: a frozen holder keeps the VIP until its renew deadline plus the kernel's deletion latency, and a standby takes over after the lease duration; expected e.g. duration: 4s with renew_deadline: 2s",
                    fmt_d(duration),
                    fmt_d(renew_deadline),
                    fmt_d(d::FENCE_MARGIN)
                ),
            ));
        }
        Ok(Lease {
            name,
            namespace,
            duration,
            renew_deadline,
            retry_period,
        })
    }

    fn k8s(&self, f: &File) -> Result<K8s, ConfigError> {
        let k = &f.k8s;
        let enabled = k.enabled.as_ref().is_none_or(|s| s.value);
        let api_server = self.https_url(&k.api_server, "k8s.api_server", d::K8S_API_SERVER)?;
        let mut sources: Vec<(Pos, &str, Credential)> = Vec::new();
        if let Some(s) = &k.kubeconfig {
            sources.push((
                pos_of(&s.referenced),
                "kubeconfig",
                Credential::Kubeconfig(self.abs_path(s, "k8s.kubeconfig")?),
            ));
        }
        if let Some(s) = &k.token_file {
            sources.push((
                pos_of(&s.referenced),
                "token_file",
                Credential::TokenFile(self.abs_path(s, "k8s.token_file")?),
            ));
        }
        if let Some(s) = &k.token {
            if s.value.trim().is_empty() {
                return Err(self.err(
                    pos_of(&s.referenced),
                    "k8s.token is empty; expected a bearer token, or use token_file",
                ));
            }
            sources.push((
                pos_of(&s.referenced),
                "token",
                Credential::Token(s.value.trim().to_string()),
            ));
        }
        if let Some(s) = k.in_cluster.as_ref().filter(|s| s.value) {
            sources.push((pos_of(&s.referenced), "in_cluster", Credential::InCluster));
        }
        if sources.len() > 1 {
            let names: Vec<&str> = sources.iter().map(|(_, n, _)| *n).collect();
            return Err(self.err(
                sources[1].0,
                format!("k8s: {} are mutually exclusive credential sources; expected exactly one of kubeconfig, token_file, token, in_cluster", names.join(" and ")),
            ));
        }
        let credential = sources.pop().map_or(Credential::None, |(_, _, c)| c);
        if enabled && credential == Credential::None {
            return Err(self.err(
                TOP,
                "k8s: no credential for the Lease; expected one of k8s.kubeconfig (e.g. /etc/kubernetes/admin.conf), k8s.token_file, k8s.token or k8s.in_cluster: true (or k8s.enabled: false for a single node)",
            ));
        }
        let ca_cert = match &k.ca_cert {
            None => None,
            Some(s) => {
                if matches!(
                    credential,
                    Credential::Kubeconfig(_) | Credential::InCluster
                ) {
                    return Err(self.err(
                        pos_of(&s.referenced),
                        "k8s.ca_cert: the kubeconfig or in-cluster service account carries its own CA; expected no k8s.ca_cert with them",
                    ));
                }
                Some(self.abs_path(s, "k8s.ca_cert")?)
            }
        };
        let insecure_skip_tls_verify = k.insecure_skip_tls_verify.as_ref().is_some_and(|s| s.value);
        if enabled
            && !insecure_skip_tls_verify
            && ca_cert.is_none()
            && matches!(credential, Credential::Token(_) | Credential::TokenFile(_))
        {
            let at = k
                .token
                .as_ref()
                .or(k.token_file.as_ref())
                .map_or(TOP, |s| pos_of(&s.referenced));
            return Err(self.err(
                at,
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

    fn health(&self, f: &File, k8s: &K8s) -> Result<Health, ConfigError> {
        let h = &f.health;
        let endpoint = self.https_url(&h.endpoint, "health.endpoint", d::HEALTH_ENDPOINT)?;
        let interval = self.duration(&h.interval, "health.interval", d::HEALTH_INTERVAL)?;
        let stability_buffer = self.duration(
            &h.stability_buffer,
            "health.stability_buffer",
            d::HEALTH_STABILITY_BUFFER,
        )?;
        let timeout = match &h.timeout {
            Some(_) => self.duration(&h.timeout, "health.timeout", d::HEALTH_TIMEOUT)?,
            // The default must stay below a short interval too.
            None => d::HEALTH_TIMEOUT.min(interval / 2),
        };
        if timeout >= interval {
            return Err(self.err(
                pos(&h.timeout),
                format!("health.timeout: {} is not shorter than health.interval {}; expected a timeout below the interval, e.g. 1s with 2s", fmt_d(timeout), fmt_d(interval)),
            ));
        }
        let ca_cert = h
            .ca_cert
            .as_ref()
            .map(|s| self.abs_path(s, "health.ca_cert"))
            .transpose()?;
        let insecure_skip_tls_verify = h.insecure_skip_tls_verify.as_ref().is_some_and(|s| s.value);
        let k8s_has_ca = k8s.ca_cert.is_some()
            || matches!(
                k8s.credential,
                Credential::Kubeconfig(_) | Credential::InCluster
            );
        if endpoint.starts_with("https://")
            && !insecure_skip_tls_verify
            && ca_cert.is_none()
            && !k8s_has_ca
        {
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
        Ok(Health {
            endpoint,
            interval,
            timeout,
            stability_buffer,
            ca_cert,
            tls_server_name,
            insecure_skip_tls_verify,
        })
    }

    fn announce(&self, f: &File) -> Result<Announce, ConfigError> {
        let a = &f.announce;
        let count = match &a.count {
            None => d::ANNOUNCE_COUNT,
            Some(s) if (1..=20).contains(&s.value) => s.value,
            Some(s) => {
                return Err(self.err(
                    pos_of(&s.referenced),
                    format!(
                        "announce.count: {} is out of range; expected 1 to 20 packets per burst",
                        s.value
                    ),
                ));
            }
        };
        let spacing = self.duration(&a.spacing, "announce.spacing", d::ANNOUNCE_SPACING)?;
        if spacing > Duration::from_secs(5) {
            return Err(self.err(pos(&a.spacing), format!("announce.spacing: {} is too long; expected at most 5s between packets of one burst", fmt_d(spacing))));
        }
        let second_burst_delay = self.duration(
            &a.second_burst_delay,
            "announce.second_burst_delay",
            d::ANNOUNCE_SECOND_BURST_DELAY,
        )?;
        let burst = spacing * count;
        if second_burst_delay <= burst {
            return Err(self.err(
                pos(&a.second_burst_delay),
                format!("announce.second_burst_delay: {} does not come after the first burst ({} x {}); expected a longer delay, e.g. 2s", fmt_d(second_burst_delay), count, fmt_d(spacing)),
            ));
        }
        let refresh = match &a.refresh_interval {
            None => d::ANNOUNCE_REFRESH_INTERVAL,
            Some(s) => self.parse_duration(s, "announce.refresh_interval", true)?,
        };
        let refresh_interval = (!refresh.is_zero()).then_some(refresh);
        Ok(Announce {
            count,
            spacing,
            second_burst_delay,
            refresh_interval,
        })
    }

    fn metrics(&self, f: &File) -> Result<Option<SocketAddr>, ConfigError> {
        let m = &f.metrics;
        if m.enabled.as_ref().is_some_and(|s| !s.value) {
            return Ok(None);
        }
        let (text, at) = match &m.listen {
            None => (d::METRICS_LISTEN, TOP),
            Some(s) => (s.value.trim(), pos_of(&s.referenced)),
        };
        text.parse::<SocketAddr>().map(Some).map_err(|_| {
            self.err(at, format!("metrics.listen: {text:?} is not an address; expected host:port such as 127.0.0.1:9405 or [::1]:9405"))
        })
    }

    fn duration(
        &self,
        leaf: &Leaf<String>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        leaf.as_ref()
            .map_or(Ok(default), |s| self.parse_duration(s, key, false))
    }

    fn parse_duration(
        &self,
        s: &Spanned<String>,
        key: &str,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        let at = pos_of(&s.referenced);
        let v = s.value.trim();
        let parsed = humantime::parse_duration(v).map_err(|e| {
            self.err(at, format!("{key}: {v:?} is not a duration ({e}); expected a number with a unit, e.g. 500ms or 2s"))
        })?;
        if parsed.is_zero() && !zero_ok {
            return Err(self.err(
                at,
                format!("{key}: must be positive; expected e.g. 500ms or 2s"),
            ));
        }
        if parsed > Duration::from_secs(3600) {
            return Err(self.err(
                at,
                format!("{key}: {v} is over an hour; expected seconds, e.g. 2s"),
            ));
        }
        Ok(parsed)
    }

    fn https_url(
        &self,
        leaf: &Leaf<String>,
        key: &str,
        default: &str,
    ) -> Result<String, ConfigError> {
        let Some(s) = leaf else {
            return Ok(default.to_string());
        };
        let v = s.value.trim();
        let ok = reqwest::Url::parse(v)
            .ok()
            .filter(|u| u.scheme() == "https" && u.host().is_some());
        match ok {
            Some(_) => Ok(v.to_string()),
            None => Err(self.err(
                pos_of(&s.referenced),
                format!("{key}: {v:?} is not an https URL; expected e.g. {default}"),
            )),
        }
    }

    fn server_name(
        &self,
        leaf: &Leaf<String>,
        key: &str,
        default: &str,
    ) -> Result<String, ConfigError> {
        let Some(s) = leaf else {
            return Ok(default.to_string());
        };
        let v = s.value.trim();
        if rustls_pki_types::ServerName::try_from(v).is_err() {
            return Err(self.err(
                pos_of(&s.referenced),
                format!("{key}: {v:?} is not a DNS name or IP address; expected e.g. kubernetes"),
            ));
        }
        Ok(v.to_string())
    }

    fn k8s_name(
        &self,
        leaf: &Leaf<String>,
        key: &str,
        default: &str,
    ) -> Result<String, ConfigError> {
        let Some(s) = leaf else {
            return Ok(default.to_string());
        };
        let v = s.value.trim();
        let valid = !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !v.starts_with('-')
            && !v.ends_with('-');
        if !valid {
            return Err(self.err(
                pos_of(&s.referenced),
                format!("{key}: {v:?} is not a valid Kubernetes name; expected lower-case letters, digits and '-', e.g. {default}"),
            ));
        }
        Ok(v.to_string())
    }

    fn abs_path(&self, s: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let v = s.value.trim();
        if !v.starts_with('/') {
            return Err(self.err(
                pos_of(&s.referenced),
                format!(
                    "{key}: {v:?} is not an absolute path; expected e.g. /etc/kubernetes/admin.conf"
                ),
            ));
        }
        Ok(PathBuf::from(v))
    }
}

/// Parses `10.0.0.100`, `10.0.0.100/32` or `fd00::100/128`.
fn parse_vip(text: &str) -> Result<Vip, String> {
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| {
        "is not an IP address; expected e.g. 10.0.0.100, 10.0.0.100/32 or fd00::100".to_string()
    })?;
    let max = if addr.is_ipv4() {
        d::IPV4_PREFIX
    } else {
        d::IPV6_PREFIX
    };
    let prefix_len = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(format!(
                    "has an invalid prefix length; expected 1 to {max}, usually /{max}"
                ));
            }
        },
    };
    let unusable = match addr {
        IpAddr::V4(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_link_local()
        }
        IpAddr::V6(a) => {
            a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_unicast_link_local()
        }
    };
    if unusable {
        return Err(
            "cannot be a VIP; expected a unicast address that is not loopback or link-local"
                .to_string(),
        );
    }
    Ok(Vip { addr, prefix_len })
}

fn hostname() -> Result<String, String> {
    let h = nix::unistd::gethostname().map_err(|e| e.to_string())?;
    h.into_string().map_err(|_| "not UTF-8".to_string())
}

fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// serde-saphyr appends " at line X column Y"; the location goes first here.
fn strip_location_suffix(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// Turns serde's terse messages into ones that say what is expected.
fn explain_syntax(msg: &str) -> String {
    if msg.contains("unknown field") {
        format!("{msg}; check the spelling against config/config.yaml")
    } else if msg.contains("invalid type") {
        format!("{msg}; check the value's type against config/config.yaml")
    } else {
        msg.to_string()
    }
}
