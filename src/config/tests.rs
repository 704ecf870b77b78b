use super::*;

const MINIMAL: &str = "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100]\nk8s:\n  kubeconfig: /etc/kubernetes/admin.conf\n";

fn ok(yaml: &str) -> Config {
    Config::parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn err(yaml: &str) -> String {
    match Config::parse(yaml, Path::new("t.yaml")) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal() {
    let c = ok(MINIMAL);
    assert_eq!(c.vips[0].to_string(), "10.0.0.100/32");
}

#[test]
fn minimal_gets_every_default() {
    let c = ok(MINIMAL);
    assert_eq!(c.lease.duration, defaults::LEASE_DURATION);
    assert_eq!(c.lease.renew_deadline, defaults::LEASE_RENEW_DEADLINE);
    assert_eq!(c.lease.retry_period, defaults::LEASE_RETRY_PERIOD);
    assert_eq!(c.health.endpoint, defaults::HEALTH_ENDPOINT);
    assert_eq!(c.health.timeout, defaults::HEALTH_TIMEOUT);
    assert_eq!(c.k8s.api_server, defaults::K8S_API_SERVER);
    assert_eq!(c.health.tls_server_name, defaults::K8S_TLS_SERVER_NAME);
    assert_eq!(
        c.metrics_listen.map(|a| a.to_string()).as_deref(),
        Some(defaults::METRICS_LISTEN)
    );
    assert_eq!(
        c.announce.refresh_interval,
        Some(defaults::ANNOUNCE_REFRESH_INTERVAL)
    );
    assert_eq!(c.status_file(), Path::new("/run/ha-vip/status.json"));
}

#[test]
fn an_empty_file_says_so() {
    assert!(err("").starts_with("t.yaml:1:1: the file holds no settings"));
}

#[test]
fn the_default_timeout_stays_below_a_short_interval() {
    let c = ok(&format!("{MINIMAL}health:\n  interval: 600ms\n"));
    assert_eq!(c.health.timeout, Duration::from_millis(300));
}

#[test]
fn a_token_never_shows() {
    let c = ok(
        "node_name: cp1\ninterface: eth0\nvips: [10.0.0.100]\nk8s:\n  token: s3cret\n  ca_cert: /etc/kubernetes/pki/ca.crt\n",
    );
    assert_eq!(c.k8s.credential, Credential::Token("s3cret".into()));
    for shown in [format!("{c:?}"), c.k8s.credential.to_string()] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

#[test]
fn referenced_files_name_their_keys() {
    let c = ok(&format!(
        "{MINIMAL}health:\n  ca_cert: /etc/kubernetes/pki/ca.crt\n"
    ));
    let files: Vec<(&str, String)> = c
        .referenced_files()
        .into_iter()
        .map(|(k, p)| (k, p.display().to_string()))
        .collect();
    assert_eq!(
        files,
        [
            ("k8s.kubeconfig", "/etc/kubernetes/admin.conf".to_string()),
            ("health.ca_cert", "/etc/kubernetes/pki/ca.crt".to_string()),
        ]
    );
}

#[test]
fn metrics_listen_is_checked_even_when_disabled() {
    let e = err(&format!(
        "{MINIMAL}metrics:\n  enabled: false\n  listen: nowhere\n"
    ));
    assert!(e.starts_with("t.yaml:8:11: metrics.listen"), "{e}");
}

#[test]
fn an_ipv4_mapped_vip_is_refused() {
    let e = err(&MINIMAL.replace("10.0.0.100", "\"::ffff:10.0.0.1\""));
    assert!(e.contains("cannot be a VIP"), "{e}");
}

const FAST_LEASE: &str = "lease:\n  duration: 2s\n  renew_deadline: 1s\n  retry_period: 250ms\n";

#[test]
fn the_fence_is_precise_unless_told_otherwise() {
    assert_eq!(ok(MINIMAL).fence, FenceMode::Precise);
    let c = ok(&format!("{MINIMAL}fence:\n  mode: lifetime\n"));
    assert_eq!(c.fence, FenceMode::Lifetime);
}

#[test]
fn the_fast_timings_pass_with_the_precise_fence_only() {
    let c = ok(&format!("{MINIMAL}{FAST_LEASE}"));
    assert_eq!(c.lease.renew_deadline, Duration::from_secs(1));
    let e = err(&format!("{MINIMAL}{FAST_LEASE}fence:\n  mode: lifetime\n"));
    assert!(
        e.contains("t.yaml:8:")
            && e.contains("renew_deadline")
            && e.contains("fence.mode: precise"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}lease:\n  duration: 3s\n  renew_deadline: 2s\nfence:\n  mode: lifetime\n"
    ));
    assert!(e.contains("by at least 1s 250ms"), "{e}");
}

#[test]
fn the_precise_fence_still_needs_its_margin() {
    let e = err(&format!(
        "{MINIMAL}lease:\n  duration: 2s\n  renew_deadline: 1900ms\n"
    ));
    assert!(
        e.contains("t.yaml:7:") && e.contains("by at least 250ms"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}lease:\n  renew_deadline: 900ms\n"));
    assert!(e.contains("expected at least 1s"), "{e}");
}

#[test]
fn an_unknown_fence_mode_is_located() {
    let e = err(&format!("{MINIMAL}fence:\n  mode: exact\n"));
    assert!(
        e.contains("t.yaml:7:9") && e.contains("expected precise") && e.contains("lifetime"),
        "{e}"
    );
}

#[test]
fn the_inequality_says_which_holds_and_by_how_much() {
    let c = ok(&format!("{MINIMAL}{FAST_LEASE}"));
    let s = c.lease.inequality(c.fence);
    assert!(
        s.contains("duration 2s >= renew_deadline 1s + 250ms"),
        "{s}"
    );
    assert!(s.contains("750ms to spare"), "{s}");
    let s = ok(MINIMAL).lease.inequality(FenceMode::Lifetime);
    assert!(s.contains("+ 1.25s") && s.contains("750ms to spare"), "{s}");
}

#[test]
fn health_hysteresis_defaults_and_keys() {
    let c = ok(MINIMAL);
    assert_eq!(c.health.rise, defaults::HEALTH_STABILITY_BUFFER);
    assert_eq!(
        c.health.decisive_refusals,
        defaults::HEALTH_DECISIVE_REFUSALS
    );
    let c = ok(&format!(
        "{MINIMAL}health:\n  stability_buffer: 3s\n  decisive_refusals: 3\n"
    ));
    assert_eq!(
        c.health.rise,
        Duration::from_secs(3),
        "rise follows the buffer"
    );
    assert_eq!(c.health.decisive_refusals, 3);
    let c = ok(&format!("{MINIMAL}health:\n  rise: 8s\n"));
    assert_eq!(c.health.rise, Duration::from_secs(8));
    assert_eq!(c.health.stability_buffer, defaults::HEALTH_STABILITY_BUFFER);
}

#[test]
fn health_hysteresis_errors_point_at_the_key() {
    let e = err(&format!("{MINIMAL}health:\n  decisive_refusals: 0\n"));
    assert!(
        e.starts_with("t.yaml:7:22: health.decisive_refusals: 0 is out of range; expected 1 to 10"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}health:\n  rise: 0s\n"));
    assert!(e.starts_with("t.yaml:7:9: health.rise"), "{e}");
    let e = err(&format!("{MINIMAL}health:\n  holding_interval: 3s\n"));
    assert!(
        e.starts_with("t.yaml:7:21: health.holding_interval: 3s is longer than health.interval 2s"),
        "{e}"
    );
    let c = ok(&format!("{MINIMAL}health:\n  interval: 300ms\n"));
    assert_eq!(c.health.holding_interval, Duration::from_millis(300));
    assert_eq!(
        ok(MINIMAL).health.holding_interval,
        defaults::HEALTH_HOLDING_INTERVAL
    );
    let e = err(&format!("{MINIMAL}health:\n  rise: soon\n"));
    assert!(e.starts_with("t.yaml:7:9: health.rise"), "{e}");
}

#[test]
fn peers_are_https_urls_and_never_a_vip_or_the_local_server() {
    let c = ok(MINIMAL);
    assert_eq!(
        c.peers,
        Peers {
            servers: vec![],
            discover: true
        }
    );
    let c = ok(&MINIMAL.replace(
        "k8s:\n",
        "k8s:\n  peers: [https://10.0.0.12:6443, \"https://[fd00::13]:6443/\"]\n  discover_peers: false\n",
    ));
    assert_eq!(
        c.peers.servers,
        ["https://10.0.0.12:6443", "https://[fd00::13]:6443"]
    );
    assert!(!c.peers.discover);
    let with =
        |peers: &str| err(&MINIMAL.replace("k8s:\n", &format!("k8s:\n  peers: [{peers}]\n")));
    let e = with("https://10.0.0.100:6443");
    assert!(
        e.starts_with("t.yaml:5:11: k8s.peers: \"https://10.0.0.100:6443\" is a VIP"),
        "{e}"
    );
    let e = with("http://10.0.0.12:6443");
    assert!(
        e.starts_with("t.yaml:5:11: k8s.peers: \"http://10.0.0.12:6443\" is not an https URL"),
        "{e}"
    );
    let e = with("https://10.0.0.12, https://127.0.0.1:6443");
    assert!(
        e.starts_with(
            "t.yaml:5:30: k8s.peers: \"https://127.0.0.1:6443\" is k8s.api_server itself"
        ),
        "{e}"
    );
    let e = with("https://10.0.0.12, https://10.0.0.12:443");
    assert!(e.contains("is listed twice"), "{e}");
}
