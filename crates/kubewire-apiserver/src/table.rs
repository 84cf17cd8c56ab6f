//! Server-side printing: `meta.k8s.io/v1 Table` responses, which `kubectl get` asks for and
//! prints as they are (columns with priority > 0 appear with `-o wide`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::registry::ResourceId;
use crate::status::ApiError;
use crate::store::Object;

pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
    })
}

struct Column {
    name: &'static str,
    kind: &'static str,
    priority: u8,
    cell: fn(&Value) -> Value,
}

const fn col(name: &'static str, priority: u8, cell: fn(&Value) -> Value) -> Column {
    Column {
        name,
        kind: "string",
        priority,
        cell,
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(text: String) -> Value {
    json!(if text.is_empty() {
        "<none>".to_string()
    } else {
        text
    })
}

/// "5m", "3h", "2d" since an RFC 3339 timestamp, as kubectl prints ages.
fn age(v: &Value) -> Value {
    let Some(ts) = v["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return json!("<unknown>");
    };
    let secs = (jiff::Timestamp::now() - ts).get_seconds().max(0);
    json!(match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    })
}

fn name(v: &Value) -> Value {
    v["metadata"]["name"].clone()
}

fn selector_text(sel: &Value) -> String {
    sel.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn pod_ready(v: &Value) -> Value {
    let total = v["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = v["status"]["containerStatuses"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["ready"] == true).count());
    json!(format!("{ready}/{total}"))
}

fn pod_status(v: &Value) -> Value {
    if v["metadata"]["deletionTimestamp"].is_string() {
        return json!("Terminating");
    }
    let waiting = v["status"]["containerStatuses"].as_array().and_then(|cs| {
        cs.iter()
            .find_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string))
    });
    json!(waiting.unwrap_or_else(|| s(&v["status"]["phase"])))
}

fn pod_restarts(v: &Value) -> Value {
    json!(v["status"]["containerStatuses"].as_array().map_or(0, |c| {
        c.iter()
            .filter_map(|c| c["restartCount"].as_i64())
            .sum::<i64>()
    }))
}

fn service_ports(v: &Value) -> Value {
    let ports = v["spec"]["ports"].as_array().map(|ps| {
        ps.iter()
            .map(|p| match p["nodePort"].as_u64() {
                Some(np) => format!("{}:{np}/{}", s(&p["port"]), s(&p["protocol"])),
                None => format!("{}/{}", s(&p["port"]), s(&p["protocol"])),
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    or_none(ports.unwrap_or_default())
}

fn external_ip(v: &Value) -> Value {
    let mut ips: Vec<String> = v["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            s(if i["ip"].is_null() {
                &i["hostname"]
            } else {
                &i["ip"]
            })
        })
        .collect();
    ips.extend(
        v["spec"]["externalIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s),
    );
    if v["spec"]["type"] == "ExternalName" {
        return v["spec"]["externalName"].clone();
    }
    if ips.is_empty() && v["spec"]["type"] == "LoadBalancer" {
        return json!("<pending>");
    }
    or_none(ips.join(","))
}

fn node_status(v: &Value) -> Value {
    let ready = v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    let mut text = match ready {
        Some(true) => "Ready".to_string(),
        _ => "NotReady".to_string(),
    };
    if v["spec"]["unschedulable"] == true {
        text.push_str(",SchedulingDisabled");
    }
    json!(text)
}

/// Roles as kubectl shows them: the `node-role.kubernetes.io/<role>` labels, and the older
/// `kubernetes.io/role` label's value.
fn node_roles(v: &Value) -> Value {
    let labels = v["metadata"]["labels"].as_object();
    let mut roles: Vec<String> = labels
        .into_iter()
        .flatten()
        .filter_map(
            |(k, val)| match k.strip_prefix("node-role.kubernetes.io/") {
                Some(role) if !role.is_empty() => Some(role.to_string()),
                _ if k == "kubernetes.io/role" => val.as_str().map(str::to_string),
                _ => None,
            },
        )
        .collect();
    roles.sort();
    roles.dedup();
    or_none(roles.join(","))
}

fn node_address(v: &Value, kind: &str) -> Value {
    or_none(
        v["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["type"] == kind))
            .map(|a| s(&a["address"]))
            .unwrap_or_default(),
    )
}

fn columns(r: ResourceId) -> Vec<Column> {
    let info = r.info();
    let mut cols = vec![col("Name", 0, name)];
    match (info.group, info.kind) {
        ("", "Pod") => cols.extend([
            col("Ready", 0, pod_ready),
            col("Status", 0, pod_status),
            col("Restarts", 0, pod_restarts),
            col("Age", 0, age),
            col("IP", 1, |v| or_none(s(&v["status"]["podIP"]))),
            col("Node", 1, |v| or_none(s(&v["spec"]["nodeName"]))),
        ]),
        ("", "Service") => cols.extend([
            col("Type", 0, |v| v["spec"]["type"].clone()),
            col("Cluster-IP", 0, |v| or_none(s(&v["spec"]["clusterIP"]))),
            col("External-IP", 0, external_ip),
            col("Port(s)", 0, service_ports),
            col("Age", 0, age),
            col("Selector", 1, |v| {
                or_none(selector_text(&v["spec"]["selector"]))
            }),
        ]),
        ("", "Node") => cols.extend([
            col("Status", 0, node_status),
            col("Roles", 0, node_roles),
            col("Age", 0, age),
            col("Version", 0, |v| {
                v["status"]["nodeInfo"]["kubeletVersion"].clone()
            }),
            col("Internal-IP", 1, |v| node_address(v, "InternalIP")),
            col("Pod-CIDRs", 1, |v| {
                or_none(
                    v["spec"]["podCIDRs"]
                        .as_array()
                        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                )
            }),
        ]),
        ("", "Namespace") => cols.extend([
            col("Status", 0, |v| v["status"]["phase"].clone()),
            col("Age", 0, age),
        ]),
        ("", "Endpoints") => cols.extend([
            col("Endpoints", 0, |v| {
                let eps: Vec<String> = v["subsets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|ss| {
                        let ports: Vec<String> = ss["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| s(&p["port"]))
                            .collect();
                        ss["addresses"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(move |a| {
                                let ip = s(&a["ip"]);
                                if ports.is_empty() {
                                    vec![ip]
                                } else {
                                    ports.iter().map(|p| format!("{ip}:{p}")).collect()
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                or_none(eps.join(","))
            }),
            col("Age", 0, age),
        ]),
        ("apps", "Deployment") => cols.extend([
            col("Ready", 0, |v| {
                json!(format!(
                    "{}/{}",
                    v["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    v["spec"]["replicas"].as_i64().unwrap_or(0)
                ))
            }),
            col("Up-to-date", 0, |v| {
                json!(v["status"]["updatedReplicas"].as_i64().unwrap_or(0))
            }),
            col("Available", 0, |v| {
                json!(v["status"]["availableReplicas"].as_i64().unwrap_or(0))
            }),
            col("Age", 0, age),
        ]),
        ("apps", "ReplicaSet") => cols.extend([
            col("Desired", 0, |v| {
                json!(v["spec"]["replicas"].as_i64().unwrap_or(0))
            }),
            col("Current", 0, |v| {
                json!(v["status"]["replicas"].as_i64().unwrap_or(0))
            }),
            col("Ready", 0, |v| {
                json!(v["status"]["readyReplicas"].as_i64().unwrap_or(0))
            }),
            col("Age", 0, age),
        ]),
        ("apps", "StatefulSet") => cols.extend([
            col("Ready", 0, |v| {
                json!(format!(
                    "{}/{}",
                    v["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    v["spec"]["replicas"].as_i64().unwrap_or(0)
                ))
            }),
            col("Age", 0, age),
        ]),
        ("apps", "DaemonSet") => cols.extend([
            col("Desired", 0, |v| {
                json!(v["status"]["desiredNumberScheduled"].as_i64().unwrap_or(0))
            }),
            col("Current", 0, |v| {
                json!(v["status"]["currentNumberScheduled"].as_i64().unwrap_or(0))
            }),
            col("Ready", 0, |v| {
                json!(v["status"]["numberReady"].as_i64().unwrap_or(0))
            }),
            col("Age", 0, age),
        ]),
        ("discovery.k8s.io", "EndpointSlice") => cols.extend([
            col("AddressType", 0, |v| v["addressType"].clone()),
            col("Ports", 0, |v| {
                or_none(
                    v["ports"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .map(|p| s(&p["port"]))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                )
            }),
            col("Endpoints", 0, |v| {
                or_none(
                    v["endpoints"]
                        .as_array()
                        .map(|e| {
                            e.iter()
                                .flat_map(|e| {
                                    e["addresses"].as_array().cloned().unwrap_or_default()
                                })
                                .map(|a| s(&a))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                )
            }),
            col("Age", 0, age),
        ]),
        ("networking.k8s.io", "NetworkPolicy") => cols.extend([
            col("Pod-Selector", 0, |v| {
                or_none(selector_text(&v["spec"]["podSelector"]["matchLabels"]))
            }),
            col("Age", 0, age),
        ]),
        ("networking.k8s.io", "Ingress") => cols.extend([
            col("Class", 0, |v| or_none(s(&v["spec"]["ingressClassName"]))),
            col("Hosts", 0, |v| {
                json!(
                    v["spec"]["rules"]
                        .as_array()
                        .map(|r| r
                            .iter()
                            .map(|r| if r["host"].is_null() {
                                "*".to_string()
                            } else {
                                s(&r["host"])
                            })
                            .collect::<Vec<_>>()
                            .join(","))
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| "*".into())
                )
            }),
            col("Address", 0, |v| {
                json!(
                    v["status"]["loadBalancer"]["ingress"]
                        .as_array()
                        .map(|i| i.iter().map(|i| s(&i["ip"])).collect::<Vec<_>>().join(","))
                        .unwrap_or_default()
                )
            }),
            col("Ports", 0, |v| {
                json!(
                    if v["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                        "80, 443"
                    } else {
                        "80"
                    }
                )
            }),
            col("Age", 0, age),
        ]),
        ("gateway.networking.k8s.io", "Gateway") => cols.extend([
            col("Class", 0, |v| v["spec"]["gatewayClassName"].clone()),
            col("Address", 0, |v| {
                json!(
                    v["status"]["addresses"]
                        .as_array()
                        .and_then(|a| a.first())
                        .map(|a| s(&a["value"]))
                        .unwrap_or_default()
                )
            }),
            col("Programmed", 0, |v| {
                json!(
                    v["status"]["conditions"]
                        .as_array()
                        .and_then(|c| c.iter().find(|c| c["type"] == "Programmed"))
                        .map(|c| s(&c["status"]))
                        .unwrap_or_else(|| "Unknown".into())
                )
            }),
            col("Age", 0, age),
        ]),
        ("gateway.networking.k8s.io", "HTTPRoute" | "GRPCRoute") => cols.extend([
            col("Hostnames", 0, |v| {
                json!(
                    v["spec"]["hostnames"]
                        .as_array()
                        .map(|h| h.iter().map(s).collect::<Vec<_>>().join(","))
                        .unwrap_or_default()
                )
            }),
            col("Age", 0, age),
        ]),
        ("policy.networking.k8s.io", "AdminNetworkPolicy") => cols.extend([
            col("Priority", 0, |v| v["spec"]["priority"].clone()),
            col("Age", 0, age),
        ]),
        _ => cols.push(col("Age", 0, age)),
    }
    cols
}

pub fn render(
    r: ResourceId,
    items: &[Arc<Object>],
    rv: u64,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let cols = columns(r);
    let include = query
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let definitions: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": c.kind, "format": if c.name == "Name" { "name" } else { "" }, "description": "", "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let v = o.value();
            let cells: Vec<Value> = cols.iter().map(|c| (c.cell)(&v)).collect();
            let object = match include {
                "None" => Value::Null,
                "Object" => v.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    Ok(json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_roles_come_from_labels() {
        let node = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker", "zone": "a"}}});
        assert_eq!(node_roles(&node), json!("control-plane,worker"));
        assert_eq!(node_roles(&json!({"metadata": {}})), json!("<none>"));
    }
}
