//! The kinds this server serves: their REST names, scope, subresources and how each one is
//! decoded, defaulted and validated.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admission::{self, AdmitError};

/// What the API server does with `status` on create and on an update of the main resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPolicy {
    /// No status subresource: status is an ordinary part of the object.
    None,
    /// Status subresource; status given on create is dropped (most kinds).
    Subresource,
    /// Status subresource, but create keeps the status it is given (Node, as upstream).
    SubresourceKeepOnCreate,
}

/// One served kind.
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// `all` puts a kind into `kubectl get all`.
    pub categories: &'static [&'static str],
    pub status: StatusPolicy,
    /// Decodes, defaults and validates an object of this kind.
    pub admit: fn(&mut Value, Option<&Value>, &admission::Context) -> Result<(), AdmitError>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The group as spelled in API error details (`""` for core, like kube).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_status(&self) -> bool {
        self.status != StatusPolicy::None
    }
}

/// Index of a kind in [`RESOURCES`]; cheap to copy, hash and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(u16);

impl ResourceId {
    pub fn info(self) -> &'static ResourceType {
        &RESOURCES[self.0 as usize]
    }

    pub fn all() -> impl Iterator<Item = ResourceId> {
        (0..RESOURCES.len() as u16).map(ResourceId)
    }

    pub fn find(group: &str, version: &str, plural: &str) -> Option<ResourceId> {
        Self::all().find(|r| {
            let i = r.info();
            i.group == group && i.version == version && i.plural == plural
        })
    }

    pub fn by_kind(group: &str, kind: &str) -> Option<ResourceId> {
        Self::all().find(|r| r.info().group == group && r.info().kind == kind)
    }

    /// The key prefix in storage. Stable across versions: it names group and resource only.
    pub fn storage_prefix(self) -> String {
        let i = self.info();
        let group = if i.group.is_empty() { "core" } else { i.group };
        format!("{group}/{}", i.plural)
    }

    pub fn from_storage_prefix(prefix: &str) -> Option<ResourceId> {
        Self::all().find(|r| r.storage_prefix() == prefix)
    }
}

/// Decodes into the typed object (rejecting what does not decode, like kube's 400), defaults
/// and validates it, and writes the defaulted object back.
fn typed<K>(
    value: &mut Value,
    old: Option<&Value>,
    ctx: &admission::Context,
) -> Result<(), AdmitError>
where
    K: DeserializeOwned + Serialize + admission::Admit,
{
    admission::admit_typed::<K>(value, old, ctx)
}

use gateway_api::apis::standard as gw;
use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coordination, core::v1 as core};
use k8s_openapi::api::{discovery::v1 as discovery, networking::v1 as networking};
use kubewire_api::policy;

macro_rules! resource {
    ($ty:ty, $group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr,
     short: $short:expr, categories: $cat:expr, status: $status:expr) => {
        ResourceType {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: $short,
            categories: $cat,
            status: $status,
            admit: typed::<$ty>,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const GATEWAY: &[&str] = &["gateway-api"];

use StatusPolicy::{None as NoStatus, Subresource, SubresourceKeepOnCreate};

pub static RESOURCES: &[ResourceType] = &[
    resource!(core::Namespace, "", "v1", "Namespace", "namespaces", "namespace", false, short: &["ns"], categories: NONE, status: Subresource),
    resource!(core::Node, "", "v1", "Node", "nodes", "node", false, short: &["no"], categories: NONE, status: SubresourceKeepOnCreate),
    resource!(core::Pod, "", "v1", "Pod", "pods", "pod", true, short: &["po"], categories: ALL, status: Subresource),
    resource!(core::Service, "", "v1", "Service", "services", "service", true, short: &["svc"], categories: ALL, status: Subresource),
    resource!(core::Endpoints, "", "v1", "Endpoints", "endpoints", "endpoints", true, short: &["ep"], categories: NONE, status: NoStatus),
    resource!(core::ConfigMap, "", "v1", "ConfigMap", "configmaps", "configmap", true, short: &["cm"], categories: NONE, status: NoStatus),
    resource!(core::Secret, "", "v1", "Secret", "secrets", "secret", true, short: NONE, categories: NONE, status: NoStatus),
    resource!(core::Event, "", "v1", "Event", "events", "event", true, short: &["ev"], categories: NONE, status: NoStatus),
    resource!(apps::Deployment, "apps", "v1", "Deployment", "deployments", "deployment", true, short: &["deploy"], categories: ALL, status: Subresource),
    resource!(apps::ReplicaSet, "apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, short: &["rs"], categories: ALL, status: Subresource),
    resource!(apps::StatefulSet, "apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, short: &["sts"], categories: ALL, status: Subresource),
    resource!(apps::DaemonSet, "apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, short: &["ds"], categories: ALL, status: Subresource),
    resource!(discovery::EndpointSlice, "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, short: NONE, categories: NONE, status: NoStatus),
    resource!(networking::NetworkPolicy, "networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, short: &["netpol"], categories: NONE, status: NoStatus),
    resource!(networking::Ingress, "networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, short: &["ing"], categories: NONE, status: Subresource),
    resource!(networking::IngressClass, "networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, short: NONE, categories: NONE, status: NoStatus),
    resource!(coordination::Lease, "coordination.k8s.io", "v1", "Lease", "leases", "lease", true, short: NONE, categories: NONE, status: NoStatus),
    resource!(gw::gatewayclasses::GatewayClass, "gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses", "gatewayclass", false, short: &["gc"], categories: GATEWAY, status: Subresource),
    resource!(gw::gateways::Gateway, "gateway.networking.k8s.io", "v1", "Gateway", "gateways", "gateway", true, short: &["gtw"], categories: GATEWAY, status: Subresource),
    resource!(gw::httproutes::HttpRoute, "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", "httproute", true, short: NONE, categories: GATEWAY, status: Subresource),
    resource!(gw::grpcroutes::GrpcRoute, "gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes", "grpcroute", true, short: NONE, categories: GATEWAY, status: Subresource),
    resource!(gw::referencegrants::ReferenceGrant, "gateway.networking.k8s.io", "v1beta1", "ReferenceGrant", "referencegrants", "referencegrant", true, short: &["refgrant"], categories: GATEWAY, status: NoStatus),
    resource!(policy::AdminNetworkPolicy, "policy.networking.k8s.io", "v1alpha1", "AdminNetworkPolicy", "adminnetworkpolicies", "adminnetworkpolicy", false, short: &["anp"], categories: NONE, status: Subresource),
    resource!(policy::BaselineAdminNetworkPolicy, "policy.networking.k8s.io", "v1alpha1", "BaselineAdminNetworkPolicy", "baselineadminnetworkpolicies", "baselineadminnetworkpolicy", false, short: &["banp"], categories: NONE, status: Subresource),
];

/// Namespace and Service sit first in [`RESOURCES`]; the server looks them up often.
pub const NAMESPACES: ResourceId = ResourceId(0);
pub const SERVICES: ResourceId = ResourceId(3);

/// The API groups in discovery order, each with its versions (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_ids() {
        assert_eq!(NAMESPACES.info().plural, "namespaces");
        assert_eq!(SERVICES.info().plural, "services");
    }

    #[test]
    fn storage_prefixes_are_unique_and_round_trip() {
        for r in ResourceId::all() {
            assert_eq!(
                ResourceId::from_storage_prefix(&r.storage_prefix()),
                Some(r)
            );
        }
    }

    #[test]
    fn gateway_group_lists_both_versions() {
        let groups = groups();
        let gw = groups
            .iter()
            .find(|(g, _)| *g == "gateway.networking.k8s.io")
            .unwrap();
        assert_eq!(gw.1, vec!["v1", "v1beta1"]);
    }
}
