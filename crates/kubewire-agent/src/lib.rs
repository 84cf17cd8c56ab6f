//! kubewire's node agent (`kubewire agent`). Its pod networking part lives here: routes to every
//! other node's pod CIDRs (direct, or over a VXLAN overlay), masquerade of pod traffic leaving
//! the cluster, and the CNI conflist for `kubewire-cni` once the node has pod CIDRs; [`run`] runs
//! it beside the service proxy (`kubewire-proxy`). Shaped as a pure
//! [`compile()`](compile::compile) of a Node snapshot into the desired kernel state, a thin
//! [`apply`] layer that converges one network namespace to it, and a [`runtime`] loop; plus
//! [`bench`], the cross-node half of `kubewire bench cni`.
//!
//! It is not the CNI plugin (pod interfaces and their addresses are `kubewire-cni`'s), not node
//! IPAM (the controller hands out pod CIDRs), and not the service proxy or policy themselves
//! (their own crates and nftables tables).

pub mod apply;
pub mod bench;
pub mod cni;
pub mod compile;
pub mod nft;
pub mod runtime;
pub mod testbed;

use std::path::PathBuf;

use anyhow::Context;
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
    /// Do not run the service proxy: leave Services to another one (e.g. kube-proxy).
    #[arg(long)]
    pub no_service_proxy: bool,
    /// Where the service proxy serves `/healthz` and `/livez` (kube-proxy's port).
    #[arg(long, default_value = "[::]:10256")]
    pub healthz_bind_address: std::net::SocketAddr,
    /// Where the service proxy serves Prometheus `/metrics` (kube-proxy's port and names).
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Which addresses NodePorts answer on: the node's primary address of each family, or
    /// every local address but loopback.
    #[arg(long, value_enum, default_value_t = kubewire_proxy::compile::NodePortAddresses::Primary)]
    pub nodeport_addresses: kubewire_proxy::compile::NodePortAddresses,
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
    let proxy = (!args.no_service_proxy).then(|| kubewire_proxy::runtime::Config {
        node_name: args.node_name.clone(),
        cluster_cidrs: args.cluster_cidr.clone(),
        healthz_address: Some(args.healthz_bind_address),
        metrics_address: Some(args.metrics_bind_address),
        node_port_addresses: args.nodeport_addresses,
    });
    let ns = kubewire_datapath::NetNs::current()?;
    run_node(client, &args.node_name, args.settings(), paths, proxy, ns).await
}

/// Runs node `node_name`'s pod networking and, given its configuration, the service proxy side
/// by side, programming network namespace `ns`; the first to fail ends both.
pub async fn run_node(
    client: kube::Client,
    node_name: &str,
    settings: Settings,
    paths: runtime::CniPaths,
    proxy: Option<kubewire_proxy::runtime::Config>,
    ns: kubewire_datapath::NetNs,
) -> anyhow::Result<()> {
    let pod_network = async {
        runtime::run_node(
            client.clone(),
            node_name.to_string(),
            settings,
            paths,
            ns.try_clone()?,
        )
        .await
        .context("pod networking")
    };
    let Some(proxy) = proxy else {
        return pod_network.await;
    };
    let proxy = async {
        kubewire_proxy::runtime::run(client.clone(), proxy, ns.try_clone()?)
            .await
            .context("service proxy")
    };
    tokio::try_join!(pod_network, proxy)?;
    Ok(())
}
