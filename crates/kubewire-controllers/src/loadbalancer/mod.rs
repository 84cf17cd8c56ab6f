//! LoadBalancer IPAM: gives Services of `type: LoadBalancer` addresses from the configured
//! ranges (`--load-balancer-ip-range`) in `status.loadBalancer.ingress`, the job MetalLB,
//! Cilium LB-IPAM or a cloud provider's service controller does elsewhere. The service proxy
//! then serves those addresses like any LoadBalancer IP.
//!
//! [`reconcile`] is pure: from a snapshot of every Service it rebuilds which addresses are held
//! (from the statuses, so a restart changes nothing and a deleted Service's address is free),
//! and says which statuses to write and what kept a Service from getting an address.
//! [`runtime`] runs it against the API.
//!
//! Which Services are ours follows the cloud provider's service controller
//! (`k8s.io/cloud-provider/controllers/service`, `wantsLoadBalancer`): `type: LoadBalancer`
//! without `spec.loadBalancerClass`. "If not set, the default load balancer implementation is
//! used" (<https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/>),
//! and a class names another implementation, so those Services are left entirely alone. Every
//! other ingress point on a Service of ours is replaced by ours.

mod pool;
pub mod runtime;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};

use pool::{Pool, TakeError};

/// The `ipMode` of the ingress points written: traffic reaches the nodes with the load
/// balancer's IP as its destination (KEP-1860), which is how these addresses arrive (announced
/// or routed to the nodes), so the proxy short-circuits them for traffic from inside too.
pub const IP_MODE_VIP: &str = "VIP";

const LOAD_BALANCER: &str = "LoadBalancer";

/// The allocator's configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// One or two ranges, of different IP families.
    ranges: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--load-balancer-ip-range takes one or two CIDRs, got none")]
    Empty,
    #[error(
        "--load-balancer-ip-range takes at most one CIDR per IP family, got {0} and {1} of the \
         same family"
    )]
    SameFamily(IpNet, IpNet),
    #[error("--load-balancer-ip-range {0} has host bits set (did you mean {1}?)")]
    HostBits(IpNet, IpNet),
    #[error(
        "--load-balancer-ip-range {0} has no address to give (its network address and, in \
         IPv4, its broadcast address are never given)"
    )]
    NoAddresses(IpNet),
}

impl Config {
    pub fn new(ranges: Vec<IpNet>) -> Result<Config, ConfigError> {
        if ranges.is_empty() {
            return Err(ConfigError::Empty);
        }
        for (i, &range) in ranges.iter().enumerate() {
            if let Some(&other) = ranges[..i]
                .iter()
                .find(|r| Family::of(r.addr()) == Family::of(range.addr()))
            {
                return Err(ConfigError::SameFamily(other, range));
            }
            if range.trunc() != range {
                return Err(ConfigError::HostBits(range, range.trunc()));
            }
            if Pool::new(range).is_none() {
                return Err(ConfigError::NoAddresses(range));
            }
        }
        Ok(Config { ranges })
    }

    pub fn ranges(&self) -> &[IpNet] {
        &self.ranges
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// A value of `spec.ipFamilies`.
    fn parse(s: &str) -> Option<Family> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }
}

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn of(service: &Service) -> Option<ServiceKey> {
        Some(ServiceKey {
            namespace: service.metadata.namespace.clone().unwrap_or_default(),
            name: service.metadata.name.clone()?,
        })
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a Service of ours lacks an address of some family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The range of a family the Service asks for has no free address.
    Exhausted(IpNet),
    /// `spec.loadBalancerIP` is not an IP address (the Service gets no address at all: it asks
    /// for one in particular, and which is unknown).
    RequestUnparsable(String),
    /// `spec.loadBalancerIP` is not a usable address of the range of its family, or of a family
    /// the Service uses.
    RequestOutside(IpAddr),
    /// `spec.loadBalancerIP` is held by another Service (older, or holding it already).
    RequestInUse { ip: IpAddr, holder: ServiceKey },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Exhausted(range) => write!(
                f,
                "no free address left in {range} (retrying when Services change)"
            ),
            Problem::RequestUnparsable(s) => {
                write!(f, "spec.loadBalancerIP {s:?} is not an IP address")
            }
            Problem::RequestOutside(ip) => write!(
                f,
                "spec.loadBalancerIP {ip} is not an allocatable address of a load balancer IP \
                 range of the Service's IP families"
            ),
            Problem::RequestInUse { ip, holder } => write!(
                f,
                "spec.loadBalancerIP {ip} is already used by Service {holder}"
            ),
        }
    }
}

/// The outcome of one reconcile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Service -> the `status.loadBalancer.ingress` it must have (empty: cleared), for every
    /// Service whose status differs from that.
    pub status: BTreeMap<ServiceKey, Vec<LoadBalancerIngress>>,
    /// Service -> why it lacks an address of some family.
    pub problems: BTreeMap<ServiceKey, Vec<Problem>>,
}

/// `spec.loadBalancerIP`, when set.
enum Request {
    Ip(IpAddr),
    Unparsable(String),
}

/// One Service of ours while the plan is made.
struct Claim<'a> {
    key: ServiceKey,
    service: &'a Service,
    /// `spec.ipFamilies`, in order.
    families: Vec<Family>,
    request: Option<Request>,
    /// Being deleted: it keeps what it holds until it is gone, and gets nothing new.
    deleting: bool,
    held: BTreeMap<Family, IpAddr>,
    problems: Vec<Problem>,
}

impl Claim<'_> {
    /// The address `spec.loadBalancerIP` asks for in `family`, if it asks for one there.
    fn requested(&self, family: Family) -> Option<IpAddr> {
        match self.request {
            Some(Request::Ip(ip)) if Family::of(ip) == family => Some(ip),
            _ => None,
        }
    }
}

/// The configured ranges, by family.
struct Pools(BTreeMap<Family, Pool>);

impl Pools {
    fn new(config: &Config) -> Pools {
        Pools(
            config
                .ranges
                .iter()
                .filter_map(|&r| Some((Family::of(r.addr()), Pool::new(r)?)))
                .collect(),
        )
    }

    /// Whether `ip` is an address these ranges could have given.
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.get(&Family::of(ip)).is_some_and(|p| p.contains(ip))
    }
}

fn ingress_of(service: &Service) -> &[LoadBalancerIngress] {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

fn ingress_ip(ingress: &LoadBalancerIngress) -> Option<IpAddr> {
    ingress.ip.as_deref()?.parse().ok()
}

/// Decides, from a snapshot of every Service, which LoadBalancer Services get which addresses.
///
/// Services are visited oldest first (creationTimestamp, then namespace/name), so the result
/// is deterministic and the older Service wins every conflict: addresses already in statuses
/// are kept first (one per family the Service uses, if it is a usable address of that family's
/// range, not held by an older Service, and what `spec.loadBalancerIP` asks for when that is
/// set); then every `spec.loadBalancerIP` is honoured if free (before any address is handed out,
/// so a request is never lost to a Service allocated in the same round); then each family of
/// `spec.ipFamilies` with a range and no address gets the lowest free one. Services that are no
/// longer LoadBalancers (and have no class) lose the addresses of our ranges they hold.
pub fn reconcile<'a>(services: impl IntoIterator<Item = &'a Service>, config: &Config) -> Plan {
    let mut services: Vec<(ServiceKey, &Service)> = services
        .into_iter()
        .filter_map(|s| Some((ServiceKey::of(s)?, s)))
        .collect();
    services.sort_by(|(ka, a), (kb, b)| {
        let age = |s: &'a Service| s.metadata.creation_timestamp.as_ref();
        (age(a), ka).cmp(&(age(b), kb))
    });
    let mut pools = Pools::new(config);
    let mut plan = Plan::default();
    let mut claims = Vec::new();

    for (key, service) in services {
        let spec = service.spec.as_ref();
        if spec.is_some_and(|s| s.load_balancer_class.is_some()) {
            continue;
        }
        if spec.and_then(|s| s.type_.as_deref()) != Some(LOAD_BALANCER) {
            // Not (or no longer) a LoadBalancer: what it holds of ours is released, and taken
            // off its status so that nothing keeps routing to it (as the cloud provider's
            // service controller clears the status of a Service that stops wanting one).
            let ingress = ingress_of(service);
            let kept: Vec<LoadBalancerIngress> = ingress
                .iter()
                .filter(|i| !ingress_ip(i).is_some_and(|ip| pools.contains(ip)))
                .cloned()
                .collect();
            if kept.len() != ingress.len() {
                plan.status.insert(key, kept);
            }
            continue;
        }
        let mut families = Vec::new();
        for f in spec
            .and_then(|s| s.ip_families.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| Family::parse(f))
        {
            if !families.contains(&f) {
                families.push(f);
            }
        }
        let request = spec
            .and_then(|s| s.load_balancer_ip.as_deref())
            .filter(|ip| !ip.is_empty())
            .map(|s| match s.parse() {
                Ok(ip) => Request::Ip(ip),
                Err(_) => Request::Unparsable(s.to_string()),
            });
        claims.push(Claim {
            key,
            service,
            families,
            request,
            deleting: service.metadata.deletion_timestamp.is_some(),
            held: BTreeMap::new(),
            problems: Vec::new(),
        });
    }

    // Addresses already held.
    for claim in &mut claims {
        if let Some(Request::Unparsable(s)) = &claim.request {
            claim.problems.push(Problem::RequestUnparsable(s.clone()));
            continue;
        }
        for ip in ingress_of(claim.service).iter().filter_map(ingress_ip) {
            let family = Family::of(ip);
            if !claim.families.contains(&family)
                || claim.held.contains_key(&family)
                || claim.requested(family).is_some_and(|r| r != ip)
            {
                continue;
            }
            if let Some(pool) = pools.0.get_mut(&family)
                && pool.take(ip, &claim.key).is_ok()
            {
                claim.held.insert(family, ip);
            }
        }
    }

    // Addresses asked for.
    for claim in claims.iter_mut().filter(|c| !c.deleting) {
        let Some(Request::Ip(ip)) = claim.request else {
            continue;
        };
        let family = Family::of(ip);
        if claim.held.contains_key(&family) {
            continue;
        }
        let taken = match pools.0.get_mut(&family) {
            Some(pool) if claim.families.contains(&family) => pool.take(ip, &claim.key),
            _ => Err(TakeError::Outside),
        };
        match taken {
            Ok(()) => {
                claim.held.insert(family, ip);
            }
            Err(TakeError::Outside) => claim.problems.push(Problem::RequestOutside(ip)),
            Err(TakeError::HeldBy(holder)) => {
                claim.problems.push(Problem::RequestInUse { ip, holder });
            }
        }
    }

    // Addresses handed out.
    for claim in claims.iter_mut().filter(|c| !c.deleting) {
        if matches!(claim.request, Some(Request::Unparsable(_))) {
            continue;
        }
        for &family in &claim.families {
            if claim.held.contains_key(&family) || claim.requested(family).is_some() {
                continue;
            }
            let Some(pool) = pools.0.get_mut(&family) else {
                continue;
            };
            match pool.allocate(&claim.key) {
                Some(ip) => {
                    claim.held.insert(family, ip);
                }
                None => claim.problems.push(Problem::Exhausted(pool.range())),
            }
        }
    }

    for claim in claims {
        let desired: Vec<LoadBalancerIngress> = claim
            .families
            .iter()
            .filter_map(|f| claim.held.get(f))
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some(IP_MODE_VIP.into()),
                ..LoadBalancerIngress::default()
            })
            .collect();
        if desired != ingress_of(claim.service) {
            plan.status.insert(claim.key.clone(), desired);
        }
        if !claim.problems.is_empty() && !claim.deleting {
            plan.problems.insert(claim.key, claim.problems);
        }
    }
    plan
}

#[cfg(test)]
mod tests;
