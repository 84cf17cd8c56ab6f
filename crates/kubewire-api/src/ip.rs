//! IP addresses as numbers, for the allocators that count through address ranges (ClusterIPs,
//! node pod CIDRs, load-balancer pools).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address as a number (IPv4 in the low 32 bits).
pub fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address `n` of the family of `like`. For IPv4, `n` must fit in 32 bits (callers count
/// inside an IPv4 range); larger values saturate to 255.255.255.255.
pub fn from_bits(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for s in ["10.96.0.1", "255.255.255.255", "fd00:10:96::a", "::"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(from_bits(to_bits(ip), ip), ip);
        }
        let v4: IpAddr = "10.0.0.0".parse().unwrap();
        assert_eq!(from_bits(to_bits(v4) + 256, v4).to_string(), "10.0.1.0");
    }
}
