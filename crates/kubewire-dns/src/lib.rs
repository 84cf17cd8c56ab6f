//! kubewire's cluster DNS (`kubewire dns`), the job CoreDNS does in a cluster: the names the
//! Kubernetes DNS spec (schema 1.1.0) defines for Services and their endpoints, answered from the
//! API, and every other name forwarded to one upstream server through a small cache.
//!
//! Shaped as the rest of kubewire: [`records`] is a pure [`Index::build`](records::Index::build)
//! of Services and EndpointSlices into the cluster zone and its reverse names; [`message`] is
//! the pure decision of what one request gets (authoritative answer, NXDOMAIN/NODATA, forward)
//! and its fitting to the transport; [`forward`] asks the upstream; [`server`] runs the
//! reflectors and the UDP/TCP listeners.
//!
//! It is not a recursive resolver, not a general authoritative server (no zone files, transfers
//! or DNSSEC), and writes nothing to the API. Pod records `a-b-c-d.<ns>.pod.<zone>` are answered
//! from the name alone (CoreDNS `pods insecure`); autopath, metrics and node-local caching are
//! not here yet.

pub mod forward;
pub mod message;
pub mod records;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;

pub use server::{Config, DnsError, Sockets, serve};

/// `kubewire dns` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to work against.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Address to serve DNS on, over UDP and TCP (repeat for more).
    #[arg(long, required = true)]
    pub listen: Vec<SocketAddr>,
    /// The cluster domain the Services' names are under.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Where names outside the cluster are forwarded (port 53 unless given). Default: the first
    /// nameserver of /etc/resolv.conf that is not a loopback stub; without one, such names are
    /// refused.
    #[arg(long)]
    pub upstream: Option<SocketAddr>,
}

/// Runs the DNS server until the process is stopped.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let upstream = match args.upstream {
        Some(upstream) => Some(upstream),
        None => std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|text| upstream_from_resolv_conf(&text)),
    };
    if upstream.is_none() {
        tracing::warn!("dns: no upstream; names outside the cluster will be refused");
    }
    let config = Config::new(&args.cluster_domain, upstream)?;
    let client = kubewire_api::client::from_kubeconfig(&args.kubeconfig).await?;
    let sockets = Sockets::bind(&args.listen).await?;
    serve(client, config, sockets).await.context("cluster DNS")
}

/// The first `nameserver` of a resolv.conf that is not a loopback address: a local stub (such
/// as systemd-resolved's 127.0.0.53) would forward back to us when we serve the node, the
/// forwarding loop CoreDNS users hit (coredns#2087).
pub fn upstream_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // A scoped IPv6 address (`fe80::1%eth0`) is not an `IpAddr`; it is skipped.
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .find(|ip| !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_skips_loopback_stubs() {
        let text = "# generated\nsearch lan\nnameserver 127.0.0.53\nnameserver ::1\n\
                    nameserver 192.0.2.53\nnameserver 198.51.100.1\n";
        assert_eq!(
            upstream_from_resolv_conf(text),
            Some("192.0.2.53:53".parse().expect("an address"))
        );
        assert_eq!(upstream_from_resolv_conf("nameserver 127.0.0.1\n"), None);
        assert_eq!(
            upstream_from_resolv_conf("nameserver 2001:db8::1\n"),
            Some("[2001:db8::1]:53".parse().expect("an address"))
        );
    }

    #[test]
    fn args_parse_with_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cli = Cli::try_parse_from([
            "dns",
            "--kubeconfig",
            "/k",
            "--listen",
            "127.0.0.1:53",
            "--listen",
            "[::1]:53",
        ])
        .expect("parses");
        assert_eq!(cli.args.listen.len(), 2);
        assert_eq!(cli.args.cluster_domain, "cluster.local");
        assert_eq!(cli.args.upstream, None);
        assert!(Cli::try_parse_from(["dns", "--kubeconfig", "/k"]).is_err());
    }
}
