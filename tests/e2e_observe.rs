//! The running daemon as systemd and an operator see it, against the real
//! kube-apiserver: the sd_notify protocol on a NOTIFY_SOCKET the test owns,
//! the watchdog, STATUS=, SIGHUP reloads (a bad file keeps the running
//! configuration, a new VIP is added without dropping the old one), the
//! Prometheus endpoint, and `ha-vip status`.

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lab::netns;
use common::lab::node::{FAST_HEALTH, binary};
use common::lab::testbed::Testbed;
use nix::sys::signal::Signal;

/// systemd's side: reads every datagram, as systemd always does.
fn listen(sock: UnixDatagram) -> Arc<Mutex<Vec<String>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    got
}

/// Waits up to `bound` for `pred` to hold on what systemd received; returns
/// a copy of it.
fn receive_until(
    got: &Mutex<Vec<String>>,
    bound: Duration,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let now = got.lock().unwrap().clone();
        if pred(&now) || start.elapsed() > bound {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scrape(ns: &str) -> String {
    netns::run_in(ns, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9405").expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    })
}

fn sample(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_e2e_systemd_protocol_reload_metrics_and_status() {
    let Some(api) = apiserver::ApiServer::start() else {
        return;
    };
    let bed = Testbed::new(&api, 1, "obs");
    let (lab, dir, access) = (&bed.lab, &bed.dir, &bed.access);
    let vip = lab.vip().to_string();
    let mut node = bed.node(0, "n1", FAST_HEALTH);

    // systemd's side of the protocol: a datagram socket on the filesystem.
    let sock_path = dir.path().join("notify.sock");
    let sock = listen(UnixDatagram::bind(&sock_path).unwrap());
    node.env
        .push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
    node.env.push(("WATCHDOG_USEC".into(), "2000000".into()));
    node.start();

    let leads = |g: &[String]| g.iter().any(|m| m.starts_with("STATUS=leader for "));
    let got = receive_until(&sock, Duration::from_secs(20), leads);
    assert!(
        leads(&got),
        "no READY/leader status: {got:?}\n{}",
        node.log_text()
    );
    let ready = got
        .iter()
        .position(|m| m == "READY=1")
        .expect("READY=1 sent");
    let leader = got
        .iter()
        .position(|m| m.starts_with("STATUS=leader for "))
        .unwrap();
    assert!(
        ready < leader,
        "READY=1 comes after the startup cleanup, before leadership: {got:?}"
    );
    assert!(got[leader].contains(&format!("{vip}/32 since ")), "{got:?}");
    assert!(lab.has_vip(0));
    // The watchdog is pinged (every WATCHDOG_USEC/2 = 1 s) from the main loop.
    let pings = |g: &[String]| g.iter().skip(leader).filter(|m| *m == "WATCHDOG=1").count() >= 2;
    assert!(
        pings(&receive_until(&sock, Duration::from_secs(5), pings)),
        "no watchdog pings as leader"
    );

    // Metrics: valid exposition with the live values.
    let body = scrape(&lab.nodes[0]);
    openmetrics_parser::openmetrics::parse_openmetrics(&body)
        .unwrap_or_else(|e| panic!("invalid exposition {e:?}\n{body}"));
    assert_eq!(sample(&body, "ha_vip_is_leader "), 1.0, "{body}");
    assert_eq!(sample(&body, "ha_vip_healthy "), 1.0, "{body}");
    assert_eq!(
        sample(&body, &format!("ha_vip_vip_present{{vip=\"{vip}/32\"}}")),
        1.0,
        "{body}"
    );
    assert!(
        sample(
            &body,
            "ha_vip_announcements_sent_total{family=\"ipv4_garp\"}"
        ) >= 2.0,
        "{body}\n{}",
        node.log_text()
    );
    assert!(
        sample(
            &body,
            "ha_vip_lease_request_duration_seconds_count{op=\"update\"}"
        ) >= 1.0,
        "{body}"
    );
    assert!(
        sample(&body, "ha_vip_probe_duration_seconds_sum") > 0.0,
        "{body}"
    );

    // `ha-vip status` reads the live daemon.
    let out = std::process::Command::new(binary())
        .args(["status", "--config"])
        .arg(&node.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("leader"), "{text}");

    // SIGHUP with a broken file: RELOADING=1, READY=1, still leader, VIP kept.
    let good = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, format!("{good}\nbogus_key: 1\n")).unwrap();
    let before = sock.lock().unwrap().len();
    node.signal(Signal::SIGHUP);
    let reloaded = |g: &[String]| {
        let new = &g[before.min(g.len())..];
        new.iter()
            .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="))
            && new.iter().any(|m| m == "READY=1")
    };
    let got = receive_until(&sock, Duration::from_secs(5), reloaded);
    assert!(reloaded(&got), "{got:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.running() && lab.has_vip(0),
        "a bad reload must keep the running configuration"
    );
    assert!(
        node.log_text()
            .contains("keeping the running configuration"),
        "{}",
        node.log_text()
    );

    // SIGHUP adding a second VIP: added live, the first never leaves.
    let second = format!("10.77.{}.101", lab.k);
    std::fs::write(
        &node.config,
        good.replace(
            &format!("vips: [{vip}]"),
            &format!("vips: [{vip}, {second}]"),
        ),
    )
    .unwrap();
    let holders = common::lab::meter::HolderMeter::start(&lab.nodes, lab.vip().into());
    node.signal(Signal::SIGHUP);
    let start = Instant::now();
    let has = |ip: &str| {
        let out = common::lab::ns_exec(
            &lab.nodes[0],
            &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        );
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/"))
    };
    while !has(&second) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        has(&second),
        "second VIP not added on reload\n{}",
        node.log_text()
    );
    let samples = holders.finish();
    assert!(
        samples[0].iter().all(|(_, present)| *present),
        "the unchanged VIP was dropped during the reload"
    );

    // SIGHUP with a new credential source (a rotated token file) and new
    // probe settings: a new elector and probe take over without releasing;
    // the VIP never leaves and the lease keeps being renewed.
    let rotated = dir.path().join("token-rotated");
    std::fs::write(&rotated, api.var("KUBE_ADMIN_TOKEN")).unwrap();
    let changed = good
        .replace(
            &format!("token_file: {}", access.token_file.display()),
            &format!("token_file: {}", rotated.display()),
        )
        .replace("interval: 500ms", "interval: 400ms")
        .replace("timeout: 400ms", "timeout: 300ms");
    assert_ne!(changed, good);
    std::fs::write(&node.config, &changed).unwrap();
    let holders = common::lab::meter::HolderMeter::start(&lab.nodes, lab.vip().into());
    let store =
        ha_vip::lease::KubeLeaseStore::new(api.admin(), "kube-system", access.lease.clone());
    use ha_vip::lease::LeaseStore;
    node.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let before = store.get().await.unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let after = store.get().await.unwrap().unwrap();
    let samples = holders.finish();
    let log = node.log_text();
    assert!(
        log.contains("reloaded the Kubernetes API settings"),
        "{log}"
    );
    assert!(log.contains("reloaded the health probe settings"), "{log}");
    assert!(
        samples[0].iter().all(|(_, present)| *present),
        "the VIP left during a credential reload\n{log}"
    );
    assert_eq!(after.record.holder, "n1");
    assert!(
        after.record.renew_time > before.record.renew_time,
        "renewals stopped after the reload\n{log}"
    );
    assert!(!log.contains("transition leader -> follower"), "{log}");

    // SIGTERM: STOPPING=1, exit 0, no VIP left.
    node.signal(Signal::SIGTERM);
    assert_eq!(
        node.wait(Duration::from_secs(10)),
        Some(0),
        "{}",
        node.log_text()
    );
    let stopping = |g: &[String]| g.iter().any(|m| m == "STOPPING=1");
    assert!(stopping(&receive_until(
        &sock,
        Duration::from_secs(1),
        stopping
    )));
    assert!(!has(&vip) && !has(&second), "VIPs left after SIGTERM");
    let log = node.log_text();
    assert!(
        log.contains("transition follower -> leader")
            && log.contains("transition leader -> stopping"),
        "{log}"
    );
}
