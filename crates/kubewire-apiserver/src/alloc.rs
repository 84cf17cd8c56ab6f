//! ClusterIP and NodePort allocation, as kube-apiserver does it.
//!
//! Pure bookkeeping: which addresses and ports are taken. Durability comes from the Services
//! themselves: on start the server rebuilds these allocators from the stored Services (like
//! kube-apiserver's repair loop), so an allocation exists exactly when a stored Service holds it.
//!
//! Dynamic allocation prefers the upper part of a range and leaves a lower "static band" for
//! users who pick their own values (KEP-3070 for ClusterIPs, KEP-3668 for NodePorts).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use rand::Rng;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("provided {what} is already allocated")]
    Taken { what: &'static str },
    #[error("provided {what} is not in the valid range. The range of valid {what}s is {range}")]
    OutOfRange { what: &'static str, range: String },
    #[error("range is full: no {what}s left in {range}")]
    Full { what: &'static str, range: String },
}

/// Offsets `0..size` of a range, some taken.
#[derive(Debug, Clone)]
struct Offsets {
    size: u128,
    /// Offsets below this are kept for explicitly requested values when possible.
    static_band: u128,
    used: HashSet<u128>,
}

impl Offsets {
    fn new(size: u128) -> Self {
        // KEP-3070: min(max(16, size/16), 256).
        let static_band = (size / 16).clamp(16, 256).min(size);
        Self {
            size,
            static_band,
            used: HashSet::new(),
        }
    }

    fn take(&mut self, offset: u128) -> bool {
        offset < self.size && self.used.insert(offset)
    }

    fn release(&mut self, offset: u128) {
        self.used.remove(&offset);
    }

    /// A free offset, from the dynamic band first, then the static band.
    fn take_any(&mut self, rng: &mut impl Rng) -> Option<u128> {
        let bands = [(self.static_band, self.size), (0, self.static_band)];
        for (lo, hi) in bands {
            if lo >= hi {
                continue;
            }
            let width = hi - lo;
            // A random start then a linear probe: uniform enough, and always finds a free slot.
            let start = rng.random_range(0..width);
            let mut probe = 0u128;
            // Bounded: a huge, nearly full IPv6 range must not loop for long.
            let limit = width.min(1 << 20);
            while probe < limit {
                let off = lo + (start + probe) % width;
                if self.used.insert(off) {
                    return Some(off);
                }
                probe += 1;
            }
        }
        None
    }

    fn len(&self) -> usize {
        self.used.len()
    }
}

/// Allocates IPs of one service CIDR. The network address (and, for IPv4, the broadcast
/// address) is never handed out, as upstream.
#[derive(Debug, Clone)]
pub struct IpAllocator {
    cidr: IpNet,
    offsets: Offsets,
}

impl IpAllocator {
    pub fn new(cidr: IpNet) -> Self {
        let cidr = cidr.trunc();
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len()).min(127);
        let total: u128 = 1u128 << host_bits;
        // Skip offset 0 (network); for IPv4 skip the broadcast too.
        let usable = match cidr {
            IpNet::V4(_) => total.saturating_sub(2),
            IpNet::V6(_) => total.saturating_sub(1),
        };
        Self {
            cidr,
            offsets: Offsets::new(usable),
        }
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        let off = kubewire_api::ip::to_bits(ip)
            .checked_sub(kubewire_api::ip::to_bits(self.cidr.network()))?;
        // Offset 1 in the range is the first usable address.
        off.checked_sub(1).filter(|o| *o < self.offsets.size)
    }

    fn ip_at(&self, offset: u128) -> IpAddr {
        kubewire_api::ip::from_bits(
            kubewire_api::ip::to_bits(self.cidr.network()) + offset + 1,
            self.cidr.addr(),
        )
    }

    fn range_error(&self) -> AllocError {
        AllocError::OutOfRange {
            what: "IP",
            range: self.cidr.to_string(),
        }
    }

    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), AllocError> {
        let off = self.offset_of(ip).ok_or_else(|| self.range_error())?;
        if self.offsets.take(off) {
            Ok(())
        } else {
            Err(AllocError::Taken { what: "IP" })
        }
    }

    pub fn allocate_next(&mut self, rng: &mut impl Rng) -> Result<IpAddr, AllocError> {
        let off = self.offsets.take_any(rng).ok_or_else(|| AllocError::Full {
            what: "IP",
            range: self.cidr.to_string(),
        })?;
        Ok(self.ip_at(off))
    }

    pub fn release(&mut self, ip: IpAddr) {
        if let Some(off) = self.offset_of(ip) {
            self.offsets.release(off);
        }
    }

    /// The first usable address: kube-apiserver gives it to the `default/kubernetes` Service.
    pub fn first(&self) -> IpAddr {
        self.ip_at(0)
    }

    pub fn allocated(&self) -> usize {
        self.offsets.len()
    }
}

/// Allocates ports of the NodePort range (default 30000-32767).
#[derive(Debug, Clone)]
pub struct PortAllocator {
    base: u16,
    last: u16,
    offsets: Offsets,
}

impl PortAllocator {
    pub fn new(base: u16, last: u16) -> Self {
        Self {
            base,
            last,
            offsets: Offsets::new(u128::from(last.saturating_sub(base)) + 1),
        }
    }

    fn range(&self) -> String {
        format!("{}-{}", self.base, self.last)
    }

    pub fn allocate(&mut self, port: u16) -> Result<(), AllocError> {
        if port < self.base || port > self.last {
            return Err(AllocError::OutOfRange {
                what: "port",
                range: self.range(),
            });
        }
        if self.offsets.take(u128::from(port - self.base)) {
            Ok(())
        } else {
            Err(AllocError::Taken { what: "port" })
        }
    }

    pub fn allocate_next(&mut self, rng: &mut impl Rng) -> Result<u16, AllocError> {
        let off = self.offsets.take_any(rng).ok_or_else(|| AllocError::Full {
            what: "port",
            range: self.range(),
        })?;
        // The offset is below the range width, which fits in u16.
        Ok(self.base + off as u16)
    }

    pub fn release(&mut self, port: u16) {
        if (self.base..=self.last).contains(&port) {
            self.offsets.release(u128::from(port - self.base));
        }
    }

    pub fn allocated(&self) -> usize {
        self.offsets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn never_hands_out_network_or_broadcast() {
        let mut a = IpAllocator::new("10.0.0.0/29".parse().unwrap());
        let mut rng = StdRng::seed_from_u64(1);
        let mut got = Vec::new();
        while let Ok(ip) = a.allocate_next(&mut rng) {
            got.push(ip.to_string());
        }
        got.sort();
        assert_eq!(
            got,
            [
                "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"
            ]
        );
        assert_eq!(
            a.allocate("10.0.0.0".parse().unwrap()),
            Err(AllocError::OutOfRange {
                what: "IP",
                range: "10.0.0.0/29".into()
            })
        );
        assert!(a.allocate("10.0.0.7".parse().unwrap()).is_err());
    }

    #[test]
    fn dynamic_prefers_upper_band() {
        let mut a = IpAllocator::new("10.96.0.0/24".parse().unwrap());
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let ip = a.allocate_next(&mut rng).unwrap();
            let IpAddr::V4(v4) = ip else { panic!() };
            assert!(v4.octets()[3] > 16, "{ip} is in the static band");
        }
        assert_eq!(a.first().to_string(), "10.96.0.1");
    }

    #[test]
    fn ports() {
        let mut p = PortAllocator::new(30000, 30002);
        let mut rng = StdRng::seed_from_u64(3);
        p.allocate(30001).unwrap();
        assert_eq!(p.allocate(30001), Err(AllocError::Taken { what: "port" }));
        assert!(matches!(p.allocate(80), Err(AllocError::OutOfRange { .. })));
        let a = p.allocate_next(&mut rng).unwrap();
        let b = p.allocate_next(&mut rng).unwrap();
        assert_ne!(a, b);
        assert!(matches!(
            p.allocate_next(&mut rng),
            Err(AllocError::Full { .. })
        ));
        p.release(a);
        assert_eq!(p.allocate_next(&mut rng).unwrap(), a);
    }

    #[test]
    fn ipv6_range() {
        let mut a = IpAllocator::new("fd00:10:96::/112".parse().unwrap());
        let mut rng = StdRng::seed_from_u64(3);
        let ip = a.allocate_next(&mut rng).unwrap();
        assert!(a.cidr().contains(&ip));
        assert_eq!(a.first().to_string(), "fd00:10:96::1");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Any,
        Specific(u8),
        Release(u8),
        /// Rebuild the allocator from what is held, as a restart does.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Any),
            any::<u8>().prop_map(Op::Specific),
            any::<u8>().prop_map(Op::Release),
            Just(Op::Restart),
        ]
    }

    proptest! {
        /// Whatever the sequence of creates, deletes and restarts, no address is held twice
        /// and every held address is in range.
        #[test]
        fn no_double_allocation(ops in proptest::collection::vec(op(), 1..300), seed in any::<u64>()) {
            let cidr: IpNet = "10.1.0.0/26".parse().unwrap();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut alloc = IpAllocator::new(cidr);
            let mut held: Vec<IpAddr> = Vec::new();
            for op in ops {
                match op {
                    Op::Any => if let Ok(ip) = alloc.allocate_next(&mut rng) {
                        prop_assert!(!held.contains(&ip), "{} handed out twice", ip);
                        held.push(ip);
                    },
                    Op::Specific(n) => {
                        let ip: IpAddr = std::net::Ipv4Addr::new(10, 1, 0, n % 70).into();
                        match alloc.allocate(ip) {
                            Ok(()) => { prop_assert!(!held.contains(&ip)); held.push(ip); }
                            Err(AllocError::Taken { .. }) => prop_assert!(held.contains(&ip)),
                            Err(_) => prop_assert!(!held.contains(&ip)),
                        }
                    }
                    Op::Release(n) => if !held.is_empty() {
                        let ip = held.remove(n as usize % held.len());
                        alloc.release(ip);
                    },
                    Op::Restart => {
                        alloc = IpAllocator::new(cidr);
                        for ip in &held { prop_assert!(alloc.allocate(*ip).is_ok()); }
                    }
                }
                prop_assert_eq!(alloc.allocated(), held.len());
            }
        }

        #[test]
        fn ports_no_double_allocation(ops in proptest::collection::vec(op(), 1..300), seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut alloc = PortAllocator::new(30000, 30040);
            let mut held: Vec<u16> = Vec::new();
            for op in ops {
                match op {
                    Op::Any => if let Ok(p) = alloc.allocate_next(&mut rng) {
                        prop_assert!(!held.contains(&p));
                        prop_assert!((30000..=30040).contains(&p));
                        held.push(p);
                    },
                    Op::Specific(n) => {
                        let p = 29990 + u16::from(n % 60);
                        if alloc.allocate(p).is_ok() { prop_assert!(!held.contains(&p)); held.push(p); }
                    }
                    Op::Release(n) => if !held.is_empty() {
                        alloc.release(held.remove(n as usize % held.len()));
                    },
                    Op::Restart => {
                        alloc = PortAllocator::new(30000, 30040);
                        for p in &held { prop_assert!(alloc.allocate(*p).is_ok()); }
                    }
                }
                prop_assert_eq!(alloc.allocated(), held.len());
            }
        }
    }
}
