//! The interface and the VIPs it carries.

use std::net::IpAddr;

use super::{File, Leaf, Pos, Resolver, TOP, at, d, pos_of};
use crate::config::{ConfigError, Vip};

impl Resolver<'_> {
    pub(super) fn interface(&self, leaf: &Leaf<String>) -> Result<String, ConfigError> {
        let Some(s) = leaf else {
            return Err(self.err(TOP, "interface is missing; expected the name of the interface that carries the VIPs, e.g. interface: eth0"));
        };
        let v = s.value.trim();
        // The kernel's own rules (IFNAMSIZ, dev_valid_name); ':' would read as an IPv4 label.
        let bad = v.is_empty()
            || v.len() > 15
            || v == "."
            || v == ".."
            || v.chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(self.err(
                at(s),
                format!("interface: {:?} is not a valid interface name; expected 1-15 characters without '/', ':' or spaces, e.g. eth0", s.value),
            ));
        }
        Ok(v.to_string())
    }

    pub(super) fn vips(&self, f: &File) -> Result<Vec<Vip>, ConfigError> {
        let written: Vec<_> = match (&f.vips, &f.vip) {
            (Some(_), Some(single)) => {
                return Err(self.err(
                    at(single),
                    "vip and vips are both set; expected only vips (a list)",
                ));
            }
            (Some(list), None) => list.value.iter().collect(),
            (None, Some(single)) => vec![single],
            (None, None) => {
                return Err(self.err(TOP, "vips is missing; expected a list of one or more addresses, e.g. vips: [10.0.0.100]"));
            }
        };
        if written.is_empty() {
            let pos: Pos = f.vips.as_ref().map_or(TOP, |s| pos_of(&s.referenced));
            return Err(self.err(
                pos,
                "vips is empty; expected one or more addresses, e.g. [10.0.0.100, fd00::100]",
            ));
        }
        let mut vips: Vec<Vip> = Vec::with_capacity(written.len());
        for s in written {
            let vip = parse_vip(&s.value)
                .map_err(|why| self.err(at(s), format!("vips: {:?} {why}", s.value)))?;
            if vips.iter().any(|v| v.addr == vip.addr) {
                return Err(self.err(
                    at(s),
                    format!(
                        "vips: {} is listed twice; expected each address once",
                        vip.addr
                    ),
                ));
            }
            vips.push(vip);
        }
        Ok(vips)
    }
}

/// Parses `10.0.0.100`, `10.0.0.100/32` or `fd00::100/128`.
pub(super) fn parse_vip(text: &str) -> Result<Vip, String> {
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| {
        "is not an IP address; expected e.g. 10.0.0.100, 10.0.0.100/32 or fd00::100".to_string()
    })?;
    let max = if addr.is_ipv4() {
        d::IPV4_PREFIX
    } else {
        d::IPV6_PREFIX
    };
    let prefix_len = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(format!(
                    "has an invalid prefix length; expected 1 to {max}, usually /{max}"
                ));
            }
        },
    };
    let unusable = match addr {
        IpAddr::V4(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_link_local()
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_unicast_link_local()
                // An IPv4-mapped address is never configured on an interface.
                || a.to_ipv4_mapped().is_some()
        }
    };
    if unusable {
        return Err(
            "cannot be a VIP; expected a unicast address that is not loopback or link-local"
                .to_string(),
        );
    }
    Ok(Vip { addr, prefix_len })
}
