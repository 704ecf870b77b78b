//! ha-vip's tables, chains and rules as nf_tables messages.
//!
//! Every rule ends in `meta time > DEADLINE drop`. The kernel stores the
//! time (`NFT_META_TIME_NS`, `ktime_get_real_ns()`) in the register as a
//! host-order u64 (`nft_reg_store64`), while `cmp` compares with `memcmp`,
//! i.e. as big-endian bytes for `gt`/`lt` (net/netfilter/nft_meta.c,
//! nft_cmp.c). So a `byteorder` expression (hton, 8 bytes) converts the
//! register first, as `nft` itself does, and the deadline is sent
//! big-endian. Without it the comparison would look at the low byte first
//! and be right or wrong by chance.

use std::net::IpAddr;

use super::wire::{
    Batch, DELTABLE, Family, NEWCHAIN, NEWRULE, NEWTABLE, NLM_F_APPEND, NLM_F_CREATE,
};

use super::TABLE;

/// The priority of every chain: `raw` (NF_IP_PRI_RAW, -300), before
/// connection tracking (-200), so a drop also ends established flows and
/// no conntrack entry is made for what is dropped, and before the usual
/// filter chains (0) whose `accept` could not undo a drop anyway.
const PRIORITY: i32 = -300;

// Hooks (NF_INET_*, NF_ARP_*).
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_ARP_IN: u32 = 0;
const NF_ARP_OUT: u32 = 1;

// Attributes (include/uapi/linux/netfilter/nf_tables.h).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BYTEORDER_SREG: u16 = 1;
const NFTA_BYTEORDER_DREG: u16 = 2;
const NFTA_BYTEORDER_OP: u16 = 3;
const NFTA_BYTEORDER_LEN: u16 = 4;
const NFTA_BYTEORDER_SIZE: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

const NFT_REG_VERDICT: u32 = 0;
/// The first 16-byte data register: room for an IPv6 address.
const NFT_REG_1: u32 = 1;
const NF_ACCEPT: u32 = 1;
const NF_DROP: u32 = 0;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_GT: u32 = 4;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_META_TIME_NS: u32 = 30;
const NFT_BYTEORDER_HTON: u32 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;

/// Where a payload expression counts its offset from.
#[derive(Debug, Clone, Copy)]
enum Base {
    /// The network header (for the `arp` family: the ARP header).
    Network = 1,
    /// The transport header (after IPv6 extension headers).
    Transport = 2,
}

/// Adds to `b` the transaction that replaces ha-vip's tables by ones that
/// drop everything of `vips` after `deadline_ns` (ns since the epoch).
///
/// Per family: add the table (a no-op when it exists, so the delete cannot
/// fail), delete it, add it anew with its chains and rules. The kernel
/// switches to the new rules in one step and keeps the old ones if any
/// message fails, so there is no moment without a rule.
pub(super) fn arm(b: &mut Batch, vips: &[IpAddr], deadline_ns: u64) {
    for family in [Family::Inet, Family::Arp] {
        table(b, NEWTABLE, NLM_F_CREATE, family);
        table(b, DELTABLE, 0, family);
        table(b, NEWTABLE, NLM_F_CREATE, family);
    }
    let time = deadline_ns.to_be_bytes();

    chain(b, Family::Inet, "prerouting", NF_INET_PRE_ROUTING);
    chain(b, Family::Inet, "output", NF_INET_LOCAL_OUT);
    chain(b, Family::Arp, "input", NF_ARP_IN);
    chain(b, Family::Arp, "output", NF_ARP_OUT);

    for vip in vips {
        match vip {
            IpAddr::V4(v4) => {
                let a = v4.octets();
                // Packets to the VIP, replies from it.
                rule(b, Family::Inet, "prerouting", vip, |b| {
                    nfproto(b, NFPROTO_IPV4);
                    payload_eq(b, Base::Network, 16, &a); // ip daddr
                    after(b, &time);
                });
                rule(b, Family::Inet, "output", vip, |b| {
                    nfproto(b, NFPROTO_IPV4);
                    payload_eq(b, Base::Network, 12, &a); // ip saddr
                    after(b, &time);
                });
                // ARP requests for the VIP never reach the ARP code, and
                // any ARP packet claiming the VIP as sender stays in: that
                // is every reply for it, whoever generated it.
                rule(b, Family::Arp, "input", vip, |b| {
                    arp_ipv4_over_ethernet(b);
                    payload_eq(b, Base::Network, 6, &[0, 1]); // op request
                    payload_eq(b, Base::Network, 24, &a); // target IP
                    after(b, &time);
                });
                rule(b, Family::Arp, "output", vip, |b| {
                    arp_ipv4_over_ethernet(b);
                    payload_eq(b, Base::Network, 14, &a); // sender IP
                    after(b, &time);
                });
            }
            IpAddr::V6(v6) => {
                let a = v6.octets();
                rule(b, Family::Inet, "prerouting", vip, |b| {
                    nfproto(b, NFPROTO_IPV6);
                    payload_eq(b, Base::Network, 24, &a); // ip6 daddr
                    after(b, &time);
                });
                // Solicitations go to the solicited-node group, not to the
                // VIP: match their target (offset 8 of the ICMPv6 header).
                rule(b, Family::Inet, "prerouting", vip, |b| {
                    nd(b, ND_NEIGHBOR_SOLICIT, &a);
                    after(b, &time);
                });
                rule(b, Family::Inet, "output", vip, |b| {
                    nfproto(b, NFPROTO_IPV6);
                    payload_eq(b, Base::Network, 8, &a); // ip6 saddr
                    after(b, &time);
                });
                // Advertisements may leave from a link-local source.
                rule(b, Family::Inet, "output", vip, |b| {
                    nd(b, ND_NEIGHBOR_ADVERT, &a);
                    after(b, &time);
                });
            }
        }
    }
}

/// Adds to `b` the transaction that removes ha-vip's tables, and only
/// them: add each (a no-op when it exists), then delete it, so a missing
/// table is not an error.
pub(super) fn clear(b: &mut Batch) {
    for family in [Family::Inet, Family::Arp] {
        table(b, NEWTABLE, NLM_F_CREATE, family);
        table(b, DELTABLE, 0, family);
    }
}

fn table(b: &mut Batch, what: u16, flags: u16, family: Family) {
    let verb = if what == DELTABLE { "delete" } else { "add" };
    b.begin(
        what,
        flags,
        family,
        format!("{verb} table {} {TABLE}", family.name()),
    );
    b.str(NFTA_TABLE_NAME, TABLE);
    b.end();
}

/// A base chain of type filter at [`PRIORITY`] that accepts by default.
fn chain(b: &mut Batch, family: Family, name: &str, hook: u32) {
    let about = format!("add chain {} {TABLE} {name}", family.name());
    b.begin(NEWCHAIN, NLM_F_CREATE, family, about);
    b.str(NFTA_CHAIN_TABLE, TABLE);
    b.str(NFTA_CHAIN_NAME, name);
    b.open(NFTA_CHAIN_HOOK);
    b.be32(NFTA_HOOK_HOOKNUM, hook);
    b.attr(NFTA_HOOK_PRIORITY, &PRIORITY.to_be_bytes());
    b.close();
    b.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
    b.str(NFTA_CHAIN_TYPE, "filter");
    b.end();
}

/// A rule in `chain` whose matches `body` writes, ending in `drop`.
fn rule(b: &mut Batch, family: Family, chain: &str, vip: &IpAddr, body: impl FnOnce(&mut Batch)) {
    let about = format!("add rule {} {TABLE} {chain} for {vip}", family.name());
    b.begin(NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family, about);
    b.str(NFTA_RULE_TABLE, TABLE);
    b.str(NFTA_RULE_CHAIN, chain);
    b.open(NFTA_RULE_EXPRESSIONS);
    body(b);
    expr(b, "immediate", |b| {
        b.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        b.open(NFTA_IMMEDIATE_DATA);
        b.open(NFTA_DATA_VERDICT);
        b.be32(NFTA_VERDICT_CODE, NF_DROP);
        b.close();
        b.close();
    });
    b.close();
    b.end();
}

fn expr(b: &mut Batch, name: &str, data: impl FnOnce(&mut Batch)) {
    b.open(NFTA_LIST_ELEM);
    b.str(NFTA_EXPR_NAME, name);
    b.open(NFTA_EXPR_DATA);
    data(b);
    b.close();
    b.close();
}

fn meta(b: &mut Batch, key: u32) {
    expr(b, "meta", |b| {
        b.be32(NFTA_META_KEY, key);
        b.be32(NFTA_META_DREG, NFT_REG_1);
    });
}

fn cmp(b: &mut Batch, op: u32, value: &[u8]) {
    expr(b, "cmp", |b| {
        b.be32(NFTA_CMP_SREG, NFT_REG_1);
        b.be32(NFTA_CMP_OP, op);
        b.open(NFTA_CMP_DATA);
        b.attr(NFTA_DATA_VALUE, value);
        b.close();
    });
}

fn payload_eq(b: &mut Batch, base: Base, offset: u32, value: &[u8]) {
    expr(b, "payload", |b| {
        b.be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
        b.be32(NFTA_PAYLOAD_BASE, base as u32);
        b.be32(NFTA_PAYLOAD_OFFSET, offset);
        b.be32(NFTA_PAYLOAD_LEN, value.len() as u32);
    });
    cmp(b, NFT_CMP_EQ, value);
}

/// In the `inet` family, which of IPv4 / IPv6 the packet is.
fn nfproto(b: &mut Batch, proto: u8) {
    meta(b, NFT_META_NFPROTO);
    cmp(b, NFT_CMP_EQ, &[proto]);
}

/// An ICMPv6 neighbour-discovery message of `kind` whose target is `vip`.
fn nd(b: &mut Batch, kind: u8, vip: &[u8; 16]) {
    nfproto(b, NFPROTO_IPV6);
    meta(b, NFT_META_L4PROTO);
    cmp(b, NFT_CMP_EQ, &[IPPROTO_ICMPV6]);
    payload_eq(b, Base::Transport, 0, &[kind]); // ICMPv6 type
    payload_eq(b, Base::Transport, 8, vip); // target address
}

/// Hardware and protocol address lengths 6 and 4: the offsets of the
/// other matches hold only for IPv4 over Ethernet.
fn arp_ipv4_over_ethernet(b: &mut Batch) {
    payload_eq(b, Base::Network, 4, &[6, 4]);
}

/// `meta time > deadline`, with the register converted to big-endian
/// first (see the module doc).
fn after(b: &mut Batch, deadline_be: &[u8; 8]) {
    meta(b, NFT_META_TIME_NS);
    expr(b, "byteorder", |b| {
        b.be32(NFTA_BYTEORDER_SREG, NFT_REG_1);
        b.be32(NFTA_BYTEORDER_DREG, NFT_REG_1);
        b.be32(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON);
        b.be32(NFTA_BYTEORDER_LEN, 8);
        b.be32(NFTA_BYTEORDER_SIZE, 8);
    });
    cmp(b, NFT_CMP_GT, deadline_be);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    #[test]
    fn the_deadline_is_sent_big_endian_after_a_byteorder_expression() {
        let deadline: u64 = 0x0102_0304_0506_0708;
        let mut b = Batch::new(1);
        arm(&mut b, &["192.0.2.7".parse().unwrap()], deadline);
        let d = b.finish(true).datagram;
        // Four rules for an IPv4 VIP, each with one time comparison.
        assert_eq!(count(&d, &deadline.to_be_bytes()), 4);
        assert_eq!(count(&d, &deadline.to_le_bytes()), 0);
        assert_eq!(count(&d, b"byteorder\0"), 4);
        assert_eq!(count(&d, &[192, 0, 2, 7]), 4);
    }

    #[test]
    fn arm_replaces_both_tables_and_describes_every_message() {
        let mut b = Batch::new(10);
        let vips: Vec<IpAddr> = vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()];
        arm(&mut b, &vips, 1);
        let tx = b.finish(true);
        let about: Vec<&str> = tx.messages.iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(
            &about[..6],
            [
                "add table inet ha_vip",
                "delete table inet ha_vip",
                "add table inet ha_vip",
                "add table arp ha_vip",
                "delete table arp ha_vip",
                "add table arp ha_vip",
            ]
        );
        // 6 table + 4 chain + 4 IPv4 + 4 IPv6 messages.
        assert_eq!(about.len(), 18);
        assert!(about.contains(&"add rule inet ha_vip output for 2001:db8::7"));
        let seqs: Vec<u32> = tx.messages.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (11..29).collect::<Vec<_>>());
        let v6 = "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert_eq!(count(&tx.datagram, &v6), 4);
    }

    #[test]
    fn clear_only_names_our_table() {
        let mut b = Batch::new(1);
        clear(&mut b);
        let tx = b.finish(true);
        assert_eq!(tx.messages.len(), 4);
        assert_eq!(count(&tx.datagram, b"ha_vip\0"), 4);
    }

    /// Walks attributes in `b`, recursing into nested ones; panics unless
    /// they fill `b` exactly (lengths, padding, nesting).
    fn walk(b: &[u8], depth: usize) -> usize {
        let mut at = 0;
        let mut count = 0;
        while at < b.len() {
            let len = usize::from(u16::from_ne_bytes([b[at], b[at + 1]]));
            let ty = u16::from_ne_bytes([b[at + 2], b[at + 3]]);
            assert!(
                len >= 4 && at + len <= b.len(),
                "attribute at {at} depth {depth}"
            );
            if ty & 0x8000 != 0 {
                count += walk(&b[at + 4..at + len], depth + 1);
            }
            count += 1;
            at += (len + 3) & !3;
        }
        assert_eq!(at, b.len(), "padding at depth {depth}");
        count
    }

    #[test]
    fn every_message_is_well_formed_and_many_vips_fit_one_datagram() {
        let vips: Vec<IpAddr> = (0..32u8)
            .flat_map(|i| {
                [
                    IpAddr::from([10, 0, 0, i]),
                    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)]),
                ]
            })
            .collect();
        let mut b = Batch::new(1);
        arm(&mut b, &vips, 1);
        let d = b.finish(true).datagram;
        let mut at = 0;
        let mut messages = 0;
        while at < d.len() {
            let len = u32::from_ne_bytes(d[at..at + 4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            walk(&d[at + 20..at + len], 0);
            at += len;
            messages += 1;
        }
        assert_eq!(at, d.len());
        // Begin, 6 tables, 4 chains, 4 rules per VIP, end.
        assert_eq!(messages, 1 + 6 + 4 + 4 * vips.len() + 1);
        // About 2 KB per VIP; the socket's send buffer (SEND_BUFFER in
        // conn.rs) bounds a datagram.
        assert!(d.len() < 128 * 1024, "{} bytes for 64 VIPs", d.len());
    }
}
