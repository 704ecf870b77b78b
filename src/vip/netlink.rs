//! The real [`AddressTable`]: rtnetlink requests on the calling thread's
//! network namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo,
};
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{AddressMessageBuilder, Handle};
use tokio::task::JoinHandle;

use super::{AddressTable, Cause, Lifetime, VipError};
use crate::config::Vip;

/// Longest interface label the kernel accepts (IFNAMSIZ - 1).
const MAX_LABEL_LEN: usize = 15;

/// What the data plane needs to know about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    /// Interface index.
    pub(crate) index: u32,
    /// Ethernet address, if the link has a 6-byte one.
    pub(crate) mac: Option<[u8; 6]>,
    /// Able to carry the VIP: up, carrier, not dormant (`watch::carrier`).
    pub(crate) up: bool,
}

/// Looks up the link called `name`.
pub(crate) async fn lookup_link(handle: &Handle, name: &str) -> Result<LinkInfo, Cause> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(Some(msg)) => {
            let mac = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            });
            let flags = msg.header.flags;
            Ok(LinkInfo {
                index: msg.header.index,
                mac,
                up: super::watch::carrier(flags),
            })
        }
        Ok(None) => Err(Cause::NoInterface(name.to_owned())),
        Err(e) => Err(Cause::from_rtnetlink(&e, name)),
    }
}

/// Opens a request connection on the calling thread's network namespace and
/// spawns its driver on the current tokio runtime.
pub(crate) fn connect(interface: &str) -> Result<(Handle, JoinHandle<()>), Cause> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| Cause::from_io(&e, interface))?;
    Ok((handle, tokio::spawn(conn)))
}

/// The IPv4 label `<dev>:vip`, if it fits the kernel's 15 bytes.
pub(crate) fn label_for(interface: &str) -> Option<String> {
    let label = format!("{interface}:vip");
    (label.len() <= MAX_LABEL_LEN).then_some(label)
}

/// An address table on one interface, spoken to over rtnetlink.
///
/// The interface is looked up by name on every call, so a link that is
/// deleted and recreated (new index) is still found.
#[derive(Debug)]
pub struct NetlinkAddressTable {
    handle: Handle,
    interface: String,
    driver: JoinHandle<()>,
}

impl NetlinkAddressTable {
    /// Opens a netlink socket for `interface`.
    ///
    /// Must run inside a tokio runtime; the socket belongs to the network
    /// namespace of the calling thread. The interface need not exist yet.
    pub fn connect(interface: &str) -> Result<Self, VipError> {
        let (handle, driver) = connect(interface).map_err(|cause| VipError::Connect {
            interface: interface.to_owned(),
            cause,
        })?;
        Ok(Self {
            handle,
            interface: interface.to_owned(),
            driver,
        })
    }

    fn add_message(&self, index: u32, vip: Vip, lifetime: Lifetime) -> AddressMessage {
        let mut msg = base_message(index, vip);
        match vip.addr {
            IpAddr::V4(_) => {
                if let Some(label) = label_for(&self.interface) {
                    msg.attributes.push(AddressAttribute::Label(label));
                }
            }
            IpAddr::V6(_) => {
                // A takeover must not sit in duplicate address detection.
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        let mut cache = CacheInfo::default();
        // preferred 0: deprecated at once, so never chosen as a source address.
        cache.ifa_preferred = 0;
        cache.ifa_valid = lifetime.secs();
        msg.attributes.push(AddressAttribute::CacheInfo(cache));
        msg
    }
}

impl Drop for NetlinkAddressTable {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn base_message(index: u32, vip: Vip) -> AddressMessage {
    match vip.addr {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a, vip.prefix_len)
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(a, vip.prefix_len)
            .build(),
    }
}

/// The address and prefix an address message describes.
pub(crate) fn message_vip(msg: &AddressMessage) -> Option<Vip> {
    // IPv4 puts the interface's own address in IFA_LOCAL (IFA_ADDRESS is the
    // peer on point-to-point links); IPv6 only sends IFA_ADDRESS.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Some(Vip {
        addr,
        prefix_len: msg.header.prefix_len,
    })
}

impl AddressTable for NetlinkAddressTable {
    fn interface(&self) -> &str {
        &self.interface
    }

    async fn add_or_refresh(&self, vip: Vip, lifetime: Lifetime) -> Result<(), VipError> {
        let err = |cause| VipError::Add {
            vip,
            interface: self.interface.clone(),
            cause,
        };
        let link = lookup_link(&self.handle, &self.interface)
            .await
            .map_err(err)?;
        let mut req = self
            .handle
            .address()
            .add(link.index, vip.addr, vip.prefix_len)
            .replace();
        *req.message_mut() = self.add_message(link.index, vip, lifetime);
        req.execute()
            .await
            .map_err(|e| err(Cause::from_rtnetlink(&e, &self.interface)))
    }

    async fn remove(&self, vip: Vip) -> Result<bool, VipError> {
        let err = |cause| VipError::Remove {
            vip,
            interface: self.interface.clone(),
            cause,
        };
        let link = lookup_link(&self.handle, &self.interface)
            .await
            .map_err(err)?;
        match self
            .handle
            .address()
            .del(base_message(link.index, vip))
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => match Cause::from_rtnetlink(&e, &self.interface) {
                Cause::Errno(nix::libc::EADDRNOTAVAIL) => Ok(false),
                cause => Err(err(cause)),
            },
        }
    }

    async fn present(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        let err = |cause| VipError::List {
            interface: self.interface.clone(),
            cause,
        };
        let link = lookup_link(&self.handle, &self.interface)
            .await
            .map_err(err)?;
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute();
        let mut found = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| err(Cause::from_rtnetlink(&e, &self.interface)))?
        {
            if let Some(vip) = message_vip(&msg).filter(|v| vips.contains(v)) {
                found.push(vip);
            }
        }
        found.sort();
        found.dedup();
        Ok(found)
    }
}
