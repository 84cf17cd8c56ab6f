//! policy.networking.k8s.io/v1alpha1: AdminNetworkPolicy and BaselineAdminNetworkPolicy.
//!
//! The rules of the CRDs of kubernetes-sigs/network-policy-api (schema bounds, one-of unions and
//! CEL rules), with the messages kube-apiserver prints for them.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kubewire_api::policy::{
    AdminNetworkPolicy, AdminNetworkPolicyIngressPeer, AdminNetworkPolicyPort,
    AdminNetworkPolicyRuleAction, AdminNetworkPolicySubject, BANP_NAME, BaselineAdminNetworkPolicy,
    NamespacedPod,
};

use crate::crd::{
    exactly_one_property, max_items, max_length, min_items, pattern_error, range_errors, rule_error,
};
use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, Path};

pub const MAX_PRIORITY: i32 = 1000;
pub const MAX_RULES: usize = 100;
pub const MAX_PEERS: usize = 100;
pub const MAX_PORTS: usize = 100;
pub const MAX_RULE_NAME_LENGTH: usize = 100;
pub const MAX_NETWORKS: usize = 25;
pub const MAX_DOMAIN_NAMES: usize = 25;
const MAX_CIDR_LENGTH: usize = 43;
const DOMAIN_NAME_PATTERN: &str = r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$";

fn default_ports(ports: Option<&mut Vec<AdminNetworkPolicyPort>>) {
    for port in ports.into_iter().flatten() {
        if let Some(n) = &mut port.port_number {
            n.protocol.get_or_insert_with(|| "TCP".to_owned());
        }
        if let Some(r) = &mut port.port_range {
            r.protocol.get_or_insert_with(|| "TCP".to_owned());
        }
    }
}

fn validate_selector(path: &Path, selector: Option<&LabelSelector>) -> FieldErrors {
    selector
        .map(|s| meta::validate_label_selector(path, s))
        .unwrap_or_default()
}

fn validate_namespaced_pod(path: &Path, pods: Option<&NamespacedPod>) -> FieldErrors {
    let Some(pods) = pods else { return Vec::new() };
    let mut errs =
        meta::validate_label_selector(&path.child("namespaceSelector"), &pods.namespace_selector);
    errs.extend(meta::validate_label_selector(
        &path.child("podSelector"),
        &pods.pod_selector,
    ));
    errs
}

fn validate_subject(subject: &AdminNetworkPolicySubject) -> FieldErrors {
    let path = Path::new("spec").child("subject");
    let mut errs = exactly_one_property(
        &path,
        usize::from(subject.namespaces.is_some()) + usize::from(subject.pods.is_some()),
    );
    errs.extend(validate_selector(
        &path.child("namespaces"),
        subject.namespaces.as_ref(),
    ));
    errs.extend(validate_namespaced_pod(
        &path.child("pods"),
        subject.pods.as_ref(),
    ));
    errs
}

fn validate_ingress_peers(path: &Path, peers: &[AdminNetworkPolicyIngressPeer]) -> FieldErrors {
    let mut errs = min_items(path, peers.len(), 1);
    errs.extend(max_items(path, peers.len(), MAX_PEERS));
    for (i, peer) in peers.iter().enumerate() {
        let p = path.index(i);
        errs.extend(exactly_one_property(
            &p,
            usize::from(peer.namespaces.is_some()) + usize::from(peer.pods.is_some()),
        ));
        errs.extend(validate_selector(
            &p.child("namespaces"),
            peer.namespaces.as_ref(),
        ));
        errs.extend(validate_namespaced_pod(
            &p.child("pods"),
            peer.pods.as_ref(),
        ));
    }
    errs
}

/// An egress peer of either kind; `domain_names` is `None` for the BANP (no such field).
struct EgressPeer<'a> {
    namespaces: Option<&'a LabelSelector>,
    pods: Option<&'a NamespacedPod>,
    nodes: Option<&'a LabelSelector>,
    networks: &'a [String],
    domain_names: Option<&'a [String]>,
}

impl EgressPeer<'_> {
    /// Peers without pods have no named ports.
    fn is_external(&self) -> bool {
        self.nodes.is_some()
            || !self.networks.is_empty()
            || self.domain_names.is_some_and(|d| !d.is_empty())
    }
}

fn validate_egress_peers(path: &Path, peers: &[EgressPeer<'_>]) -> FieldErrors {
    let mut errs = min_items(path, peers.len(), 1);
    errs.extend(max_items(path, peers.len(), MAX_PEERS));
    for (i, peer) in peers.iter().enumerate() {
        let p = path.index(i);
        let domains = peer.domain_names.unwrap_or(&[]);
        let set = [
            peer.namespaces.is_some(),
            peer.pods.is_some(),
            peer.nodes.is_some(),
            !peer.networks.is_empty(),
            !domains.is_empty(),
        ];
        errs.extend(exactly_one_property(&p, set.iter().filter(|s| **s).count()));
        errs.extend(validate_selector(&p.child("namespaces"), peer.namespaces));
        errs.extend(validate_namespaced_pod(&p.child("pods"), peer.pods));
        errs.extend(validate_selector(&p.child("nodes"), peer.nodes));
        errs.extend(validate_networks(&p.child("networks"), peer.networks));
        errs.extend(validate_domain_names(&p.child("domainNames"), domains));
    }
    errs
}

/// `networks`: a set of at most 25 CIDRs.
fn validate_networks(path: &Path, networks: &[String]) -> FieldErrors {
    let mut errs = max_items(path, networks.len(), MAX_NETWORKS);
    let mut seen = HashSet::new();
    for (i, cidr) in networks.iter().enumerate() {
        let p = path.index(i);
        errs.extend(max_length(&p, cidr, MAX_CIDR_LENGTH));
        if cidr.contains(':') == cidr.contains('.') {
            errs.push(rule_error(&p, cidr, "CIDR must be either an IPv4 or IPv6 address. IPv4 address embedded in IPv6 addresses are not supported"));
        } else if meta::parse_cidr(cidr).is_none() {
            errs.push(rule_error(&p, cidr, "Invalid CIDR format provided"));
        }
        if !seen.insert(cidr) {
            errs.push(FieldError::duplicate(&p, cidr.as_str()));
        }
    }
    errs
}

/// `domainNames`: a set of at most 25 names, `*.` allowed as a prefix.
fn validate_domain_names(path: &Path, names: &[String]) -> FieldErrors {
    let mut errs = max_items(path, names.len(), MAX_DOMAIN_NAMES);
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if !is_domain_name(name) {
            errs.push(pattern_error(&path.index(i), name, DOMAIN_NAME_PATTERN));
        }
        if !seen.insert(name) {
            errs.push(FieldError::duplicate(&path.index(i), name.as_str()));
        }
    }
    errs
}

/// The `DomainName` pattern: at least two labels of `[a-zA-Z0-9_-]` (alphanumeric at both ends),
/// an optional `*.` prefix and an optional trailing dot.
fn is_domain_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            let (Some(first), Some(last)) = (l.chars().next(), l.chars().last()) else {
                return false;
            };
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn validate_ports(path: &Path, ports: Option<&Vec<AdminNetworkPolicyPort>>) -> FieldErrors {
    let Some(ports) = ports else {
        return Vec::new();
    };
    let mut errs = min_items(path, ports.len(), 1);
    errs.extend(max_items(path, ports.len(), MAX_PORTS));
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let set = [
            port.port_number.is_some(),
            port.named_port.is_some(),
            port.port_range.is_some(),
        ];
        errs.extend(exactly_one_property(&p, set.iter().filter(|s| **s).count()));
        if let Some(n) = &port.port_number {
            let np = p.child("portNumber");
            errs.extend(meta::validate_protocol(
                &np.child("protocol"),
                n.protocol.as_deref(),
                false,
            ));
            errs.extend(range_errors(&np.child("port"), i64::from(n.port), 1, 65535));
        }
        if let Some(name) = &port.named_port {
            errs.extend(meta::each_invalid(
                &p.child("namedPort"),
                name,
                meta::is_valid_port_name(name),
            ));
        }
        if let Some(r) = &port.port_range {
            let rp = p.child("portRange");
            errs.extend(meta::validate_protocol(
                &rp.child("protocol"),
                r.protocol.as_deref(),
                false,
            ));
            errs.extend(range_errors(
                &rp.child("start"),
                i64::from(r.start),
                1,
                65535,
            ));
            errs.extend(range_errors(&rp.child("end"), i64::from(r.end), 1, 65535));
            if r.start >= r.end {
                errs.push(rule_error(
                    &rp,
                    "object",
                    "Start port must be less than End port",
                ));
            }
        }
    }
    errs
}

fn has_named_port(ports: Option<&Vec<AdminNetworkPolicyPort>>) -> bool {
    ports.is_some_and(|ports| ports.iter().any(|p| p.named_port.is_some()))
}

fn validate_rule_counts(ingress: usize, egress: usize) -> FieldErrors {
    let path = Path::new("spec");
    let mut errs = max_items(&path.child("ingress"), ingress, MAX_RULES);
    errs.extend(max_items(&path.child("egress"), egress, MAX_RULES));
    errs
}

impl Admit for AdminNetworkPolicy {
    /// Port protocols default to TCP.
    fn default(&mut self, _ctx: &Context) {
        for rule in &mut self.spec.ingress {
            default_ports(rule.ports.as_mut());
        }
        for rule in &mut self.spec.egress {
            default_ports(rule.ports.as_mut());
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            false,
            NameRule::Dns1123Subdomain,
        );
        let spec = &self.spec;
        let path = Path::new("spec");
        errs.extend(range_errors(
            &path.child("priority"),
            i64::from(spec.priority),
            0,
            i64::from(MAX_PRIORITY),
        ));
        errs.extend(validate_subject(&spec.subject));
        errs.extend(validate_rule_counts(spec.ingress.len(), spec.egress.len()));
        for (i, rule) in spec.ingress.iter().enumerate() {
            let p = path.child("ingress").index(i);
            errs.extend(max_length(
                &p.child("name"),
                &rule.name,
                MAX_RULE_NAME_LENGTH,
            ));
            errs.extend(validate_ingress_peers(&p.child("from"), &rule.from));
            errs.extend(validate_ports(&p.child("ports"), rule.ports.as_ref()));
        }
        for (i, rule) in spec.egress.iter().enumerate() {
            let p = path.child("egress").index(i);
            errs.extend(max_length(
                &p.child("name"),
                &rule.name,
                MAX_RULE_NAME_LENGTH,
            ));
            let peers: Vec<EgressPeer<'_>> = rule
                .to
                .iter()
                .map(|t| EgressPeer {
                    namespaces: t.namespaces.as_ref(),
                    pods: t.pods.as_ref(),
                    nodes: t.nodes.as_ref(),
                    networks: &t.networks,
                    domain_names: Some(&t.domain_names),
                })
                .collect();
            errs.extend(validate_egress_peers(&p.child("to"), &peers));
            errs.extend(validate_ports(&p.child("ports"), rule.ports.as_ref()));
            if peers.iter().any(EgressPeer::is_external) && has_named_port(rule.ports.as_ref()) {
                errs.push(rule_error(&p, "object", "networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames"));
            }
            // Domain names are an allowlist: a Deny or Pass on a name cannot be enforced reliably.
            if rule.action != AdminNetworkPolicyRuleAction::Allow
                && rule.to.iter().any(|t| !t.domain_names.is_empty())
            {
                errs.push(rule_error(
                    &p,
                    "object",
                    "domainNames peer can only be set with action Allow",
                ));
            }
        }
        errs
    }
}

impl Admit for BaselineAdminNetworkPolicy {
    fn default(&mut self, _ctx: &Context) {
        for rule in &mut self.spec.ingress {
            default_ports(rule.ports.as_mut());
        }
        for rule in &mut self.spec.egress {
            default_ports(rule.ports.as_mut());
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            false,
            NameRule::Dns1123Subdomain,
        );
        // One BANP per cluster: the CRD's root CEL rule.
        if self.metadata.name.as_deref() != Some(BANP_NAME) {
            errs.push(rule_error(
                &Path::root(),
                "object",
                "Only one baseline admin network policy with metadata.name=\"default\" can be created in the cluster",
            ));
        }
        let spec = &self.spec;
        let path = Path::new("spec");
        errs.extend(validate_subject(&spec.subject));
        errs.extend(validate_rule_counts(spec.ingress.len(), spec.egress.len()));
        for (i, rule) in spec.ingress.iter().enumerate() {
            let p = path.child("ingress").index(i);
            errs.extend(max_length(
                &p.child("name"),
                &rule.name,
                MAX_RULE_NAME_LENGTH,
            ));
            errs.extend(validate_ingress_peers(&p.child("from"), &rule.from));
            errs.extend(validate_ports(&p.child("ports"), rule.ports.as_ref()));
        }
        for (i, rule) in spec.egress.iter().enumerate() {
            let p = path.child("egress").index(i);
            errs.extend(max_length(
                &p.child("name"),
                &rule.name,
                MAX_RULE_NAME_LENGTH,
            ));
            let peers: Vec<EgressPeer<'_>> = rule
                .to
                .iter()
                .map(|t| EgressPeer {
                    namespaces: t.namespaces.as_ref(),
                    pods: t.pods.as_ref(),
                    nodes: t.nodes.as_ref(),
                    networks: &t.networks,
                    domain_names: None,
                })
                .collect();
            errs.extend(validate_egress_peers(&p.child("to"), &peers));
            errs.extend(validate_ports(&p.child("ports"), rule.ports.as_ref()));
            if peers.iter().any(EgressPeer::is_external) && has_named_port(rule.ports.as_ref()) {
                errs.push(rule_error(&p, "object", "networks/nodes peer cannot be set with namedPorts since there are no namedPorts for networks/nodes"));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::{self, *};
    use serde_json::{Value, json};

    fn anp(spec: Value) -> AdminNetworkPolicy {
        serde_json::from_value(
            json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": "p"}, "spec": spec}),
        )
        .expect("anp")
    }

    fn banp(name: &str, spec: Value) -> BaselineAdminNetworkPolicy {
        serde_json::from_value(json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}))
        .expect("banp")
    }

    fn errors_of<T: Admit>(mut o: T) -> Vec<(String, ErrorKind)> {
        crate::admit(&mut o, None, &Context::default())
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    fn base(extra: Value) -> Value {
        let mut spec = json!({"priority": 10, "subject": {"namespaces": {}}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        spec
    }

    #[test]
    fn valid_policies_pass_and_default() {
        let mut p = anp(base(json!({
            "ingress": [{"name": "deny", "action": "Deny", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}}],
                         "ports": [{"portNumber": {"port": 5432}}]}],
            "egress": [{"action": "Allow", "to": [{"networks": ["10.0.0.0/8", "fd00::/8"]}], "ports": [{"portRange": {"start": 1000, "end": 2000}}]},
                       {"action": "Allow", "to": [{"domainNames": ["*.kubernetes.io"]}]}]
        })));
        assert!(crate::admit(&mut p, None, &Context::default()).is_empty());
        let port = &p.spec.ingress[0].ports.as_ref().expect("ports")[0];
        assert_eq!(
            port.port_number
                .as_ref()
                .and_then(|n| n.protocol.as_deref()),
            Some("TCP")
        );
        assert!(errors_of(banp("default", json!({"subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"nodes": {}}]}]}))).is_empty());
    }

    #[test]
    fn priority_and_subject() {
        let errs = crate::admit(
            &mut anp(base(json!({"priority": 1001}))),
            None,
            &Context::default(),
        );
        assert_eq!(
            errs[0].to_string_with_field(),
            "spec.priority: Invalid value: 1001: spec.priority in body should be less than or equal to 1000"
        );
        assert_eq!(
            errors_of(anp(base(json!({"priority": -1})))),
            vec![("spec.priority".into(), Invalid)]
        );
        assert_eq!(
            errors_of(anp(base(json!({"subject": {}})))),
            vec![("spec.subject".into(), Invalid)]
        );
        assert_eq!(
            errors_of(anp(base(
                json!({"subject": {"namespaces": {}, "pods": {"namespaceSelector": {}, "podSelector": {}}}})
            ))),
            vec![("spec.subject".into(), Invalid)]
        );
        assert_eq!(
            errors_of(anp(base(
                json!({"subject": {"namespaces": {"matchLabels": {"a": "-"}}}})
            ))),
            vec![("spec.subject.namespaces.matchLabels".into(), Invalid)]
        );
    }

    #[test]
    fn rules() {
        let rules: Vec<Value> = (0..101)
            .map(|_| json!({"action": "Allow", "from": [{"namespaces": {}}]}))
            .collect();
        assert_eq!(
            errors_of(anp(base(json!({"ingress": rules})))),
            vec![("spec.ingress".into(), TooMany)]
        );
        let long = "r".repeat(101);
        assert_eq!(
            errors_of(anp(base(
                json!({"ingress": [{"name": long, "action": "Allow", "from": [{"namespaces": {}}]}]})
            ))),
            vec![("spec.ingress[0].name".into(), TooLong)]
        );
        assert_eq!(
            errors_of(anp(base(
                json!({"ingress": [{"action": "Allow", "from": []}]})
            ))),
            vec![("spec.ingress[0].from".into(), Invalid)]
        );
        assert_eq!(
            errors_of(anp(base(
                json!({"egress": [{"action": "Allow", "to": [{}]}]})
            ))),
            vec![("spec.egress[0].to[0]".into(), Invalid)]
        );
    }

    #[test]
    fn peers_and_ports() {
        let egress = |to: Value, ports: Value, action: &str| {
            anp(base(
                json!({"egress": [{"action": action, "to": [to], "ports": ports}]}),
            ))
        };
        assert_eq!(
            errors_of(egress(
                json!({"networks": ["10.0.0.0/33", "10.0.0.0", "::ffff:10.0.0.0/104", "10.0.0.0/33"]}),
                json!([{"portNumber": {"port": 80}}]),
                "Allow"
            )),
            vec![
                ("spec.egress[0].to[0].networks[0]".into(), Invalid),
                ("spec.egress[0].to[0].networks[1]".into(), Invalid),
                ("spec.egress[0].to[0].networks[2]".into(), Invalid),
                ("spec.egress[0].to[0].networks[3]".into(), Invalid),
                ("spec.egress[0].to[0].networks[3]".into(), Duplicate),
            ]
        );
        assert_eq!(
            errors_of(egress(
                json!({"domainNames": ["kubernetes"]}),
                json!([{"portNumber": {"port": 443}}]),
                "Allow"
            )),
            vec![("spec.egress[0].to[0].domainNames[0]".into(), Invalid)]
        );
        assert_eq!(
            errors_of(egress(
                json!({"domainNames": ["a.io"]}),
                json!([{"portNumber": {"port": 443}}]),
                "Deny"
            )),
            vec![("spec.egress[0]".into(), Invalid)]
        );
        assert_eq!(
            errors_of(egress(
                json!({"nodes": {}}),
                json!([{"namedPort": "http"}]),
                "Allow"
            )),
            vec![("spec.egress[0]".into(), Invalid)]
        );
        assert_eq!(
            errors_of(egress(
                json!({"namespaces": {}}),
                json!([{"portNumber": {"port": 0, "protocol": "ICMP"}}, {"portRange": {"start": 90, "end": 80}}, {}]),
                "Allow"
            )),
            vec![
                (
                    "spec.egress[0].ports[0].portNumber.protocol".into(),
                    NotSupported
                ),
                ("spec.egress[0].ports[0].portNumber.port".into(), Invalid),
                ("spec.egress[0].ports[1].portRange".into(), Invalid),
                ("spec.egress[0].ports[2]".into(), Invalid),
            ]
        );
        assert_eq!(
            errors_of(egress(json!({"namespaces": {}}), json!([]), "Allow")),
            vec![("spec.egress[0].ports".into(), Invalid)]
        );
    }

    #[test]
    fn banp_rules() {
        let errs = crate::admit(
            &mut banp("strict", json!({"subject": {"namespaces": {}}})),
            None,
            &Context::default(),
        );
        assert_eq!(
            errs[0].to_string_with_field(),
            r#"Invalid value: "object": Only one baseline admin network policy with metadata.name="default" can be created in the cluster"#
        );
        assert_eq!(
            errors_of(banp(
                "default",
                json!({"subject": {"namespaces": {}}, "egress": [{"action": "Allow", "to": [{"networks": ["10.0.0.0/8"]}], "ports": [{"namedPort": "dns"}]}]})
            )),
            vec![("spec.egress[0]".into(), Invalid)]
        );
    }
}
