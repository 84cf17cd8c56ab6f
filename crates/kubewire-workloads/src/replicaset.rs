//! The ReplicaSet controller: keeps `spec.replicas` active pods that match the selector and
//! are controlled by the ReplicaSet, and reports their state in `status`. Not modelled:
//! adoption of orphan pods and release of pods that stop matching (upstream's
//! `ClaimPods`), slow-start batching of creates.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;

use crate::model::{
    Action, Kind, PodName, Snapshot, controller_ref, count, deletion_order, is_active,
    is_available, is_ready, labels, pod_from_template, selector,
};

pub fn reconcile(snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    snapshot
        .replica_sets
        .iter()
        .flat_map(|rs| reconcile_one(rs, snapshot, now))
        .collect()
}

fn reconcile_one(rs: &ReplicaSet, snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    let (Some(namespace), Some(name), Some(uid), Some(spec)) = (
        rs.metadata.namespace.as_deref(),
        rs.metadata.name.as_deref(),
        rs.metadata.uid.as_deref(),
        rs.spec.as_ref(),
    ) else {
        return actions;
    };
    let Some(sel) = selector(&spec.selector) else {
        return actions;
    };
    let mut pods: Vec<&Pod> = snapshot
        .pods_controlled_by(namespace, uid)
        .filter(|p| is_active(p) && sel.matches(&labels(&p.metadata)))
        .collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    if rs.metadata.deletion_timestamp.is_none() {
        if pods.len() < want
            && let (Some(template), Some(owner)) = (spec.template.as_ref(), controller_ref(rs))
        {
            for _ in pods.len()..want {
                actions.push(Action::CreatePod(Box::new(pod_from_template(
                    template,
                    namespace,
                    PodName::Generate(format!("{name}-")),
                    owner.clone(),
                    &[],
                ))));
            }
        } else if pods.len() > want {
            pods.sort_by(|a, b| deletion_order(a, b));
            for pod in &pods[..pods.len() - want] {
                actions.push(Action::delete(Kind::Pod, &pod.metadata));
            }
        }
    }

    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .map(labels)
        .unwrap_or_default();
    let pods_that = |f: &dyn Fn(&Pod) -> bool| count(pods.iter().filter(|p| f(p)).count());
    let status = ReplicaSetStatus {
        replicas: pods_that(&|_| true),
        fully_labeled_replicas: Some(pods_that(&|p| {
            let l = labels(&p.metadata);
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })),
        ready_replicas: Some(pods_that(&|p| is_ready(p))),
        available_replicas: Some(pods_that(&|p| is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    actions.extend(Action::status_if_changed(
        Kind::ReplicaSet,
        &rs.metadata,
        rs.status.as_ref(),
        &status,
    ));
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::controller_uid;
    use crate::model::testing::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: meta("web", "rs-uid"),
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".into(), "web".into())].into()),
                    ..Default::default()
                },
                template: Some(template("web", "nginx")),
                min_ready_seconds: None,
            }),
            status: None,
        }
    }

    fn snap(rs: &ReplicaSet, pods: Vec<Pod>) -> Snapshot {
        Snapshot {
            pods: arcs(pods),
            replica_sets: arcs([rs.clone()]),
            ..Default::default()
        }
    }

    #[test]
    fn scales_up_from_template_with_generated_names() {
        let r = rs(3);
        let existing = pod("web-aaaaa", &r, &[("app", "web")], 0, None);
        let actions = reconcile(&snap(&r, vec![existing]), ts(0));
        let created = created_pods(&actions);
        assert_eq!(created.len(), 2);
        for p in created {
            assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
            assert_eq!(controller_uid(&p.metadata), Some("rs-uid"));
            assert_eq!(labels(&p.metadata)["app"], "web");
        }
        let status = status_of(&actions).expect("status");
        assert_eq!(status["replicas"], 1);
        assert_eq!(status["observedGeneration"], 1);
    }

    #[test]
    fn ignores_terminating_foreign_and_unmatched_pods() {
        let r = rs(2);
        let other = rs(1);
        let mut other_owner = other.clone();
        other_owner.metadata.uid = Some("other".into());
        let pods = vec![
            terminating(pod("t", &r, &[("app", "web")], 0, Some("n"))),
            pod("foreign", &other_owner, &[("app", "web")], 0, None),
            pod("unmatched", &r, &[("app", "db")], 0, None),
        ];
        assert_eq!(created_pods(&reconcile(&snap(&r, pods), ts(0))).len(), 2);
    }

    #[test]
    fn scales_down_preferring_unscheduled_not_ready_newest() {
        let r = rs(1);
        let l = [("app", "web")];
        let pods = vec![
            ready(pod("old-ready", &r, &l, 0, Some("n")), 1),
            ready(pod("new-ready", &r, &l, 5, Some("n")), 6),
            pod("not-ready", &r, &l, 0, Some("n")),
            pod("unscheduled", &r, &l, 0, None),
        ];
        let actions = reconcile(&snap(&r, pods), ts(10));
        assert_eq!(deleted(&actions), ["unscheduled", "not-ready", "new-ready"]);
    }

    #[test]
    fn status_counts_ready_available_and_labels() {
        let mut r = rs(3);
        r.spec.as_mut().expect("spec").min_ready_seconds = Some(10);
        let pods = vec![
            ready(pod("a", &r, &[("app", "web")], 0, Some("n")), 0),
            ready(pod("b", &r, &[("app", "web")], 0, Some("n")), 5),
            pod("c", &r, &[("app", "web")], 0, Some("n")),
        ];
        let actions = reconcile(&snap(&r, pods), ts(12));
        assert!(created_pods(&actions).is_empty() && deleted(&actions).is_empty());
        let s = status_of(&actions).expect("status");
        assert_eq!(s["replicas"], 3);
        assert_eq!(s["readyReplicas"], 2);
        assert_eq!(s["availableReplicas"], 1);
        assert_eq!(s["fullyLabeledReplicas"], 3);
    }

    #[test]
    fn unchanged_status_is_not_patched() {
        let mut r = rs(0);
        r.status = Some(ReplicaSetStatus {
            replicas: 0,
            fully_labeled_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            observed_generation: Some(1),
            ..Default::default()
        });
        assert!(reconcile(&snap(&r, vec![]), ts(0)).is_empty());
    }
}
