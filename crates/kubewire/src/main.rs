//! `kubewire`: one subcommand per role, thin wiring over the libraries.

mod bench;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

#[derive(Parser)]
#[command(
    name = "kubewire",
    version,
    about = "The Kubernetes network, in one binary",
    long_about = "The Kubernetes network, in one binary: an embedded API server, and (as they land) the \
controller, node agent, CNI plugin, cluster DNS, gateway and a local multi-node lab."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded, Kubernetes-compatible API server (kubectl and kube-rs work against it).
    Apiserver(ApiserverArgs),
    /// Cluster-wide controllers: node IPAM (gives every Node its pod CIDRs), EndpointSlices and
    /// Endpoints for every Service with a selector, and load-balancer IPs from configured ranges.
    Controller(kubewire_controllers::Args),
    /// Cluster DNS per the Kubernetes DNS spec: Services, headless endpoints, SRV, PTR and
    /// ExternalName in the cluster domain; everything else forwarded (and cached) upstream.
    Dns(kubewire_dns::Args),
    /// Per-node agent: pod routes between nodes (direct or VXLAN), masquerade, the CNI config,
    /// and the service proxy (ClusterIP, NodePort, external and load-balancer IPs, in nftables).
    Agent(kubewire_agent::Args),
    /// Workload controllers and scheduler: Deployments, ReplicaSets, StatefulSets, DaemonSets,
    /// and binding pending pods to Nodes.
    Workloads(kubewire_workloads::Args),
    /// A whole multi-node cluster on this machine: nodes and pods are network namespaces, pods
    /// are real processes (needs root).
    #[command(subcommand)]
    Lab(kubewire_lab::cluster::LabCommand),
    /// The lab's built-in test image: HTTP on every --http-port (8080 by default) with /hostname,
    /// /clientip, /echo?msg=, /healthz, /readyz; UDP and SCTP echo (agnhost netexec style).
    Serve(kubewire_serve::ServeArgs),
    /// Plumbing the other roles run; not for people.
    #[command(subcommand, hide = true)]
    Internal(InternalCommand),
    /// Measure a component and print the figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable creates per second (sequential and 16 clients), list of 100k pods, and watch
    /// fan-out delay (200 watchers, 10k writes), against an in-process server on loopback.
    Apiserver(bench::apiserver::Options),
    /// Time from `lab up` to all nodes Ready and from a 100-replica Deployment to 100 Ready
    /// pods, and the memory of each component at that size (needs root).
    Lab(bench::lab::Options),
    /// CNI ADD and DEL latency (p50/p99) of the real `kubewire-cni` binary against fresh network
    /// namespaces, sequential and 8 at a time; then pod-to-pod TCP throughput and round trips
    /// across nodes (direct and VXLAN) beside two plain namespaces on one veth. Needs root; run `cargo build --release --workspace`
    /// first so the plugin sits beside this binary (or set KUBEWIRE_CNI_BIN).
    Cni {
        /// Pods per run.
        #[arg(long, default_value_t = 200)]
        pods: usize,
    },
    /// Service proxy: compile time, nftables table load, and the update after one endpoint
    /// changes, beside kube-proxy's nftables-mode layout for the same Services (rendered here),
    /// each in a fresh network namespace. Needs root.
    Proxy {
        /// ClusterIP Services.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Endpoints per Service.
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
    },
}

#[derive(Subcommand)]
enum InternalCommand {
    /// Become a container process of a pod: enter its network namespace, take private mount and
    /// UTS namespaces with the pod's files in place, and exec the command (the lab kubelet runs
    /// this for every container).
    ExecInPod(kubewire_lab::ExecArgs),
    /// Exec a command inside a network namespace (a lab node's agent and kubelet).
    ExecInNetns(kubewire_lab::NetnsExecArgs),
}

#[derive(Args)]
struct ApiserverArgs {
    /// Address to listen on. Loopback unless you say otherwise.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where objects are kept (an embedded ACID store), and where the kubeconfig is written.
    #[arg(long)]
    data_dir: PathBuf,
    /// Static token file (CSV: token,user,uid[,"groups"]); every request then needs
    /// `Authorization: Bearer <token>`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve HTTPS with a certificate signed by a CA kept in the data dir (ca.crt).
    #[arg(long)]
    tls: bool,
    /// ClusterIP range: one CIDR, or two of different families for dual-stack (primary first).
    #[arg(long, default_value = "10.96.0.0/12", value_delimiter = ',')]
    service_cluster_ip_range: Vec<IpNet>,
    /// NodePort range, A-B inclusive.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: (u16, u16),
    /// Address pods use to reach this server (endpoints of the default/kubernetes Service).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// How many recent changes a watch can resume from before it must relist (410 Gone).
    #[arg(long, default_value_t = 100_000)]
    watch_history: usize,
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a range like 30000-32767"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port number"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port number"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?} is not a range of ports from low to high"));
    }
    Ok((a, b))
}

async fn apiserver(args: ApiserverArgs) -> Result<()> {
    if args.service_cluster_ip_range.is_empty() || args.service_cluster_ip_range.len() > 2 {
        bail!("--service-cluster-ip-range takes one CIDR or two (one per IP family)");
    }
    let mut config = kubewire_apiserver::Config::new(args.listen, &args.data_dir);
    config.token_file = args.token_file;
    config.tls = args.tls;
    config.service_cidrs = args.service_cluster_ip_range;
    config.node_port_range = args.service_node_port_range;
    config.advertise_address = args.advertise_address;
    config.watch_history = args.watch_history;
    let server = kubewire_apiserver::Server::start(config)
        .await
        .with_context(|| {
            format!(
                "starting the API server with data dir {}",
                args.data_dir.display()
            )
        })?;
    let kubeconfig = server.kubeconfig_path().display().to_string();
    eprintln!("kubewire apiserver listening on {}", server.local_addr());
    eprintln!("  kubectl: export KUBECONFIG={kubeconfig}");
    server.run().await;
    Ok(())
}

fn main() {
    let command = match Cli::parse().command {
        // Before anything can start a thread: unsharing a mount namespace needs a single thread.
        Command::Internal(InternalCommand::ExecInPod(args)) => {
            return exit_on_error(
                kubewire_lab::exec_in_pod(&args)
                    .map(|_| ())
                    .map_err(Into::into),
            );
        }
        Command::Internal(InternalCommand::ExecInNetns(args)) => {
            return exit_on_error(
                kubewire_lab::exec_in_netns(&args)
                    .map(|_| ())
                    .map_err(Into::into),
            );
        }
        other => other,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // The CNI bench drives the plugin's blocking netlink client, which owns its own runtime;
    // the lab commands run their own small runtimes around blocking kernel work.
    let command = match command {
        Command::Bench(BenchCommand::Cni { pods }) => return exit_on_error(bench::cni(pods)),
        Command::Bench(BenchCommand::Proxy {
            services,
            endpoints,
        }) => return exit_on_error(bench::proxy(services, endpoints)),
        Command::Lab(cmd) => return exit_on_error(kubewire_lab::cluster::run(cmd)),
        other => other,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Apiserver(args) => apiserver(args).await,
            Command::Serve(args) => kubewire_serve::run(args).await,
            Command::Controller(args) => kubewire_controllers::run(args).await,
            Command::Workloads(args) => kubewire_workloads::run_cli(args).await,
            Command::Agent(args) => kubewire_agent::run(args).await,
            Command::Dns(args) => kubewire_dns::run(args).await,
            Command::Bench(BenchCommand::Apiserver(opts)) => bench::apiserver::run(opts).await,
            Command::Bench(BenchCommand::Lab(opts)) => bench::lab::run(opts).await,
            Command::Bench(BenchCommand::Cni { .. } | BenchCommand::Proxy { .. })
            | Command::Internal(_)
            | Command::Lab(_) => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    exit_on_error(result);
}

fn exit_on_error(result: Result<()>) {
    if let Err(e) = result {
        // One clear line: the chain of causes, outermost first, each said once (some libraries
        // repeat their source in their own message).
        let mut line = String::new();
        for cause in e.chain().map(|c| c.to_string()) {
            if line.contains(&cause) {
                continue;
            }
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
        eprintln!("error: {line}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's flags are well-formed (clap checks them only when a command is used).
    #[test]
    fn command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
