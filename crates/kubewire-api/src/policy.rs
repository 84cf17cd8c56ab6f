//! AdminNetworkPolicy and BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1).
//!
//! The types of the SIG-Network `network-policy-api` project
//! (<https://network-policy-api.sigs.k8s.io/reference/spec/>), both cluster-scoped with a status
//! subresource. Field names and optionality follow the upstream Go types so that an object
//! round-trips through serde unchanged: optional fields are `Option`, lists that upstream marks
//! `omitempty` are skipped when empty.
//!
//! Rule actions are closed enums: an unknown action fails to deserialize (kube-apiserver rejects it
//! through the CRD's enum schema). Protocols stay strings like in `k8s-openapi`, so validation can
//! report an unsupported protocol as a field error.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of both kinds.
pub const GROUP: &str = "policy.networking.k8s.io";
/// The API version of both kinds.
pub const VERSION: &str = "v1alpha1";
/// The only name a BaselineAdminNetworkPolicy may have (one BANP per cluster).
pub const BANP_NAME: &str = "default";

/// Spec of an AdminNetworkPolicy: cluster-wide rules evaluated before NetworkPolicies.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha1",
    kind = "AdminNetworkPolicy",
    plural = "adminnetworkpolicies",
    shortname = "anp",
    status = "AdminNetworkPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Priority","type":"string","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicySpec {
    /// 0..=1000; lower values are evaluated first.
    pub priority: i32,
    /// The pods this policy applies to.
    pub subject: AdminNetworkPolicySubject,
    /// At most 100 rules, evaluated in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<AdminNetworkPolicyIngressRule>,
    /// At most 100 rules, evaluated in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<AdminNetworkPolicyEgressRule>,
}

/// Status of an AdminNetworkPolicy, written by implementations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Spec of the BaselineAdminNetworkPolicy: cluster-wide defaults evaluated after NetworkPolicies.
/// Its `metadata.name` must be `default`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha1",
    kind = "BaselineAdminNetworkPolicy",
    plural = "baselineadminnetworkpolicies",
    shortname = "banp",
    status = "BaselineAdminNetworkPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicySpec {
    /// The pods this policy applies to.
    pub subject: AdminNetworkPolicySubject,
    /// At most 100 rules, evaluated in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<BaselineAdminNetworkPolicyIngressRule>,
    /// At most 100 rules, evaluated in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<BaselineAdminNetworkPolicyEgressRule>,
}

/// Status of the BaselineAdminNetworkPolicy, written by implementations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Which pods a policy applies to. Exactly one field must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicySubject {
    /// All pods in the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// The selected pods in the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods selected by a namespace selector AND a pod selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

/// The action of an AdminNetworkPolicy rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AdminNetworkPolicyRuleAction {
    /// Allow the traffic, whatever NetworkPolicies and the BANP say.
    #[default]
    Allow,
    /// Deny the traffic, whatever NetworkPolicies and the BANP say.
    Deny,
    /// Skip the remaining ANP rules and let NetworkPolicies (then the BANP) decide.
    Pass,
}

impl AdminNetworkPolicyRuleAction {
    pub const ALL: [&'static str; 3] = ["Allow", "Deny", "Pass"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Deny => "Deny",
            Self::Pass => "Pass",
        }
    }
}

/// The action of a BaselineAdminNetworkPolicy rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum BaselineAdminNetworkPolicyRuleAction {
    #[default]
    Allow,
    Deny,
}

impl BaselineAdminNetworkPolicyRuleAction {
    pub const ALL: [&'static str; 2] = ["Allow", "Deny"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Deny => "Deny",
        }
    }
}

/// An ingress rule of an AdminNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyIngressRule {
    /// At most 100 characters; for observability only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub action: AdminNetworkPolicyRuleAction,
    /// 1..=100 sources.
    pub from: Vec<AdminNetworkPolicyIngressPeer>,
    /// Destination ports on the subject pods; unset matches all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminNetworkPolicyPort>>,
}

/// An egress rule of an AdminNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyEgressRule {
    /// At most 100 characters; for observability only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub action: AdminNetworkPolicyRuleAction,
    /// 1..=100 destinations.
    pub to: Vec<AdminNetworkPolicyEgressPeer>,
    /// Destination ports; unset matches all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminNetworkPolicyPort>>,
}

/// An ingress rule of the BaselineAdminNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicyIngressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub action: BaselineAdminNetworkPolicyRuleAction,
    pub from: Vec<AdminNetworkPolicyIngressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminNetworkPolicyPort>>,
}

/// An egress rule of the BaselineAdminNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicyEgressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub action: BaselineAdminNetworkPolicyRuleAction,
    pub to: Vec<BaselineAdminNetworkPolicyEgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminNetworkPolicyPort>>,
}

/// A source of ingress traffic. Exactly one field must be set; an implementation that sees none
/// must fail closed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyIngressPeer {
    /// All (non-host-network) pods of the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// The selected pods of the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// A destination of ANP egress traffic. Exactly one field must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyEgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// The addresses in `status.addresses` of the selected nodes (experimental).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// 1..=25 CIDRs, IPv4 or IPv6.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// 1..=25 domain names, `*.` allowed as a prefix; Allow rules only (experimental).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_names: Vec<String>,
}

/// A destination of BANP egress traffic. Exactly one field must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicyEgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

/// A port selector. Exactly one field must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicyPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<PortNumber>,
    /// A named container port of the peer pods (experimental; not for networks/nodes peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
}

/// One port of one protocol.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortNumber {
    /// TCP, UDP or SCTP; defaults to TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// 1..=65535.
    pub port: i32,
}

/// An inclusive port range of one protocol.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// TCP, UDP or SCTP; defaults to TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// 1..=65535, less than `end`.
    pub start: i32,
    /// 1..=65535, greater than `start`.
    pub end: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::{CustomResourceExt, Resource};
    use serde_json::{Value, json};

    /// The egress example of the upstream API reference (nodes, networks, pods and port ranges).
    fn anp_example() -> Value {
        json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": "AdminNetworkPolicy",
            "metadata": {"name": "cluster-wide-deny-example"},
            "spec": {
                "priority": 10,
                "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "sensitive-ns"}}},
                "ingress": [{
                    "name": "deny-all-ingress-from-any-ns",
                    "action": "Deny",
                    "from": [{"namespaces": {}}]
                }],
                "egress": [
                    {
                        "name": "allow-to-dns",
                        "action": "Allow",
                        "to": [{"pods": {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchExpressions": [{"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]}
                        }}],
                        "ports": [
                            {"portNumber": {"protocol": "UDP", "port": 53}},
                            {"portRange": {"protocol": "TCP", "start": 8080, "end": 9090}},
                            {"namedPort": "dns"}
                        ]
                    },
                    {
                        "name": "pass-to-nodes-and-networks",
                        "action": "Pass",
                        "to": [
                            {"nodes": {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}},
                            {"networks": ["10.0.0.0/8", "fd00::/8"]},
                            {"domainNames": ["*.kubernetes.io", "kubernetes.io"]}
                        ]
                    }
                ]
            },
            "status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "SetupSucceeded", "message": "ok",
                "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1
            }]}
        })
    }

    #[test]
    fn anp_round_trips_exactly() {
        let value = anp_example();
        let anp: AdminNetworkPolicy = serde_json::from_value(value.clone()).expect("deserializes");
        assert_eq!(anp.spec.priority, 10);
        assert_eq!(
            anp.spec.egress[0].action,
            AdminNetworkPolicyRuleAction::Allow
        );
        assert_eq!(
            anp.spec.egress[1].action,
            AdminNetworkPolicyRuleAction::Pass
        );
        assert_eq!(
            anp.spec.egress[1].to[1].networks,
            vec!["10.0.0.0/8", "fd00::/8"]
        );
        let ports = anp.spec.egress[0].ports.as_ref().expect("ports");
        assert_eq!(
            ports[1].port_range.as_ref().map(|r| (r.start, r.end)),
            Some((8080, 9090))
        );
        assert_eq!(ports[2].named_port.as_deref(), Some("dns"));
        assert_eq!(serde_json::to_value(&anp).expect("serializes"), value);
    }

    #[test]
    fn banp_round_trips_exactly() {
        let value = json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": "default"},
            "spec": {
                "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}},
                "ingress": [{"name": "default-deny", "action": "Deny", "from": [{"namespaces": {}}]}],
                "egress": [{"action": "Allow", "to": [{"networks": ["0.0.0.0/0"]}],
                            "ports": [{"portNumber": {"port": 443}}]}]
            }
        });
        let banp: BaselineAdminNetworkPolicy =
            serde_json::from_value(value.clone()).expect("deserializes");
        assert_eq!(
            banp.spec.egress[0].action,
            BaselineAdminNetworkPolicyRuleAction::Allow
        );
        assert!(banp.status.is_none());
        assert_eq!(serde_json::to_value(&banp).expect("serializes"), value);
    }

    #[test]
    fn banp_rejects_pass_action() {
        let value = json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": "default"},
            "spec": {"subject": {"namespaces": {}},
                     "ingress": [{"action": "Pass", "from": [{"namespaces": {}}]}]}
        });
        assert!(serde_json::from_value::<BaselineAdminNetworkPolicy>(value).is_err());
    }

    #[test]
    fn resource_metadata_is_cluster_scoped_with_status() {
        assert_eq!(AdminNetworkPolicy::group(&()), GROUP);
        assert_eq!(AdminNetworkPolicy::version(&()), VERSION);
        assert_eq!(AdminNetworkPolicy::plural(&()), "adminnetworkpolicies");
        assert_eq!(
            BaselineAdminNetworkPolicy::plural(&()),
            "baselineadminnetworkpolicies"
        );
        let crd = AdminNetworkPolicy::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        assert_eq!(BaselineAdminNetworkPolicy::crd().spec.scope, "Cluster");
    }
}
