//! Fuzzing the configuration parser on stable: proptest feeds it arbitrary
//! text, YAML-flavoured noise, deep nesting and random edits of the shipped
//! example. It must never panic, and every error must name the file (then
//! line:column) so an operator can find the problem.
//!
//! Cases per property: HAVIP_FUZZ_CASES (default 256, about 1 s here).
//! Failures are saved under proptest-regressions/ and replayed first.

use std::path::Path;

use ha_vip::config::Config;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn cases() -> u32 {
    std::env::var("HAVIP_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.yaml"))
        .expect("config/config.yaml")
}

/// Parses `text`; panics (a finding) if an error does not name the file.
fn check(text: &str) {
    if let Err(e) = Config::parse(text, Path::new("fuzz.yaml")) {
        let msg = e.to_string();
        assert!(
            msg.starts_with("fuzz.yaml:") || msg.starts_with("fuzz.yaml "),
            "error without the file name: {msg:?}\ninput: {text:?}"
        );
    }
}

/// One edit of a text: insert, delete, replace a byte range, or duplicate
/// or drop a line.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    DupLine(usize),
    DropLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop_oneof![
        "[ -~]{0,8}",
        Just(": ".to_string()),
        Just("\n  ".to_string()),
        Just("- ".to_string()),
        Just("{".to_string()),
        Just("[".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!str ".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("\t".to_string()),
        Just("\u{feff}".to_string()),
        Just("---\n".to_string()),
        Just("<<: ".to_string()),
        Just("99999999999999999999".to_string()),
        Just("-1".to_string()),
        Just("0x10".to_string()),
        Just("1e400".to_string()),
        Just("~".to_string()),
    ];
    prop_oneof![
        (any::<usize>(), token).prop_map(|(p, s)| Edit::Insert(p, s)),
        (any::<usize>(), 0usize..20).prop_map(|(p, n)| Edit::Delete(p, n)),
        any::<usize>().prop_map(Edit::DupLine),
        any::<usize>().prop_map(Edit::DropLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut s = text.to_string();
    for e in edits {
        let at = |p: usize, s: &str| {
            let mut p = p % (s.len() + 1);
            while !s.is_char_boundary(p) {
                p -= 1;
            }
            p
        };
        match e {
            Edit::Insert(p, t) => {
                let p = at(*p, &s);
                s.insert_str(p, t);
            }
            Edit::Delete(p, n) => {
                let p = at(*p, &s);
                let end = at(p + n, &s).max(p);
                s.replace_range(p..end, "");
            }
            Edit::DupLine(i) | Edit::DropLine(i) => {
                let mut lines: Vec<&str> = s.split('\n').collect();
                let i = i % lines.len();
                if matches!(e, Edit::DupLine(_)) {
                    lines.insert(i, lines[i]);
                } else {
                    lines.remove(i);
                }
                s = lines.join("\n");
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Integration tests have no lib.rs beside them for proptest's default.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz_config.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn arbitrary_bytes_as_read_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_noise_never_panics(text in "[ -~\n\t]{0,300}") {
        check(&text);
    }

    #[test]
    fn edited_examples_never_panic(edits in proptest::collection::vec(edit(), 1..8)) {
        check(&apply(&example(), &edits));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash(depth in 1usize..5000, open in prop_oneof![Just("["), Just("{"), Just("- ")]) {
        let text = format!("interface: eth0\nvips: {}\n", open.repeat(depth));
        check(&text);
    }
}

/// The example itself parses (the edits above start from a valid file).
#[test]
fn the_example_parses() {
    Config::parse(&example(), Path::new("fuzz.yaml")).unwrap_or_else(|e| panic!("{e}"));
}
