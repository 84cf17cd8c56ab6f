//! discovery/v1 EndpointSlice (`pkg/apis/discovery/validation`).

use std::collections::HashSet;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointHints, EndpointPort, EndpointSlice};

use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, IpFamily, Path};

pub const MAX_ENDPOINTS: usize = 1000;
pub const MAX_ADDRESSES: usize = 100;
/// Upstream allows this many ports per slice (not 100).
pub const MAX_PORTS: usize = 20000;
pub const MAX_TOPOLOGY_LABELS: usize = 16;
/// KEP-2433 (topology aware hints) / KEP-4444 (traffic distribution): hints per endpoint.
pub const MAX_HINTS: usize = 8;
const ADDRESS_TYPES: [&str; 3] = ["FQDN", "IPv4", "IPv6"];

impl Admit for EndpointSlice {
    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let type_path = Path::new("addressType");
        match self.address_type.as_str() {
            "" => errs.push(FieldError::required(&type_path, "")),
            t => errs.extend(meta::validate_enum(&type_path, t, &ADDRESS_TYPES)),
        }
        errs.extend(validate_endpoints(
            self.endpoints.as_deref().unwrap_or(&[]),
            &self.address_type,
        ));
        errs.extend(validate_ports(self.ports.as_deref().unwrap_or(&[])));
        if let Some(old) = old {
            errs.extend(meta::validate_immutable(
                &type_path,
                &self.address_type,
                &old.address_type,
            ));
        }
        errs
    }
}

fn validate_endpoints(endpoints: &[Endpoint], address_type: &str) -> FieldErrors {
    let path = Path::new("endpoints");
    if endpoints.len() > MAX_ENDPOINTS {
        return vec![FieldError::too_many(&path, endpoints.len(), MAX_ENDPOINTS)];
    }
    let mut errs = FieldErrors::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let p = path.index(i);
        let addresses_path = p.child("addresses");
        if endpoint.addresses.is_empty() {
            errs.push(FieldError::required(
                &addresses_path,
                "must contain at least 1 address",
            ));
        } else if endpoint.addresses.len() > MAX_ADDRESSES {
            errs.push(FieldError::too_many(
                &addresses_path,
                endpoint.addresses.len(),
                MAX_ADDRESSES,
            ));
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let ap = addresses_path.index(j);
            let family = match address_type {
                "IPv4" => Some(IpFamily::V4),
                "IPv6" => Some(IpFamily::V6),
                _ => None,
            };
            match (family, address_type) {
                (Some(family), _) => {
                    let ip_errs = meta::validate_ip_of_family(&ap, address, family);
                    if ip_errs.is_empty() {
                        errs.extend(meta::validate_non_special_ip(&ap, address));
                    } else {
                        errs.extend(ip_errs);
                    }
                }
                (None, "FQDN") => errs.extend(meta::is_fully_qualified_domain_name(&ap, address)),
                // Unknown types are reported once, at addressType.
                _ => {}
            }
        }
        if let Some(node) = &endpoint.node_name {
            errs.extend(meta::each_invalid(
                &p.child("nodeName"),
                node,
                NameRule::Dns1123Subdomain.check(node, false),
            ));
        }
        if let Some(zone) = &endpoint.zone {
            // Zones come from the `topology.kubernetes.io/zone` label, so they are label values.
            errs.extend(meta::each_invalid(
                &p.child("zone"),
                zone,
                meta::is_label_value(zone),
            ));
        }
        if let Some(topology) = &endpoint.deprecated_topology {
            let tp = p.child("deprecatedTopology");
            if topology.len() > MAX_TOPOLOGY_LABELS {
                errs.push(FieldError::too_many(
                    &tp,
                    topology.len(),
                    MAX_TOPOLOGY_LABELS,
                ));
            }
            errs.extend(meta::validate_labels(&tp, topology));
        }
        if let Some(hostname) = &endpoint.hostname {
            errs.extend(meta::validate_dns1123_label(&p.child("hostname"), hostname));
        }
        if let Some(hints) = &endpoint.hints {
            errs.extend(validate_hints(hints, &p.child("hints")));
        }
    }
    errs
}

fn validate_hints(hints: &EndpointHints, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let zones = hints.for_zones.as_deref().unwrap_or(&[]);
    let zones_path = path.child("forZones");
    if zones.len() > MAX_HINTS {
        errs.push(FieldError::too_many(&zones_path, zones.len(), MAX_HINTS));
    } else {
        let mut seen = HashSet::new();
        for (i, zone) in zones.iter().enumerate() {
            let zp = zones_path.index(i).child("name");
            if !seen.insert(zone.name.as_str()) {
                errs.push(FieldError::duplicate(&zp, zone.name.as_str()));
            }
            errs.extend(meta::each_invalid(
                &zp,
                &zone.name,
                meta::is_label_value(&zone.name),
            ));
        }
    }
    let nodes = hints.for_nodes.as_deref().unwrap_or(&[]);
    let nodes_path = path.child("forNodes");
    if nodes.len() > MAX_HINTS {
        errs.push(FieldError::too_many(&nodes_path, nodes.len(), MAX_HINTS));
    } else {
        let mut seen = HashSet::new();
        for (i, node) in nodes.iter().enumerate() {
            let np = nodes_path.index(i).child("name");
            if !seen.insert(node.name.as_str()) {
                errs.push(FieldError::duplicate(&np, node.name.as_str()));
            }
            errs.extend(meta::each_invalid(
                &np,
                &node.name,
                NameRule::Dns1123Subdomain.check(&node.name, false),
            ));
        }
    }
    errs
}

fn validate_ports(ports: &[EndpointPort]) -> FieldErrors {
    let path = Path::new("ports");
    if ports.len() > MAX_PORTS {
        return vec![FieldError::too_many(&path, ports.len(), MAX_PORTS)];
    }
    let mut errs = FieldErrors::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = port.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            errs.extend(meta::validate_dns1123_label(&p.child("name"), name));
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        }
        errs.extend(meta::validate_protocol(
            &p.child("protocol"),
            port.protocol.as_deref(),
            true,
        ));
        if let Some(number) = port.port {
            let msgs = meta::is_in_range(i64::from(number), 0, 65535);
            errs.extend(
                msgs.into_iter()
                    .map(|m| FieldError::invalid(&p.child("port"), number, m)),
            );
        }
        if let Some(app_protocol) = &port.app_protocol {
            errs.extend(meta::validate_qualified_name(
                &p.child("appProtocol"),
                app_protocol,
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::{self, *};
    use serde_json::{Value, json};

    fn slice(address_type: &str, endpoints: Value, ports: Value) -> EndpointSlice {
        serde_json::from_value(
            json!({"metadata": {"name": "web-abc", "namespace": "default"},
            "addressType": address_type, "endpoints": endpoints, "ports": ports}),
        )
        .expect("slice")
    }

    fn errors_of(s: EndpointSlice, old: Option<&EndpointSlice>) -> Vec<(String, ErrorKind)> {
        s.validate(old, &Context::default())
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    #[test]
    fn valid_slice_passes() {
        let s = slice(
            "IPv4",
            json!([{"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "nodeName": "node-1", "zone": "zone-a",
                    "hostname": "web-0", "hints": {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-1"}]}}]),
            json!([{"name": "http", "port": 80, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}]),
        );
        assert!(errors_of(s, None).is_empty());
        assert!(
            errors_of(
                slice(
                    "FQDN",
                    json!([{"addresses": ["db.example.com"]}]),
                    json!([])
                ),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn address_types() {
        assert_eq!(
            errors_of(slice("", json!([]), json!([])), None),
            vec![("addressType".into(), Required)]
        );
        assert_eq!(
            errors_of(slice("IPv5", json!([]), json!([])), None),
            vec![("addressType".into(), NotSupported)]
        );
        let old = slice("IPv4", json!([]), json!([]));
        assert_eq!(
            errors_of(slice("IPv6", json!([]), json!([])), Some(&old)),
            vec![("addressType".into(), Invalid)]
        );
    }

    #[test]
    fn endpoints() {
        let errs = errors_of(
            slice(
                "IPv4",
                json!([
                    {"addresses": []},
                    {"addresses": ["fd00::1", "127.0.0.1"], "nodeName": "Node_1", "hostname": "a.b", "zone": "-z"}
                ]),
                json!([]),
            ),
            None,
        );
        assert_eq!(
            errs,
            vec![
                ("endpoints[0].addresses".into(), Required),
                ("endpoints[1].addresses[0]".into(), Invalid),
                ("endpoints[1].addresses[1]".into(), Invalid),
                ("endpoints[1].nodeName".into(), Invalid),
                ("endpoints[1].zone".into(), Invalid),
                ("endpoints[1].hostname".into(), Invalid),
            ]
        );
        let many: Vec<Value> = (0..1001)
            .map(|i| json!({"addresses": [format!("10.0.{}.{}", i / 250, i % 250 + 1)]}))
            .collect();
        assert_eq!(
            errors_of(slice("IPv4", json!(many), json!([])), None),
            vec![("endpoints".into(), TooMany)]
        );
        let addrs: Vec<String> = (1..=101).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(
            errors_of(
                slice("IPv4", json!([{"addresses": addrs}]), json!([])),
                None
            ),
            vec![("endpoints[0].addresses".into(), TooMany)]
        );
        let zones: Vec<Value> = (0..9).map(|i| json!({"name": format!("z{i}")})).collect();
        assert_eq!(
            errors_of(
                slice(
                    "IPv4",
                    json!([{"addresses": ["10.0.0.1"], "hints": {"forZones": zones}}]),
                    json!([])
                ),
                None
            ),
            vec![("endpoints[0].hints.forZones".into(), TooMany)]
        );
        assert_eq!(
            errors_of(
                slice(
                    "IPv4",
                    json!([{"addresses": ["10.0.0.1"], "hints": {"forZones": [{"name": "a"}, {"name": "a"}]}}]),
                    json!([])
                ),
                None
            ),
            vec![("endpoints[0].hints.forZones[1].name".into(), Duplicate)]
        );
        assert_eq!(
            errors_of(
                slice("FQDN", json!([{"addresses": ["localhost"]}]), json!([])),
                None
            ),
            vec![("endpoints[0].addresses[0]".into(), Invalid)]
        );
    }

    #[test]
    fn ports() {
        let errs = errors_of(
            slice(
                "IPv4",
                json!([]),
                json!([
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"name": "http", "port": 70000, "protocol": "ICMP"},
                    {"name": "HTTPS"},
                    {"port": 0, "protocol": "UDP"}
                ]),
            ),
            None,
        );
        assert_eq!(
            errs,
            vec![
                ("ports[1].name".into(), Duplicate),
                ("ports[1].protocol".into(), NotSupported),
                ("ports[1].port".into(), Invalid),
                ("ports[2].name".into(), Invalid),
                ("ports[2].protocol".into(), Required),
            ]
        );
    }
}
