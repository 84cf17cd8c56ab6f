//! LoadBalancer IPAM against the real (in-process) API server, with dual-stack Service ranges.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Namespace, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubewire_controllers::loadbalancer::runtime::{self, REASON_ALLOCATION_FAILED};
use kubewire_controllers::loadbalancer::{Config, IP_MODE_VIP};
use serde_json::{Value, json};

mod common;
use common::{Running, eventually, start};

fn config(ranges: &[&str]) -> Config {
    Config::new(ranges.iter().map(|r| r.parse().expect("a CIDR")).collect()).expect("a config")
}

async fn create(services: &Api<Service>, name: &str, spec: Value) {
    let service: Service =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
            .expect("a Service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("create Service");
}

fn load_balancer(extra: Value) -> Value {
    let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

/// The ingress IPs of a Service's status, each checked to be a VIP.
async fn ips(services: &Api<Service>, name: &str) -> Vec<String> {
    let service = services.get(name).await.expect("get Service");
    let ingress = service
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default();
    ingress
        .into_iter()
        .map(|i| {
            assert_eq!(i.ip_mode.as_deref(), Some(IP_MODE_VIP), "{name}: {i:?}");
            i.ip.unwrap_or_default()
        })
        .collect()
}

/// Waits until `name` has exactly `expected` as its ingress IPs.
async fn wait_for_ips(services: &Api<Service>, name: &str, expected: &[&str]) {
    eventually(&format!("{name} to have {expected:?}"), || async {
        (ips(services, name).await == expected).then_some(())
    })
    .await;
}

/// name -> (resourceVersion, status) of every Service in the namespace.
async fn versions(services: &Api<Service>) -> BTreeMap<String, (String, Value)> {
    services
        .list(&ListParams::default())
        .await
        .expect("list Services")
        .items
        .into_iter()
        .map(|s| {
            let status = serde_json::to_value(&s.status).expect("a status");
            (
                s.metadata.name.unwrap_or_default(),
                (s.metadata.resource_version.unwrap_or_default(), status),
            )
        })
        .collect()
}

#[tokio::test]
async fn allocates_honours_releases_and_survives_a_restart() {
    let h = start(true).await;
    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    let config = config(&["203.0.113.0/29", "fd00:1b::/125"]);

    // One Service before the controller starts, the rest while it runs.
    create(&services, "first", load_balancer(json!({}))).await;
    let controller = Running::spawn(
        "LoadBalancer IPAM",
        runtime::run(h.client.clone(), config.clone()),
    );
    wait_for_ips(&services, "first", &["203.0.113.1"]).await;

    let dual = json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]});
    create(&services, "dual", load_balancer(dual)).await;
    wait_for_ips(&services, "dual", &["fd00:1b::1", "203.0.113.2"]).await;

    create(&services, "plain", json!({"ports": [{"port": 80}]})).await;
    let class = json!({"loadBalancerClass": "example.com/other"});
    create(&services, "classed", load_balancer(class)).await;
    // Another implementation's address, outside our range.
    let theirs = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}});
    let classed = services
        .patch_status("classed", &PatchParams::default(), &Patch::Merge(&theirs))
        .await
        .expect("patch classed status");

    let requested = json!({"loadBalancerIP": "203.0.113.6"});
    create(&services, "requested", load_balancer(requested)).await;
    wait_for_ips(&services, "requested", &["203.0.113.6"]).await;
    // Reconciled after the ClusterIP and classed Services were created: neither was touched.
    assert_eq!(ips(&services, "plain").await, Vec::<String>::new());
    let now = services.get("classed").await.expect("get classed");
    assert_eq!(
        now.metadata.resource_version,
        classed.metadata.resource_version
    );
    assert_eq!(now.status, classed.status);

    create(&services, "to-change", load_balancer(json!({}))).await;
    wait_for_ips(&services, "to-change", &["203.0.113.3"]).await;

    // A deleted Service's address goes to the next one (which then holds a lower address than
    // the older `dual`: only the statuses say who holds what after a restart).
    services
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete first");
    create(&services, "second", load_balancer(json!({}))).await;
    wait_for_ips(&services, "second", &["203.0.113.1"]).await;

    // No longer a LoadBalancer: its ingress is cleared and its address is free.
    let to_cluster_ip = json!({"spec": {"type": "ClusterIP"}});
    services
        .patch(
            "to-change",
            &PatchParams::default(),
            &Patch::Merge(&to_cluster_ip),
        )
        .await
        .expect("change to-change to ClusterIP");
    wait_for_ips(&services, "to-change", &[]).await;
    create(&services, "third", load_balancer(json!({}))).await;
    wait_for_ips(&services, "third", &["203.0.113.3"]).await;

    // Restart: the new controller rebuilds its state from the statuses and writes nothing; a
    // new Service (reconciled after the first round) gets an address nobody holds.
    drop(controller);
    let before = versions(&services).await;
    let _controller = Running::spawn(
        "LoadBalancer IPAM",
        runtime::run(h.client.clone(), config.clone()),
    );
    create(&services, "after-restart", load_balancer(json!({}))).await;
    wait_for_ips(&services, "after-restart", &["203.0.113.4"]).await;
    let mut after = versions(&services).await;
    after.remove("after-restart");
    assert_eq!(after, before, "a Service changed across the restart");
}

#[tokio::test]
async fn exhaustion_records_an_event_and_deletion_unblocks() {
    let h = start(true).await;
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("a Namespace");
    Api::<Namespace>::all(h.client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create Namespace");
    let services: Api<Service> = Api::namespaced(h.client.clone(), "team");
    let events: Api<Event> = Api::namespaced(h.client.clone(), "team");
    // Two addresses: .1 and .2 (.0 is the network address, .3 the broadcast address).
    let _controller = Running::spawn(
        "LoadBalancer IPAM",
        runtime::run(h.client.clone(), config(&["203.0.113.0/30"])),
    );
    for name in ["a", "b"] {
        create(&services, name, load_balancer(json!({}))).await;
    }
    wait_for_ips(&services, "a", &["203.0.113.1"]).await;
    wait_for_ips(&services, "b", &["203.0.113.2"]).await;
    create(&services, "c", load_balancer(json!({}))).await;

    let event = eventually("an AllocationFailed Event on c", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list Events");
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(REASON_ALLOCATION_FAILED)
                && e.involved_object.name.as_deref() == Some("c")
        })
    })
    .await;
    assert_eq!(event.involved_object.kind.as_deref(), Some("Service"));
    assert_eq!(event.involved_object.namespace.as_deref(), Some("team"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let message = event.message.unwrap_or_default();
    assert!(message.contains("203.0.113.0/30"), "{message}");
    assert_eq!(ips(&services, "c").await, Vec::<String>::new());

    // Deleting a holder frees its address; the waiting Service gets exactly that one.
    services
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    wait_for_ips(&services, "c", &["203.0.113.1"]).await;
    assert_eq!(ips(&services, "b").await, ["203.0.113.2"]);
}
