//! Probe frames and the parsing of other hosts' claims on an address.
//!
//! Pure functions over byte slices, so every field is unit-tested without
//! a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use socket2::SockFilter;

use crate::announce::packet::{Mac, icmpv6_checksum};

/// Length of an ARP probe frame: Ethernet header + ARP for IPv4.
pub const ARP_PROBE_LEN: usize = 14 + 28;
/// Length of a DAD neighbour solicitation: Ethernet + IPv6 + NS, no option.
pub const DAD_NS_LEN: usize = 14 + 40 + 24;

/// The ethertype of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
/// The ethertype of IPv6.
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_TARGET_LL_ADDR: u8 = 2;

/// How another host claimed an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimKind {
    /// An ARP request with the address as sender (an announcement, or a
    /// host resolving a neighbour from that address).
    ArpRequest,
    /// An ARP reply from the address (an answer to a probe or a query, or
    /// a gratuitous reply).
    ArpReply,
    /// An IPv6 neighbour advertisement for the address.
    NeighbourAdvert,
}

impl ClaimKind {
    /// A few words for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ArpRequest => "ARP request",
            Self::ArpReply => "ARP reply",
            Self::NeighbourAdvert => "neighbour advertisement",
        }
    }
}

/// A frame in which a host says "`addr` is at `mac`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The address claimed.
    pub addr: IpAddr,
    /// The link-layer address it is claimed for.
    pub mac: Mac,
    /// What kind of frame said so.
    pub kind: ClaimKind,
}

/// RFC 5227 s2.1.1 ARP probe for `vip`: a request from sender IP 0.0.0.0
/// (it must not update anyone's ARP cache), zero target MAC, to broadcast.
/// A host that has `vip` answers with a reply from `vip`.
pub fn arp_probe(mac: Mac, vip: Ipv4Addr) -> [u8; ARP_PROBE_LEN] {
    let mut f = [0u8; ARP_PROBE_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let a = &mut f[14..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    a[8..14].copy_from_slice(&mac);
    // Sender IP 0.0.0.0 and target MAC zero: already zero.
    a[24..28].copy_from_slice(&vip.octets());
    f
}

/// The solicited-node multicast address of `addr` (RFC 4291 s2.7.1).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// RFC 4862 s5.4.2 duplicate address detection: a neighbour solicitation
/// for `vip` from the unspecified address to its solicited-node multicast
/// group, without a source link-layer option (none is allowed from ::).
/// A host that has `vip` answers with an advertisement to ff02::1.
pub fn dad_ns(mac: Mac, vip: Ipv6Addr) -> [u8; DAD_NS_LEN] {
    const ICMP_LEN: usize = 24;
    let dst = solicited_node(vip);
    let d = dst.octets();
    let mut f = [0u8; DAD_NS_LEN];
    // 33:33 + the low 32 bits of the group (RFC 2464 s7).
    f[0..6].copy_from_slice(&[0x33, 0x33, d[12], d[13], d[14], d[15]]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(ICMP_LEN as u16).to_be_bytes());
    ip[6] = IPPROTO_ICMPV6;
    ip[7] = 255; // receivers drop ND packets that crossed a router
    // Source :: is already zero.
    ip[24..40].copy_from_slice(&d);
    let icmp = &mut f[54..];
    icmp[0] = ND_NEIGHBOR_SOLICIT;
    icmp[8..24].copy_from_slice(&vip.octets());
    let sum = icmpv6_checksum(Ipv6Addr::UNSPECIFIED, dst, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The claim `frame` (Ethernet header included) makes, if any.
///
/// ARP requests and replies claim their sender IP for their sender MAC;
/// a probe (sender IP 0.0.0.0) claims nothing: another node checking the
/// address is not using it. A neighbour advertisement claims its target
/// for its Target Link-Layer Address option (the Ethernet source without
/// one); one that is not a valid ND packet (hop limit below 255, wrong
/// code, short) claims nothing.
pub fn parse(frame: &[u8]) -> Option<Claim> {
    let eth_src: Mac = frame.get(6..12)?.try_into().ok()?;
    match u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?) {
        ETHERTYPE_ARP => parse_arp(frame.get(14..)?),
        ETHERTYPE_IPV6 => parse_na(frame.get(14..)?, eth_src),
        _ => None,
    }
}

fn parse_arp(a: &[u8]) -> Option<Claim> {
    if a.len() < 28 || a[0..2] != [0, 1] || a[2..4] != [0x08, 0x00] || a[4] != 6 || a[5] != 4 {
        return None;
    }
    let kind = match u16::from_be_bytes([a[6], a[7]]) {
        1 => ClaimKind::ArpRequest,
        2 => ClaimKind::ArpReply,
        _ => return None,
    };
    let mac: Mac = a[8..14].try_into().ok()?;
    let sender = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    if sender.is_unspecified() {
        return None;
    }
    Some(Claim {
        addr: IpAddr::V4(sender),
        mac,
        kind,
    })
}

fn parse_na(ip: &[u8], eth_src: Mac) -> Option<Claim> {
    if ip.len() < 40 + 24 || ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 || ip[7] != 255 {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let icmp = ip.get(40..40 + payload.min(ip.len() - 40))?;
    if icmp.len() < 24 || icmp[0] != ND_NEIGHBOR_ADVERT || icmp[1] != 0 {
        return None;
    }
    let target: [u8; 16] = icmp[8..24].try_into().ok()?;
    let target = Ipv6Addr::from(target);
    if target.is_multicast() {
        return None;
    }
    // Options: (type, length in 8-byte units, ...); a zero length is invalid.
    let mut mac = eth_src;
    let mut opts = &icmp[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == ND_OPT_TARGET_LL_ADDR && len == 8 {
            mac = opts[2..8].try_into().ok()?;
        }
        opts = &opts[len..];
    }
    Some(Claim {
        addr: IpAddr::V6(target),
        mac,
        kind: ClaimKind::NeighbourAdvert,
    })
}

/// BPF: every ARP frame (the socket is bound to ARP; ARP is a trickle).
pub(crate) fn arp_filter() -> Vec<SockFilter> {
    vec![SockFilter::new(BPF_RET_K, 0, 0, 0xffff)]
}

/// BPF: only ICMPv6 neighbour advertisements without extension headers
/// (ND never uses them), so a busy node's IPv6 traffic never reaches us.
pub(crate) fn na_filter() -> Vec<SockFilter> {
    vec![
        SockFilter::new(BPF_LDB_ABS, 0, 0, 14 + 6), // next header
        SockFilter::new(BPF_JEQ_K, 0, 3, u32::from(IPPROTO_ICMPV6)),
        SockFilter::new(BPF_LDB_ABS, 0, 0, 14 + 40), // ICMPv6 type
        SockFilter::new(BPF_JEQ_K, 0, 1, u32::from(ND_NEIGHBOR_ADVERT)),
        SockFilter::new(BPF_RET_K, 0, 0, 0xffff),
        SockFilter::new(BPF_RET_K, 0, 0, 0),
    ]
}

/// `BPF_LD | BPF_B | BPF_ABS`: load the byte at offset k.
const BPF_LDB_ABS: u16 = 0x30;
/// `BPF_JMP | BPF_JEQ | BPF_K`: jump by jt if A == k, else by jf.
const BPF_JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K`: accept k bytes (0: drop).
const BPF_RET_K: u16 = 0x06;

#[cfg(test)]
mod tests;
