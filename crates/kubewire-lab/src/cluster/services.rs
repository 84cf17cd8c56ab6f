//! The Services table of `kubewire lab status`, like `kubectl get services -o wide` with the
//! number of ready endpoints added: a pure function of the Services and EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubewire_api::labels;

/// The header and one row per Service.
pub fn rows(services: &[Service], slices: &[EndpointSlice]) -> Vec<Vec<String>> {
    // Ready endpoints per (namespace, service) and address type; a Service has as many as its
    // best-served family (a dual-stack endpoint is one, not two).
    let mut ready: BTreeMap<(String, String), BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for slice in slices {
        let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.clone(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SERVICE_NAME))
                .cloned(),
        ) else {
            continue;
        };
        let entry = ready
            .entry((ns, svc))
            .or_default()
            .entry(slice.address_type.clone())
            .or_default();
        for ep in slice.endpoints.iter().flatten() {
            let is_ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let (true, Some(id)) = (is_ready, ep.addresses.first().cloned()) {
                entry.insert(id);
            }
        }
    }
    let mut out = vec![
        [
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "ENDPOINTS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let spec = svc.spec.clone().unwrap_or_default();
        let or_none = |v: Vec<String>| {
            if v.is_empty() {
                "<none>".to_string()
            } else {
                v.join(",")
            }
        };
        let mut external: Vec<String> = spec.external_ips.clone().unwrap_or_default();
        external.extend(
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip.or(i.hostname)),
        );
        let external = if external.is_empty() && spec.type_.as_deref() == Some("LoadBalancer") {
            "<pending>".to_string()
        } else {
            or_none(external)
        };
        let ports: Vec<String> = spec
            .ports
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                match p.node_port {
                    Some(np) => format!("{}:{np}/{proto}", p.port),
                    None => format!("{}/{proto}", p.port),
                }
            })
            .collect();
        let endpoints = if spec.type_.as_deref() == Some("ExternalName") {
            "-".to_string()
        } else {
            ready
                .get(&(ns.clone(), name.clone()))
                .and_then(|families| families.values().map(BTreeSet::len).max())
                .unwrap_or(0)
                .to_string()
        };
        out.push(vec![
            ns,
            name,
            spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
            or_none(spec.cluster_ips.clone().unwrap_or_default()),
            external,
            or_none(ports),
            endpoints,
        ]);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_per_service_with_its_ready_endpoints() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "demo"},
             "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.5", "fd00:10:96::5"],
                      "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP", "nodePort": 30053}]}},
            {"metadata": {"name": "db", "namespace": "demo"},
             "spec": {"clusterIPs": ["None"], "ports": [{"port": 5432}]}},
        ]))
        .unwrap();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "web-a", "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
             "addressType": "IPv4",
             "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "uid": "u1"}},
                {"addresses": ["10.244.1.6"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "uid": "u2"}}]},
            {"metadata": {"name": "web-b", "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
             "addressType": "IPv6",
             "endpoints": [{"addresses": ["fd00:10:244:1::5"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "uid": "u1"}}]},
        ]))
        .unwrap();
        let rows = rows(&services, &slices);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1],
            [
                "demo",
                "web",
                "LoadBalancer",
                "10.96.0.5,fd00:10:96::5",
                "<pending>",
                "80:30080/TCP,53:30053/UDP",
                "1"
            ]
        );
        assert_eq!(
            rows[2],
            ["demo", "db", "ClusterIP", "None", "<none>", "5432/TCP", "0"]
        );
        // One server behind both families' slices is one endpoint.
        let dns: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "v4", "namespace": "demo", "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4", "endpoints": [{"addresses": ["198.18.0.1"]}]},
            {"metadata": {"name": "v6", "namespace": "demo", "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv6", "endpoints": [{"addresses": ["fd6b::1"]}]},
        ]))
        .unwrap();
        assert_eq!(super::rows(&services, &dns)[2][6], "1");
    }
}
