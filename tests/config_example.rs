//! `config/config.yaml` and the README document every key and its real default.

use std::fs;
use std::path::Path;

use ha_vip::config::Config;

fn repo_file(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const SECTIONS: [&str; 8] = [
    "", "health", "lease", "k8s", "announce", "metrics", "log", "fence",
];

/// The keys the parser accepts in `section` ("" for the top level), read
/// from its own unknown-field error so no key can be added unseen.
fn keys(section: &str) -> Vec<String> {
    let probe = if section.is_empty() {
        "zz_probe: 1\n".to_string()
    } else {
        format!("{section}:\n  zz_probe: 1\n")
    };
    let err = Config::parse(&probe, Path::new("probe.yaml"))
        .expect_err("unknown key")
        .to_string();
    let list = err
        .split("expected one of ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no key list in: {err}"));
    list.split(',')
        .map(|k| k.trim().trim_matches('`').to_string())
        .collect()
}

#[test]
fn the_example_states_the_real_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.yaml");
    let example = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    // The same file with only what it must say: everything else defaulted.
    let minimal = Config::parse(
        "interface: eth0\nvips: [10.0.0.100]\nk8s:\n  kubeconfig: /etc/ha-vip/kubeconfig\n",
        Path::new("minimal.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(example, minimal);
}

#[test]
fn every_key_is_in_the_example_and_the_readme() {
    let example = repo_file("config/config.yaml");
    let readme = repo_file("README.md");
    let mut missing = Vec::new();
    for section in SECTIONS {
        let ks = keys(section);
        assert!(!ks.is_empty(), "{section}: no keys");
        for k in ks.into_iter().filter(|k| !SECTIONS.contains(&k.as_str())) {
            let written = example.lines().any(|l| {
                let l = l.trim_start().trim_start_matches("# ").trim_start();
                l.starts_with(&format!("{k}:"))
            });
            if !written {
                missing.push(format!("config/config.yaml lacks {section}.{k}"));
            }
            let dotted = if section.is_empty() {
                format!("`{k}`")
            } else {
                format!("`{section}.{k}`")
            };
            if !readme.contains(&dotted) {
                missing.push(format!("README.md lacks {dotted}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
