//! The cross-node half of `kubewire bench cni`: TCP throughput and round-trip latency from a pod
//! on one node to a pod on another, in direct and VXLAN modes, beside the same traffic between
//! two plain namespaces joined by one veth pair (the ratio is the overhead of the pod network).
//!
//! Nodes are [`Testbed`] namespaces; their state is compiled and applied by the same code the
//! agent runs (no API server: the two Nodes are given), pods are made by the real
//! `kubewire-cni` binary. Loopback and namespaces only; bounded loops. Needs root.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kubewire_cni::bench::Latency;
use kubewire_datapath::{NetNs, Netlink, OwnedNetNs, VethSpec};

use crate::apply::{Applier, ApplyError};
use crate::compile::{Mode, NodeInfo, Settings, compile};
use crate::testbed::{Testbed, TestbedError};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the pod network benchmark needs root (it creates network namespaces)")]
    NotRoot,
    #[error("bad arguments: {0}")]
    Args(String),
    #[error("{0}")]
    Testbed(#[from] TestbedError),
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("{0}")]
    Kernel(#[from] kubewire_datapath::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Plugin(#[from] kubewire_cni::BenchError),
    #[error("{0}")]
    Compile(#[from] crate::compile::CompileError),
}

/// Figures of one path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathFigures {
    /// Bulk TCP throughput, bits per second.
    pub bits_per_sec: f64,
    /// Round trips of one byte each way over an established connection.
    pub rtt: Latency,
}

/// What [`bench_pod_network`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub bytes: usize,
    pub round_trips: usize,
    pub veth: PathFigures,
    pub direct: PathFigures,
    pub vxlan: PathFigures,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        writeln!(
            f,
            "pod-to-pod TCP across nodes ({} MiB bulk, {} round trips):",
            self.bytes >> 20,
            self.round_trips
        )?;
        writeln!(
            f,
            "  {:<22} {:>12} {:>9} {:>12} {:>12} {:>9}",
            "path", "throughput", "vs veth", "RTT p50", "RTT p99", "vs veth"
        )?;
        for (name, p) in [
            ("plain veth (baseline)", &self.veth),
            ("direct routes", &self.direct),
            ("VXLAN overlay", &self.vxlan),
        ] {
            writeln!(
                f,
                "  {:<22} {:>7.2} Gb/s {:>8.2}x {:>9.1} us {:>9.1} us {:>8.2}x",
                name,
                p.bits_per_sec / 1e9,
                p.bits_per_sec / self.veth.bits_per_sec.max(1.0),
                us(p.rtt.p50),
                us(p.rtt.p99),
                us(p.rtt.p50) / us(self.veth.rtt.p50).max(1e-3),
            )?;
        }
        Ok(())
    }
}

/// Measures the three paths with the plugin binary [`kubewire_cni::bench::plugin_binary`]
/// finds: `bytes` of bulk data and `round_trips` ping-pongs each.
pub fn bench_pod_network(bytes: usize, round_trips: usize) -> Result<BenchReport, BenchError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(BenchError::NotRoot);
    }
    if !(1 << 20..=1 << 34).contains(&bytes) || !(1..=1_000_000).contains(&round_trips) {
        return Err(BenchError::Args(format!(
            "bytes must be 1 MiB-16 GiB and round trips 1-1000000 (got {bytes}, {round_trips})"
        )));
    }
    let plugin = kubewire_cni::bench::plugin_binary()?;
    let veth = {
        let (a, b, to) = veth_pair()?;
        measure(&a, &b, to, bytes, round_trips)?
    };
    let direct = across_nodes(Mode::Direct, &plugin, bytes, round_trips)?;
    let vxlan = across_nodes(Mode::Vxlan, &plugin, bytes, round_trips)?;
    Ok(BenchReport {
        bytes,
        round_trips,
        veth,
        direct,
        vxlan,
    })
}

/// Two namespaces on one veth pair (192.0.2.1 and .2, TEST-NET-1).
fn veth_pair() -> Result<(OwnedNetNs, OwnedNetNs, IpAddr), BenchError> {
    let tag = format!("kw{}-bench", std::process::id());
    let a = OwnedNetNs::create(&format!("{tag}-va"))?;
    let b = OwnedNetNs::create(&format!("{tag}-vb"))?;
    let nl_a = Netlink::open_in(&a)?;
    nl_a.add_veth(&VethSpec {
        name: "eth0",
        mac: None,
        peer_name: "eth0",
        peer_mac: None,
        peer_netns: Some(&b),
        mtu: None,
        up: true,
    })?;
    let nl_b = Netlink::open_in(&b)?;
    for (nl, last) in [(&nl_a, 1), (&nl_b, 2)] {
        nl.set_link_up_by_name("lo")?;
        let eth0 = nl
            .link("eth0")?
            .ok_or_else(|| kubewire_datapath::Error::Invalid("eth0 vanished".into()))?;
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, last));
        let net = IpNet::new(ip, 24).map_err(|e| BenchError::Args(e.to_string()))?;
        nl.add_address(eth0.index, net, true)?;
        nl.set_link_up(eth0.index, true)?;
    }
    Ok((a, b, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))))
}

/// Two nodes configured by the agent's compile + apply in `mode`, a pod on each.
fn across_nodes(
    mode: Mode,
    plugin: &Path,
    bytes: usize,
    round_trips: usize,
) -> Result<PathFigures, BenchError> {
    let bed = Testbed::new(&format!("bench-{mode:?}").to_lowercase(), 2)?;
    let mut infos = Vec::new();
    for (i, n) in bed.nodes.iter().enumerate() {
        let cidr = format!("10.244.{i}.0/24");
        infos.push(NodeInfo {
            name: n.name.clone(),
            pod_cidrs: vec![cidr.parse().map_err(|_| BenchError::Args(cidr))?],
            internal_ips: vec![n.ip4, n.ip6],
        });
    }
    let settings = Settings {
        mode,
        masquerade: true,
        cluster_cidrs: vec![],
        vxlan_vni: 1,
        vxlan_port: 4789,
    };
    for n in &bed.nodes {
        let (desired, _) = compile(&infos, &n.name, &settings)?;
        let applied =
            n.ns.run(|| Applier::new(settings.clone())?.apply(&desired))??;
        let conf = crate::cni::render(&desired.pod_cidrs, &n.cni_data_dir(), Some(applied.pod_mtu));
        crate::cni::write(&n.cni_conf_dir(), &conf)?;
    }
    let a = bed.nodes[0].add_pod(plugin, "bencha")?;
    let b = bed.nodes[1].add_pod(plugin, "benchb")?;
    let to = b
        .ip(true)
        .ok_or_else(|| BenchError::Args("the pod got no IPv4 address".into()))?;
    measure(&a.ns, &b.ns, to, bytes, round_trips)
}

/// Bulk throughput and ping-pong latency from `client` to a server in `server` at `to`.
fn measure(
    client: &NetNs,
    server: &NetNs,
    to: IpAddr,
    bytes: usize,
    round_trips: usize,
) -> Result<PathFigures, BenchError> {
    let listener = server.run(|| TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)))??;
    let addr = SocketAddr::new(to, listener.local_addr()?.port());
    std::thread::scope(|s| -> Result<PathFigures, BenchError> {
        let serve = s.spawn(move || -> std::io::Result<()> {
            // First connection: sink, then one byte of acknowledgement.
            let (mut bulk, _) = listener.accept()?;
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0;
            while got < bytes {
                match bulk.read(&mut buf)? {
                    0 => break,
                    n => got += n,
                }
            }
            bulk.write_all(&[1])?;
            // Second connection: echo one byte at a time.
            let (mut echo, _) = listener.accept()?;
            echo.set_nodelay(true)?;
            let mut one = [0u8; 1];
            for _ in 0..round_trips {
                echo.read_exact(&mut one)?;
                echo.write_all(&one)?;
            }
            Ok(())
        });
        let connect = || -> Result<TcpStream, BenchError> {
            let stream =
                client.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))??;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            Ok(stream)
        };
        let mut bulk = connect()?;
        let chunk = vec![0x6bu8; 1 << 16];
        let start = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            bulk.write_all(&chunk[..n])?;
            sent += n;
        }
        let mut ack = [0u8; 1];
        bulk.read_exact(&mut ack)?;
        let elapsed = start.elapsed();

        let mut echo = connect()?;
        echo.set_nodelay(true)?;
        let mut samples = Vec::with_capacity(round_trips);
        let mut one = [0u8; 1];
        for _ in 0..round_trips {
            let t = Instant::now();
            echo.write_all(&[7])?;
            echo.read_exact(&mut one)?;
            samples.push(t.elapsed());
        }
        serve
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        Ok(PathFigures {
            bits_per_sec: bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9),
            rtt: Latency::of(&samples),
        })
    })
}
