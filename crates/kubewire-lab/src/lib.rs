//! `kubewire lab`: a whole cluster on one machine, whose nodes and pods are network namespaces
//! and whose pods are real processes.
//!
//! - [`cluster`]: `lab up/down/status/apply/exec/wait/matrix` and the supervisor that runs every
//!   component of a lab (API server, controller, workloads, and per node an agent and a kubelet).
//! - [`kubelet`]: the lab kubelet, which registers its Node and runs the Pods bound to it.
//! - The pod runtime both build on: a pod sandbox (a named network namespace wired by the CNI
//!   plugins of the node's conflist, called exactly as a container runtime calls them), the pod's
//!   `/etc/resolv.conf` and `/etc/hosts` as the Kubernetes DNS spec and the kubelet write them,
//!   and [`exec_in_pod`], which turns the calling process into a container process inside the
//!   pod's network, mount and UTS namespaces.
//!
//! It is for one machine: on a real cluster the real kubelet and container runtime do this.

pub mod cluster;
mod cni;
mod dns;
mod exec;
pub mod kubelet;
mod sandbox;

pub use cni::{Attachment, CniRuntime};
pub use dns::{DnsPolicy, HostEntry, PodDns, hosts_file, resolv_conf};
pub use exec::{ExecArgs, NetnsExecArgs, exec_in_netns, exec_in_pod};
pub use sandbox::{Sandbox, SandboxSpec};

/// Everything that can go wrong setting up or tearing down a pod.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("no CNI network configuration (*.conflist or *.conf) in {0}")]
    NoCniConfig(std::path::PathBuf),
    #[error("CNI configuration {path}: {reason}")]
    BadCniConfig {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("CNI plugin {0:?} not found in the CNI bin dirs")]
    PluginNotFound(String),
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u64,
        msg: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys { context: String, source: nix::Error },
    #[error(transparent)]
    Datapath(#[from] kubewire_datapath::Error),
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}

pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Sys { context, source }
}
