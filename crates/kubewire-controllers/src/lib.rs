//! kubewire's cluster-wide controllers, run by `kubewire controller`: today node IPAM (pod CIDRs
//! for Nodes, [`nodeipam`]). Each controller is a pure reconcile over a snapshot of API objects
//! plus a thin runtime loop (kube-rs reflector, patches, Events).
//!
//! It is not a per-node piece: nothing here touches the kernel (that is `kubewire-agent`), and
//! it talks to nothing but the Kubernetes API.

pub mod events;
pub mod nodeipam;
pub mod watch;

use std::path::PathBuf;

use anyhow::Context;
use ipnet::IpNet;

/// `kubewire controller` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to work against.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Pod address range of the cluster, split into one subnet per Node: one CIDR, or two of
    /// different IP families (dual-stack; Nodes get one of each, in this order).
    #[arg(long, value_delimiter = ',', default_value = "10.244.0.0/16")]
    pub cluster_cidr: Vec<IpNet>,
    /// Prefix length of each Node's IPv4 pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size_ipv4: u8,
    /// Prefix length of each Node's IPv6 pod CIDR.
    #[arg(long, default_value_t = 64)]
    pub node_cidr_mask_size_ipv6: u8,
}

/// Runs the controllers until the process is stopped.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = nodeipam::IpamConfig::new(
        args.cluster_cidr,
        args.node_cidr_mask_size_ipv4,
        args.node_cidr_mask_size_ipv6,
    )?;
    let client = client_from(&args.kubeconfig).await?;
    nodeipam::runtime::run(client, config).await?;
    Ok(())
}

/// A client for the API server a kubeconfig file points at.
pub async fn client_from(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", kubeconfig.display()))?;
    Ok(kube::Client::try_from(config)?)
}
