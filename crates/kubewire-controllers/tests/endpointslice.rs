//! The EndpointSlice controller against the real (in-process) API server. No kubelet runs: the
//! tests set Pod status (IPs, Ready) through `pods/status` as a kubelet would, and graceful
//! deletion leaves Pods terminating, as it does until a kubelet finishes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubewire_api::labels;
use kubewire_controllers::endpointslice::{CONTROLLER_NAME, Config, runtime};
use serde_json::{Value, json};

mod common;
use common::{Harness, Running, eventually, start};

impl Harness {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create<K>(&self, body: Value) -> K
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(body).expect("a valid object");
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .expect("create")
    }

    async fn add_node(&self, name: &str, zone: &str) {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        }))
        .expect("a Node");
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create Node");
    }

    async fn add_service(&self, name: &str, spec: Value) -> Service {
        self.create(json!({
            "metadata": {"name": name, "labels": {"tier": "frontend"}},
            "spec": spec,
        }))
        .await
    }

    /// A Pod labelled `app=web` on `node-a` serving `http` on 8080, running and ready at `ip`.
    async fn add_pod(&self, name: &str, ip: &str) {
        self.create::<Pod>(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "kubewire",
                     "ports": [{"name": "http", "containerPort": 8080}]}]},
        }))
        .await;
        self.patch_pod_status(
            name,
            json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]}),
        )
        .await;
    }

    async fn patch_pod_status(&self, name: &str, status: Value) {
        self.api::<Pod>()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .expect("patch Pod status");
    }

    /// The slices labelled with the Service's name, in name order.
    async fn slices(&self, service: &str) -> Vec<EndpointSlice> {
        let params = ListParams::default().labels(&format!("{}={service}", labels::SERVICE_NAME));
        let mut list = self
            .api::<EndpointSlice>()
            .list(&params)
            .await
            .expect("list EndpointSlices")
            .items;
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        list
    }

    async fn endpoints(&self, name: &str) -> Option<Endpoints> {
        self.api::<Endpoints>()
            .get_opt(name)
            .await
            .expect("get Endpoints")
    }
}

fn endpoint_of<'a>(slice: &'a EndpointSlice, pod: &str) -> Option<&'a Endpoint> {
    slice
        .endpoints
        .iter()
        .flatten()
        .find(|e| e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
}

/// (ready, serving, terminating)
fn conditions(endpoint: &Endpoint) -> (bool, bool, bool) {
    let c = endpoint.conditions.as_ref().expect("conditions");
    (
        c.ready.unwrap_or(false),
        c.serving.unwrap_or(false),
        c.terminating.unwrap_or(false),
    )
}

/// (ready IPs, not-ready IPs) of an Endpoints object.
fn addresses(endpoints: &Endpoints) -> (Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        ready.extend(subset.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| a.ip.clone()),
        );
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

#[tokio::test]
async fn slices_and_endpoints_follow_readiness_termination_and_service_deletion() {
    let h = start(false).await;
    h.add_node("node-a", "zone-1").await;
    let service = h
        .add_service(
            "web",
            json!({"selector": {"app": "web"},
                   "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        )
        .await;
    h.add_pod("web-0", "10.244.0.10").await;
    h.add_pod("web-1", "10.244.0.11").await;
    let _controller = Running::spawn(
        "the EndpointSlice controller",
        runtime::run(h.client.clone(), Config::default()),
    );

    let slice = eventually("a slice with both Pods ready", || async {
        let slices = h.slices("web").await;
        let [slice] = slices.as_slice() else {
            return None;
        };
        let ready = ["web-0", "web-1"]
            .iter()
            .all(|p| endpoint_of(slice, p).is_some_and(|e| conditions(e) == (true, true, false)));
        ready.then(|| slice.clone())
    })
    .await;
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(labels::MANAGED_BY).map(String::as_str),
        Some(CONTROLLER_NAME)
    );
    assert_eq!(labels.get("tier").map(String::as_str), Some("frontend"));
    let owner = &slice.metadata.owner_references.as_ref().expect("an owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Service", Some(true))
    );
    assert_eq!(Some(&owner.uid), service.metadata.uid.as_ref());
    let port = &slice.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );
    let web0 = endpoint_of(&slice, "web-0").expect("web-0");
    assert_eq!(web0.addresses, vec!["10.244.0.10"]);
    assert_eq!(web0.node_name.as_deref(), Some("node-a"));
    assert_eq!(web0.zone.as_deref(), Some("zone-1"));

    let endpoints = eventually("Endpoints with both Pods", || async {
        let e = h.endpoints("web").await?;
        (addresses(&e).0.len() == 2).then_some(e)
    })
    .await;
    assert_eq!(
        addresses(&endpoints),
        (vec!["10.244.0.10".into(), "10.244.0.11".into()], vec![])
    );
    let labels = endpoints.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(labels::SKIP_MIRROR).map(String::as_str),
        Some("true")
    );
    let subset = &endpoints.subsets.as_ref().expect("subsets")[0];
    assert_eq!(subset.ports.as_ref().expect("ports")[0].port, 8080);

    // web-1 stops being ready: updated in place, in both objects.
    h.patch_pod_status(
        "web-1",
        json!({"conditions": [{"type": "Ready", "status": "False"}]}),
    )
    .await;
    eventually("web-1 not ready in the slice", || async {
        let slices = h.slices("web").await;
        let [s] = slices.as_slice() else { return None };
        assert_eq!(
            s.metadata.name, slice.metadata.name,
            "the slice was replaced"
        );
        endpoint_of(s, "web-1")
            .is_some_and(|e| conditions(e) == (false, false, false))
            .then_some(())
    })
    .await;
    eventually("web-1 among the not-ready Endpoints addresses", || async {
        let e = h.endpoints("web").await?;
        (addresses(&e) == (vec!["10.244.0.10".into()], vec!["10.244.0.11".into()])).then_some(())
    })
    .await;

    // web-0 is deleted gracefully: it stays, terminating, in the slice; it leaves Endpoints.
    h.api::<Pod>()
        .delete("web-0", &DeleteParams::default().grace_period(30))
        .await
        .expect("delete web-0");
    eventually("web-0 terminating in the slice", || async {
        let slices = h.slices("web").await;
        let [s] = slices.as_slice() else { return None };
        assert_eq!(
            s.metadata.name, slice.metadata.name,
            "the slice was replaced"
        );
        endpoint_of(s, "web-0")
            .is_some_and(|e| conditions(e) == (false, true, true))
            .then_some(())
    })
    .await;
    eventually("web-0 gone from Endpoints", || async {
        let e = h.endpoints("web").await?;
        (addresses(&e) == (vec![], vec!["10.244.0.11".into()])).then_some(())
    })
    .await;

    // The Service goes: its slices with it (garbage collection), its Endpoints by the controller.
    h.api::<Service>()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete Service");
    eventually("slices and Endpoints gone", || async {
        let gone = h.slices("web").await.is_empty() && h.endpoints("web").await.is_none();
        gone.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_pods_is_packed_once_and_then_left_still_across_restarts() {
    let h = start(false).await;
    h.add_node("node-a", "zone-1").await;
    h.add_service(
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
    )
    .await;
    // Every slice name ever written, from a watch that sees each create.
    let ever: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let record = ever.clone();
    let slices_api = h.api::<EndpointSlice>();
    let recorder = tokio::spawn(async move {
        let mut stream =
            std::pin::pin!(watcher(slices_api, watcher::Config::default()).applied_objects());
        while let Some(Ok(slice)) = stream.next().await {
            if let (Some(name), Ok(mut names)) = (slice.metadata.name, record.lock()) {
                names.insert(name);
            }
        }
    });

    let config = Config::new(3).expect("a valid maximum");
    let controller = Running::spawn(
        "the EndpointSlice controller",
        runtime::run(h.client.clone(), config),
    );
    for i in 0..7 {
        h.add_pod(&format!("web-{i}"), &format!("10.244.0.{}", 10 + i))
            .await;
    }
    let slices = eventually("seven ready endpoints", || async {
        let slices = h.slices("web").await;
        let ready = slices
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| conditions(e).0)
            .count();
        (ready == 7).then_some(slices)
    })
    .await;
    let addresses: BTreeSet<&String> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .flat_map(|e| &e.addresses)
        .collect();
    assert_eq!(addresses.len(), 7, "an endpoint listed twice: {slices:#?}");
    assert!(
        slices
            .iter()
            .all(|s| s.endpoints.as_ref().map_or(0, Vec::len) <= 3),
        "a slice over the maximum: {slices:#?}"
    );
    assert_eq!(slices.len(), 3, "{slices:#?}");

    // Settled: nothing more is written, by this controller or by a restarted one.
    let versions = |slices: &[EndpointSlice]| -> BTreeMap<String, String> {
        slices
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone().unwrap_or_default(),
                    s.metadata.resource_version.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = versions(&h.slices("web").await);
    let endpoints_version = |e: Option<Endpoints>| e.and_then(|e| e.metadata.resource_version);
    let settled_endpoints = endpoints_version(h.endpoints("web").await);
    drop(controller);
    let _controller = Running::spawn(
        "the EndpointSlice controller",
        runtime::run(h.client.clone(), config),
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(versions(&h.slices("web").await), settled);
    assert_eq!(
        endpoints_version(h.endpoints("web").await),
        settled_endpoints
    );
    let endpoints = h.endpoints("web").await.expect("Endpoints");
    assert_eq!(
        endpoints
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten())
            .count(),
        7
    );

    // No slice was created only to be deleted again.
    recorder.abort();
    let ever = ever.lock().map(|names| names.clone()).unwrap_or_default();
    let now: BTreeSet<String> = settled.into_keys().collect();
    assert_eq!(ever, now);
}

#[tokio::test]
async fn services_without_selector_and_other_managers_objects_are_left_alone() {
    let h = start(false).await;
    h.add_node("node-a", "zone-1").await;
    h.add_service("manual", json!({"ports": [{"name": "http", "port": 80}]}))
        .await;
    let manual_endpoints: Endpoints = h
        .create(json!({
            "metadata": {"name": "manual"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"name": "http", "port": 80}]}],
        }))
        .await;
    let foreign = |name: &str, service: &str| {
        json!({
            "metadata": {"name": name, "labels": {labels::SERVICE_NAME: service, labels::MANAGED_BY: "someone-else"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.0.2.10"]}],
        })
    };
    let manual_slice: EndpointSlice = h.create(foreign("manual-1", "manual")).await;
    let web_foreign: EndpointSlice = h.create(foreign("web-custom", "web")).await;
    h.add_service(
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
    )
    .await;
    h.add_pod("web-0", "10.244.0.10").await;
    let kubernetes_endpoints = h.endpoints("kubernetes").await;

    let _controller = Running::spawn(
        "the EndpointSlice controller",
        runtime::run(h.client.clone(), Config::default()),
    );
    // The managed Service gets its objects: the controller has been through its Services.
    eventually("web's own slice and Endpoints", || async {
        let ours = h.slices("web").await.into_iter().any(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::MANAGED_BY))
                .map(String::as_str)
                == Some(CONTROLLER_NAME)
                && s.endpoints.as_ref().is_some_and(|e| e.len() == 1)
        });
        (ours && h.endpoints("web").await.is_some()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rv = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.resource_version.clone()
    };
    let manual_now = h.endpoints("manual").await.expect("manual Endpoints");
    assert_eq!(rv(&manual_now.metadata), rv(&manual_endpoints.metadata));
    let manual_slices = h.slices("manual").await;
    assert_eq!(manual_slices.len(), 1, "{manual_slices:#?}");
    assert_eq!(rv(&manual_slices[0].metadata), rv(&manual_slice.metadata));
    let web_custom = h
        .api::<EndpointSlice>()
        .get("web-custom")
        .await
        .expect("web-custom");
    assert_eq!(rv(&web_custom.metadata), rv(&web_foreign.metadata));
    if let Some(before) = kubernetes_endpoints {
        let after = h
            .endpoints("kubernetes")
            .await
            .expect("default/kubernetes Endpoints");
        assert_eq!(rv(&after.metadata), rv(&before.metadata));
    }

    // Deleting the selector-less Service leaves the user's Endpoints in place.
    h.api::<Service>()
        .delete("manual", &DeleteParams::default())
        .await
        .expect("delete manual");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.endpoints("manual").await.is_some());
}
