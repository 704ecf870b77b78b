//! Gratuitous ARP and unsolicited neighbour advertisement frames.
//!
//! Pure functions from (interface MAC, VIP) to complete Ethernet frames, so
//! every byte is unit-tested without a socket.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An Ethernet (EUI-48) address.
pub type Mac = [u8; 6];

/// Length of a gratuitous ARP frame: Ethernet header + ARP for IPv4.
pub const ARP_FRAME_LEN: usize = 14 + 28;
/// Length of an unsolicited NA frame: Ethernet + IPv6 + NA + one option.
pub const NA_FRAME_LEN: usize = 14 + 40 + 24 + 8;

const BROADCAST: Mac = [0xff; 6];
/// ff02::1 mapped to Ethernet (RFC 2464 s7).
const ALL_NODES_MAC: Mac = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_TARGET_LL_ADDR: u8 = 2;
/// Override flag of a neighbour advertisement (RFC 4861 s4.4).
const NA_FLAG_OVERRIDE: u8 = 0x20;

fn ethernet(frame: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

fn arp(mac: Mac, vip: Ipv4Addr, op: u16, target_mac: Mac) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    ethernet(&mut f, BROADCAST, mac, ETHERTYPE_ARP);
    let a = &mut f[14..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&vip.octets());
    a[18..24].copy_from_slice(&target_mac);
    a[24..28].copy_from_slice(&vip.octets());
    f
}

/// RFC 5227 ARP announcement: a request with sender IP = target IP = VIP,
/// zero target MAC, to the Ethernet broadcast address.
pub fn garp_request(mac: Mac, vip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp(mac, vip, ARP_OP_REQUEST, [0; 6])
}

/// The reply form (op 2) some devices only honour; target MAC = sender MAC,
/// which Linux requires to treat a reply as gratuitous.
pub fn garp_reply(mac: Mac, vip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp(mac, vip, ARP_OP_REPLY, mac)
}

/// RFC 4861 s7.2.6 unsolicited neighbour advertisement for `vip`.
///
/// From the VIP to ff02::1, hop limit 255, flags R=0 S=0 O=1 (a control-plane
/// node is not a router; unsolicited means not solicited; override so that
/// neighbours replace a stale MAC), with a Target Link-Layer Address option.
pub fn unsolicited_na(mac: Mac, vip: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    const ICMP_LEN: usize = 24 + 8;
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = [0u8; NA_FRAME_LEN];
    ethernet(&mut f, ALL_NODES_MAC, mac, ETHERTYPE_IPV6);
    let ip = &mut f[14..54];
    ip[0] = 0x60; // version 6, traffic class 0, flow label 0
    ip[4..6].copy_from_slice(&(ICMP_LEN as u16).to_be_bytes());
    ip[6] = IPPROTO_ICMPV6;
    ip[7] = 255; // hop limit: receivers drop ND packets that crossed a router
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let icmp = &mut f[54..];
    icmp[0] = ND_NEIGHBOR_ADVERT;
    icmp[1] = 0; // code
    icmp[4] = NA_FLAG_OVERRIDE;
    icmp[8..24].copy_from_slice(&vip.octets());
    icmp[24] = ND_OPT_TARGET_LL_ADDR;
    icmp[25] = 1; // option length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(vip, dst, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum (RFC 4443 s2.3) of `msg`, whose checksum field is zero.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
        }
    };
    // Pseudo-header: source, destination, upper-layer length, next header.
    add(&src.octets());
    add(&dst.octets());
    // Messages here are a few dozen bytes; the length always fits.
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests;
