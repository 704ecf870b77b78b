//! The metrics endpoint over real TCP: scrape, parse the exposition with an
//! independent OpenMetrics parser, check values follow the daemon's calls,
//! and check misbehaving clients get bounded treatment.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ha_vip::config::Vip;
use ha_vip::observe::{
    AnnounceFamily, LeaseOp, Metrics, MetricsError, MetricsServer, Role, TransitionReason,
};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn vip(s: &str) -> Vip {
    let (addr, len) = s.split_once('/').unwrap();
    Vip {
        addr: addr.parse().unwrap(),
        prefix_len: len.parse().unwrap(),
    }
}

async fn start(metrics: &Metrics) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let server = MetricsServer::bind(SocketAddr::from_str("127.0.0.1:0").unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();
    (addr, tokio::spawn(server.run(metrics.clone())))
}

/// Sends `request` raw and returns the whole response (the server closes).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("server did not answer within 10 s")
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// GET /metrics; checks the status and content type; parses the body.
async fn scrape(addr: SocketAddr) -> Exposition {
    let resp = raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n",
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").expect("no header end");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    openmetrics_parser::openmetrics::parse_openmetrics(body)
        .unwrap_or_else(|e| panic!("invalid OpenMetrics exposition: {e:?}\n{body}"))
}

/// The value of the one sample of `family` whose labels include `labels`
/// (a histogram's value is its count).
fn value(exp: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let fam = exp
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}; have {:?}", exp.families.keys()));
    let matching: Vec<_> = fam
        .iter_samples()
        .filter(|s| {
            let set = s.get_labelset().unwrap();
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .collect();
    assert_eq!(matching.len(), 1, "{family}{labels:?}: {matching:?}");
    match &matching[0].value {
        OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
        OpenMetricsValue::Counter(c) => c.value.as_f64(),
        OpenMetricsValue::Histogram(h) => h.count.unwrap() as f64,
        OpenMetricsValue::Info => 1.0,
        other => panic!("unexpected value {other:?}"),
    }
}

fn family_type(exp: &Exposition, family: &str) -> OpenMetricsType {
    exp.families[family].family_type
}

#[tokio::test]
async fn scraped_values_follow_the_daemon() {
    let v4 = vip("10.0.0.100/32");
    let v6 = vip("fd00::100/128");
    let metrics = Metrics::new(&[v4, v6]);
    let (addr, server) = start(&metrics).await;

    let exp = scrape(addr).await;
    assert_eq!(
        family_type(&exp, "ha_vip_is_leader"),
        OpenMetricsType::Gauge
    );
    assert!(
        !exp.families.contains_key("ha_vip_transitions"),
        "no transition yet, so no series"
    );
    assert_eq!(
        family_type(&exp, "ha_vip_probe_duration_seconds"),
        OpenMetricsType::Histogram
    );
    assert_eq!(family_type(&exp, "ha_vip_build"), OpenMetricsType::Info);
    assert_eq!(value(&exp, "ha_vip_is_leader", &[]), 0.0);
    assert_eq!(value(&exp, "ha_vip_healthy", &[]), 0.0);
    assert_eq!(
        value(&exp, "ha_vip_vip_present", &[("vip", "10.0.0.100/32")]),
        0.0
    );
    assert_eq!(
        value(&exp, "ha_vip_vip_present", &[("vip", "fd00::100/128")]),
        0.0
    );
    for op in ["get", "create", "update", "watch"] {
        let fam = "ha_vip_lease_request_duration_seconds";
        assert_eq!(value(&exp, fam, &[("op", op)]), 0.0);
    }
    for family in ["ipv4_garp", "ipv6_na"] {
        let fam = "ha_vip_announcements_sent";
        assert_eq!(value(&exp, fam, &[("family", family)]), 0.0);
    }
    assert_eq!(value(&exp, "ha_vip_renew_failures", &[]), 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(value(&exp, "ha_vip_build", &[("version", version)]), 1.0);

    metrics.set_healthy(true);
    metrics.record_transition(Role::Starting, Role::Follower, TransitionReason::Started);
    metrics.record_transition(
        Role::Follower,
        Role::Leader,
        TransitionReason::AcquiredLease,
    );
    metrics.set_vip_present(&v4, true);
    metrics.observe_probe(Duration::from_millis(30), true);
    metrics.observe_probe(Duration::from_millis(1500), false);
    metrics.observe_lease_request(LeaseOp::Update, Duration::from_millis(12));
    metrics.observe_lease_request(LeaseOp::Update, Duration::from_millis(8));
    metrics.renew_failed();
    metrics.add_announcements(AnnounceFamily::Ipv4Garp, 3);
    // An announcer holding the shared counter counts without going through Metrics.
    let na = metrics.announcement_counter(AnnounceFamily::Ipv6Na);
    na.fetch_add(2, Ordering::Relaxed);

    let exp = scrape(addr).await;
    assert_eq!(value(&exp, "ha_vip_is_leader", &[]), 1.0);
    assert_eq!(value(&exp, "ha_vip_healthy", &[]), 1.0);
    assert_eq!(
        value(&exp, "ha_vip_vip_present", &[("vip", "10.0.0.100/32")]),
        1.0
    );
    assert_eq!(
        value(&exp, "ha_vip_vip_present", &[("vip", "fd00::100/128")]),
        0.0
    );
    let t = "ha_vip_transitions";
    assert_eq!(family_type(&exp, t), OpenMetricsType::Counter);
    assert_eq!(
        family_type(&exp, "ha_vip_announcements_sent"),
        OpenMetricsType::Counter
    );
    let acquired = [
        ("from", "follower"),
        ("to", "leader"),
        ("reason", "acquired_lease"),
    ];
    assert_eq!(value(&exp, t, &acquired), 1.0);
    let started = [
        ("from", "starting"),
        ("to", "follower"),
        ("reason", "started"),
    ];
    assert_eq!(value(&exp, t, &started), 1.0);
    assert_eq!(value(&exp, "ha_vip_probe_duration_seconds", &[]), 2.0);
    assert_eq!(value(&exp, "ha_vip_probes", &[("result", "ok")]), 1.0);
    assert_eq!(value(&exp, "ha_vip_probes", &[("result", "fail")]), 1.0);
    let lease = "ha_vip_lease_request_duration_seconds";
    assert_eq!(value(&exp, lease, &[("op", "update")]), 2.0);
    assert_eq!(value(&exp, lease, &[("op", "get")]), 0.0);
    assert_eq!(value(&exp, "ha_vip_renew_failures", &[]), 1.0);
    let ann = "ha_vip_announcements_sent";
    assert_eq!(value(&exp, ann, &[("family", "ipv4_garp")]), 3.0);
    assert_eq!(value(&exp, ann, &[("family", "ipv6_na")]), 2.0);

    // The histogram's buckets place the samples: 30 ms is under 50 ms, 1.5 s is not.
    let fam = &exp.families["ha_vip_probe_duration_seconds"];
    let sample = fam.iter_samples().next().unwrap();
    let OpenMetricsValue::Histogram(h) = &sample.value else {
        panic!("{sample:?}")
    };
    let at = |le: f64| {
        h.buckets
            .iter()
            .find(|b| b.upper_bound == le)
            .unwrap()
            .count
            .as_f64()
    };
    assert_eq!(
        (at(0.025), at(0.05), at(1.0), at(2.5)),
        (0.0, 1.0, 1.0, 2.0)
    );
    assert!((h.sum.as_ref().unwrap().as_f64() - 1.53).abs() < 1e-9);

    metrics.record_transition(Role::Leader, Role::Follower, TransitionReason::Unhealthy);
    assert_eq!(value(&scrape(addr).await, "ha_vip_is_leader", &[]), 0.0);
    server.abort();
}

#[tokio::test]
async fn other_paths_methods_and_garbage_get_http_errors() {
    let (addr, server) = start(&Metrics::new(&[])).await;
    let status = |r: String| r.lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        status(raw(addr, b"GET / HTTP/1.1\r\n\r\n").await),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        status(raw(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        status(raw(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await),
        "HTTP/1.1 400 Bad Request"
    );
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(64 * 1024));
    assert_eq!(
        status(raw(addr, huge.as_bytes()).await),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let head = raw(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    server.abort();
}

#[tokio::test]
async fn slow_clients_do_not_block_scrapes_and_are_cut_off() {
    let (addr, server) = start(&Metrics::new(&[])).await;
    // Clients that connect and never finish their request.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        idle.push(s);
    }
    let started = std::time::Instant::now();
    let exp = tokio::time::timeout(Duration::from_secs(3), scrape(addr))
        .await
        .expect("a scrape waited behind slow clients");
    assert_eq!(value(&exp, "ha_vip_is_leader", &[]), 0.0);
    eprintln!("scrape with 20 idle clients: {:?}", started.elapsed());

    // The server closes an idle connection at its deadline (5 s).
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(15), idle[0].read_to_end(&mut buf))
        .await
        .expect("an idle client was never disconnected")
        .unwrap();
    assert_eq!(n, 0, "an unfinished request got an answer: {buf:?}");
    let cut = started.elapsed();
    assert!(cut >= Duration::from_secs(4), "cut off too early: {cut:?}");
    eprintln!("idle client disconnected after {cut:?}");
    server.abort();
}

#[tokio::test]
async fn a_taken_port_is_an_error_that_says_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = MetricsServer::bind(addr).await.unwrap_err();
    assert!(matches!(err, MetricsError::AddrInUse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(
        msg.contains("metrics.listen") && msg.contains("metrics.enabled: false"),
        "{msg}"
    );
}
