//! The EndpointSlice controller and the legacy Endpoints controller, as kube-controller-manager
//! runs them (`pkg/controller/endpointslice` with `k8s.io/endpointslice`, and
//! `pkg/controller/endpoint`): every Service with a selector gets EndpointSlices listing the
//! Pods it selects (one set per IP family in `spec.ipFamilies`), and a v1 `Endpoints` object of
//! the same name.
//!
//! [`slices::reconcile`] and [`endpoints::reconcile`] are pure: from one Service, the Pods of its
//! namespace, the Nodes (for zones) and what exists, they say what to create, update and delete.
//! [`runtime`] runs them against the API for every Service whose inputs changed.
//!
//! What is shared by both lives here: which Services are managed, which Pods are endpoints and
//! with which conditions, and how a Service port maps to a Pod's port.

pub mod endpoints;
pub mod runtime;
pub mod slices;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubewire_api::labels;
use kubewire_api::selector::Selector;

/// Our value of the `managed-by` label: the upstream controller's, so that consumers and tools
/// that look for it treat our slices like kube-controller-manager's. The `skip-mirror` label
/// on the Endpoints this controller writes also marks them as ours.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";

/// kube-controller-manager's default `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The largest `--max-endpoints-per-slice` upstream accepts (and what API validation allows).
pub const MAX_ENDPOINTS_PER_SLICE_LIMIT: usize = 1000;

/// The controller's configuration, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    max_endpoints_per_slice: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--max-endpoints-per-slice must be between 1 and {MAX_ENDPOINTS_PER_SLICE_LIMIT}, got {0}"
    )]
    MaxEndpointsPerSlice(usize),
}

impl Config {
    pub fn new(max_endpoints_per_slice: usize) -> Result<Config, ConfigError> {
        if (1..=MAX_ENDPOINTS_PER_SLICE_LIMIT).contains(&max_endpoints_per_slice) {
            Ok(Config {
                max_endpoints_per_slice,
            })
        } else {
            Err(ConfigError::MaxEndpointsPerSlice(max_endpoints_per_slice))
        }
    }

    pub fn max_endpoints_per_slice(&self) -> usize {
        self.max_endpoints_per_slice
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_endpoints_per_slice: DEFAULT_MAX_ENDPOINTS_PER_SLICE,
        }
    }
}

/// What the controller needs of the Nodes: which exist, and their zones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeZones {
    zones: BTreeMap<String, Option<String>>,
}

impl NodeZones {
    pub fn from_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> NodeZones {
        NodeZones {
            zones: nodes
                .into_iter()
                .filter_map(|n| Some((n.metadata.name.clone()?, zone_of(n))))
                .collect(),
        }
    }

    pub fn contains(&self, node: &str) -> bool {
        self.zones.contains_key(node)
    }

    pub fn zone(&self, node: &str) -> Option<&str> {
        self.zones.get(node).and_then(Option::as_deref)
    }
}

/// A Node's zone label, when it has a non-empty one.
pub fn zone_of(node: &Node) -> Option<String> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::TOPOLOGY_ZONE))
        .filter(|z| !z.is_empty())
        .cloned()
}

/// The selector of a Service this controller manages, or `None` for Services it leaves alone:
/// ExternalName Services and Services without a selector (their endpoints are written by
/// users, `syncService` in both upstream controllers), and `default/kubernetes`, whose
/// endpoints the API server itself maintains.
///
/// An empty selector counts as none: upstream stores Services as protobuf, where an empty map
/// reads back as nil, so `selector: {}` never selects every Pod there either.
pub fn managed_selector(service: &Service) -> Option<Selector> {
    let meta = &service.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    if is_api_server_service(namespace, meta.name.as_deref().unwrap_or_default()) {
        return None;
    }
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(Selector::from_labels)
}

/// `default/kubernetes`, the API server's own Service, whose endpoints it writes itself.
fn is_api_server_service(namespace: &str, name: &str) -> bool {
    namespace == "default" && name == "kubernetes"
}

/// The Pods of the Service's namespace its selector matches, in name order (so the output of
/// a reconcile does not depend on the order of its input).
fn selected_pods<'a>(
    service: &Service,
    selector: &Selector,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<&'a Pod> {
    let no_labels = BTreeMap::new();
    let mut selected: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.namespace == service.metadata.namespace)
        .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&no_labels)))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    selected
}

/// The Pod's Ready condition is True (`podutil.IsPodReady`).
fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// The Pod is being deleted (graceful deletion sets `deletionTimestamp` and keeps the Pod).
fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// `ShouldPodBeInEndpoints`: a Pod is an endpoint unless it has finished (Succeeded/Failed),
/// has no IP yet, or is terminating while terminating Pods are not wanted (EndpointSlices want
/// them, with the `terminating` condition, KEP-1672; legacy Endpoints only with
/// `publishNotReadyAddresses`).
fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let terminal = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !terminal && !pod_ips(pod).is_empty() && (include_terminating || !is_terminating(pod))
}

/// The Pod's IPs, from `status.podIPs` (or `status.podIP` when only that is set), parsed so
/// that irregular spellings come out in canonical form, as upstream re-stringifies them.
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect();
    let texts = if listed.is_empty() {
        status.pod_ip.as_deref().into_iter().collect()
    } else {
        listed
    };
    texts.into_iter().filter_map(|t| t.parse().ok()).collect()
}

/// `ShouldSetHostname`: a Pod's `spec.hostname` is published only when the Pod names this
/// Service as its `spec.subdomain` (the DNS spec's `<hostname>.<subdomain>.<ns>.svc` records).
fn hostname_for(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_namespace = pod.metadata.namespace == service.metadata.namespace;
    (same_namespace && spec.subdomain == service.metadata.name).then(|| hostname.to_string())
}

/// The node a Pod is bound to.
fn node_name_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The reference from an endpoint to its Pod.
fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// A port's protocol; API defaulting makes it TCP when unset.
fn protocol_of(protocol: Option<&str>) -> &str {
    protocol.filter(|p| !p.is_empty()).unwrap_or("TCP")
}

/// `FindPort`: the Pod port a Service port sends to. A numeric `targetPort` is used as it is
/// (unset means the Service port, as API defaulting sets it); a named one is looked up among the
/// ports of the Pod's containers, then of its sidecars (init containers with `restartPolicy:
/// Always`, KEP-753), by name and protocol. `None` when the name is not found: the Pod is then
/// an endpoint without that port.
fn find_port(pod: &Pod, service_port: &ServicePort) -> Option<i32> {
    let name = match &service_port.target_port {
        None | Some(IntOrString::Int(0)) => return Some(service_port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name,
    };
    let protocol = protocol_of(service_port.protocol.as_deref());
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name.as_str())
                && protocol_of(p.protocol.as_deref()) == protocol
        })
        .map(|p| p.container_port)
}

/// `IsServiceIPSet`: the Service has a cluster IP (is not headless).
fn is_service_ip_set(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

fn is_headless_without_ports(service: &Service) -> bool {
    let spec = service.spec.as_ref();
    spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None")
        && spec
            .and_then(|s| s.ports.as_ref())
            .is_none_or(Vec::is_empty)
}

fn service_ports(service: &Service) -> &[ServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// An EndpointSlice address type this controller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressType {
    IPv4,
    IPv6,
}

impl AddressType {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
        }
    }

    fn of(ip: IpAddr) -> AddressType {
        match ip {
            IpAddr::V4(_) => AddressType::IPv4,
            IpAddr::V6(_) => AddressType::IPv6,
        }
    }

    fn from_family(family: &str) -> Option<AddressType> {
        match family {
            "IPv4" => Some(AddressType::IPv4),
            "IPv6" => Some(AddressType::IPv6),
            _ => None,
        }
    }
}

/// `getAddressTypesForService`: one address type per family in `spec.ipFamilies` (primary
/// first). Without ipFamilies (an API server that predates dual-stack) a Service with a
/// cluster IP gets that IP's family, and a headless one both, so that nothing is withdrawn
/// until the API server fills the field in.
fn address_types(service: &Service) -> Vec<AddressType> {
    let spec = service.spec.as_ref();
    let mut types: Vec<AddressType> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| AddressType::from_family(f))
        .collect();
    types.dedup();
    if !types.is_empty() {
        return types;
    }
    let cluster_ip = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    match cluster_ip {
        Some(ip) => vec![AddressType::of(ip)],
        None => vec![AddressType::IPv4, AddressType::IPv6],
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Objects for the reconcile tests, written as the API server would return them.

    use k8s_openapi::api::core::v1::{Node, Pod, Service};
    use serde_json::{Value, json};

    pub fn service(name: &str, spec: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": spec,
        }))
        .expect("a Service")
    }

    /// `web`: selects `app=web`, one port `http` 80 -> 8080, single-stack IPv4.
    pub fn web() -> Service {
        service(
            "web",
            json!({
                "selector": {"app": "web"},
                "clusterIP": "10.96.0.10",
                "ipFamilies": ["IPv4"],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            }),
        )
    }

    /// A running, ready Pod labelled `app=web` on `node`, with `ips`.
    pub fn pod(name: &str, node: &str, ips: &[&str]) -> Pod {
        let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                         "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": ips.first(), "podIPs": pod_ips,
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .expect("a Pod")
    }

    pub fn set_ready(pod: &mut Pod, ready: bool) {
        let status = if ready { "True" } else { "False" };
        let conditions = pod
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions");
        conditions[0].status = status.into();
    }

    pub fn set_terminating(pod: &mut Pod) {
        pod.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
    }

    pub fn node(name: &str, zone: Option<&str>) -> Node {
        let labels = zone.map(|z| json!({ "topology.kubernetes.io/zone": z }));
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("a Node")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn config_is_checked() {
        assert!(Config::new(1).is_ok());
        assert!(Config::new(1000).is_ok());
        assert_eq!(Config::new(0), Err(ConfigError::MaxEndpointsPerSlice(0)));
        assert_eq!(
            Config::new(1001),
            Err(ConfigError::MaxEndpointsPerSlice(1001))
        );
    }

    #[test]
    fn only_services_with_a_selector_are_managed() {
        assert!(managed_selector(&web()).is_some());
        let without = service("a", json!({"ports": [{"port": 80}]}));
        assert!(managed_selector(&without).is_none());
        let empty = service("b", json!({"selector": {}}));
        assert!(managed_selector(&empty).is_none());
        let external = service(
            "c",
            json!({"type": "ExternalName", "externalName": "x.example", "selector": {"app": "web"}}),
        );
        assert!(managed_selector(&external).is_none());
        let mut kubernetes = service("kubernetes", json!({"selector": {"app": "web"}}));
        kubernetes.metadata.namespace = Some("default".into());
        assert!(managed_selector(&kubernetes).is_none());
    }

    #[test]
    fn named_target_ports_resolve_by_name_and_protocol_including_sidecars() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "http", "containerPort": 8080},
                ]}],
                "initContainers": [
                    {"name": "once", "ports": [{"name": "metrics", "containerPort": 1}]},
                    {"name": "sidecar", "restartPolicy": "Always",
                     "ports": [{"name": "metrics", "containerPort": 9090}]},
                ],
            },
        }))
        .unwrap();
        let port = |target: serde_json::Value, protocol: &str| -> ServicePort {
            serde_json::from_value(json!({"port": 80, "targetPort": target, "protocol": protocol}))
                .unwrap()
        };
        assert_eq!(find_port(&pod, &port(json!("http"), "TCP")), Some(8080));
        assert_eq!(find_port(&pod, &port(json!("dns"), "UDP")), Some(53));
        assert_eq!(find_port(&pod, &port(json!("dns"), "TCP")), None);
        assert_eq!(find_port(&pod, &port(json!("metrics"), "TCP")), Some(9090));
        assert_eq!(find_port(&pod, &port(json!("nope"), "TCP")), None);
        assert_eq!(find_port(&pod, &port(json!(7000), "TCP")), Some(7000));
        let unset: ServicePort = serde_json::from_value(json!({"port": 81})).unwrap();
        assert_eq!(find_port(&pod, &unset), Some(81));
    }

    #[test]
    fn address_types_follow_ip_families_or_the_cluster_ip() {
        let dual = service(
            "d",
            json!({"selector": {"a": "b"}, "ipFamilies": ["IPv6", "IPv4"]}),
        );
        assert_eq!(
            address_types(&dual),
            vec![AddressType::IPv6, AddressType::IPv4]
        );
        let legacy = service("l", json!({"selector": {"a": "b"}, "clusterIP": "fd00::1"}));
        assert_eq!(address_types(&legacy), vec![AddressType::IPv6]);
        let headless = service("h", json!({"selector": {"a": "b"}, "clusterIP": "None"}));
        assert_eq!(
            address_types(&headless),
            vec![AddressType::IPv4, AddressType::IPv6]
        );
    }

    #[test]
    fn pods_in_endpoints() {
        let mut pod = pod("p", "n", &["10.0.0.1"]);
        assert!(should_be_in_endpoints(&pod, false));
        set_terminating(&mut pod);
        assert!(should_be_in_endpoints(&pod, true));
        assert!(!should_be_in_endpoints(&pod, false));
        let mut done = fixtures::pod("q", "n", &["10.0.0.2"]);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!should_be_in_endpoints(&done, true));
        let no_ip = fixtures::pod("r", "n", &[]);
        assert!(!should_be_in_endpoints(&no_ip, true));
    }

    #[test]
    fn node_zones() {
        let zones = NodeZones::from_nodes(&[node("a", Some("z1")), node("b", None)]);
        assert!(zones.contains("a") && zones.contains("b") && !zones.contains("c"));
        assert_eq!(zones.zone("a"), Some("z1"));
        assert_eq!(zones.zone("b"), None);
    }
}
