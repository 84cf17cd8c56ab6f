//! What a lab is made of, as a pure function of its name, index and size: the names of its
//! namespaces, links and files, and every address. Two labs differ in their index, so they can
//! run side by side.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Which IP families the cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
    Dual,
}

impl IpFamily {
    pub fn v4(self) -> bool {
        self != IpFamily::Ipv6
    }

    pub fn v6(self) -> bool {
        self != IpFamily::Ipv4
    }
}

/// Labs are numbered 0..MAX_LABS; the index picks the lab network.
pub const MAX_LABS: u8 = 200;
pub const API_PORT: u16 = 6443;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub index: u8,
    pub nodes: u8,
    pub zones: u8,
    pub family: IpFamily,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub netns: String,
    /// The node's end of its link to the lab bridge, in the host namespace.
    pub host_link: String,
    pub addresses: Vec<IpNet>,
    pub zone: String,
}

impl Plan {
    pub fn new(name: &str, index: u8, nodes: u8, zones: u8, family: IpFamily, root: &Path) -> Self {
        Self {
            name: name.to_string(),
            index,
            nodes,
            zones: zones.max(1),
            family,
            dir: root.join(name),
        }
    }

    /// The bridge in the host namespace that joins the nodes (the "LAN").
    pub fn bridge(&self) -> String {
        format!("kwlab{}", self.index)
    }

    /// The host's addresses on the lab network; the API server listens on the first.
    pub fn host_addresses(&self) -> Vec<IpNet> {
        self.addresses_for(1)
    }

    pub fn api_address(&self) -> IpAddr {
        self.host_addresses()[0].addr()
    }

    /// Where load-balancer IPs come from: off the lab network (198.19.<index>.0/24, the other
    /// half of RFC 2544's range, and fd6b:7769:7266:<index>::/112), routed by the host to every
    /// node alike, as a load balancer in front of the cluster would.
    pub fn load_balancer_cidrs(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        if self.family.v4() {
            out.push(IpNet::new(IpAddr::from([198, 19, self.index, 0]), 24).expect("valid prefix"));
        }
        if self.family.v6() {
            let v6 =
                std::net::Ipv6Addr::new(0xfd6b, 0x7769, 0x7266, u16::from(self.index), 0, 0, 0, 0);
            out.push(IpNet::new(IpAddr::V6(v6), 112).expect("valid prefix"));
        }
        if self.family == IpFamily::Ipv6 {
            out.reverse();
        }
        out
    }

    fn addresses_for(&self, host: u8) -> Vec<IpNet> {
        let mut out = Vec::new();
        // 198.18.0.0/15 is set aside for network test labs (RFC 2544).
        if self.family.v4() {
            out.push(
                IpNet::new(IpAddr::from([198, 18, self.index, host]), 24).expect("valid prefix"),
            );
        }
        if self.family.v6() {
            let v6 = std::net::Ipv6Addr::new(
                0xfd6b,
                0x7769,
                0x7265,
                u16::from(self.index),
                0,
                0,
                0,
                u16::from(host),
            );
            out.push(IpNet::new(IpAddr::V6(v6), 64).expect("valid prefix"));
        }
        if self.family == IpFamily::Ipv6 {
            out.reverse();
        }
        out
    }

    pub fn nodes(&self) -> Vec<NodePlan> {
        (0..self.nodes)
            .map(|i| NodePlan {
                name: format!("{}-node{i}", self.name),
                netns: format!("kwlab{}-node{i}", self.index),
                host_link: format!("kwlab{}n{i}", self.index),
                addresses: self.addresses_for(10 + i),
                zone: format!("zone-{}", char::from(b'a' + (i % self.zones.min(26)))),
            })
            .collect()
    }

    /// Pod namespaces of this lab start with this (the kubelet names them).
    pub fn netns_prefix(&self) -> String {
        format!("kwlab{}-", self.index)
    }

    pub fn service_cidrs(&self) -> Vec<IpNet> {
        self.pick(&["10.96.0.0/16", "fd00:10:96::/112"])
    }

    pub fn cluster_cidrs(&self) -> Vec<IpNet> {
        self.pick(&["10.244.0.0/16", "fd00:10:244::/56"])
    }

    /// The cluster DNS address a kubelet writes into resolv.conf: the tenth address of the
    /// service range, as kubeadm does.
    pub fn cluster_dns(&self) -> Vec<IpAddr> {
        self.pick(&["10.96.0.10/32", "fd00:10:96::a/128"])
            .iter()
            .map(IpNet::addr)
            .collect()
    }

    fn pick(&self, both: &[&str; 2]) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = Vec::new();
        if self.family.v4() {
            out.push(both[0].parse().expect("literal CIDR"));
        }
        if self.family.v6() {
            out.push(both[1].parse().expect("literal CIDR"));
        }
        out
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("apiserver").join("kubeconfig")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

/// The lowest index not used by another lab.
pub fn free_index(used: &[u8]) -> Option<u8> {
    (0..MAX_LABS).find(|i| !used.contains(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(family: IpFamily) -> Plan {
        Plan::new("demo", 3, 3, 2, family, Path::new("/var/lib/kubewire/lab"))
    }

    #[test]
    fn names_fit_interface_limits_and_addresses_are_per_lab() {
        let p = plan(IpFamily::Dual);
        assert!(p.bridge().len() <= 15);
        let nodes = p.nodes();
        assert_eq!(nodes.len(), 3);
        for n in &nodes {
            assert!(n.host_link.len() <= 15, "{}", n.host_link);
            assert!(n.netns.starts_with(&p.netns_prefix()));
        }
        assert_eq!(nodes[1].addresses[0].to_string(), "198.18.3.11/24");
        assert_eq!(nodes[1].addresses[1].to_string(), "fd6b:7769:7265:3::b/64");
        assert_eq!(p.api_address().to_string(), "198.18.3.1");
        assert_eq!(
            [
                nodes[0].zone.as_str(),
                nodes[1].zone.as_str(),
                nodes[2].zone.as_str()
            ],
            ["zone-a", "zone-b", "zone-a"]
        );
    }

    #[test]
    fn families() {
        let v6 = plan(IpFamily::Ipv6);
        assert_eq!(v6.api_address().to_string(), "fd6b:7769:7265:3::1");
        assert_eq!(v6.service_cidrs().len(), 1);
        assert!(v6.cluster_dns()[0].is_ipv6());
        let v4 = plan(IpFamily::Ipv4);
        assert_eq!(v4.nodes()[0].addresses.len(), 1);
        assert_eq!(plan(IpFamily::Dual).cluster_cidrs().len(), 2);
        let pools: Vec<String> = plan(IpFamily::Dual)
            .load_balancer_cidrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(pools, ["198.19.3.0/24", "fd6b:7769:7266:3::/112"]);
        assert_eq!(
            v6.load_balancer_cidrs()[0].to_string(),
            "fd6b:7769:7266:3::/112"
        );
    }

    #[test]
    fn indexes() {
        assert_eq!(free_index(&[]), Some(0));
        assert_eq!(free_index(&[0, 1, 3]), Some(2));
        let all: Vec<u8> = (0..MAX_LABS).collect();
        assert_eq!(free_index(&all), None);
    }
}
