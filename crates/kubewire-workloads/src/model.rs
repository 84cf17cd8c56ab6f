//! What every controller here shares: the snapshot it reads, the actions it returns, and the
//! few rules about pods and owners that upstream keeps in `k8s.io/kubernetes/pkg/controller`.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use kubewire_api::selector::Selector;
use serde_json::Value;

/// Every object the controllers read, as the reflectors hold it at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: Vec<Arc<Pod>>,
    pub nodes: Vec<Arc<Node>>,
    pub replica_sets: Vec<Arc<ReplicaSet>>,
    pub deployments: Vec<Arc<Deployment>>,
    pub stateful_sets: Vec<Arc<StatefulSet>>,
    pub daemon_sets: Vec<Arc<DaemonSet>>,
}

impl Snapshot {
    /// The pods in `namespace` whose controller is the object with `uid`.
    pub fn pods_controlled_by<'a>(
        &'a self,
        namespace: &'a str,
        uid: &'a str,
    ) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods
            .iter()
            .map(|p| &**p)
            .filter(move |p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(move |p| controller_uid(&p.metadata) == Some(uid))
    }
}

/// The kinds the controllers write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// One write a reconcile asks for; the runtime performs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreatePod(Box<Pod>),
    CreateReplicaSet(Box<ReplicaSet>),
    /// `POST pods/NAME/binding` with `target.name = node`.
    Bind {
        namespace: String,
        name: String,
        node: String,
    },
    /// Delete with a UID precondition, so a newer object of the same name is never hit.
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
        uid: Option<String>,
    },
    /// A JSON merge patch of the object itself (spec or metadata).
    Patch {
        kind: Kind,
        namespace: String,
        name: String,
        patch: Value,
    },
    /// A JSON merge patch `{"status": status}` of the `status` subresource.
    PatchStatus {
        kind: Kind,
        namespace: String,
        name: String,
        status: Value,
    },
}

impl Action {
    pub(crate) fn delete(kind: Kind, meta: &ObjectMeta) -> Self {
        Action::Delete {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
        }
    }

    pub(crate) fn patch(kind: Kind, meta: &ObjectMeta, patch: Value) -> Self {
        Action::Patch {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            patch,
        }
    }

    /// A status patch, or nothing when `status` already is what the object holds.
    pub(crate) fn status_if_changed<S: serde::Serialize>(
        kind: Kind,
        meta: &ObjectMeta,
        current: Option<&S>,
        status: &S,
    ) -> Option<Self> {
        let new = serde_json::to_value(status).ok()?;
        let old = current.and_then(|c| serde_json::to_value(c).ok());
        (old.as_ref() != Some(&new)).then(|| Action::PatchStatus {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            status: new,
        })
    }
}

/// The owner reference a controller puts on what it creates (`controller: true`,
/// `blockOwnerDeletion: true`), as upstream's `metav1.NewControllerRef`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        block_owner_deletion: Some(true),
        ..owner.controller_owner_ref(&())?
    })
}

/// The UID of the object's controller (the owner reference with `controller: true`).
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// How the name of a new pod is chosen.
pub enum PodName {
    /// `metadata.generateName`: the API server appends 5 random characters, as upstream.
    Generate(String),
    /// A fixed name (StatefulSet ordinals).
    Fixed(String),
}

/// A pod from a workload's template: its labels (plus `extra_labels`), annotations and spec,
/// controlled by `owner` — upstream's `GetPodFromTemplate`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: PodName,
    owner: OwnerReference,
    extra_labels: &[(&str, &str)],
) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    for (k, v) in extra_labels {
        labels.insert((*k).to_string(), (*v).to_string());
    }
    let (name, generate_name) = match name {
        PodName::Generate(prefix) => (None, Some(prefix)),
        PodName::Fixed(name) => (Some(name), None),
    };
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Not terminating and not finished: what counts towards a workload's replicas
/// (upstream `controller.IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !is_terminating(pod) && !matches!(phase(pod), "Succeeded" | "Failed")
}

pub fn is_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// The pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (upstream `podutil.IsPodAvailable`); a Ready
/// condition without a transition time counts as ready long enough.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => true,
        Some(Some(since)) => since + SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now,
    }
}

/// A workload's selector; an unparsable one selects nothing (the API server rejects those).
pub fn selector(sel: &LabelSelector) -> Option<Selector> {
    Selector::from_label_selector(sel)
        .ok()
        .filter(|s| !s.is_everything())
}

/// A count of objects as the `int32` fields of a status hold it.
pub fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// FNV-1a (32 bit) of the template's JSON, rendered in upstream's "safe" alphabet (no vowels,
/// no look-alikes) as `rand.SafeEncodeString` does: the `pod-template-hash` and
/// `controller-revision-hash` values. (Upstream hashes the Go struct dump, so the values differ
/// from a real cluster's; they only need to be stable here.)
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in json {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let digits = h.to_string();
    digits
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

/// Ordering used when picking pods to delete: the ones whose loss hurts least first
/// (upstream `controller.ActivePods` sort): unscheduled, pending, not ready, ready for less
/// time, then newer.
pub fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    fn phase_rank(p: &Pod) -> u8 {
        match phase(p) {
            "Pending" => 0,
            "Unknown" => 1,
            _ => 2,
        }
    }
    let key = |p: &Pod| {
        (
            node_name(p).is_some(),
            phase_rank(p),
            is_ready(p),
            std::cmp::Reverse(ready_since(p).flatten()),
            std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        )
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Object builders for the unit tests.
    use super::*;
    use k8s_openapi::api::core::v1::{Container, NodeCondition, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid timestamp")
    }

    pub fn template(app: &str, image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    pub fn meta(name: &str, uid: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            generation: Some(1),
            creation_timestamp: Some(Time(ts(0))),
            ..Default::default()
        }
    }

    pub fn node(name: &str, labels: &[(&str, &str)]) -> Arc<Node> {
        let mut n = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        n.status.get_or_insert_default().conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        Arc::new(n)
    }

    /// A pod controlled by `owner`, created at `created` seconds, optionally on a node.
    pub fn pod<K: Resource<DynamicType = ()>>(
        name: &str,
        owner: &K,
        labels: &[(&str, &str)],
        created: i64,
        node: Option<&str>,
    ) -> Pod {
        let mut meta = meta(name, &format!("uid-{name}"));
        meta.creation_timestamp = Some(Time(ts(created)));
        meta.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        meta.owner_references = controller_ref(owner).map(|r| vec![r]);
        Pod {
            metadata: meta,
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            }),
        }
    }

    /// Marks a pod Running and Ready since `since` seconds.
    pub fn ready(mut pod: Pod, since: i64) -> Pod {
        let status = pod.status.get_or_insert_default();
        status.phase = Some("Running".into());
        status.conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(ts(since))),
            ..Default::default()
        }]);
        pod
    }

    pub fn terminating(mut pod: Pod) -> Pod {
        pod.metadata.deletion_timestamp = Some(Time(ts(100)));
        pod
    }

    pub fn arcs<T>(items: impl IntoIterator<Item = T>) -> Vec<Arc<T>> {
        items.into_iter().map(Arc::new).collect()
    }

    pub fn created_pods(actions: &[Action]) -> Vec<&Pod> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreatePod(p) => Some(&**p),
                _ => None,
            })
            .collect()
    }

    pub fn deleted(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn status_of(actions: &[Action]) -> Option<&Value> {
        actions.iter().find_map(|a| match a {
            Action::PatchStatus { status, .. } => Some(status),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    #[test]
    fn availability_honours_min_ready_seconds() {
        let rs = ReplicaSet {
            metadata: meta("rs", "rs-uid"),
            ..Default::default()
        };
        let p = ready(pod("p", &rs, &[], 0, Some("n")), 10);
        assert!(is_ready(&p));
        assert!(is_available(&p, 0, ts(10)));
        assert!(!is_available(&p, 5, ts(14)));
        assert!(is_available(&p, 5, ts(15)));
        assert!(!is_available(&pod("q", &rs, &[], 0, None), 0, ts(99)));
    }

    #[test]
    fn pod_from_template_sets_owner_labels_and_name() {
        let rs = ReplicaSet {
            metadata: meta("web-abc", "rs-uid"),
            ..Default::default()
        };
        let owner = controller_ref(&rs).expect("named");
        let p = pod_from_template(
            &template("web", "nginx"),
            "default",
            PodName::Generate("web-abc-".into()),
            owner,
            &[("pod-template-hash", "abc")],
        );
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(controller_uid(&p.metadata), Some("rs-uid"));
        let r = &p.metadata.owner_references.as_ref().expect("refs")[0];
        assert_eq!(r.block_owner_deletion, Some(true));
        assert_eq!(r.kind, "ReplicaSet");
        assert_eq!(labels(&p.metadata)["pod-template-hash"], "abc");
        assert_eq!(labels(&p.metadata)["app"], "web");
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_template() {
        let a = template_hash(&template("web", "nginx:1"));
        assert_eq!(a, template_hash(&template("web", "nginx:1")));
        assert_ne!(a, template_hash(&template("web", "nginx:2")));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn deletion_order_prefers_unscheduled_then_not_ready_then_newest() {
        let rs = ReplicaSet {
            metadata: meta("rs", "rs-uid"),
            ..Default::default()
        };
        let unscheduled = pod("a", &rs, &[], 0, None);
        let not_ready = pod("b", &rs, &[], 0, Some("n"));
        let ready_new = ready(pod("c", &rs, &[], 5, Some("n")), 50);
        let ready_old = ready(pod("d", &rs, &[], 0, Some("n")), 10);
        let mut pods = [&ready_old, &ready_new, &not_ready, &unscheduled];
        pods.sort_by(|a, b| deletion_order(a, b));
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }
}
