//! The DaemonSet controller: one pod per Node whose labels match the template's
//! `nodeSelector`, deleted from Nodes that no longer match or are gone, and rolled to a new
//! template with at most `maxUnavailable` (default 1) nodes without an available pod.
//!
//! Upstream creates daemon pods with a node affinity and lets the scheduler bind them; here
//! they are created with `spec.nodeName` set directly (as upstream did before 1.12), which is
//! equivalent while the scheduler models neither taints nor resources. Not modelled: taints and
//! tolerations, node affinity, `maxSurge`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::Pod;

use crate::deployment::scaled;
use crate::model::{
    Action, Kind, PodName, Snapshot, controller_ref, count, is_active, is_available, is_failed,
    is_ready, is_terminating, labels, node_name, pod_from_template, template_hash,
};
use crate::statefulset::REVISION_LABEL;

pub fn reconcile(snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    snapshot
        .daemon_sets
        .iter()
        .flat_map(|d| reconcile_one(d, snapshot, now))
        .collect()
}

/// The daemon pods of one node.
#[derive(Default)]
struct OnNode<'a> {
    eligible: bool,
    /// Not terminating and not finished, oldest first.
    active: Vec<&'a Pod>,
    any: usize,
}

fn reconcile_one(ds: &DaemonSet, snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    let (Some(namespace), Some(name), Some(uid), Some(spec)) = (
        ds.metadata.namespace.as_deref(),
        ds.metadata.name.as_deref(),
        ds.metadata.uid.as_deref(),
        ds.spec.as_ref(),
    ) else {
        return actions;
    };
    let hash = template_hash(&spec.template);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let selector = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.clone())
        .unwrap_or_default();

    let mut nodes: BTreeMap<&str, OnNode> = BTreeMap::new();
    for node in &snapshot.nodes {
        let Some(node_name) = node.metadata.name.as_deref() else {
            continue;
        };
        let node_labels = labels(&node.metadata);
        nodes.entry(node_name).or_default().eligible = node.metadata.deletion_timestamp.is_none()
            && selector.iter().all(|(k, v)| node_labels.get(k) == Some(v));
    }
    let mut pods: Vec<&Pod> = snapshot.pods_controlled_by(namespace, uid).collect();
    pods.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    for pod in pods {
        if is_failed(pod) && !is_terminating(pod) {
            actions.push(Action::delete(Kind::Pod, &pod.metadata));
        }
        let Some(node) = node_name(pod) else { continue };
        let on = nodes.entry(node).or_default();
        on.any += 1;
        if is_active(pod) {
            on.active.push(pod);
        }
    }
    let is_current = |p: &Pod| labels(&p.metadata).get(REVISION_LABEL) == Some(&hash);

    let desired = count(nodes.values().filter(|n| n.eligible).count());
    if ds.metadata.deletion_timestamp.is_none() {
        // RollingUpdate unless OnDelete; without maxSurge, at least one pod must be allowed
        // to go.
        let strategy = spec.update_strategy.as_ref();
        let max_unavailable =
            (strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete")).then(|| {
                scaled(
                    strategy
                        .and_then(|s| s.rolling_update.as_ref())
                        .and_then(|r| r.max_unavailable.as_ref()),
                    "1",
                    desired,
                    true,
                )
                .max(1)
            });
        let mut unavailable = 0;
        let mut outdated_available = Vec::new();
        for (node, on) in &nodes {
            if !on.eligible {
                for pod in &on.active {
                    actions.push(Action::delete(Kind::Pod, &pod.metadata));
                }
                continue;
            }
            match on.active.split_first() {
                None => {
                    unavailable += 1;
                    // Wait for a terminating pod to be gone before replacing it, as upstream.
                    if on.any == 0
                        && let Some(owner) = controller_ref(ds)
                    {
                        let mut pod = pod_from_template(
                            &spec.template,
                            namespace,
                            PodName::Generate(format!("{name}-")),
                            owner,
                            &[(REVISION_LABEL, &hash)],
                        );
                        pod.spec.get_or_insert_default().node_name = Some((*node).to_string());
                        actions.push(Action::CreatePod(Box::new(pod)));
                    }
                }
                Some((keep, extra)) => {
                    for pod in extra {
                        actions.push(Action::delete(Kind::Pod, &pod.metadata));
                    }
                    let available = is_available(keep, min_ready, now);
                    if !available {
                        unavailable += 1;
                    }
                    if max_unavailable.is_some() && !is_current(keep) {
                        if available {
                            outdated_available.push(*keep);
                        } else {
                            // An outdated pod that is not available costs nothing to replace.
                            actions.push(Action::delete(Kind::Pod, &keep.metadata));
                        }
                    }
                }
            }
        }
        let budget = max_unavailable.unwrap_or(0) - unavailable;
        for pod in outdated_available
            .into_iter()
            .take(usize::try_from(budget).unwrap_or(0))
        {
            actions.push(Action::delete(Kind::Pod, &pod.metadata));
        }
    }

    let nodes_with = |eligible: bool, f: &dyn Fn(&Pod) -> bool| {
        count(
            nodes
                .values()
                .filter(|n| n.eligible == eligible)
                .filter(|n| n.active.first().is_some_and(|p| f(p)))
                .count(),
        )
    };
    let available = nodes_with(true, &|p| is_available(p, min_ready, now));
    let status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: nodes_with(true, &|_| true),
        number_misscheduled: nodes_with(false, &|_| true),
        number_ready: nodes_with(true, &|p| is_ready(p)),
        updated_number_scheduled: Some(nodes_with(true, &is_current)),
        number_available: Some(available),
        number_unavailable: Some(desired - available),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    actions.extend(Action::status_if_changed(
        Kind::DaemonSet,
        &ds.metadata,
        ds.status.as_ref(),
        &status,
    ));
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn ds(image: &str) -> DaemonSet {
        let mut t = template("agent", image);
        t.spec.as_mut().expect("spec").node_selector =
            Some([("role".into(), "worker".into())].into());
        DaemonSet {
            metadata: meta("agent", "ds-uid"),
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some([("app".into(), "agent".into())].into()),
                    ..Default::default()
                },
                template: t,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn daemon(d: &DaemonSet, name: &str, node: &str, image: &str, created: i64) -> Pod {
        let mut t = template("agent", image);
        t.spec.as_mut().expect("spec").node_selector =
            Some([("role".into(), "worker".into())].into());
        let hash = template_hash(&t);
        ready(
            pod(
                name,
                d,
                &[("app", "agent"), (REVISION_LABEL, &hash)],
                created,
                Some(node),
            ),
            0,
        )
    }

    fn run(d: &DaemonSet, nodes: &[(&str, &str)], pods: Vec<Pod>) -> Vec<Action> {
        let snap = Snapshot {
            daemon_sets: arcs([d.clone()]),
            nodes: nodes
                .iter()
                .map(|(n, role)| node(n, &[("role", role)]))
                .collect(),
            pods: arcs(pods),
            ..Default::default()
        };
        reconcile(&snap, ts(0))
    }

    #[test]
    fn one_pod_per_matching_node_bound_directly() {
        let d = ds("a:1");
        let actions = run(
            &d,
            &[("n1", "worker"), ("n2", "worker"), ("ctl", "control")],
            vec![daemon(&d, "agent-x", "n1", "a:1", 0)],
        );
        let created = created_pods(&actions);
        assert_eq!(created.len(), 1);
        assert_eq!(node_name(created[0]), Some("n2"));
        assert_eq!(created[0].metadata.generate_name.as_deref(), Some("agent-"));
        let s = status_of(&actions).expect("status");
        assert_eq!(s["desiredNumberScheduled"], 2);
        assert_eq!(s["currentNumberScheduled"], 1);
        assert_eq!(s["numberReady"], 1);
        assert_eq!(s["updatedNumberScheduled"], 1);
        assert_eq!(s["numberUnavailable"], 1);
    }

    #[test]
    fn pods_on_gone_or_unmatched_nodes_and_duplicates_are_deleted() {
        let d = ds("a:1");
        let pods = vec![
            daemon(&d, "on-gone", "gone", "a:1", 0),
            daemon(&d, "on-ctl", "ctl", "a:1", 0),
            daemon(&d, "old", "n1", "a:1", 0),
            daemon(&d, "dup", "n1", "a:1", 5),
        ];
        let actions = run(&d, &[("n1", "worker"), ("ctl", "control")], pods);
        let mut gone = deleted(&actions);
        gone.sort();
        assert_eq!(gone, ["dup", "on-ctl", "on-gone"]);
        assert!(created_pods(&actions).is_empty());
        assert_eq!(
            status_of(&actions).expect("status")["numberMisscheduled"],
            2
        );
    }

    #[test]
    fn rolling_update_keeps_within_max_unavailable() {
        let d = ds("a:2");
        let nodes = [("n1", "worker"), ("n2", "worker"), ("n3", "worker")];
        let old = vec![
            daemon(&d, "p1", "n1", "a:1", 0),
            daemon(&d, "p2", "n2", "a:1", 0),
            daemon(&d, "p3", "n3", "a:1", 0),
        ];
        assert_eq!(deleted(&run(&d, &nodes, old.clone())), ["p1"]);
        // n1's pod is being replaced (terminating): no further deletion, no early create.
        let mut pods = old;
        pods[0] = terminating(pods[0].clone());
        let actions = run(&d, &nodes, pods.clone());
        assert!(deleted(&actions).is_empty() && created_pods(&actions).is_empty());
        // Replacement Ready at the new revision: next one goes.
        pods[0] = daemon(&d, "p1b", "n1", "a:2", 10);
        assert_eq!(deleted(&run(&d, &nodes, pods)), ["p2"]);
    }
}
