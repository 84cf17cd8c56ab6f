//! A container's environment as the kubelet builds it (`kubelet_pods.go` `makeEnvironmentVariables`):
//! the service environment variables (`pkg/kubelet/envvars`), then `envFrom`, then `env` (with
//! `$(VAR)` references expanded against what came before), and `HOSTNAME`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret, Service};

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{kind} {name:?} not found")]
    MissingObject { kind: &'static str, name: String },
    #[error("key {key:?} not found in {kind} {name:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("unsupported fieldRef {0:?}")]
    FieldPath(String),
    #[error("env {0:?}: no value source")]
    NoSource(String),
}

/// The ConfigMaps and Secrets of the pod's namespace that its containers refer to.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    pub config_maps: HashMap<String, ConfigMap>,
    pub secrets: HashMap<String, Secret>,
}

impl Sources {
    /// Names of the ConfigMaps and Secrets `container` refers to.
    pub fn wanted(container: &Container) -> (Vec<String>, Vec<String>) {
        let mut cms = Vec::new();
        let mut secrets = Vec::new();
        for from in container.env_from.iter().flatten() {
            cms.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for var in container.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            cms.extend(from.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(from.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
        (cms, secrets)
    }

    fn config_map(&self, name: &str, key: &str) -> Result<Option<String>, EnvError> {
        let cm = self
            .config_maps
            .get(name)
            .ok_or_else(|| EnvError::MissingObject {
                kind: "configmap",
                name: name.into(),
            })?;
        Ok(cm.data.as_ref().and_then(|d| d.get(key)).cloned())
    }

    fn secret(&self, name: &str, key: &str) -> Result<Option<String>, EnvError> {
        let s = self
            .secrets
            .get(name)
            .ok_or_else(|| EnvError::MissingObject {
                kind: "secret",
                name: name.into(),
            })?;
        Ok(s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key)).cloned()))
    }
}

/// What the runtime knows that the pod object may not yet say.
#[derive(Debug, Clone)]
pub(crate) struct PodFacts<'a> {
    pub node_name: &'a str,
    pub pod_ips: &'a [IpAddr],
    pub host_ips: &'a [IpAddr],
    pub hostname: &'a str,
}

/// `my-svc` → `MY_SVC`.
fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn has_cluster_ip(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

fn host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The variables of one Service (`envvars.FromServices`), docker-link forms included.
fn service_vars(svc: &Service, out: &mut Vec<(String, String)>) {
    let Some(spec) = &svc.spec else { return };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let prefix = env_name(svc.metadata.name.as_deref().unwrap_or_default());
    let ports = spec.ports.as_deref().unwrap_or_default();
    out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
    if let Some(first) = ports.first() {
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
    }
    for p in ports {
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(name)),
                p.port.to_string(),
            ));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{}", host_port(&ip, p.port));
        if i == 0 {
            // Docker special-cases the first port.
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.clone()));
    }
}

/// The service environment of a pod: every Service with a cluster IP in its namespace (unless
/// `enableServiceLinks: false`), plus the `kubernetes` Service of `default` always.
/// `services` holds both namespaces' Services.
pub(crate) fn service_env(pod: &Pod, services: &[Service]) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services.iter().filter(|s| has_cluster_ip(s)) {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let svc_ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let master = svc_ns == "default" && name == "kubernetes";
        if master || (links && svc_ns == ns) {
            chosen.insert(name, svc);
        }
    }
    let mut out = Vec::new();
    for svc in chosen.values() {
        service_vars(svc, &mut out);
    }
    out
}

/// `$(VAR)` references expanded from `vars` (`pkg/kubelet/container` `expansion`): `$$` is a
/// literal `$`; an unknown reference stays as written.
pub(crate) fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_ref(pod: &Pod, facts: &PodFacts<'_>, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let ips = |ips: &[IpAddr]| ips.first().map(IpAddr::to_string).unwrap_or_default();
    let list = |ips: &[IpAddr]| {
        ips.iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let label_or_annotation = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key.trim_end_matches("']").trim_start_matches("['")))
            .cloned()
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => facts.node_name.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => ips(facts.pod_ips),
        "status.podIPs" => list(facts.pod_ips),
        "status.hostIP" => ips(facts.host_ips),
        "status.hostIPs" => list(facts.host_ips),
        p if p.starts_with("metadata.labels[") => {
            label_or_annotation(&meta.labels, &p["metadata.labels".len()..])
        }
        p if p.starts_with("metadata.annotations[") => {
            label_or_annotation(&meta.annotations, &p["metadata.annotations".len()..])
        }
        other => return Err(EnvError::FieldPath(other.into())),
    })
}

/// The full environment of `container`, in the order the kubelet gives it (later wins).
pub(crate) fn container_env(
    pod: &Pod,
    container: &Container,
    services: &[Service],
    sources: &Sources,
    facts: &PodFacts<'_>,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut vars: Vec<(String, String)> = service_env(pod, services);
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(cm) => cm.data.clone().unwrap_or_default().into_iter().collect(),
                None if r.optional == Some(true) => Vec::new(),
                None => {
                    return Err(EnvError::MissingObject {
                        kind: "configmap",
                        name: r.name.clone(),
                    });
                }
            }
        } else if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(s) => s
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                None if r.optional == Some(true) => Vec::new(),
                None => {
                    return Err(EnvError::MissingObject {
                        kind: "secret",
                        name: r.name.clone(),
                    });
                }
            }
        } else {
            Vec::new()
        };
        vars.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, var, sources, facts, &vars)? {
            vars.push((var.name.clone(), value));
        }
    }
    vars.push(("HOSTNAME".into(), facts.hostname.to_string()));
    // Later definitions win, at the position of the first.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in vars {
        match seen.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                seen.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    Ok(out)
}

/// One `env` entry's value; `None` for an optional reference that does not resolve.
fn env_value(
    pod: &Pod,
    var: &EnvVar,
    sources: &Sources,
    facts: &PodFacts<'_>,
    before: &[(String, String)],
) -> Result<Option<String>, EnvError> {
    let Some(from) = &var.value_from else {
        let known: HashMap<String, String> = before.iter().cloned().collect();
        return Ok(Some(expand(
            var.value.as_deref().unwrap_or_default(),
            &known,
        )));
    };
    let keyed = |kind: &'static str,
                 name: &str,
                 key: &str,
                 optional: Option<bool>,
                 got: Result<Option<String>, EnvError>| {
        match got {
            Ok(Some(v)) => Ok(Some(v)),
            _ if optional == Some(true) => Ok(None),
            Ok(None) => Err(EnvError::MissingKey {
                kind,
                name: name.into(),
                key: key.into(),
            }),
            Err(e) => Err(e),
        }
    };
    if let Some(f) = &from.field_ref {
        return field_ref(pod, facts, &f.field_path).map(Some);
    }
    if let Some(r) = &from.config_map_key_ref {
        let got = sources.config_map(&r.name, &r.key);
        return keyed("configmap", &r.name, &r.key, r.optional, got);
    }
    if let Some(r) = &from.secret_key_ref {
        let got = sources.secret(&r.name, &r.key);
        return keyed("secret", &r.name, &r.key, r.optional, got);
    }
    if from.resource_field_ref.is_some() {
        // No resource limits in the lab: the node's allocatable, which the kubelet reports
        // for an unset limit, is not known here; leave the variable out.
        return Ok(None);
    }
    Err(EnvError::NoSource(var.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports},
        }))
        .unwrap()
    }

    fn pod(extra: serde_json::Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"containers": [{"name": "app"}]},
        });
        if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(p).unwrap()
    }

    fn services() -> Vec<Service> {
        vec![
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            svc(
                "shop",
                "my-db",
                "10.96.0.20",
                json!([{"name": "sql", "port": 5432, "protocol": "TCP"}, {"name": "metrics-udp", "port": 9000, "protocol": "UDP"}]),
            ),
            svc("shop", "headless", "None", json!([{"port": 80}])),
            svc("other", "elsewhere", "10.96.0.30", json!([{"port": 80}])),
        ]
    }

    fn get<'a>(vars: &'a [(String, String)], k: &str) -> Option<&'a str> {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn service_links_as_upstream_names_them() {
        let vars = service_env(&pod(json!({})), &services());
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get(&vars, "KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get(&vars, "MY_DB_SERVICE_HOST"), Some("10.96.0.20"));
        assert_eq!(get(&vars, "MY_DB_SERVICE_PORT"), Some("5432"));
        assert_eq!(get(&vars, "MY_DB_SERVICE_PORT_SQL"), Some("5432"));
        assert_eq!(get(&vars, "MY_DB_SERVICE_PORT_METRICS_UDP"), Some("9000"));
        assert_eq!(get(&vars, "MY_DB_PORT"), Some("tcp://10.96.0.20:5432"));
        assert_eq!(
            get(&vars, "MY_DB_PORT_9000_UDP"),
            Some("udp://10.96.0.20:9000")
        );
        assert_eq!(get(&vars, "MY_DB_PORT_9000_UDP_PROTO"), Some("udp"));
        assert_eq!(get(&vars, "MY_DB_PORT_9000_UDP_PORT"), Some("9000"));
        assert_eq!(get(&vars, "MY_DB_PORT_9000_UDP_ADDR"), Some("10.96.0.20"));
        assert_eq!(get(&vars, "HEADLESS_SERVICE_HOST"), None, "no cluster IP");
        assert_eq!(
            get(&vars, "ELSEWHERE_SERVICE_HOST"),
            None,
            "other namespace"
        );
    }

    #[test]
    fn service_links_can_be_disabled_but_not_for_kubernetes() {
        let vars = service_env(&pod(json!({"enableServiceLinks": false})), &services());
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&vars, "MY_DB_SERVICE_HOST"), None);
    }

    #[test]
    fn ipv6_cluster_ip_urls_are_bracketed() {
        let s = [svc("shop", "v6", "fd00::10", json!([{"port": 80}]))];
        let vars = service_env(&pod(json!({})), &s);
        assert_eq!(get(&vars, "V6_PORT"), Some("tcp://[fd00::10]:80"));
    }

    #[test]
    fn env_field_refs_sources_and_expansion() {
        let p = pod(json!({"serviceAccountName": "robot"}));
        let c: Container = serde_json::from_value(json!({
            "name": "app",
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": true}}},
                {"name": "GREETING", "value": "hi $(POD_NAME) $$(POD_NAME) $(UNKNOWN)"},
            ],
        }))
        .unwrap();
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "cfg".into(),
            serde_json::from_value(json!({"data": {"color": "blue"}})).unwrap(),
        );
        sources.secrets.insert(
            "sec".into(),
            serde_json::from_value(json!({"data": {"pw": "czNjcjN0"}})).unwrap(),
        );
        let pod_ips = ["10.244.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let host_ips = ["192.0.2.2".parse().unwrap()];
        let facts = PodFacts {
            node_name: "node-1",
            pod_ips: &pod_ips,
            host_ips: &host_ips,
            hostname: "web",
        };
        let vars = container_env(&p, &c, &services(), &sources, &facts).unwrap();
        assert_eq!(get(&vars, "POD_NAME"), Some("web"));
        assert_eq!(get(&vars, "POD_NS"), Some("shop"));
        assert_eq!(get(&vars, "POD_IP"), Some("10.244.0.5"));
        assert_eq!(get(&vars, "POD_IPS"), Some("10.244.0.5,fd00::5"));
        assert_eq!(get(&vars, "NODE"), Some("node-1"));
        assert_eq!(get(&vars, "SA"), Some("robot"));
        assert_eq!(get(&vars, "COLOR"), Some("blue"));
        assert_eq!(get(&vars, "PASS"), Some("s3cr3t"));
        assert_eq!(get(&vars, "OPT"), None);
        assert_eq!(
            get(&vars, "GREETING"),
            Some("hi web $(POD_NAME) $(UNKNOWN)")
        );
        assert_eq!(get(&vars, "HOSTNAME"), Some("web"));
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));

        let missing: Container = serde_json::from_value(json!({
            "name": "app",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "size"}}}],
        }))
        .unwrap();
        assert!(matches!(
            container_env(&p, &missing, &[], &sources, &facts),
            Err(EnvError::MissingKey { .. })
        ));
    }

    #[test]
    fn later_definitions_win() {
        let p = pod(json!({}));
        let c: Container = serde_json::from_value(json!({
            "name": "app",
            "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "override"}],
        }))
        .unwrap();
        let facts = PodFacts {
            node_name: "n",
            pod_ips: &[],
            host_ips: &[],
            hostname: "web",
        };
        let vars = container_env(&p, &c, &services(), &Sources::default(), &facts).unwrap();
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_HOST"), Some("override"));
        assert_eq!(
            vars.iter()
                .filter(|(k, _)| k == "KUBERNETES_SERVICE_HOST")
                .count(),
            1
        );
    }
}
