//! A refresh that waits for the RTNL lock (issue 10, item 1), on a real
//! kernel: another namespace's teardown holds RTNL while the leader's fence
//! passes, and a peer checks over a veth when the VIP stops answering.
//!
//! How RTNL is held for long: deleting a namespace with veth pairs of 1024
//! queues each (unregistering the per-queue sysfs objects is slow and all
//! happens under one RTNL hold in the namespace cleanup). An independent
//! probe measures the hold: `ip addr add/del` in a namespace of its own,
//! back to back, each needing RTNL. Run with `--no-capture` for the numbers.

#[path = "common/netns.rs"]
mod netns;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_vip::config::Vip;
use ha_vip::vip::{
    AddressTable, Lifetime, NetlinkAddressTable, Tracked, UpUntil, VipError, set_until,
};
use netns::{Netns, veth};

const VIP: &str = "192.0.2.100";
/// veth pairs and queues per device in the namespace whose teardown holds RTNL.
const HOG_PAIRS: usize = 160;
const HOG_QUEUES: &str = "1024";
/// The correction latency allowed: late answer to the VIP gone. Generous;
/// the measured value is printed.
const CORRECTION: Duration = Duration::from_millis(500);

fn vip(s: &str) -> Vip {
    Vip {
        addr: s.parse().unwrap(),
        prefix_len: 32,
    }
}

/// Records when each add request returned, to time the correction.
struct Timed<T> {
    inner: T,
    adds: Mutex<Vec<(Instant, Instant, Option<Lifetime>)>>,
}

impl<T: AddressTable> AddressTable for Timed<T> {
    fn interface(&self) -> &str {
        self.inner.interface()
    }
    async fn add_or_refresh(&self, vip: Vip, lifetime: Lifetime) -> Result<(), VipError> {
        self.inner.add_or_refresh(vip, lifetime).await
    }
    async fn add_until(
        &self,
        vip: Vip,
        until: tokio::time::Instant,
    ) -> Result<Option<Lifetime>, VipError> {
        let start = Instant::now();
        let r = self.inner.add_until(vip, until).await;
        let l = r.as_ref().ok().copied().flatten();
        self.adds.lock().unwrap().push((start, Instant::now(), l));
        r
    }
    async fn remove(&self, vip: Vip) -> Result<bool, VipError> {
        self.inner.remove(vip).await
    }
    async fn present(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        self.inner.present(vips).await
    }
}

/// Runs `f` on a thread inside `ns` until `stop`; returns what it collected.
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    stop: &Arc<AtomicBool>,
    f: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{}", ns.name());
    let stop = stop.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f(stop)
    })
}

/// When the probe's request in flight started, if one is.
type InFlight = Arc<Mutex<Option<Instant>>>;

/// Every request that needs RTNL, back to back: (start, duration).
fn rtnl_probe(
    ns: &Netns,
    stop: &Arc<AtomicBool>,
    in_flight: &InFlight,
) -> std::thread::JoinHandle<Vec<(Instant, Duration)>> {
    let name = ns.name().to_owned();
    let stop = stop.clone();
    let in_flight = in_flight.clone();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut add = true;
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            *in_flight.lock().unwrap() = Some(start);
            let op = if add { "add" } else { "del" };
            let _ = Command::new("ip")
                .args(["-n", &name, "addr", op, "10.9.9.9/32", "dev", "pa"])
                .output();
            *in_flight.lock().unwrap() = None;
            out.push((start, start.elapsed()));
            add = !add;
        }
        out
    })
}

#[test]
fn serial_a_refresh_stuck_behind_a_busy_rtnl_is_corrected_within_the_bound() {
    let leader = Netns::new("lateL");
    let peer = Netns::new("lateP");
    veth(&leader, "l0", &peer, "p0");
    leader.ip(&["addr", "add", "192.0.2.1/24", "dev", "l0"]);
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "p0"]);
    let probe_ns = Netns::new("lateR");
    probe_ns.ip(&["link", "add", "pa", "type", "veth", "peer", "name", "pb"]);

    // The namespace whose deletion holds RTNL; deleted by hand below.
    let hog_name = format!("hv-lateH-{}", std::process::id());
    Command::new("ip")
        .args(["netns", "add", &hog_name])
        .status()
        .unwrap();
    let batch: String = (0..HOG_PAIRS)
        .map(|i| {
            format!(
                "link add h{i}a numtxqueues {q} numrxqueues {q} type veth peer name h{i}b numtxqueues {q} numrxqueues {q}\n",
                q = HOG_QUEUES
            )
        })
        .collect();
    let batch_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(batch_file.path(), batch).unwrap();
    let made = Instant::now();
    let ok = Command::new("ip")
        .args(["-n", &hog_name, "-batch"])
        .arg(batch_file.path())
        .status()
        .unwrap();
    assert!(ok.success(), "creating the hog links failed");
    println!(
        "created {HOG_PAIRS} veth pairs x {HOG_QUEUES} queues in {:?}",
        made.elapsed()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let probing = InFlight::default();
    let rtnl = rtnl_probe(&probe_ns, &stop, &probing);
    // The peer: a TCP SYN to the VIP every 10 ms; an RST means it answered.
    let answered = Arc::new(AtomicBool::new(false));
    let answered_tx = answered.clone();
    let answers = in_ns(&peer, &stop, move |stop| {
        let to = SocketAddr::new(VIP.parse::<IpAddr>().unwrap(), 9);
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = TcpStream::connect_timeout(&to, Duration::from_millis(30))
                && e.kind() == std::io::ErrorKind::ConnectionRefused
            {
                seen.push(Instant::now());
                answered_tx.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    });

    let hog_started = Arc::new(Mutex::new(None));
    let (fence, sent, returned, result, ledger, adds) = leader.run(|| {
        let hog_started = hog_started.clone();
        let hog_name = hog_name.clone();
        let probing = probing.clone();
        async move {
            let table = Tracked::new(Timed {
                inner: NetlinkAddressTable::connect("l0").unwrap(),
                adds: Mutex::default(),
            });
            let t0 = tokio::time::Instant::now();
            let v = vip(VIP);
            assert!(
                set_until(&table, v, t0 + Duration::from_millis(3500))
                    .await
                    .unwrap()
                    .is_some()
            );
            while !answered.load(Ordering::Relaxed) {
                assert!(
                    t0.elapsed() < Duration::from_secs(2),
                    "the peer never reached the VIP"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            *hog_started.lock().unwrap() = Some(Instant::now());
            std::thread::spawn(move || {
                Command::new("ip")
                    .args(["netns", "del", &hog_name])
                    .status()
            });
            // Once the probe has waited 50 ms for RTNL, the hold is on.
            let spawned = Instant::now();
            while !probing
                .lock()
                .unwrap()
                .is_some_and(|t| t.elapsed() > Duration::from_millis(50))
            {
                assert!(
                    spawned.elapsed() < Duration::from_secs(5),
                    "the namespace teardown never held RTNL"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // A refresh whose 1 s lifetime is computed now, with 1.02 s left.
            let sent = Instant::now();
            let fence = sent + Duration::from_millis(1020);
            let result = set_until(&table, v, tokio::time::Instant::from_std(fence)).await;
            let returned = Instant::now();
            let ledger = table.up_until();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let adds = std::mem::take(&mut *table.inner().adds.lock().unwrap());
            (fence, sent, returned, result, ledger, adds)
        }
    });
    stop.store(true, Ordering::Relaxed);
    let rtnl = rtnl.join().unwrap();
    let answers = answers.join().unwrap();
    let hog_started = hog_started.lock().unwrap().unwrap();

    let (hold_start, hold) = rtnl
        .iter()
        .filter(|(s, _)| *s >= hog_started - Duration::from_millis(50))
        .max_by_key(|(_, d)| *d)
        .copied()
        .unwrap();
    let hold_end = hold_start + hold;
    let first = *answers
        .first()
        .expect("the VIP answered the peer before the hog");
    let last = *answers.last().unwrap();
    // Signed seconds from `b` to `a`.
    let since = |a: Instant, b: Instant| {
        if a >= b {
            (a - b).as_secs_f64()
        } else {
            -(b - a).as_secs_f64()
        }
    };
    let at = |t: Instant| since(t, sent);
    println!(
        "RTNL held for {:.3} s (longest ip addr request, from {:+.3} s)",
        hold.as_secs_f64(),
        at(hold_start)
    );
    println!(
        "refresh sent at 0, fence {:+.3} s, request answered and corrected, set_until returned {:+.3} s ({result:?}), ledger {ledger:?}",
        at(fence),
        at(returned)
    );
    println!(
        "VIP answered the peer from {:+.3} s to {:+.3} s: {:+.3} s after the RTNL hold ended, {:+.3} s after the fence; set_until returned {:+.3} s after the hold ended",
        at(first),
        at(last),
        since(last, hold_end),
        since(last, fence),
        since(returned, hold_end),
    );
    let late = adds
        .iter()
        .find(|(start, _, _)| *start >= sent)
        .expect("the refresh sent an add request");
    println!(
        "the refresh's add request ({:?}) took {:.3} s; correction latency (its answer to set_until's return, the VIP removed): {:.3} s",
        late.2,
        (late.1 - late.0).as_secs_f64(),
        (returned - late.1).as_secs_f64()
    );
    assert!(
        hold >= Duration::from_millis(300) && returned - sent >= Duration::from_millis(200),
        "the refresh did not wait for RTNL (held {hold:?}, refresh took {:?}); the test proves nothing",
        returned - sent
    );
    assert!(
        first < hog_started,
        "the peer reached the VIP before the hog"
    );
    // The refresh came back after its fence: the VIP is taken off, not
    // left to live a whole second past the RTNL hold.
    assert_eq!(
        result.unwrap(),
        None,
        "under a second left when answered: removed"
    );
    assert!(
        matches!(ledger, UpUntil::Gone | UpUntil::Until(_)),
        "{ledger:?}"
    );
    let bound = (fence + Duration::from_millis(1250)).max(hold_end + CORRECTION);
    assert!(
        last <= bound,
        "the VIP answered {:?} past max(fence + 1.25 s, RTNL end + {CORRECTION:?})",
        last - bound
    );
    assert!(
        last <= returned + Duration::from_millis(100),
        "the VIP still answered {:?} after the correction returned",
        last - returned
    );
}
