//! Table-driven checks of every fixture under `tests/fixtures/`.
//!
//! Each bad fixture states on its first line what its error must say:
//!
//! ```yaml
//! # expect: 8:13 lease.duration | whole number of seconds
//! ```
//!
//! `LINE:COLUMN` (or just `LINE` when the column carries no meaning) is where
//! the error must point, and each `|`-separated text must appear in the
//! message. Adding a case is adding one file.

use std::fs;
use std::path::{Path, PathBuf};

use std::time::Duration;

use ha_vip::config::{Config, ConfigError, Credential};

/// What a bad fixture's first line promises.
struct Expect {
    line: u64,
    column: Option<u64>,
    texts: Vec<String>,
}

fn parse_expect(path: &Path, text: &str) -> Expect {
    let first = text.lines().next().unwrap_or_default();
    let Some(rest) = first.strip_prefix("# expect: ") else {
        panic!(
            "{}: the first line must be `# expect: LINE[:COLUMN] text | text`",
            path.display()
        );
    };
    let (at, hints) = rest.split_once(' ').unwrap_or((rest, ""));
    let (line, column) = match at.split_once(':') {
        Some((l, c)) => (l, Some(c)),
        None => (at, None),
    };
    let num = |s: &str| -> u64 {
        s.parse()
            .unwrap_or_else(|_| panic!("{}: bad position {at:?}", path.display()))
    };
    let texts: Vec<String> = hints
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    assert!(
        !texts.is_empty(),
        "{}: name at least the field in the expectation",
        path.display()
    );
    Expect {
        line: num(line),
        column: column.map(num),
        texts,
    }
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Checks one bad fixture; returns what is wrong, if anything.
fn check_bad(path: &Path) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let expect = parse_expect(path, &text);
    let err = match Config::load(path) {
        Ok(_) => return Err("loaded without error".into()),
        Err(e) => e,
    };
    let msg = err.to_string();
    let ConfigError::Invalid { line, column, .. } = &err else {
        return Err(format!("not a located error: {msg}"));
    };
    let mut wrong = Vec::new();
    let prefix = format!("{}:{line}:{column}: ", path.display());
    if !msg.starts_with(&prefix) {
        wrong.push(format!("does not start with {prefix:?}"));
    }
    if *line != expect.line || expect.column.is_some_and(|c| c != *column) {
        let want = match expect.column {
            Some(c) => format!("{}:{c}", expect.line),
            None => expect.line.to_string(),
        };
        wrong.push(format!("points at {line}:{column}, expected {want}"));
    }
    for t in &expect.texts {
        if !msg.contains(t.as_str()) {
            wrong.push(format!("does not mention {t:?}"));
        }
    }
    if !msg.contains("expected") {
        wrong.push("does not say what is expected".into());
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n      got: {msg}", wrong.join("; ")))
    }
}

#[test]
fn every_bad_fixture_fails_where_it_says() {
    let files = fixtures("bad");
    assert!(
        files.len() >= 25,
        "expected at least 25 bad fixtures, found {}",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|p| check_bad(p).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} bad fixtures did not fail as promised:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_fixtures_exercise_different_errors() {
    let mut seen = std::collections::BTreeMap::new();
    for p in fixtures("bad") {
        let msg = Config::load(&p).expect_err("bad fixture").to_string();
        // Strip the location: two fixtures with the same message test the same thing.
        let what = msg.splitn(4, ':').nth(3).unwrap_or(&msg).to_string();
        if let Some(other) = seen.insert(what.clone(), p.clone()) {
            panic!(
                "{} and {} give the same error:{what}",
                other.display(),
                p.display()
            );
        }
    }
}

#[test]
fn every_good_fixture_loads() {
    let files = fixtures("good");
    assert!(files.len() >= 3, "expected a few good fixtures");
    for p in files {
        if let Err(e) = Config::load(&p) {
            panic!("{}: {e}", p.display());
        }
    }
}

fn good(name: &str) -> Config {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/good")
        .join(name);
    Config::load(&p).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn dual_stack_keeps_both_families() {
    let c = good("dual-stack.yaml");
    let vips: Vec<String> = c.vips.iter().map(ToString::to_string).collect();
    assert_eq!(vips, ["192.0.2.10/32", "2001:db8::10/128"]);
    assert_eq!(c.interface, "ens3");
}

#[test]
fn token_file_comes_with_its_ca_and_timings() {
    let c = good("token-file-ca.yaml");
    assert_eq!(
        c.k8s.credential,
        Credential::TokenFile("/etc/ha-vip/token".into())
    );
    assert_eq!(c.k8s.ca_cert, Some("/etc/kubernetes/pki/ca.crt".into()));
    assert_eq!(
        (c.lease.name.as_str(), c.lease.namespace.as_str()),
        ("api-vip", "ha-vip")
    );
    assert_eq!(
        (
            c.lease.duration,
            c.lease.renew_deadline,
            c.lease.retry_period
        ),
        (secs(6), secs(3), secs(1))
    );
    // The probe verifies with the API's CA unless told otherwise.
    assert_eq!(c.health.ca_cert, None);
}

#[test]
fn in_cluster_disables_what_it_says() {
    let c = good("in-cluster.yaml");
    assert_eq!(c.k8s.credential, Credential::InCluster);
    assert!(
        !c.node_name.is_empty(),
        "node_name defaults to the host name"
    );
    assert_eq!(c.announce.refresh_interval, None);
    assert_eq!(c.metrics_listen, None);
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.health.timeout, Duration::from_millis(500));
}

#[test]
fn single_node_mode_reads_the_legacy_vip_key() {
    let c = good("single-node.yaml");
    assert!(!c.k8s.enabled);
    assert_eq!(c.k8s.credential, Credential::None);
    assert_eq!(c.vips.len(), 1);
    assert_eq!(c.status_file(), Path::new("/run/ha-vip-test/status.json"));
}

#[test]
fn aliases_resolve() {
    let c = good("anchors.yaml");
    assert_eq!(c.announce.second_burst_delay, secs(2));
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
