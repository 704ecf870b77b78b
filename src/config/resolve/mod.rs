//! From the file as written to a validated [`Config`], defaults applied.
//!
//! One file per concern: `syntax` (YAML and type errors), `vips` (interface
//! and addresses), `timing` (lease and announce periods and how they relate),
//! `tls` (credential, CA and server names for the API and the probe),
//! `values` (the scalar parsers every section shares).

mod peers;
mod syntax;
mod timing;
mod tls;
mod values;
mod vips;

use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use super::defaults as d;
use super::file::{self, File, Leaf};
use super::{Config, ConfigError, FenceMode};

/// Parses `text` (read from `path`) and resolves it.
pub(super) fn resolve(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let r = Resolver { path };
    if is_blank(text) {
        return Err(r.err(
            TOP,
            "the file holds no settings; expected at least interface, vips and a k8s credential, as in config/config.yaml",
        ));
    }
    let file: File = serde_saphyr::from_str(text).map_err(|e| r.syntax(text, &e))?;
    r.config(&file)
}

/// True for a file holding nothing but blank lines and comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
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

/// Where a leaf was written; the top of the file when it was not.
fn pos<T>(leaf: &Leaf<T>) -> Pos {
    leaf.as_ref().map_or(TOP, at)
}

/// Where a spanned value was written.
fn at<T>(s: &Spanned<T>) -> Pos {
    pos_of(&s.referenced)
}

/// Builds located errors for one file.
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

    fn config(&self, f: &File) -> Result<Config, ConfigError> {
        let node_name = self.node_name(&f.node_name)?;
        let interface = self.interface(&f.interface)?;
        let vips = self.vips(f)?;
        let fence = self.fence_mode(&f.fence)?;
        let lease = self.lease(&f.lease, fence)?;
        let k8s = self.k8s(&f.k8s)?;
        let peers = self.peers(&f.k8s, &k8s, &vips)?;
        let health = self.health(&f.health, &k8s)?;
        let announce = self.announce(&f.announce)?;
        let metrics_listen = self.metrics(&f.metrics)?;
        let log_level = self.log_level(&f.log.level)?;
        let run_dir = match &f.run_dir {
            None => PathBuf::from(d::RUN_DIR),
            Some(s) => self.abs_path(s, "run_dir", "/run/ha-vip")?,
        };
        let priority = f.priority.as_ref().map_or(0, |p| p.value);
        let preempt_delay = match &f.preempt_delay {
            None => None,
            Some(s) => Some(self.parse_duration(s, "preempt_delay", false)?),
        };
        let state_dir = match &f.state_dir {
            None => PathBuf::from(d::STATE_DIR),
            Some(s) => self.abs_path(s, "state_dir", "/var/lib/ha-vip")?,
        };
        Ok(Config {
            node_name,
            interface,
            vips,
            health,
            lease,
            k8s,
            peers,
            announce,
            metrics_listen,
            log_level,
            run_dir,
            fence,
            state_dir,
            priority,
            preempt_delay,
        })
    }

    fn fence_mode(&self, f: &file::Fence) -> Result<FenceMode, ConfigError> {
        let Some(s) = &f.mode else {
            return Ok(FenceMode::default());
        };
        match s.value.trim().to_ascii_lowercase().as_str() {
            "precise" => Ok(FenceMode::Precise),
            "lifetime" => Ok(FenceMode::Lifetime),
            _ => Err(self.err(
                at(s),
                format!(
                    "fence.mode: unknown mode {:?}; expected precise (an nftables deadline, fast failover) or lifetime (the VIP's kernel lifetime alone)",
                    s.value
                ),
            )),
        }
    }

    fn node_name(&self, leaf: &Leaf<String>) -> Result<String, ConfigError> {
        let Some(s) = leaf else {
            // The kubelet's default node name: the host name in lower case.
            let host = hostname().map_err(|e| {
                self.err(
                    TOP,
                    format!("node_name is not set and the host name cannot be read ({e}); expected node_name: <this node's name>"),
                )
            })?;
            let host = host.to_ascii_lowercase();
            return match dns1123_subdomain(&host) {
                Ok(()) => Ok(host),
                Err(why) => Err(self.err(
                    TOP,
                    format!("node_name is not set and the host name {host:?} is not a valid Kubernetes node name ({why}); set node_name: to this node's name as kubectl get nodes shows it"),
                )),
            };
        };
        let v = s.value.trim();
        if let Err(why) = dns1123_subdomain(v) {
            return Err(self.err(
                at(s),
                format!("node_name: {:?} is not a valid Kubernetes node name ({why}); expected the node's name as kubectl get nodes shows it, e.g. cp1", s.value),
            ));
        }
        Ok(v.to_string())
    }

    fn log_level(&self, leaf: &Leaf<String>) -> Result<String, ConfigError> {
        const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
        let Some(s) = leaf else {
            return Ok(d::LOG_LEVEL.to_string());
        };
        let v = s.value.trim().to_ascii_lowercase();
        if !LEVELS.contains(&v.as_str()) {
            return Err(self.err(
                at(s),
                format!(
                    "log.level: unknown level {:?}; expected one of {}",
                    s.value,
                    LEVELS.join(", ")
                ),
            ));
        }
        Ok(v)
    }
}

/// Kubernetes' DNS-1123 subdomain rule for node names (the Lease holder
/// identity and the events' source): at most 253 characters, dot-separated
/// labels of lower-case letters, digits and '-', each starting and ending
/// with a letter or digit.
fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err(format!("{} characters, at most 253", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "{c:?} is not allowed: only lower-case letters, digits, '-' and '.'"
        ));
    }
    for label in name.split('.') {
        let ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok(label.chars().next()) || !ok(label.chars().last()) {
            return Err("each dot-separated part must start and end with a letter or digit".into());
        }
    }
    Ok(())
}

fn hostname() -> Result<String, String> {
    let h = nix::unistd::gethostname().map_err(|e| e.to_string())?;
    h.into_string().map_err(|_| "not UTF-8".to_string())
}
