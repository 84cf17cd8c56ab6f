//! The EndpointSlices of one Service: the pure half of the EndpointSlice controller (upstream's
//! `Reconciler` in `k8s.io/endpointslice`).
//!
//! Endpoints are grouped by address type and by the set of ports they serve (a named
//! `targetPort` can resolve to a different port, or to none, per Pod), and each group is packed
//! into slices of at most `--max-endpoints-per-slice`. Churn is kept low the way upstream keeps
//! it (`reconcileByPortMapping`, `finalize`): an endpoint stays in the slice that holds it; a
//! slice is written only when its endpoints or labels change; new endpoints go first into slices
//! that are rewritten anyway, then into the one unchanged slice they fill best, then into new
//! slices; and a slice that would be deleted while another is created is updated into it.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kubewire_api::labels;

use super::{
    AddressType, CONTROLLER_NAME, Config, NodeZones, address_types, find_port, hostname_for,
    is_pod_ready, is_service_ip_set, is_terminating, managed_selector, node_name_of, pod_ips,
    pod_reference, protocol_of, publishes_not_ready, selected_pods, service_ports,
    should_be_in_endpoints,
};

/// The writes that bring one Service's EndpointSlices to what its Pods say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// New slices, named by the server from `generateName`.
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new content; each keeps the resourceVersion it was computed from,
    /// so a write over a newer version fails with a conflict instead of losing it.
    pub update: Vec<EndpointSlice>,
    /// Existing slices to delete.
    pub delete: Vec<EndpointSlice>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Decides the EndpointSlices of `service` from the Pods of its namespace, the Nodes and the
/// slices that exist for it (those labelled with its name; slices another manager owns are
/// ignored, whatever is passed). Services the controller does not manage
/// ([`managed_selector`]) get an empty plan: their slices are left as they are.
pub fn reconcile<'a>(
    service: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
    nodes: &NodeZones,
    existing: impl IntoIterator<Item = &'a EndpointSlice>,
    config: &Config,
) -> Plan {
    let Some(selector) = managed_selector(service) else {
        return Plan::default();
    };
    let members = selected_pods(service, &selector, pods);
    let ours: Vec<&EndpointSlice> = existing
        .into_iter()
        .filter(|s| is_managed_slice_of(s, service))
        .collect();
    let context = Context {
        service,
        labels: slice_labels(service),
        max: config.max_endpoints_per_slice(),
    };
    let types = address_types(service);
    let mut plan = Plan::default();
    // Slices of a family the Service no longer has.
    plan.delete.extend(
        ours.iter()
            .filter(|s| !types.iter().any(|t| t.as_str() == s.address_type))
            .map(|s| (*s).clone()),
    );
    for address_type in types {
        let of_type: Vec<&EndpointSlice> = ours
            .iter()
            .copied()
            .filter(|s| s.address_type == address_type.as_str())
            .collect();
        let groups = desired_groups(service, &members, nodes, address_type);
        plan_address_type(&context, address_type, groups, &of_type, &mut plan);
    }
    reuse_deleted_slices(service, &mut plan);
    if service.metadata.deletion_timestamp.is_some() {
        // Creating slices while the garbage collector deletes the Service's would race it.
        plan.create.clear();
    }
    plan.update
        .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    plan.delete
        .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    plan
}

/// What every slice of the Service being reconciled shares.
struct Context<'a> {
    service: &'a Service,
    labels: BTreeMap<String, String>,
    max: usize,
}

/// Endpoints that serve the same ports, keyed by endpoint identity.
struct Group {
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// Identifies a set of ports regardless of order (upstream's `PortMapKey`).
type PortKey = Vec<(String, String, Option<i32>, Option<String>)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                protocol_of(p.protocol.as_deref()).to_string(),
                p.port,
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

/// Identifies an endpoint across reconciles: its Pod, hostname and addresses (upstream's
/// `endpointHash`), so that a change of conditions, zone or hints updates it in place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct EndpointKey {
    namespace: String,
    name: String,
    hostname: String,
    addresses: Vec<String>,
}

impl EndpointKey {
    fn of(endpoint: &Endpoint) -> EndpointKey {
        let pod = endpoint.target_ref.as_ref();
        let mut addresses = endpoint.addresses.clone();
        addresses.sort();
        EndpointKey {
            namespace: pod.and_then(|r| r.namespace.clone()).unwrap_or_default(),
            name: pod.and_then(|r| r.name.clone()).unwrap_or_default(),
            hostname: endpoint.hostname.clone().unwrap_or_default(),
            addresses,
        }
    }
}

/// The slice is ours and this Service's (`managed-by` is the only thing that tells
/// controllers' slices apart, so any other value means hands off). Slices being deleted are
/// left to finish.
fn is_managed_slice_of(slice: &EndpointSlice, service: &Service) -> bool {
    let meta = &slice.metadata;
    let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key));
    label(labels::MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
        && label(labels::SERVICE_NAME) == service.metadata.name.as_ref()
        && meta.namespace == service.metadata.namespace
        && meta.deletion_timestamp.is_none()
}

/// Owned by this very Service (not an earlier one of the same name).
fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    slice.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "Service"
            && o.api_version == "v1"
            && Some(&o.uid) == service.metadata.uid.as_ref()
    })
}

/// `setEndpointSliceLabels`: the Service's labels, except the reserved ones, which say whose
/// slice it is and whether the Service is headless.
fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| {
            ![labels::SERVICE_NAME, labels::MANAGED_BY, labels::HEADLESS].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !is_service_ip_set(service) {
        labels.insert(labels::HEADLESS.into(), String::new());
    }
    labels.insert(
        labels::SERVICE_NAME.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(labels::MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// The endpoints of one address type, grouped by the ports they serve.
fn desired_groups(
    service: &Service,
    members: &[&Pod],
    nodes: &NodeZones,
    address_type: AddressType,
) -> BTreeMap<PortKey, Group> {
    let mut groups: BTreeMap<PortKey, Group> = BTreeMap::new();
    for pod in members {
        if !should_be_in_endpoints(pod, true) {
            continue;
        }
        // A Pod on a Node that does not exist is left out until the Node shows up, unless the
        // Service publishes not-ready addresses anyway (upstream `reconcileByAddressType`).
        let on_known_node = node_name_of(pod).is_some_and(|n| nodes.contains(n));
        if !on_known_node && !publishes_not_ready(service) {
            continue;
        }
        let addresses: Vec<String> = pod_ips(pod)
            .into_iter()
            .filter(|ip| AddressType::of(*ip) == address_type)
            .map(|ip| ip.to_string())
            .collect();
        if addresses.is_empty() {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let endpoint = pod_endpoint(service, pod, nodes, addresses);
        groups
            .entry(port_key(&ports))
            .or_insert_with(|| Group {
                ports,
                endpoints: BTreeMap::new(),
            })
            .endpoints
            .insert(EndpointKey::of(&endpoint), endpoint);
    }
    groups
}

/// `getEndpointPorts`: one port per Service port the Pod resolves.
fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service_ports(service)
        .iter()
        .filter_map(|service_port| {
            let port = find_port(pod, service_port)?;
            Some(EndpointPort {
                name: Some(service_port.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol_of(service_port.protocol.as_deref()).into()),
                app_protocol: service_port.app_protocol.clone(),
            })
        })
        .collect()
}

/// `podToEndpoint`.
fn pod_endpoint(
    service: &Service,
    pod: &Pod,
    nodes: &NodeZones,
    addresses: Vec<String>,
) -> Endpoint {
    let serving = is_pod_ready(pod);
    let terminating = is_terminating(pod);
    // `ready` stays false for terminating Pods, as consumers that predate `serving` and
    // `terminating` expect (KEP-1672), unless the Service publishes not-ready addresses.
    let ready = publishes_not_ready(service) || (serving && !terminating);
    let node_name = node_name_of(pod).map(str::to_string);
    let zone = node_name
        .as_deref()
        .and_then(|n| nodes.zone(n))
        .map(str::to_string);
    let hints = hints(service, ready, zone.as_deref(), node_name.as_deref());
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname_for(pod, service),
        node_name,
        target_ref: Some(pod_reference(pod)),
        zone,
        hints,
        deprecated_topology: None,
    }
}

/// Traffic distribution hints (KEP-4444 `PreferClose`, KEP-3015 `PreferSameZone` and
/// `PreferSameNode`; upstream's `trafficdist` package): a ready endpoint is hinted to its own
/// zone, and with `PreferSameNode` also to its own node. Other endpoints, and every endpoint of
/// a Service without one of these values, carry no hints.
fn hints(
    service: &Service,
    ready: bool,
    zone: Option<&str>,
    node: Option<&str>,
) -> Option<EndpointHints> {
    let distribution = service
        .spec
        .as_ref()
        .and_then(|s| s.traffic_distribution.as_deref());
    let same_node = match distribution {
        Some("PreferClose" | "PreferSameZone") => false,
        Some("PreferSameNode") => true,
        _ => return None,
    };
    if !ready {
        return None;
    }
    let for_zones = zone.map(|z| vec![ForZone { name: z.into() }]);
    let for_nodes = node
        .filter(|_| same_node)
        .map(|n| vec![ForNode { name: n.into() }]);
    (for_zones.is_some() || for_nodes.is_some()).then_some(EndpointHints {
        for_zones,
        for_nodes,
    })
}

/// Plans the slices of one address type: each desired port group against the existing slices
/// with that port set, deletes for port sets nobody serves any more, and the placeholder.
fn plan_address_type(
    context: &Context,
    address_type: AddressType,
    groups: BTreeMap<PortKey, Group>,
    existing: &[&EndpointSlice],
    plan: &mut Plan,
) {
    let mut of_type = Plan::default();
    let mut existing_by_ports: BTreeMap<PortKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, context.service) {
            let key = port_key(slice.ports.as_deref().unwrap_or_default());
            existing_by_ports.entry(key).or_default().push(slice);
        } else {
            // Left by an earlier Service of the same name.
            of_type.delete.push((*slice).clone());
        }
    }
    for (key, group) in groups {
        let slices = existing_by_ports.remove(&key).unwrap_or_default();
        pack(context, address_type, group, slices, &mut of_type);
    }
    of_type
        .delete
        .extend(existing_by_ports.into_values().flatten().cloned());

    // With no endpoints, one empty slice (no endpoints, no ports) stays per address type, as
    // upstream keeps a placeholder; an existing one is kept rather than replaced.
    if of_type.delete.len() == existing.len() && of_type.create.is_empty() {
        let placeholder = new_slice(context, address_type, Vec::new(), Vec::new());
        match of_type.delete.as_slice() {
            [only] if is_placeholder(only, &placeholder) => of_type.delete.clear(),
            _ => of_type.create.push(placeholder),
        }
    }
    plan.create.append(&mut of_type.create);
    plan.update.append(&mut of_type.update);
    plan.delete.append(&mut of_type.delete);
}

fn is_placeholder(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.address_type == placeholder.address_type
        && slice.metadata.labels == placeholder.metadata.labels
        && slice.endpoints.as_deref().unwrap_or_default().is_empty()
        && slice.ports.as_deref().unwrap_or_default().is_empty()
}

/// Fits one port group's endpoints into its existing slices and new ones.
fn pack(
    context: &Context,
    address_type: AddressType,
    group: Group,
    existing: Vec<&EndpointSlice>,
    plan: &mut Plan,
) {
    let Group {
        ports,
        endpoints: mut wanted,
    } = group;
    let mut rewritten: Vec<EndpointSlice> = Vec::new();
    let mut unchanged: Vec<&EndpointSlice> = Vec::new();
    for slice in existing {
        let current = slice.endpoints.as_deref().unwrap_or_default();
        let mut kept = Vec::with_capacity(current.len());
        let mut changed = false;
        for endpoint in current {
            // Removing it from `wanted` also drops a second copy of it from another slice.
            if let Some(want) = wanted.remove(&EndpointKey::of(endpoint)) {
                changed |= !same_endpoint(endpoint, &want);
                kept.push(want);
            }
        }
        let labels_differ = slice.metadata.labels.as_ref() != Some(&context.labels);
        if kept.is_empty() && !current.is_empty() {
            plan.delete.push(slice.clone());
        } else if changed || kept.len() != current.len() || labels_differ {
            rewritten.push(with_content(
                slice,
                context.labels.clone(),
                ports.clone(),
                kept,
            ));
        } else {
            unchanged.push(slice);
        }
    }

    // New endpoints go first into slices written anyway, fullest first.
    rewritten.sort_by_key(|s| Reverse(endpoint_count(s)));
    for slice in &mut rewritten {
        fill(slice, &mut wanted, context.max);
    }
    // Then, when the rest fits into one unchanged slice, into the one it fills best; else into
    // new slices.
    while !wanted.is_empty() {
        let best = if wanted.len() < context.max {
            closest_fit(&unchanged, wanted.len(), context.max)
        } else {
            None
        };
        let mut slice = match best {
            Some(i) => unchanged.remove(i).clone(),
            None => new_slice(context, address_type, ports.clone(), Vec::new()),
        };
        fill(&mut slice, &mut wanted, context.max);
        if slice.metadata.name.is_some() {
            rewritten.push(slice);
        } else {
            plan.create.push(slice);
        }
    }
    plan.update.append(&mut rewritten);
}

/// Equal but for the Pod's resourceVersion in the reference, which changes with every Pod
/// write and means nothing to consumers.
fn same_endpoint(existing: &Endpoint, desired: &Endpoint) -> bool {
    let mut existing = existing.clone();
    if let Some(r) = existing.target_ref.as_mut() {
        r.resource_version = None;
    }
    existing == *desired
}

fn endpoint_count(slice: &EndpointSlice) -> usize {
    slice.endpoints.as_ref().map_or(0, Vec::len)
}

fn fill(slice: &mut EndpointSlice, wanted: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    let endpoints = slice.endpoints.get_or_insert_with(Vec::new);
    while endpoints.len() < max {
        let Some((_, endpoint)) = wanted.pop_first() else {
            break;
        };
        endpoints.push(endpoint);
    }
}

/// `getSliceToFill`: the slice that `count` more endpoints bring closest to full.
fn closest_fit(slices: &[&EndpointSlice], count: usize, max: usize) -> Option<usize> {
    slices
        .iter()
        .enumerate()
        .filter(|(_, s)| endpoint_count(s) + count <= max)
        .min_by_key(|(_, s)| max - (endpoint_count(s) + count))
        .map(|(i, _)| i)
}

fn with_content(
    base: &EndpointSlice,
    labels: BTreeMap<String, String>,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let mut slice = base.clone();
    slice.metadata.labels = Some(labels);
    slice.ports = Some(ports);
    slice.endpoints = Some(endpoints);
    slice
}

fn new_slice(
    context: &Context,
    address_type: AddressType,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let service = &context.service.metadata;
    let name = service.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.namespace.clone(),
            labels: Some(context.labels.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: service.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: address_type.as_str().into(),
        ports: Some(ports),
        endpoints: Some(endpoints),
    }
}

/// Upstream `finalize`: a delete and a create of the same address type become one update of the
/// slice that would go (one write instead of two, and consumers see no gap). Only slices this
/// Service owns are reused; others go with the earlier Service of the same name.
fn reuse_deleted_slices(service: &Service, plan: &mut Plan) {
    let mut still_deleted = Vec::new();
    for old in std::mem::take(&mut plan.delete) {
        let replacement = owned_by(&old, service)
            .then(|| {
                plan.create
                    .iter()
                    .rposition(|c| c.address_type == old.address_type)
            })
            .flatten();
        match replacement {
            Some(i) => {
                let new = plan.create.remove(i);
                plan.update.push(with_content(
                    &old,
                    new.metadata.labels.unwrap_or_default(),
                    new.ports.unwrap_or_default(),
                    new.endpoints.unwrap_or_default(),
                ));
            }
            None => still_deleted.push(old),
        }
    }
    plan.delete = still_deleted;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::fixtures::*;
    use super::*;
    use serde_json::json;

    fn zones() -> NodeZones {
        NodeZones::from_nodes(&[node("n1", Some("z1")), node("n2", Some("z2"))])
    }

    fn plan_for(service: &Service, pods: &[Pod], existing: &[EndpointSlice]) -> Plan {
        reconcile(service, pods, &zones(), existing, &Config::default())
    }

    /// Applies a plan as the API server would: names for creates, a new resourceVersion for
    /// every write.
    fn apply(existing: &[EndpointSlice], plan: &Plan) -> Vec<EndpointSlice> {
        let mut slices: BTreeMap<String, EndpointSlice> = existing
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
            .collect();
        for s in &plan.delete {
            slices.remove(s.metadata.name.as_ref().unwrap());
        }
        let bump = |s: &mut EndpointSlice| {
            let rv: u64 = s
                .metadata
                .resource_version
                .as_deref()
                .unwrap_or("0")
                .parse()
                .unwrap();
            s.metadata.resource_version = Some((rv + 1).to_string());
        };
        for s in &plan.update {
            let mut s = s.clone();
            bump(&mut s);
            slices.insert(s.metadata.name.clone().unwrap(), s);
        }
        for s in &plan.create {
            let mut s = s.clone();
            let name = format!(
                "{}{}",
                s.metadata.generate_name.clone().unwrap(),
                slices.len()
            );
            s.metadata.name = Some(name.clone());
            bump(&mut s);
            slices.insert(name, s);
        }
        slices.into_values().collect()
    }

    /// Reconciles until nothing changes (at most three rounds), returning the slices.
    fn converge(
        service: &Service,
        pods: &[Pod],
        mut slices: Vec<EndpointSlice>,
    ) -> Vec<EndpointSlice> {
        for _ in 0..3 {
            let plan = plan_for(service, pods, &slices);
            if plan.is_empty() {
                return slices;
            }
            slices = apply(&slices, &plan);
        }
        panic!("no fixed point: {slices:#?}");
    }

    fn endpoints_of(slices: &[EndpointSlice]) -> Vec<&Endpoint> {
        slices
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .collect()
    }

    fn by_pod<'a>(slices: &'a [EndpointSlice], pod: &str) -> &'a Endpoint {
        endpoints_of(slices)
            .into_iter()
            .find(|e| e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
            .unwrap_or_else(|| panic!("no endpoint for {pod}"))
    }

    fn conditions(e: &Endpoint) -> (bool, bool, bool) {
        let c = e.conditions.as_ref().unwrap();
        (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
    }

    fn port_numbers(slice: &EndpointSlice) -> Vec<i32> {
        slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port)
            .collect()
    }

    #[test]
    fn endpoints_carry_ready_serving_and_terminating() {
        let mut not_ready = pod("b", "n1", &["10.0.0.2"]);
        set_ready(&mut not_ready, false);
        let mut terminating = pod("c", "n2", &["10.0.0.3"]);
        set_terminating(&mut terminating);
        let mut terminating_not_ready = pod("d", "n2", &["10.0.0.4"]);
        set_terminating(&mut terminating_not_ready);
        set_ready(&mut terminating_not_ready, false);
        let mut finished = pod("e", "n1", &["10.0.0.5"]);
        finished.status.as_mut().unwrap().phase = Some("Failed".into());
        let other_app = {
            let mut p = pod("f", "n1", &["10.0.0.6"]);
            p.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
            p
        };
        let pods = [
            pod("a", "n1", &["10.0.0.1"]),
            not_ready,
            terminating,
            terminating_not_ready,
            finished,
            other_app,
            pod("no-ip", "n1", &[]),
        ];
        let plan = plan_for(&web(), &pods, &[]);
        assert_eq!(plan.create.len(), 1, "{plan:#?}");
        let slices = plan.create;
        assert_eq!(endpoints_of(&slices).len(), 4);
        assert_eq!(conditions(by_pod(&slices, "a")), (true, true, false));
        assert_eq!(conditions(by_pod(&slices, "b")), (false, false, false));
        assert_eq!(conditions(by_pod(&slices, "c")), (false, true, true));
        assert_eq!(conditions(by_pod(&slices, "d")), (false, false, true));

        let a = by_pod(&slices, "a");
        assert_eq!(a.addresses, vec!["10.0.0.1"]);
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.zone.as_deref(), Some("z1"));
        let target = a.target_ref.as_ref().unwrap();
        assert_eq!(
            (
                target.kind.as_deref(),
                target.namespace.as_deref(),
                target.uid.as_deref()
            ),
            (Some("Pod"), Some("ns"), Some("uid-a"))
        );
        assert_eq!(a.hints, None);

        let slice = &slices[0];
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(slice.metadata.namespace.as_deref(), Some("ns"));
        let port = &slice.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "uid-web")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_split_slices() {
        let service = service(
            "web",
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                   "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        );
        let with_port = |name: &str, ip: &str, port: Option<i32>| {
            let mut p = pod(name, "n1", &[ip]);
            let ports = port.map(|n| json!([{"name": "http", "containerPort": n}]));
            p.spec.as_mut().unwrap().containers[0].ports =
                serde_json::from_value(ports.unwrap_or(json!(null))).unwrap();
            p
        };
        let pods = [
            with_port("old-1", "10.0.0.1", Some(8080)),
            with_port("old-2", "10.0.0.2", Some(8080)),
            with_port("new-1", "10.0.0.3", Some(9090)),
            with_port("none", "10.0.0.4", None),
        ];
        let slices = converge(&service, &pods, Vec::new());
        assert_eq!(slices.len(), 3, "{slices:#?}");
        let mut by_ports: BTreeMap<Vec<i32>, BTreeSet<String>> = BTreeMap::new();
        for s in &slices {
            let names = s
                .endpoints
                .iter()
                .flatten()
                .map(|e| e.target_ref.as_ref().unwrap().name.clone().unwrap())
                .collect();
            by_ports.insert(port_numbers(s), names);
        }
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(by_ports[&vec![8080]], names(&["old-1", "old-2"]));
        assert_eq!(by_ports[&vec![9090]], names(&["new-1"]));
        // A Pod without the named port is an endpoint without that port (upstream `FindPort`
        // failing skips the port, not the Pod).
        assert_eq!(by_ports[&vec![]], names(&["none"]));
    }

    #[test]
    fn dual_stack_gets_one_slice_per_address_type() {
        let service = service(
            "web",
            json!({"selector": {"app": "web"}, "clusterIP": "fd00::10",
                   "ipFamilies": ["IPv6", "IPv4"], "ports": [{"port": 80}]}),
        );
        let pods = [
            pod("a", "n1", &["10.0.0.1", "fd00::1"]),
            pod("b", "n1", &["fd00::0002", "10.0.0.2"]),
            pod("v4-only", "n1", &["10.0.0.3"]),
        ];
        let plan = plan_for(&service, &pods, &[]);
        assert_eq!(plan.create.len(), 2);
        let of = |t: &str| plan.create.iter().find(|s| s.address_type == t).unwrap();
        let addresses = |s: &EndpointSlice| -> Vec<String> {
            s.endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.addresses.clone())
                .collect()
        };
        // Canonical spelling, as upstream re-stringifies parsed IPs.
        assert_eq!(addresses(of("IPv6")), vec!["fd00::1", "fd00::2"]);
        assert_eq!(
            addresses(of("IPv4")),
            vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );

        // Back to single-stack: the IPv6 slice goes, the IPv4 one stays untouched.
        let slices = apply(&[], &plan);
        let mut single = service.clone();
        single.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into()]);
        let plan = plan_for(&single, &pods, &slices);
        assert!(
            plan.create.is_empty() && plan.update.is_empty(),
            "{plan:#?}"
        );
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].address_type, "IPv6");
    }

    #[test]
    fn more_endpoints_than_fit_are_split_and_new_ones_fill_existing_slices() {
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    "n1",
                    &[&format!("10.0.{}.{}", i / 200, i % 200 + 1)],
                )
            })
            .collect();
        let slices = converge(&web(), &pods, Vec::new());
        let mut sizes: Vec<usize> = slices.iter().map(endpoint_count).collect();
        sizes.sort();
        assert_eq!(sizes, vec![50, 100, 100]);
        let unique: BTreeSet<EndpointKey> = endpoints_of(&slices)
            .into_iter()
            .map(EndpointKey::of)
            .collect();
        assert_eq!(unique.len(), 250);

        // Ten more Pods: one write, into the slice with room, nothing created.
        let mut more = pods.clone();
        more.extend(
            (250..260).map(|i| pod(&format!("p{i:03}"), "n1", &[&format!("10.1.0.{}", i - 249)])),
        );
        let plan = plan_for(&web(), &more, &slices);
        assert!(
            plan.create.is_empty() && plan.delete.is_empty(),
            "{plan:#?}"
        );
        assert_eq!(plan.update.len(), 1);
        assert_eq!(endpoint_count(&plan.update[0]), 60);

        // A smaller maximum applies to new slices.
        let small = Config::new(2).unwrap();
        let plan = reconcile(&web(), &pods[..5], &zones(), &[], &small);
        let sizes: Vec<usize> = plan.create.iter().map(endpoint_count).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_endpoint_ready() {
        let mut service = web();
        service.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let mut not_ready = pod("b", "n1", &["10.0.0.2"]);
        set_ready(&mut not_ready, false);
        let mut terminating = pod("c", "n1", &["10.0.0.3"]);
        set_terminating(&mut terminating);
        // Published even though its Node is unknown.
        let on_unknown_node = pod("d", "gone", &["10.0.0.4"]);
        let plan = plan_for(&service, &[not_ready, terminating, on_unknown_node], &[]);
        let slices = plan.create;
        assert_eq!(conditions(by_pod(&slices, "b")), (true, false, false));
        assert_eq!(conditions(by_pod(&slices, "c")), (true, true, true));
        assert_eq!(by_pod(&slices, "d").zone, None);
    }

    #[test]
    fn pods_on_unknown_nodes_wait_for_the_node() {
        let pods = [
            pod("a", "n1", &["10.0.0.1"]),
            pod("b", "new-node", &["10.0.0.2"]),
        ];
        let plan = plan_for(&web(), &pods, &[]);
        assert_eq!(endpoints_of(&plan.create).len(), 1);
        let slices = apply(&[], &plan);
        let with_node = NodeZones::from_nodes(&[node("n1", None), node("new-node", None)]);
        let plan = reconcile(&web(), &pods, &with_node, &slices, &Config::default());
        assert_eq!(endpoints_of(&plan.update).len(), 2);
    }

    #[test]
    fn hostname_is_published_only_for_the_pods_subdomain() {
        let named = |name: &str, ip: &str, subdomain: &str| {
            let mut p = pod(name, "n1", &[ip]);
            let spec = p.spec.as_mut().unwrap();
            spec.hostname = Some(format!("{name}-host"));
            spec.subdomain = Some(subdomain.into());
            p
        };
        let pods = [
            named("a", "10.0.0.1", "web"),
            named("b", "10.0.0.2", "other"),
        ];
        let slices = plan_for(&web(), &pods, &[]).create;
        assert_eq!(by_pod(&slices, "a").hostname.as_deref(), Some("a-host"));
        assert_eq!(by_pod(&slices, "b").hostname, None);
    }

    #[test]
    fn labels_copy_the_service_and_mark_headless_services() {
        let headless = service(
            "web",
            json!({"selector": {"app": "web"}, "clusterIP": "None", "ipFamilies": ["IPv4"]}),
        );
        let mut labelled = headless.clone();
        labelled.metadata.labels = Some(
            [
                ("team".to_string(), "blue".to_string()),
                (labels::MANAGED_BY.to_string(), "me".to_string()),
            ]
            .into(),
        );
        let slices = plan_for(&labelled, &[pod("a", "n1", &["10.0.0.1"])], &[]).create;
        let labels = slices[0].metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("blue"));
        assert_eq!(labels.get(labels::HEADLESS).map(String::as_str), Some(""));
        assert_eq!(
            labels.get(labels::SERVICE_NAME).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(labels::MANAGED_BY).map(String::as_str),
            Some(CONTROLLER_NAME)
        );
        // Headless without ports: endpoints without ports.
        assert!(slices[0].ports.as_ref().unwrap().is_empty());
        assert!(!web_labels().contains_key(labels::HEADLESS));

        // A label change on the Service rewrites the slice, keeping its endpoints.
        let slices = apply(
            &[],
            &plan_for(&labelled, &[pod("a", "n1", &["10.0.0.1"])], &[]),
        );
        let plan = plan_for(&headless, &[pod("a", "n1", &["10.0.0.1"])], &slices);
        assert_eq!(plan.update.len(), 1, "{plan:#?}");
        assert!(
            !plan.update[0]
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("team")
        );
        assert_eq!(endpoint_count(&plan.update[0]), 1);
    }

    fn web_labels() -> BTreeMap<String, String> {
        slice_labels(&web())
    }

    #[test]
    fn services_without_selector_are_left_alone() {
        let existing = apply(
            &[],
            &plan_for(&web(), &[pod("a", "n1", &["10.0.0.1"])], &[]),
        );
        let mut selectorless = web();
        selectorless.spec.as_mut().unwrap().selector = None;
        assert!(plan_for(&selectorless, &[pod("a", "n1", &["10.0.0.1"])], &existing).is_empty());
        let mut external = web();
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(plan_for(&external, &[], &existing).is_empty());
    }

    #[test]
    fn slices_of_other_managers_are_never_touched() {
        let mut foreign: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-custom", "namespace": "ns", "resourceVersion": "5",
                         "labels": {labels::SERVICE_NAME: "web", labels::MANAGED_BY: "someone-else"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.0.2.1"]}],
        }))
        .unwrap();
        let pods = [pod("a", "n1", &["10.0.0.1"])];
        let plan = plan_for(&web(), &pods, std::slice::from_ref(&foreign));
        assert_eq!(plan.create.len(), 1);
        assert!(plan.update.is_empty() && plan.delete.is_empty());
        // Not even without any endpoint of ours, where a placeholder is due.
        let plan = plan_for(&web(), &[], std::slice::from_ref(&foreign));
        assert!(plan.update.is_empty() && plan.delete.is_empty());
        // Nor when another controller's slice carries our uid as owner.
        foreign.metadata.owner_references = serde_json::from_value(
            json!([{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "uid-web"}]),
        )
        .unwrap();
        let plan = plan_for(&web(), &[], std::slice::from_ref(&foreign));
        assert!(plan.update.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn unchanged_slices_are_not_rewritten_and_changes_update_in_place() {
        let pods = [pod("a", "n1", &["10.0.0.1"]), pod("b", "n2", &["10.0.0.2"])];
        let mut slices = apply(&[], &plan_for(&web(), &pods, &[]));
        // The server adds Pod resourceVersions nobody compares.
        for e in slices[0].endpoints.iter_mut().flatten() {
            e.target_ref.as_mut().unwrap().resource_version = Some("77".into());
        }
        assert!(plan_for(&web(), &pods, &slices).is_empty());
        // Order of endpoints or ports is not a change either.
        slices[0].endpoints.as_mut().unwrap().reverse();
        assert!(plan_for(&web(), &pods, &slices).is_empty());

        let mut changed = pods.clone();
        set_ready(&mut changed[1], false);
        let plan = plan_for(&web(), &changed, &slices);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.len(), 1);
        let updated = &plan.update[0];
        assert_eq!(updated.metadata.name, slices[0].metadata.name);
        assert_eq!(
            updated.metadata.resource_version,
            slices[0].metadata.resource_version
        );
        assert_eq!(conditions(by_pod(&plan.update, "b")), (false, false, false));
    }

    #[test]
    fn no_endpoints_leave_one_placeholder_that_is_reused() {
        let plan = plan_for(&web(), &[], &[]);
        assert_eq!(plan.create.len(), 1);
        assert!(endpoints_of(&plan.create).is_empty());
        assert!(plan.create[0].ports.as_ref().unwrap().is_empty());
        let slices = apply(&[], &plan);
        assert!(plan_for(&web(), &[], &slices).is_empty());

        // Pods arrive: the placeholder becomes their slice (an update, not delete + create).
        let pods = [pod("a", "n1", &["10.0.0.1"])];
        let plan = plan_for(&web(), &pods, &slices);
        assert!(
            plan.create.is_empty() && plan.delete.is_empty(),
            "{plan:#?}"
        );
        assert_eq!(plan.update[0].metadata.name, slices[0].metadata.name);
        assert_eq!(port_numbers(&plan.update[0]), vec![8080]);

        // And back to a placeholder when they go.
        let slices = apply(&slices, &plan);
        let plan = plan_for(&web(), &[], &slices);
        assert!(
            plan.create.is_empty() && plan.delete.is_empty(),
            "{plan:#?}"
        );
        assert!(endpoints_of(&plan.update).is_empty());
    }

    #[test]
    fn slices_of_an_earlier_service_with_the_same_name_are_deleted_not_reused() {
        let pods = [pod("a", "n1", &["10.0.0.1"])];
        let slices = apply(&[], &plan_for(&web(), &pods, &[]));
        let mut recreated = web();
        recreated.metadata.uid = Some("uid-web-2".into());
        let plan = plan_for(&recreated, &pods, &slices);
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.create.len(), 1);
        let owner = &plan.create[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, "uid-web-2");
    }

    #[test]
    fn a_service_being_deleted_gets_no_new_slices() {
        let mut service = web();
        service.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(plan_for(&service, &[pod("a", "n1", &["10.0.0.1"])], &[]).is_empty());
    }

    #[test]
    fn traffic_distribution_sets_hints_on_ready_endpoints() {
        let with = |distribution: Option<&str>| {
            let mut s = web();
            s.spec.as_mut().unwrap().traffic_distribution = distribution.map(Into::into);
            s
        };
        let mut not_ready = pod("b", "n2", &["10.0.0.2"]);
        set_ready(&mut not_ready, false);
        let pods = [
            pod("a", "n1", &["10.0.0.1"]),
            not_ready,
            pod("c", "unzoned", &["10.0.0.3"]),
        ];
        let nodes = NodeZones::from_nodes(&[
            node("n1", Some("z1")),
            node("n2", Some("z2")),
            node("unzoned", None),
        ]);
        let run = |s: &Service, existing: &[EndpointSlice]| {
            reconcile(s, &pods, &nodes, existing, &Config::default())
        };
        let zones_of = |e: &Endpoint| -> Option<Vec<String>> {
            e.hints
                .as_ref()?
                .for_zones
                .as_ref()
                .map(|z| z.iter().map(|z| z.name.clone()).collect())
        };
        let nodes_of = |e: &Endpoint| -> Option<Vec<String>> {
            e.hints
                .as_ref()?
                .for_nodes
                .as_ref()
                .map(|n| n.iter().map(|n| n.name.clone()).collect())
        };

        for value in ["PreferClose", "PreferSameZone"] {
            let slices = run(&with(Some(value)), &[]).create;
            assert_eq!(
                zones_of(by_pod(&slices, "a")),
                Some(vec!["z1".into()]),
                "{value}"
            );
            assert_eq!(nodes_of(by_pod(&slices, "a")), None, "{value}");
            assert_eq!(by_pod(&slices, "b").hints, None, "{value}: not ready");
            assert_eq!(by_pod(&slices, "c").hints, None, "{value}: no zone");
        }
        let same_node = run(&with(Some("PreferSameNode")), &[]);
        let slices = apply(&[], &same_node);
        assert_eq!(zones_of(by_pod(&slices, "a")), Some(vec!["z1".into()]));
        assert_eq!(nodes_of(by_pod(&slices, "a")), Some(vec!["n1".into()]));
        assert_eq!(nodes_of(by_pod(&slices, "c")), Some(vec!["unzoned".into()]));
        assert!(run(&with(Some("PreferSameNode")), &slices).is_empty());

        // Dropping trafficDistribution removes the hints.
        let plan = run(&with(None), &slices);
        assert_eq!(plan.update.len(), 1);
        assert!(endpoints_of(&plan.update).iter().all(|e| e.hints.is_none()));
    }
}
