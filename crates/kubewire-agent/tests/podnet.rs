//! The agent against the real kernel: three node namespaces on a shared bridge (in a "lan"
//! namespace), an external host on the same LAN, the in-process API server with the node IPAM
//! controller handing out pod CIDRs, one agent per node (its Kubernetes client in the test's
//! namespace, its apply thread inside the node's), and pods made by the real `kubewire-cni`
//! binary from the conflist the agent wrote.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use kubewire_agent::compile::Mode;
use kubewire_agent::compile::VXLAN_DEVICE;
use kubewire_agent::testbed::{EchoServer, Host, Testbed, connect, seen_by_server};
use kubewire_datapath::overlay::RTPROT_KUBEWIRE;
use kubewire_datapath::{Netlink, Route, testutil};

mod common;
use common::{
    api_server, blocking, eventually, make_pods, plugin, round_trip, sock, start_agent, start_nodes,
};

/// The agent-owned routes of a node (both families).
/// (On a thread of its own inside the node: netlink runs its own runtime.)
fn owned_routes(node: &Host) -> BTreeSet<(IpNet, Option<IpAddr>)> {
    node.ns
        .run(|| {
            let nl = Netlink::open().unwrap();
            let mut out = BTreeSet::new();
            for v6 in [false, true] {
                for r in nl.routes_by_protocol(v6, 254, RTPROT_KUBEWIRE).unwrap() {
                    out.insert((r.dst, r.gateway));
                }
            }
            out
        })
        .unwrap()
}

/// The number of FDB entries on the node's VXLAN device.
fn vxlan_peers(node: &Host) -> usize {
    node.ns
        .run(|| {
            let nl = Netlink::open().unwrap();
            let vx = nl.link(VXLAN_DEVICE).unwrap().unwrap();
            nl.fdb(vx.index).unwrap().len()
        })
        .unwrap()
}

async fn scenario(mode: Mode, tag: &str) {
    let cluster = api_server().await;
    let client = cluster.client.clone();
    let bed = blocking({
        let tag = tag.to_string();
        move || Testbed::new(&tag, 3).unwrap()
    })
    .await;
    let bed = std::sync::Arc::new(bed);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut tasks = start_nodes(&client, &bed, mode, false).await;
    let pods = std::sync::Arc::new(make_pods(&bed, &[0, 1, 2]).await);

    let pod_servers: Vec<EchoServer> = pods
        .iter()
        .map(|p| EchoServer::start(&p.ns).unwrap())
        .collect();
    let node_servers: Vec<EchoServer> = bed
        .nodes
        .iter()
        .map(|n| EchoServer::start(&n.ns).unwrap())
        .collect();
    let ext_server = EchoServer::start(&bed.external.ns).unwrap();
    let pod_ports: Vec<u16> = pod_servers.iter().map(|s| s.port).collect();
    let node_ports: Vec<u16> = node_servers.iter().map(|s| s.port).collect();
    let ext_port = ext_server.port;

    // Routes converge within moments of the last Node update.
    let (b, p) = (bed.clone(), pods.clone());
    let target = sock(p[2].ip(true).unwrap(), pod_ports[2]);
    let start = Instant::now();
    blocking(move || {
        while seen_by_server(&p[0].ns, target).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pod0 never reached pod2"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(b);
    })
    .await;

    // Every pod reaches every other pod, both families, unmasqueraded; every node; and the
    // outside, masqueraded to its node's address.
    let (b, p) = (bed.clone(), pods.clone());
    let (pp, np) = (pod_ports.clone(), node_ports.clone());
    blocking(move || {
        for (i, from) in p.iter().enumerate() {
            for v4 in [true, false] {
                let me = from.ip(v4).unwrap();
                for (j, to) in p.iter().enumerate() {
                    if i != j {
                        let seen = seen_by_server(&from.ns, sock(to.ip(v4).unwrap(), pp[j]))
                            .unwrap_or_else(|e| panic!("pod{i} -> pod{j} ({v4}): {e}"));
                        assert_eq!(seen, me, "pod{i} -> pod{j} was masqueraded");
                    }
                }
                for (j, node) in b.nodes.iter().enumerate() {
                    let ip = if v4 { node.ip4 } else { node.ip6 };
                    seen_by_server(&from.ns, sock(ip, np[j]))
                        .unwrap_or_else(|e| panic!("pod{i} -> node{j} {ip}: {e}"));
                }
                let ext = if v4 { b.external.ip4 } else { b.external.ip6 };
                let seen = seen_by_server(&from.ns, sock(ext, ext_port))
                    .unwrap_or_else(|e| panic!("pod{i} -> external {ext}: {e}"));
                let node = &b.nodes[i];
                assert_eq!(
                    seen,
                    if v4 { node.ip4 } else { node.ip6 },
                    "pod{i} not masqueraded"
                );
            }
        }
    })
    .await;

    // Restart node0's agent with connections open through its routes and its NAT: both carry
    // data afterwards, and its routes are what they were.
    let before = owned_routes(&bed.nodes[0]);
    assert_eq!(
        before.len(),
        4,
        "two remote nodes, two families: {before:?}"
    );
    let (b, p) = (bed.clone(), pods.clone());
    let to_pod = sock(p[1].ip(true).unwrap(), pod_ports[1]);
    let to_ext = sock(b.external.ip6, ext_port);
    let mut conns = blocking(move || {
        [to_pod, to_ext]
            .into_iter()
            .map(|to| {
                let stream = connect(&p[0].ns, to, Duration::from_secs(3)).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut greeting = String::new();
                reader.read_line(&mut greeting).unwrap();
                (stream, reader)
            })
            .collect::<Vec<_>>()
    })
    .await;
    tasks.0[1].abort();
    // A route left behind by an earlier life of the agent (a Node deleted while it was down):
    // the restarted agent removes it.
    let stale = ipnet::IpNet::from_str("10.99.0.0/24").unwrap();
    let via = bed.nodes[1].ip4;
    bed.nodes[0]
        .ns
        .run(|| {
            let r = Route {
                oif: None,
                ..Route::via(stale, via, 0)
            };
            Netlink::open()
                .unwrap()
                .replace_route_as(&r, RTPROT_KUBEWIRE)
                .unwrap();
        })
        .unwrap();
    assert!(owned_routes(&bed.nodes[0]).iter().any(|(d, _)| *d == stale));
    tokio::time::sleep(Duration::from_millis(300)).await;
    tasks.0[1] = start_agent(&client, &bed.nodes[0], mode, false);
    // The restarted agent converges (the stale route goes, the live ones stay as they were);
    // then both connections still carry data.
    eventually("node0 converged after its restart", || {
        (owned_routes(&bed.nodes[0]) == before).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocking(move || {
        for (s, r) in &mut conns {
            round_trip(s, r);
        }
    })
    .await;

    // Deleting a Node removes its routes (and its VXLAN peer entries) everywhere.
    let gone: Vec<IpNet> = nodes
        .get("node2")
        .await
        .unwrap()
        .spec
        .unwrap()
        .pod_cidrs
        .unwrap()
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    nodes
        .delete("node2", &DeleteParams::default())
        .await
        .unwrap();
    for n in &bed.nodes[..2] {
        eventually(&format!("{}'s routes to node2", n.name), || {
            let left = owned_routes(n);
            (left.len() == 2 && left.iter().all(|(dst, _)| !gone.contains(dst))).then_some(())
        })
        .await;
        if mode == Mode::Vxlan {
            assert_eq!(vxlan_peers(n), 1, "one peer left");
        }
    }
    drop(tasks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_pods_reach_pods_nodes_and_outside() {
    if !testutil::root_or_skip("direct_mode_pods_reach_pods_nodes_and_outside") {
        return;
    }
    scenario(Mode::Direct, "direct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_mode_pods_reach_pods_nodes_and_outside() {
    if !testutil::root_or_skip("vxlan_mode_pods_reach_pods_nodes_and_outside") {
        return;
    }
    scenario(Mode::Vxlan, "vxlan").await;
}

#[test]
fn bench_pod_network_reports_three_paths() {
    if !testutil::root_or_skip("bench_pod_network_reports_three_paths") {
        return;
    }
    let _ = plugin();
    let report = kubewire_agent::bench::bench_pod_network(4 << 20, 200).unwrap();
    for p in [report.veth, report.direct, report.vxlan] {
        assert!(
            p.bits_per_sec > 0.0 && p.rtt.p50 > Duration::ZERO,
            "{report}"
        );
    }
    println!("{report}");
}
