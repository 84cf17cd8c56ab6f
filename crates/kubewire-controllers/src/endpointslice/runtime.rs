//! The EndpointSlice loop: reflectors for Services, Pods, Nodes, EndpointSlices and Endpoints;
//! after every change (debounced) the Services whose inputs changed are reconciled
//! ([`slices::reconcile`], [`endpoints::reconcile`]) and their writes sent, creates and updates
//! before deletes. A Service whose writes fail is retried with backoff; a conflict means the
//! cache was behind, and the retry reads the newer object.
//!
//! Which Services to reconcile is found by comparing each kind with the previous round: a
//! changed Service or Endpoints names itself, a slice names its Service by label, a Pod (before
//! and after the change) the Services whose selectors match it, and a Node that appeared, went
//! or changed zone the Services of the Pods on it.
//!
//! Writes are remembered ("in flight") and laid over the cache until the watch shows them, so a
//! reconcile never acts on a view older than its own writes: a slice is never created twice,
//! and an update never starts from the version it replaced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use kubewire_api::labels;
use kubewire_api::selector::Selector;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::endpoints::{self, Change};
use super::{Config, NodeZones, managed_selector, node_name_of, slices, zone_of};
use crate::watch::{Reflected, WatchEnded, at_least, reflect, sleep_until};

/// How long the loop waits after a change for more changes to arrive.
const DEBOUNCE: Duration = Duration::from_millis(20);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a write is laid over the cache at most. The watch normally shows it within
/// milliseconds; this bounds the case where it never does (someone else deleted the object
/// before the watch showed our write).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(30);
/// Services whose writes are sent at the same time.
const CONCURRENT_SERVICES: usize = 8;

/// Namespace and name.
type Key = (String, String);

fn key_of<K: Resource>(object: &K) -> Key {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The caches the controller reads, each kept by its own watch.
struct Inputs {
    services: Reflected<Service>,
    pods: Reflected<Pod>,
    nodes: Reflected<Node>,
    slices: Reflected<EndpointSlice>,
    endpoints: Reflected<Endpoints>,
}

/// Runs the EndpointSlice and Endpoints controllers until the task is dropped. Fails only if a
/// watch ends before its first list.
pub async fn run(client: Client, config: Config) -> Result<(), WatchEnded> {
    let inputs = Inputs {
        services: reflect(
            Api::all(client.clone()),
            "EndpointSlice controller: Service",
        )
        .await?,
        pods: reflect(Api::all(client.clone()), "EndpointSlice controller: Pod").await?,
        nodes: reflect(Api::all(client.clone()), "EndpointSlice controller: Node").await?,
        slices: reflect(
            Api::all(client.clone()),
            "EndpointSlice controller: EndpointSlice",
        )
        .await?,
        endpoints: reflect(
            Api::all(client.clone()),
            "EndpointSlice controller: Endpoints",
        )
        .await?,
    };
    tracing::info!(
        services = inputs.services.store.len(),
        max_endpoints_per_slice = config.max_endpoints_per_slice(),
        "EndpointSlice controller: caches filled"
    );
    let mut controller = Controller {
        client,
        config,
        seen: Seen::default(),
        slices_in_flight: InFlight::default(),
        endpoints_in_flight: InFlight::default(),
        retries: BTreeMap::new(),
    };
    loop {
        let next_retry = controller.sync(&inputs).await;
        tokio::select! {
            () = inputs.services.changed.notified() => {}
            () = inputs.pods.changed.notified() => {}
            () = inputs.nodes.changed.notified() => {}
            () = inputs.slices.changed.notified() => {}
            () = inputs.endpoints.changed.notified() => {}
            () = sleep_until(next_retry) => {}
        }
        // Let a burst of watch events land before the next snapshot.
        tokio::time::sleep(DEBOUNCE).await;
    }
}

struct Controller {
    client: Client,
    config: Config,
    seen: Seen,
    slices_in_flight: InFlight<EndpointSlice>,
    endpoints_in_flight: InFlight<Endpoints>,
    retries: BTreeMap<Key, Retry>,
}

/// A Service whose last writes failed: when to try again, and how long the wait was.
struct Retry {
    delay: Duration,
    at: Instant,
}

/// One round's view: the caches with in-flight writes laid over them, indexed.
struct Snapshot {
    services: BTreeMap<Key, Arc<Service>>,
    pods_by_namespace: BTreeMap<String, Vec<Arc<Pod>>>,
    nodes: NodeZones,
    /// By namespace and the Service named in their `kubernetes.io/service-name` label.
    slices_by_service: BTreeMap<Key, Vec<Arc<EndpointSlice>>>,
    endpoints: BTreeMap<Key, Arc<Endpoints>>,
}

/// Every object of each kind, as the caches hold them at the start of a round.
struct States {
    services: Vec<Arc<Service>>,
    pods: Vec<Arc<Pod>>,
    nodes: Vec<Arc<Node>>,
    slices: Vec<Arc<EndpointSlice>>,
    endpoints: Vec<Arc<Endpoints>>,
}

impl States {
    fn read(inputs: &Inputs) -> States {
        States {
            services: inputs.services.store.state(),
            pods: inputs.pods.store.state(),
            nodes: inputs.nodes.store.state(),
            slices: inputs.slices.store.state(),
            endpoints: inputs.endpoints.store.state(),
        }
    }
}

impl Controller {
    /// Reconciles every Service whose inputs changed or whose retry is due, and sends the
    /// writes. Returns when the next retry is due.
    async fn sync(&mut self, inputs: &Inputs) -> Option<Instant> {
        let now = Instant::now();
        let states = States::read(inputs);
        let snapshot = self.snapshot(&states, now);
        let due = self.due(&states, &snapshot, now);
        let mut plans = Vec::new();
        for key in due {
            let writes = self.plan(&key, &snapshot);
            if writes.is_empty() {
                self.retries.remove(&key);
            } else {
                plans.push((key, writes));
            }
        }
        let outcomes: Vec<(Key, Outcome)> = stream::iter(plans)
            .map(|(key, writes)| {
                let client = self.client.clone();
                async move {
                    let outcome = apply(&client, &key.0, writes).await;
                    (key, outcome)
                }
            })
            .buffer_unordered(CONCURRENT_SERVICES)
            .collect()
            .await;
        let now = Instant::now();
        for (key, outcome) in outcomes {
            self.record(key, outcome, now);
        }
        self.retries.values().map(|r| r.at).min()
    }

    /// The caches with in-flight writes laid over them, indexed for reconciling.
    fn snapshot(&mut self, states: &States, now: Instant) -> Snapshot {
        let mut slices_by_service: BTreeMap<Key, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for slice in self
            .slices_in_flight
            .overlay(&states.slices, now)
            .into_values()
        {
            if let Some(service) = service_label(&slice) {
                let namespace = slice.metadata.namespace.clone().unwrap_or_default();
                slices_by_service
                    .entry((namespace, service))
                    .or_default()
                    .push(slice);
            }
        }
        let mut pods_by_namespace: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in &states.pods {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            pods_by_namespace
                .entry(namespace)
                .or_default()
                .push(pod.clone());
        }
        Snapshot {
            services: states
                .services
                .iter()
                .map(|s| (key_of(&**s), s.clone()))
                .collect(),
            pods_by_namespace,
            nodes: NodeZones::from_nodes(states.nodes.iter().map(Arc::as_ref)),
            slices_by_service,
            endpoints: self.endpoints_in_flight.overlay(&states.endpoints, now),
        }
    }

    /// The Services whose inputs changed since the previous round, and those due a retry.
    fn due(&mut self, states: &States, snapshot: &Snapshot, now: Instant) -> BTreeSet<Key> {
        let seen = &mut self.seen;
        let mut due = BTreeSet::new();
        let services = seen.services.changes(&states.services, same_version);
        due.extend(services.iter().map(|s| key_of(&**s)));
        let endpoints = seen.endpoints.changes(&states.endpoints, same_version);
        due.extend(endpoints.iter().map(|e| key_of(&**e)));
        let slices = seen.slices.changes(&states.slices, same_version);
        due.extend(
            slices
                .iter()
                .filter_map(|s| Some((s.metadata.namespace.clone()?, service_label(s)?))),
        );
        let mut pods = seen.pods.changes(&states.pods, same_version);
        let nodes: BTreeSet<String> = seen
            .nodes
            .changes(&states.nodes, |a, b| zone_of(a) == zone_of(b))
            .iter()
            .map(|n| n.name_any())
            .collect();
        if !nodes.is_empty() {
            pods.extend(
                states
                    .pods
                    .iter()
                    .filter(|p| node_name_of(p).is_some_and(|n| nodes.contains(n)))
                    .cloned(),
            );
        }
        if !pods.is_empty() {
            due.extend(services_selecting(snapshot, &pods));
        }
        due.extend(
            self.retries
                .iter()
                .filter(|(_, r)| r.at <= now)
                .map(|(k, _)| k.clone()),
        );
        due
    }

    /// Lays the writes done over the cache; schedules a retry with backoff after a failure.
    fn record(&mut self, key: Key, outcome: Outcome, now: Instant) {
        for done in outcome.done {
            match done {
                Done::Slice(k, pending) => self.slices_in_flight.record(k, pending, now),
                Done::Endpoints(k, pending) => self.endpoints_in_flight.record(k, pending, now),
            }
        }
        let Some(error) = outcome.error else {
            self.retries.remove(&key);
            return;
        };
        let delay = self
            .retries
            .get(&key)
            .map_or(RETRY_MIN, |r| (r.delay * 2).min(RETRY_MAX));
        tracing::warn!(
            service = %format!("{}/{}", key.0, key.1),
            retry_in = ?delay,
            "EndpointSlice controller: {error}"
        );
        let at = now + delay;
        self.retries.insert(key, Retry { delay, at });
    }

    /// The writes for one Service (or for the Endpoints of one that is gone).
    fn plan(&self, key: &Key, snapshot: &Snapshot) -> Vec<Write> {
        let (namespace, name) = key;
        let service = snapshot.services.get(key).map(Arc::as_ref);
        let pods = snapshot
            .pods_by_namespace
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let pods = || pods.iter().map(Arc::as_ref);
        let (mut creates, mut updates, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(service) = service {
            let existing = snapshot
                .slices_by_service
                .get(key)
                .into_iter()
                .flatten()
                .map(Arc::as_ref);
            let plan = slices::reconcile(service, pods(), &snapshot.nodes, existing, &self.config);
            creates.extend(plan.create.into_iter().map(Write::CreateSlice));
            updates.extend(plan.update.into_iter().map(Write::UpdateSlice));
            deletes.extend(plan.delete.into_iter().map(|s| Write::DeleteSlice {
                name: s.name_any(),
                uid: s.metadata.uid,
            }));
        }
        let existing = snapshot.endpoints.get(key).map(Arc::as_ref);
        match endpoints::reconcile(namespace, name, service, pods(), existing) {
            Some(Change::Create(e)) => creates.push(Write::CreateEndpoints(e)),
            Some(Change::Update(e)) => updates.push(Write::UpdateEndpoints(e)),
            Some(Change::Delete { name, uid, .. }) => {
                deletes.push(Write::DeleteEndpoints { name, uid });
            }
            None => {}
        }
        // Creates and updates first, so consumers never see fewer endpoints in between.
        creates.into_iter().chain(updates).chain(deletes).collect()
    }
}

fn service_label(slice: &EndpointSlice) -> Option<String> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(labels::SERVICE_NAME)
        .cloned()
}

fn same_version<K: Resource>(a: &K, b: &K) -> bool {
    a.meta().resource_version == b.meta().resource_version
}

/// The managed Services whose selectors match any of `pods` (upstream `GetPodServiceMemberships`).
fn services_selecting(snapshot: &Snapshot, pods: &[Arc<Pod>]) -> BTreeSet<Key> {
    let mut selectors: BTreeMap<&str, Vec<(&Key, Selector)>> = BTreeMap::new();
    for (key, service) in &snapshot.services {
        if let Some(selector) = managed_selector(service) {
            selectors
                .entry(key.0.as_str())
                .or_default()
                .push((key, selector));
        }
    }
    let no_labels = BTreeMap::new();
    let mut keys = BTreeSet::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
        for (key, selector) in selectors.get(namespace).into_iter().flatten() {
            if selector.matches(labels) {
                keys.insert((*key).clone());
            }
        }
    }
    keys
}

/// Each kind as the previous round saw it.
#[derive(Default)]
struct Seen {
    services: Previous<Service>,
    pods: Previous<Pod>,
    nodes: Previous<Node>,
    slices: Previous<EndpointSlice>,
    endpoints: Previous<Endpoints>,
}

struct Previous<K> {
    objects: HashMap<Key, Arc<K>>,
}

impl<K> Default for Previous<K> {
    fn default() -> Self {
        Previous {
            objects: HashMap::new(),
        }
    }
}

impl<K: Resource> Previous<K> {
    /// Remembers `now` and returns the objects added, removed or changed since the previous
    /// call (both versions of a changed one); `same` says whether two versions differ in a way
    /// that matters.
    fn changes(&mut self, now: &[Arc<K>], same: impl Fn(&K, &K) -> bool) -> Vec<Arc<K>> {
        let mut changed = Vec::new();
        let mut next = HashMap::with_capacity(now.len());
        for object in now {
            let key = key_of(&**object);
            match self.objects.remove(&key) {
                Some(before) if same(&before, object) => {}
                Some(before) => {
                    changed.push(before);
                    changed.push(object.clone());
                }
                None => changed.push(object.clone()),
            }
            next.insert(key, object.clone());
        }
        changed.extend(self.objects.drain().map(|(_, gone)| gone));
        self.objects = next;
        changed
    }
}

/// A write the watch has not shown yet.
enum Pending<K> {
    Written(Arc<K>),
    Deleted { uid: Option<String> },
}

struct InFlight<K> {
    writes: HashMap<Key, (Instant, Pending<K>)>,
}

impl<K> Default for InFlight<K> {
    fn default() -> Self {
        InFlight {
            writes: HashMap::new(),
        }
    }
}

impl<K: Resource> InFlight<K> {
    fn record(&mut self, key: Key, pending: Pending<K>, now: Instant) {
        self.writes.insert(key, (now, pending));
    }

    /// The cache with the writes it does not show yet laid over it; writes it shows are
    /// forgotten.
    fn overlay(&mut self, cache: &[Arc<K>], now: Instant) -> BTreeMap<Key, Arc<K>> {
        let mut objects: BTreeMap<Key, Arc<K>> =
            cache.iter().map(|o| (key_of(&**o), o.clone())).collect();
        self.writes.retain(|key, (at, pending)| {
            let cached = objects.get(key);
            let shown = match pending {
                Pending::Written(written) => cached.is_some_and(|c| {
                    at_least(
                        c.meta().resource_version.as_deref(),
                        written.meta().resource_version.as_deref(),
                    )
                }),
                Pending::Deleted { uid } => cached.is_none_or(|c| c.meta().uid != *uid),
            };
            let keep = !shown && now.duration_since(*at) < IN_FLIGHT_TTL;
            if keep {
                match pending {
                    Pending::Written(written) => {
                        objects.insert(key.clone(), written.clone());
                    }
                    Pending::Deleted { .. } => {
                        objects.remove(key);
                    }
                }
            }
            keep
        });
        objects
    }
}

#[derive(Debug)]
enum Write {
    CreateSlice(EndpointSlice),
    UpdateSlice(EndpointSlice),
    DeleteSlice { name: String, uid: Option<String> },
    CreateEndpoints(Endpoints),
    UpdateEndpoints(Endpoints),
    DeleteEndpoints { name: String, uid: Option<String> },
}

/// A write that succeeded, to lay over the cache until the watch shows it.
enum Done {
    Slice(Key, Pending<EndpointSlice>),
    Endpoints(Key, Pending<Endpoints>),
}

/// What became of one Service's writes: those done, and the error that stopped the rest.
struct Outcome {
    done: Vec<Done>,
    error: Option<WriteError>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {kind} {name}: {source}")]
struct WriteError {
    action: &'static str,
    kind: &'static str,
    name: String,
    #[source]
    source: kube::Error,
}

/// Sends one Service's writes in order, stopping at the first failure.
async fn apply(client: &Client, namespace: &str, writes: Vec<Write>) -> Outcome {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    let mut done = Vec::new();
    for write in writes {
        tracing::debug!(namespace, ?write, "EndpointSlice controller: write");
        let (action, kind, name, result) = match write {
            Write::CreateSlice(s) => {
                let name = format!("{}*", s.name_any());
                let r = create(&slices, &s).await.map(|(k, p)| Done::Slice(k, p));
                ("create", "EndpointSlice", name, r)
            }
            Write::UpdateSlice(s) => {
                let r = replace(&slices, &s).await.map(|(k, p)| Done::Slice(k, p));
                ("update", "EndpointSlice", s.name_any(), r)
            }
            Write::DeleteSlice { name, uid } => {
                let key = (namespace.to_string(), name.clone());
                let r = delete(&slices, key, uid)
                    .await
                    .map(|(k, p)| Done::Slice(k, p));
                ("delete", "EndpointSlice", name, r)
            }
            Write::CreateEndpoints(e) => {
                let r = create(&endpoints, &e)
                    .await
                    .map(|(k, p)| Done::Endpoints(k, p));
                ("create", "Endpoints", e.name_any(), r)
            }
            Write::UpdateEndpoints(e) => {
                let r = replace(&endpoints, &e)
                    .await
                    .map(|(k, p)| Done::Endpoints(k, p));
                ("update", "Endpoints", e.name_any(), r)
            }
            Write::DeleteEndpoints { name, uid } => {
                let key = (namespace.to_string(), name.clone());
                let r = delete(&endpoints, key, uid)
                    .await
                    .map(|(k, p)| Done::Endpoints(k, p));
                ("delete", "Endpoints", name, r)
            }
        };
        match result {
            Ok(d) => done.push(d),
            Err(source) => {
                let name = format!("{namespace}/{name}");
                let error = WriteError {
                    action,
                    kind,
                    name,
                    source,
                };
                return Outcome {
                    done,
                    error: Some(error),
                };
            }
        }
    }
    Outcome { done, error: None }
}

async fn create<K>(api: &Api<K>, object: &K) -> kube::Result<(Key, Pending<K>)>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let created = api.create(&PostParams::default(), object).await?;
    Ok((key_of(&created), Pending::Written(Arc::new(created))))
}

/// Replaces the object; its resourceVersion makes the write fail on a newer version.
async fn replace<K>(api: &Api<K>, object: &K) -> kube::Result<(Key, Pending<K>)>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let replaced = api
        .replace(&object.name_any(), &PostParams::default(), object)
        .await?;
    Ok((key_of(&replaced), Pending::Written(Arc::new(replaced))))
}

/// Deletes the object if it is still the one planned for (by uid); already gone is done.
async fn delete<K>(api: &Api<K>, key: Key, uid: Option<String>) -> kube::Result<(Key, Pending<K>)>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&key.1, &params).await {
        Ok(_) => Ok((key, Pending::Deleted { uid })),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok((key, Pending::Deleted { uid })),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(name: &str, uid: &str, rv: &str) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv},
                "addressType": "IPv4",
            }))
            .expect("a slice"),
        )
    }

    fn key(name: &str) -> Key {
        ("ns".into(), name.into())
    }

    fn versions(view: &BTreeMap<Key, Arc<EndpointSlice>>) -> Vec<(String, String)> {
        view.iter()
            .map(|(k, s)| {
                (
                    k.1.clone(),
                    s.metadata.resource_version.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn writes_are_seen_until_the_cache_shows_them() {
        let start = Instant::now();
        let mut in_flight = InFlight::default();
        // Created, and an update of an existing slice, neither in the cache yet.
        in_flight.record(
            key("web-new"),
            Pending::Written(slice("web-new", "u1", "10")),
            start,
        );
        in_flight.record(
            key("web-old"),
            Pending::Written(slice("web-old", "u0", "11")),
            start,
        );
        let cache = [slice("web-old", "u0", "5")];
        let view = in_flight.overlay(&cache, start);
        assert_eq!(
            versions(&view),
            vec![
                ("web-new".into(), "10".into()),
                ("web-old".into(), "11".into())
            ]
        );

        // The watch catches up with one (or goes past it): the cache is the truth again.
        let cache = [slice("web-old", "u0", "12")];
        let view = in_flight.overlay(&cache, start);
        assert_eq!(
            versions(&view),
            vec![
                ("web-new".into(), "10".into()),
                ("web-old".into(), "12".into())
            ]
        );
        let cache = [slice("web-new", "u1", "10"), slice("web-old", "u0", "12")];
        in_flight.overlay(&cache, start);
        assert!(in_flight.writes.is_empty());
    }

    #[test]
    fn deletes_hide_the_object_until_the_cache_drops_it() {
        let start = Instant::now();
        let mut in_flight = InFlight::default();
        in_flight.record(
            key("web-a"),
            Pending::Deleted {
                uid: Some("u1".into()),
            },
            start,
        );
        let cache = [slice("web-a", "u1", "3")];
        assert!(in_flight.overlay(&cache, start).is_empty());
        // A new object of the same name is not the one deleted.
        let cache = [slice("web-a", "u2", "4")];
        assert_eq!(in_flight.overlay(&cache, start).len(), 1);
        assert!(in_flight.writes.is_empty());
    }

    #[test]
    fn writes_the_watch_never_shows_are_forgotten_after_a_while() {
        let start = Instant::now();
        let mut in_flight = InFlight::default();
        in_flight.record(
            key("web-x"),
            Pending::Written(slice("web-x", "u1", "10")),
            start,
        );
        assert_eq!(in_flight.overlay(&[], start).len(), 1);
        assert!(in_flight.overlay(&[], start + IN_FLIGHT_TTL).is_empty());
        assert!(in_flight.writes.is_empty());
    }

    #[test]
    fn changes_report_added_changed_and_removed_objects() {
        let mut previous = Previous::default();
        let first = [slice("a", "u1", "1"), slice("b", "u2", "1")];
        assert_eq!(previous.changes(&first, same_version).len(), 2);
        assert!(previous.changes(&first, same_version).is_empty());
        let second = [slice("a", "u1", "2"), slice("c", "u3", "1")];
        let changed: Vec<(String, String)> = previous
            .changes(&second, same_version)
            .iter()
            .map(|s| {
                (
                    s.name_any(),
                    s.metadata.resource_version.clone().unwrap_or_default(),
                )
            })
            .collect();
        // a before and after, c added, b removed.
        assert_eq!(changed.len(), 4);
        for expected in [("a", "1"), ("a", "2"), ("c", "1"), ("b", "1")] {
            assert!(
                changed.contains(&(expected.0.into(), expected.1.into())),
                "{changed:?}"
            );
        }
    }

    #[test]
    fn pods_map_to_the_services_that_select_them() {
        use super::super::fixtures::{pod, service, web};
        let other = service("db", json!({"selector": {"app": "db"}}));
        let manual = service("manual", json!({}));
        let snapshot = Snapshot {
            services: [web(), other, manual]
                .into_iter()
                .map(|s| (key_of(&s), Arc::new(s)))
                .collect(),
            pods_by_namespace: BTreeMap::new(),
            nodes: NodeZones::default(),
            slices_by_service: BTreeMap::new(),
            endpoints: BTreeMap::new(),
        };
        let mut elsewhere = pod("b", "n1", &[]);
        elsewhere.metadata.namespace = Some("other".into());
        let pods = [Arc::new(pod("a", "n1", &[])), Arc::new(elsewhere)];
        assert_eq!(
            services_selecting(&snapshot, &pods),
            BTreeSet::from([key("web")])
        );
    }
}
