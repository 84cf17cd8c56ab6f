//! The addresses of one `--load-balancer-ip-range`, as a sparse map of the used ones to the
//! Service holding each: the cost grows with the number of Services, not with the size of the
//! range, so an IPv6 /64 costs what an IPv4 /28 does.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use kubewire_api::ip::{from_bits, to_bits};

use super::ServiceKey;

/// Why an address could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeError {
    /// Not a usable address of the range (outside it, its network or IPv4 broadcast address,
    /// or of the other family).
    Outside,
    /// Held by this Service.
    HeldBy(ServiceKey),
}

#[derive(Debug, Clone)]
pub struct Pool {
    range: IpNet,
    /// The first and last usable address, as integers.
    first: u128,
    last: u128,
    used: BTreeMap<u128, ServiceKey>,
}

impl Pool {
    /// `None` when the range has no usable address. The network address is never given (it is
    /// the subnet-router anycast address in IPv6, and many IPv4 stacks treat it as broadcast),
    /// nor the IPv4 broadcast address. `range` has no host bits set (checked by the caller's
    /// configuration).
    pub fn new(range: IpNet) -> Option<Pool> {
        let first = to_bits(range.network()).checked_add(1)?;
        let last = match range {
            IpNet::V4(_) => to_bits(range.broadcast()).checked_sub(1)?,
            IpNet::V6(_) => to_bits(range.broadcast()),
        };
        (first <= last).then(|| Pool {
            range,
            first,
            last,
            used: BTreeMap::new(),
        })
    }

    pub fn range(&self) -> IpNet {
        self.range
    }

    /// `ip` as an integer when it is a usable address of the range.
    fn index(&self, ip: IpAddr) -> Option<u128> {
        let n = to_bits(ip);
        (self.range.contains(&ip) && (self.first..=self.last).contains(&n)).then_some(n)
    }

    /// Whether `ip` is an address this range could have given.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.index(ip).is_some()
    }

    /// Marks `ip` as held by `holder`.
    pub fn take(&mut self, ip: IpAddr, holder: &ServiceKey) -> Result<(), TakeError> {
        let n = self.index(ip).ok_or(TakeError::Outside)?;
        if let Some(other) = self.used.get(&n) {
            return Err(TakeError::HeldBy(other.clone()));
        }
        self.used.insert(n, holder.clone());
        Ok(())
    }

    /// The lowest free address, marked as held by `holder`; `None` when the range is exhausted.
    pub fn allocate(&mut self, holder: &ServiceKey) -> Option<IpAddr> {
        let mut candidate = self.first;
        for &n in self.used.range(self.first..).map(|(n, _)| n) {
            if n != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        if candidate > self.last {
            return None;
        }
        self.used.insert(candidate, holder.clone());
        Some(self.addr(candidate))
    }

    fn addr(&self, n: u128) -> IpAddr {
        // Indices of an IPv4 range fit in 32 bits (checked by `index` and `allocate`).
        from_bits(n, self.range.addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap()).unwrap()
    }

    fn key(name: &str) -> ServiceKey {
        ServiceKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_skips_network_and_broadcast() {
        let mut p = pool("192.0.2.0/30");
        assert_eq!(p.allocate(&key("a")), Some(ip("192.0.2.1")));
        assert_eq!(p.allocate(&key("b")), Some(ip("192.0.2.2")));
        assert_eq!(p.allocate(&key("c")), None);
        assert_eq!(p.take(ip("192.0.2.0"), &key("c")), Err(TakeError::Outside));
        assert_eq!(p.take(ip("192.0.2.3"), &key("c")), Err(TakeError::Outside));
        assert!(Pool::new("192.0.2.0/31".parse().unwrap()).is_none());
        assert!(Pool::new("192.0.2.7/32".parse().unwrap()).is_none());
        assert!(Pool::new("0.0.0.0/32".parse().unwrap()).is_none());
    }

    #[test]
    fn ipv6_skips_only_the_network_address() {
        let mut p = pool("fd00:1b::/127");
        assert_eq!(p.allocate(&key("a")), Some(ip("fd00:1b::1")));
        assert_eq!(p.allocate(&key("b")), None);
        assert!(Pool::new("fd00:1b::/128".parse().unwrap()).is_none());
        // A /64 is as cheap as a small range, up to its last address.
        let mut p = pool("fd00:1b::/64");
        p.take(ip("fd00:1b::ffff:ffff:ffff:ffff"), &key("a"))
            .unwrap();
        assert_eq!(p.allocate(&key("b")), Some(ip("fd00:1b::1")));
    }

    #[test]
    fn lowest_free_fills_gaps_and_taken_names_its_holder() {
        let mut p = pool("192.0.2.0/29");
        p.take(ip("192.0.2.1"), &key("a")).unwrap();
        p.take(ip("192.0.2.3"), &key("b")).unwrap();
        assert_eq!(
            p.take(ip("192.0.2.3"), &key("c")),
            Err(TakeError::HeldBy(key("b")))
        );
        assert_eq!(p.allocate(&key("c")), Some(ip("192.0.2.2")));
        assert_eq!(p.allocate(&key("d")), Some(ip("192.0.2.4")));
        assert_eq!(p.take(ip("fd00::1"), &key("e")), Err(TakeError::Outside));
        assert_eq!(p.take(ip("192.0.2.8"), &key("e")), Err(TakeError::Outside));
    }
}
