//! What `lab up` puts into a new cluster, as kubeadm installs its addons: the `kube-dns`
//! Service at the cluster DNS address the kubelets write into pods' resolv.conf, backed by
//! `kubewire dns` on the host's lab address (an EndpointSlice the lab manages, as the API
//! server does for `kubernetes`).

use std::net::IpAddr;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kubewire_api::labels;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::plan::Plan;

pub const DNS_NAMESPACE: &str = "kube-system";
pub const DNS_SERVICE: &str = "kube-dns";
/// The port `kubewire dns` listens on, on the host's lab addresses.
pub const DNS_PORT: u16 = 53;

/// The `kube-dns` Service: no selector (its endpoint is the host), the cluster DNS addresses.
pub fn dns_service(plan: &Plan) -> Result<Service> {
    let ips: Vec<String> = plan.cluster_dns().iter().map(IpAddr::to_string).collect();
    let families: Vec<&str> = plan
        .cluster_dns()
        .iter()
        .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
        .collect();
    decode(json!({
        "metadata": {"name": DNS_SERVICE, "namespace": DNS_NAMESPACE,
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {
            "clusterIP": ips.first(),
            "clusterIPs": ips,
            "ipFamilies": families,
            "ipFamilyPolicy": if families.len() > 1 { "RequireDualStack" } else { "SingleStack" },
            "ports": [
                {"name": "dns", "port": DNS_PORT, "protocol": "UDP", "targetPort": DNS_PORT},
                {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP", "targetPort": DNS_PORT},
            ],
        }
    }))
}

/// One EndpointSlice per family, naming the host's lab address.
pub fn dns_slices(plan: &Plan) -> Result<Vec<EndpointSlice>> {
    plan.host_addresses()
        .iter()
        .map(|addr| {
            let v4 = addr.addr().is_ipv4();
            decode(json!({
                "metadata": {
                    "name": format!("{DNS_SERVICE}-{}", if v4 { "ipv4" } else { "ipv6" }),
                    "namespace": DNS_NAMESPACE,
                    "labels": {labels::SERVICE_NAME: DNS_SERVICE, labels::MANAGED_BY: "kubewire-lab"},
                },
                "addressType": if v4 { "IPv4" } else { "IPv6" },
                "endpoints": [{"addresses": [addr.addr().to_string()], "conditions": {"ready": true}}],
                "ports": [
                    {"name": "dns", "port": DNS_PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP"},
                ],
            }))
        })
        .collect()
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).context("building an addon object")
}

/// Creates the addons that are missing (an existing one is left as the user has it).
pub async fn install(plan: &Plan, client: &kube::Client) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), DNS_NAMESPACE);
    create_missing(&services, &dns_service(plan)?).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), DNS_NAMESPACE);
    for slice in dns_slices(plan)? {
        create_missing(&slices, &slice).await?;
    }
    Ok(())
}

async fn create_missing<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "creating {}",
                object.meta().name.as_deref().unwrap_or_default()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cluster::plan::IpFamily;

    #[test]
    fn kube_dns_is_at_the_cluster_dns_address_and_backed_by_the_host() {
        let plan = Plan::new("t", 2, 1, 1, IpFamily::Dual, Path::new("/tmp"));
        let svc = dns_service(&plan).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ips.unwrap(), ["10.96.0.10", "fd00:10:96::a"]);
        assert!(spec.selector.is_none(), "the lab manages its endpoints");
        let slices = dns_slices(&plan).unwrap();
        assert_eq!(slices.len(), 2);
        assert_eq!(
            slices[0].endpoints.as_ref().unwrap()[0].addresses,
            ["198.18.2.1"]
        );
        assert_eq!(slices[1].address_type, "IPv6");
        let v4 = Plan::new("t", 2, 1, 1, IpFamily::Ipv4, Path::new("/tmp"));
        assert_eq!(
            dns_service(&v4)
                .unwrap()
                .spec
                .unwrap()
                .ip_family_policy
                .as_deref(),
            Some("SingleStack")
        );
    }
}
