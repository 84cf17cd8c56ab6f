//! The Deployment controller: one ReplicaSet per pod template (`<deployment>-<hash>`, with the
//! `pod-template-hash` label added to its selector and template), rolled from old to new as
//! `RollingUpdate` (`maxSurge`/`maxUnavailable`) or `Recreate` says, old ReplicaSets pruned to
//! `revisionHistoryLimit`, and the Deployment's status and revision annotation kept current.
//! The algorithm is upstream's (`pkg/controller/deployment/rolling.go`, `recreate.go`); where
//! upstream reads ReplicaSet status, this reads the pods themselves so that a status not yet
//! written can never let a rollout dip below `maxUnavailable` or above `maxSurge`. Not
//! modelled: proportional scaling of several live ReplicaSets, progress deadlines, rollback
//! via annotations, hash collision counting.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use crate::model::{
    Action, Kind, Snapshot, controller_ref, controller_uid, count, is_active, is_available,
    is_ready, template_hash,
};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

pub fn reconcile(snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    snapshot
        .deployments
        .iter()
        .flat_map(|d| reconcile_one(d, snapshot, now))
        .collect()
}

/// A ReplicaSet of the deployment as the rollout sees it.
struct Owned<'a> {
    rs: &'a ReplicaSet,
    /// `spec.replicas`, updated as this reconcile scales it.
    replicas: i32,
    /// Pods not terminating, and of those Ready, and available for `minReadySeconds`.
    active: i32,
    ready: i32,
    available: i32,
    /// Pods in any state, terminating ones included.
    any: usize,
    revision: i64,
}

impl Owned<'_> {
    /// Available pods the ReplicaSet will keep: it deletes unavailable pods first.
    fn effective_available(&self) -> i32 {
        self.available.min(self.replicas)
    }
    /// Pods the ReplicaSet has or will have.
    fn effective_pods(&self) -> i32 {
        self.active.max(self.replicas)
    }
    fn scale(&mut self, replicas: i32, actions: &mut Vec<Action>) {
        if replicas != self.replicas {
            self.replicas = replicas;
            actions.push(Action::patch(
                Kind::ReplicaSet,
                &self.rs.metadata,
                json!({"spec": {"replicas": replicas}}),
            ));
        }
    }
}

fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// An `IntOrString` of a rolling update scaled against `total`, as upstream's
/// `intstr.GetScaledValueFromIntOrPercent` (percentages round up or down as told).
pub fn scaled(value: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let s = match value {
        Some(IntOrString::Int(i)) => return (*i).max(0),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let Some(pct) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return s.parse::<i32>().unwrap_or(0).max(0);
    };
    let product = pct.max(0) * i64::from(total.max(0));
    let value = if round_up {
        (product + 99) / 100
    } else {
        product / 100
    };
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// `(maxSurge, maxUnavailable)` for `replicas`: surge rounds up, unavailable rounds down, and
/// both zero becomes an unavailable of one (upstream `ResolveFenceposts`).
pub fn fenceposts(d: &Deployment, replicas: i32) -> (i32, i32) {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(
        rolling.and_then(|r| r.max_surge.as_ref()),
        "25%",
        replicas,
        true,
    );
    let unavailable = scaled(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(replicas))
    }
}

fn reconcile_one(d: &Deployment, snapshot: &Snapshot, now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    let (Some(namespace), Some(uid), Some(spec)) = (
        d.metadata.namespace.as_deref(),
        d.metadata.uid.as_deref(),
        d.spec.as_ref(),
    ) else {
        return actions;
    };
    if d.metadata.deletion_timestamp.is_some() {
        return actions;
    }
    let replicas = spec.replicas.unwrap_or(1);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let hash = template_hash(&spec.template);

    let mut owned: Vec<Owned> = snapshot
        .replica_sets
        .iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(namespace))
        .filter(|rs| controller_uid(&rs.metadata) == Some(uid))
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .map(|rs| {
            let pods: Vec<_> = rs
                .metadata
                .uid
                .as_deref()
                .map(|u| snapshot.pods_controlled_by(namespace, u).collect())
                .unwrap_or_default();
            let active: Vec<_> = pods.iter().filter(|p| is_active(p)).collect();
            Owned {
                rs,
                replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                active: count(active.len()),
                ready: count(active.iter().filter(|p| is_ready(p)).count()),
                available: count(
                    active
                        .iter()
                        .filter(|p| is_available(p, min_ready, now))
                        .count(),
                ),
                any: pods.len(),
                revision: revision(&rs.metadata),
            }
        })
        .collect();
    // Oldest first: the order upstream scales old ReplicaSets down in.
    owned.sort_by_key(|o| (o.revision, o.rs.metadata.creation_timestamp.clone()));
    let new_index = owned.iter().position(|o| {
        o.rs.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH))
            == Some(&hash)
    });
    let max_old_revision = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_index)
        .map(|(_, o)| o.revision)
        .max()
        .unwrap_or(0);
    let new_revision = match new_index {
        Some(i) if owned[i].revision > max_old_revision => owned[i].revision,
        _ => max_old_revision + 1,
    };
    if let Some(i) = new_index
        && owned[i].revision != new_revision
    {
        actions.push(Action::patch(
            Kind::ReplicaSet,
            &owned[i].rs.metadata,
            json!({"metadata": {"annotations": {REVISION: new_revision.to_string()}}}),
        ));
    }

    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (max_surge, max_unavailable) = if recreate {
        (0, 0)
    } else {
        fenceposts(d, replicas)
    };

    let mut rollout = Rollout {
        d,
        owned,
        new: new_index,
        replicas,
        hash,
        revision: new_revision,
        actions,
    };
    if !spec.paused.unwrap_or(false) {
        if recreate {
            rollout.recreate();
        } else {
            rollout.rolling(max_surge, max_unavailable);
        }
        rollout.cleanup(spec.revision_history_limit);
    }
    let Rollout {
        owned, mut actions, ..
    } = rollout;

    if revision(&d.metadata) != new_revision {
        actions.push(Action::patch(
            Kind::Deployment,
            &d.metadata,
            json!({"metadata": {"annotations": {REVISION: new_revision.to_string()}}}),
        ));
    }
    let status = status(d, &owned, new_index, replicas, max_unavailable, now);
    actions.extend(Action::status_if_changed(
        Kind::Deployment,
        &d.metadata,
        d.status.as_ref(),
        &status,
    ));
    actions
}

/// The new ReplicaSet for the deployment's current template.
fn new_replica_set(d: &Deployment, hash: &str, revision: i64, replicas: i32) -> Option<ReplicaSet> {
    let spec = d.spec.as_ref()?;
    let name = d.metadata.name.as_deref()?;
    let mut template = spec.template.clone();
    let tmeta = template.metadata.get_or_insert_default();
    tmeta
        .labels
        .get_or_insert_default()
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_default()
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    Some(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels: tmeta.labels.clone(),
            annotations: Some(BTreeMap::from([(REVISION.into(), revision.to_string())])),
            owner_references: Some(vec![controller_ref(d)?]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    })
}

/// One Deployment's ReplicaSets and the actions decided on them so far.
struct Rollout<'a> {
    d: &'a Deployment,
    /// Oldest revision first.
    owned: Vec<Owned<'a>>,
    /// The ReplicaSet of the current template, if it exists.
    new: Option<usize>,
    replicas: i32,
    hash: String,
    revision: i64,
    actions: Vec<Action>,
}

impl<'a> Rollout<'a> {
    fn olds(&mut self) -> impl Iterator<Item = &mut Owned<'a>> {
        let new = self.new;
        self.owned
            .iter_mut()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != new)
            .map(|(_, o)| o)
    }

    fn create_new(&mut self, replicas: i32) {
        if let Some(rs) = new_replica_set(self.d, &self.hash, self.revision, replicas) {
            self.actions.push(Action::CreateReplicaSet(Box::new(rs)));
        }
    }

    /// `Recreate`: old ReplicaSets to zero, wait until their pods are all gone, then the new
    /// one.
    fn recreate(&mut self) {
        let mut old_pods = 0;
        let mut actions = Vec::new();
        for o in self.olds() {
            o.scale(0, &mut actions);
            old_pods += o.any;
        }
        self.actions.append(&mut actions);
        if old_pods > 0 {
            return;
        }
        match self.new {
            Some(i) => self.owned[i].scale(self.replicas, &mut self.actions),
            None => self.create_new(self.replicas),
        }
    }

    /// `RollingUpdate`: scale the new ReplicaSet up within `maxSurge`; if it did not grow,
    /// scale old ones down within `maxUnavailable` — first their unavailable pods, then
    /// available ones.
    fn rolling(&mut self, max_surge: i32, max_unavailable: i32) {
        let replicas = self.replicas;
        let all_pods: i32 = self.owned.iter().map(Owned::effective_pods).sum();
        let new_replicas = self.new.map_or(0, |i| self.owned[i].replicas);
        // upstream `NewRSNewReplicas`
        let target = if new_replicas > replicas {
            replicas
        } else {
            let room = (replicas + max_surge - all_pods).max(0);
            new_replicas + room.min(replicas - new_replicas)
        };
        let Some(new) = self.new else {
            self.create_new(target);
            return;
        };
        if target != new_replicas {
            self.owned[new].scale(target, &mut self.actions);
            if target > new_replicas {
                return;
            }
        }

        // upstream `reconcileOldReplicaSets`
        let min_available = replicas - max_unavailable;
        let all_replicas: i32 = self.owned.iter().map(|o| o.replicas).sum();
        let new_unavailable = self.owned[new].replicas - self.owned[new].effective_available();
        let max_scaled_down = all_replicas - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return;
        }
        let mut actions = Vec::new();
        // Unavailable pods of old ReplicaSets go first: losing them costs no availability.
        let mut cleaned = 0;
        for o in self.olds() {
            let unhealthy = (o.replicas - o.effective_available()).min(max_scaled_down - cleaned);
            if unhealthy > 0 {
                cleaned += unhealthy;
                o.scale(o.replicas - unhealthy, &mut actions);
            }
        }
        // Then available ones, as far as `minAvailable` allows.
        let available: i32 = self.owned.iter().map(Owned::effective_available).sum();
        let mut budget = available - min_available;
        for o in self.olds() {
            let n = o.replicas.min(budget);
            if n > 0 {
                budget -= n;
                o.scale(o.replicas - n, &mut actions);
            }
        }
        self.actions.append(&mut actions);
    }

    /// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    fn cleanup(&mut self, limit: Option<i32>) {
        let limit = usize::try_from(limit.unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)).unwrap_or(0);
        let olds = self.owned.len() - usize::from(self.new.is_some());
        let mut surplus = olds.saturating_sub(limit);
        let mut actions = Vec::new();
        for o in self.olds() {
            if surplus > 0 && o.replicas == 0 && o.any == 0 {
                surplus -= 1;
                actions.push(Action::delete(Kind::ReplicaSet, &o.rs.metadata));
            }
        }
        self.actions.append(&mut actions);
    }
}

fn status(
    d: &Deployment,
    owned: &[Owned],
    new_index: Option<usize>,
    replicas: i32,
    max_unavailable: i32,
    now: Timestamp,
) -> DeploymentStatus {
    let sum = |f: fn(&Owned) -> i32| owned.iter().map(f).sum::<i32>();
    let total_replicas = sum(|o| o.replicas);
    let available = sum(|o| o.available);
    let updated = new_index.map_or(0, |i| owned[i].active);
    let actual = sum(|o| o.active);
    let old = d.status.as_ref().and_then(|s| s.conditions.as_ref());
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let previous = old.into_iter().flatten().find(|c| {
            c.type_ == type_ && c.status == status && c.reason.as_deref() == Some(reason)
        });
        DeploymentCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(
                previous
                    .and_then(|c| c.last_transition_time.clone())
                    .unwrap_or(Time(now)),
            ),
            last_update_time: Some(
                previous
                    .and_then(|c| c.last_update_time.clone())
                    .unwrap_or(Time(now)),
            ),
        }
    };
    let is_available = available >= replicas - max_unavailable;
    let complete = updated == replicas && available == replicas && actual == replicas;
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let new_name = new_index
        .and_then(|i| owned[i].rs.metadata.name.clone())
        .unwrap_or_default();
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual),
        updated_replicas: Some(updated),
        ready_replicas: Some(sum(|o| o.ready)),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_replicas - available).max(0)),
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        terminating_replicas: None,
        conditions: Some(vec![
            if is_available {
                condition(
                    "Available",
                    true,
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                )
            } else {
                condition(
                    "Available",
                    false,
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                )
            },
            if complete {
                condition(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                )
            } else {
                condition(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    format!("Deployment \"{name}\" is progressing."),
                )
            },
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;
    use crate::model::{Action, labels};
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn deployment(replicas: i32, image: &str, surge: i32, unavailable: i32) -> Deployment {
        Deployment {
            metadata: meta("web", "d-uid"),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".into(), "web".into())].into()),
                    ..Default::default()
                },
                template: template("web", image),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(surge)),
                        max_unavailable: Some(IntOrString::Int(unavailable)),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The ReplicaSet `d` makes for `image`, as stored, with `ready` Ready pods of `pods`.
    fn replica_set(
        d: &Deployment,
        image: &str,
        revision: i64,
        replicas: i32,
        pods: usize,
        ready_pods: usize,
    ) -> (ReplicaSet, Vec<Pod>) {
        let mut d = d.clone();
        d.spec.as_mut().expect("spec").template = template("web", image);
        let hash = template_hash(&template("web", image));
        let mut rs = new_replica_set(&d, &hash, revision, replicas).expect("rs");
        let name = rs.metadata.name.clone().expect("name");
        rs.metadata.uid = Some(format!("uid-{name}"));
        rs.metadata.creation_timestamp = Some(Time(ts(revision)));
        let pods = (0..pods)
            .map(|i| {
                let p = pod(&format!("{name}-{i}"), &rs, &[("app", "web")], 0, Some("n"));
                if i < ready_pods { ready(p, 0) } else { p }
            })
            .collect();
        (rs, pods)
    }

    fn snap(d: &Deployment, sets: Vec<(ReplicaSet, Vec<Pod>)>) -> Snapshot {
        let (rs, pods): (Vec<_>, Vec<_>) = sets.into_iter().unzip();
        Snapshot {
            deployments: arcs([d.clone()]),
            replica_sets: arcs(rs),
            pods: arcs(pods.into_iter().flatten()),
            ..Default::default()
        }
    }

    fn scales(actions: &[Action]) -> Vec<(&str, i64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Patch {
                    kind: Kind::ReplicaSet,
                    name,
                    patch,
                    ..
                } => Some((name.as_str(), patch["spec"]["replicas"].as_i64()?)),
                _ => None,
            })
            .collect()
    }

    fn created(actions: &[Action]) -> Vec<&ReplicaSet> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateReplicaSet(rs) => Some(&**rs),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        let pct = |s: &str| Some(IntOrString::String(s.into()));
        assert_eq!(scaled(pct("25%").as_ref(), "0", 10, true), 3);
        assert_eq!(scaled(pct("25%").as_ref(), "0", 10, false), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(4)), "0", 10, false), 4);
        assert_eq!(scaled(None, "25%", 4, true), 1);
        let mut d = deployment(10, "a", 0, 0);
        assert_eq!(fenceposts(&d, 10), (0, 1));
        d.spec.as_mut().expect("spec").strategy = None;
        assert_eq!(fenceposts(&d, 10), (3, 2));
    }

    #[test]
    fn first_rollout_creates_a_hashed_replica_set() {
        let d = deployment(3, "nginx:1", 1, 0);
        let actions = reconcile(&snap(&d, vec![]), ts(0));
        let rs = created(&actions);
        assert_eq!(rs.len(), 1);
        let hash = template_hash(&template("web", "nginx:1"));
        assert_eq!(
            rs[0].metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        let spec = rs[0].spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector.match_labels.as_ref().expect("labels")[POD_TEMPLATE_HASH],
            hash
        );
        let tlabels = labels(
            spec.template
                .as_ref()
                .expect("t")
                .metadata
                .as_ref()
                .expect("m"),
        );
        assert_eq!(tlabels[POD_TEMPLATE_HASH], hash);
        assert_eq!(
            rs[0].metadata.annotations.as_ref().expect("a")[REVISION],
            "1"
        );
        assert!(actions.iter().any(|a| matches!(a,
            Action::Patch { kind: Kind::Deployment, patch, .. }
                if patch["metadata"]["annotations"][REVISION] == "1")));
    }

    #[test]
    fn rolling_update_surges_then_scales_old_down_as_new_pods_become_available() {
        let d = deployment(3, "nginx:2", 1, 0);
        // Template changed: the new ReplicaSet starts with maxSurge pods.
        let old = replica_set(&d, "nginx:1", 1, 3, 3, 3);
        let actions = reconcile(&snap(&d, vec![old.clone()]), ts(0));
        let rs = created(&actions);
        assert_eq!(rs[0].spec.as_ref().and_then(|s| s.replicas), Some(1));
        assert_eq!(
            rs[0].metadata.annotations.as_ref().expect("a")[REVISION],
            "2"
        );
        assert!(scales(&actions).is_empty());

        // New pod not ready yet: nothing may go.
        let new = replica_set(&d, "nginx:2", 2, 1, 1, 0);
        let actions = reconcile(&snap(&d, vec![old.clone(), new]), ts(0));
        assert!(scales(&actions).is_empty() && created(&actions).is_empty());

        // New pod ready: one old pod may go.
        let new = replica_set(&d, "nginx:2", 2, 1, 1, 1);
        let old_name = old.0.metadata.name.clone().expect("name");
        let actions = reconcile(&snap(&d, vec![old.clone(), new]), ts(0));
        assert_eq!(scales(&actions), [(old_name.as_str(), 2)]);

        // Old scaled down (a pod still terminating is not counted): the new one grows.
        let (mut old_rs, old_pods) = old;
        old_rs.spec.as_mut().expect("spec").replicas = Some(2);
        let old_pods = old_pods
            .into_iter()
            .enumerate()
            .map(|(i, p)| if i == 0 { terminating(p) } else { p })
            .collect();
        let new = replica_set(&d, "nginx:2", 2, 1, 1, 1);
        let new_name = new.0.metadata.name.clone().expect("name");
        let actions = reconcile(&snap(&d, vec![(old_rs, old_pods), new]), ts(0));
        assert_eq!(scales(&actions), [(new_name.as_str(), 2)]);
    }

    #[test]
    fn rolling_update_never_counts_pods_the_old_set_still_has_beyond_its_spec() {
        // Old spec already lowered to 2 but its 3 pods are still there: no room to surge.
        let d = deployment(3, "nginx:2", 1, 0);
        let (mut old_rs, old_pods) = replica_set(&d, "nginx:1", 1, 3, 3, 3);
        old_rs.spec.as_mut().expect("spec").replicas = Some(2);
        let new = replica_set(&d, "nginx:2", 2, 1, 1, 1);
        let actions = reconcile(&snap(&d, vec![(old_rs, old_pods), new]), ts(0));
        assert!(scales(&actions).is_empty(), "{actions:?}");
    }

    #[test]
    fn recreate_waits_for_old_pods_to_be_gone() {
        let mut d = deployment(2, "db:2", 0, 0);
        d.spec.as_mut().expect("spec").strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        let old = replica_set(&d, "db:1", 1, 2, 2, 2);
        let old_name = old.0.metadata.name.clone().expect("name");
        let actions = reconcile(&snap(&d, vec![old.clone()]), ts(0));
        assert_eq!(scales(&actions), [(old_name.as_str(), 0)]);
        assert!(created(&actions).is_empty());

        let (mut rs, pods) = old;
        rs.spec.as_mut().expect("spec").replicas = Some(0);
        let terminating_pods: Vec<Pod> = pods.into_iter().map(terminating).collect();
        let actions = reconcile(&snap(&d, vec![(rs.clone(), terminating_pods)]), ts(0));
        assert!(created(&actions).is_empty());

        let actions = reconcile(&snap(&d, vec![(rs, vec![])]), ts(0));
        assert_eq!(
            created(&actions)[0].spec.as_ref().and_then(|s| s.replicas),
            Some(2)
        );
    }

    #[test]
    fn old_replica_sets_beyond_the_history_limit_are_deleted_oldest_first() {
        let mut d = deployment(1, "v4", 1, 0);
        d.spec.as_mut().expect("spec").revision_history_limit = Some(1);
        let sets = vec![
            replica_set(&d, "v1", 1, 0, 0, 0),
            replica_set(&d, "v2", 2, 0, 0, 0),
            replica_set(&d, "v3", 3, 0, 0, 0),
            replica_set(&d, "v4", 4, 1, 1, 1),
        ];
        let names: Vec<String> = sets
            .iter()
            .map(|(r, _)| r.metadata.name.clone().expect("name"))
            .collect();
        let actions = reconcile(&snap(&d, sets), ts(0));
        assert_eq!(deleted(&actions), [names[0].as_str(), names[1].as_str()]);
    }

    #[test]
    fn status_reports_counts_and_conditions() {
        let d = deployment(3, "nginx:1", 1, 1);
        let rs = replica_set(&d, "nginx:1", 1, 3, 3, 2);
        let actions = reconcile(&snap(&d, vec![rs]), ts(0));
        let s = status_of(&actions).expect("status");
        assert_eq!(s["replicas"], 3);
        assert_eq!(s["updatedReplicas"], 3);
        assert_eq!(s["readyReplicas"], 2);
        assert_eq!(s["availableReplicas"], 2);
        assert_eq!(s["unavailableReplicas"], 1);
        assert_eq!(s["observedGeneration"], 1);
        assert_eq!(s["conditions"][0]["type"], "Available");
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["conditions"][1]["reason"], "ReplicaSetUpdated");
    }
}
