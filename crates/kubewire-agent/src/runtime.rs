//! The agent loop: a Node reflector; after every change (debounced) and on a periodic resync,
//! compile the snapshot and apply it in the node's namespace; write the CNI conflist once the
//! node has pod CIDRs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use kubewire_controllers::watch::{WatchEnded, reflect};
use kubewire_datapath::NetNs;

use crate::apply::{Applied, ApplyError, Worker};
use crate::cni;
use crate::compile::{Desired, NodeInfo, Settings, compile};

const DEBOUNCE: Duration = Duration::from_millis(50);
/// Re-apply even without Node changes, to repair what someone else changed in the kernel.
const RESYNC: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(2);

/// Where the CNI configuration goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniPaths {
    /// The runtime's CNI config dir (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The plugin's IPAM store (`dataDir` in the conflist).
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Watch(#[from] WatchEnded),
    #[error("{0}")]
    Apply(#[from] ApplyError),
}

/// Runs pod networking for node `node_name`, applying in network namespace `ns`, until dropped.
pub async fn run_node(
    client: Client,
    node_name: String,
    settings: Settings,
    cni_paths: CniPaths,
    ns: NetNs,
) -> Result<(), AgentError> {
    let worker = Worker::start(ns, settings.clone()).await?;
    let nodes = reflect(Api::<Node>::all(client), "agent: Node").await?;
    let mut applied: Option<Desired> = None;
    let mut last_apply: Option<Instant> = None;
    let mut last_warnings = Vec::new();
    loop {
        let mut warnings = Vec::new();
        let infos: Vec<NodeInfo> = nodes
            .store
            .state()
            .iter()
            .map(|n| {
                let (info, bad) = NodeInfo::from_node(n);
                warnings.extend(bad);
                info
            })
            .collect();
        let mut wait = RESYNC;
        match compile(&infos, &node_name, &settings) {
            Ok((desired, w)) => {
                warnings.extend(w);
                // Node status heartbeats change nothing here: apply on a change of the desired
                // state, after a failure, and on the periodic resync.
                let due = applied.as_ref() != Some(&desired)
                    || last_apply.is_none_or(|t| t.elapsed() >= RESYNC);
                if due {
                    match worker.apply(desired.clone()).await {
                        Ok(done) => {
                            if applied.as_ref() != Some(&desired) {
                                tracing::info!(
                                    node = %node_name,
                                    routes = desired.routes.len(),
                                    "agent: pod network converged"
                                );
                            }
                            last_apply = Some(Instant::now());
                            applied = Some(desired);
                            if let Err(e) = write_cni_conf(&cni_paths, applied.as_ref(), done) {
                                tracing::warn!(
                                    "agent: cannot write the CNI config in {}: {e}",
                                    cni_paths.conf_dir.display()
                                );
                                applied = None;
                                wait = RETRY;
                            }
                        }
                        Err(ApplyError::WorkerGone) => return Err(ApplyError::WorkerGone.into()),
                        Err(e) => {
                            tracing::warn!(node = %node_name, "agent: apply failed (retrying): {e}");
                            applied = None;
                            wait = RETRY;
                        }
                    }
                }
            }
            // Our Node is not there (yet): keep what is applied, wait for it.
            Err(e) => warnings.push(e.to_string()),
        }
        if warnings != last_warnings {
            for w in &warnings {
                tracing::warn!(node = %node_name, "agent: {w}");
            }
            last_warnings = warnings;
        }
        tokio::select! {
            () = nodes.changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// Writes the conflist once the node has pod CIDRs.
fn write_cni_conf(
    paths: &CniPaths,
    desired: Option<&Desired>,
    applied: Applied,
) -> std::io::Result<()> {
    match desired {
        Some(d) if !d.pod_cidrs.is_empty() => {
            let conf = cni::render(&d.pod_cidrs, &paths.data_dir, Some(applied.pod_mtu));
            cni::write(&paths.conf_dir, &conf).map(|_| ())
        }
        _ => Ok(()),
    }
}
