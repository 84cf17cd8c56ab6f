//! kubewire's workload controllers and scheduler: the parts of kube-controller-manager and
//! kube-scheduler that turn Deployments, ReplicaSets, StatefulSets and DaemonSets into Pods
//! bound to Nodes, simplified for a lab cluster.
//!
//! Each controller is a pure `reconcile(snapshot, now) -> Vec<Action>` (unit-tested without an
//! API); [`run`] watches the API through one shared reflector per kind and applies the actions.
//! It is not a kubelet (nothing here runs pods or sets their status), and it leaves out what a
//! lab does not need: resource-aware scheduling, taints, affinity, preemption, PVCs,
//! ControllerRevision objects, orphan adoption, progress deadlines.

pub mod daemonset;
pub mod deployment;
pub mod model;
pub mod replicaset;
mod runtime;
pub mod scheduler;
pub mod statefulset;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinSet;

pub use model::{Action, Kind, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the {0} watch ended before its first list")]
    WatchEnded(String),
}

/// Every controller, by name, in the order they start.
const CONTROLLERS: [(&str, runtime::Reconcile); 5] = [
    ("scheduler", scheduler::reconcile),
    ("replicaset", replicaset::reconcile),
    ("deployment", deployment::reconcile),
    ("statefulset", statefulset::reconcile),
    ("daemonset", daemonset::reconcile),
];

/// Runs the scheduler and every workload controller against `client` until `shutdown`
/// completes. Fails only if the first list of a watched kind cannot complete.
pub async fn run(
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let wakes: Arc<Vec<Arc<Notify>>> = Arc::new(
        CONTROLLERS
            .iter()
            .map(|_| Arc::new(Notify::new()))
            .collect(),
    );
    let mut tasks = JoinSet::new();
    let start = async {
        let cache = Arc::new(runtime::Cache::start(&client, wakes.clone(), &mut tasks).await?);
        for ((name, reconcile), wake) in CONTROLLERS.into_iter().zip(wakes.iter()) {
            tasks.spawn(runtime::control_loop(
                name,
                reconcile,
                cache.clone(),
                client.clone(),
                wake.clone(),
            ));
        }
        tracing::info!("workload controllers and scheduler running");
        std::future::pending::<Result<(), Error>>().await
    };
    tokio::select! {
        result = start => result,
        () = shutdown => Ok(()),
    }
}

/// `kubewire workloads`: the scheduler and the workload controllers.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig of the cluster to control (e.g. the one `kubewire apiserver` writes).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
}

/// Runs [`run`] with a client from `--kubeconfig` until SIGINT or SIGTERM.
pub async fn run_cli(args: Args) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let client = kubewire_api::client::from_kubeconfig(&args.kubeconfig).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    };
    run(client, shutdown).await?;
    Ok(())
}
