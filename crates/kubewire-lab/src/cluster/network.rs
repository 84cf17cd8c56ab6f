//! The lab network in the kernel: a bridge in the host namespace (the "LAN"), and per node a
//! network namespace joined to it by a veth pair. Creation runs from the host namespace.

use ipnet::IpNet;
use kubewire_datapath::{NetNs, Netlink, Route, VethSpec};

use super::plan::Plan;
use crate::LabError;

/// The node's end of its link, inside the node namespace.
pub const NODE_LINK: &str = "eth0";

pub fn create(plan: &Plan) -> Result<(), LabError> {
    let nl = Netlink::open()?;
    let bridge = plan.bridge();
    nl.add_bridge(&bridge)?;
    let br = nl.link(&bridge)?.ok_or_else(|| missing(&bridge))?.index;
    for addr in plan.host_addresses() {
        nl.add_address(br, addr, true)?;
    }
    nl.set_link_up(br, true)?;
    for node in plan.nodes() {
        let ns = NetNs::create_named(&node.netns)?;
        nl.add_veth(&VethSpec {
            name: &node.host_link,
            mac: None,
            peer_name: NODE_LINK,
            peer_mac: None,
            peer_netns: Some(&ns),
            mtu: None,
            up: true,
        })?;
        let host_end = nl
            .link(&node.host_link)?
            .ok_or_else(|| missing(&node.host_link))?
            .index;
        nl.set_link_master(host_end, br)?;
        let inside = Netlink::open_in(&ns)?;
        inside.set_link_up_by_name("lo")?;
        let eth = inside
            .link(NODE_LINK)?
            .ok_or_else(|| missing(NODE_LINK))?
            .index;
        for addr in &node.addresses {
            inside.add_address(eth, *addr, true)?;
        }
        inside.set_link_up(eth, true)?;
        // Everything off the lab network goes through the host, as through a LAN's router.
        for host in plan.host_addresses() {
            let default: IpNet = if host.addr().is_ipv4() {
                "0.0.0.0/0".parse()
            } else {
                "::/0".parse()
            }
            .expect("literal CIDR");
            inside.add_route(&Route::via(default, host.addr(), eth))?;
        }
    }
    // The host is the lab's load balancer: it spreads load-balancer IPs over every node (ECMP);
    // each node's proxy takes them from there.
    let nodes = plan.nodes();
    for pool in plan.load_balancer_cidrs() {
        let gateways: Vec<std::net::IpAddr> = nodes
            .iter()
            .flat_map(|n| &n.addresses)
            .map(IpNet::addr)
            .filter(|a| a.is_ipv4() == pool.addr().is_ipv4())
            .collect();
        nl.replace_multipath_route(pool, &gateways, br)?;
    }
    Ok(())
}

fn missing(link: &str) -> LabError {
    LabError::Io {
        context: format!("link {link} vanished right after it was created"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

/// Removes every namespace whose name starts with the lab's prefix (nodes and pods), the node
/// links and the bridge. Missing pieces are fine: `down` must work after any crash.
pub fn destroy(plan: &Plan) -> Vec<String> {
    let mut problems = Vec::new();
    for name in lab_namespaces(plan) {
        if let Err(e) = NetNs::delete_named(&name) {
            problems.push(format!("namespace {name}: {e}"));
        }
    }
    match Netlink::open() {
        Ok(nl) => {
            for link in plan
                .nodes()
                .iter()
                .map(|n| n.host_link.clone())
                .chain([plan.bridge()])
            {
                if let Err(e) = nl.delete_link_by_name(&link) {
                    problems.push(format!("link {link}: {e}"));
                }
            }
        }
        Err(e) => problems.push(format!("netlink: {e}")),
    }
    problems
}

/// The names under /run/netns that belong to this lab: its nodes (by prefix) and its pods (by
/// the kubelets' sandbox records in the lab directory).
pub fn lab_namespaces(plan: &Plan) -> Vec<String> {
    let prefix = plan.netns_prefix();
    let pods: Vec<String> = plan
        .nodes()
        .iter()
        .flat_map(|n| {
            std::fs::read_dir(plan.dir.join(&n.name).join("pods"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|e| Some(crate::Sandbox::load(&e.path())?.netns_name))
        .collect();
    std::fs::read_dir(kubewire_datapath::NETNS_RUN_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix) || pods.contains(n))
                .collect()
        })
        .unwrap_or_default()
}
