//! The subnets of one cluster CIDR cut at one node mask size, as a sparse set of used ones.
//!
//! Subnet `i` is the `i`-th block of the node mask size inside the cluster CIDR. Used subnets
//! are kept as disjoint inclusive index intervals, so a CIDR larger than the node mask (an
//! existing Node's /23 in a /24 layout) occupies a run of subnets in one entry, and the IPv6
//! limit of kube-controller-manager's bitmap (at most 16 bits between the cluster and node mask)
//! does not apply: the cost grows with the number of Nodes, not with the size of the range.

use std::collections::BTreeMap;

use ipnet::IpNet;
use kubewire_api::ip::{from_bits, to_bits};

/// Why a CIDR could not be marked used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OccupyError {
    /// Not inside the cluster CIDR (or of the other IP family).
    Outside,
    /// Overlaps subnets already in use.
    Collides,
}

#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: IpNet,
    node_prefix: u8,
    /// Number of subnets.
    size: u128,
    /// Used subnets: start index -> end index (inclusive), disjoint.
    used: BTreeMap<u128, u128>,
}

/// The widest gap between cluster and node mask: subnet indices stay far below `u128::MAX`.
pub const MAX_MASK_DIFF: u8 = 64;

impl CidrSet {
    /// `node_prefix` must be at least `cluster`'s prefix, within the family's bits, and at most
    /// [`MAX_MASK_DIFF`] longer (checked by the caller's configuration).
    pub fn new(cluster: IpNet, node_prefix: u8) -> CidrSet {
        let diff = node_prefix.saturating_sub(cluster.prefix_len());
        CidrSet {
            cluster: cluster.trunc(),
            node_prefix,
            size: 1u128 << diff.min(MAX_MASK_DIFF),
            used: BTreeMap::new(),
        }
    }

    pub fn cluster(&self) -> IpNet {
        self.cluster
    }

    fn host_bits(&self) -> u8 {
        self.cluster.max_prefix_len() - self.node_prefix
    }

    fn base(&self) -> u128 {
        to_bits(self.cluster.network())
    }

    /// The `index`-th subnet.
    fn subnet(&self, index: u128) -> IpNet {
        let bits = self.base() + (index << self.host_bits());
        let addr = from_bits(bits, self.cluster.addr());
        IpNet::new(addr, self.node_prefix).unwrap_or(self.cluster)
    }

    /// The inclusive index range of the subnets `cidr` overlaps, if it lies inside the cluster.
    fn indices(&self, cidr: IpNet) -> Option<(u128, u128)> {
        if cidr.addr().is_ipv4() != self.cluster.addr().is_ipv4() || !self.cluster.contains(&cidr) {
            return None;
        }
        let host_bits = self.host_bits();
        let offset = to_bits(cidr.network()) - self.base();
        let first = offset >> host_bits;
        let last = (to_bits(cidr.broadcast()) - self.base()) >> host_bits;
        Some((first, last))
    }

    /// Marks the subnets `cidr` covers as used.
    pub fn occupy(&mut self, cidr: IpNet) -> Result<(), OccupyError> {
        let (first, last) = self.indices(cidr).ok_or(OccupyError::Outside)?;
        // Disjoint intervals sorted by start: only the last one starting at or before `last`
        // can overlap [first, last].
        if let Some((_, &end)) = self.used.range(..=last).next_back()
            && end >= first
        {
            return Err(OccupyError::Collides);
        }
        self.used.insert(first, last);
        Ok(())
    }

    /// The lowest free subnet, marked used; `None` when the range is exhausted.
    pub fn allocate(&mut self) -> Option<IpNet> {
        let mut candidate = 0u128;
        for (&start, &end) in &self.used {
            if candidate < start {
                break;
            }
            candidate = candidate.max(end.saturating_add(1));
        }
        if candidate >= self.size {
            return None;
        }
        self.used.insert(candidate, candidate);
        Some(self.subnet(candidate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_lowest_free_and_exhausts() {
        let mut s = CidrSet::new(net("10.0.0.0/22"), 24);
        s.occupy(net("10.0.1.0/24")).unwrap();
        assert_eq!(s.allocate(), Some(net("10.0.0.0/24")));
        assert_eq!(s.allocate(), Some(net("10.0.2.0/24")));
        assert_eq!(s.allocate(), Some(net("10.0.3.0/24")));
        assert_eq!(s.allocate(), None);
    }

    #[test]
    fn larger_and_smaller_cidrs_occupy_what_they_overlap() {
        let mut s = CidrSet::new(net("10.0.0.0/22"), 24);
        s.occupy(net("10.0.2.0/23")).unwrap();
        assert_eq!(s.occupy(net("10.0.3.0/24")), Err(OccupyError::Collides));
        s.occupy(net("10.0.0.128/25")).unwrap();
        assert_eq!(s.occupy(net("10.0.0.0/24")), Err(OccupyError::Collides));
        assert_eq!(s.allocate(), Some(net("10.0.1.0/24")));
        assert_eq!(s.allocate(), None);
    }

    #[test]
    fn outside_and_wrong_family() {
        let mut s = CidrSet::new(net("10.0.0.0/22"), 24);
        assert_eq!(s.occupy(net("10.0.4.0/24")), Err(OccupyError::Outside));
        assert_eq!(s.occupy(net("10.0.0.0/16")), Err(OccupyError::Outside));
        assert_eq!(s.occupy(net("fd00::/64")), Err(OccupyError::Outside));
    }

    #[test]
    fn ipv6_wide_ranges_are_sparse() {
        // 2^64 subnets: far past a bitmap, cheap here.
        let mut s = CidrSet::new(net("fd00::/32"), 96);
        assert_eq!(s.allocate(), Some(net("fd00::/96")));
        assert_eq!(s.allocate(), Some(net("fd00::1:0:0/96")));
        s.occupy(net("fd00:0:ffff:ffff:ffff:ffff::/96")).unwrap();
        let mut s = CidrSet::new(net("fd00:10:244::/56"), 64);
        assert_eq!(s.allocate(), Some(net("fd00:10:244::/64")));
        assert_eq!(s.allocate(), Some(net("fd00:10:244:1::/64")));
    }
}
