//! The scheduler: binds each pending pod to a Ready, schedulable Node whose labels match the
//! pod's `nodeSelector` and that has room (`status.allocatable.pods`), spreading pods over the
//! nodes (fewest pods first, ties by name). Not modelled: resource requests, taints and
//! tolerations, affinity, topology spread constraints, preemption.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use crate::model::{Action, Kind, Snapshot, is_terminating, labels, node_name};

pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Pods a node takes when its `status.allocatable.pods` is absent (the kubelet's default).
const DEFAULT_MAX_PODS: usize = 110;

/// Whether this scheduler is responsible for the pod and it still needs a node.
fn is_pending(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    node_name(pod).is_none()
        && !is_terminating(pod)
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|s| s.is_empty() || s == DEFAULT_SCHEDULER)
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn is_schedulable(node: &Node) -> bool {
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && !unschedulable && node.metadata.deletion_timestamp.is_none()
}

fn max_pods(node: &Node) -> usize {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("pods"))
        .and_then(|q| q.0.parse().ok())
        .unwrap_or(DEFAULT_MAX_PODS)
}

/// Binds every pending pod it can (oldest first) and marks the rest `PodScheduled=False`.
pub fn reconcile(snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    // Pods on each node: everything bound that has not finished (terminating pods still hold
    // their place until the kubelet removes them).
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for pod in &snapshot.pods {
        if let Some(node) = node_name(pod)
            && !matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        {
            *load.entry(node).or_default() += 1;
        }
    }
    let nodes: Vec<(&str, &Node, usize)> = snapshot
        .nodes
        .iter()
        .filter(|n| is_schedulable(n))
        .filter_map(|n| Some((n.metadata.name.as_deref()?, &**n, max_pods(n))))
        .collect();

    let mut pending: Vec<&Pod> = snapshot
        .pods
        .iter()
        .map(|p| &**p)
        .filter(|p| is_pending(p))
        .collect();
    pending.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });

    let mut actions = Vec::new();
    for pod in pending {
        let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
        let mut fitting = 0;
        let mut full = 0;
        let mut best: Option<(usize, &str)> = None;
        for (name, node, max) in &nodes {
            let node_labels = labels(&node.metadata);
            let matches = selector
                .into_iter()
                .flatten()
                .all(|(k, v)| node_labels.get(k) == Some(v));
            if !matches {
                continue;
            }
            fitting += 1;
            let count = load.get(name).copied().unwrap_or(0);
            if count >= *max {
                full += 1;
                continue;
            }
            if best.is_none_or(|b| (count, *name) < b) {
                best = Some((count, name));
            }
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        match best {
            Some((_, node)) => {
                *load.entry(node).or_default() += 1;
                actions.push(Action::Bind {
                    namespace,
                    name,
                    node: node.to_string(),
                });
            }
            None => {
                let message = format!(
                    "0/{} nodes are available: {} node(s) were not ready, schedulable and matching the pod's node selector, {full} node(s) had too many pods.",
                    snapshot.nodes.len(),
                    snapshot.nodes.len().saturating_sub(fitting),
                );
                if let Some(action) = unschedulable(pod, namespace, name, message, now) {
                    actions.push(action);
                }
            }
        }
    }
    actions
}

/// The status patch that records `PodScheduled=False/Unschedulable`, unless already recorded.
fn unschedulable(
    pod: &Pod,
    namespace: String,
    name: String,
    message: String,
    now: Timestamp,
) -> Option<Action> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let existing = conditions.iter().position(|c| c.type_ == "PodScheduled");
    if let Some(i) = existing {
        let c = &conditions[i];
        if c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message.as_str())
        {
            return None;
        }
        conditions.remove(i);
    }
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    });
    Some(Action::PatchStatus {
        kind: Kind::Pod,
        namespace,
        name,
        status: json!({ "phase": "Pending", "conditions": conditions }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::sync::Arc;

    fn rs() -> ReplicaSet {
        ReplicaSet {
            metadata: meta("rs", "rs-uid"),
            ..Default::default()
        }
    }

    fn binds(actions: &[Action]) -> Vec<(&str, &str)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Bind { name, node, .. } => Some((name.as_str(), node.as_str())),
                _ => None,
            })
            .collect()
    }

    fn pending(names: &[&str]) -> Vec<Pod> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| pod(n, &rs(), &[], i as i64, None))
            .collect()
    }

    #[test]
    fn spreads_over_nodes_fewest_first_ties_by_name() {
        let mut pods = pending(&["p0", "p1", "p2", "p3", "p4"]);
        pods.push(pod("bound", &rs(), &[], 0, Some("a")));
        let snap = Snapshot {
            pods: arcs(pods),
            nodes: vec![node("b", &[]), node("a", &[]), node("c", &[])],
            ..Default::default()
        };
        let actions = reconcile(&snap, ts(0));
        assert_eq!(
            binds(&actions),
            [
                ("p0", "b"),
                ("p1", "c"),
                ("p2", "a"),
                ("p3", "b"),
                ("p4", "c")
            ]
        );
    }

    #[test]
    fn honours_node_selector_unschedulable_not_ready_and_capacity() {
        let mut p = pod("sel", &rs(), &[], 0, None);
        p.spec.get_or_insert_default().node_selector = Some([("disk".into(), "ssd".into())].into());
        let mut cordoned = (*node("cordoned", &[("disk", "ssd")])).clone();
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let mut not_ready = (*node("notready", &[("disk", "ssd")])).clone();
        not_ready.status = Some(NodeStatus::default());
        let mut full = (*node("full", &[("disk", "ssd")])).clone();
        full.status.get_or_insert_default().allocatable =
            Some([("pods".into(), Quantity("1".into()))].into());
        let occupant = pod("occupant", &rs(), &[], 0, Some("full"));
        let snap = Snapshot {
            pods: arcs([p.clone(), occupant.clone()]),
            nodes: vec![
                node("plain", &[]),
                Arc::new(cordoned),
                Arc::new(not_ready),
                Arc::new(full),
            ],
            ..Default::default()
        };
        let actions = reconcile(&snap, ts(0));
        assert!(binds(&actions).is_empty());
        let status = status_of(&actions).expect("unschedulable condition");
        assert_eq!(status["conditions"][0]["reason"], "Unschedulable");
        assert_eq!(status["conditions"][0]["status"], "False");

        // Recorded already: no second patch.
        let mut recorded = p.clone();
        recorded.status.get_or_insert_default().conditions =
            Some(serde_json::from_value(status["conditions"].clone()).expect("conditions"));
        let snap2 = Snapshot {
            pods: arcs([recorded, occupant]),
            ..snap.clone()
        };
        assert!(reconcile(&snap2, ts(0)).is_empty());

        // A matching node appears: the pod is bound there.
        let mut nodes = snap.nodes.clone();
        nodes.push(node("ssd1", &[("disk", "ssd")]));
        let snap3 = Snapshot { nodes, ..snap };
        assert_eq!(binds(&reconcile(&snap3, ts(0))), [("sel", "ssd1")]);
    }

    #[test]
    fn skips_bound_terminating_and_foreign_scheduler_pods() {
        let mut foreign = pod("foreign", &rs(), &[], 0, None);
        foreign.spec.get_or_insert_default().scheduler_name = Some("other".into());
        let snap = Snapshot {
            pods: arcs([
                foreign,
                terminating(pod("gone", &rs(), &[], 0, None)),
                pod("bound", &rs(), &[], 0, Some("a")),
            ]),
            nodes: vec![node("a", &[])],
            ..Default::default()
        };
        assert!(reconcile(&snap, ts(0)).is_empty());
    }
}
