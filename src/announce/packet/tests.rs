use super::*;

const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

#[test]
fn garp_request_is_an_rfc5227_announcement() {
    let f = garp_request(MAC, "192.0.2.100".parse().unwrap());
    #[rustfmt::skip]
    let want: [u8; ARP_FRAME_LEN] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet dst: broadcast
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // Ethernet src: interface MAC
        0x08, 0x06,                         // ethertype ARP
        0x00, 0x01,                         // htype Ethernet
        0x08, 0x00,                         // ptype IPv4
        6, 4,                               // hlen, plen
        0x00, 0x01,                         // op request
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // sender MAC
        192, 0, 2, 100,                     // sender IP = VIP
        0, 0, 0, 0, 0, 0,                   // target MAC zero
        192, 0, 2, 100,                     // target IP = VIP
    ];
    assert_eq!(f, want);
}

#[test]
fn garp_reply_has_op_2_and_target_mac_equal_to_sender() {
    let f = garp_reply(MAC, "10.1.2.3".parse().unwrap());
    #[rustfmt::skip]
    let want: [u8; ARP_FRAME_LEN] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,
        0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 6, 4,
        0x00, 0x02,                         // op reply
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,
        10, 1, 2, 3,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // target MAC = sender MAC
        10, 1, 2, 3,
    ];
    assert_eq!(f, want);
}

#[test]
fn unsolicited_na_matches_rfc4861() {
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let f = unsolicited_na(MAC, vip);
    let v = vip.octets();
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    let mut want = Vec::new();
    want.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]); // Ethernet dst for ff02::1
    want.extend_from_slice(&MAC);
    want.extend_from_slice(&[0x86, 0xdd]);
    want.extend_from_slice(&[0x60, 0, 0, 0]); // version 6
    want.extend_from_slice(&[0, 32]); // payload length
    want.extend_from_slice(&[58, 255]); // ICMPv6, hop limit 255
    want.extend_from_slice(&v); // source = VIP
    want.extend_from_slice(&all_nodes);
    want.extend_from_slice(&[136, 0]); // NA, code 0
    // Checksum computed independently (Python, RFC 4443 pseudo-header).
    want.extend_from_slice(&[0x99, 0x1c]);
    want.extend_from_slice(&[0x20, 0, 0, 0]); // R=0 S=0 O=1
    want.extend_from_slice(&v); // target
    want.extend_from_slice(&[2, 1]); // Target Link-Layer Address, 8 bytes
    want.extend_from_slice(&MAC);
    assert_eq!(f.as_slice(), want.as_slice());
}

#[test]
fn na_checksum_verifies_to_zero() {
    // Summing a message with its checksum in place must give 0 (RFC 1071).
    for vip in [
        "fd00::1",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe",
        "fe80::1",
    ] {
        let vip: Ipv6Addr = vip.parse().unwrap();
        let f = unsolicited_na([0xde, 0xad, 0xbe, 0xef, 0xff, 0xff], vip);
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(vip, dst, &f[54..]), 0, "{vip}");
    }
}

#[test]
fn checksum_handles_odd_lengths() {
    let a = Ipv6Addr::UNSPECIFIED;
    // Odd trailing byte is padded with zero: [0x01] sums like [0x01, 0x00].
    // The one-byte message also has a length one smaller, hence the + 1.
    assert_eq!(
        icmpv6_checksum(a, a, &[1]),
        icmpv6_checksum(a, a, &[1, 0]) + 1
    );
}
