//! A blocking rtnetlink client bound to one network namespace.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::str::FromStr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder, RouteNextHopBuilder,
};
use tokio::runtime::Runtime;

use crate::{Error, NetNs, Result};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mac> {
        let bad = || Error::Invalid(format!("bad MAC address {s:?}"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl Mac {
    pub(crate) fn from_slice(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// `veth`, `bridge`, `dummy`...; `None` for devices without a kind (loopback, physical).
    pub kind: Option<String>,
}

/// A veth pair to create. The peer can be placed straight into another namespace, so that a
/// single request builds both ends (no rename or move afterwards).
#[derive(Debug)]
pub struct VethSpec<'a> {
    pub name: &'a str,
    pub mac: Option<Mac>,
    pub peer_name: &'a str,
    pub peer_mac: Option<Mac>,
    pub peer_netns: Option<&'a NetNs>,
    pub mtu: Option<u32>,
    /// Create the first end administratively up. The peer is always created down: the kernel
    /// refuses IFF_UP on a veth peer at creation (ENOTCONN, seen on 6.18); bring it up from its
    /// namespace with [`Netlink::set_link_up`].
    pub up: bool,
}

/// A route in the main table (or `table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Scope link (a directly connected destination); otherwise universe.
    pub scope_link: bool,
    /// RTNH_F_ONLINK: the gateway is on the link even without a matching prefix.
    pub onlink: bool,
    pub table: u32,
}

impl Route {
    /// A route to `dst` straight out of interface `oif` (scope link).
    pub fn direct(dst: IpNet, oif: u32) -> Route {
        Route {
            dst,
            gateway: None,
            oif: Some(oif),
            scope_link: true,
            onlink: false,
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
        }
    }

    /// A route to `dst` via `gateway` out of `oif`.
    pub fn via(dst: IpNet, gateway: IpAddr, oif: u32) -> Route {
        Route {
            dst,
            gateway: Some(gateway),
            oif: Some(oif),
            scope_link: false,
            onlink: false,
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
        }
    }

    /// Marks the gateway as on-link (needed for a v4 gateway outside every local prefix).
    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }
}

/// A neighbour (ARP/NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Option<Mac>,
    pub permanent: bool,
}

/// A blocking rtnetlink client. Its socket lives in the namespace of the thread that opened it,
/// whatever thread uses it later. Do not use it from inside an async runtime (it runs its own
/// `current_thread` runtime); from async code, use `spawn_blocking` or a dedicated thread.
pub struct Netlink {
    pub(crate) rt: Runtime,
    pub(crate) handle: Handle,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Netlink")
    }
}

impl Netlink {
    /// Opens a client in the calling thread's namespace.
    pub fn open() -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::io("start netlink runtime", e))?;
        let handle = {
            let _ctx = rt.enter();
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| Error::io("open netlink socket", e))?;
            rt.spawn(conn);
            handle
        };
        Ok(Netlink { rt, handle })
    }

    /// Opens a client whose socket lives in `ns` (the calling thread enters `ns` for the
    /// duration of the call only).
    pub fn open_in(ns: &NetNs) -> Result<Netlink> {
        let _guard = ns.enter()?;
        Netlink::open()
    }

    // ---- links ----

    /// The link called `name`, if any.
    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        let req = self.handle.link().get().match_name(name.to_string());
        match self.rt.block_on(req.execute().try_next()) {
            Ok(msg) => Ok(msg.map(|m| link_from(&m))),
            Err(e) => {
                let e = Error::netlink(format!("get link {name}"), e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// The link with index `index`, if any.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let req = self.handle.link().get().match_index(index);
        match self.rt.block_on(req.execute().try_next()) {
            Ok(msg) => Ok(msg.map(|m| link_from(&m))),
            Err(e) => {
                let e = Error::netlink(format!("get link #{index}"), e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// All links.
    pub fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<_> = self
            .rt
            .block_on(self.handle.link().get().execute().try_collect())
            .map_err(|e| Error::netlink("dump links", e))?;
        Ok(msgs.iter().map(link_from).collect())
    }

    /// Creates a veth pair in one request.
    pub fn add_veth(&self, spec: &VethSpec<'_>) -> Result<()> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(spec.peer_name);
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.0.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(ns) = spec.peer_netns {
            peer = peer.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        let mut b = LinkVeth::new(spec.name, spec.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mac) = spec.mac {
            b = b.address(mac.0.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        if spec.up {
            b = b.up();
        }
        let req = self.handle.link().add(b.build());
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("add veth {}/{}", spec.name, spec.peer_name), e))
    }

    /// Sets a link administratively up or down.
    pub fn set_link_up(&self, index: u32, up: bool) -> Result<()> {
        let b = LinkUnspec::new_with_index(index);
        let b = if up { b.up() } else { b.down() };
        let req = self.handle.link().set(b.build());
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("set link #{index} up={up}"), e))
    }

    /// Sets a link's MTU.
    pub fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let req = self
            .handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build());
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("set link #{index} mtu {mtu}"), e))
    }

    /// Brings the link called `name` up (handy for `lo` in a fresh namespace).
    pub fn set_link_up_by_name(&self, name: &str) -> Result<()> {
        let link = self
            .link(name)?
            .ok_or_else(|| Error::Invalid(format!("no link called {name}")))?;
        self.set_link_up(link.index, true)
    }

    /// Deletes a link (for a veth, both ends go).
    pub fn delete_link(&self, index: u32) -> Result<()> {
        let req = self.handle.link().del(index);
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("delete link #{index}"), e))
    }

    /// Deletes the link called `name`; returns false when there was none.
    pub fn delete_link_by_name(&self, name: &str) -> Result<bool> {
        let Some(link) = self.link(name)? else {
            return Ok(false);
        };
        match self.delete_link(link.index) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- addresses ----

    /// Adds `addr` to link `index`. `nodad` skips IPv6 duplicate address detection, so the
    /// address is usable at once instead of staying tentative for a second or two.
    pub fn add_address(&self, index: u32, addr: IpNet, nodad: bool) -> Result<()> {
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if nodad {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("add address {addr} to link #{index}"), e))
    }

    /// The addresses of link `index` (all links when `None`), as (link index, address).
    pub fn addresses(&self, index: Option<u32>) -> Result<Vec<(u32, IpNet)>> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let msgs: Vec<_> = self
            .rt
            .block_on(req.execute().try_collect())
            .map_err(|e| Error::netlink("dump addresses", e))?;
        let mut out = Vec::new();
        for m in msgs {
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = addr.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr
                && let Ok(net) = IpNet::new(ip, m.header.prefix_len)
            {
                out.push((m.header.index, net));
            }
        }
        Ok(out)
    }

    // ---- routes ----

    /// Adds a route (fails with EEXIST when it is there already).
    pub fn add_route(&self, route: &Route) -> Result<()> {
        let msg = route_message(route)?;
        let req = self.handle.route().add(msg);
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("add route {route:?}"), e))
    }

    /// Adds or replaces a route to `dst` spread over `gateways` (equal-cost multipath), each
    /// reached out of `oif`.
    pub fn replace_multipath_route(&self, dst: IpNet, gateways: &[IpAddr], oif: u32) -> Result<()> {
        let context = || format!("multipath route {dst} via {gateways:?}");
        let mut hops = Vec::with_capacity(gateways.len());
        for gw in gateways {
            if gw.is_ipv4() != dst.addr().is_ipv4() {
                return Err(Error::Invalid(format!(
                    "gateway {gw} and destination {dst} differ in family"
                )));
            }
            let hop = if gw.is_ipv4() {
                RouteNextHopBuilder::new_ipv4()
            } else {
                RouteNextHopBuilder::new_ipv6()
            };
            hops.push(
                hop.interface(oif)
                    .via(*gw)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", context())))?
                    .build(),
            );
        }
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .map_err(|e| Error::Invalid(e.to_string()))?
            .multipath(hops)
            .protocol(RouteProtocol::Static)
            .build();
        let req = self.handle.route().add(msg).replace();
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(context(), e))
    }

    /// Deletes a route.
    pub fn delete_route(&self, route: &Route) -> Result<()> {
        let msg = route_message(route)?;
        let req = self.handle.route().del(msg);
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("delete route {route:?}"), e))
    }

    /// The unicast routes of one family (`v6` false: IPv4) in `table` (254 = main).
    pub fn routes(&self, v6: bool, table: u32) -> Result<Vec<Route>> {
        self.unicast_routes(v6, table, None)
    }

    /// The unicast routes of one family in `table`, only those of routing protocol `proto` if
    /// given.
    pub(crate) fn unicast_routes(
        &self,
        v6: bool,
        table: u32,
        proto: Option<u8>,
    ) -> Result<Vec<Route>> {
        let query = if v6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let msgs: Vec<RouteMessage> = self
            .rt
            .block_on(self.handle.route().get(query).execute().try_collect())
            .map_err(|e| Error::netlink("dump routes", e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.kind == netlink_packet_route::route::RouteType::Unicast)
            .filter(|m| proto.is_none_or(|p| u8::from(m.header.protocol) == p))
            .filter_map(|m| route_from(m, v6))
            .filter(|r| r.table == table)
            .collect())
    }

    // ---- neighbours ----

    /// Adds (or replaces) a permanent neighbour entry `ip -> mac` on link `index`.
    pub fn set_neighbour(&self, index: u32, ip: IpAddr, mac: Mac) -> Result<()> {
        let req = self
            .handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace();
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("set neighbour {ip} {mac} on link #{index}"), e))
    }

    /// The neighbour entries of link `index`.
    pub fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        let msgs: Vec<_> = self
            .rt
            .block_on(self.handle.neighbours().get().execute().try_collect())
            .map_err(|e| Error::netlink("dump neighbours", e))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.ifindex != index
                || !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6)
            {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(*v4));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(*v6));
                    }
                    NeighbourAttribute::LinkLayerAddress(b) => mac = Mac::from_slice(b),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Neighbour {
                    ifindex: m.header.ifindex,
                    ip,
                    mac,
                    permanent: m.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }
}

/// The route a dumped message describes (any type; callers filter), `None` when malformed.
fn route_from(m: &RouteMessage, v6: bool) -> Option<Route> {
    let mut table = u32::from(m.header.table);
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(x) => table = *x,
            RouteAttribute::Destination(addr) => dst = route_ip(addr),
            RouteAttribute::Gateway(addr) => gateway = route_ip(addr),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let unspecified = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let dst = IpNet::new(
        dst.unwrap_or(unspecified),
        m.header.destination_prefix_length,
    )
    .ok()?;
    Some(Route {
        dst,
        gateway,
        oif,
        scope_link: m.header.scope == RouteScope::Link,
        onlink: m
            .header
            .flags
            .contains(netlink_packet_route::route::RouteFlags::Onlink),
        table,
    })
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(crate) fn route_message(route: &Route) -> Result<RouteMessage> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix_len())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    if let Some(gw) = route.gateway {
        if gw.is_ipv4() != route.dst.addr().is_ipv4() {
            return Err(Error::Invalid(format!(
                "gateway {gw} and destination {} differ in family",
                route.dst
            )));
        }
        b = b.gateway(gw).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    if let Some(oif) = route.oif {
        b = b.output_interface(oif);
    }
    if route.scope_link {
        b = b.scope(RouteScope::Link);
    }
    if route.onlink {
        b = b.onlink();
    }
    b = b.protocol(RouteProtocol::Static).table_id(route.table);
    Ok(b.build())
}

pub(crate) fn link_from(m: &netlink_packet_route::link::LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        up: m.header.flags.contains(LinkFlags::Up),
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name.clone_from(n),
            LinkAttribute::Address(b) => link.mac = Mac::from_slice(b),
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m: Mac = "ee:ee:ee:ee:ee:0a".parse().unwrap();
        assert_eq!(m.0, [0xee, 0xee, 0xee, 0xee, 0xee, 0x0a]);
        assert_eq!(m.to_string(), "ee:ee:ee:ee:ee:0a");
        assert!("ee:ee".parse::<Mac>().is_err());
        assert!("ee:ee:ee:ee:ee:ee:ee".parse::<Mac>().is_err());
        assert!("zz:ee:ee:ee:ee:ee".parse::<Mac>().is_err());
    }

    #[test]
    fn route_message_rejects_mixed_families() {
        let r = Route::via("10.0.0.0/8".parse().unwrap(), "fe80::1".parse().unwrap(), 1);
        assert!(route_message(&r).is_err());
    }
}
