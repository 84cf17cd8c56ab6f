//! `kubewire bench …`: figures for the speed and memory targets of each issue.

pub mod apiserver;
pub mod lab;

use anyhow::{Context, Result};

/// ADD/DEL latency of the CNI plugin, one pod at a time and eight at a time.
pub fn cni(pods: usize) -> Result<()> {
    println!("kubewire bench cni: {pods} pods, real plugin binary, fresh network namespaces");
    for parallel in [1, 8] {
        let report =
            kubewire_cni::bench_add_del(pods, parallel).context("running the CNI benchmark")?;
        println!("{report}");
    }
    println!("goal: ADD p50 ≤ 20 ms (published: bridge plugin ~200 ms, Calico ~150 ms)\n");
    let network = kubewire_agent::bench::bench_pod_network(256 << 20, 2000)
        .context("measuring pod-to-pod traffic")?;
    println!("{network}");
    Ok(())
}

/// The service proxy's table against kube-proxy's nftables layout for the same Services.
pub fn proxy(services: usize, endpoints: usize) -> Result<()> {
    println!("kubewire bench proxy: fresh network namespaces, real nft transactions");
    let report = kubewire_proxy::bench::bench_proxy(services, endpoints)
        .context("running the proxy benchmark (needs root and nft)")?;
    println!("{report}");
    Ok(())
}
