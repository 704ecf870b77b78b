use super::*;
use crate::announce::packet::{garp_reply, garp_request, unsolicited_na};

const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
const OTHER: Mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];

#[test]
fn arp_probe_is_rfc5227() {
    let f = arp_probe(MAC, "192.0.2.100".parse().unwrap());
    #[rustfmt::skip]
    let want: [u8; ARP_PROBE_LEN] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // source: our MAC
        0x08, 0x06,                         // ARP
        0x00, 0x01, 0x08, 0x00, 6, 4,       // Ethernet / IPv4
        0x00, 0x01,                         // request
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // sender MAC
        0, 0, 0, 0,                         // sender IP 0.0.0.0: a probe
        0, 0, 0, 0, 0, 0,                   // target MAC zero
        192, 0, 2, 100,                     // target IP = VIP
    ];
    assert_eq!(f, want);
    assert_eq!(parse(&f), None, "a probe claims nothing");
}

#[test]
fn solicited_node_group_takes_the_low_24_bits() {
    let a: Ipv6Addr = "2001:db8::12:3456".parse().unwrap();
    assert_eq!(
        solicited_node(a),
        "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
    );
}

#[test]
fn dad_ns_is_from_unspecified_to_the_solicited_node_group() {
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let f = dad_ns(MAC, vip);
    assert_eq!(
        f[0..6],
        [0x33, 0x33, 0xff, 0x00, 0x01, 0x00],
        "Ethernet dst"
    );
    assert_eq!(f[6..12], MAC);
    assert_eq!(f[12..14], [0x86, 0xdd]);
    assert_eq!(f[14], 0x60);
    assert_eq!(
        u16::from_be_bytes([f[18], f[19]]),
        24,
        "payload: NS, no option"
    );
    assert_eq!((f[20], f[21]), (58, 255), "ICMPv6, hop limit 255");
    assert_eq!(f[22..38], [0; 16], "source ::");
    let group: Ipv6Addr = "ff02::1:ff00:100".parse().unwrap();
    assert_eq!(f[38..54], group.octets());
    assert_eq!((f[54], f[55]), (135, 0), "NS, code 0");
    assert_eq!(f[58..62], [0; 4], "reserved");
    assert_eq!(f[62..78], vip.octets(), "target = VIP");
    assert_eq!(
        icmpv6_checksum(Ipv6Addr::UNSPECIFIED, group, &f[54..]),
        0,
        "checksum verifies"
    );
}

#[test]
fn announcements_and_replies_claim_their_sender() {
    let vip: Ipv4Addr = "10.1.2.3".parse().unwrap();
    assert_eq!(
        parse(&garp_request(OTHER, vip)),
        Some(Claim {
            addr: vip.into(),
            mac: OTHER,
            kind: ClaimKind::ArpRequest
        })
    );
    assert_eq!(
        parse(&garp_reply(OTHER, vip)),
        Some(Claim {
            addr: vip.into(),
            mac: OTHER,
            kind: ClaimKind::ArpReply
        })
    );
}

#[test]
fn a_probe_answer_claims_the_vip_for_the_answering_mac() {
    // What Linux sends in answer to a probe: a reply from the VIP to the
    // prober, target IP 0.0.0.0.
    let mut f = garp_reply(OTHER, "192.0.2.100".parse().unwrap());
    f[0..6].copy_from_slice(&MAC);
    f[14 + 18..14 + 24].copy_from_slice(&MAC);
    f[14 + 24..14 + 28].copy_from_slice(&[0; 4]);
    let c = parse(&f).unwrap();
    assert_eq!(c.mac, OTHER);
    assert_eq!(c.addr, "192.0.2.100".parse::<IpAddr>().unwrap());
}

#[test]
fn the_arp_sender_mac_counts_not_the_ethernet_source() {
    let mut f = garp_request(OTHER, "10.0.0.1".parse().unwrap());
    f[6..12].copy_from_slice(&MAC);
    assert_eq!(parse(&f).unwrap().mac, OTHER);
}

#[test]
fn malformed_arp_claims_nothing() {
    let good = garp_request(OTHER, "10.0.0.1".parse().unwrap());
    assert!(parse(&good[..41]).is_none(), "short");
    let mut f = good;
    f[14 + 2] = 0x86; // protocol not IPv4
    assert!(parse(&f).is_none());
    let mut f = good;
    f[14 + 7] = 3; // RARP request
    assert!(parse(&f).is_none());
    let mut f = good;
    f[14 + 5] = 16; // protocol length
    assert!(parse(&f).is_none());
    assert!(parse(&[]).is_none());
    assert!(parse(&good[..13]).is_none());
}

#[test]
fn a_neighbour_advertisement_claims_its_target_for_its_tlla() {
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let f = unsolicited_na(OTHER, vip);
    assert_eq!(
        parse(&f),
        Some(Claim {
            addr: vip.into(),
            mac: OTHER,
            kind: ClaimKind::NeighbourAdvert
        })
    );
    // The option names the MAC, whatever the Ethernet source says.
    let mut g = f;
    g[6..12].copy_from_slice(&MAC);
    assert_eq!(parse(&g).unwrap().mac, OTHER);
}

#[test]
fn a_neighbour_advertisement_without_option_claims_for_its_ethernet_source() {
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let f = unsolicited_na(OTHER, vip);
    let mut g = f[..78].to_vec();
    g[18..20].copy_from_slice(&24u16.to_be_bytes());
    assert_eq!(parse(&g).unwrap().mac, OTHER);
}

#[test]
fn invalid_neighbour_advertisements_claim_nothing() {
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let good = unsolicited_na(OTHER, vip);
    let mut f = good;
    f[21] = 64; // hop limit: crossed a router
    assert!(parse(&f).is_none());
    let mut f = good;
    f[54] = 135; // a solicitation, not an advertisement
    assert!(parse(&f).is_none());
    let mut f = good;
    f[55] = 1; // code
    assert!(parse(&f).is_none());
    let mut f = good;
    f[79] = 0; // option of length zero
    assert!(parse(&f).is_none());
    let mut f = good;
    f[62] = 0xff; // multicast target
    assert!(parse(&f).is_none());
    assert!(parse(&good[..70]).is_none(), "short");
    let mut f = good;
    f[20] = 6; // TCP
    assert!(parse(&f).is_none());
}

#[test]
fn dad_solicitations_claim_nothing() {
    assert!(parse(&dad_ns(OTHER, "2001:db8::100".parse().unwrap())).is_none());
}
