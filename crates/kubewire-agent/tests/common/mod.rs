//! What the agent's kernel tests share: the in-process API server, Nodes registered for a
//! [`Testbed`], node IPAM, one agent per node, pods made by the real `kubewire-cni`.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubewire_agent::Settings;
use kubewire_agent::compile::Mode;
use kubewire_agent::runtime::CniPaths;
use kubewire_agent::testbed::{Host, Pod, Testbed};
use kubewire_apiserver::testing::TestServer;
use kubewire_controllers::nodeipam::{IpamConfig, runtime as nodeipam};
use serde_json::json;

/// Tasks aborted on drop (agents, the controller).
#[derive(Default)]
pub struct Tasks(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

pub struct Cluster {
    pub client: kube::Client,
    _server: TestServer,
}

/// An API server with dual-stack service ranges (10.96.0.0/16, fd00:10:96::/112).
pub async fn api_server() -> Cluster {
    let server = TestServer::start_with(|c| {
        c.service_cidrs = vec![
            "10.96.0.0/16".parse().expect("cidr"),
            "fd00:10:96::/112".parse().expect("cidr"),
        ];
    })
    .await;
    Cluster {
        client: kubewire_api::client::from_kubeconfig(&server.kubeconfig)
            .await
            .unwrap(),
        _server: server,
    }
}

pub fn plugin() -> PathBuf {
    // The plugin binary beside this test's target dir (cargo builds it with the workspace's
    // `kubewire-cni` dependency of this crate: `cargo build -p kubewire-cni` first if missing).
    kubewire_cni::bench::plugin_binary().unwrap_or_else(|e| {
        panic!("{e}: run `cargo build -p kubewire-cni` with the same CARGO_TARGET_DIR first")
    })
}

pub fn settings(mode: Mode) -> Settings {
    Settings {
        mode,
        masquerade: true,
        cluster_cidrs: vec![],
        vxlan_vni: 1,
        vxlan_port: 4789,
    }
}

/// Where the proxies serve `/healthz` (each node is a namespace of its own).
pub const HEALTHZ: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 10256);

/// Where the proxies serve `/metrics`.
pub const METRICS: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 10249);

/// Starts node `node`'s agent: pod networking, and the service proxy when `proxy`.
pub fn start_agent(
    client: &kube::Client,
    node: &Host,
    mode: Mode,
    proxy: bool,
) -> tokio::task::JoinHandle<()> {
    let (client, name) = (client.clone(), node.name.clone());
    let paths = CniPaths {
        conf_dir: node.cni_conf_dir(),
        data_dir: node.cni_data_dir(),
    };
    let proxy = proxy.then(|| kubewire_proxy::runtime::Config {
        node_name: name.clone(),
        cluster_cidrs: vec![],
        healthz_address: Some(HEALTHZ),
        metrics_address: Some(METRICS),
        node_port_addresses: kubewire_proxy::compile::NodePortAddresses::Primary,
    });
    let ns = node.ns.try_clone().unwrap();
    tokio::spawn(async move {
        if let Err(e) =
            kubewire_agent::run_node(client, &name, settings(mode), paths, proxy, ns).await
        {
            panic!("agent {name}: {e:#}");
        }
    })
}

/// Registers the testbed's nodes (addresses; zone `zone-<i % 2>`), starts node IPAM (task 0) and
/// an agent per node (tasks 1..), and waits until every node's CNI conflist is written.
pub async fn start_nodes(client: &kube::Client, bed: &Testbed, mode: Mode, proxy: bool) -> Tasks {
    let nodes: Api<Node> = Api::all(client.clone());
    for (i, n) in bed.nodes.iter().enumerate() {
        let node: Node = serde_json::from_value(json!({"metadata": {
            "name": n.name,
            "labels": {"topology.kubernetes.io/zone": format!("zone-{}", i % 2)},
        }}))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let status = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": n.ip4.to_string()},
            {"type": "InternalIP", "address": n.ip6.to_string()},
            {"type": "Hostname", "address": n.name},
        ]}});
        nodes
            .patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    let mut tasks = Tasks::default();
    let ipam = IpamConfig::new(
        vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ],
        24,
        64,
    )
    .unwrap();
    tasks.0.push(tokio::spawn({
        let client = client.clone();
        async move { nodeipam::run(client, ipam).await.unwrap() }
    }));
    for n in &bed.nodes {
        tasks.0.push(start_agent(client, n, mode, proxy));
    }
    // The agents write the conflist once node IPAM has given the node its CIDRs.
    for n in &bed.nodes {
        let p = n.cni_conf_dir().join(kubewire_agent::cni::CONFLIST_NAME);
        eventually(&format!("conflist of {}", n.name), || {
            p.exists().then_some(())
        })
        .await;
    }
    tasks
}

/// One pod per entry of `on` (a node index), made by the CNI plugin; dual-stack.
pub async fn make_pods(bed: &std::sync::Arc<Testbed>, on: &[usize]) -> Vec<Pod> {
    let (bed, on) = (bed.clone(), on.to_vec());
    let pods: Vec<Pod> = blocking(move || {
        let bin = plugin();
        on.iter()
            .enumerate()
            .map(|(i, n)| bed.nodes[*n].add_pod(&bin, &format!("pod{i}")).unwrap())
            .collect()
    })
    .await;
    for p in &pods {
        assert_eq!(p.ips.len(), 2, "dual-stack pod: {:?}", p.ips);
    }
    pods
}

/// Blocking work (sockets, netlink) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Exchanges one line over an open echo connection.
pub fn round_trip(stream: &mut std::net::TcpStream, reader: &mut BufReader<std::net::TcpStream>) {
    stream.write_all(b"still there?\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "still there?\n");
}
