//! The legacy v1 `Endpoints` of one Service: the pure half of kube-controller-manager's
//! endpoints controller (`pkg/controller/endpoint`). The API is deprecated since v1.33 in favour
//! of EndpointSlices, but older consumers still read it.
//!
//! One object named like the Service, with one address per Pod (of the Service's primary IP
//! family): ready Pods under `addresses`, others under `notReadyAddresses`, terminating Pods
//! left out unless the Service publishes not-ready addresses. Subsets are packed in a canonical
//! layout (upstream `RepackSubsets`), so comparing with what exists is plain equality.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service, ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubewire_api::labels;

use super::{
    AddressType, address_types, find_port, hostname_for, is_api_server_service,
    is_headless_without_ports, is_pod_ready, is_service_ip_set, managed_selector, node_name_of,
    pod_ips, pod_reference, protocol_of, publishes_not_ready, selected_pods, service_ports,
    should_be_in_endpoints,
};

/// Set to [`TRUNCATED`] when a Service has more addresses than one Endpoints object holds.
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
pub const TRUNCATED: &str = "truncated";
/// Addresses one Endpoints object holds at most (upstream `maxCapacity`).
pub const MAX_CAPACITY: usize = 1000;

/// The write that brings one Service's Endpoints to what its Pods say.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(Endpoints),
    /// Carries the resourceVersion it was computed from.
    Update(Endpoints),
    Delete {
        namespace: String,
        name: String,
        uid: Option<String>,
    },
}

/// Decides the Endpoints named `namespace/name` from its Service (`None` when there is none),
/// the Pods of the namespace and the Endpoints that exist. `None` means nothing to write.
///
/// Endpoints of Services the controller does not manage are left alone; when the Service is
/// gone, the Endpoints go too, but only if this controller wrote them (they carry
/// [`labels::SKIP_MIRROR`]): upstream deletes whatever is there, which would take the
/// Endpoints users keep for selector-less Services they deleted and recreate.
pub fn reconcile<'a>(
    namespace: &str,
    name: &str,
    service: Option<&Service>,
    pods: impl IntoIterator<Item = &'a Pod>,
    existing: Option<&Endpoints>,
) -> Option<Change> {
    if is_api_server_service(namespace, name) {
        return None;
    }
    let Some(service) = service else {
        let ours = existing.filter(|e| {
            e.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SKIP_MIRROR))
                .is_some_and(|v| v == "true")
        })?;
        return Some(Change::Delete {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: ours.metadata.uid.clone(),
        });
    };
    let selector = managed_selector(service)?;
    let publish = publishes_not_ready(service);
    let mut entries = Vec::new();
    for pod in selected_pods(service, &selector, pods) {
        if !should_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(ip) = primary_ip(service, pod) else {
            continue;
        };
        let address = EndpointAddress {
            ip: ip.to_string(),
            hostname: hostname_for(pod, service),
            node_name: node_name_of(pod).map(str::to_string),
            target_ref: Some(pod_reference(pod)),
        };
        let ready = publish || is_pod_ready(pod);
        if is_headless_without_ports(service) {
            entries.push(AddressEntry {
                address: address.clone(),
                ready,
                port: None,
            });
        }
        for service_port in service_ports(service) {
            if let Some(port) = find_port(pod, service_port) {
                entries.push(AddressEntry {
                    address: address.clone(),
                    ready,
                    port: Some(endpoint_port(service_port, port)),
                });
            }
        }
    }
    let (subsets, truncated) = truncate(repack(entries), MAX_CAPACITY);
    let labels = endpoints_labels(service);
    let mut annotations = existing
        .and_then(|e| e.metadata.annotations.clone())
        .unwrap_or_default();
    annotations.remove(ANNOTATION_OVER_CAPACITY);
    if truncated {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), TRUNCATED.into());
    }
    let annotations = (!annotations.is_empty()).then_some(annotations);

    match existing {
        Some(current)
            if canonical(current.subsets.as_deref().unwrap_or_default()) == subsets
                && current.metadata.labels.as_ref() == Some(&labels)
                && current
                    .metadata
                    .annotations
                    .as_ref()
                    .filter(|a| !a.is_empty())
                    == annotations.as_ref() =>
        {
            None
        }
        Some(current) => {
            let mut updated = current.clone();
            updated.metadata.labels = Some(labels);
            updated.metadata.annotations = annotations;
            updated.subsets = Some(subsets);
            Some(Change::Update(updated))
        }
        None => Some(Change::Create(Endpoints {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(labels),
                annotations,
                ..ObjectMeta::default()
            },
            subsets: Some(subsets),
        })),
    }
}

/// The Pod's address of the Service's primary family (`podToEndpointAddressForService`).
/// Without `ipFamilies`, a headless Service takes the Pod's first IP.
fn primary_ip(service: &Service, pod: &Pod) -> Option<IpAddr> {
    let ips = pod_ips(pod);
    let has_families = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .is_some_and(|f| !f.is_empty());
    if !has_families && !is_service_ip_set(service) {
        return ips.first().copied();
    }
    let family = address_types(service).first().copied()?;
    ips.into_iter().find(|ip| AddressType::of(*ip) == family)
}

fn endpoint_port(service_port: &ServicePort, port: i32) -> EndpointPort {
    EndpointPort {
        name: service_port.name.clone().filter(|n| !n.is_empty()),
        port,
        protocol: Some(protocol_of(service_port.protocol.as_deref()).into()),
        app_protocol: service_port.app_protocol.clone(),
    }
}

/// The Service's labels, the headless label when it has no cluster IP, and the skip-mirror
/// label that keeps an EndpointSlice mirroring controller from copying what this controller
/// already publishes as slices.
fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if is_service_ip_set(service) {
        labels.remove(labels::HEADLESS);
    } else {
        labels.insert(labels::HEADLESS.into(), String::new());
    }
    labels.insert(labels::SKIP_MIRROR.into(), "true".into());
    labels
}

/// One address serving one port (`None`: a headless Service without ports).
struct AddressEntry {
    address: EndpointAddress,
    ready: bool,
    port: Option<EndpointPort>,
}

type AddressKey = (String, String);
type PortKey = (String, i32, String, Option<String>);

fn address_key(address: &EndpointAddress) -> AddressKey {
    let uid = address.target_ref.as_ref().and_then(|r| r.uid.clone());
    (address.ip.clone(), uid.unwrap_or_default())
}

fn port_key(port: &EndpointPort) -> PortKey {
    (
        port.name.clone().unwrap_or_default(),
        port.port,
        protocol_of(port.protocol.as_deref()).to_string(),
        port.app_protocol.clone(),
    )
}

/// `RepackSubsets`: ports served by exactly the same addresses (with the same readiness) share
/// a subset; addresses, ports and subsets come out sorted.
fn repack(entries: Vec<AddressEntry>) -> Vec<EndpointSubset> {
    type Addresses = BTreeMap<AddressKey, (EndpointAddress, bool)>;
    let mut by_port: BTreeMap<Option<PortKey>, (Option<EndpointPort>, Addresses)> = BTreeMap::new();
    for AddressEntry {
        address,
        ready,
        port,
    } in entries
    {
        let (_, addresses) = by_port
            .entry(port.as_ref().map(port_key))
            .or_insert_with(|| (port, BTreeMap::new()));
        // Listed twice, an address is ready if either says so (`mapAddressByPort`).
        addresses
            .entry(address_key(&address))
            .or_insert((address, false))
            .1 |= ready;
    }
    type Shared = (Vec<(EndpointAddress, bool)>, Vec<EndpointPort>);
    let mut by_addresses: BTreeMap<Vec<(AddressKey, bool)>, Shared> = BTreeMap::new();
    for (port, addresses) in by_port.into_values() {
        let key = addresses
            .iter()
            .map(|(k, (_, ready))| (k.clone(), *ready))
            .collect();
        let (_, ports) = by_addresses
            .entry(key)
            .or_insert_with(|| (addresses.into_values().collect(), Vec::new()));
        ports.extend(port);
    }
    by_addresses
        .into_values()
        .map(|(addresses, ports)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) =
                addresses.into_iter().partition(|(_, ready)| *ready);
            let strip = |list: Vec<(EndpointAddress, bool)>| -> Option<Vec<EndpointAddress>> {
                non_empty(list.into_iter().map(|(a, _)| a).collect())
            };
            EndpointSubset {
                addresses: strip(ready),
                not_ready_addresses: strip(not_ready),
                ports: non_empty(ports),
            }
        })
        .collect()
}

fn non_empty<T>(list: Vec<T>) -> Option<Vec<T>> {
    (!list.is_empty()).then_some(list)
}

/// Subsets in the layout [`repack`] produces, without the Pod resourceVersions in address
/// references (they change with every Pod write and mean nothing to consumers).
fn canonical(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut entries = Vec::new();
    for subset in subsets {
        let ports: Vec<Option<EndpointPort>> = match subset.ports.as_deref() {
            Some(ports) if !ports.is_empty() => ports.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
        let lists = [
            (&subset.addresses, true),
            (&subset.not_ready_addresses, false),
        ];
        for (list, ready) in lists {
            for address in list.iter().flatten() {
                let mut address = address.clone();
                if let Some(r) = address.target_ref.as_mut() {
                    r.resource_version = None;
                }
                for port in &ports {
                    entries.push(AddressEntry {
                        address: address.clone(),
                        ready,
                        port: port.clone(),
                    });
                }
            }
        }
    }
    repack(entries)
}

/// `truncateEndpoints`: keeps at most `max` addresses, ready ones first; each subset keeps its
/// proportional share of what is kept, rounded up. Returns whether anything was cut. Subsets
/// left without addresses are dropped (an Endpoints subset must have some).
fn truncate(mut subsets: Vec<EndpointSubset>, max: usize) -> (Vec<EndpointSubset>, bool) {
    let count = |list: &Option<Vec<EndpointAddress>>| list.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= max {
        return (subsets, false);
    }
    let cut_ready = ready > max;
    let (budget, total) = if cut_ready {
        (max, ready)
    } else {
        (max - ready, not_ready)
    };
    let mut left = budget;
    for subset in &mut subsets {
        if cut_ready {
            subset.not_ready_addresses = None;
        }
        let list = if cut_ready {
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        if let Some(addresses) = list.as_mut() {
            let share = (addresses.len() * budget).div_ceil(total).min(left);
            addresses.truncate(share);
            left -= addresses.len();
        }
    }
    (canonical(&subsets), true)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use serde_json::json;

    fn plan(service: &Service, pods: &[Pod], existing: Option<&Endpoints>) -> Option<Change> {
        reconcile("ns", "web", Some(service), pods, existing)
    }

    fn created(change: Option<Change>) -> Endpoints {
        match change {
            Some(Change::Create(e)) => e,
            other => panic!("expected a create, got {other:?}"),
        }
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_pods_are_addresses_not_ready_ones_not_ready_addresses() {
        let mut not_ready = pod("b", "n1", &["10.0.0.2"]);
        set_ready(&mut not_ready, false);
        let mut terminating = pod("c", "n1", &["10.0.0.3"]);
        set_terminating(&mut terminating);
        let pods = [pod("a", "n1", &["10.0.0.1"]), not_ready, terminating];
        let endpoints = created(plan(&web(), &pods, None));
        assert_eq!(endpoints.metadata.name.as_deref(), Some("web"));
        assert_eq!(endpoints.metadata.namespace.as_deref(), Some("ns"));
        let subsets = endpoints.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.2"]);
        let port = &subsets[0].ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), 8080, Some("TCP"))
        );
        let a = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        let labels = endpoints.metadata.labels.unwrap();
        assert_eq!(
            labels.get(labels::SKIP_MIRROR).map(String::as_str),
            Some("true")
        );
        assert!(!labels.contains_key(labels::HEADLESS));
    }

    #[test]
    fn publish_not_ready_addresses_lists_every_pod_as_ready() {
        let mut service = web();
        service.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let mut not_ready = pod("b", "n1", &["10.0.0.2"]);
        set_ready(&mut not_ready, false);
        let mut terminating = pod("c", "n1", &["10.0.0.3"]);
        set_terminating(&mut terminating);
        let subsets = created(plan(&service, &[not_ready, terminating], None))
            .subsets
            .unwrap();
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.2", "10.0.0.3"]);
        assert_eq!(subsets[0].not_ready_addresses, None);
    }

    #[test]
    fn pods_resolving_ports_differently_get_separate_subsets() {
        let service = service(
            "web",
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                   "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                             {"name": "metrics", "port": 9100, "protocol": "TCP"}]}),
        );
        let with_port = |name: &str, ip: &str, port: i32| {
            let mut p = pod(name, "n1", &[ip]);
            p.spec.as_mut().unwrap().containers[0].ports =
                serde_json::from_value(json!([{"name": "http", "containerPort": port}])).unwrap();
            p
        };
        let pods = [
            with_port("a", "10.0.0.1", 8080),
            with_port("b", "10.0.0.2", 8080),
            with_port("c", "10.0.0.3", 9090),
        ];
        let subsets = created(plan(&service, &pods, None)).subsets.unwrap();
        let layout: Vec<(Vec<&str>, Vec<i32>)> = subsets
            .iter()
            .map(|s| {
                let mut ports: Vec<i32> = s.ports.iter().flatten().map(|p| p.port).collect();
                ports.sort();
                (ips(&s.addresses), ports)
            })
            .collect();
        assert_eq!(
            layout,
            vec![
                (vec!["10.0.0.1", "10.0.0.2"], vec![8080]),
                (vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"], vec![9100]),
                (vec!["10.0.0.3"], vec![9090]),
            ]
        );
    }

    #[test]
    fn headless_services_are_labelled_and_may_have_no_ports() {
        let headless = service(
            "web",
            json!({"selector": {"app": "web"}, "clusterIP": "None", "ipFamilies": ["IPv4"]}),
        );
        let mut pod = pod("a", "n1", &["10.0.0.1"]);
        let spec = pod.spec.as_mut().unwrap();
        spec.hostname = Some("a".into());
        spec.subdomain = Some("web".into());
        let endpoints = created(plan(&headless, &[pod], None));
        let labels = endpoints.metadata.labels.unwrap();
        assert_eq!(labels.get(labels::HEADLESS).map(String::as_str), Some(""));
        let subsets = endpoints.subsets.unwrap();
        assert_eq!(subsets[0].ports, None);
        assert_eq!(
            subsets[0].addresses.as_ref().unwrap()[0]
                .hostname
                .as_deref(),
            Some("a")
        );
    }

    #[test]
    fn dual_stack_services_list_the_primary_family_only() {
        let service = service(
            "web",
            json!({"selector": {"app": "web"}, "clusterIP": "fd00::10",
                   "ipFamilies": ["IPv6", "IPv4"], "ports": [{"port": 80}]}),
        );
        let pods = [
            pod("a", "n1", &["10.0.0.1", "fd00::1"]),
            pod("b", "n1", &["10.0.0.2"]),
        ];
        let subsets = created(plan(&service, &pods, None)).subsets.unwrap();
        assert_eq!(ips(&subsets[0].addresses), vec!["fd00::1"]);
    }

    #[test]
    fn unchanged_endpoints_are_not_rewritten() {
        let mut not_ready = pod("b", "n1", &["10.0.0.2"]);
        set_ready(&mut not_ready, false);
        let pods = [
            pod("a", "n1", &["10.0.0.1"]),
            not_ready,
            pod("c", "n1", &["10.0.0.3"]),
        ];
        let mut existing = created(plan(&web(), &pods, None));
        existing.metadata.resource_version = Some("3".into());
        assert_eq!(plan(&web(), &pods, Some(&existing)), None);
        // Another layout of the same content, as another writer might store it, is no change.
        let subset = &mut existing.subsets.as_mut().unwrap()[0];
        subset.addresses.as_mut().unwrap().reverse();
        subset.addresses.as_mut().unwrap()[0]
            .target_ref
            .as_mut()
            .unwrap()
            .resource_version = Some("9".into());
        assert_eq!(plan(&web(), &pods, Some(&existing)), None);

        let Some(Change::Update(updated)) = plan(&web(), &pods[..1], Some(&existing)) else {
            panic!("expected an update");
        };
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("3"));
        assert_eq!(
            ips(&updated.subsets.unwrap()[0].addresses),
            vec!["10.0.0.1"]
        );
    }

    #[test]
    fn more_than_a_thousand_addresses_are_truncated_and_annotated() {
        let mut pods: Vec<Pod> = (0..1100)
            .map(|i| {
                pod(
                    &format!("p{i:04}"),
                    "n1",
                    &[&format!("10.0.{}.{}", i / 250, i % 250 + 1)],
                )
            })
            .collect();
        for p in pods.iter_mut().skip(900) {
            set_ready(p, false);
        }
        let endpoints = created(plan(&web(), &pods, None));
        let subsets = endpoints.subsets.as_ref().unwrap();
        let ready: usize = subsets.iter().map(|s| ips(&s.addresses).len()).sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| ips(&s.not_ready_addresses).len())
            .sum();
        assert_eq!((ready, not_ready), (900, 100));
        let annotations = endpoints.metadata.annotations.clone().unwrap();
        assert_eq!(
            annotations
                .get(ANNOTATION_OVER_CAPACITY)
                .map(String::as_str),
            Some(TRUNCATED)
        );
        let mut existing = endpoints;
        assert_eq!(plan(&web(), &pods, Some(&existing)), None);

        // More ready Pods than fit: only ready ones are kept.
        for p in &mut pods {
            set_ready(p, true);
        }
        let Some(Change::Update(all_ready)) = plan(&web(), &pods, Some(&existing)) else {
            panic!("expected an update");
        };
        let subsets = all_ready.subsets.unwrap();
        assert_eq!(
            subsets
                .iter()
                .map(|s| ips(&s.addresses).len())
                .sum::<usize>(),
            1000
        );
        assert!(subsets.iter().all(|s| s.not_ready_addresses.is_none()));

        // Back under capacity: the annotation goes.
        existing.metadata.annotations =
            Some([(ANNOTATION_OVER_CAPACITY.to_string(), TRUNCATED.to_string())].into());
        let Some(Change::Update(fits)) = plan(&web(), &pods[..10], Some(&existing)) else {
            panic!("expected an update");
        };
        assert_eq!(fits.metadata.annotations, None);
    }

    #[test]
    fn endpoints_of_a_deleted_service_go_only_if_ours() {
        let ours = created(plan(&web(), &[pod("a", "n1", &["10.0.0.1"])], None));
        assert!(matches!(
            reconcile("ns", "web", None, &[], Some(&ours)),
            Some(Change::Delete { ref name, .. }) if name == "web"
        ));
        let users: Endpoints =
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns"}}))
                .unwrap();
        assert_eq!(reconcile("ns", "web", None, &[], Some(&users)), None);
        assert_eq!(reconcile("ns", "web", None, &[], None), None);
        // The API server's own, which carries the same label, is never touched.
        let mut kubernetes = ours.clone();
        kubernetes.metadata.namespace = Some("default".into());
        kubernetes.metadata.name = Some("kubernetes".into());
        assert_eq!(
            reconcile("default", "kubernetes", None, &[], Some(&kubernetes)),
            None
        );
    }

    #[test]
    fn endpoints_of_services_without_selector_are_left_alone() {
        let users: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "subsets": [{"addresses": [{"ip": "192.0.2.1"}]}],
        }))
        .unwrap();
        let mut selectorless = web();
        selectorless.spec.as_mut().unwrap().selector = None;
        let pods = [pod("a", "n1", &["10.0.0.1"])];
        assert_eq!(plan(&selectorless, &pods, Some(&users)), None);
        assert_eq!(plan(&selectorless, &pods, None), None);
    }
}
