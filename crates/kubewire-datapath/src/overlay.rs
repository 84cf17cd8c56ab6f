//! What an inter-node pod network needs beyond links and addresses: VXLAN devices, their
//! forwarding database (FDB), neighbour removal, and routes tagged with a routing protocol
//! number so that an owner can list, replace and delete only its own routes.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteProtocol;
use rtnetlink::LinkVxlan;

use crate::netlink::route_message;
use crate::{Error, Link, Mac, Netlink, Result, Route};

/// The routing protocol number kubewire's agent tags its inter-node pod routes with
/// (`ip route show proto 107`). Unassigned in iproute2's `rt_protos`.
pub const RTPROT_KUBEWIRE: u8 = 107;

/// A VXLAN device to create: unicast only (no multicast group, no learning; the owner fills the
/// FDB), sending from `local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// Destination UDP port (IANA: 4789; Linux's historical default and flannel's: 8472).
    pub port: u16,
    /// Underlay source address; its family is the underlay's.
    pub local: IpAddr,
    pub mac: Mac,
    pub mtu: Option<u32>,
}

/// The VXLAN settings of an existing device, as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    pub link: Link,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub learning: Option<bool>,
}

impl VxlanInfo {
    /// True when the device was made from `spec` (MTU aside, which can change in place).
    pub fn matches(&self, spec: &VxlanSpec<'_>) -> bool {
        self.vni == Some(spec.vni)
            && self.port == Some(spec.port)
            && self.local == Some(spec.local)
            && self.learning == Some(false)
            && self.link.mac == Some(spec.mac)
    }
}

/// A unicast FDB entry of a VXLAN device: frames for `mac` go to the VTEP at `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: Mac,
    pub dst: IpAddr,
}

impl Netlink {
    /// Creates a VXLAN device, administratively up.
    pub fn add_vxlan(&self, spec: &VxlanSpec<'_>) -> Result<()> {
        let mut b = LinkVxlan::new(spec.name, spec.vni)
            .port(spec.port)
            .learning(false);
        b = match spec.local {
            IpAddr::V4(v4) => b.local(v4),
            IpAddr::V6(v6) => b.local6(v6),
        };
        let mut b = b.build();
        b.attributes
            .push(LinkAttribute::Address(spec.mac.0.to_vec()));
        if let Some(mtu) = spec.mtu {
            b.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let req = self.handle.link().add(b);
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("add vxlan {}", spec.name), e))?;
        let link = self.link(spec.name)?.ok_or_else(|| {
            Error::Invalid(format!("vxlan {} vanished after creation", spec.name))
        })?;
        self.set_link_up(link.index, true)
    }

    /// The VXLAN device called `name`, if there is one (a link of another kind is `None`).
    pub fn vxlan(&self, name: &str) -> Result<Option<VxlanInfo>> {
        let req = self.handle.link().get().match_name(name.to_string());
        let msg = match self.rt.block_on(req.execute().try_next()) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) => {
                let e = Error::netlink(format!("get link {name}"), e);
                return if e.is_not_found() { Ok(None) } else { Err(e) };
            }
        };
        let link = crate::netlink::link_from(&msg);
        if link.kind.as_deref() != Some("vxlan") {
            return Ok(None);
        }
        let mut info = VxlanInfo {
            link,
            vni: None,
            port: None,
            local: None,
            learning: None,
        };
        let datas = msg.attributes.iter().filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        });
        for i in datas.flatten() {
            if let LinkInfo::Data(InfoData::Vxlan(attrs)) = i {
                for a in attrs {
                    match a {
                        InfoVxlan::Id(v) => info.vni = Some(*v),
                        InfoVxlan::Port(p) => info.port = Some(*p),
                        InfoVxlan::Local(v4) => info.local = Some(IpAddr::V4(*v4)),
                        InfoVxlan::Local6(v6) => info.local = Some(IpAddr::V6(*v6)),
                        InfoVxlan::Learning(l) => info.learning = Some(*l),
                        _ => {}
                    }
                }
            }
        }
        Ok(Some(info))
    }

    /// The unicast FDB entries with a remote destination on link `index`.
    pub fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        let req = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge);
        let msgs: Vec<NeighbourMessage> = self
            .rt
            .block_on(req.execute().try_collect())
            .map_err(|e| Error::netlink("dump fdb", e))?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| m.header.ifindex == index) {
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(b) => mac = Mac::from_slice(b),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        dst = Some(IpAddr::V4(*v4));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        dst = Some(IpAddr::V6(*v6));
                    }
                    // AF_BRIDGE messages carry NDA_DST as raw bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = <[u8; 4]>::try_from(b.as_slice())
                            .map(IpAddr::from)
                            .or_else(|_| <[u8; 16]>::try_from(b.as_slice()).map(IpAddr::from))
                            .ok();
                    }
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.push(FdbEntry { mac, dst });
            }
        }
        Ok(out)
    }

    /// Adds or replaces the permanent FDB entry `mac -> dst` on VXLAN link `index`
    /// (`bridge fdb replace MAC dev DEV dst DST self permanent`).
    pub fn set_fdb(&self, index: u32, entry: FdbEntry) -> Result<()> {
        let req = self
            .handle
            .neighbours()
            .add_bridge(index, &entry.mac.0)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .destination(entry.dst)
            .replace();
        self.rt.block_on(req.execute()).map_err(|e| {
            Error::netlink(
                format!("set fdb {} dst {} on link #{index}", entry.mac, entry.dst),
                e,
            )
        })
    }

    /// Deletes the FDB entry `mac -> dst` on link `index`.
    pub fn delete_fdb(&self, index: u32, entry: FdbEntry) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(
                entry.dst,
            )));
        let req = self.handle.neighbours().del(msg);
        self.rt.block_on(req.execute()).map_err(|e| {
            Error::netlink(
                format!(
                    "delete fdb {} dst {} on link #{index}",
                    entry.mac, entry.dst
                ),
                e,
            )
        })
    }

    /// Deletes the neighbour entry for `ip` on link `index`.
    pub fn delete_neighbour(&self, index: u32, ip: IpAddr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(ip)));
        let req = self.handle.neighbours().del(msg);
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("delete neighbour {ip} on link #{index}"), e))
    }

    /// Removes `addr` from link `index`.
    pub fn delete_address(&self, index: u32, addr: IpNet) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = match addr {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.index = index;
        msg.header.prefix_len = addr.prefix_len();
        msg.attributes.push(AddressAttribute::Local(addr.addr()));
        msg.attributes.push(AddressAttribute::Address(addr.addr()));
        let req = self.handle.address().del(msg);
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("delete address {addr} from link #{index}"), e))
    }

    /// The unicast routes of one family in `table` that carry routing protocol `proto`.
    pub fn routes_by_protocol(&self, v6: bool, table: u32, proto: u8) -> Result<Vec<Route>> {
        self.unicast_routes(v6, table, Some(proto))
    }

    /// Adds `route` tagged with `proto`, replacing a route to the same destination (whoever
    /// made it) in one step: traffic never sees the destination unrouted.
    pub fn replace_route_as(&self, route: &Route, proto: u8) -> Result<()> {
        let mut msg = route_message(route)?;
        msg.header.protocol = RouteProtocol::from(proto);
        let req = self.handle.route().add(msg).replace();
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("replace route {route:?}"), e))
    }

    /// Deletes `route` if it carries `proto` (the kernel matches the protocol on delete).
    pub fn delete_route_as(&self, route: &Route, proto: u8) -> Result<()> {
        let mut msg = route_message(route)?;
        msg.header.protocol = RouteProtocol::from(proto);
        let req = self.handle.route().del(msg);
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("delete route {route:?}"), e))
    }
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}
