//! Services + EndpointSlices + this node → the node-local [`Desired`] model. Pure and
//! deterministic; the semantics are kube-proxy's shared `pkg/proxy` ones (`CategorizeEndpoints`,
//! the endpoint-slice cache, the ignored-Service filter), cited where they are not obvious.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubewire_api::labels;

use crate::model::{Class, Desired, Entry, Family, Key, Protocol, ServiceHealth, WhenEmpty};

/// The legacy form of `spec.loadBalancerSourceRanges`, still read by kube-proxy.
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// Who this node is, for policies and topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    pub name: String,
    /// `topology.kubernetes.io/zone` of this node.
    pub zone: Option<String>,
    /// The cluster's pod CIDRs (sources inside them are pods).
    pub pod_cidrs: Vec<IpNet>,
    /// This node's own addresses (its Node's InternalIPs, then ExternalIPs).
    pub node_ips: Vec<IpAddr>,
    pub node_port_addresses: NodePortAddresses,
}

/// Where NodePorts answer (kube-proxy's `--nodeport-addresses`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NodePortAddresses {
    /// The node's primary address of each family (its first InternalIP), as kube-proxy's
    /// nftables mode does by default: not on addresses facing pods or other networks.
    #[default]
    Primary,
    /// Every local address but loopback (kube-proxy's iptables mode).
    All,
}

/// One endpoint as the proxy sees it (kube-proxy's `BaseEndpointInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    addr: SocketAddr,
    /// Conditions as kube-proxy reads them: a missing `ready` or `serving` means true, a
    /// missing `terminating` false (EndpointConditions API reference).
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    zone_hints: Option<BTreeSet<String>>,
    node_hints: Option<BTreeSet<String>>,
}

/// Computes what node `node` programs. The second element lists what was skipped and why.
pub fn compile<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
    services: &[S],
    slices: &[E],
    node: &NodeContext,
) -> (Desired, Vec<String>) {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices.iter().map(Borrow::borrow) {
        let labels = slice.metadata.labels.as_ref();
        if labels.is_some_and(|l| l.contains_key(labels::HEADLESS)) {
            continue;
        }
        let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.as_deref(),
            labels.and_then(|l| l.get(labels::SERVICE_NAME)),
        ) else {
            continue;
        };
        by_service
            .entry((ns, svc.as_str()))
            .or_default()
            .push(slice);
    }
    let node_port_ips = match node.node_port_addresses {
        NodePortAddresses::All => None,
        NodePortAddresses::Primary => Some(
            Family::ALL
                .iter()
                .filter_map(|f| node.node_ips.iter().find(|ip| Family::of(**ip) == *f))
                .copied()
                .collect(),
        ),
    };
    let mut desired = Desired {
        pod_cidrs: node.pod_cidrs.clone(),
        node_port_ips,
        ..Desired::default()
    };
    let mut warnings = Vec::new();
    for svc in services.iter().map(Borrow::borrow) {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        if !is_proxied(svc) {
            continue;
        }
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            add_service_port(
                svc,
                ns,
                name,
                port,
                slices,
                node,
                &mut desired,
                &mut warnings,
            );
        }
        if let Some(port) = health_check_port(svc) {
            let health = ServiceHealth {
                namespace: ns.to_string(),
                name: name.to_string(),
                local_endpoints: local_ready_endpoints(svc, slices, node),
            };
            desired.health_checks.insert(port, health);
        }
    }
    (desired, warnings)
}

/// ExternalName and headless Services have no virtual IP; another proxy's Services are not ours.
fn is_proxied(svc: &Service) -> bool {
    let labels = svc.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(labels::SERVICE_PROXY_NAME)) {
        return false;
    }
    let Some(spec) = &svc.spec else {
        return false;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    !matches!(spec.cluster_ip.as_deref(), None | Some("None" | ""))
}

#[allow(clippy::too_many_arguments)]
fn add_service_port(
    svc: &Service,
    ns: &str,
    name: &str,
    port: &ServicePort,
    slices: &[&EndpointSlice],
    node: &NodeContext,
    desired: &mut Desired,
    warnings: &mut Vec<String>,
) {
    let Some(spec) = &svc.spec else { return };
    let label = format!(
        "{ns}/{name}:{}",
        port.name.clone().unwrap_or_else(|| port.port.to_string())
    );
    let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
        warnings.push(format!("{label}: unknown protocol {:?}", port.protocol));
        return;
    };
    let Ok(service_port) = u16::try_from(port.port) else {
        warnings.push(format!("{label}: port {} out of range", port.port));
        return;
    };
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    // The API defaults the timeout to 10800 s (3 h).
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(10_800)
    });
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let cluster_ips = parse_ips(spec.cluster_ips.iter().flatten(), &label, warnings);
    let external_ips = parse_ips(spec.external_ips.iter().flatten(), &label, warnings);
    let mut lb_ips = Vec::new();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        // KEP-1860: `ipMode: Proxy` means the load balancer delivers to the node with its own
        // address as destination, so the LB IP must not be short-circuited here.
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_ref());
        lb_ips = parse_ips(ingress, &label, warnings);
    }
    let source_ranges = source_ranges(svc, &lb_ips, node, &label, warnings);
    let node_port = match spec.type_.as_deref() {
        Some("NodePort" | "LoadBalancer") => port
            .node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0),
        _ => None,
    };
    for family in Family::ALL {
        let endpoints = endpoints_for(port, protocol, family, slices, node);
        let (cluster, local) = categorize(&endpoints, node);
        // With no usable endpoint anywhere the Service rejects; a Local policy with endpoints
        // elsewhere only drops (kube-proxy: `no-endpoint-services` verdicts).
        let when_empty = if cluster.is_empty() {
            WhenEmpty::Reject
        } else {
            WhenEmpty::Drop
        };
        let mut put = |class: Class,
                       ip: Option<IpAddr>,
                       port: u16,
                       backends: &[SocketAddr],
                       allowed: &[IpNet]| {
            let key = Key {
                family,
                class,
                ip,
                protocol,
                port,
            };
            let entry = Entry {
                backends: backends.to_vec(),
                when_empty,
                masquerade: !external_local,
                affinity_timeout,
                source_ranges: allowed.to_vec(),
                service: label.clone(),
            };
            if let Some(first) = desired.entries.get(&key) {
                if first.service != label {
                    warnings.push(format!(
                        "{label}: {ip:?} {protocol}/{port} is already used by {}; ignored",
                        first.service
                    ));
                }
                return;
            }
            desired.entries.insert(key, entry);
        };
        let internal = if internal_local { &local } else { &cluster };
        let external = if external_local { &local } else { &cluster };
        for ip in cluster_ips.iter().filter(|ip| Family::of(**ip) == family) {
            put(Class::ClusterIp, Some(*ip), service_port, internal, &[]);
        }
        // `loadBalancerSourceRanges` guard the load-balancer IPs only, not externalIPs or
        // NodePorts (API reference; kube-proxy's `firewall-ips`).
        let external_ips = external_ips.iter().map(|ip| (ip, &[][..]));
        let lb = lb_ips.iter().map(|ip| (ip, source_ranges.as_slice()));
        for (ip, allowed) in external_ips
            .chain(lb)
            .filter(|(ip, _)| Family::of(**ip) == family)
        {
            put(
                Class::ExternalIp,
                Some(*ip),
                service_port,
                external,
                allowed,
            );
            if external_local {
                put(
                    Class::ExternalIpFromInside,
                    Some(*ip),
                    service_port,
                    &cluster,
                    allowed,
                );
            }
        }
        // A NodePort exists in the families of the Service's ClusterIPs.
        if let Some(np) =
            node_port.filter(|_| cluster_ips.iter().any(|ip| Family::of(*ip) == family))
        {
            put(Class::NodePort, None, np, external, &[]);
            if external_local {
                put(Class::NodePortFromInside, None, np, &cluster, &[]);
            }
        }
    }
}

/// The `healthCheckNodePort` a node serves for a Service: `LoadBalancer` with
/// `externalTrafficPolicy: Local` (the API server allocates it then).
fn health_check_port(svc: &Service) -> Option<u16> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.external_traffic_policy.as_deref() != Some("Local")
    {
        return None;
    }
    spec.health_check_node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// Ready endpoints of the Service on this node: distinct addresses over its ports, in the family
/// that has most (a dual-stack pod counts once).
fn local_ready_endpoints(svc: &Service, slices: &[&EndpointSlice], node: &NodeContext) -> usize {
    let ports = svc.spec.iter().flat_map(|s| s.ports.iter().flatten());
    Family::ALL
        .iter()
        .map(|family| {
            let mut ips = BTreeSet::new();
            for port in ports.clone() {
                let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                    continue;
                };
                ips.extend(
                    endpoints_for(port, protocol, *family, slices, node)
                        .iter()
                        .filter(|e| e.ready && e.local)
                        .map(|e| e.addr.ip()),
                );
            }
            ips.len()
        })
        .max()
        .unwrap_or(0)
}

/// The sources a load-balancer IP accepts (empty: any): `spec.loadBalancerSourceRanges`, else
/// the legacy annotation. When this node's own address is inside them, the load-balancer IPs
/// are allowed as sources too, as kube-proxy does for traffic that hairpins through the load
/// balancer.
fn source_ranges(
    svc: &Service,
    lb_ips: &[IpAddr],
    node: &NodeContext,
    label: &str,
    warnings: &mut Vec<String>,
) -> Vec<IpNet> {
    let from_field = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_source_ranges.clone())
        .filter(|r| !r.is_empty());
    let from_annotation = || {
        svc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION))
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
    };
    let Some(raw) = from_field.or_else(from_annotation) else {
        return Vec::new();
    };
    let mut ranges: Vec<IpNet> = raw
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| match s.parse::<IpNet>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                warnings.push(format!("{label}: source range {s:?} is not a CIDR"));
                None
            }
        })
        .collect();
    if node
        .node_ips
        .iter()
        .any(|ip| ranges.iter().any(|r| r.contains(ip)))
    {
        ranges.extend(lb_ips.iter().map(|ip| IpNet::from(*ip)));
    }
    ranges
}

fn parse_ips<'a>(
    ips: impl IntoIterator<Item = &'a String>,
    label: &str,
    warnings: &mut Vec<String>,
) -> Vec<IpAddr> {
    ips.into_iter()
        .filter_map(|s| match s.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                warnings.push(format!("{label}: {s:?} is not an IP address"));
                None
            }
        })
        .collect()
}

/// The endpoints of one Service port in one family, from every slice of the Service. An address
/// listed twice (slices overlap while the controller moves endpoints) counts once, ready first.
fn endpoints_for(
    port: &ServicePort,
    protocol: Protocol,
    family: Family,
    slices: &[&EndpointSlice],
    node: &NodeContext,
) -> Vec<Endpoint> {
    let want_type = match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    let port_name = port.name.as_deref().unwrap_or("");
    let mut seen: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.address_type == want_type) {
        // The slice port of the same name and protocol carries the resolved target port.
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            // Consumers use the first address (EndpointSlice API: the others are reserved).
            let Some(ip) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .filter(|ip| Family::of(*ip) == family)
            else {
                continue;
            };
            let cond = ep.conditions.as_ref();
            let hints = ep.hints.as_ref();
            let endpoint = Endpoint {
                addr: SocketAddr::new(ip, target),
                ready: cond.and_then(|c| c.ready).unwrap_or(true),
                serving: cond.and_then(|c| c.serving).unwrap_or(true),
                terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                local: ep.node_name.as_deref() == Some(node.name.as_str()),
                zone_hints: hints
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect()),
                node_hints: hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .map(|n| n.iter().map(|n| n.name.clone()).collect()),
            };
            match seen.get(&endpoint.addr) {
                Some(old) if old.ready || !endpoint.ready => {}
                _ => {
                    seen.insert(endpoint.addr, endpoint);
                }
            }
        }
    }
    seen.into_values().collect()
}

/// kube-proxy's `CategorizeEndpoints`: the endpoints `Cluster`-policy traffic may use (ready
/// ones, narrowed by topology hints) and those `Local`-policy traffic may use (ready ones on this
/// node). Each set on its own falls back to serving-and-terminating endpoints when it has no
/// ready one (KEP-1669), never to endpoints that are not serving.
fn categorize(endpoints: &[Endpoint], node: &NodeContext) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let ready: Vec<&Endpoint> = endpoints.iter().filter(|e| e.ready).collect();
    let fallback = |e: &&Endpoint| e.serving && e.terminating;
    let mut cluster: Vec<SocketAddr> = topology_filter(&ready, node)
        .into_iter()
        .map(|e| e.addr)
        .collect();
    if cluster.is_empty() {
        cluster = endpoints.iter().filter(fallback).map(|e| e.addr).collect();
    }
    let mut local: Vec<SocketAddr> = ready.iter().filter(|e| e.local).map(|e| e.addr).collect();
    if local.is_empty() {
        local = endpoints
            .iter()
            .filter(|e| e.local)
            .filter(fallback)
            .map(|e| e.addr)
            .collect();
    }
    (cluster, local)
}

/// Topology-aware routing (KEP-2433/KEP-3015): use node hints when every ready endpoint has
/// them and one names this node; else zone hints when every ready endpoint has them and one
/// names this node's zone; else everything.
fn topology_filter<'a>(ready: &[&'a Endpoint], node: &NodeContext) -> Vec<&'a Endpoint> {
    let by = |hints: fn(&Endpoint) -> Option<&BTreeSet<String>>, mine: &str| {
        if ready.is_empty() || !ready.iter().all(|e| hints(e).is_some()) {
            return None;
        }
        let picked: Vec<&Endpoint> = ready
            .iter()
            .copied()
            .filter(|e| hints(e).is_some_and(|h| h.contains(mine)))
            .collect();
        (!picked.is_empty()).then_some(picked)
    };
    by(|e| e.node_hints.as_ref(), &node.name)
        .or_else(|| {
            node.zone
                .as_deref()
                .and_then(|zone| by(|e| e.zone_hints.as_ref(), zone))
        })
        .unwrap_or_else(|| ready.to_vec())
}

#[cfg(test)]
mod tests;
