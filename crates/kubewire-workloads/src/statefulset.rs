//! The StatefulSet controller: pods `<sts>-0 … <sts>-N-1` with stable names, `hostname` and
//! `subdomain` (the governing Service), created in order and each only once the one before is
//! Running and Ready (`OrderedReady`), or all at once (`Parallel`); scaled down from the
//! highest ordinal; rolled to a new template by deleting and recreating pods from the highest
//! ordinal down to `partition`, one at a time, each once the others are Ready (upstream
//! `pkg/controller/statefulset/stateful_set_control.go`). The revision is the
//! `controller-revision-hash` label; no ControllerRevision objects and no
//! `volumeClaimTemplates` (PVCs) are made.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;

use crate::model::{
    Action, Kind, PodName, Snapshot, controller_ref, count, is_active, is_available, is_failed,
    is_ready, is_terminating, labels, pod_from_template, template_hash,
};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const REVISION_LABEL: &str = "controller-revision-hash";

pub fn reconcile(snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    snapshot
        .stateful_sets
        .iter()
        .flat_map(|s| reconcile_one(s, snapshot, now))
        .collect()
}

fn revision(pod: &Pod) -> Option<String> {
    labels(&pod.metadata).get(REVISION_LABEL).cloned()
}

fn running_and_ready(pod: &Pod) -> bool {
    is_active(pod)
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && is_ready(pod)
}

fn reconcile_one(sts: &StatefulSet, snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    let (Some(namespace), Some(name), Some(uid), Some(spec)) = (
        sts.metadata.namespace.as_deref(),
        sts.metadata.name.as_deref(),
        sts.metadata.uid.as_deref(),
        sts.spec.as_ref(),
    ) else {
        return actions;
    };
    let replicas = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let update_revision = format!("{name}-{}", template_hash(&spec.template));
    let prefix = format!("{name}-");
    let pods: BTreeMap<usize, &Pod> = snapshot
        .pods_controlled_by(namespace, uid)
        .filter_map(|p| {
            let ordinal = p.metadata.name.as_deref()?.strip_prefix(&prefix)?;
            Some((ordinal.parse().ok()?, p))
        })
        .collect();

    if sts.metadata.deletion_timestamp.is_none() {
        manage(
            sts,
            &pods,
            replicas,
            parallel,
            &update_revision,
            &mut actions,
        );
    }

    let active: Vec<&Pod> = pods.values().copied().filter(|p| is_active(p)).collect();
    let pods_that = |f: &dyn Fn(&Pod) -> bool| count(active.iter().filter(|p| f(p)).count());
    let old = sts.status.as_ref();
    let previous_current = old
        .and_then(|s| s.current_revision.clone())
        .unwrap_or_else(|| update_revision.clone());
    let updated = pods_that(&|p| revision(p).as_deref() == Some(update_revision.as_str()));
    let ready = pods_that(&|p| is_ready(p));
    let all_updated = usize::try_from(updated).ok() == Some(replicas) && active.len() == replicas;
    let current_revision = if all_updated {
        update_revision.clone()
    } else {
        previous_current
    };
    let status = StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        replicas: pods_that(&|_| true),
        ready_replicas: Some(ready),
        available_replicas: Some(pods_that(&|p| {
            is_available(p, spec.min_ready_seconds.unwrap_or(0), now)
        })),
        current_replicas: Some(pods_that(&|p| {
            revision(p).as_deref() == Some(current_revision.as_str())
        })),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision),
        collision_count: old.and_then(|s| s.collision_count),
        conditions: old.and_then(|s| s.conditions.clone()),
    };
    actions.extend(Action::status_if_changed(
        Kind::StatefulSet,
        &sts.metadata,
        sts.status.as_ref(),
        &status,
    ));
    actions
}

/// Creates, deletes and replaces pods; in `OrderedReady` it stops at the first pod that is
/// not Running and Ready, as upstream's "monotonic" mode does.
fn manage(
    sts: &StatefulSet,
    pods: &BTreeMap<usize, &Pod>,
    replicas: usize,
    parallel: bool,
    update_revision: &str,
    actions: &mut Vec<Action>,
) {
    let Some(spec) = sts.spec.as_ref() else {
        return;
    };
    let namespace = sts.metadata.namespace.as_deref().unwrap_or_default();
    let name = sts.metadata.name.as_deref().unwrap_or_default();
    // Failed pods are deleted, to be recreated once gone.
    for pod in pods.values().filter(|p| is_failed(p) && !is_terminating(p)) {
        actions.push(Action::delete(Kind::Pod, &pod.metadata));
    }
    let mut healthy = true;
    for ordinal in 0..replicas {
        match pods.get(&ordinal) {
            None => {
                let pod_name = format!("{name}-{ordinal}");
                let Some(owner) = controller_ref(sts) else {
                    return;
                };
                let index = ordinal.to_string();
                let mut pod = pod_from_template(
                    &spec.template,
                    namespace,
                    PodName::Fixed(pod_name.clone()),
                    owner,
                    &[
                        (POD_NAME_LABEL, &pod_name),
                        (POD_INDEX_LABEL, &index),
                        (REVISION_LABEL, update_revision),
                    ],
                );
                let pod_spec = pod.spec.get_or_insert_default();
                pod_spec.hostname = Some(pod_name);
                pod_spec.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
                actions.push(Action::CreatePod(Box::new(pod)));
                healthy = false;
            }
            Some(pod) => healthy &= running_and_ready(pod),
        }
        if !healthy && !parallel {
            return;
        }
    }

    // Scale down, highest ordinal first.
    let condemned: Vec<&Pod> = pods.range(replicas..).rev().map(|(_, p)| *p).collect();
    for pod in condemned.iter().filter(|p| !is_failed(p)) {
        if is_terminating(pod) {
            if parallel {
                continue;
            }
            return;
        }
        if !parallel && !healthy {
            return;
        }
        actions.push(Action::delete(Kind::Pod, &pod.metadata));
        if !parallel {
            return;
        }
    }
    if !condemned.is_empty() || !healthy {
        return;
    }

    // Rolling update: one pod at a time, from the highest ordinal down to the partition.
    let strategy = spec.update_strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return;
    }
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(0);
    if pods.range(..replicas).any(|(_, p)| !running_and_ready(p)) {
        return;
    }
    if let Some((_, outdated)) = pods
        .range(partition.min(replicas)..replicas)
        .rev()
        .find(|(_, p)| revision(p).as_deref() != Some(update_revision))
    {
        actions.push(Action::delete(Kind::Pod, &outdated.metadata));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn sts(replicas: i32, image: &str, parallel: bool) -> StatefulSet {
        StatefulSet {
            metadata: meta("web", "sts-uid"),
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some("nginx".into()),
                pod_management_policy: parallel.then(|| "Parallel".into()),
                selector: LabelSelector {
                    match_labels: Some([("app".into(), "web".into())].into()),
                    ..Default::default()
                },
                template: template("web", image),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Pod `web-i` of `s` at the revision of `image`, Ready or not.
    fn member(s: &StatefulSet, i: usize, image: &str, is_ready: bool) -> Pod {
        let rev = format!("web-{}", template_hash(&template("web", image)));
        let p = pod(
            &format!("web-{i}"),
            s,
            &[("app", "web"), (REVISION_LABEL, &rev)],
            0,
            Some("n"),
        );
        if is_ready { ready(p, 0) } else { p }
    }

    fn run(s: &StatefulSet, pods: Vec<Pod>) -> Vec<Action> {
        let snap = Snapshot {
            stateful_sets: arcs([s.clone()]),
            pods: arcs(pods),
            ..Default::default()
        };
        reconcile(&snap, ts(0))
    }

    fn created_names(actions: &[Action]) -> Vec<String> {
        created_pods(actions)
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_with_stable_identity() {
        let s = sts(3, "nginx", false);
        let actions = run(&s, vec![]);
        assert_eq!(created_names(&actions), ["web-0"]);
        let p = created_pods(&actions)[0];
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("web-0"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let l = labels(&p.metadata);
        assert_eq!(l[POD_NAME_LABEL], "web-0");
        assert_eq!(l[POD_INDEX_LABEL], "0");
        assert!(l[REVISION_LABEL].starts_with("web-"));

        assert!(created_names(&run(&s, vec![member(&s, 0, "nginx", false)])).is_empty());
        assert_eq!(
            created_names(&run(&s, vec![member(&s, 0, "nginx", true)])),
            ["web-1"]
        );
    }

    #[test]
    fn parallel_creates_all_at_once() {
        let s = sts(3, "nginx", true);
        assert_eq!(created_names(&run(&s, vec![])), ["web-0", "web-1", "web-2"]);
    }

    #[test]
    fn scales_down_from_the_highest_ordinal_one_at_a_time() {
        let s = sts(1, "nginx", false);
        let pods: Vec<Pod> = (0..3).map(|i| member(&s, i, "nginx", true)).collect();
        assert_eq!(deleted(&run(&s, pods.clone())), ["web-2"]);
        let mut pods = pods;
        pods[2] = terminating(pods[2].clone());
        assert!(deleted(&run(&s, pods)).is_empty());
    }

    #[test]
    fn rolling_update_replaces_from_the_highest_ordinal_when_all_are_ready() {
        let s = sts(3, "nginx:2", false);
        let old: Vec<Pod> = (0..3).map(|i| member(&s, i, "nginx:1", true)).collect();
        assert_eq!(deleted(&run(&s, old.clone())), ["web-2"]);
        // web-2 recreated at the new revision but not ready: wait.
        let mut pods = old.clone();
        pods[2] = member(&s, 2, "nginx:2", false);
        assert!(deleted(&run(&s, pods.clone())).is_empty());
        pods[2] = member(&s, 2, "nginx:2", true);
        assert_eq!(deleted(&run(&s, pods)), ["web-1"]);

        // A partition keeps lower ordinals at the old revision.
        let mut s = s;
        s.spec.as_mut().expect("spec").update_strategy =
            Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(
                    k8s_openapi::api::apps::v1::RollingUpdateStatefulSetStrategy {
                        partition: Some(2),
                        max_unavailable: None,
                    },
                ),
            });
        let mut pods = old;
        pods[2] = member(&s, 2, "nginx:2", true);
        assert!(deleted(&run(&s, pods)).is_empty());
    }

    #[test]
    fn status_tracks_revisions() {
        let s = sts(2, "nginx:2", false);
        let pods = vec![
            member(&s, 0, "nginx:1", true),
            member(&s, 1, "nginx:2", false),
        ];
        let actions = run(&s, pods);
        let st = status_of(&actions).expect("status");
        assert_eq!(st["replicas"], 2);
        assert_eq!(st["readyReplicas"], 1);
        assert_eq!(st["updatedReplicas"], 1);
        let update = format!("web-{}", template_hash(&template("web", "nginx:2")));
        assert_eq!(st["updateRevision"], update.as_str());
    }
}
