//! The real [`AddressTable`]: rtnetlink requests on the calling thread's
//! network namespace, sent from a thread of their own.
//!
//! # Which addresses are ha-vip's
//!
//! New VIPs are created exclusively (`NLM_F_CREATE | NLM_F_EXCL`); an
//! existing address is replaced, removed or reported present only if it
//! carries ha-vip's marks ([`Entry::is_ours`]), so a node's own address that
//! equals a VIP is never turned into an expiring one. The marks:
//!
//! * both families: the configured prefix, a finite `valid_lft` (not
//!   `IFA_F_PERMANENT`) and `preferred_lft 0`;
//! * IPv4, decisive: the label `<dev>:vip` (when it fits the kernel's 15
//!   bytes; without it the lifetime marks decide);
//! * IPv6, decisive: `IFA_F_NODAD` (IPv6 has no labels). A SLAAC or DHCPv6
//!   address never has it, and a deprecated one never also has `nodad`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo,
};
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{AddressMessageBuilder, Handle};
use tokio::time::Instant;

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

/// Ends the netlink thread of [`connect`] when dropped.
#[derive(Debug)]
pub(crate) struct Driver {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Opens a request connection on the calling thread's network namespace and
/// drives it on a thread of its own.
///
/// The kernel handles a request inside the `sendmsg` that carries it, and
/// an address or link request waits there for the RTNL lock, which any
/// process on the host may hold for seconds (deleting a namespace with many
/// links does). On the daemon's current-thread runtime that would stop
/// every timer, the lease renewals and the watchdog; on this thread it
/// stops only the requests. A thread created here starts in the namespace
/// of the calling thread, so the socket is opened in the right one.
pub(crate) fn connect(interface: &str) -> Result<(Handle, Driver), Cause> {
    let (ready, handle) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("ha-vip-netlink".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                match rtnetlink::new_connection() {
                    Ok((conn, handle, _)) => {
                        let _ = ready.send(Ok(handle));
                        tokio::select! {
                            () = conn => {}
                            _ = stopped => {}
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| Cause::from_io(&e, interface))?;
    let handle = handle
        .recv()
        .map_err(|_| Cause::Protocol("the netlink thread ended at start".into()))?
        .map_err(|e| Cause::from_io(&e, interface))?;
    Ok((handle, Driver { _stop: stop }))
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
    _driver: Driver,
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
            _driver: driver,
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

/// One address as a dump reports it, with what tells ha-vip's apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Address and prefix.
    pub(crate) vip: Vip,
    /// Interface index.
    pub(crate) index: u32,
    /// IPv4 label (`IFA_LABEL`).
    pub(crate) label: Option<String>,
    /// Remaining valid lifetime in seconds; `u32::MAX` is forever.
    pub(crate) valid: Option<u32>,
    /// Remaining preferred lifetime in seconds.
    pub(crate) preferred: Option<u32>,
    /// `IFA_F_*` flags.
    pub(crate) flags: AddressFlags,
}

impl Entry {
    fn from_message(msg: &AddressMessage) -> Option<Self> {
        let mut entry = Self {
            vip: message_vip(msg)?,
            index: msg.header.index,
            label: None,
            valid: None,
            preferred: None,
            flags: AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits())),
        };
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Label(l) => entry.label = Some(l.clone()),
                AddressAttribute::CacheInfo(c) => {
                    entry.valid = Some(c.ifa_valid);
                    entry.preferred = Some(c.ifa_preferred);
                }
                // The 32-bit flags, when present, supersede the header's 8.
                AddressAttribute::Flags(f) => entry.flags = *f,
                _ => {}
            }
        }
        Some(entry)
    }

    /// Whether this address carries ha-vip's marks for `interface` (see
    /// the module docs). The caller compares the prefix with the VIP's.
    pub(crate) fn is_ours(&self, interface: &str) -> bool {
        let finite = self.valid.is_some_and(|v| v != u32::MAX)
            && !self.flags.contains(AddressFlags::Permanent);
        let never_source = self.preferred == Some(0);
        let mark = match self.vip.addr {
            IpAddr::V4(_) => match label_for(interface) {
                Some(label) => self.label.as_deref() == Some(label.as_str()),
                None => true,
            },
            IpAddr::V6(_) => self.flags.contains(AddressFlags::Nodad),
        };
        finite && never_source && mark
    }
}

/// An address equal to a VIP that ha-vip did not add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// The configured VIP.
    pub vip: Vip,
    /// The interface the address is on.
    pub interface: String,
    /// The address as it is on that interface (its own prefix).
    pub address: Vip,
}

impl NetlinkAddressTable {
    /// Every address of the link `index` (or of every link).
    async fn entries(&self, index: Option<u32>) -> Result<Vec<Entry>, Cause> {
        let mut req = self.handle.address().get();
        if let Some(index) = index {
            req = req.set_link_index_filter(index);
        }
        let mut dump = req.execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| Cause::from_rtnetlink(&e, &self.interface))?
        {
            out.extend(Entry::from_message(&msg));
        }
        Ok(out)
    }

    /// The address equal to `vip` on link `index` as the kernel matches it
    /// (IPv4: address and prefix; IPv6: the address alone).
    async fn matching(&self, index: u32, vip: Vip) -> Result<Option<Entry>, Cause> {
        Ok(self.entries(Some(index)).await?.into_iter().find(|e| {
            e.vip.addr == vip.addr && (vip.addr.is_ipv6() || e.vip.prefix_len == vip.prefix_len)
        }))
    }

    fn is_ours(&self, entry: &Entry, vip: Vip) -> bool {
        entry.vip == vip && entry.is_ours(&self.interface)
    }

    async fn send_add(
        &self,
        index: u32,
        vip: Vip,
        lifetime: Lifetime,
        replace: bool,
    ) -> Result<(), Cause> {
        let req = self.handle.address().add(index, vip.addr, vip.prefix_len);
        // Without `replace` rtnetlink sends NLM_F_CREATE | NLM_F_EXCL.
        let mut req = if replace { req.replace() } else { req };
        *req.message_mut() = self.add_message(index, vip, lifetime);
        req.execute()
            .await
            .map_err(|e| Cause::from_rtnetlink(&e, &self.interface))
    }

    /// Adds `vip` exclusively, or replaces it if it is already there as
    /// ha-vip's; the lifetime comes from `lifetime()`, asked right before
    /// each request so that it is as fresh as this side can make it.
    async fn put(
        &self,
        vip: Vip,
        lifetime: impl Fn() -> Option<Lifetime>,
    ) -> Result<Option<Lifetime>, VipError> {
        let err = |cause| VipError::Add {
            vip,
            interface: self.interface.clone(),
            cause,
        };
        let link = lookup_link(&self.handle, &self.interface)
            .await
            .map_err(err)?;
        let Some(l) = lifetime() else {
            return Ok(None);
        };
        match self.send_add(link.index, vip, l, false).await {
            Ok(()) => return Ok(Some(l)),
            Err(Cause::Errno(nix::libc::EEXIST)) => {}
            Err(cause) => return Err(err(cause)),
        }
        // Already there: a refresh of ours, or someone else's address.
        if let Some(entry) = self.matching(link.index, vip).await.map_err(err)?
            && !self.is_ours(&entry, vip)
        {
            return Err(err(Cause::NotOurs));
        }
        let Some(l) = lifetime() else {
            return Ok(None);
        };
        self.send_add(link.index, vip, l, true)
            .await
            .map(|()| Some(l))
            .map_err(err)
    }

    /// Addresses equal to one of `vips` (address alone, any prefix, any
    /// interface) that ha-vip did not add: they are refused at start.
    pub async fn foreign(&self, vips: &[Vip]) -> Result<Vec<Foreign>, VipError> {
        let err = |cause| VipError::List {
            interface: self.interface.clone(),
            cause,
        };
        let own = match lookup_link(&self.handle, &self.interface).await {
            Ok(link) => Some(link.index),
            Err(Cause::NoInterface(_)) => None,
            Err(cause) => return Err(err(cause)),
        };
        let mut names = std::collections::HashMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links
            .try_next()
            .await
            .map_err(|e| err(Cause::from_rtnetlink(&e, &self.interface)))?
        {
            for attr in &msg.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    names.insert(msg.header.index, name.clone());
                }
            }
        }
        let mut found = Vec::new();
        for entry in self.entries(None).await.map_err(err)? {
            for &vip in vips.iter().filter(|v| v.addr == entry.vip.addr) {
                if own == Some(entry.index) && self.is_ours(&entry, vip) {
                    continue;
                }
                found.push(Foreign {
                    vip,
                    interface: names
                        .get(&entry.index)
                        .cloned()
                        .unwrap_or_else(|| format!("link {}", entry.index)),
                    address: entry.vip,
                });
            }
        }
        Ok(found)
    }
}

impl AddressTable for NetlinkAddressTable {
    fn interface(&self) -> &str {
        &self.interface
    }

    async fn add_or_refresh(&self, vip: Vip, lifetime: Lifetime) -> Result<(), VipError> {
        self.put(vip, || Some(lifetime)).await.map(|_| ())
    }

    async fn add_until(&self, vip: Vip, until: Instant) -> Result<Option<Lifetime>, VipError> {
        self.put(vip, || {
            Lifetime::floor(until.saturating_duration_since(Instant::now()))
        })
        .await
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
        match self.matching(link.index, vip).await.map_err(err)? {
            None => return Ok(false),
            Some(entry) if !self.is_ours(&entry, vip) => {
                tracing::warn!(
                    %vip,
                    interface = %self.interface,
                    address = %entry.vip,
                    "not removing an address that ha-vip did not add"
                );
                return Ok(false);
            }
            Some(_) => {}
        }
        let mut msg = base_message(link.index, vip);
        // With the label the kernel deletes only the labelled (ours) one.
        if let (IpAddr::V4(_), Some(label)) = (vip.addr, label_for(&self.interface)) {
            msg.attributes.push(AddressAttribute::Label(label));
        }
        match self.handle.address().del(msg).execute().await {
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
        let mut found: Vec<Vip> = self
            .entries(Some(link.index))
            .await
            .map_err(err)?
            .into_iter()
            .filter(|e| vips.contains(&e.vip) && e.is_ours(&self.interface))
            .map(|e| e.vip)
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }
}
