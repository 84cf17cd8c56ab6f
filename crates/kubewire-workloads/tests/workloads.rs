//! The scheduler and workload controllers against the real in-process API server. No kubelet
//! exists yet, so a test-side "kubelet" marks bound pods Running and Ready after a delay and
//! finishes the deletion of terminating pods (delete with grace 0), as the real one would.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kubewire_apiserver::testing::TestServer;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const TIMEOUT: Duration = Duration::from_secs(60);

struct Harness {
    client: kube::Client,
    /// The controllers, the test kubelet and samplers; dropped (aborted) with the harness.
    tasks: JoinSet<()>,
    _server: TestServer,
}

async fn start() -> Harness {
    let server = TestServer::start().await;
    let mut tasks = JoinSet::new();
    let client = kubewire_api::client::from_kubeconfig(&server.kubeconfig)
        .await
        .expect("client");
    let c = client.clone();
    tasks.spawn(async move {
        kubewire_workloads::run(c, std::future::pending())
            .await
            .expect("controllers run");
    });
    Harness {
        client,
        tasks,
        _server: server,
    }
}

impl Harness {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn add_node(&self, name: &str, labels: Value) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                    .expect("node"),
            )
            .await
            .expect("create node");
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "allocatable": {"pods": "110"},
                }})),
            )
            .await
            .expect("node ready");
    }

    async fn create<K>(&self, body: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(body).expect("object");
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create")
    }

    async fn patch<K>(&self, name: &str, patch: Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("patch");
    }

    async fn pods(&self) -> Vec<Pod> {
        self.api::<Pod>()
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
    }

    /// Live (not terminating) pods.
    async fn live_pods(&self) -> Vec<Pod> {
        self.pods()
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Starts the test kubelet: bound pods become Running and Ready `delay` after it first
    /// sees them; terminating pods are deleted with grace 0.
    fn kubelet(&mut self, delay: Duration) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        self.tasks.spawn(async move {
            let mut first_seen: HashMap<String, tokio::time::Instant> = HashMap::new();
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for pod in list.items {
                        let (Some(ns), Some(name), Some(uid)) = (
                            pod.metadata.namespace.clone(),
                            pod.metadata.name.clone(),
                            pod.metadata.uid.clone(),
                        ) else {
                            continue;
                        };
                        let api: Api<Pod> = Api::namespaced(pods.clone().into_client(), &ns);
                        if pod.metadata.deletion_timestamp.is_some() {
                            let _ = api
                                .delete(&name, &DeleteParams::default().grace_period(0))
                                .await;
                            continue;
                        }
                        let bound = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_ref())
                            .is_some();
                        if !bound || ready(&pod) {
                            continue;
                        }
                        let seen = *first_seen
                            .entry(uid)
                            .or_insert_with(tokio::time::Instant::now);
                        if seen.elapsed() >= delay {
                            let now =
                                jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
                                    .expect("now");
                            let _ = api
                                .patch_status(
                                    &name,
                                    &PatchParams::default(),
                                    &Patch::Merge(json!({"status": {
                                        "phase": "Running",
                                        "conditions": [{"type": "Ready", "status": "True",
                                                        "lastTransitionTime": now.to_string()}],
                                    }})),
                                )
                                .await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// Calls `check` with the namespace's pods at every change a watch reports (each a state
    /// the server really had), until the harness is dropped.
    fn sample(&mut self, mut check: impl FnMut(&[Arc<Pod>]) + Send + 'static) {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(
            writer,
            watcher(self.api::<Pod>(), watcher::Config::default()),
        )
        .default_backoff();
        self.tasks.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut listed = false;
            while let Some(event) = stream.next().await {
                listed |= matches!(event, Ok(watcher::Event::InitDone));
                if listed && event.is_ok() {
                    check(&store.state());
                }
            }
        });
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Polls `f` until it returns `Some`, or panics after [`TIMEOUT`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bare_pod(name: &str, node_selector: Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"nodeSelector": node_selector,
                 "containers": [{"name": "app", "image": "kubewire/serve"}]},
    })
}

fn template(app: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    })
}

fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods {
        if let Some(n) = node_of(p) {
            *m.entry(n).or_default() += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_spreads_pods_evenly() {
    let h = start().await;
    for n in ["n1", "n2", "n3"] {
        h.add_node(n, json!({})).await;
    }
    for i in 0..30 {
        h.create::<Pod>(bare_pod(&format!("p{i}"), json!({}))).await;
    }
    let pods = eventually("30 pods bound", || async {
        let pods = h.pods().await;
        pods.iter().all(|p| node_of(p).is_some()).then_some(pods)
    })
    .await;
    let counts: Vec<usize> = per_node(&pods).into_values().collect();
    assert_eq!(counts, [10, 10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_honours_selector_cordon_and_waits_for_a_fitting_node() {
    let h = start().await;
    h.add_node("plain", json!({})).await;
    h.add_node("ssd", json!({"disk": "ssd"})).await;
    h.add_node("cordoned", json!({"disk": "ssd", "zone": "z9"}))
        .await;
    h.patch_node_unschedulable("cordoned").await;

    h.create::<Pod>(bare_pod("wants-ssd", json!({"disk": "ssd"})))
        .await;
    h.create::<Pod>(bare_pod("wants-z9", json!({"zone": "z9"})))
        .await;
    let api = h.api::<Pod>();
    let node = eventually("wants-ssd bound", || async {
        node_of(&api.get("wants-ssd").await.ok()?)
    })
    .await;
    assert_eq!(node, "ssd");

    // Only the cordoned node has zone=z9: the pod stays pending, marked Unschedulable.
    let reason = eventually("wants-z9 marked unschedulable", || async {
        let pod = api.get("wants-z9").await.ok()?;
        assert_eq!(node_of(&pod), None);
        pod.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
            .reason
    })
    .await;
    assert_eq!(reason, "Unschedulable");

    h.add_node("z9-new", json!({"zone": "z9"})).await;
    let node = eventually("wants-z9 bound once a node fits", || async {
        node_of(&api.get("wants-z9").await.ok()?)
    })
    .await;
    assert_eq!(node, "z9-new");
}

impl Harness {
    async fn patch_node_unschedulable(&self, name: &str) {
        Api::<Node>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .expect("cordon");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_scales_up_and_down() {
    let mut h = start().await;
    h.add_node("n1", json!({})).await;
    h.add_node("n2", json!({})).await;
    h.kubelet(Duration::ZERO);
    h.create::<ReplicaSet>(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": template("web", "nginx")},
    }))
    .await;
    let rs_api = h.api::<ReplicaSet>();
    for want in [3, 5, 1, 0, 2] {
        h.patch::<ReplicaSet>("web", json!({"spec": {"replicas": want}}))
            .await;
        eventually(&format!("{want} ready replicas"), || async {
            let pods = h.live_pods().await;
            let rs = rs_api.get("web").await.ok()?;
            let status = rs.status?;
            (pods.len() == want
                && pods
                    .iter()
                    .all(|p| ready(p) && name_of(p).starts_with("web-") && name_of(p).len() == 9)
                && status.replicas == i32::try_from(want).ok()?
                && status.ready_replicas.unwrap_or(0) == i32::try_from(want).ok()?
                && status.available_replicas.unwrap_or(0) == i32::try_from(want).ok()?)
            .then_some(())
        })
        .await;
    }
}

/// Waits until the Deployment has rolled out completely.
async fn rolled_out(h: &Harness, name: &str, replicas: i32) -> Deployment {
    let api = h.api::<Deployment>();
    eventually(&format!("deployment {name} rolled out"), || async {
        let d = api.get(name).await.ok()?;
        let s = d.status.clone()?;
        (s.observed_generation == d.metadata.generation
            && s.replicas == Some(replicas)
            && s.updated_replicas == Some(replicas)
            && s.available_replicas == Some(replicas)
            && h.live_pods().await.len() == usize::try_from(replicas).ok()?)
        .then_some(d)
    })
    .await
}

fn hash_of(pod: &Pod) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()?
        .get("pod-template-hash")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolling_update_respects_surge_and_unavailability() {
    let mut h = start().await;
    for n in ["n1", "n2", "n3"] {
        h.add_node(n, json!({})).await;
    }
    h.kubelet(Duration::from_millis(300));
    let replicas = 6;
    h.create::<Deployment>(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template("web", "nginx:1"),
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "34%"}},
        },
    }))
    .await;
    let d = rolled_out(&h, "web", replicas).await;
    let annotations = d.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations["deployment.kubernetes.io/revision"], "1");
    let rs = h
        .api::<ReplicaSet>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(rs.len(), 1);
    let old_hash = hash_of(&h.live_pods().await[0]).expect("hash");
    assert_eq!(
        rs[0].metadata.name.as_deref(),
        Some(format!("web-{old_hash}").as_str())
    );

    // 34% of 6 rounds down to 2 unavailable; surge 1.
    let (max_unavailable, max_surge) = (2, 1);
    let samples = Arc::new(Mutex::new((0usize, i32::MAX, 0i32)));
    let s = samples.clone();
    h.sample(move |pods| {
        let live: Vec<_> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let available = i32::try_from(live.iter().filter(|p| ready(p)).count()).unwrap_or(0);
        let total = i32::try_from(live.len()).unwrap_or(0);
        let mut s = s.lock().expect("lock");
        s.0 += 1;
        s.1 = s.1.min(available);
        s.2 = s.2.max(total);
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.patch::<Deployment>(
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}}),
    )
    .await;
    let d = rolled_out(&h, "web", replicas).await;
    // Wait for the last old pods to be gone too.
    let pods = eventually("only new pods left", || async {
        let pods = h.pods().await;
        (pods.len() == 6 && pods.iter().all(|p| hash_of(p) != Some(old_hash.clone())))
            .then_some(pods)
    })
    .await;
    let annotations = d.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations["deployment.kubernetes.io/revision"], "2");
    let new_hash = hash_of(&pods[0]).expect("hash");
    let rs_api = h.api::<ReplicaSet>();
    let old = rs_api
        .get(&format!("web-{old_hash}"))
        .await
        .expect("old rs");
    assert_eq!(old.spec.and_then(|s| s.replicas), Some(0));
    let new = rs_api
        .get(&format!("web-{new_hash}"))
        .await
        .expect("new rs");
    assert_eq!(new.spec.and_then(|s| s.replicas), Some(replicas));
    let conditions = d.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    );
    let (events, min_available, max_total) = *samples.lock().expect("lock");
    eprintln!("rollout: {events} states, min available {min_available}, max pods {max_total}");
    assert!(events > 10, "the sampler saw the rollout ({events} events)");
    assert!(
        min_available >= replicas - max_unavailable,
        "available pods dropped to {min_available}"
    );
    assert!(
        max_total <= replicas + max_surge,
        "pods rose to {max_total}"
    );

    h.quiesces().await;
}

impl Harness {
    /// Once converged the controllers write nothing more (no status ping-pong): nothing
    /// changes over a period longer than their resync.
    async fn quiesces(&self) {
        eventually("the controllers to quiesce", || async {
            let versions = self.resource_versions().await;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            (versions == self.resource_versions().await).then_some(())
        })
        .await;
    }

    /// The resourceVersion of every workload object and pod in the namespace.
    async fn resource_versions(&self) -> BTreeMap<String, String> {
        let lp = ListParams::default();
        let mut m = BTreeMap::new();
        let rv = |kind: &str, meta: &kube::api::ObjectMeta| {
            (
                format!("{kind}/{}", meta.name.clone().unwrap_or_default()),
                meta.resource_version.clone().unwrap_or_default(),
            )
        };
        for p in self.api::<Pod>().list(&lp).await.expect("pods").items {
            m.extend([rv("pod", &p.metadata)]);
        }
        for r in self.api::<ReplicaSet>().list(&lp).await.expect("rs").items {
            m.extend([rv("rs", &r.metadata)]);
        }
        for d in self
            .api::<Deployment>()
            .list(&lp)
            .await
            .expect("deploy")
            .items
        {
            m.extend([rv("deploy", &d.metadata)]);
        }
        m
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_recreate_replaces_all_pods_at_once() {
    let mut h = start().await;
    h.add_node("n1", json!({})).await;
    h.kubelet(Duration::from_millis(100));
    h.create::<Deployment>(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "db"}},
            "template": template("db", "postgres:1"),
            "strategy": {"type": "Recreate"},
        },
    }))
    .await;
    rolled_out(&h, "db", 3).await;
    let old_hash = hash_of(&h.live_pods().await[0]).expect("hash");
    let mixed = Arc::new(Mutex::new((0usize, false)));
    let m = mixed.clone();
    let old = old_hash.clone();
    h.sample(move |pods| {
        let old_pods = pods.iter().any(|p| hash_of(p).as_ref() == Some(&old));
        let new_pods = pods.iter().any(|p| hash_of(p).as_ref() != Some(&old));
        let mut m = m.lock().expect("lock");
        m.0 += 1;
        m.1 |= old_pods && new_pods;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.patch::<Deployment>(
        "db",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "postgres:2"}]}}}}),
    )
    .await;
    rolled_out(&h, "db", 3).await;
    eventually("only new pods", || async {
        let pods = h.pods().await;
        (pods.len() == 3 && pods.iter().all(|p| hash_of(p) != Some(old_hash.clone()))).then_some(())
    })
    .await;
    let (events, seen_mixed) = *mixed.lock().expect("lock");
    assert!(events > 5, "the sampler saw the rollout ({events} events)");
    assert!(!seen_mixed, "old and new pods existed at the same time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_creates_in_order_and_scales_down_from_the_top() {
    let mut h = start().await;
    h.add_node("n1", json!({})).await;
    h.add_node("n2", json!({})).await;
    h.kubelet(Duration::from_millis(300));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let (v, o) = (violations.clone(), order.clone());
    h.sample(move |pods| {
        let by_name: BTreeMap<String, &Pod> = pods.iter().map(|p| (name_of(p), &**p)).collect();
        let mut order = o.lock().expect("lock");
        for name in by_name.keys() {
            if !order.contains(name) {
                order.push(name.clone());
            }
        }
        // web-(i+1) may exist only once web-i is Ready (while scaling up).
        for i in 1..3 {
            if by_name.contains_key(&format!("web-{i}"))
                && by_name
                    .get(&format!("web-{}", i - 1))
                    .is_none_or(|p| !ready(p))
            {
                v.lock()
                    .expect("lock")
                    .push(format!("web-{i} before web-{} ready", i - 1));
            }
        }
    });
    h.create::<StatefulSet>(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "serviceName": "nginx",
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": template("web", "nginx")},
    }))
    .await;
    let api = h.api::<StatefulSet>();
    eventually("3 ready replicas", || async {
        let s = api.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(3) && s.replicas == 3).then_some(())
    })
    .await;
    assert_eq!(*order.lock().expect("lock"), ["web-0", "web-1", "web-2"]);
    assert!(
        violations.lock().expect("lock").is_empty(),
        "{:?}",
        violations.lock().expect("lock")
    );
    for pod in h.live_pods().await {
        let name = name_of(&pod);
        let spec = pod.spec.clone().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], name);
        assert!(labels.contains_key("controller-revision-hash"));
    }

    // Scale down: web-2 goes before web-1.
    let gone_order = Arc::new(Mutex::new(Vec::<String>::new()));
    let g = gone_order.clone();
    h.sample(move |pods| {
        let mut g = g.lock().expect("lock");
        for p in pods {
            if p.metadata.deletion_timestamp.is_some() && !g.contains(&name_of(p)) {
                g.push(name_of(p));
            }
        }
        for name in ["web-1", "web-2"] {
            if !pods.iter().any(|p| name_of(p) == name) && !g.iter().any(|n| n == name) {
                g.push(name.to_string());
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.patch::<StatefulSet>("web", json!({"spec": {"replicas": 1}}))
        .await;
    eventually("one pod left", || async {
        let pods = h.pods().await;
        (pods.len() == 1 && name_of(&pods[0]) == "web-0").then_some(())
    })
    .await;
    assert_eq!(*gone_order.lock().expect("lock"), ["web-2", "web-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_node_and_follows_nodes() {
    let mut h = start().await;
    h.add_node("n1", json!({"role": "worker"})).await;
    h.add_node("n2", json!({"role": "worker"})).await;
    h.add_node("ctl", json!({"role": "control"})).await;
    h.kubelet(Duration::from_millis(100));
    h.create::<DaemonSet>(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {
                     "metadata": {"labels": {"app": "agent"}},
                     "spec": {"nodeSelector": {"role": "worker"},
                              "containers": [{"name": "app", "image": "agent:1"}]}}},
    }))
    .await;
    let api = h.api::<DaemonSet>();
    let on_nodes = |want: &'static [&'static str]| {
        let h = &h;
        let api = api.clone();
        async move {
            eventually(&format!("daemon pods on {want:?}"), || async {
                let pods = h.pods().await;
                let mut nodes: Vec<String> = pods.iter().filter_map(node_of).collect();
                nodes.sort();
                let s = api.get("agent").await.ok()?.status?;
                let n = i32::try_from(want.len()).ok()?;
                (nodes == want
                    && pods.iter().all(ready)
                    && s.desired_number_scheduled == n
                    && s.current_number_scheduled == n
                    && s.number_ready == n
                    && s.number_available == Some(n)
                    && s.updated_number_scheduled == Some(n))
                .then_some(())
            })
            .await;
        }
    };
    on_nodes(&["n1", "n2"]).await;
    h.add_node("n3", json!({"role": "worker"})).await;
    on_nodes(&["n1", "n2", "n3"]).await;
    Api::<Node>::all(h.client.clone())
        .delete("n2", &DeleteParams::default())
        .await
        .expect("delete node");
    on_nodes(&["n1", "n3"]).await;
    // A node that stops matching loses its pod.
    Api::<Node>::all(h.client.clone())
        .patch(
            "n3",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "control"}}})),
        )
        .await
        .expect("relabel");
    on_nodes(&["n1"]).await;
}

fn label(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(key).cloned()
}

/// Records, from every state the watch shows, the order in which pods start terminating, and
/// the fewest live Ready pods seen.
fn track_replacements(h: &mut Harness) -> Arc<Mutex<(Vec<String>, usize)>> {
    let seen = Arc::new(Mutex::new((Vec::<String>::new(), usize::MAX)));
    let s = seen.clone();
    let mut terminating = std::collections::HashSet::new();
    h.sample(move |pods| {
        let mut s = s.lock().expect("lock");
        for p in pods {
            if p.metadata.deletion_timestamp.is_some()
                && terminating.insert(p.metadata.uid.clone().unwrap_or_default())
            {
                s.0.push(name_of(p));
            }
        }
        let ready_live = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .count();
        s.1 = s.1.min(ready_live);
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_rolls_a_new_template_from_the_highest_ordinal() {
    let mut h = start().await;
    h.add_node("n1", json!({})).await;
    h.kubelet(Duration::from_millis(200));
    h.create::<StatefulSet>(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db",
                 "selector": {"matchLabels": {"app": "db"}},
                 "template": template("db", "postgres:1")},
    }))
    .await;
    let api = h.api::<StatefulSet>();
    eventually("3 ready replicas", || async {
        let s = api.get("db").await.ok()?.status?;
        (s.ready_replicas == Some(3)).then_some(())
    })
    .await;
    let seen = track_replacements(&mut h);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.patch::<StatefulSet>(
        "db",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "postgres:2"}]}}}}),
    )
    .await;
    let status = eventually("all pods updated", || async {
        let sts = api.get("db").await.ok()?;
        let s = sts.status?;
        (s.observed_generation == sts.metadata.generation
            && s.updated_replicas == Some(3)
            && s.ready_replicas == Some(3)
            && s.current_revision == s.update_revision
            && h.pods().await.len() == 3)
            .then_some(s)
    })
    .await;
    let update = status.update_revision.expect("update revision");
    for pod in h.pods().await {
        assert_eq!(
            label(&pod, "controller-revision-hash"),
            Some(update.clone())
        );
    }
    let (order, min_ready) = seen.lock().expect("lock").clone();
    assert_eq!(order, ["db-2", "db-1", "db-0"]);
    assert!(
        min_ready >= 2,
        "one pod at a time (ready dropped to {min_ready})"
    );
    h.quiesces().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_rolling_update_replaces_one_node_at_a_time() {
    let mut h = start().await;
    for n in ["n1", "n2", "n3"] {
        h.add_node(n, json!({})).await;
    }
    h.kubelet(Duration::from_millis(200));
    h.create::<DaemonSet>(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": template("agent", "agent:1")},
    }))
    .await;
    let api = h.api::<DaemonSet>();
    eventually("3 available daemon pods", || async {
        let s = api.get("agent").await.ok()?.status?;
        (s.number_available == Some(3)).then_some(())
    })
    .await;
    let old_hash = label(&h.pods().await[0], "controller-revision-hash");
    let seen = track_replacements(&mut h);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.patch::<DaemonSet>(
        "agent",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "agent:2"}]}}}}),
    )
    .await;
    eventually("all daemon pods updated", || async {
        let s = api.get("agent").await.ok()?.status?;
        let pods = h.pods().await;
        (s.updated_number_scheduled == Some(3)
            && s.number_available == Some(3)
            && pods.len() == 3
            && pods
                .iter()
                .all(|p| label(p, "controller-revision-hash") != old_hash))
        .then_some(())
    })
    .await;
    let (order, min_ready) = seen.lock().expect("lock").clone();
    assert_eq!(order.len(), 3, "{order:?}");
    assert!(
        min_ready >= 2,
        "maxUnavailable 1 (ready dropped to {min_ready})"
    );
    let mut nodes: Vec<String> = h.pods().await.iter().filter_map(node_of).collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    h.quiesces().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_of_100_replicas_becomes_available() {
    let mut h = start().await;
    for n in ["n1", "n2", "n3"] {
        h.add_node(n, json!({})).await;
    }
    h.kubelet(Duration::ZERO);
    let started = tokio::time::Instant::now();
    h.create::<Deployment>(json!({
        "metadata": {"name": "big"},
        "spec": {"replicas": 100, "selector": {"matchLabels": {"app": "big"}},
                 "template": template("big", "kubewire/serve")},
    }))
    .await;
    rolled_out(&h, "big", 100).await;
    eprintln!("100 replicas available after {:?}", started.elapsed());
    let counts: Vec<usize> = per_node(&h.live_pods().await).into_values().collect();
    assert_eq!(counts.iter().sum::<usize>(), 100);
    assert!(counts.iter().all(|c| (33..=34).contains(c)), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_when_shutdown_completes() {
    let h = start().await;
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        kubewire_workloads::run(
            h.client.clone(),
            tokio::time::sleep(Duration::from_millis(200)),
        ),
    )
    .await;
    assert!(matches!(stopped, Ok(Ok(()))));
}
