//! Benchmark profiles: a profile is a YAML fragment merged into every
//! node's configuration, its keys winning (`lease.duration` in a fragment
//! replaces the node's, `lease.name` stays). The benchmark runs the same
//! scenarios once per profile.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::node::binary;

/// One set of settings the benchmark measures.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Short name for tables.
    pub name: &'static str,
    /// What it stands for, one line.
    pub about: &'static str,
    /// YAML merged into every node's configuration.
    pub fragment: &'static str,
    /// Run instead when this ha-vip rejects `fragment` but accepts this
    /// one: for the profile that a build without `fence.mode` (before the
    /// precise fence) runs anyway, since `valid_lft` is then its only fence.
    pub without_fence_mode: Option<&'static str>,
}

/// Today's defaults with the `valid_lft` (address lifetime) fence.
pub const LIFETIME: Profile = Profile {
    name: "lifetime",
    about: "fence.mode lifetime, default timings (lease 4s, renew_deadline 2s, retry 500ms)",
    fragment: "fence:\n  mode: lifetime\n",
    without_fence_mode: Some(""),
};

/// The precise (nftables, absolute deadline) fence with the fast timings
/// of issue #14.
pub const PRECISE: Profile = Profile {
    name: "precise",
    about: "fence.mode precise, lease 2s, renew_deadline 1s, retry 250ms",
    fragment: "fence:\n  mode: precise\n\
               lease:\n  duration: 2s\n  renew_deadline: 1s\n  retry_period: 250ms\n",
    without_fence_mode: None,
};

/// Every profile, in benchmark order.
pub const ALL: [Profile; 2] = [LIFETIME, PRECISE];

/// `base` with every key of `fragment` set (mappings merged key by key,
/// anything else replaced), as YAML.
/// An empty fragment returns `base` untouched.
pub fn merge(base: &str, fragment: &str) -> Result<String, String> {
    if fragment.trim().is_empty() {
        return Ok(base.to_string());
    }
    let mut merged: Value =
        serde_saphyr::from_str(base).map_err(|e| format!("base configuration: {e}"))?;
    let patch: Value =
        serde_saphyr::from_str(fragment).map_err(|e| format!("profile fragment: {e}"))?;
    merge_value(&mut merged, patch);
    serde_saphyr::to_string(&merged).map_err(|e| format!("write merged configuration: {e}"))
}

fn merge_value(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (key, value) in patch {
                match into.get_mut(&key) {
                    Some(slot) => merge_value(slot, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Merges `fragment` into the configuration file at `path`, in place.
pub fn apply(path: &Path, fragment: &str) -> Result<(), String> {
    let base = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let merged = merge(&base, fragment)?;
    std::fs::write(path, merged).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether the ha-vip under test accepts `fragment` (`ha-vip
/// check-config` on a lab-like configuration with it merged in); the
/// error is check-config's own output.
pub fn accepted(fragment: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let token = dir.path().join("token");
    std::fs::write(&token, "profile-check-token\n").map_err(|e| format!("token: {e}"))?;
    let base = format!(
        "node_name: check\ninterface: eth0\nvips: [192.0.2.100]\nrun_dir: {run}\n\
         lease:\n  name: profile-check\n\
         k8s:\n  token_file: {token}\n  ca_cert: {ca}\n\
         announce:\n  spacing: 50ms\n  second_burst_delay: 1s\n",
        run = dir.path().display(),
        // Absent on purpose: check-config only warns about a missing file.
        ca = dir.path().join("ca.crt").display(),
        token = token.display(),
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, merge(&base, fragment)?).map_err(|e| format!("config: {e}"))?;
    let out = Command::new(binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .map_err(|e| format!("run {} check-config: {e}", binary().display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string())
    }
}

impl Profile {
    /// The fragment to run with this ha-vip: [`Profile::fragment`] if it is
    /// accepted, else [`Profile::without_fence_mode`] if that is (with a
    /// note saying so), else check-config's complaint about the fragment.
    pub fn resolve(&self) -> Result<(&'static str, Option<String>), String> {
        match accepted(self.fragment) {
            Ok(()) => Ok((self.fragment, None)),
            Err(rejected) => match self.without_fence_mode {
                Some(alt) if accepted(alt).is_ok() => Ok((
                    alt,
                    Some(format!(
                        "this ha-vip rejects `{}` ({}); it has only the valid_lft fence, so the profile runs without fence.mode",
                        self.fragment.trim().replace('\n', " "),
                        rejected.lines().next().unwrap_or("").trim()
                    )),
                )),
                _ => Err(rejected),
            },
        }
    }
}
