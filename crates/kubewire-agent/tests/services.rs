//! The service proxy against the real kernel: two node namespaces and an external host on a LAN,
//! the in-process API server, one agent per node running pod networking and the proxy, pods
//! made by `kubewire-cni`, each serving TCP on port 7000. Services and EndpointSlices are
//! written to the API as the EndpointSlice controller would; packets go through the nftables
//! table `inet kubewire-proxy`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubewire_agent::compile::Mode;
use kubewire_agent::testbed::{EchoServer, Pod, Testbed, UdpAnswerServer, connect, served};
use kubewire_datapath::OwnedNetNs;
use kubewire_datapath::testutil;
use serde_json::{Value, json};

mod common;
use common::{
    HEALTHZ, METRICS, api_server, blocking, eventually, make_pods, round_trip, sock, start_agent,
    start_nodes,
};

const POD_PORT: u16 = 7000;
const NODE_PORT: u16 = 30080;
const CLUSTER_IP4: &str = "10.96.0.10";
const CLUSTER_IP6: &str = "fd00:10:96::10";
const LB_IP: &str = "203.0.113.50";
const UDP_IP: &str = "10.96.0.12";
const STICKY_IP: &str = "10.96.0.13";
const UDP_POD_PORT: u16 = 5353;

/// Endpoints of one family: (pod, its node's name, ready), on `port` (name, number, protocol).
fn slice_body(
    name: &str,
    v4: bool,
    endpoints: &[(&Pod, &str, bool)],
    port: (&str, u16, &str),
) -> EndpointSlice {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(pod, node, ready)| {
            json!({
                "addresses": [pod.ip(v4).unwrap().to_string()],
                "nodeName": node,
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-{}", if v4 { "v4" } else { "v6" }),
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": if v4 { "IPv4" } else { "IPv6" },
        "endpoints": eps,
        "ports": [{"name": port.0, "port": port.1, "protocol": port.2}],
    }))
    .unwrap()
}

/// Writes both families' slices of Service `name` for its TCP port `http` (create or replace).
async fn set_endpoints(client: &kube::Client, name: &str, endpoints: &[(&Pod, &str, bool)]) {
    set_endpoints_on(client, name, endpoints, ("http", POD_PORT, "TCP")).await;
}

async fn set_endpoints_on(
    client: &kube::Client,
    name: &str,
    endpoints: &[(&Pod, &str, bool)],
    port: (&str, u16, &str),
) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    for v4 in [true, false] {
        let body = slice_body(name, v4, endpoints, port);
        let slice_name = body.metadata.name.clone().unwrap();
        match api.get_opt(&slice_name).await.unwrap() {
            Some(old) => {
                let mut body = body;
                body.metadata.resource_version = old.metadata.resource_version;
                api.replace(&slice_name, &PostParams::default(), &body)
                    .await
                    .unwrap();
            }
            None => {
                api.create(&PostParams::default(), &body).await.unwrap();
            }
        }
    }
}

/// A plain HTTP/1.0 GET from `ns`: the status code and the body.
fn http_get(
    ns: &OwnedNetNs,
    to: std::net::SocketAddr,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = connect(ns, to, Duration::from_secs(2)).map_err(std::io::Error::other)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, b)| b.to_string());
    Ok((status, body))
}

/// Connects `tries` times from `ns` to `to`; returns the (peer seen, server) pairs.
fn sample(ns: &OwnedNetNs, to: std::net::SocketAddr, tries: usize) -> Vec<(IpAddr, IpAddr)> {
    (0..tries)
        .map(|i| {
            served(ns, to, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("connection {i} to {to}: {e}"))
        })
        .collect()
}

/// How a connection attempt from `ns` to `to` failed, and how long it took; `None` when it
/// connected.
fn failure(ns: &OwnedNetNs, to: std::net::SocketAddr) -> Option<(std::io::ErrorKind, Duration)> {
    let start = Instant::now();
    match connect(ns, to, Duration::from_secs(1)) {
        Ok(_) => None,
        Err(kubewire_agent::testbed::TestbedError::Io(e)) => Some((e.kind(), start.elapsed())),
        Err(e) => panic!("{to}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_node_ports_policies_and_restart() {
    if !testutil::root_or_skip("cluster_ips_node_ports_policies_and_restart") {
        return;
    }
    let cluster = api_server().await;
    let client = cluster.client.clone();
    let bed = Arc::new(blocking(|| Testbed::new("svc", 2).unwrap()).await);
    // Nodes have a default route, as real ones do (a ClusterIP without endpoints must be
    // routable to reach the proxy's reject).
    for n in &bed.nodes {
        for gw in [bed.external.ip4, bed.external.ip6] {
            let ok = std::process::Command::new("ip")
                .args(["-n", n.ns.name(), "route", "add", "default", "via"])
                .arg(gw.to_string())
                .status()
                .unwrap()
                .success();
            assert!(ok, "default route of {}", n.name);
        }
    }
    let mut tasks = start_nodes(&client, &bed, Mode::Direct, true).await;
    let pods = Arc::new(make_pods(&bed, &[0, 1, 1]).await);
    let _servers: Vec<EchoServer> = pods
        .iter()
        .map(|p| EchoServer::start_on(&p.ns, POD_PORT).unwrap())
        .collect();
    let (node0, node1) = (bed.nodes[0].name.clone(), bed.nodes[1].name.clone());

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": CLUSTER_IP4,
            "clusterIPs": [CLUSTER_IP4, CLUSTER_IP6],
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "RequireDualStack",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT, "nodePort": NODE_PORT}],
        }
    }))
    .unwrap();
    services.create(&PostParams::default(), &web).await.unwrap();
    let empty: Service = serde_json::from_value(json!({
        "metadata": {"name": "empty"},
        "spec": {"clusterIP": "10.96.0.11", "selector": {"app": "none"},
                 "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &empty)
        .await
        .unwrap();
    set_endpoints(
        &client,
        "web",
        &[
            (&pods[0], &node0, true),
            (&pods[1], &node1, true),
            (&pods[2], &node1, true),
        ],
    )
    .await;

    // ClusterIP, both families, from a pod: every endpoint is used, including the pod itself
    // (hairpin, masqueraded so the reply comes back through the node); other pods see the
    // client's own address.
    let p = pods.clone();
    eventually("the ClusterIP answers", || {
        served(
            &p[0].ns,
            sock(CLUSTER_IP4.parse().unwrap(), 80),
            Duration::from_millis(300),
        )
        .ok()
    })
    .await;
    let p = pods.clone();
    blocking(move || {
        for (vip, v4) in [(CLUSTER_IP4, true), (CLUSTER_IP6, false)] {
            let me = p[0].ip(v4).unwrap();
            let seen = sample(&p[0].ns, sock(vip.parse().unwrap(), 80), 40);
            let servers: BTreeSet<IpAddr> = seen.iter().map(|(_, s)| *s).collect();
            let all: BTreeSet<IpAddr> = p.iter().map(|p| p.ip(v4).unwrap()).collect();
            assert_eq!(servers, all, "{vip}: every endpoint serves");
            for (peer, server) in seen {
                if server == me {
                    assert_ne!(peer, me, "hairpin must be masqueraded");
                } else {
                    assert_eq!(peer, me, "pod-to-service keeps the pod's address");
                }
            }
        }
    })
    .await;

    // sessionAffinity: ClientIP: every connection of a client goes to the endpoint it got first;
    // when that endpoint goes, the client sticks to its next one.
    let sticky: Service = serde_json::from_value(json!({
        "metadata": {"name": "sticky"},
        "spec": {"clusterIP": STICKY_IP, "selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                 "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &sticky)
        .await
        .unwrap();
    set_endpoints(
        &client,
        "sticky",
        &[
            (&pods[0], &node0, true),
            (&pods[1], &node1, true),
            (&pods[2], &node1, true),
        ],
    )
    .await;
    let p = pods.clone();
    let vip = sock(STICKY_IP.parse().unwrap(), 80);
    let first = eventually("the sticky Service answers", || {
        served(&p[0].ns, vip, Duration::from_millis(300)).ok()
    })
    .await
    .1;
    let p = pods.clone();
    let servers: BTreeSet<IpAddr> = blocking(move || sample(&p[0].ns, vip, 20))
        .await
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    assert_eq!(servers, [first].into(), "one client, one endpoint");
    let rest: Vec<(&Pod, &str, bool)> = [
        (&pods[0], node0.as_str()),
        (&pods[1], &node1),
        (&pods[2], &node1),
    ]
    .into_iter()
    .filter(|(p, _)| p.ip(true) != Some(first))
    .map(|(p, n)| (p, n, true))
    .collect();
    set_endpoints(&client, "sticky", &rest).await;
    let p = pods.clone();
    let next = eventually("the client moves off the removed endpoint", || {
        served(&p[0].ns, vip, Duration::from_millis(300))
            .ok()
            .filter(|(_, server)| *server != first)
    })
    .await
    .1;
    let p = pods.clone();
    let servers: BTreeSet<IpAddr> = blocking(move || sample(&p[0].ns, vip, 20))
        .await
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    assert_eq!(servers, [next].into(), "and sticks to its new one");

    // UDP: a client that keeps sending from one socket is moved off an endpoint that goes away
    // (its conntrack entry is deleted), rather than being sent to it until the entry expires.
    let _udp_servers: Vec<UdpAnswerServer> = pods[1..]
        .iter()
        .map(|p| {
            UdpAnswerServer::start_on(&p.ns, UDP_POD_PORT, p.ip(true).unwrap().to_string()).unwrap()
        })
        .collect();
    let dns: Service = serde_json::from_value(json!({
        "metadata": {"name": "udp"},
        "spec": {"clusterIP": UDP_IP, "selector": {"app": "udp"},
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": UDP_POD_PORT}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &dns).await.unwrap();
    let udp_port = ("dns", UDP_POD_PORT, "UDP");
    set_endpoints_on(
        &client,
        "udp",
        &[(&pods[1], &node1, true), (&pods[2], &node1, true)],
        udp_port,
    )
    .await;
    let client_socket = Arc::new(
        pods[0]
            .ns
            .run(|| std::net::UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap(),
    );
    client_socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    client_socket.connect((UDP_IP, 53)).unwrap();
    let ask = |socket: &std::net::UdpSocket| -> Option<String> {
        socket.send(b"who?").ok()?;
        let mut buf = [0u8; 100];
        let n = socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let s = client_socket.clone();
    let first = eventually("the UDP Service answers", || ask(&s)).await;
    let survivor = if first == pods[1].ip(true).unwrap().to_string() {
        &pods[2]
    } else {
        &pods[1]
    };
    let s = client_socket.clone();
    assert_eq!(
        ask(&s).as_deref(),
        Some(first.as_str()),
        "one flow, one endpoint"
    );
    set_endpoints_on(&client, "udp", &[(survivor, &node1, true)], udp_port).await;
    let s = client_socket.clone();
    let want = survivor.ip(true).unwrap().to_string();
    eventually("the UDP flow moves to the remaining endpoint", || {
        ask(&s).filter(|a| *a == want)
    })
    .await;

    // A Service without endpoints refuses at once (ICMP reject), it does not time out. (The
    // kernel rate-limits ICMP errors per destination, and the UDP client above had some: a
    // refused attempt may take a moment to come.)
    let p = pods.clone();
    let empty = sock("10.96.0.11".parse().unwrap(), 80);
    eventually("a Service without endpoints refuses at once", || {
        let (kind, took) = failure(&p[0].ns, empty).expect("no endpoints, yet it accepted");
        (kind == std::io::ErrorKind::ConnectionRefused && took < Duration::from_millis(500))
            .then_some(())
    })
    .await;

    // NodePort from outside (Cluster policy: any endpoint, masqueraded), and the node itself
    // reaching a ClusterIP.
    let b = bed.clone();
    blocking(move || {
        let ext = b.external.ip4;
        for (peer, _) in sample(&b.external.ns, sock(b.nodes[0].ip4, NODE_PORT), 10) {
            assert_ne!(peer, ext, "Cluster policy masquerades external clients");
        }
        sample(&b.nodes[0].ns, sock(CLUSTER_IP4.parse().unwrap(), 80), 5);
        sample(&b.external.ns, sock(b.nodes[1].ip6, NODE_PORT), 5);
        // NodePorts answer on the node's primary addresses only (kube-proxy's nftables
        // default), not on another address the node has.
        let ok = std::process::Command::new("ip")
            .args([
                "-n",
                b.nodes[0].ns.name(),
                "addr",
                "add",
                "198.51.100.100/24",
                "dev",
                "eth0",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "a second address on node0");
        let other = sock("198.51.100.100".parse().unwrap(), NODE_PORT);
        assert!(
            served(&b.external.ns, other, Duration::from_secs(1)).is_err(),
            "a NodePort answered on a non-primary address"
        );
        sample(&b.external.ns, sock(b.nodes[0].ip4, NODE_PORT), 2);
    })
    .await;

    // A load-balancer IP, delivered to node0 by the "load balancer" (a route on the outside
    // host), goes to the endpoints like the ClusterIP does.
    services
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}})),
        )
        .await
        .unwrap();
    let b = bed.clone();
    let ok = std::process::Command::new("ip")
        .args(["-n", b.external.ns.name(), "route", "add", LB_IP, "via"])
        .arg(b.nodes[0].ip4.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "route to the load-balancer IP");
    eventually("the load-balancer IP answers", || {
        served(
            &b.external.ns,
            sock(LB_IP.parse().unwrap(), 80),
            Duration::from_millis(500),
        )
        .ok()
    })
    .await;

    // loadBalancerSourceRanges: a client outside them is dropped, one inside is served.
    let set_ranges = |ranges: &'static [&'static str]| {
        let services = services.clone();
        async move {
            services
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"loadBalancerSourceRanges": ranges}})),
                )
                .await
                .unwrap();
        }
    };
    set_ranges(&["198.51.100.201/32"]).await;
    let b = bed.clone();
    eventually("a client outside the source ranges is dropped", || {
        let (kind, _) = failure(&b.external.ns, sock(LB_IP.parse().unwrap(), 80))?;
        (kind == std::io::ErrorKind::TimedOut || kind == std::io::ErrorKind::WouldBlock)
            .then_some(())
    })
    .await;
    set_ranges(&["198.51.100.0/24"]).await;
    let b = bed.clone();
    eventually("a client inside the source ranges is served", || {
        served(
            &b.external.ns,
            sock(LB_IP.parse().unwrap(), 80),
            Duration::from_millis(500),
        )
        .ok()
    })
    .await;

    // externalTrafficPolicy: Local: only the node's own endpoints, and the client's address
    // is kept.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"externalTrafficPolicy": "Local"}})),
        )
        .await
        .unwrap();
    let (b, p) = (bed.clone(), pods.clone());
    let ext = b.external.ip4;
    let node1_servers: BTreeSet<IpAddr> = [p[1].ip(true).unwrap(), p[2].ip(true).unwrap()].into();
    eventually("Local policy keeps the client address", || {
        served(
            &b.external.ns,
            sock(b.nodes[1].ip4, NODE_PORT),
            Duration::from_millis(500),
        )
        .ok()
        .filter(|(peer, _)| *peer == ext)
    })
    .await;
    let (b, p) = (bed.clone(), pods.clone());
    blocking(move || {
        for (peer, server) in sample(&b.external.ns, sock(b.nodes[1].ip4, NODE_PORT), 10) {
            assert_eq!(peer, ext);
            assert!(node1_servers.contains(&server), "{server} is not on node1");
        }
        for (peer, server) in sample(&b.external.ns, sock(b.nodes[0].ip4, NODE_PORT), 5) {
            assert_eq!((peer, server), (ext, p[0].ip(true).unwrap()));
        }
    })
    .await;

    // The load balancer's health checks: each node says how many ready endpoints it has.
    let hc_port = services
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .health_check_node_port
        .expect("a healthCheckNodePort for a Local LoadBalancer") as u16;
    let b = bed.clone();
    eventually("node1's health check", || {
        let (status, body) = http_get(&b.external.ns, sock(b.nodes[1].ip4, hc_port), "/").ok()?;
        (status == 200 && body.contains(r#""localEndpoints":2"#)).then_some(())
    })
    .await;
    let b = bed.clone();
    blocking(move || {
        let (status, body) = http_get(&b.external.ns, sock(b.nodes[0].ip4, hc_port), "/").unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            r#"{"service":{"namespace":"default","name":"web"},"localEndpoints":1,"serviceProxyHealthy":true}"#
        );
        let (status, body) =
            http_get(&b.external.ns, sock(b.nodes[0].ip6, HEALTHZ.port()), "/healthz").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""nodeEligible":true"#), "{body}");
        let (status, body) =
            http_get(&b.external.ns, sock(b.nodes[0].ip4, METRICS.port()), "/metrics").unwrap();
        assert_eq!(status, 200);
        for metric in [
            "kubeproxy_sync_proxy_rules_duration_seconds_count",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        ] {
            assert!(body.contains(metric), "{metric} missing from:\n{body}");
        }
    })
    .await;

    // The node's own endpoint goes away: outside clients of node0 are dropped (not rejected:
    // a load balancer's health check moves them), while the pod and the node itself still
    // reach the Service through the other node's endpoints.
    set_endpoints(
        &client,
        "web",
        &[(&pods[1], &node1, true), (&pods[2], &node1, true)],
    )
    .await;
    let (b, p) = (bed.clone(), pods.clone());
    eventually("node0's NodePort drops outside clients", || {
        let (kind, _) = failure(&b.external.ns, sock(b.nodes[0].ip4, NODE_PORT))?;
        (kind == std::io::ErrorKind::TimedOut || kind == std::io::ErrorKind::WouldBlock)
            .then_some(())
    })
    .await;
    let node1_pods: BTreeSet<IpAddr> = [p[1].ip(true).unwrap(), p[2].ip(true).unwrap()].into();
    blocking(move || {
        let (status, body) = http_get(&b.external.ns, sock(b.nodes[0].ip4, hc_port), "/").unwrap();
        assert_eq!(status, 503, "no local endpoint: {body}");
        assert!(body.contains(r#""localEndpoints":0"#), "{body}");
        for (_, server) in sample(&p[0].ns, sock(CLUSTER_IP4.parse().unwrap(), 80), 10) {
            assert!(node1_pods.contains(&server));
        }
        for (peer, server) in sample(&b.nodes[0].ns, sock(b.nodes[0].ip4, NODE_PORT), 5) {
            assert!(
                node1_pods.contains(&server),
                "from the node itself: any endpoint"
            );
            assert_eq!(peer, b.nodes[0].ip4, "masqueraded to the node");
        }
    })
    .await;

    // Restarting node0's agent (pod networking and proxy) drops no established connection
    // through a ClusterIP, and new connections work after it.
    let p = pods.clone();
    let mut conn = blocking(move || {
        let stream = connect(
            &p[0].ns,
            sock(CLUSTER_IP4.parse().unwrap(), 80),
            Duration::from_secs(3),
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        reader.read_line(&mut greeting).unwrap();
        (stream, reader)
    })
    .await;
    tasks.0[1].abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tasks.0[1] = start_agent(&client, &bed.nodes[0], Mode::Direct, true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = pods.clone();
    blocking(move || {
        round_trip(&mut conn.0, &mut conn.1);
        sample(&p[0].ns, sock(CLUSTER_IP6.parse().unwrap(), 80), 5);
    })
    .await;
    drop(tasks);
}
