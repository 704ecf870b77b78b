//! The kernel-enforced fence: a VIP nobody refreshes disappears by itself.
//!
//! Also measures how long after its lifetime the kernel deletes an address
//! (printed; run with `--no-capture` to see the numbers).

#[path = "common/netns.rs"]
mod netns;

use std::net::IpAddr;
use std::time::Duration;

use ha_vip::config::Vip;
use ha_vip::vip::{AddressTable, Lifetime, NetlinkAddressTable};
use netns::{Netns, veth};
use tokio::time::{Instant, sleep};

fn vip(s: &str) -> Vip {
    let addr: IpAddr = s.parse().unwrap();
    Vip {
        addr,
        prefix_len: if addr.is_ipv4() { 32 } else { 128 },
    }
}

const POLL: Duration = Duration::from_millis(10);

#[test]
fn unrefreshed_vip_expires_and_refreshed_vip_stays() {
    let ns = Netns::new("fence");
    veth(&ns, "hv0", &ns, "hv0p");
    let lifetime = Lifetime::from_secs(1).unwrap();
    let expiring = [vip("192.0.2.100"), vip("2001:db8::100")];
    let refreshed = [vip("192.0.2.101"), vip("2001:db8::101")];
    ns.run(|| async {
        let table = NetlinkAddressTable::connect("hv0").unwrap();
        let start = Instant::now();
        for v in expiring.iter().chain(&refreshed) {
            table.add_or_refresh(*v, lifetime).await.unwrap();
        }
        let mut gone = [None; 2];
        let mut next_refresh = start;
        while start.elapsed() < Duration::from_secs(3) {
            if Instant::now() >= next_refresh {
                for v in refreshed {
                    table.add_or_refresh(v, lifetime).await.unwrap();
                }
                next_refresh += Duration::from_millis(400);
            }
            let present = table.present(&expiring).await.unwrap();
            for (i, v) in expiring.iter().enumerate() {
                if gone[i].is_none() && !present.contains(v) {
                    gone[i] = Some(start.elapsed());
                }
            }
            sleep(POLL).await;
        }
        for (i, v) in expiring.iter().enumerate() {
            let at = gone[i].unwrap_or_else(|| panic!("{v} still present after 3 s"));
            println!("{v}: lifetime 1 s, gone after {at:?}");
            assert!(
                at >= Duration::from_millis(900),
                "{v} gone too early: {at:?}"
            );
            // Up to ~1 s late by design (see measure_kernel_deletion_latency):
            // the refreshes below keep rescheduling the kernel's worker.
            assert!(
                at <= Duration::from_millis(2500),
                "{v} outlived its lifetime by > 1.5 s: {at:?}"
            );
        }
        assert_eq!(
            table.present(&refreshed).await.unwrap(),
            refreshed.to_vec(),
            "refreshed VIPs stay"
        );
    });
    // Independent oracle: the refreshed ones are still there, the others not.
    assert!(ns.addr("hv0", "192.0.2.100").is_none());
    assert!(ns.addr("hv0", "2001:db8::100").is_none());
    assert!(ns.addr("hv0", "192.0.2.101").is_some());
    assert!(ns.addr("hv0", "2001:db8::101").is_some());
}

/// Polls until each of `vips` (added at `added[i]`) is gone; returns the
/// time past `lifetime` at which it was last seen gone, in seconds.
async fn wait_gone(
    table: &NetlinkAddressTable,
    vips: &[Vip],
    added: Instant,
    lifetime: Lifetime,
) -> Vec<f64> {
    let mut gone = vec![None; vips.len()];
    while gone.iter().any(Option::is_none)
        && added.elapsed() < lifetime.as_duration() + Duration::from_secs(3)
    {
        let present = table.present(vips).await.unwrap();
        for (i, v) in vips.iter().enumerate() {
            if gone[i].is_none() && !present.contains(v) {
                gone[i] =
                    Some(added.elapsed().as_secs_f64() - lifetime.as_duration().as_secs_f64());
            }
        }
        sleep(POLL).await;
    }
    vips.iter()
        .zip(gone)
        .map(|(v, g)| g.unwrap_or_else(|| panic!("{v} never expired")))
        .collect()
}

/// Deletion latency past the lifetime: the kernel's expiry worker (IPv4
/// `check_lifetime`, IPv6 `addrconf_verify`) runs at the earliest expiry,
/// rounded up to a whole second when that costs under 250 ms, but never
/// sooner than 1 s after its previous run, and any address added or
/// replaced makes it run at once. So: quiet, <= 0.25 s; with another
/// address change just before the expiry, up to ~1 s.
#[test]
fn measure_kernel_deletion_latency() {
    let ns = Netns::new("fencelat");
    veth(&ns, "hv0", &ns, "hv0p");
    let lifetime = Lifetime::from_secs(1).unwrap();
    let vips = [vip("192.0.2.100"), vip("2001:db8::100")];
    let (quiet, disturbed) = ns.run(|| async {
        let table = NetlinkAddressTable::connect("hv0").unwrap();
        let mut quiet = Vec::new();
        for round in 0..4u64 {
            // Vary the phase against the kernel's whole-second rounding.
            sleep(Duration::from_millis(130 * round)).await;
            let added = Instant::now();
            for v in vips {
                table.add_or_refresh(v, lifetime).await.unwrap();
            }
            quiet.extend(wait_gone(&table, &vips, added, lifetime).await);
        }
        // Worst case: an unrelated address change 0.1 s before the expiry.
        let added = Instant::now();
        for v in vips {
            table.add_or_refresh(v, lifetime).await.unwrap();
        }
        sleep(Duration::from_millis(900)).await;
        for other in [vip("192.0.2.200"), vip("2001:db8::200")] {
            table
                .add_or_refresh(other, Lifetime::from_secs(60).unwrap())
                .await
                .unwrap();
        }
        (quiet, wait_gone(&table, &vips, added, lifetime).await)
    });
    for (i, late) in quiet.iter().enumerate() {
        println!(
            "fence latency, quiet, {}: {late:+.3} s past a 1 s lifetime",
            vips[i % 2]
        );
    }
    for (v, late) in vips.iter().zip(&disturbed) {
        println!("fence latency, other address changed 0.1 s before expiry, {v}: {late:+.3} s");
    }
    // Generous bounds: speed is reported, not asserted; other tests on the
    // host change addresses too (IPv4's expiry worker is host-wide).
    for late in quiet.iter().chain(&disturbed) {
        assert!((-0.1..=1.5).contains(late), "{late:+.3} s");
    }
}
