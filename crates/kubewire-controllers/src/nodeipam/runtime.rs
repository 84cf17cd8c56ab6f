//! The node IPAM loop: a Node reflector, [`reconcile`](super::reconcile) over its snapshot after
//! every change (debounced), merge patches of `spec.podCIDR`/`spec.podCIDRs`, Events, and retries
//! with backoff while some Node waits for space.
//!
//! A patch sent is remembered ("in flight") and laid over the snapshot until the watch shows it,
//! so two reconciles close together never hand the same subnet to two Nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{IpamConfig, pod_cidrs_of, reconcile};
use crate::events::Recorder;
use crate::watch::{WatchEnded, reflect};

/// Event reason on a Node the cluster CIDRs have no room for (as kube-controller-manager).
pub const REASON_CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
/// Event reason on a Node whose existing podCIDRs are outside the range or collide.
pub const REASON_CIDR_ASSIGNMENT_FAILED: &str = "CIDRAssignmentFailed";

const COMPONENT: &str = "node-ipam-controller";
const DEBOUNCE: Duration = Duration::from_millis(20);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Runs node IPAM until the task is dropped.
pub async fn run(client: Client, config: IpamConfig) -> Result<(), WatchEnded> {
    let api: Api<Node> = Api::all(client.clone());
    let nodes = reflect(api.clone(), "node IPAM: Node").await?;
    tracing::info!(
        cluster_cidrs = ?config.cluster_cidrs(),
        nodes = nodes.store.len(),
        "node IPAM: state rebuilt from existing Nodes"
    );
    let mut ctl = Controller {
        api,
        store: nodes.store.clone(),
        config,
        recorder: Recorder::new(client, COMPONENT),
        in_flight: BTreeMap::new(),
        reported: BTreeSet::new(),
    };
    let mut retry = RETRY_MIN;
    loop {
        let waiting = ctl.sync().await;
        if waiting {
            tokio::select! {
                () = nodes.changed.notified() => {}
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        } else {
            nodes.changed.notified().await;
            retry = RETRY_MIN;
        }
        // Let a burst of watch events land before the next snapshot.
        tokio::time::sleep(DEBOUNCE).await;
    }
}

struct Controller {
    api: Api<Node>,
    store: Store<Node>,
    config: IpamConfig,
    recorder: Recorder,
    /// Node name -> (uid, CIDRs patched in) until the watch shows them.
    in_flight: BTreeMap<String, (Option<String>, Vec<IpNet>)>,
    /// (node uid, reason, message) already reported: one Event per problem, not one per retry.
    reported: BTreeSet<(String, &'static str, String)>,
}

impl Controller {
    /// One reconcile and its writes. Returns true when some Node still waits for space.
    async fn sync(&mut self) -> bool {
        let snapshot = self.store.state();
        let nodes = self.overlay(&snapshot);
        let plan = reconcile(nodes.iter(), &self.config);
        let by_name: BTreeMap<String, &Node> = nodes.iter().map(|n| (n.name_any(), n)).collect();

        for (name, cidrs) in &plan.assign {
            let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
            let (Some(node), Some(first)) = (by_name.get(name), list.first()) else {
                continue;
            };
            let patch = json!({"spec": {"podCIDR": first, "podCIDRs": list}});
            match self
                .api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %name, pod_cidrs = ?list, "node IPAM: assigned");
                    self.in_flight
                        .insert(name.clone(), (node.metadata.uid.clone(), cidrs.clone()));
                }
                // Gone, or set by someone else meanwhile: the watch brings the truth.
                Err(e) => tracing::warn!(node = %name, "node IPAM: cannot assign {list:?}: {e}"),
            }
        }
        for (name, cluster) in &plan.exhausted {
            let message = format!(
                "no pod CIDR available for Node {name}: cluster CIDR {cluster} has no free subnet \
                 left (retrying; deleting a Node frees its CIDRs)"
            );
            self.report(by_name.get(name), REASON_CIDR_NOT_AVAILABLE, message)
                .await;
        }
        for (name, problems) in &plan.problems {
            for p in problems {
                let message = format!("Node {name}: {p}; left as it is");
                self.report(by_name.get(name), REASON_CIDR_ASSIGNMENT_FAILED, message)
                    .await;
            }
        }
        // Forget reports of Nodes that are gone or now have CIDRs, so a new episode is told.
        let still: BTreeSet<String> = plan
            .exhausted
            .keys()
            .chain(plan.problems.keys())
            .filter_map(|n| by_name.get(n).and_then(|n| n.metadata.uid.clone()))
            .collect();
        self.reported.retain(|(uid, _, _)| still.contains(uid));
        !plan.exhausted.is_empty()
    }

    /// The snapshot with in-flight assignments laid over it; in-flight entries the watch has
    /// caught up with (or whose Node is gone or was replaced) are dropped.
    fn overlay(&mut self, snapshot: &[Arc<Node>]) -> Vec<Node> {
        let by_name: BTreeMap<String, &Arc<Node>> =
            snapshot.iter().map(|n| (n.name_any(), n)).collect();
        self.in_flight.retain(|name, (uid, _)| {
            by_name
                .get(name)
                .is_some_and(|n| n.metadata.uid == *uid && pod_cidrs_of(n).is_empty())
        });
        snapshot
            .iter()
            .map(|n| {
                let mut node = Node::clone(n);
                if let Some((_, cidrs)) = self.in_flight.get(&n.name_any()) {
                    let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                    let spec = node.spec.get_or_insert_with(Default::default);
                    spec.pod_cidr = list.first().cloned();
                    spec.pod_cidrs = Some(list);
                }
                node
            })
            .collect()
    }

    async fn report(&mut self, node: Option<&&Node>, reason: &'static str, message: String) {
        let Some(node) = node else { return };
        let key = (
            node.metadata.uid.clone().unwrap_or_default(),
            reason,
            message,
        );
        if self.reported.contains(&key) {
            return;
        }
        tracing::warn!(node = %node.name_any(), reason, "node IPAM: {}", key.2);
        match self.recorder.warning(*node, reason, &key.2).await {
            Ok(()) => {
                self.reported.insert(key);
            }
            Err(e) => tracing::warn!("node IPAM: cannot record Event {reason}: {e}"),
        }
    }
}
