//! The thin side: one reflector per kind shared by every controller, a loop per controller that
//! reconciles after changes (debounced, and once a second for time-based rules such as
//! `minReadySeconds`), applies the actions, and waits until the cache shows its own writes so
//! that the next reconcile never acts on a view older than what it did (the job upstream's
//! "expectations" do).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::Error;
use crate::model::{Action, Kind, Snapshot, node_name};

/// How long a loop waits after a change for more changes to arrive.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How often a loop reconciles without any change (time-based rules, failed writes).
const RESYNC: Duration = Duration::from_secs(1);
/// How long a loop waits for the cache to show its writes before going on regardless.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes of one reconcile in flight at once.
const CONCURRENT_WRITES: usize = 16;
const FIELD_MANAGER: &str = "kubewire-workloads";

/// A controller's pure reconcile.
pub type Reconcile = fn(&Snapshot, Timestamp) -> Vec<Action>;

/// The reflector stores of every kind the controllers read.
pub struct Cache {
    pods: Store<Pod>,
    nodes: Store<Node>,
    replica_sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    daemon_sets: Store<DaemonSet>,
}

/// Starts a watch of `K` cluster-wide into a store, waking every subscriber on each event.
fn reflect<K>(
    client: &Client,
    subscribers: &Arc<Vec<Arc<Notify>>>,
    tasks: &mut JoinSet<()>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff();
    let subscribers = subscribers.clone();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(kind = %K::kind(&()), "watch: {e}");
            }
            for s in subscribers.iter() {
                s.notify_one();
            }
        }
    });
    store
}

async fn ready<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> Result<(), Error> {
    store
        .wait_until_ready()
        .await
        .map_err(|_| Error::WatchEnded(K::kind(&()).into_owned()))
}

impl Cache {
    /// Starts the reflectors (their tasks go into `tasks`) and waits for their first lists.
    pub async fn start(
        client: &Client,
        subscribers: Arc<Vec<Arc<Notify>>>,
        tasks: &mut JoinSet<()>,
    ) -> Result<Self, Error> {
        let cache = Cache {
            pods: reflect(client, &subscribers, tasks),
            nodes: reflect(client, &subscribers, tasks),
            replica_sets: reflect(client, &subscribers, tasks),
            deployments: reflect(client, &subscribers, tasks),
            stateful_sets: reflect(client, &subscribers, tasks),
            daemon_sets: reflect(client, &subscribers, tasks),
        };
        ready(&cache.pods).await?;
        ready(&cache.nodes).await?;
        ready(&cache.replica_sets).await?;
        ready(&cache.deployments).await?;
        ready(&cache.stateful_sets).await?;
        ready(&cache.daemon_sets).await?;
        Ok(cache)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pods: self.pods.state(),
            nodes: self.nodes.state(),
            replica_sets: self.replica_sets.state(),
            deployments: self.deployments.state(),
            stateful_sets: self.stateful_sets.state(),
            daemon_sets: self.daemon_sets.state(),
        }
    }

    fn with_meta<T>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&ObjectMeta) -> T,
    ) -> Option<T> {
        fn get<K: Resource<DynamicType = ()> + Clone, T>(
            store: &Store<K>,
            namespace: &str,
            name: &str,
            f: impl FnOnce(&ObjectMeta) -> T,
        ) -> Option<T> {
            store
                .get(&ObjectRef::new(name).within(namespace))
                .map(|o| f(o.meta()))
        }
        match kind {
            Kind::Pod => get(&self.pods, namespace, name, f),
            Kind::ReplicaSet => get(&self.replica_sets, namespace, name, f),
            Kind::Deployment => get(&self.deployments, namespace, name, f),
            Kind::StatefulSet => get(&self.stateful_sets, namespace, name, f),
            Kind::DaemonSet => get(&self.daemon_sets, namespace, name, f),
        }
    }

    fn observed(&self, e: &Expect) -> bool {
        match e {
            Expect::Seen {
                kind,
                namespace,
                name,
                resource_version,
            } => self
                .with_meta(*kind, namespace, name, |m| {
                    // Our API server's (and etcd's) resourceVersions are increasing integers;
                    // anything else counts as seen once the object is there.
                    let seen = m
                        .resource_version
                        .as_deref()
                        .and_then(|v| v.parse::<u64>().ok());
                    match (seen, resource_version) {
                        (Some(seen), Some(want)) => seen >= *want,
                        _ => true,
                    }
                })
                .unwrap_or(false),
            Expect::Gone {
                kind,
                namespace,
                name,
                uid,
            } => self
                .with_meta(*kind, namespace, name, |m| {
                    m.deletion_timestamp.is_some() || m.uid != *uid
                })
                .unwrap_or(true),
            Expect::Bound { namespace, name } => self
                .pods
                .get(&ObjectRef::new(name).within(namespace))
                .is_some_and(|p| node_name(&p).is_some()),
        }
    }
}

/// What the cache must show once a write is observed.
enum Expect {
    Seen {
        kind: Kind,
        namespace: String,
        name: String,
        resource_version: Option<u64>,
    },
    Gone {
        kind: Kind,
        namespace: String,
        name: String,
        uid: Option<String>,
    },
    Bound {
        namespace: String,
        name: String,
    },
}

fn seen<K: Resource>(kind: Kind, obj: &K) -> Expect {
    let m = obj.meta();
    Expect::Seen {
        kind,
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        resource_version: m.resource_version.as_deref().and_then(|v| v.parse().ok()),
    }
}

/// Runs one controller until its task is dropped.
pub async fn control_loop(
    name: &'static str,
    reconcile: Reconcile,
    cache: Arc<Cache>,
    client: Client,
    wake: Arc<Notify>,
) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
        let actions = reconcile(&cache.snapshot(), Timestamp::now());
        if actions.is_empty() {
            continue;
        }
        let expects: Vec<Expect> = stream::iter(actions)
            .map(|action| {
                let client = client.clone();
                async move {
                    tracing::debug!(controller = name, ?action, "apply");
                    match apply(&client, &action).await {
                        Ok(expect) => expect,
                        Err(e) => {
                            tracing::warn!(controller = name, ?action, "write failed: {e}");
                            None
                        }
                    }
                }
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let deadline = tokio::time::Instant::now() + OBSERVE_TIMEOUT;
        while !expects.iter().all(|e| cache.observed(e)) {
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(controller = name, "cache did not show all writes in time");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Conflicts on create and bind (someone was first) and 404 on delete (already gone) are the
/// normal outcome of acting on a cache, not failures.
fn tolerate(
    result: Result<Expect, kube::Error>,
    tolerated: u16,
) -> Result<Option<Expect>, kube::Error> {
    match result {
        Ok(e) => Ok(Some(e)),
        Err(kube::Error::Api(s)) if s.code == tolerated => Ok(None),
        Err(e) => Err(e),
    }
}

async fn apply(client: &Client, action: &Action) -> Result<Option<Expect>, kube::Error> {
    match action {
        Action::CreatePod(pod) => tolerate(create(client, Kind::Pod, &**pod).await, 409),
        Action::CreateReplicaSet(rs) => {
            tolerate(create(client, Kind::ReplicaSet, &**rs).await, 409)
        }
        Action::Bind {
            namespace,
            name,
            node,
        } => {
            let body = json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let bound = Api::<Pod>::namespaced(client.clone(), namespace)
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    name,
                    &PostParams::default(),
                    &body,
                )
                .await
                .map(|_| Expect::Bound {
                    namespace: namespace.clone(),
                    name: name.clone(),
                });
            tolerate(bound, 409)
        }
        Action::Delete {
            kind,
            namespace,
            name,
            uid,
        } => {
            let params = DeleteParams {
                preconditions: uid.clone().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let deleted = match kind {
                Kind::Pod => delete::<Pod>(client, namespace, name, &params).await,
                Kind::ReplicaSet => delete::<ReplicaSet>(client, namespace, name, &params).await,
                Kind::Deployment => delete::<Deployment>(client, namespace, name, &params).await,
                Kind::StatefulSet => delete::<StatefulSet>(client, namespace, name, &params).await,
                Kind::DaemonSet => delete::<DaemonSet>(client, namespace, name, &params).await,
            }
            .map(|()| Expect::Gone {
                kind: *kind,
                namespace: namespace.clone(),
                name: name.clone(),
                uid: uid.clone(),
            });
            tolerate(deleted, 404)
        }
        Action::Patch {
            kind,
            namespace,
            name,
            patch,
        } => patch_any(client, *kind, namespace, name, false, patch)
            .await
            .map(Some),
        Action::PatchStatus {
            kind,
            namespace,
            name,
            status,
        } => patch_any(
            client,
            *kind,
            namespace,
            name,
            true,
            &json!({ "status": status }),
        )
        .await
        .map(Some),
    }
}

async fn create<K>(client: &Client, kind: Kind, obj: &K) -> Result<Expect, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let namespace = obj.meta().namespace.as_deref().unwrap_or("default");
    let created = Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), obj)
        .await?;
    Ok(seen(kind, &created))
}

async fn delete<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &DeleteParams,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .delete(name, params)
        .await
        .map(|_| ())
}

async fn patch_any(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    status: bool,
    patch: &serde_json::Value,
) -> Result<Expect, kube::Error> {
    async fn go<K>(
        client: &Client,
        kind: Kind,
        namespace: &str,
        name: &str,
        status: bool,
        patch: &serde_json::Value,
    ) -> Result<Expect, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api = Api::<K>::namespaced(client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(patch);
        let obj = if status {
            api.patch_status(name, &params, &patch).await?
        } else {
            api.patch(name, &params, &patch).await?
        };
        Ok(seen(kind, &obj))
    }
    match kind {
        Kind::Pod => go::<Pod>(client, kind, namespace, name, status, patch).await,
        Kind::ReplicaSet => go::<ReplicaSet>(client, kind, namespace, name, status, patch).await,
        Kind::Deployment => go::<Deployment>(client, kind, namespace, name, status, patch).await,
        Kind::StatefulSet => go::<StatefulSet>(client, kind, namespace, name, status, patch).await,
        Kind::DaemonSet => go::<DaemonSet>(client, kind, namespace, name, status, patch).await,
    }
}
