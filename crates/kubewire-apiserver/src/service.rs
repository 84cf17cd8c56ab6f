//! ClusterIP and NodePort assignment for Services on create, update and delete.
//!
//! Runs after defaulting and validation (whose update defaulting carries a Service's values over
//! a PUT that omits them). Requested values are reserved as given (or refused with the field at
//! fault); missing ones are allocated; values a Service keeps across an update stay reserved. Reservations of a failed write are rolled back, and values an update or
//! delete gives up are released only once the write is durable.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::alloc::{IpAllocator, PortAllocator};
use crate::api::Api;
use crate::registry::ResourceId;
use crate::status::ApiError;
use kubewire_validation::{ErrorKind, FieldError};

pub struct ServiceAllocators {
    /// One allocator per configured service CIDR, primary family first.
    pub ips: Vec<IpAllocator>,
    pub node_ports: PortAllocator,
}

impl ServiceAllocators {
    pub fn new(cidrs: &[IpNet], node_ports: (u16, u16)) -> Self {
        Self {
            ips: cidrs.iter().map(|c| IpAllocator::new(*c)).collect(),
            node_ports: PortAllocator::new(node_ports.0, node_ports.1),
        }
    }

    fn for_family(&mut self, family: &str) -> Option<&mut IpAllocator> {
        self.ips.iter_mut().find(|a| family_of(&a.cidr()) == family)
    }

    fn for_ip(&mut self, ip: IpAddr) -> Option<&mut IpAllocator> {
        self.ips.iter_mut().find(|a| a.cidr().contains(&ip))
    }

    /// Marks what a stored Service holds, when rebuilding after a restart.
    pub fn restore(&mut self, svc: &Value) {
        for ip in held_ips(svc) {
            if let Some(a) = self.for_ip(ip) {
                let _ = a.allocate(ip);
            }
        }
        for port in held_ports(svc) {
            let _ = self.node_ports.allocate(port);
        }
    }
}

fn family_of(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

fn is_service(r: ResourceId) -> bool {
    let i = r.info();
    i.group.is_empty() && i.plural == "services"
}

fn held_ips(svc: &Value) -> BTreeSet<IpAddr> {
    if svc["spec"]["type"] == "ExternalName" {
        return BTreeSet::new();
    }
    svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect()
}

fn held_ports(svc: &Value) -> BTreeSet<u16> {
    let spec = &svc["spec"];
    let mut out: BTreeSet<u16> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| u16::try_from(p["nodePort"].as_u64()?).ok())
        .filter(|p| *p != 0)
        .collect();
    if let Some(hc) = spec["healthCheckNodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        && hc != 0
    {
        out.insert(hc);
    }
    out
}

/// What one write reserved (to undo if it fails) and what it gives up (to free once durable).
#[derive(Default)]
pub struct Allocation {
    reserved_ips: Vec<IpAddr>,
    reserved_ports: Vec<u16>,
    released_ips: Vec<IpAddr>,
    released_ports: Vec<u16>,
}

impl Allocation {
    pub fn rollback(self, api: &Api) {
        let mut a = api.allocators.lock().unwrap_or_else(|p| p.into_inner());
        for ip in self.reserved_ips {
            if let Some(al) = a.for_ip(ip) {
                al.release(ip);
            }
        }
        for p in self.reserved_ports {
            a.node_ports.release(p);
        }
    }

    pub fn commit(self, api: &Api) {
        let mut a = api.allocators.lock().unwrap_or_else(|p| p.into_inner());
        for ip in self.released_ips {
            if let Some(al) = a.for_ip(ip) {
                al.release(ip);
            }
        }
        for p in self.released_ports {
            a.node_ports.release(p);
        }
    }
}

/// Frees everything a deleted Service held.
pub fn release_all(api: &Api, r: ResourceId, svc: &Value) {
    if !is_service(r) {
        return;
    }
    Allocation {
        released_ips: held_ips(svc).into_iter().collect(),
        released_ports: held_ports(svc).into_iter().collect(),
        ..Default::default()
    }
    .commit(api);
}

fn field_error(field: String, value: Value, detail: String) -> FieldError {
    FieldError {
        field,
        kind: ErrorKind::Invalid,
        bad_value: Some(value),
        detail,
    }
}

/// Fills in and reserves the ClusterIPs and NodePorts of a Service being written.
pub fn allocate(
    api: &Api,
    r: ResourceId,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<Allocation, ApiError> {
    if !is_service(r) {
        return Ok(Allocation::default());
    }
    let name = svc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut alloc = Allocation::default();
    let mut errors = Vec::new();
    {
        let mut a = api.allocators.lock().unwrap_or_else(|p| p.into_inner());
        let old_ips = old.map(held_ips).unwrap_or_default();
        let old_ports = old.map(held_ports).unwrap_or_default();
        assign_cluster_ips(&mut a, svc, &old_ips, &mut alloc, &mut errors);
        assign_node_ports(&mut a, svc, &old_ports, &mut alloc, &mut errors);
        alloc.released_ips = old_ips.difference(&held_ips(svc)).copied().collect();
        alloc.released_ports = old_ports.difference(&held_ports(svc)).copied().collect();
    }
    if errors.is_empty() {
        Ok(alloc)
    } else {
        alloc.rollback(api);
        Err(ApiError::invalid(r.info(), &name, &errors))
    }
}

fn assign_cluster_ips(
    a: &mut ServiceAllocators,
    svc: &mut Value,
    old_ips: &BTreeSet<IpAddr>,
    alloc: &mut Allocation,
    errors: &mut Vec<FieldError>,
) {
    let spec = &mut svc["spec"];
    if spec["type"] == "ExternalName" {
        if let Some(m) = spec.as_object_mut() {
            m.remove("clusterIP");
            m.remove("clusterIPs");
        }
        return;
    }
    if spec["clusterIP"] == "None" || spec["clusterIPs"][0] == "None" {
        spec["clusterIP"] = json!("None");
        spec["clusterIPs"] = json!(["None"]);
        return;
    }
    let families: Vec<String> = spec["ipFamilies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    let mut requested: Vec<String> = spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if requested.is_empty()
        && let Some(ip) = spec["clusterIP"].as_str().filter(|s| !s.is_empty())
    {
        requested.push(ip.to_string());
    }
    let mut assigned = Vec::new();
    for (i, family) in families.iter().enumerate() {
        let field = format!("spec.clusterIPs[{i}]");
        let Some(allocator) = a.for_family(family) else {
            errors.push(field_error(
                "spec.ipFamilies".into(),
                json!(family),
                format!("{family} is not configured on this cluster"),
            ));
            continue;
        };
        match requested.get(i).filter(|s| !s.is_empty()) {
            Some(text) => {
                let Ok(ip) = text.parse::<IpAddr>() else {
                    errors.push(field_error(
                        field,
                        json!(text),
                        "must be a valid IP address".into(),
                    ));
                    continue;
                };
                if !old_ips.contains(&ip) {
                    match allocator.allocate(ip) {
                        Ok(()) => alloc.reserved_ips.push(ip),
                        Err(e) => {
                            errors.push(field_error(
                                field,
                                json!(text),
                                format!("failed to allocate IP {ip}: {e}"),
                            ));
                            continue;
                        }
                    }
                }
                assigned.push(ip.to_string());
            }
            None => match allocator.allocate_next(&mut rand::rng()) {
                Ok(ip) => {
                    alloc.reserved_ips.push(ip);
                    assigned.push(ip.to_string());
                }
                Err(e) => errors.push(field_error(
                    field,
                    Value::Null,
                    format!("failed to allocate a serviceIP: {e}"),
                )),
            },
        }
    }
    if let Some(first) = assigned.first() {
        spec["clusterIP"] = json!(first);
        spec["clusterIPs"] = json!(assigned);
    }
}

fn wants_node_ports(spec: &Value) -> bool {
    match spec["type"].as_str() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec["allocateLoadBalancerNodePorts"] != false,
        _ => false,
    }
}

fn assign_node_ports(
    a: &mut ServiceAllocators,
    svc: &mut Value,
    old_ports: &BTreeSet<u16>,
    alloc: &mut Allocation,
    errors: &mut Vec<FieldError>,
) {
    let spec = &mut svc["spec"];
    let service_type = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    let need = wants_node_ports(spec);
    let reserve = |a: &mut ServiceAllocators,
                   port: u16,
                   field: String,
                   alloc: &mut Allocation,
                   errors: &mut Vec<FieldError>| {
        if old_ports.contains(&port) || alloc.reserved_ports.contains(&port) {
            return true;
        }
        match a.node_ports.allocate(port) {
            Ok(()) => {
                alloc.reserved_ports.push(port);
                true
            }
            Err(e) => {
                errors.push(field_error(field, json!(port), e.to_string()));
                false
            }
        }
    };
    let count = spec["ports"].as_array().map_or(0, Vec::len);
    for i in 0..count {
        let port = &mut spec["ports"][i];
        let field = format!("spec.ports[{i}].nodePort");
        let given = port["nodePort"].as_u64().filter(|p| *p != 0);
        // A LoadBalancer without allocated node ports keeps the ones its user asked for.
        let keep = need || (service_type == "LoadBalancer" && given.is_some());
        if !keep {
            if let Some(m) = port.as_object_mut() {
                m.remove("nodePort");
            }
            continue;
        }
        match given {
            Some(p) => match u16::try_from(p) {
                Ok(p) => {
                    reserve(a, p, field, alloc, errors);
                    port["nodePort"] = json!(p);
                }
                Err(_) => errors.push(field_error(
                    field,
                    json!(p),
                    "must be between 1 and 65535, inclusive".into(),
                )),
            },
            None => match a.node_ports.allocate_next(&mut rand::rng()) {
                Ok(p) => {
                    alloc.reserved_ports.push(p);
                    port["nodePort"] = json!(p);
                }
                Err(e) => errors.push(field_error(field, Value::Null, e.to_string())),
            },
        }
    }
    let needs_health_check =
        service_type == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local";
    if needs_health_check {
        let given = spec["healthCheckNodePort"].as_u64().filter(|p| *p != 0);
        match given.map(u16::try_from) {
            Some(Ok(p)) => {
                reserve(a, p, "spec.healthCheckNodePort".into(), alloc, errors);
                spec["healthCheckNodePort"] = json!(p);
            }
            Some(Err(_)) => errors.push(field_error(
                "spec.healthCheckNodePort".into(),
                spec["healthCheckNodePort"].clone(),
                "must be between 1 and 65535, inclusive".into(),
            )),
            None => match a.node_ports.allocate_next(&mut rand::rng()) {
                Ok(p) => {
                    alloc.reserved_ports.push(p);
                    spec["healthCheckNodePort"] = json!(p);
                }
                Err(e) => errors.push(field_error(
                    "spec.healthCheckNodePort".into(),
                    Value::Null,
                    e.to_string(),
                )),
            },
        }
    } else if let Some(m) = spec.as_object_mut() {
        m.remove("healthCheckNodePort");
    }
}
