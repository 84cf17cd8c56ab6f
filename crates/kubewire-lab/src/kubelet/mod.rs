//! The lab kubelet: one per node, running inside the node's network namespace. It registers its
//! Node and keeps it Ready with a heartbeat, and runs the Pods bound to the node as processes:
//! a sandbox per pod (network namespace + CNI, see [`crate::Sandbox`]), each container started
//! through `kubewire internal exec-in-pod` in its own process group, probes, restarts with
//! CrashLoopBackOff, graceful termination, and status reported as the kubelet reports it.
//!
//! The pieces with rules in them are pure and unit-tested apart from I/O:
//! - `node`: the Node object and its status;
//! - `env`: a container's environment (service links, `fieldRef`, `configMapKeyRef`, ...);
//! - `probe`: the probe state machine (results in, action out);
//! - `status`: the Pod status (phase, conditions, container statuses) from the runtime's view;
//! - `container`: restart policy and CrashLoopBackOff backoff.
//!
//! The I/O around them: `process` (container processes, pid records, adoption after a
//! restart of the kubelet), `pod` (one worker task per pod) and the watch loop here.
//!
//! Restart safety: container processes live in their own process groups and are recorded by pid
//! (with their start time, so a recycled pid is never mistaken for ours) in the pod directory; a
//! restarted kubelet adopts sandboxes and processes from those records and polls them, and tears
//! down the sandboxes of pods that were deleted while it was down.

mod container;
mod env;
mod node;
mod pod;
mod probe;
mod process;
mod status;

pub use pod::{netns_name, teardown_pod_dir, teardown_pods};

/// The environment container `container` of the pod whose directory is `pod_dir` was last
/// started with, if it was.
pub fn started_env(pod_dir: &Path, container: &str) -> Option<Vec<(String, String)>> {
    process::ProcessRecord::load(pod_dir, container).map(|r| r.env)
}

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::config::Kubeconfig;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::{CniRuntime, LabError};

/// `kubewire lab kubelet`: the flags of one node's kubelet.
#[derive(clap::Args, Debug, Clone)]
pub struct KubeletArgs {
    /// Kubeconfig of the API server.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// This node's name (the Node object and `spec.nodeName` of its pods).
    #[arg(long)]
    pub node_name: String,
    /// An InternalIP of the node, one per family (repeatable).
    #[arg(long = "node-ip", value_name = "IP", required = true)]
    pub node_ips: Vec<IpAddr>,
    /// The node's zone (label `topology.kubernetes.io/zone`).
    #[arg(long)]
    pub zone: Option<String>,
    /// Directory holding the node's CNI network configuration.
    #[arg(long)]
    pub cni_conf_dir: PathBuf,
    /// Directory holding CNI plugin binaries (repeatable).
    #[arg(long = "cni-bin-dir", value_name = "DIR", required = true)]
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Directory of the pods' directories (files, records, logs); must not be under /run.
    #[arg(long)]
    pub pods_dir: PathBuf,
    /// The kubewire binary used to start containers and the built-in image [default: this
    /// executable].
    #[arg(long)]
    pub kubewire_bin: Option<PathBuf>,
    /// Cluster DNS server address for pods (repeatable).
    #[arg(long = "cluster-dns", value_name = "IP")]
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Pods this node accepts (its `pods` capacity).
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
}

/// Everything that can go wrong in the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Client(#[from] kubewire_api::client::ClientError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Env(#[from] env::EnvError),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KubeletError {
    let context = context.into();
    move |source| KubeletError::Io { context, source }
}

/// What every pod worker shares: the client and the node's settings.
pub(crate) struct Kubelet {
    pub client: kube::Client,
    pub node_name: String,
    pub node_ips: Vec<IpAddr>,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub pods_dir: PathBuf,
    pub kubewire_bin: PathBuf,
    pub cni: CniRuntime,
    /// The service-account token given to pods: the kubeconfig user's bearer token (the lab has
    /// no token issuer yet), or empty.
    pub token: String,
    /// The API server's CA (PEM), if it serves TLS.
    pub ca: Option<Vec<u8>>,
    pub host_resolv_conf: String,
}

/// The bearer token and CA of the kubeconfig's current context.
fn credentials(path: &Path, kc: &Kubeconfig) -> Result<(String, Option<Vec<u8>>), KubeletError> {
    let bad = |reason: String| KubeletError::Kubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .or(kc.contexts.first())
        .and_then(|c| c.context.clone());
    let user = ctx.as_ref().map(|c| c.user.clone()).unwrap_or_default();
    let cluster = ctx.as_ref().map(|c| c.cluster.clone()).unwrap_or_default();
    // The token is a secret string that only serializes back out; read it from the JSON form.
    let users = serde_json::to_value(&kc.auth_infos).map_err(|e| bad(e.to_string()))?;
    let token = users
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["name"] == user.as_deref().unwrap_or_default())
        .or_else(|| users.get(0))
        .and_then(|u| u["user"]["token"].as_str())
        .unwrap_or_default()
        .to_string();
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .or(kc.clusters.first())
        .and_then(|c| c.cluster.clone());
    let ca = match cluster {
        Some(c) => match (c.certificate_authority_data, c.certificate_authority) {
            (Some(data), _) => {
                use base64::Engine;
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(data.trim())
                        .map_err(|e| bad(format!("certificate-authority-data: {e}")))?,
                )
            }
            (None, Some(file)) => {
                Some(std::fs::read(&file).map_err(io_err(format!("reading the CA {file}")))?)
            }
            (None, None) => None,
        },
        None => None,
    };
    Ok((token, ca))
}

impl Kubelet {
    async fn new(args: KubeletArgs) -> Result<Kubelet, KubeletError> {
        let kc = Kubeconfig::read_from(&args.kubeconfig).map_err(|e| KubeletError::Kubeconfig {
            path: args.kubeconfig.clone(),
            reason: e.to_string(),
        })?;
        // Read here only for the credentials pods get; the client is built as everywhere else.
        let (token, ca) = credentials(&args.kubeconfig, &kc)?;
        let client = kubewire_api::client::from_kubeconfig(&args.kubeconfig).await?;
        if args.pods_dir.starts_with("/run") {
            return Err(KubeletError::Config(format!(
                "--pods-dir {} must not be under /run (pods get a private /run)",
                args.pods_dir.display()
            )));
        }
        std::fs::create_dir_all(&args.pods_dir)
            .map_err(io_err(format!("creating {}", args.pods_dir.display())))?;
        let kubewire_bin = match args.kubewire_bin {
            Some(bin) => bin,
            None => std::env::current_exe().map_err(io_err("locating the kubewire binary"))?,
        };
        Ok(Kubelet {
            client,
            node_name: args.node_name,
            node_ips: args.node_ips,
            cluster_dns: args.cluster_dns,
            cluster_domain: args.cluster_domain,
            pods_dir: args.pods_dir,
            kubewire_bin,
            cni: CniRuntime::new(args.cni_conf_dir, args.cni_bin_dirs),
            token,
            ca,
            host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        })
    }
}

/// Runs the kubelet until an unrecoverable error.
pub async fn run(args: KubeletArgs) -> anyhow::Result<()> {
    let facts = node::NodeFacts::gather(&args);
    let kubelet = Arc::new(Kubelet::new(args).await?);
    // The API server may not be up yet: keep trying, as the kubelet does.
    let mut delay = std::time::Duration::from_millis(500);
    let readiness = loop {
        match node::register(&kubelet.client, &facts).await {
            Ok(readiness) => break readiness,
            Err(e) => tracing::warn!(error = %e, "registering the node; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    };
    tracing::info!(node = %facts.name, "node registered");
    let heartbeat = tokio::spawn(node::heartbeat(kubelet.client.clone(), facts, readiness));
    let result = watch_pods(kubelet).await;
    heartbeat.abort();
    Ok(result?)
}

/// The pod workers, by pod uid: each gets the latest Pod, or `None` once it is gone.
type Workers = HashMap<String, watch::Sender<Option<Pod>>>;

fn deliver(kubelet: &Arc<Kubelet>, workers: &mut Workers, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(tx) = workers.get(&uid)
        && tx.send(Some(pod.clone())).is_ok()
    {
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    tokio::spawn(pod::run(kubelet.clone(), uid.clone(), rx));
    workers.insert(uid, tx);
}

async fn watch_pods(kubelet: Arc<Kubelet>) -> Result<(), KubeletError> {
    let api: Api<Pod> = Api::all(kubelet.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", kubelet.node_name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut workers = Workers::new();
    let mut listed = HashSet::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // The watcher retries, with backoff, on the next poll.
                tracing::warn!(error = %e, "pod watch");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(pod) => {
                listed.extend(pod.metadata.uid.clone());
                deliver(&kubelet, &mut workers, pod);
            }
            watcher::Event::InitDone => {
                // Directories of pods unknown to this run: deleted while the kubelet was down.
                let known: HashSet<String> = listed.iter().chain(workers.keys()).cloned().collect();
                reap_orphans(&kubelet, &known);
                // Pods gone while the watch was down: their workers stop them.
                workers.retain(|uid, tx| {
                    listed.contains(uid) || {
                        let _ = tx.send(None);
                        false
                    }
                });
            }
            watcher::Event::Apply(pod) => deliver(&kubelet, &mut workers, pod),
            watcher::Event::Delete(pod) => {
                if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.remove(u)) {
                    let _ = tx.send(None);
                }
            }
        }
        workers.retain(|_, tx| !tx.is_closed());
    }
    Ok(())
}

/// Pod directories whose pod no longer exists (deleted while the kubelet was down): their
/// processes are killed and their sandboxes torn down.
fn reap_orphans(kubelet: &Arc<Kubelet>, known: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(&kubelet.pods_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if known.contains(&uid) || !entry.path().is_dir() {
            continue;
        }
        tracing::info!(%uid, "tearing down the sandbox of a deleted pod");
        let kubelet = kubelet.clone();
        tokio::spawn(async move { pod::teardown_dir(&kubelet, &entry.path()).await });
    }
}
