//! The newcomer's demo (`make demo`, as root): three control-plane nodes,
//! each a container booting a real systemd (systemd-nspawn) in its own
//! network namespace, the real kube-apiserver, and the ha-vip .deb
//! installed on each. Shows the operator's session: `systemctl start
//! ha-vip`, `ha-vip status`, `systemctl stop ha-vip` on the holder with the
//! outage a client saw, and `journalctl -u ha-vip` on the new holder; then
//! removes everything.
//!
//! The .deb comes from `HAVIP_DEB` (`make demo` builds it and sets it).

#[path = "../tests/common/apiserver.rs"]
mod apiserver;
#[path = "../tests/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::lab::meter::{self, ClientMeter, HolderMeter};
use common::lab::systemd_cluster::{SystemdCluster, deb_under_test};

/// Prints `node# cmd`, runs it in the node's container and prints its output.
fn show(c: &SystemdCluster, i: usize, cmd: &[&str]) -> String {
    println!("\n{}# {}", c.names[i], cmd.join(" "));
    let out = c.nodes[i].exec(cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines() {
        println!("  {line}");
    }
    text
}

fn fail(c: &SystemdCluster, what: &str) -> ! {
    eprintln!("{what}; journals:\n{}", c.logs());
    std::process::exit(1);
}

fn main() {
    let Some(deb) = deb_under_test() else {
        std::process::exit(1)
    };
    println!(
        "== starting etcd + kube-apiserver, 3 node namespaces, each booting systemd \
         (systemd-nspawn) with {} installed (about 20 s)",
        deb.file_name().unwrap_or_default().to_string_lossy()
    );
    let Some(c) = SystemdCluster::start(3, &deb) else {
        eprintln!("the kube-apiserver harness was skipped (HAVIP_SKIP_APISERVER=1)");
        std::process::exit(1);
    };
    let vip = c.lab().vip();
    println!(
        "== nodes {} booted; every node has /etc/ha-vip/config.yaml with VIP {vip} on eth0",
        c.names.join(", ")
    );
    show(&c, 0, &["cat", "/etc/ha-vip/config.yaml"]);

    println!("\n== starting ha-vip on every node at once");
    for name in &c.names {
        println!("{name}# systemctl start ha-vip");
    }
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for i in 0..3 {
            let c = &c;
            s.spawn(move || c.systemctl(i, &["start", "ha-vip"]));
        }
    });
    println!(
        "  (returned after READY=1 in {} ms)",
        t0.elapsed().as_millis()
    );
    let Some(h) = c.wait_holder(Duration::from_secs(40), Duration::from_secs(1)) else {
        fail(&c, "no node took the VIP");
    };
    println!(
        "== {} took the VIP {} ms after systemctl start",
        c.names[h],
        t0.elapsed().as_millis()
    );
    show(&c, h, &["ha-vip", "status"]);
    show(&c, h, &["ip", "-4", "-br", "addr", "show", "dev", "eth0"]);
    show(&c, h, &["systemctl", "--no-pager", "status", "ha-vip"]);

    std::thread::sleep(Duration::from_millis(1500));
    println!(
        "\n== stopping ha-vip on the holder {}; a client connects to {vip}:6443 every 20 ms",
        c.names[h]
    );
    let holders = HolderMeter::start(&c.lab().nodes, IpAddr::V4(vip));
    let client = ClientMeter::start(&c.lab().client, IpAddr::V4(vip), 6443);
    std::thread::sleep(Duration::from_millis(300));
    let fault = Instant::now();
    show(&c, h, &["systemctl", "stop", "ha-vip"]);
    let moved = c.wait_for(Duration::from_secs(30), |c| {
        c.holder().is_some_and(|n| n != h)
    });
    if !moved {
        fail(&c, "the VIP did not move");
    }
    let moved_at = fault.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let overlap = meter::overlap(&holders.finish());
    let outage = meter::longest_outage(&client.finish(), fault);
    let new = c.holder().unwrap_or(h);
    println!(
        "\n== the VIP moved to {} in {} ms: client-visible outage {} ms, time two nodes held the VIP {} ms",
        c.names[new],
        moved_at.as_millis(),
        outage.as_millis(),
        overlap.as_millis()
    );
    show(&c, new, &["ha-vip", "status"]);
    show(
        &c,
        new,
        &["journalctl", "--no-pager", "-u", "ha-vip", "-n", "12"],
    );
    show(
        &c,
        new,
        &[
            "journalctl",
            "--no-pager",
            "-u",
            "ha-vip",
            "-g",
            "transition",
            "-o",
            "verbose",
            "-n",
            "1",
            "--output-fields=VIP,FROM,TO,REASON,HOLDER",
        ],
    );
    println!("\n== cleaning up (containers, namespaces, kube-apiserver)");
}
