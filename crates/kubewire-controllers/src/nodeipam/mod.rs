//! Node IPAM: gives every Node `spec.podCIDR`/`spec.podCIDRs` from the cluster CIDRs, as
//! kube-controller-manager's RangeAllocator does (pkg/controller/nodeipam/ipam/range_allocator.go).
//!
//! [`reconcile`] is pure: from a snapshot of all Nodes it rebuilds which subnets are in use
//! (so a restart never allocates twice, and a deleted Node's subnets are free), and says which
//! Nodes get which CIDRs, which cannot get any (exhausted), and which hold CIDRs it must leave
//! alone (outside the cluster CIDRs, or colliding; a Node's podCIDRs cannot change once set, as
//! API validation forbids it). [`runtime`] runs it against the API.

mod cidrset;
pub mod runtime;

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

pub use cidrset::{CidrSet, MAX_MASK_DIFF, OccupyError};

/// The allocator's configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// One CIDR, or two of different families (dual-stack); Nodes get one subnet of each, in
    /// this order (`podCIDRs[0]` is the primary family).
    cluster_cidrs: Vec<IpNet>,
    mask_v4: u8,
    mask_v6: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--cluster-cidr takes one CIDR or two of different IP families, got {0}")]
    Count(usize),
    #[error("--cluster-cidr {0} and {1} are of the same IP family")]
    SameFamily(IpNet, IpNet),
    #[error("--cluster-cidr {0} has host bits set (did you mean {1}?)")]
    HostBits(IpNet, IpNet),
    #[error(
        "node mask size /{mask} does not fit cluster CIDR {cidr}: it must be longer than the \
         cluster's prefix, at most {MAX_MASK_DIFF} bits longer, and at most /{max}"
    )]
    Mask { cidr: IpNet, mask: u8, max: u8 },
}

impl IpamConfig {
    pub fn new(cluster_cidrs: Vec<IpNet>, mask_v4: u8, mask_v6: u8) -> Result<Self, ConfigError> {
        match cluster_cidrs.as_slice() {
            [_] => {}
            [a, b] if a.addr().is_ipv4() == b.addr().is_ipv4() => {
                return Err(ConfigError::SameFamily(*a, *b));
            }
            [_, _] => {}
            other => return Err(ConfigError::Count(other.len())),
        }
        for &cidr in &cluster_cidrs {
            if cidr.trunc() != cidr {
                return Err(ConfigError::HostBits(cidr, cidr.trunc()));
            }
            // A pod CIDR must leave room for the network, the node's address and pods (the CNI
            // plugin refuses anything smaller than a /30 or /126).
            let (mask, max) = match cidr {
                IpNet::V4(_) => (mask_v4, 30),
                IpNet::V6(_) => (mask_v6, 126),
            };
            if mask <= cidr.prefix_len() || mask > max || mask - cidr.prefix_len() > MAX_MASK_DIFF {
                return Err(ConfigError::Mask { cidr, mask, max });
            }
        }
        Ok(IpamConfig {
            cluster_cidrs,
            mask_v4,
            mask_v6,
        })
    }

    pub fn cluster_cidrs(&self) -> &[IpNet] {
        &self.cluster_cidrs
    }

    fn sets(&self) -> Vec<CidrSet> {
        self.cluster_cidrs
            .iter()
            .map(|&c| {
                let mask = if c.addr().is_ipv4() {
                    self.mask_v4
                } else {
                    self.mask_v6
                };
                CidrSet::new(c, mask)
            })
            .collect()
    }
}

/// What a Node's existing podCIDRs are wrong with (the Node keeps them; this is reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A value that is not a CIDR.
    Unparsable(String),
    /// A CIDR in none of the cluster CIDRs.
    Outside(IpNet),
    /// A CIDR overlapping another Node's.
    Collides(IpNet),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unparsable(s) => write!(f, "podCIDR {s:?} is not a CIDR"),
            Problem::Outside(c) => write!(f, "podCIDR {c} is outside the cluster CIDRs"),
            Problem::Collides(c) => write!(f, "podCIDR {c} overlaps another Node's pod CIDR"),
        }
    }
}

/// The outcome of one reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Node name -> the CIDRs to write into its spec (one per cluster CIDR, in order).
    pub assign: BTreeMap<String, Vec<IpNet>>,
    /// Node name -> the cluster CIDR that has no free subnet left for it. Such a Node gets
    /// nothing (all families or none) and is retried.
    pub exhausted: BTreeMap<String, IpNet>,
    /// Node name -> what is wrong with the podCIDRs it already has.
    pub problems: BTreeMap<String, Vec<Problem>>,
}

/// The podCIDRs a Node holds: `spec.podCIDRs`, or `spec.podCIDR` from before dual-stack.
pub fn pod_cidrs_of(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let list = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    spec.and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
        .into_iter()
        .collect()
}

/// Decides, from a snapshot of every Node, which Nodes get which pod CIDRs.
///
/// Nodes are visited in name order, so the result is deterministic: existing CIDRs are marked
/// used first (on a collision the Node later in name order is the one reported), then Nodes
/// without CIDRs get the lowest free subnet of each cluster CIDR. Nodes being deleted get none.
pub fn reconcile<'a>(nodes: impl IntoIterator<Item = &'a Node>, config: &IpamConfig) -> Plan {
    let mut nodes: Vec<(&str, &Node)> = nodes
        .into_iter()
        .filter_map(|n| n.metadata.name.as_deref().map(|name| (name, n)))
        .collect();
    nodes.sort_by_key(|(name, _)| *name);
    let mut sets = config.sets();
    let mut plan = Plan::default();
    let mut waiting = Vec::new();

    for &(name, node) in &nodes {
        let held = pod_cidrs_of(node);
        if held.is_empty() {
            if node.metadata.deletion_timestamp.is_none() {
                waiting.push(name);
            }
            continue;
        }
        let mut problems = Vec::new();
        for s in held {
            let Ok(cidr) = s.parse::<IpNet>() else {
                problems.push(Problem::Unparsable(s));
                continue;
            };
            let mut result = Err(OccupyError::Outside);
            for set in &mut sets {
                if set.cluster().contains(&cidr) {
                    result = set.occupy(cidr);
                    break;
                }
            }
            match result {
                Ok(()) => {}
                Err(OccupyError::Outside) => problems.push(Problem::Outside(cidr)),
                Err(OccupyError::Collides) => problems.push(Problem::Collides(cidr)),
            }
        }
        if !problems.is_empty() {
            plan.problems.insert(name.to_string(), problems);
        }
    }

    for name in waiting {
        // All families or none: a trial on copies, committed only when every family has room.
        let mut trial = sets.clone();
        let mut cidrs = Vec::new();
        let mut short = None;
        for set in &mut trial {
            match set.allocate() {
                Some(c) => cidrs.push(c),
                None => {
                    short = Some(set.cluster());
                    break;
                }
            }
        }
        match short {
            Some(cluster) => {
                plan.exhausted.insert(name.to_string(), cluster);
            }
            None => {
                sets = trial;
                plan.assign.insert(name.to_string(), cidrs);
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidrs: &[&str]) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDRs": cidrs, "podCIDR": cidrs.first()},
        }))
        .unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn dual() -> IpamConfig {
        IpamConfig::new(vec![net("10.244.0.0/16"), net("fd00:10:244::/56")], 24, 64).unwrap()
    }

    #[test]
    fn config_is_checked() {
        let c = |cidrs: &[&str], v4, v6| {
            IpamConfig::new(cidrs.iter().map(|s| net(s)).collect(), v4, v6)
        };
        assert!(c(&["10.0.0.0/16"], 24, 64).is_ok());
        assert_eq!(c(&[], 24, 64), Err(ConfigError::Count(0)));
        assert!(matches!(
            c(&["10.0.0.0/16", "10.1.0.0/16"], 24, 64),
            Err(ConfigError::SameFamily(..))
        ));
        assert!(matches!(
            c(&["10.0.0.1/16"], 24, 64),
            Err(ConfigError::HostBits(..))
        ));
        assert!(matches!(
            c(&["10.0.0.0/24"], 24, 64),
            Err(ConfigError::Mask { .. })
        ));
        assert!(matches!(
            c(&["10.0.0.0/16"], 31, 64),
            Err(ConfigError::Mask { .. })
        ));
        assert!(matches!(
            c(&["fd00::/32"], 24, 127),
            Err(ConfigError::Mask { .. })
        ));
        assert!(matches!(
            c(&["fd00::/8"], 24, 126),
            Err(ConfigError::Mask { .. })
        ));
    }

    #[test]
    fn assigns_one_subnet_per_family_in_order() {
        let nodes = [node("a", &[]), node("b", &[])];
        let plan = reconcile(&nodes, &dual());
        assert_eq!(
            plan.assign["a"],
            vec![net("10.244.0.0/24"), net("fd00:10:244::/64")]
        );
        assert_eq!(
            plan.assign["b"],
            vec![net("10.244.1.0/24"), net("fd00:10:244:1::/64")]
        );
        assert!(plan.exhausted.is_empty() && plan.problems.is_empty());
    }

    #[test]
    fn existing_cidrs_are_kept_and_never_reallocated() {
        let nodes = [
            node("a", &["10.244.0.0/24", "fd00:10:244::/64"]),
            node("c", &["10.244.2.0/24", "fd00:10:244:2::/64"]),
            node("b", &[]),
            node("d", &[]),
        ];
        let plan = reconcile(&nodes, &dual());
        assert_eq!(plan.assign.len(), 2);
        assert_eq!(plan.assign["b"][0], net("10.244.1.0/24"));
        assert_eq!(plan.assign["d"][0], net("10.244.3.0/24"));
        assert_eq!(plan.assign["d"][1], net("fd00:10:244:3::/64"));
    }

    #[test]
    fn legacy_single_pod_cidr_counts() {
        let legacy: Node = serde_json::from_value(json!({
            "metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.0.0/24"}
        }))
        .unwrap();
        let single = IpamConfig::new(vec![net("10.244.0.0/16")], 24, 64).unwrap();
        let plan = reconcile(&[legacy, node("b", &[])], &single);
        assert_eq!(plan.assign["b"], vec![net("10.244.1.0/24")]);
    }

    #[test]
    fn problems_are_reported_and_left_alone() {
        let nodes = [
            node("a", &["10.244.0.0/24"]),
            node("b", &["10.244.0.0/24"]),
            node("c", &["192.168.0.0/24"]),
            node("d", &["garbage"]),
        ];
        let single = IpamConfig::new(vec![net("10.244.0.0/16")], 24, 64).unwrap();
        let plan = reconcile(&nodes, &single);
        assert!(plan.assign.is_empty());
        assert_eq!(
            plan.problems["b"],
            vec![Problem::Collides(net("10.244.0.0/24"))]
        );
        assert_eq!(
            plan.problems["c"],
            vec![Problem::Outside(net("192.168.0.0/24"))]
        );
        assert_eq!(
            plan.problems["d"],
            vec![Problem::Unparsable("garbage".into())]
        );
        assert!(!plan.problems.contains_key("a"));
    }

    #[test]
    fn exhaustion_is_all_or_nothing_and_deletion_frees() {
        // Four v4 subnets, plenty of v6.
        let config = IpamConfig::new(vec![net("10.0.0.0/22"), net("fd00::/48")], 24, 64).unwrap();
        let names = ["n0", "n1", "n2", "n3", "n4"];
        let mut nodes: Vec<Node> = names.iter().map(|n| node(n, &[])).collect();
        let plan = reconcile(&nodes, &config);
        assert_eq!(plan.assign.len(), 4);
        assert_eq!(plan.exhausted["n4"], net("10.0.0.0/22"));
        // Write the plan back, delete n1: n4 gets n1's subnets.
        for n in &mut nodes {
            let name = n.metadata.name.clone().unwrap();
            if let Some(c) = plan.assign.get(&name) {
                let strs: Vec<String> = c.iter().map(ToString::to_string).collect();
                let refs: Vec<&str> = strs.iter().map(String::as_str).collect();
                *n = node(&name, &refs);
            }
        }
        let freed = plan.assign["n1"].clone();
        nodes.retain(|n| n.metadata.name.as_deref() != Some("n1"));
        let plan = reconcile(&nodes, &config);
        assert_eq!(plan.assign["n4"], freed);
        assert!(plan.exhausted.is_empty());
    }

    #[test]
    fn nodes_being_deleted_get_nothing() {
        let mut n = node("a", &[]);
        n.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(reconcile(&[n], &dual()).assign.is_empty());
    }
}
