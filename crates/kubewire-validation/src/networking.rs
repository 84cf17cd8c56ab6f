//! networking/v1: NetworkPolicy, Ingress, IngressClass (`pkg/apis/networking/validation`,
//! `pkg/apis/networking/v1/defaults.go`).

use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, IPBlock, Ingress, IngressBackend, IngressClass, IngressClassSpec, IngressSpec,
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, IpFamily, Path};

pub const MAX_INGRESS_CLASS_CONTROLLER_LENGTH: usize = 250;
const POLICY_TYPES: [&str; 2] = ["Ingress", "Egress"];
const PATH_TYPES: [&str; 3] = ["Exact", "ImplementationSpecific", "Prefix"];
/// Exact and Prefix paths are compared literally; these would make them ambiguous.
const INVALID_PATH_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: [&str; 2] = ["/..", "/."];
const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

// ---------------------------------------------------------------------------------------------
// NetworkPolicy

impl Admit for NetworkPolicy {
    /// `SetDefaults_NetworkPolicy`: policyTypes from the rules present, TCP ports.
    fn default(&mut self, _ctx: &Context) {
        let spec = self.spec.get_or_insert_with(NetworkPolicySpec::default);
        spec.pod_selector.get_or_insert_with(LabelSelector::default);
        if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
            let mut types = vec!["Ingress".to_owned()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                types.push("Egress".to_owned());
            }
            spec.policy_types = Some(types);
        }
        let ingress_ports = spec
            .ingress
            .iter_mut()
            .flatten()
            .flat_map(|r| r.ports.iter_mut().flatten());
        let egress_ports = spec
            .egress
            .iter_mut()
            .flatten()
            .flat_map(|r| r.ports.iter_mut().flatten());
        for port in ingress_ports.chain(egress_ports) {
            port.protocol.get_or_insert_with(|| "TCP".to_owned());
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let empty = NetworkPolicySpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let path = Path::new("spec");
        if let Some(selector) = &spec.pod_selector {
            errs.extend(meta::validate_label_selector(
                &path.child("podSelector"),
                selector,
            ));
        }
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            let p = path.child("ingress").index(i);
            for (j, port) in rule.ports.iter().flatten().enumerate() {
                errs.extend(validate_network_policy_port(
                    port,
                    &p.child("ports").index(j),
                ));
            }
            for (j, peer) in rule.from.iter().flatten().enumerate() {
                errs.extend(validate_peer(peer, &p.child("from").index(j)));
            }
        }
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            let p = path.child("egress").index(i);
            for (j, port) in rule.ports.iter().flatten().enumerate() {
                errs.extend(validate_network_policy_port(
                    port,
                    &p.child("ports").index(j),
                ));
            }
            for (j, peer) in rule.to.iter().flatten().enumerate() {
                errs.extend(validate_peer(peer, &p.child("to").index(j)));
            }
        }
        let types = spec.policy_types.as_deref().unwrap_or(&[]);
        if types.len() > POLICY_TYPES.len() {
            errs.push(FieldError::invalid(
                &path.child("policyTypes"),
                serde_json::json!(types),
                "may not specify more than two policyTypes",
            ));
        } else {
            for (i, t) in types.iter().enumerate() {
                errs.extend(meta::validate_enum(
                    &path.child("policyTypes").index(i),
                    t,
                    &POLICY_TYPES,
                ));
            }
        }
        errs
    }
}

/// `ValidateNetworkPolicyPort`: a protocol, a numbered or named port, and a range end only after
/// a numbered port.
fn validate_network_policy_port(port: &NetworkPolicyPort, path: &Path) -> FieldErrors {
    let mut errs =
        meta::validate_protocol(&path.child("protocol"), port.protocol.as_deref(), false);
    let end_path = path.child("endPort");
    match (&port.port, port.end_port) {
        (Some(IntOrString::Int(n)), end) => {
            errs.extend(meta::validate_port_num(&path.child("port"), *n));
            if let Some(end) = end {
                if end < *n {
                    errs.push(FieldError::invalid(
                        &end_path,
                        end,
                        "must be greater than or equal to `port`",
                    ));
                }
                errs.extend(meta::validate_port_num(&end_path, end));
            }
        }
        (Some(IntOrString::String(name)), end) => {
            if let Some(end) = end {
                errs.push(FieldError::invalid(
                    &end_path,
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            errs.extend(meta::each_invalid(
                &path.child("port"),
                name,
                meta::is_valid_port_name(name),
            ));
        }
        (None, Some(end)) => errs.push(FieldError::invalid(
            &end_path,
            end,
            "may not be specified when `port` is not specified",
        )),
        (None, None) => {}
    }
    errs
}

/// `ValidateNetworkPolicyPeer`: at least one selector or an ipBlock, never an ipBlock with a
/// selector.
fn validate_peer(peer: &NetworkPolicyPeer, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut count = 0;
    if let Some(selector) = &peer.pod_selector {
        count += 1;
        errs.extend(meta::validate_label_selector(
            &path.child("podSelector"),
            selector,
        ));
    }
    if let Some(selector) = &peer.namespace_selector {
        count += 1;
        errs.extend(meta::validate_label_selector(
            &path.child("namespaceSelector"),
            selector,
        ));
    }
    if let Some(block) = &peer.ip_block {
        count += 1;
        errs.extend(validate_ip_block(block, &path.child("ipBlock")));
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a peer"));
    } else if count > 1 && peer.ip_block.is_some() {
        errs.push(FieldError::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
    errs
}

/// `ValidateIPBlock`: a CIDR, and `except` entries strictly inside it (hence of its family).
fn validate_ip_block(block: &IPBlock, path: &Path) -> FieldErrors {
    let cidr_path = path.child("cidr");
    if block.cidr.is_empty() {
        return vec![FieldError::required(&cidr_path, "")];
    }
    let mut errs = meta::validate_cidr(&cidr_path, &block.cidr);
    let Some(cidr) = meta::parse_cidr(&block.cidr) else {
        return errs;
    };
    for (i, except) in block.except.iter().flatten().enumerate() {
        let p = path.child("except").index(i);
        let except_errs = meta::validate_cidr(&p, except);
        if !except_errs.is_empty() {
            errs.extend(except_errs);
            continue;
        }
        let Some(net) = meta::parse_cidr(except) else {
            continue;
        };
        let same_family = IpFamily::of(&net.addr()) == IpFamily::of(&cidr.addr());
        if !same_family || !cidr.contains(&net.network()) || cidr.prefix_len() >= net.prefix_len() {
            errs.push(FieldError::invalid(
                &p,
                except.as_str(),
                "must be a strict subset of `cidr`",
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Ingress

impl Admit for Ingress {
    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let empty = IngressSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let path = Path::new("spec");
        let rules = spec.rules.as_deref().unwrap_or(&[]);
        if rules.is_empty() && spec.default_backend.is_none() {
            errs.push(FieldError::invalid(
                &path,
                Value::Array(Vec::new()),
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        if let Some(backend) = &spec.default_backend {
            errs.extend(validate_backend(backend, &path.child("defaultBackend")));
        }
        for (i, rule) in rules.iter().enumerate() {
            let p = path.child("rules").index(i);
            if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
                errs.extend(validate_host(host, &p.child("host"), true));
            }
            if let Some(http) = &rule.http {
                let paths_path = p.child("http").child("paths");
                if http.paths.is_empty() {
                    errs.push(FieldError::required(&paths_path, ""));
                }
                for (j, http_path) in http.paths.iter().enumerate() {
                    errs.extend(validate_http_path(http_path, &paths_path.index(j)));
                }
            }
        }
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let p = path.child("tls").index(i);
            for (j, host) in tls.hosts.iter().flatten().enumerate() {
                errs.extend(validate_host(host, &p.child("hosts").index(j), false));
            }
            if let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
                errs.extend(meta::validate_dns1123_subdomain(
                    &p.child("secretName"),
                    secret,
                ));
            }
        }
        if let Some(class) = &spec.ingress_class_name {
            errs.extend(meta::validate_dns1123_subdomain(
                &path.child("ingressClassName"),
                class,
            ));
            let annotation = self
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION));
            if old.is_none()
                && let Some(annotation) = annotation.filter(|a| *a != class)
            {
                errs.push(FieldError::invalid(
                    &Path::new("annotations").child(INGRESS_CLASS_ANNOTATION),
                    annotation.as_str(),
                    "must match `ingressClassName` when both are specified",
                ));
            }
        }
        errs
    }
}

/// A rule or TLS host: a DNS name (wildcard `*.` allowed as the first label), never an IP.
fn validate_host(host: &str, path: &Path, reject_ip: bool) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if reject_ip && meta::parse_ip(host).is_some() {
        errs.push(FieldError::invalid(
            path,
            host,
            "must be a DNS name, not an IP address",
        ));
    }
    let msgs = if host.contains('*') {
        meta::is_wildcard_dns1123_subdomain(host)
    } else {
        meta::is_dns1123_subdomain(host)
    };
    errs.extend(meta::each_invalid(path, host, msgs));
    errs
}

fn validate_http_path(http_path: &HTTPIngressPath, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let value = http_path.path.as_deref().unwrap_or("");
    let value_path = path.child("path");
    match http_path.path_type.as_str() {
        "" => {
            return vec![FieldError::required(
                &path.child("pathType"),
                "pathType must be specified",
            )];
        }
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    &value_path,
                    value,
                    "must be an absolute path",
                ));
            }
            for seq in INVALID_PATH_SEQUENCES {
                if value.contains(seq) {
                    errs.push(FieldError::invalid(
                        &value_path,
                        value,
                        format!("must not contain '{seq}'"),
                    ));
                }
            }
            for suffix in INVALID_PATH_SUFFIXES {
                if value.ends_with(suffix) {
                    errs.push(FieldError::invalid(
                        &value_path,
                        value,
                        format!("cannot end with '{suffix}'"),
                    ));
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    &value_path,
                    value,
                    "must be an absolute path",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &path.child("pathType"),
            other,
            &PATH_TYPES,
        )),
    }
    errs.extend(validate_backend(&http_path.backend, &path.child("backend")));
    errs
}

/// `validateIngressBackend`: exactly one of service and resource; a service port by name or number.
fn validate_backend(backend: &IngressBackend, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    match (&backend.service, &backend.resource) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (None, Some(resource)) => {
            errs.extend(validate_typed_reference(resource, &path.child("resource")))
        }
        (Some(service), None) => {
            let name_path = path.child("service").child("name");
            if service.name.is_empty() {
                errs.push(FieldError::required(&name_path, ""));
            } else {
                errs.extend(meta::each_invalid(
                    &name_path,
                    &service.name,
                    NameRule::Dns1035Label.check(&service.name, false),
                ));
            }
            let port = service.port.clone().unwrap_or_default();
            let name = port.name.as_deref().unwrap_or("");
            let number = port.number.unwrap_or(0);
            let port_path = path.child("service").child("port");
            match (name.is_empty(), number == 0) {
                (false, false) => errs.push(FieldError::invalid(
                    path,
                    "",
                    "cannot set both port name & port number",
                )),
                (false, true) => errs.extend(meta::each_invalid(
                    &port_path.child("name"),
                    name,
                    meta::is_valid_port_name(name),
                )),
                (true, false) => {
                    errs.extend(meta::validate_port_num(&port_path.child("number"), number))
                }
                (true, true) => errs.push(FieldError::required(
                    path,
                    "port name or number is required",
                )),
            }
        }
        (None, None) => errs.push(FieldError::invalid(
            path,
            "",
            "resource or service backend is required",
        )),
    }
    errs
}

/// `content.IsPathSegmentName`: the name can be used in a URL path.
fn path_segment_messages(name: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if name == "." || name == ".." {
        msgs.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            msgs.push(format!("may not contain '{bad}'"));
        }
    }
    msgs
}

fn validate_reference_parts(
    api_group: Option<&str>,
    kind: &str,
    name: &str,
    path: &Path,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Some(group) = api_group {
        errs.extend(meta::validate_dns1123_subdomain(
            &path.child("apiGroup"),
            group,
        ));
    }
    for (field, value) in [("kind", kind), ("name", name)] {
        if value.is_empty() {
            errs.push(FieldError::required(&path.child(field), ""));
        } else {
            errs.extend(meta::each_invalid(
                &path.child(field),
                value,
                path_segment_messages(value),
            ));
        }
    }
    errs
}

fn validate_typed_reference(reference: &TypedLocalObjectReference, path: &Path) -> FieldErrors {
    validate_reference_parts(
        reference.api_group.as_deref(),
        &reference.kind,
        &reference.name,
        path,
    )
}

// ---------------------------------------------------------------------------------------------
// IngressClass

impl Admit for IngressClass {
    /// Parameters are cluster-scoped unless said otherwise.
    fn default(&mut self, _ctx: &Context) {
        if let Some(params) = self.spec.as_mut().and_then(|s| s.parameters.as_mut()) {
            params.scope.get_or_insert_with(|| "Cluster".to_owned());
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            false,
            NameRule::Dns1123Subdomain,
        );
        let empty = IngressClassSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let path = Path::new("spec");
        let controller_path = path.child("controller");
        let controller = spec.controller.as_deref().unwrap_or("");
        if controller.is_empty() {
            errs.push(FieldError::required(&controller_path, ""));
        } else {
            if controller.len() > MAX_INGRESS_CLASS_CONTROLLER_LENGTH {
                errs.push(FieldError::too_long(
                    &controller_path,
                    MAX_INGRESS_CLASS_CONTROLLER_LENGTH,
                ));
            }
            errs.extend(meta::validate_domain_prefixed_path(
                &controller_path,
                controller,
            ));
        }
        if let Some(params) = &spec.parameters {
            let p = path.child("parameters");
            errs.extend(validate_reference_parts(
                params.api_group.as_deref(),
                &params.kind,
                &params.name,
                &p,
            ));
            match params.scope.as_deref() {
                None => errs.push(FieldError::required(&p.child("scope"), "")),
                Some("Namespace") => match &params.namespace {
                    None => errs.push(FieldError::required(
                        &p.child("namespace"),
                        "`parameters.scope` is set to 'Namespace'",
                    )),
                    Some(ns) => errs.extend(meta::each_invalid(
                        &p.child("namespace"),
                        ns,
                        NameRule::Dns1123Label.check(ns, false),
                    )),
                },
                Some("Cluster") => {
                    if params.namespace.is_some() {
                        errs.push(FieldError::forbidden(
                            &p.child("namespace"),
                            "`parameters.scope` is set to 'Cluster'",
                        ));
                    }
                }
                Some(other) => errs.push(FieldError::not_supported(
                    &p.child("scope"),
                    other,
                    &["Cluster", "Namespace"],
                )),
            }
        }
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            errs.extend(meta::validate_immutable(
                &controller_path,
                &spec.controller,
                &old_spec.controller,
            ));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::{self, *};
    use serde::de::DeserializeOwned;
    use serde_json::json;

    fn obj<T: DeserializeOwned>(spec: Value) -> T {
        serde_json::from_value(
            json!({"metadata": {"name": "x", "namespace": "default"}, "spec": spec}),
        )
        .expect("object")
    }

    fn errors_of<T: Admit>(mut o: T, old: Option<&T>) -> Vec<(String, ErrorKind)> {
        crate::admit(&mut o, old, &Context::default())
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    fn np(spec: Value) -> Vec<(String, ErrorKind)> {
        errors_of(obj::<NetworkPolicy>(spec), None)
    }

    #[test]
    fn network_policy_defaults() {
        let mut p: NetworkPolicy = obj(json!({"egress": [{"ports": [{"port": 53}]}]}));
        p.default(&Context::default());
        let spec = p.spec.expect("spec");
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
        assert_eq!(
            spec.egress.expect("egress")[0]
                .ports
                .as_ref()
                .expect("ports")[0]
                .protocol
                .as_deref(),
            Some("TCP")
        );
    }

    #[test]
    fn network_policy_ports() {
        assert!(np(json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 90}, {"port": "http"}]}]})).is_empty());
        assert_eq!(
            np(json!({"ingress": [{"ports": [{"port": 80, "endPort": 79}]}]})),
            vec![("spec.ingress[0].ports[0].endPort".into(), Invalid)]
        );
        assert_eq!(
            np(json!({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]})),
            vec![("spec.ingress[0].ports[0].endPort".into(), Invalid)]
        );
        assert_eq!(
            np(json!({"ingress": [{"ports": [{"endPort": 90}]}]})),
            vec![("spec.ingress[0].ports[0].endPort".into(), Invalid)]
        );
        assert_eq!(
            np(json!({"egress": [{"ports": [{"port": 0, "protocol": "ICMP"}]}]})),
            vec![
                ("spec.egress[0].ports[0].protocol".into(), NotSupported),
                ("spec.egress[0].ports[0].port".into(), Invalid),
            ]
        );
        assert_eq!(
            np(json!({"ingress": [{"ports": [{"port": "Http-"}]}]})).len(),
            2
        );
    }

    #[test]
    fn network_policy_peers() {
        assert_eq!(
            np(json!({"ingress": [{"from": [{}]}]})),
            vec![("spec.ingress[0].from[0]".into(), Required)]
        );
        assert_eq!(
            np(
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]})
            ),
            vec![("spec.ingress[0].from[0]".into(), Forbidden)]
        );
        assert!(np(json!({"ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {"matchLabels": {"a": "b"}}}]}]})).is_empty());
        assert!(np(json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]})).is_empty());
        assert_eq!(
            np(json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]})),
            vec![("spec.egress[0].to[0].ipBlock.cidr".into(), Invalid)]
        );
        assert_eq!(
            np(json!({"egress": [{"to": [{"ipBlock": {"cidr": ""}}]}]})),
            vec![("spec.egress[0].to[0].ipBlock.cidr".into(), Required)]
        );
        assert_eq!(
            np(
                json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8", "11.0.0.0/16", "fd00::/64", "x"]}}]}]})
            ),
            vec![
                ("spec.egress[0].to[0].ipBlock.except[0]".into(), Invalid),
                ("spec.egress[0].to[0].ipBlock.except[1]".into(), Invalid),
                ("spec.egress[0].to[0].ipBlock.except[2]".into(), Invalid),
                ("spec.egress[0].to[0].ipBlock.except[3]".into(), Invalid),
            ]
        );
        assert_eq!(
            np(json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}})),
            vec![(
                "spec.podSelector.matchExpressions[0].values".into(),
                Required
            )]
        );
        assert_eq!(
            np(json!({"policyTypes": ["Ingress", "Sideways"]})),
            vec![("spec.policyTypes[1]".into(), NotSupported)]
        );
        assert_eq!(
            np(json!({"policyTypes": ["Ingress", "Egress", "Ingress"]})),
            vec![("spec.policyTypes".into(), Invalid)]
        );
    }

    fn ing(spec: Value) -> Vec<(String, ErrorKind)> {
        errors_of(obj::<Ingress>(spec), None)
    }

    fn rule(path: Value) -> Value {
        json!({"rules": [{"host": "example.com", "http": {"paths": [path]}}]})
    }

    fn backend() -> Value {
        json!({"service": {"name": "web", "port": {"number": 80}}})
    }

    #[test]
    fn ingress_paths() {
        assert!(
            ing(rule(
                json!({"path": "/api", "pathType": "Prefix", "backend": backend()})
            ))
            .is_empty()
        );
        assert!(
            ing(rule(
                json!({"pathType": "ImplementationSpecific", "backend": backend()})
            ))
            .is_empty()
        );
        assert_eq!(
            ing(rule(
                json!({"path": "/", "pathType": "", "backend": backend()})
            )),
            vec![("spec.rules[0].http.paths[0].pathType".into(), Required)]
        );
        assert_eq!(
            ing(rule(
                json!({"path": "/", "pathType": "Regex", "backend": backend()})
            )),
            vec![("spec.rules[0].http.paths[0].pathType".into(), NotSupported)]
        );
        assert_eq!(
            ing(rule(
                json!({"path": "api", "pathType": "Exact", "backend": backend()})
            )),
            vec![("spec.rules[0].http.paths[0].path".into(), Invalid)]
        );
        let errs = ing(rule(
            json!({"path": "/a//b/%2f/..", "pathType": "Prefix", "backend": backend()}),
        ));
        assert_eq!(errs.len(), 3);
        assert!(
            errs.iter()
                .all(|(f, k)| f == "spec.rules[0].http.paths[0].path" && *k == Invalid)
        );
        assert_eq!(
            ing(json!({"rules": [{"host": "a.com", "http": {"paths": []}}]})),
            vec![("spec.rules[0].http.paths".into(), Required)]
        );
    }

    #[test]
    fn ingress_hosts_and_backends() {
        assert!(ing(json!({"rules": [{"host": "*.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend()}]}}]})).is_empty());
        assert_eq!(
            ing(json!({"rules": [{"host": "foo.*.com"}]})),
            vec![("spec.rules[0].host".into(), Invalid)]
        );
        assert_eq!(
            ing(json!({"rules": [{"host": "10.0.0.1"}]})),
            vec![("spec.rules[0].host".into(), Invalid)]
        );
        assert_eq!(ing(json!({})), vec![("spec".into(), Invalid)]);
        assert_eq!(
            ing(json!({"defaultBackend": {}})),
            vec![("spec.defaultBackend".into(), Invalid)]
        );
        assert_eq!(
            ing(
                json!({"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}, "resource": {"kind": "Bucket", "name": "b"}}})
            ),
            vec![("spec.defaultBackend".into(), Invalid)]
        );
        assert_eq!(
            ing(json!({"defaultBackend": {"service": {"name": "web", "port": {}}}})),
            vec![("spec.defaultBackend".into(), Required)]
        );
        assert_eq!(
            ing(
                json!({"defaultBackend": {"service": {"name": "web", "port": {"name": "http", "number": 80}}}})
            ),
            vec![("spec.defaultBackend".into(), Invalid)]
        );
        assert_eq!(
            ing(
                json!({"defaultBackend": {"service": {"name": "1web", "port": {"number": 70000}}}})
            ),
            vec![
                ("spec.defaultBackend.service.name".into(), Invalid),
                ("spec.defaultBackend.service.port.number".into(), Invalid),
            ]
        );
        assert_eq!(
            ing(json!({"defaultBackend": {"resource": {"kind": "", "name": "a/b"}}})),
            vec![
                ("spec.defaultBackend.resource.kind".into(), Required),
                ("spec.defaultBackend.resource.name".into(), Invalid),
            ]
        );
        assert_eq!(
            ing(
                json!({"defaultBackend": backend(), "tls": [{"hosts": ["*.a.com", "B.com"], "secretName": "s_1"}]})
            ),
            vec![
                ("spec.tls[0].hosts[1]".into(), Invalid),
                ("spec.tls[0].secretName".into(), Invalid),
            ]
        );
        assert_eq!(
            ing(json!({"defaultBackend": backend(), "ingressClassName": "Nginx"})),
            vec![("spec.ingressClassName".into(), Invalid)]
        );
    }

    #[test]
    fn ingress_class() {
        let cls = |spec: Value| -> IngressClass {
            serde_json::from_value(json!({"metadata": {"name": "nginx"}, "spec": spec}))
                .expect("class")
        };
        let mut ok = cls(
            json!({"controller": "kubewire.io/gateway", "parameters": {"kind": "Config", "name": "c"}}),
        );
        assert!(crate::admit(&mut ok, None, &Context::default()).is_empty());
        assert_eq!(
            ok.spec
                .as_ref()
                .and_then(|s| s.parameters.as_ref())
                .and_then(|p| p.scope.as_deref()),
            Some("Cluster")
        );
        assert_eq!(
            errors_of(cls(json!({})), None),
            vec![("spec.controller".into(), Required)]
        );
        assert_eq!(
            errors_of(cls(json!({"controller": "gateway"})), None),
            vec![("spec.controller".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                cls(
                    json!({"controller": "a.io/b", "parameters": {"kind": "C", "name": "c", "scope": "Namespace"}})
                ),
                None
            ),
            vec![("spec.parameters.namespace".into(), Required)]
        );
        assert_eq!(
            errors_of(
                cls(
                    json!({"controller": "a.io/b", "parameters": {"kind": "C", "name": "c", "namespace": "x"}})
                ),
                None
            ),
            vec![("spec.parameters.namespace".into(), Forbidden)]
        );
        assert_eq!(
            errors_of(cls(json!({"controller": "other.io/b"})), Some(&ok)),
            vec![("spec.controller".into(), Invalid)]
        );
    }
}
