//! The pure half of pod routing: from a snapshot of Nodes and the local node's name, what the
//! node's kernel should hold (routes to every other node's pod CIDRs, the VXLAN device, its FDB
//! and neighbours, the masquerade rules). No I/O; [`crate::apply`] makes it so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kubewire_datapath::Mac;
use kubewire_datapath::overlay::FdbEntry;

/// How pod traffic crosses between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Plain routes via the other node's InternalIP: nodes must share one L2 segment.
    Direct,
    /// A VXLAN overlay (like flannel's vxlan backend): works across L3 segments.
    Vxlan,
}

/// The agent's knobs that shape the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// Masquerade pod traffic leaving the cluster ("island" layout); false: "flat" layout.
    pub masquerade: bool,
    /// What counts as inside the cluster for masquerading; empty: every Node's pod CIDRs.
    pub cluster_cidrs: Vec<IpNet>,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
}

/// Name of the VXLAN device the agent owns.
pub const VXLAN_DEVICE: &str = "kubewire.vxlan";

/// What the agent needs of a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub pod_cidrs: Vec<IpNet>,
    pub internal_ips: Vec<IpAddr>,
}

impl NodeInfo {
    /// Reads a Node; values that do not parse are skipped (and listed in the second element).
    pub fn from_node(node: &Node) -> (NodeInfo, Vec<String>) {
        let mut bad = Vec::new();
        let name = node.metadata.name.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        let mut raw = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if raw.is_empty() {
            raw.extend(
                spec.and_then(|s| s.pod_cidr.clone())
                    .filter(|c| !c.is_empty()),
            );
        }
        let pod_cidrs = raw
            .iter()
            .filter_map(|c| match c.parse::<IpNet>() {
                Ok(n) => Some(n.trunc()),
                Err(_) => {
                    bad.push(format!("Node {name}: podCIDR {c:?} is not a CIDR"));
                    None
                }
            })
            .collect();
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        let internal_ips = addresses
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| match a.address.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    bad.push(format!(
                        "Node {name}: InternalIP {:?} is not an IP",
                        a.address
                    ));
                    None
                }
            })
            .collect();
        (
            NodeInfo {
                name,
                pod_cidrs,
                internal_ips,
            },
            bad,
        )
    }

    fn ip_of_family(&self, v4: bool) -> Option<IpAddr> {
        self.internal_ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == v4)
    }
}

/// A route to another node's pod CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub gateway: IpAddr,
    /// Out of the VXLAN device, gateway on-link (the remote VTEP's address); else via the
    /// gateway's connected network.
    pub vxlan: bool,
}

/// The VXLAN device and what it must know about every remote node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanState {
    pub local: IpAddr,
    pub mac: Mac,
    /// The node's own address of each pod CIDR (first host; the CNI plugin never hands it out),
    /// as /32 and /128: the source of node-originated traffic into the overlay.
    pub addresses: Vec<IpNet>,
    pub fdb: BTreeSet<FdbEntry>,
    pub neighbours: BTreeMap<IpAddr, Mac>,
}

/// The masquerade rules: traffic from `local` pod CIDRs to anything outside `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub local: Vec<IpNet>,
    pub cluster: Vec<IpNet>,
}

/// Everything the node should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The local node's pod CIDRs (empty until node IPAM has given some).
    pub pod_cidrs: Vec<IpNet>,
    /// The local node's underlay address for `mode` (InternalIP), if it has one.
    pub node_ip: Option<IpAddr>,
    pub routes: BTreeMap<IpNet, NextHop>,
    pub vxlan: Option<VxlanState>,
    pub masquerade: Option<Masquerade>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("there is no Node called {0:?}")]
    NoLocalNode(String),
}

/// The VTEP MAC of a node, derived from its underlay address, so that no node has to publish it
/// (flannel puts it in an annotation): locally administered unicast `0e:6b` + the IPv4 address,
/// or + 4 bytes of an FNV-1a hash of the IPv6 address.
pub fn vtep_mac(underlay: IpAddr) -> Mac {
    let tail: [u8; 4] = match underlay {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in v6.octets() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            let b = h.to_be_bytes();
            [b[0] ^ b[4], b[1] ^ b[5], b[2] ^ b[6], b[3] ^ b[7]]
        }
    };
    Mac([0x0e, 0x6b, tail[0], tail[1], tail[2], tail[3]])
}

/// The first host address of a pod CIDR (network + 1), as a host prefix; `None` for CIDRs too
/// small to have one (the CNI plugin refuses those anyway).
fn first_host(cidr: IpNet) -> Option<IpNet> {
    let ip = match cidr {
        IpNet::V4(n) if n.prefix_len() < 31 => {
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1))
        }
        IpNet::V6(n) if n.prefix_len() < 127 => {
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1))
        }
        _ => return None,
    };
    IpNet::new(ip, cidr.max_prefix_len()).ok()
}

/// The first host of a pod CIDR as an address (the CIDR's own network when it has no hosts).
fn first_host_ip(cidr: IpNet) -> IpAddr {
    first_host(cidr).map_or(cidr.network(), |n| n.addr())
}

/// Computes the desired state of node `local` from `nodes`. Problems that leave one remote node
/// unreachable (no InternalIP of the family it needs) are listed in the second element; the rest
/// of the cluster is still routed.
pub fn compile(
    nodes: &[NodeInfo],
    local: &str,
    settings: &Settings,
) -> Result<(Desired, Vec<String>), CompileError> {
    let me = nodes
        .iter()
        .find(|n| n.name == local)
        .ok_or_else(|| CompileError::NoLocalNode(local.to_string()))?;
    let mut warnings = Vec::new();
    // Underlay family: the local node's first InternalIP (VXLAN); direct mode routes each pod
    // family via the other node's InternalIP of that family.
    let node_ip = me.internal_ips.first().copied();
    let mut routes = BTreeMap::new();
    let mut vxlan = match (settings.mode, node_ip) {
        (Mode::Vxlan, Some(ip)) => Some(VxlanState {
            local: ip,
            mac: vtep_mac(ip),
            addresses: me.pod_cidrs.iter().filter_map(|c| first_host(*c)).collect(),
            fdb: BTreeSet::new(),
            neighbours: BTreeMap::new(),
        }),
        (Mode::Vxlan, None) => {
            warnings.push(format!(
                "Node {local} has no InternalIP: no VXLAN device, no routes to other nodes"
            ));
            None
        }
        (Mode::Direct, _) => None,
    };
    let local_cidrs: BTreeSet<IpNet> = me.pod_cidrs.iter().copied().collect();
    for other in nodes.iter().filter(|n| n.name != local) {
        for &cidr in &other.pod_cidrs {
            if local_cidrs
                .iter()
                .any(|l| l.contains(&cidr) || cidr.contains(l))
            {
                warnings.push(format!(
                    "Node {}: pod CIDR {cidr} overlaps this node's; not routed",
                    other.name
                ));
                continue;
            }
            match (settings.mode, &mut vxlan) {
                (Mode::Direct, _) => match other.ip_of_family(cidr.addr().is_ipv4()) {
                    Some(gateway) => {
                        routes.insert(
                            cidr,
                            NextHop {
                                gateway,
                                vxlan: false,
                            },
                        );
                    }
                    None => warnings.push(format!(
                        "Node {}: no InternalIP of {cidr}'s family; {cidr} not routed",
                        other.name
                    )),
                },
                (Mode::Vxlan, Some(vx)) => {
                    let Some(remote) = other.ip_of_family(vx.local.is_ipv4()) else {
                        warnings.push(format!(
                            "Node {}: no InternalIP of the underlay's family; {cidr} not routed",
                            other.name
                        ));
                        continue;
                    };
                    let mac = vtep_mac(remote);
                    let gateway = first_host_ip(cidr);
                    vx.fdb.insert(FdbEntry { mac, dst: remote });
                    vx.neighbours.insert(gateway, mac);
                    routes.insert(
                        cidr,
                        NextHop {
                            gateway,
                            vxlan: true,
                        },
                    );
                }
                (Mode::Vxlan, None) => {}
            }
        }
    }
    let masquerade = (settings.masquerade && !me.pod_cidrs.is_empty()).then(|| {
        let inside: Vec<IpNet> = if settings.cluster_cidrs.is_empty() {
            nodes
                .iter()
                .flat_map(|n| n.pod_cidrs.iter().copied())
                .collect()
        } else {
            settings.cluster_cidrs.clone()
        };
        Masquerade {
            local: me.pod_cidrs.clone(),
            cluster: IpNet::aggregate(&inside),
        }
    });
    Ok((
        Desired {
            pod_cidrs: me.pod_cidrs.clone(),
            node_ip,
            routes,
            vxlan,
            masquerade,
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(name: &str, cidrs: &[&str], ips: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            internal_ips: ips.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    fn settings(mode: Mode) -> Settings {
        Settings {
            mode,
            masquerade: true,
            cluster_cidrs: vec![],
            vxlan_vni: 1,
            vxlan_port: 4789,
        }
    }

    fn cluster() -> Vec<NodeInfo> {
        vec![
            info(
                "a",
                &["10.244.0.0/24", "fd00:10:244::/64"],
                &["192.0.2.1", "2001:db8::1"],
            ),
            info(
                "b",
                &["10.244.1.0/24", "fd00:10:244:1::/64"],
                &["192.0.2.2", "2001:db8::2"],
            ),
            info(
                "c",
                &["10.244.2.0/24", "fd00:10:244:2::/64"],
                &["192.0.2.3"],
            ),
            info("pending", &[], &["192.0.2.4"]),
        ]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn reads_nodes() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "a"},
                {"type": "InternalIP", "address": "192.0.2.1"},
                {"type": "InternalIP", "address": "nope"},
            ]},
        }))
        .unwrap();
        let (n, bad) = NodeInfo::from_node(&node);
        assert_eq!(n, info("a", &["10.244.0.0/24"], &["192.0.2.1"]));
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn direct_routes_each_family_via_the_node_ip_of_that_family() {
        let (d, warnings) = compile(&cluster(), "a", &settings(Mode::Direct)).unwrap();
        let hop = |g: &str| NextHop {
            gateway: ip(g),
            vxlan: false,
        };
        assert_eq!(d.routes.len(), 3, "{:?}", d.routes);
        assert_eq!(d.routes[&net("10.244.1.0/24")], hop("192.0.2.2"));
        assert_eq!(d.routes[&net("fd00:10:244:1::/64")], hop("2001:db8::2"));
        assert_eq!(d.routes[&net("10.244.2.0/24")], hop("192.0.2.3"));
        assert_eq!(warnings.len(), 1, "c has no IPv6 InternalIP: {warnings:?}");
        assert!(d.vxlan.is_none());
        assert_eq!(d.node_ip, Some(ip("192.0.2.1")));
    }

    #[test]
    fn vxlan_routes_both_families_over_the_underlay() {
        let (d, warnings) = compile(&cluster(), "a", &settings(Mode::Vxlan)).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let vx = d.vxlan.unwrap();
        assert_eq!(vx.local, ip("192.0.2.1"));
        assert_eq!(vx.mac.to_string(), "0e:6b:c0:00:02:01");
        assert_eq!(
            vx.addresses,
            vec![net("10.244.0.1/32"), net("fd00:10:244::1/128")]
        );
        assert_eq!(d.routes.len(), 4);
        let r = d.routes[&net("fd00:10:244:2::/64")];
        assert_eq!(r.gateway, ip("fd00:10:244:2::1"));
        assert!(r.vxlan);
        let mac_c = vtep_mac(ip("192.0.2.3"));
        assert_eq!(vx.neighbours[&ip("fd00:10:244:2::1")], mac_c);
        assert_eq!(vx.neighbours[&ip("10.244.2.1")], mac_c);
        assert!(vx.fdb.contains(&FdbEntry {
            mac: mac_c,
            dst: ip("192.0.2.3")
        }));
        assert_eq!(vx.fdb.len(), 2, "one entry per remote node");
    }

    #[test]
    fn masquerade_inside_is_the_cluster() {
        let (d, _) = compile(&cluster(), "b", &settings(Mode::Direct)).unwrap();
        let m = d.masquerade.unwrap();
        assert_eq!(
            m.local,
            vec![net("10.244.1.0/24"), net("fd00:10:244:1::/64")]
        );
        // Adjacent node CIDRs aggregate.
        assert!(m.cluster.contains(&net("10.244.0.0/23")), "{:?}", m.cluster);
        let mut s = settings(Mode::Direct);
        s.cluster_cidrs = vec![net("10.244.0.0/16")];
        let (d, _) = compile(&cluster(), "b", &s).unwrap();
        assert_eq!(d.masquerade.unwrap().cluster, vec![net("10.244.0.0/16")]);
        s.masquerade = false;
        assert!(compile(&cluster(), "b", &s).unwrap().0.masquerade.is_none());
        // A node without pod CIDRs has no pods to masquerade, but routes to the others.
        let (d, _) = compile(&cluster(), "pending", &settings(Mode::Direct)).unwrap();
        assert!(d.masquerade.is_none());
        assert_eq!(d.routes.len(), 5);
    }

    #[test]
    fn deleted_nodes_lose_their_routes_and_unknown_local_is_an_error() {
        let mut nodes = cluster();
        nodes.retain(|n| n.name != "b");
        let (d, _) = compile(&nodes, "a", &settings(Mode::Vxlan)).unwrap();
        assert!(!d.routes.contains_key(&net("10.244.1.0/24")));
        assert_eq!(d.vxlan.unwrap().fdb.len(), 1);
        assert_eq!(
            compile(&nodes, "b", &settings(Mode::Vxlan)),
            Err(CompileError::NoLocalNode("b".into()))
        );
    }

    #[test]
    fn overlapping_cidrs_are_not_routed() {
        let nodes = vec![
            info("a", &["10.244.0.0/24"], &["192.0.2.1"]),
            info("b", &["10.244.0.0/25"], &["192.0.2.2"]),
        ];
        let (d, warnings) = compile(&nodes, "a", &settings(Mode::Direct)).unwrap();
        assert!(d.routes.is_empty());
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn ipv6_vtep_macs_are_stable_and_distinct() {
        let a = vtep_mac(ip("2001:db8::1"));
        assert_eq!(a, vtep_mac(ip("2001:db8::1")));
        assert_ne!(a, vtep_mac(ip("2001:db8::2")));
        assert_eq!(a.0[0], 0x0e);
    }
}
