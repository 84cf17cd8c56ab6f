//! kubewire's node agent, pod networking part (`kubewire agent`): routes to every other node's
//! pod CIDRs (direct, or over a VXLAN overlay), masquerade of pod traffic leaving the cluster,
//! and the CNI conflist for `kubewire-cni` once the node has pod CIDRs. Shaped as a pure
//! [`compile()`](compile::compile) of a Node snapshot into the desired kernel state, a thin
//! [`apply`] layer that converges one network namespace to it, and a [`runtime`] loop; plus
//! [`bench`], the cross-node half of `kubewire bench cni`.
//!
//! It is not the CNI plugin (pod interfaces and their addresses are `kubewire-cni`'s), not node
//! IPAM (the controller hands out pod CIDRs) and not the service proxy or policy (other tables).

pub mod apply;
pub mod bench;
pub mod cni;
pub mod compile;
pub mod nft;
pub mod runtime;
pub mod testbed;

use std::path::PathBuf;

use ipnet::IpNet;

pub use compile::{Mode, Settings};

/// `kubewire agent` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to work against.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Name of this node's Node object.
    #[arg(long)]
    pub node_name: String,
    /// How pod traffic crosses between nodes: `direct` routes via each node's InternalIP (nodes
    /// on one L2 segment); `vxlan` encapsulates (works across L3 segments).
    #[arg(long, value_enum, default_value_t = Mode::Vxlan)]
    pub pod_network_mode: Mode,
    /// Do not masquerade pod traffic leaving the cluster ("flat" network: the outside routes to
    /// pod IPs itself). By default it leaves with the node's address ("island" network).
    #[arg(long)]
    pub no_masquerade: bool,
    /// What is inside the cluster for masquerading, CIDR[,CIDR]; default: every Node's podCIDRs.
    #[arg(long, value_delimiter = ',')]
    pub cluster_cidr: Vec<IpNet>,
    /// Where the CNI conflist is written.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The CNI plugin's IPAM store (`dataDir` in the conflist).
    #[arg(long, default_value = kubewire_cni::config::DEFAULT_DATA_DIR)]
    pub cni_data_dir: PathBuf,
    /// VXLAN network identifier.
    #[arg(long, default_value_t = 1)]
    pub vxlan_vni: u32,
    /// VXLAN UDP port (IANA's 4789).
    #[arg(long, default_value_t = 4789)]
    pub vxlan_port: u16,
}

impl Args {
    pub fn settings(&self) -> Settings {
        Settings {
            mode: self.pod_network_mode,
            masquerade: !self.no_masquerade,
            cluster_cidrs: self.cluster_cidr.clone(),
            vxlan_vni: self.vxlan_vni,
            vxlan_port: self.vxlan_port,
        }
    }
}

/// Runs the agent for this host (its current network namespace) until the process is stopped.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = kubewire_api::client::from_kubeconfig(&args.kubeconfig).await?;
    let paths = runtime::CniPaths {
        conf_dir: args.cni_conf_dir.clone(),
        data_dir: args.cni_data_dir.clone(),
    };
    let ns = kubewire_datapath::NetNs::current()?;
    runtime::run_node(client, args.node_name.clone(), args.settings(), paths, ns).await?;
    Ok(())
}
