//! The node-local service model: what one node's proxy must do, with every Kubernetes rule
//! (traffic policies, topology, terminating endpoints, ignored Services) already applied. The
//! nftables rendering reads nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// An address family; dual-stack Services are two independent single-stack services, as in
/// kube-proxy (one proxier per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The suffix of this family's set and map names, and the `ip`/`ip6` expression prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }

    pub fn nft_prefix(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    pub fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    pub const ALL: [Family; 2] = [Family::V4, Family::V6];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// From a Service or EndpointSlice port's `protocol` (absent means TCP, as the API defaults).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// Which traffic an entry catches. The order is the order packets are matched in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// A ClusterIP, from any source; non-pod sources are masqueraded.
    ClusterIp,
    /// An external IP or load-balancer IP of an `externalTrafficPolicy: Local` Service, reached
    /// from inside the cluster (a pod or this node): goes to any endpoint, as a ClusterIP would
    /// (kube-proxy's short-circuit), masqueraded when the node itself is the source.
    ExternalIpFromInside,
    /// An external IP or load-balancer IP, from outside the cluster.
    ExternalIp,
    /// A NodePort on one of this node's addresses, from inside (see `ExternalIpFromInside`).
    NodePortFromInside,
    /// A NodePort on one of this node's addresses.
    NodePort,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::ClusterIp,
        Class::ExternalIpFromInside,
        Class::ExternalIp,
        Class::NodePortFromInside,
        Class::NodePort,
    ];

    /// The prefix of this class's set and map names.
    pub fn tag(self) -> &'static str {
        match self {
            Class::ClusterIp => "cip",
            Class::ExternalIpFromInside => "xin",
            Class::ExternalIp => "ext",
            Class::NodePortFromInside => "npin",
            Class::NodePort => "np",
        }
    }

    /// NodePort classes match any local address: their keys carry no IP.
    pub fn keyed_by_ip(self) -> bool {
        matches!(
            self,
            Class::ClusterIp | Class::ExternalIpFromInside | Class::ExternalIp
        )
    }

    pub fn from_inside(self) -> bool {
        matches!(
            self,
            Class::ExternalIpFromInside | Class::NodePortFromInside
        )
    }
}

/// The destination a packet is matched on: `ip` is `None` for NodePorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub family: Family,
    pub class: Class,
    pub ip: Option<IpAddr>,
    pub protocol: Protocol,
    pub port: u16,
}

/// What happens to a new connection when the entry has no endpoint to send it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenEmpty {
    /// The Service has no usable endpoint anywhere: ICMP unreachable, so clients fail fast.
    Reject,
    /// A `Local` traffic policy and no endpoint on this node: drop, so a load balancer's health
    /// check, not a reset, moves clients away (kube-proxy's rationale).
    Drop,
}

/// One destination and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Endpoints to pick from at random, sorted so that renders are stable.
    pub backends: Vec<SocketAddr>,
    pub when_empty: WhenEmpty,
    /// For `ExternalIp`/`NodePort`: masquerade (the `Cluster` policy). The other classes
    /// masquerade by source (see [`Class`]).
    pub masquerade: bool,
    /// `sessionAffinity: ClientIP`: a client keeps its endpoint for this many seconds after
    /// its last new connection.
    pub affinity_timeout: Option<u32>,
    /// Load-balancer IPs with `loadBalancerSourceRanges`: the only sources let in (empty: any).
    pub source_ranges: Vec<IpNet>,
    /// `namespace/name:port` of the Service port, for logs and errors.
    pub service: String,
}

/// What the health-check server of a `Local`-policy load-balanced Service reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints on this node (terminating ones do not count: the load balancer should
    /// move new connections away from a node that only has those).
    pub local_endpoints: usize,
}

/// Everything one node's proxy programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub entries: BTreeMap<Key, Entry>,
    /// By `healthCheckNodePort`.
    pub health_checks: BTreeMap<u16, ServiceHealth>,
    /// The cluster's pod address ranges: sources inside them are pods ("inside the cluster").
    pub pod_cidrs: Vec<IpNet>,
    /// The addresses NodePorts answer on; `None`: every local non-loopback address.
    pub node_port_ips: Option<Vec<IpAddr>>,
}
