//! The built `ha-vip` binary: its subcommands, messages and exit codes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ha-vip");

fn ha_vip(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .output()
        .expect("ha-vip runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/config.yaml")
        .display()
        .to_string()
}

/// A config file in a temp dir, from the minimal one plus `extra` lines.
fn temp_config(extra: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    // An interface that does not exist, metrics off and a kubeconfig that is
    // not there: `run` fails at setup instead of touching the host.
    let base = "node_name: cp1\ninterface: hvnone0\nvips: [10.0.0.100]\nmetrics:\n  enabled: false\nk8s:\n  kubeconfig: /nonexistent/admin.conf\n";
    fs::write(f.path(), format!("{base}{extra}")).expect("write config");
    f
}

#[test]
fn check_config_accepts_every_good_fixture() {
    for p in fixtures("good") {
        let p = p.display().to_string();
        let o = ha_vip(&["check-config", &p]);
        assert_eq!(code(&o), 0, "{p}: {}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(out.starts_with(&format!("OK: {p}\n")), "{out}");
        assert!(out.contains("  vips:"), "{out}");
    }
}

#[test]
fn check_config_rejects_every_bad_fixture_with_78_and_its_location() {
    let bad = fixtures("bad");
    assert!(bad.len() >= 25);
    for p in bad {
        let p = p.display().to_string();
        let o = ha_vip(&["check-config", &p]);
        let err = text(&o.stderr);
        assert_eq!(code(&o), 78, "{p}: {err}");
        assert!(o.stdout.is_empty(), "{p}: printed {}", text(&o.stdout));
        let located = err
            .strip_prefix(&format!("{p}:"))
            .and_then(|rest| rest.split(':').nth(1))
            .is_some_and(|col| col.parse::<u64>().is_ok());
        assert!(located, "{p}: not FILE:LINE:COLUMN: {err}");
    }
}

#[test]
fn the_example_config_checks_ok() {
    let o = ha_vip(&["check-config", &example()]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("OK: "));
    // Only warnings, and only about files this machine may lack.
    for line in text(&o.stderr).lines() {
        assert!(line.starts_with("warning: k8s.kubeconfig: "), "{line}");
    }
}

#[test]
fn a_missing_file_is_a_config_error_naming_the_path() {
    let o = ha_vip(&["check-config", "/nonexistent/ha-vip/config.yaml"]);
    assert_eq!(code(&o), 78);
    let err = text(&o.stderr);
    assert!(
        err.starts_with("/nonexistent/ha-vip/config.yaml: cannot read the configuration"),
        "{err}"
    );
}

#[test]
fn missing_referenced_files_warn_but_pass() {
    let f = temp_config("health:\n  ca_cert: /nonexistent/ca.crt\n");
    let o = ha_vip(&["check-config", &f.path().display().to_string()]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("warning: health.ca_cert: /nonexistent/ca.crt does not exist"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn help_lists_every_subcommand() {
    let o = ha_vip(&["--help"]);
    assert_eq!(code(&o), 0);
    let out = text(&o.stdout);
    for sub in ["run", "check-config", "status", "release", "version"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing from:\n{out}"
        );
    }
}

#[test]
fn version_prints_the_crate_version() {
    let want = format!("ha-vip {}\n", env!("CARGO_PKG_VERSION"));
    for args in [&["version"][..], &["--version"][..]] {
        let o = ha_vip(args);
        assert_eq!(code(&o), 0);
        assert_eq!(text(&o.stdout), want);
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(code(&ha_vip(&["bogus"])), 2);
    assert_eq!(code(&ha_vip(&["run", "--no-such-flag"])), 2);
    assert_eq!(code(&ha_vip(&[])), 2);
}

#[test]
fn daemon_commands_reject_a_bad_config_with_78() {
    let bad = fixtures("bad")
        .into_iter()
        .find(|p| p.ends_with("missing-vips.yaml"))
        .expect("fixture")
        .display()
        .to_string();
    for args in [
        vec!["run", "--config", &bad],
        vec!["release", "--config", &bad],
        vec!["status", "--json", "--config", &bad],
    ] {
        let o = ha_vip(&args);
        assert_eq!(code(&o), 78, "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(&format!("{bad}:1:1: vips is missing")));
    }
}

#[test]
fn run_without_its_credential_exits_1_with_the_path() {
    let cfg = temp_config("");
    let o = ha_vip(&["run", "-c", &cfg.path().display().to_string()]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("/nonexistent/admin.conf"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn status_without_a_daemon_exits_3() {
    let run_dir = tempfile::tempdir().expect("temp dir");
    let cfg = temp_config(&format!("run_dir: {}\n", run_dir.path().display()));
    let o = ha_vip(&["status", "-c", &cfg.path().display().to_string()]);
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("ha-vip is not running"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn release_names_a_missing_interface() {
    let run_dir = tempfile::tempdir().expect("temp dir");
    let cfg = temp_config(&format!("run_dir: {}\n", run_dir.path().display()));
    let o = ha_vip(&["release", "-c", &cfg.path().display().to_string()]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("hvnone0"), "{}", text(&o.stderr));
}

#[test]
fn the_configured_level_applies_and_rust_log_overrides_it() {
    let quiet = temp_config("log:\n  level: error\n");
    let path = quiet.path().display().to_string();
    let o = ha_vip(&["run", "-c", &path]);
    assert!(
        !text(&o.stderr).contains("configuration loaded"),
        "{}",
        text(&o.stderr)
    );
    let o = Command::new(BIN)
        .args(["run", "-c", &path])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("runs");
    assert!(
        text(&o.stderr).contains("configuration loaded"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn journal_stream_of_our_stderr_selects_journald_or_falls_back() {
    let cfg = temp_config("");
    let stderr = tempfile::NamedTempFile::new().expect("temp file");
    let meta = fs::metadata(stderr.path()).expect("stat");
    let o = Command::new(BIN)
        .args(["run", "-c", &cfg.path().display().to_string()])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("RUST_LOG")
        .stderr(stderr.reopen().expect("reopen"))
        .output()
        .expect("runs");
    assert_eq!(code(&o), 1);
    let err = fs::read_to_string(stderr.path()).expect("read stderr");
    if Path::new("/run/systemd/journal/socket").exists() {
        // The log line went to the journal, not to stderr.
        assert!(!err.contains("configuration loaded"), "{err}");
    } else {
        assert!(err.contains("journald is unreachable"), "{err}");
        assert!(err.contains("configuration loaded"), "{err}");
    }
}
