//! kubewire's cluster-wide controllers, run together by `kubewire controller`: node IPAM (pod
//! CIDRs for Nodes, [`nodeipam`]), the EndpointSlice controller (EndpointSlices and legacy
//! Endpoints for every Service with a selector, [`endpointslice`]) and, when
//! `--load-balancer-ip-range` is given, LoadBalancer IPAM (addresses in the status of
//! `type: LoadBalancer` Services, [`loadbalancer`]). Each controller is a pure reconcile over a
//! snapshot of API objects plus a thin runtime loop (kube-rs reflectors, writes remembered until
//! the watch shows them, retries with backoff, Events).
//!
//! It is not a per-node piece: nothing here touches the kernel (that is `kubewire-agent`), and
//! it talks to nothing but the Kubernetes API.

pub mod endpointslice;
pub mod events;
pub mod loadbalancer;
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
    /// Most endpoints in one EndpointSlice (1 to 1000); a Service with more endpoints for one
    /// address type and port set gets more slices.
    #[arg(long, default_value_t = endpointslice::DEFAULT_MAX_ENDPOINTS_PER_SLICE)]
    pub max_endpoints_per_slice: usize,
    /// Addresses to give LoadBalancer Services (those without `spec.loadBalancerClass`) in
    /// `status.loadBalancer.ingress`: one CIDR, or two of different IP families (dual-stack
    /// Services get one address of each). Neither the network address nor the IPv4 broadcast
    /// address is given. Unset: LoadBalancer Services are left to another implementation.
    #[arg(long, value_delimiter = ',', value_name = "CIDR[,CIDR]")]
    pub load_balancer_ip_range: Vec<IpNet>,
}

/// Runs the controllers until the process is stopped, or until one of them fails: then the
/// others stop too and the error is returned, so that a supervisor restarts the whole set.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let ipam = nodeipam::IpamConfig::new(
        args.cluster_cidr,
        args.node_cidr_mask_size_ipv4,
        args.node_cidr_mask_size_ipv6,
    )?;
    let slices = endpointslice::Config::new(args.max_endpoints_per_slice)?;
    let load_balancer = if args.load_balancer_ip_range.is_empty() {
        None
    } else {
        Some(loadbalancer::Config::new(args.load_balancer_ip_range)?)
    };
    let client = kubewire_api::client::from_kubeconfig(&args.kubeconfig).await?;
    let load_balancer_ipam = async {
        match load_balancer {
            Some(config) => loadbalancer::runtime::run(client.clone(), config).await,
            // Off: never finishes, so it never ends the set.
            None => std::future::pending().await,
        }
    };
    let (controller, result) = tokio::select! {
        r = nodeipam::runtime::run(client.clone(), ipam) => ("node IPAM", r),
        r = endpointslice::runtime::run(client.clone(), slices) => ("EndpointSlice", r),
        r = load_balancer_ipam => ("LoadBalancer IPAM", r),
    };
    match result {
        Err(e) => Err(anyhow::Error::new(e).context(format!("the {controller} controller failed"))),
        // The loops run until dropped; returning at all is a failure of the set.
        Ok(()) => anyhow::bail!("the {controller} controller stopped"),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_parse_with_their_defaults() {
        Cli::command().debug_assert();
        let parse = |extra: &[&str]| {
            let argv = ["controller", "--kubeconfig", "kc"].iter().chain(extra);
            Cli::try_parse_from(argv).map(|c| c.args)
        };
        let defaults = parse(&[]).expect("defaults parse");
        assert_eq!(
            defaults.max_endpoints_per_slice,
            endpointslice::DEFAULT_MAX_ENDPOINTS_PER_SLICE
        );
        assert!(defaults.load_balancer_ip_range.is_empty());
        let set = parse(&["--max-endpoints-per-slice", "5"]).expect("flag parses");
        assert_eq!(set.max_endpoints_per_slice, 5);
        assert!(parse(&["--max-endpoints-per-slice", "many"]).is_err());
        let ranges = parse(&["--load-balancer-ip-range", "203.0.113.0/28,fd00:1b::/112"])
            .expect("flag parses");
        assert_eq!(
            ranges.load_balancer_ip_range,
            vec![
                "203.0.113.0/28".parse::<IpNet>().expect("a CIDR"),
                "fd00:1b::/112".parse::<IpNet>().expect("a CIDR"),
            ]
        );
        assert!(parse(&["--load-balancer-ip-range", "203.0.113.0"]).is_err());
    }
}
