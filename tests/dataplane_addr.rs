//! The address table against a real kernel, checked with `ip -j addr`.

#[path = "common/netns.rs"]
mod netns;

use std::net::IpAddr;

use ha_vip::config::Vip;
use ha_vip::vip::{AddressTable, Cause, Lifetime, NetlinkAddressTable, remove_all};
use netns::{Netns, veth};

fn vip(s: &str) -> Vip {
    let addr: IpAddr = s.parse().unwrap();
    Vip {
        addr,
        prefix_len: if addr.is_ipv4() { 32 } else { 128 },
    }
}

fn secs(n: u32) -> Lifetime {
    Lifetime::from_secs(n).unwrap()
}

fn ns_with_veth(tag: &str, dev: &str) -> Netns {
    let ns = Netns::new(tag);
    veth(&ns, dev, &ns, &format!("{dev}p"));
    ns
}

#[test]
fn add_refresh_remove_list_match_ip_addr() {
    let ns = ns_with_veth("addr", "hv0");
    let (v4, v6) = (vip("192.0.2.100"), vip("2001:db8::100"));
    ns.run(|| async {
        let table = NetlinkAddressTable::connect("hv0").unwrap();
        assert_eq!(table.present(&[v4, v6]).await.unwrap(), vec![]);

        table.add_or_refresh(v4, secs(30)).await.unwrap();
        table.add_or_refresh(v6, secs(30)).await.unwrap();
        let a4 = ns.addr("hv0", "192.0.2.100").expect("IPv4 VIP on hv0");
        assert_eq!(a4["prefixlen"], 32);
        assert_eq!(a4["label"], "hv0:vip");
        assert_eq!(a4["preferred_life_time"], 0);
        assert_eq!(a4["deprecated"], true, "never a source address: {a4}");
        assert!(
            (29..=30).contains(&a4["valid_life_time"].as_u64().unwrap()),
            "{a4}"
        );
        let a6 = ns.addr("hv0", "2001:db8::100").expect("IPv6 VIP on hv0");
        assert_eq!(a6["prefixlen"], 128);
        assert_eq!(a6["nodad"], true, "{a6}");
        assert_eq!(a6["deprecated"], true, "{a6}");
        assert!(
            a6.get("tentative").is_none(),
            "a takeover must not sit in DAD: {a6}"
        );
        assert_eq!(a6["preferred_life_time"], 0);
        assert!(
            (29..=30).contains(&a6["valid_life_time"].as_u64().unwrap()),
            "{a6}"
        );
        assert_eq!(
            table.present(&[v4, v6, vip("192.0.2.101")]).await.unwrap(),
            vec![v4, v6]
        );

        // A refresh of a present VIP replaces its lifetime; no duplicate.
        table.add_or_refresh(v4, secs(100)).await.unwrap();
        table.add_or_refresh(v6, secs(100)).await.unwrap();
        for local in ["192.0.2.100", "2001:db8::100"] {
            let a = ns.addr("hv0", local).unwrap();
            assert!(
                (99..=100).contains(&a["valid_life_time"].as_u64().unwrap()),
                "{a}"
            );
            assert_eq!(a["preferred_life_time"], 0, "{a}");
        }
        assert_eq!(
            ns.addrs("hv0")
                .iter()
                .filter(|a| a["local"] == "192.0.2.100")
                .count(),
            1
        );

        // Removing is idempotent and reports whether the VIP was there.
        assert!(table.remove(v4).await.unwrap());
        assert!(!table.remove(v4).await.unwrap());
        assert!(table.remove(v6).await.unwrap());
        assert!(!table.remove(v6).await.unwrap());
        assert!(ns.addr("hv0", "192.0.2.100").is_none());
        assert!(ns.addr("hv0", "2001:db8::100").is_none());
        assert_eq!(table.present(&[v4, v6]).await.unwrap(), vec![]);
    });
}

#[test]
fn long_interface_name_gets_no_label_and_other_prefixes_work() {
    // "hvlongname012:vip" is 17 bytes, over the kernel's 15.
    let ns = ns_with_veth("label", "hvlongname012");
    let v4 = Vip {
        addr: "198.51.100.7".parse().unwrap(),
        prefix_len: 24,
    };
    let v6 = Vip {
        addr: "2001:db8:1::7".parse().unwrap(),
        prefix_len: 64,
    };
    ns.run(|| async {
        let table = NetlinkAddressTable::connect("hvlongname012").unwrap();
        table.add_or_refresh(v4, secs(10)).await.unwrap();
        table.add_or_refresh(v6, secs(10)).await.unwrap();
        let a4 = ns.addr("hvlongname012", "198.51.100.7").unwrap();
        assert_eq!(a4["prefixlen"], 24);
        // Without IFA_LABEL the kernel reports the device name.
        assert_eq!(a4["label"], "hvlongname012");
        assert_eq!(
            ns.addr("hvlongname012", "2001:db8:1::7").unwrap()["prefixlen"],
            64
        );
        // Presence is by address and prefix.
        let other = Vip {
            prefix_len: 32,
            ..v4
        };
        assert_eq!(table.present(&[v4, v6, other]).await.unwrap(), vec![v4, v6]);
    });
}

#[test]
fn missing_interface_is_a_clear_error() {
    let ns = Netns::new("noif");
    ns.run(|| async {
        let table = NetlinkAddressTable::connect("nope0").unwrap();
        let err = table
            .add_or_refresh(vip("192.0.2.100"), secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.cause(), &Cause::NoInterface("nope0".into()));
        assert_eq!(
            err.to_string(),
            "failed to add VIP 192.0.2.100/32 on nope0: no interface nope0"
        );
        let err = table.present(&[vip("192.0.2.100")]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to list the addresses of nope0: no interface nope0"
        );
        let err = remove_all(&table, &[vip("192.0.2.100"), vip("2001:db8::100")])
            .await
            .unwrap_err();
        assert_eq!(err.errors.len(), 2, "every VIP attempted: {err}");
        assert!(
            err.to_string()
                .contains("failed to remove VIP 2001:db8::100/128 from nope0: no interface nope0"),
            "{err}"
        );
    });
}

#[test]
fn cleanup_removes_leftover_vips_only() {
    let ns = ns_with_veth("left", "hv0");
    // Leftovers of a crash, added by hand (permanent, no label): and an
    // address that is not a VIP, which must stay.
    ns.ip(&["addr", "add", "192.0.2.100/32", "dev", "hv0"]);
    ns.ip(&["addr", "add", "2001:db8::100/128", "dev", "hv0", "nodad"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "hv0"]);
    let vips = [vip("192.0.2.100"), vip("2001:db8::100"), vip("192.0.2.200")];
    ns.run(|| async {
        let table = NetlinkAddressTable::connect("hv0").unwrap();
        let removed = remove_all(&table, &vips).await.unwrap();
        assert_eq!(removed, vec![vips[0], vips[1]]);
        assert_eq!(
            remove_all(&table, &vips).await.unwrap(),
            vec![],
            "second run finds nothing"
        );
    });
    assert!(ns.addr("hv0", "192.0.2.100").is_none());
    assert!(ns.addr("hv0", "2001:db8::100").is_none());
    assert!(
        ns.addr("hv0", "192.0.2.1").is_some(),
        "not a VIP: left alone"
    );
}
