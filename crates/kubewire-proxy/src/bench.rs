//! `kubewire bench proxy`: what programming Services costs, against kube-proxy's nftables-mode
//! layout for the same Services, side by side in fresh network namespaces (needs root).
//!
//! The peer is rendered here from the same model, after kube-proxy's documented layout
//! (`pkg/proxy/nftables`: a `service-ips` verdict map, one chain per service port with a
//! `numgen … vmap` over one chain per endpoint, each endpoint chain marking hairpin traffic and
//! DNATing) — the shape whose per-chain kernel cost DESIGN.md measured; it is not kube-proxy
//! itself, which cannot run here.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubewire_datapath::OwnedNetNs;
use kubewire_datapath::nft::NftError;

use crate::compile::{NodeContext, NodePortAddresses, compile};
use crate::model::Desired;
use crate::nft::Tables;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Kernel(#[from] kubewire_datapath::Error),
    #[error("{0}")]
    Nft(#[from] NftError),
    #[error("building the synthetic cluster: {0}")]
    Synthetic(String),
}

/// The figures of one run.
#[derive(Debug)]
pub struct Report {
    pub services: usize,
    pub endpoints: usize,
    pub compile: Duration,
    pub ours: Side,
    pub peer: Side,
}

/// One ruleset's costs.
#[derive(Debug, Default)]
pub struct Side {
    /// Chains and rules in the table.
    pub chains: usize,
    pub rules: usize,
    pub full_load: Duration,
    pub full_bytes: usize,
    pub change_load: Duration,
    pub change_bytes: usize,
}

/// Programs `services` ClusterIP Services of `endpoints` endpoints each, then replaces one
/// endpoint of one Service, in both layouts.
pub fn bench_proxy(services: usize, endpoints: usize) -> Result<Report, BenchError> {
    let node = NodeContext {
        name: "node0".into(),
        zone: None,
        node_ips: Vec::new(),
        node_port_addresses: NodePortAddresses::All,
        pod_cidrs: vec!["10.0.0.0/8".parse().map_err(|_| synthetic("cidr"))?],
    };
    let (svcs, mut slices) = synthetic_cluster(services, endpoints)?;
    let start = Instant::now();
    let (before, _) = compile(&svcs, &slices, &node);
    let compile_time = start.elapsed();
    // One endpoint of the first Service is replaced by a new pod.
    if let Some(ep) = slices
        .first_mut()
        .and_then(|s| s.endpoints.as_mut())
        .and_then(|e| e.last_mut())
    {
        ep.addresses = vec!["10.255.255.254".into()];
    }
    let (after, _) = compile(&svcs, &slices, &node);

    let ours_ns = OwnedNetNs::create(&format!("kwbench-{}-ours", std::process::id()))?;
    let tables_before = Tables::from_desired(&before);
    let full = tables_before.render_full();
    let full_load = timed_apply(&ours_ns, &full)?;
    let change = tables_before
        .render_delta(&Tables::from_desired(&after))
        .ok_or_else(|| synthetic("the change needed a re-declaration"))?;
    let change_load = timed_apply(&ours_ns, &change)?;
    let ours = Side {
        chains: full.matches("  chain ").count(),
        rules: rules_in(&full),
        full_load,
        full_bytes: full.len(),
        change_load,
        change_bytes: change.len(),
    };
    drop(ours_ns);

    let peer_ns = OwnedNetNs::create(&format!("kwbench-{}-peer", std::process::id()))?;
    let full = kube_proxy_layout(&before);
    let full_load = timed_apply(&peer_ns, &full)?;
    let change = kube_proxy_change(&before, &after);
    let change_load = timed_apply(&peer_ns, &change)?;
    let peer = Side {
        chains: full.matches("add chain ").count(),
        rules: full.matches("add rule ").count(),
        full_load,
        full_bytes: full.len(),
        change_load,
        change_bytes: change.len(),
    };
    Ok(Report {
        services,
        endpoints,
        compile: compile_time,
        ours,
        peer,
    })
}

fn synthetic(what: &str) -> BenchError {
    BenchError::Synthetic(what.to_string())
}

fn timed_apply(ns: &OwnedNetNs, script: &str) -> Result<Duration, BenchError> {
    let script = script.to_string();
    ns.run(move || {
        let start = Instant::now();
        kubewire_datapath::nft::apply(&script).map(|()| start.elapsed())
    })?
    .map_err(BenchError::from)
}

/// The rules of a [`Tables::render_full`] script: the lines inside its chains, less hooks.
fn rules_in(full: &str) -> usize {
    full.lines()
        .skip_while(|l| !l.starts_with("  chain "))
        .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with("type "))
        .count()
}

/// `services` Services `svc-<i>` with ClusterIPs from 10.96.0.0/16 and one slice each of
/// `endpoints` ready endpoints (distinct pod IPs from 10.128.0.0/9) on port 8080.
pub fn synthetic_cluster(
    services: usize,
    endpoints: usize,
) -> Result<(Vec<Service>, Vec<EndpointSlice>), BenchError> {
    if services > 65_000 || services.saturating_mul(endpoints) > 8_000_000 {
        return Err(synthetic("at most 65000 Services and 8M endpoints"));
    }
    let mut svcs = Vec::with_capacity(services);
    let mut slices = Vec::with_capacity(services);
    for i in 0..services {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32);
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
            "spec": {"clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))
        .map_err(|e| synthetic(&e.to_string()))?;
        let eps: Vec<serde_json::Value> = (0..endpoints)
            .map(|e| {
                let n = u32::try_from(i * endpoints + e).unwrap_or(u32::MAX);
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 1)) + n);
                serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": "node1"})
            })
            .collect();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc-{i}-1"), "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
        .map_err(|e| synthetic(&e.to_string()))?;
        svcs.push(svc);
        slices.push(slice);
    }
    Ok((svcs, slices))
}

/// kube-proxy's nftables layout for the ClusterIP entries of `desired` (IPv4), as the `add`
/// commands its full sync sends.
fn kube_proxy_layout(desired: &Desired) -> String {
    let mut s = String::from(
        "add table ip kube-proxy\n\
         add chain ip kube-proxy mark-for-masquerade\n\
         add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000\n\
         add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }\n\
         add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n\
         add chain ip kube-proxy services\n\
         add rule ip kube-proxy nat-prerouting jump services\n\
         add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n",
    );
    for (i, (key, entry)) in desired.entries.iter().enumerate() {
        let Some(IpAddr::V4(vip)) = key.ip else {
            continue;
        };
        // A `goto` needs its target chain to exist already.
        for (k, b) in entry.backends.iter().enumerate() {
            endpoint_chain(&mut s, i, k, b.ip(), b.port());
        }
        service_chain(&mut s, i, entry.backends.iter().map(|b| b.ip()).collect());
        let _ = writeln!(
            s,
            "add element ip kube-proxy service-ips {{ {vip} . {} . {} : goto service-{i} }}",
            key.protocol, key.port
        );
    }
    s
}

fn service_chain(s: &mut String, i: usize, backends: Vec<IpAddr>) {
    let _ = writeln!(s, "add chain ip kube-proxy service-{i}");
    let _ = writeln!(
        s,
        "add rule ip kube-proxy service-{i} ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
    );
    let targets: Vec<String> = (0..backends.len())
        .map(|k| format!("{k} : goto endpoint-{i}-{k}"))
        .collect();
    let _ = writeln!(
        s,
        "add rule ip kube-proxy service-{i} numgen random mod {} vmap {{ {} }}",
        backends.len(),
        targets.join(", ")
    );
}

fn endpoint_chain(s: &mut String, i: usize, k: usize, ip: IpAddr, port: u16) {
    let _ = writeln!(s, "add chain ip kube-proxy endpoint-{i}-{k}");
    let _ = writeln!(
        s,
        "add rule ip kube-proxy endpoint-{i}-{k} ip saddr {ip} jump mark-for-masquerade"
    );
    let _ = writeln!(
        s,
        "add rule ip kube-proxy endpoint-{i}-{k} meta l4proto tcp dnat to {ip}:{port}"
    );
}

/// kube-proxy's partial sync for the entries that differ: the service chain is flushed and
/// rewritten, the changed endpoint chains are recreated.
fn kube_proxy_change(before: &Desired, after: &Desired) -> String {
    let mut s = String::new();
    for (i, ((key, old), (_, new))) in before.entries.iter().zip(&after.entries).enumerate() {
        if old == new || key.ip.is_none_or(|ip| !ip.is_ipv4()) {
            continue;
        }
        let _ = writeln!(s, "flush chain ip kube-proxy service-{i}");
        for (k, (o, n)) in old.backends.iter().zip(&new.backends).enumerate() {
            if o != n {
                let _ = writeln!(s, "flush chain ip kube-proxy endpoint-{i}-{k}");
                let _ = writeln!(s, "delete chain ip kube-proxy endpoint-{i}-{k}");
                endpoint_chain(&mut s, i, k, n.ip(), n.port());
            }
        }
        // `add chain` of an existing chain is a no-op, so the service chain's rules follow.
        service_chain(&mut s, i, new.backends.iter().map(|b| b.ip()).collect());
    }
    s
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        let ratio = |ours: Duration, peer: Duration| {
            format!("{:.1}x", peer.as_secs_f64() / ours.as_secs_f64().max(1e-9))
        };
        let (o, p) = (&self.ours, &self.peer);
        writeln!(
            f,
            "{} ClusterIP Services × {} endpoints; compile (Services + EndpointSlices → model): {}",
            self.services,
            self.endpoints,
            ms(self.compile)
        )?;
        let rows = [
            [
                "".to_string(),
                "kubewire".into(),
                "kube-proxy layout".into(),
                "faster".into(),
            ],
            [
                "chains / rules".into(),
                format!("{} / {}", o.chains, o.rules),
                format!("{} / {}", p.chains, p.rules),
                String::new(),
            ],
            [
                "table load (nft -f)".into(),
                ms(o.full_load),
                ms(p.full_load),
                ratio(o.full_load, p.full_load),
            ],
            [
                "  script size".into(),
                format!("{} KiB", o.full_bytes / 1024),
                format!("{} KiB", p.full_bytes / 1024),
                String::new(),
            ],
            [
                "one endpoint replaced".into(),
                ms(o.change_load),
                ms(p.change_load),
                ratio(o.change_load, p.change_load),
            ],
            [
                "  script size".into(),
                format!("{} B", o.change_bytes),
                format!("{} B", p.change_bytes),
                String::new(),
            ],
        ];
        for r in rows {
            writeln!(f, "{:<24}{:>18}{:>22}{:>9}", r[0], r[1], r[2], r[3])?;
        }
        Ok(())
    }
}
