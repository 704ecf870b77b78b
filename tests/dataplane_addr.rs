//! The address table against a real kernel, checked with `ip -j addr`.

#[path = "common/netns.rs"]
mod netns;

use std::net::IpAddr;

use ha_vip::config::Vip;
use ha_vip::vip::{
    AddressTable, Cause, Lifetime, NetlinkAddressTable, VipError, refuse_foreign, remove_all,
};
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
    // Leftovers of a crash carry ha-vip's marks (label, finite lifetime,
    // preferred 0, nodad); an address that is not a VIP must stay.
    ns.ip(&[
        "addr",
        "add",
        "192.0.2.100/32",
        "dev",
        "hv0",
        "label",
        "hv0:vip",
        "valid_lft",
        "60",
        "preferred_lft",
        "0",
    ]);
    ns.ip(&[
        "addr",
        "add",
        "2001:db8::100/128",
        "dev",
        "hv0",
        "nodad",
        "valid_lft",
        "60",
        "preferred_lft",
        "0",
    ]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "hv0"]);
    let vips = [vip("192.0.2.100"), vip("2001:db8::100"), vip("192.0.2.200")];
    ns.run(|| async {
        let table = NetlinkAddressTable::connect("hv0").unwrap();
        refuse_foreign(&table, &vips)
            .await
            .expect("an ha-vip leftover is not foreign");
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

/// What `ip -j addr` says of an address, for "untouched" checks.
fn snapshot(ns: &Netns, dev: &str, local: &str) -> (u64, u64, bool, String) {
    let a = ns
        .addr(dev, local)
        .unwrap_or_else(|| panic!("{local} gone from {dev}"));
    (
        a["prefixlen"].as_u64().unwrap(),
        a["valid_life_time"].as_u64().unwrap(),
        a.get("dynamic").is_some(),
        a["label"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn own_address_equal_to_a_vip_is_refused_and_never_touched() {
    let ns = ns_with_veth("own", "hv0");
    // (This kernel has no dummy links; a veth end will do.)
    veth(&ns, "hvother", &ns, "hvotherp");
    // The node's own addresses: on the VIP interface (IPv4 with the VIP's
    // prefix, IPv6 with another), and on another interface.
    ns.ip(&["addr", "add", "192.0.2.100/32", "dev", "hv0"]);
    ns.ip(&["addr", "add", "2001:db8::100/64", "dev", "hv0", "nodad"]);
    ns.ip(&["addr", "add", "198.51.100.9/24", "dev", "hvother"]);
    let before = [
        snapshot(&ns, "hv0", "192.0.2.100"),
        snapshot(&ns, "hv0", "2001:db8::100"),
        snapshot(&ns, "hvother", "198.51.100.9"),
    ];
    assert_eq!(before[0].1, u64::from(u32::MAX), "permanent: {before:?}");
    let (v4, v6, other) = (
        vip("192.0.2.100"),
        vip("2001:db8::100"),
        vip("198.51.100.9"),
    );
    ns.run(|| async {
        let table = NetlinkAddressTable::connect("hv0").unwrap();
        for v in [v4, v6, other] {
            let err = refuse_foreign(&table, &[vip("192.0.2.250"), v])
                .await
                .expect_err("the node's own address is refused");
            let msg = err.to_string();
            assert!(matches!(err, VipError::Foreign { .. }), "{msg}");
            assert!(msg.contains(&format!("VIP {v} is already on")), "{msg}");
            assert!(
                msg.contains("take") && msg.contains("out of `vips`"),
                "{msg}"
            );
        }
        // Even when asked to, the table neither replaces nor removes it.
        for v in [v4, v6] {
            let err = table.add_or_refresh(v, secs(1)).await.unwrap_err();
            assert_eq!(err.cause(), &Cause::NotOurs, "{err}");
            assert_eq!(table.present(&[v]).await.unwrap(), vec![], "not ours");
        }
        assert_eq!(remove_all(&table, &[v4, v6]).await.unwrap(), vec![]);
    });
    // Past the 1 s the refresh asked for: still there, still permanent.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = [
        snapshot(&ns, "hv0", "192.0.2.100"),
        snapshot(&ns, "hv0", "2001:db8::100"),
        snapshot(&ns, "hvother", "198.51.100.9"),
    ];
    assert_eq!(before, after, "the node's own addresses are untouched");
}

/// `ha-vip run` itself: exit 1 with the fix, before touching anything.
#[test]
fn run_refuses_a_vip_that_is_an_own_address() {
    let ns = ns_with_veth("ownrun", "hv0");
    ns.ip(&["addr", "add", "2001:db8::100/64", "dev", "hv0", "nodad"]);
    let run_dir = tempfile::tempdir().unwrap();
    let cfg = run_dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "node_name: cp1\ninterface: hv0\nvips: [\"2001:db8::100\"]\nmetrics:\n  enabled: false\nk8s:\n  kubeconfig: /nonexistent/admin.conf\nrun_dir: {}\n",
            run_dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            env!("CARGO_BIN_EXE_ha-vip"),
            "run",
            "-c",
        ])
        .arg(&cfg)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("VIP 2001:db8::100/128 is already on hv0 as 2001:db8::100/64"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ip addr del 2001:db8::100/64 dev hv0"),
        "{stderr}"
    );
    let a = ns.addr("hv0", "2001:db8::100").expect("still there");
    assert_eq!(a["prefixlen"], 64);
    assert_eq!(
        a["valid_life_time"].as_u64(),
        Some(u64::from(u32::MAX)),
        "{a}"
    );
}
