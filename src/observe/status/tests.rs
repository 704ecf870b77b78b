use super::reader::{ago, clock, printable, process_alive};
use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn control_characters_are_escaped() {
    assert_eq!(printable("cp1"), "cp1");
    assert_eq!(printable("ünïcode ok"), "ünïcode ok");
    assert_eq!(
        printable("a\u{1b}]0;x\u{7}b\r\nc\u{9b}d\u{202e}e"),
        "a\\u{1b}]0;x\\u{7}b\\u{d}\\u{a}c\\u{9b}d\\u{202e}e"
    );
}

#[test]
fn ago_picks_a_readable_unit() {
    let t = Timestamp::new(at(1_000_000));
    let after = |d: Duration| at(1_000_000) + d;
    assert_eq!(ago(t, after(Duration::from_millis(400))), "0.4s ago");
    assert_eq!(ago(t, after(Duration::from_secs(12))), "12s ago");
    assert_eq!(ago(t, after(Duration::from_secs(185))), "3m ago");
    assert_eq!(ago(t, after(Duration::from_secs(7500))), "2h 5m ago");
    assert_eq!(
        ago(t, after(Duration::from_secs(3 * 86400 + 4 * 3600))),
        "3d 4h ago"
    );
    assert_eq!(ago(t, at(999_000)), "just now");
}

#[test]
fn clock_is_utc_to_the_second() {
    let t = Timestamp::new(UNIX_EPOCH + Duration::from_millis(1_714_564_984_250));
    assert_eq!(clock(t), "2024-05-01 12:03:04 UTC");
    assert_eq!(t.to_string(), "2024-05-01T12:03:04.250Z");
}

#[test]
fn transition_to_the_same_role_changes_nothing() {
    let mut s = Status::new("cp1", &[], at(100));
    assert!(s.transition(Role::Follower, TransitionReason::Started, at(101)));
    let before = s.clone();
    assert!(!s.transition(Role::Follower, TransitionReason::LeaseLost, at(102)));
    assert_eq!(s, before);
}

#[test]
fn a_nonexistent_pid_is_not_alive() {
    assert!(process_alive(std::process::id()));
    assert!(!process_alive(0));
    assert!(!process_alive(u32::MAX));
}

#[test]
fn the_client_certificate_and_its_expiry_are_shown() {
    let mut s = Status::new("cp1", &[], at(1_000_000));
    assert!(!render_status(&s, at(1_000_000)).contains("client certificate"));
    s.client_certificate = Some(ClientCertificate {
        subject: "CN=ha-vip-node".into(),
        not_after: Timestamp::new(at(1_000_000 + 12 * 86_400 + 60)),
    });
    let out = render_status(&s, at(1_000_000));
    assert!(
        out.contains(
            "client certificate: CN=ha-vip-node, expires 1970-01-24 13:47:40 UTC (in 12 days)"
        ),
        "{out}"
    );
    let later = render_status(&s, at(1_000_000 + 13 * 86_400));
    assert!(later.contains("(EXPIRED)"), "{later}");
    let json = serde_json::to_string(&s).unwrap();
    let back: Status = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn the_fence_mode_and_deadline_are_in_the_file() {
    let mut s = Status::new("cp1", &[], at(1_900_000_000));
    s.set_fence(crate::config::FenceMode::Precise, Some(at(1_900_000_002)));
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(json["fence"]["mode"], "precise", "{json}");
    assert_eq!(
        json["fence"]["deadline"], "2030-03-17T17:46:42.000Z",
        "{json}"
    );
    let back: Status = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, s);
    s.set_fence(crate::config::FenceMode::Lifetime, None);
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(json["fence"], serde_json::json!({"mode": "lifetime"}));
}
