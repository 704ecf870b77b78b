//! Parsers for the scalar kinds every section uses: durations, URLs, names,
//! paths, socket addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::{Leaf, Resolver, TOP, at, d};
use crate::config::ConfigError;
use crate::config::file;

/// Longest duration any key accepts; longer ones are typos (`2h` for `2s`).
const MAX_DURATION: Duration = Duration::from_secs(3600);

impl Resolver<'_> {
    /// A positive duration, or `default` when the key is absent.
    pub(super) fn duration(
        &self,
        leaf: &Leaf<String>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        leaf.as_ref()
            .map_or(Ok(default), |s| self.parse_duration(s, key, false))
    }

    pub(super) fn parse_duration(
        &self,
        s: &Spanned<String>,
        key: &str,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        let v = s.value.trim();
        let parsed = humantime::parse_duration(v).map_err(|e| {
            self.err(at(s), format!("{key}: {v:?} is not a duration ({e}); expected a number with a unit, e.g. 500ms or 2s"))
        })?;
        if parsed.is_zero() && !zero_ok {
            return Err(self.err(
                at(s),
                format!("{key}: {v:?} is zero; expected a positive duration, e.g. 500ms or 2s"),
            ));
        }
        if parsed > MAX_DURATION {
            return Err(self.err(
                at(s),
                format!("{key}: {v} is over an hour; expected seconds, e.g. 2s"),
            ));
        }
        Ok(parsed)
    }

    /// An `https://host...` URL, or `default` when the key is absent.
    pub(super) fn https_url(
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
            .is_some_and(|u| u.scheme() == "https" && u.host().is_some());
        if !ok {
            return Err(self.err(
                at(s),
                format!("{key}: {v:?} is not an https URL; expected e.g. {default}"),
            ));
        }
        Ok(v.to_string())
    }

    /// A name a TLS certificate can be verified against.
    pub(super) fn server_name(
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
                at(s),
                format!("{key}: {v:?} is not a DNS name or IP address; expected e.g. kubernetes"),
            ));
        }
        Ok(v.to_string())
    }

    /// A Kubernetes object name (RFC 1123 label).
    pub(super) fn k8s_name(
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
                at(s),
                format!("{key}: {v:?} is not a valid Kubernetes name; expected lower-case letters, digits and '-', e.g. {default}"),
            ));
        }
        Ok(v.to_string())
    }

    /// An absolute path: a daemon's working directory is no place to look.
    pub(super) fn abs_path(
        &self,
        s: &Spanned<String>,
        key: &str,
        example: &str,
    ) -> Result<PathBuf, ConfigError> {
        let v = s.value.trim();
        if !v.starts_with('/') {
            return Err(self.err(
                at(s),
                format!("{key}: {v:?} is not an absolute path; expected e.g. {example}"),
            ));
        }
        Ok(PathBuf::from(v))
    }

    /// The metrics listen address, `None` when metrics are disabled. The
    /// address is checked either way, so enabling metrics later cannot
    /// surface an old typo.
    pub(super) fn metrics(&self, m: &file::Metrics) -> Result<Option<SocketAddr>, ConfigError> {
        let (text, pos) = match &m.listen {
            None => (d::METRICS_LISTEN, TOP),
            Some(s) => (s.value.trim(), at(s)),
        };
        let addr = text.parse::<SocketAddr>().map_err(|_| {
            self.err(pos, format!("metrics.listen: {text:?} is not an address; expected host:port such as 127.0.0.1:9405 or [::1]:9405"))
        })?;
        let enabled = m.enabled.as_ref().is_none_or(|s| s.value);
        Ok(enabled.then_some(addr))
    }
}

/// A duration as people write it: `2s`, `1s 500ms`.
pub(super) fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
