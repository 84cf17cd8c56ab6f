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
    let client = kubewire_api::client::from_kubeconfig(&args.kubeconfig).await?;
    nodeipam::runtime::run(client, config).await?;
    Ok(())
}
