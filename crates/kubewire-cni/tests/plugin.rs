//! The plugin binary run exactly as a runtime runs it (environment + stdin, a process per call),
//! from a "node" namespace standing in for the host, against fresh pod namespaces; traffic is
//! real TCP and UDP between Rust sockets opened inside the namespaces.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use kubewire_cni::bench::exec_plugin;
use kubewire_datapath::{NetNs, Netlink, OwnedNetNs, sysctl, testutil};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kubewire-cni");
const V4: &str = "10.244.1.0/24";
const V6: &str = "fd00:10:244:1::/64";

/// A node namespace (lo up, the node addresses .1 and ::1 of the pod CIDRs on lo) and an IPAM
/// store directory; both go away on drop.
struct Node {
    ns: OwnedNetNs,
    data: tempfile::TempDir,
}

impl Node {
    fn new(tag: &str) -> Node {
        let ns = testutil::netns(&format!("{tag}-n"));
        let nl = Netlink::open_in(&ns).unwrap();
        let lo = nl.link("lo").unwrap().unwrap();
        nl.add_address(lo.index, "10.244.1.1/32".parse().unwrap(), true)
            .unwrap();
        nl.add_address(lo.index, "fd00:10:244:1::1/128".parse().unwrap(), true)
            .unwrap();
        Node {
            ns,
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn conf_with(&self, version: &str, cidrs: &[&str], extra: Value) -> String {
        let mut c = json!({
            "cniVersion": version,
            "name": "kubewire",
            "type": "kubewire-cni",
            "podCIDRs": cidrs,
            "dataDir": self.data.path(),
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
            c.extend(e);
        }
        c.to_string()
    }

    fn conf(&self) -> String {
        self.conf_with("1.1.0", &[V4, V6], json!({}))
    }

    /// Runs the plugin inside the node namespace.
    fn exec(&self, env: &[(&str, &str)], stdin: &str) -> Output {
        self.ns
            .run(|| exec_plugin(Path::new(BIN), env, stdin.as_bytes()).unwrap())
            .unwrap()
    }

    fn cmd(&self, cmd: &str, id: &str, pod: Option<&NetNs>, stdin: &str) -> Output {
        let netns = pod.map(|p| p.path().display().to_string());
        let mut env = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        if let Some(n) = &netns {
            env.push(("CNI_NETNS", n.as_str()));
        }
        self.exec(&env, stdin)
    }

    fn add(&self, id: &str, pod: &NetNs) -> Value {
        let out = self.cmd("ADD", id, Some(pod), &self.conf());
        assert!(out.status.success(), "ADD {id}: {}", show(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn state(&self) -> Value {
        let p = self.data.path().join("kubewire/state.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(_) => json!({"allocations": {}}),
        }
    }

    fn allocated(&self) -> BTreeSet<String> {
        self.state()["allocations"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}, stdout {}, stderr {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The error object of a failed call: exit non-zero, JSON on stdout.
fn error_of(o: &Output) -> Value {
    assert!(!o.status.success(), "expected failure: {}", show(o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", show(o)));
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
    v
}

fn ips_of(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

fn tcp_echo(server_ns: &NetNs, client_ns: &NetNs, ip: IpAddr) {
    let listener = server_ns
        .run(|| TcpListener::bind(SocketAddr::new(ip, 0)).unwrap())
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    let got = client_ns
        .run(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            buf
        })
        .unwrap();
    assert_eq!(&got, b"hello");
    server.join().unwrap();
}

fn udp_echo(server_ns: &NetNs, client_ns: &NetNs, ip: IpAddr) {
    let server = server_ns
        .run(|| UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap())
        .unwrap();
    let addr = server.local_addr().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(&buf[..n], from).unwrap();
    });
    let unspecified: IpAddr = if ip.is_ipv4() {
        "0.0.0.0".parse().unwrap()
    } else {
        "::".parse().unwrap()
    };
    let got = client_ns
        .run(move || {
            let c = UdpSocket::bind(SocketAddr::new(unspecified, 0)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.send_to(b"datagram", addr).unwrap();
            let mut buf = [0u8; 16];
            let (n, _) = c.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .unwrap();
    assert_eq!(got, b"datagram");
    t.join().unwrap();
}

#[test]
fn two_pods_and_the_node_talk_tcp_and_udp_over_v4_and_v6() {
    if !testutil::root_or_skip("two_pods_and_the_node_talk_tcp_and_udp_over_v4_and_v6") {
        return;
    }
    let node = Node::new("talk");
    let a = testutil::netns("talk-a");
    let b = testutil::netns("talk-b");
    let ra = node.add("pod-a", &a);
    let rb = node.add("pod-b", &b);

    // The result: host end + pod end, one /32 and one /128 on the pod end, default routes.
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert!(
        ra["interfaces"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("kw")
    );
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(
        ra["interfaces"][1]["sandbox"],
        a.path().display().to_string()
    );
    assert_eq!(ra["ips"][0]["interface"], 1);
    assert_eq!(ra["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(ra["ips"][1]["gateway"], "fe80::1");
    assert!(ra["ips"][0]["address"].as_str().unwrap().ends_with("/32"));
    assert!(ra["ips"][1]["address"].as_str().unwrap().ends_with("/128"));
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(ra["routes"][1]["dst"], "::/0");
    let (ips_a, ips_b) = (ips_of(&ra), ips_of(&rb));
    assert_eq!(ips_a.len(), 2);
    assert!(
        ips_a.iter().all(|ip| !ips_b.contains(ip)),
        "{ips_a:?} {ips_b:?}"
    );
    // Neither the network address nor the node's .1 / ::1 is handed out.
    for ip in ips_a.iter().chain(&ips_b) {
        let s = ip.to_string();
        assert!(
            ![
                "10.244.1.0",
                "10.244.1.1",
                "fd00:10:244:1::",
                "fd00:10:244:1::1"
            ]
            .contains(&s.as_str())
        );
    }

    for (ip_a, ip_b) in ips_a.iter().zip(&ips_b) {
        // pod ↔ pod, both directions, TCP and UDP
        tcp_echo(&b, &a, *ip_b);
        tcp_echo(&a, &b, *ip_a);
        udp_echo(&b, &a, *ip_b);
        udp_echo(&a, &b, *ip_a);
        // node → pod (what the kubelet's probes need) and pod → node
        tcp_echo(&a, &node.ns, *ip_a);
        udp_echo(&a, &node.ns, *ip_a);
        let node_ip: IpAddr = if ip_a.is_ipv4() {
            "10.244.1.1".parse().unwrap()
        } else {
            "fd00:10:244:1::1".parse().unwrap()
        };
        tcp_echo(&node.ns, &b, node_ip);
    }

    // CHECK with the ADD result as prevResult passes.
    let mut conf: Value = serde_json::from_str(&node.conf()).unwrap();
    conf["prevResult"] = ra.clone();
    let out = node.cmd("CHECK", "pod-a", Some(&a), &conf.to_string());
    assert!(out.status.success(), "{}", show(&out));
    // STATUS is ready.
    let out = node.exec(&[("CNI_COMMAND", "STATUS")], &node.conf());
    assert!(out.status.success(), "{}", show(&out));

    for (id, ns) in [("pod-a", &a), ("pod-b", &b)] {
        let out = node.cmd("DEL", id, Some(ns), &node.conf());
        assert!(out.status.success(), "{}", show(&out));
    }
    assert!(node.allocated().is_empty());
}

#[test]
fn del_is_idempotent_and_survives_a_missing_namespace() {
    if !testutil::root_or_skip("del_is_idempotent_and_survives_a_missing_namespace") {
        return;
    }
    let node = Node::new("del");
    let a = testutil::netns("del-a");
    let r = node.add("pod-del", &a);
    let host_if = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(node.allocated().len(), 2);
    for _ in 0..2 {
        let out = node.cmd("DEL", "pod-del", Some(&a), &node.conf());
        assert!(out.status.success(), "{}", show(&out));
        assert!(out.stdout.is_empty());
    }
    assert!(node.allocated().is_empty());
    let nl = Netlink::open_in(&node.ns).unwrap();
    assert!(nl.link(&host_if).unwrap().is_none());
    assert!(
        Netlink::open_in(&a)
            .unwrap()
            .link("eth0")
            .unwrap()
            .is_none()
    );

    // The pod's namespace is gone before DEL (and CNI_NETNS is not even passed): still fine,
    // and the address is released.
    let b = testutil::netns("del-b");
    node.add("pod-gone", &b);
    drop(b);
    for _ in 0..2 {
        let out = node.cmd("DEL", "pod-gone", None, &node.conf());
        assert!(out.status.success(), "{}", show(&out));
    }
    assert!(node.allocated().is_empty());
    // DEL of something never added succeeds too.
    let out = node.cmd("DEL", "never-added", None, &node.conf());
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn check_reports_what_is_missing() {
    if !testutil::root_or_skip("check_reports_what_is_missing") {
        return;
    }
    let node = Node::new("chk");
    let a = testutil::netns("chk-a");
    let r = node.add("pod-chk", &a);
    let mut conf: Value = serde_json::from_str(&node.conf()).unwrap();
    conf["prevResult"] = r.clone();
    let conf = conf.to_string();
    let out = node.cmd("CHECK", "pod-chk", Some(&a), &conf);
    assert!(out.status.success(), "{}", show(&out));

    // A prevResult that disagrees with the reservation.
    let mut wrong: Value = serde_json::from_str(&conf).unwrap();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.244.1.200/32");
    let e = error_of(&node.cmd("CHECK", "pod-chk", Some(&a), &wrong.to_string()));
    assert_eq!(e["code"], 100, "{e}");

    // The pod's default route deleted by hand.
    let nl = Netlink::open_in(&a).unwrap();
    let eth0 = nl.link("eth0").unwrap().unwrap();
    let route = nl
        .routes(false, 254)
        .unwrap()
        .into_iter()
        .find(|r| r.dst.prefix_len() == 0)
        .unwrap();
    nl.delete_route(&route).unwrap();
    let e = error_of(&node.cmd("CHECK", "pod-chk", Some(&a), &conf));
    assert_eq!(e["code"], 100);
    assert!(e["msg"].as_str().unwrap().contains("default route"), "{e}");

    // The interface deleted by hand.
    nl.delete_link(eth0.index).unwrap();
    let e = error_of(&node.cmd("CHECK", "pod-chk", Some(&a), &conf));
    assert_eq!(e["code"], 100);
    assert!(e["msg"].as_str().unwrap().contains("eth0"), "{e}");
    assert!(e["msg"].as_str().unwrap().contains("missing"), "{e}");

    // After DEL, the reservation is gone too, and CHECK says so.
    assert!(
        node.cmd("DEL", "pod-chk", Some(&a), &node.conf())
            .status
            .success()
    );
    let e = error_of(&node.cmd("CHECK", "pod-chk", Some(&a), &node.conf()));
    assert_eq!(e["code"], 100);
    assert!(e["msg"].as_str().unwrap().contains("IPAM"), "{e}");
}

#[test]
fn hundred_concurrent_adds_get_distinct_addresses() {
    if !testutil::root_or_skip("hundred_concurrent_adds_get_distinct_addresses") {
        return;
    }
    const N: usize = 100;
    let node = Node::new("many");
    let pods: Vec<OwnedNetNs> = (0..N)
        .map(|i| testutil::netns(&format!("many-{i}")))
        .collect();
    let conf = node.conf();
    let run_all = |cmd: &'static str| -> Vec<Output> {
        std::thread::scope(|s| {
            let hs: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (node, conf) = (&node, &conf);
                    s.spawn(move || node.cmd(cmd, &format!("many{i}"), Some(p), conf))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let outs = run_all("ADD");
    let mut seen = BTreeSet::new();
    for o in &outs {
        assert!(o.status.success(), "{}", show(o));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        for ip in ips_of(&r) {
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }
    assert_eq!(seen.len(), 2 * N);
    assert_eq!(node.allocated().len(), 2 * N);
    for o in run_all("DEL") {
        assert!(o.status.success(), "{}", show(&o));
    }
    assert!(node.allocated().is_empty());
    let links = Netlink::open_in(&node.ns).unwrap().links().unwrap();
    assert!(links.iter().all(|l| !l.name.starts_with("kw")), "{links:?}");
}

#[test]
fn kill_9_in_the_middle_of_add_then_gc_leaks_nothing() {
    if !testutil::root_or_skip("kill_9_in_the_middle_of_add_then_gc_leaks_nothing") {
        return;
    }
    let node = Node::new("kill");
    let keep = testutil::netns("kill-keep");
    let victim = testutil::netns("kill-victim");
    node.add("pod-keep", &keep);
    let kept = node.allocated();

    let conf = node.conf();
    let victim_path = victim.path().display().to_string();
    node.ns
        .run(|| {
            let mut child = std::process::Command::new(BIN)
                .env_clear()
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", "pod-victim")
                .env("CNI_NETNS", &victim_path)
                .env("CNI_IFNAME", "eth0")
                .env(kubewire_cni::plugin::TEST_PAUSE_ENV, "60000")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(conf.as_bytes())
                .unwrap();
            // Wait until the address is on disk, then kill -9.
            let mut line = String::new();
            BufReader::new(child.stderr.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.contains("recorded"), "{line}");
            child.kill().unwrap(); // SIGKILL
            let status = child.wait().unwrap();
            assert!(!status.success());
        })
        .unwrap();
    let after_kill = node.allocated();
    assert_eq!(
        after_kill.len(),
        4,
        "the victim's addresses were recorded: {after_kill:?}"
    );

    // GC with the runtime's list of valid attachments (the victim is not in it).
    let gc = node.conf_with(
        "1.1.0",
        &[V4, V6],
        json!({"cni.dev/valid-attachments": [{"containerID": "pod-keep", "ifname": "eth0"}]}),
    );
    let out = node.exec(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")], &gc);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(node.allocated(), kept);
    // The older key name works the same way, and an empty list frees everything.
    let gc_all = node.conf_with("1.1.0", &[V4, V6], json!({"cni.dev/attachments": []}));
    let out = node.exec(&[("CNI_COMMAND", "GC")], &gc_all);
    assert!(out.status.success(), "{}", show(&out));
    assert!(node.allocated().is_empty());
    let links = Netlink::open_in(&node.ns).unwrap().links().unwrap();
    assert!(links.iter().all(|l| !l.name.starts_with("kw")), "{links:?}");
}

#[test]
fn each_error_case_returns_its_spec_code() {
    if !testutil::root_or_skip("each_error_case_returns_its_spec_code") {
        return;
    }
    let node = Node::new("err");
    let a = testutil::netns("err-a");
    let conf = node.conf();

    // VERSION
    let out = node.exec(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));

    let code = |o: &Output| error_of(o)["code"].as_u64().unwrap();
    // 4: invalid environment
    assert_eq!(code(&node.exec(&[], &conf)), 4, "no CNI_COMMAND");
    assert_eq!(code(&node.exec(&[("CNI_COMMAND", "FROB")], &conf)), 4);
    assert_eq!(
        code(&node.exec(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")], &conf)),
        4
    );
    assert_eq!(code(&node.cmd("ADD", "bad id!", Some(&a), &conf)), 4);
    let e = error_of(&node.exec(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/kubewire-does-not-exist"),
        ],
        &conf,
    ));
    assert_eq!(e["code"], 4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_NETNS"), "{e}");
    // The plugin's own namespace as CNI_NETNS.
    let own = node.ns.path().display().to_string();
    let e = error_of(&node.exec(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &own),
        ],
        &conf,
    ));
    assert_eq!(e["code"], 4, "{e}");
    // 6: decoding failure
    assert_eq!(code(&node.cmd("ADD", "x", Some(&a), "{not json")), 6);
    // 1: incompatible version (and GC/STATUS below 1.1.0)
    let old = node.conf_with("0.3.1", &[V4], json!({}));
    assert_eq!(code(&node.cmd("ADD", "x", Some(&a), &old)), 1);
    let v100 = node.conf_with("1.0.0", &[V4], json!({"cni.dev/valid-attachments": []}));
    let e = error_of(&node.exec(&[("CNI_COMMAND", "GC")], &v100));
    assert_eq!(
        (e["code"].as_u64(), e["cniVersion"].as_str()),
        (Some(1), Some("1.0.0"))
    );
    assert_eq!(code(&node.exec(&[("CNI_COMMAND", "STATUS")], &v100)), 1);
    // 7: invalid network config
    let bad = node.conf_with("1.1.0", &["10.244.1.7/24"], json!({}));
    let e = error_of(&node.cmd("ADD", "x", Some(&a), &bad));
    assert_eq!(e["code"], 7);
    assert!(e["msg"].as_str().unwrap().contains("10.244.1.0/24"), "{e}");
    assert_eq!(
        code(&node.exec(&[("CNI_COMMAND", "GC")], &conf)),
        7,
        "GC without a list"
    );
    // 2: unsupported field
    let ipam = node.conf_with("1.1.0", &[V4], json!({"ipam": {"type": "host-local"}}));
    assert_eq!(code(&node.cmd("ADD", "x", Some(&a), &ipam)), 2);
    // Nothing above touched the store.
    assert!(node.allocated().is_empty());

    // 102: CNI_IFNAME already exists; the reservation of the first ADD is kept.
    node.add("pod-err", &a);
    let before = node.allocated();
    assert_eq!(code(&node.cmd("ADD", "pod-err", Some(&a), &conf)), 102);
    assert_eq!(node.allocated(), before);

    // 101 and STATUS 50: a /30 holds one pod.
    let small_node = Node::new("err-small");
    let tiny = small_node.conf_with("1.1.0", &["10.244.9.0/30"], json!({}));
    let status = |n: &Node, c: &str| n.exec(&[("CNI_COMMAND", "STATUS")], c);
    assert!(status(&small_node, &tiny).status.success());
    let b = testutil::netns("err-b");
    let c = testutil::netns("err-c");
    assert!(
        small_node
            .cmd("ADD", "one", Some(&b), &tiny)
            .status
            .success()
    );
    let e = error_of(&small_node.cmd("ADD", "two", Some(&c), &tiny));
    assert_eq!(e["code"], 101);
    assert!(e["msg"].as_str().unwrap().contains("10.244.9.0/30"), "{e}");
    assert!(
        Netlink::open_in(&c)
            .unwrap()
            .link("eth0")
            .unwrap()
            .is_none()
    );
    let e = error_of(&status(&small_node, &tiny));
    assert_eq!(e["code"], 50);
    assert!(e["msg"].as_str().unwrap().contains("exhausted"), "{e}");
    // STATUS 51: pods hold addresses but the node stopped forwarding.
    let conf9 = small_node.conf_with("1.1.0", &["10.244.9.0/29"], json!({}));
    assert!(status(&small_node, &conf9).status.success());
    small_node
        .ns
        .run(|| sysctl::write("net/ipv4/ip_forward", "0").unwrap())
        .unwrap();
    assert_eq!(code(&status(&small_node, &conf9)), 51);
    // STATUS 50: the store directory cannot be written.
    let unwritable = json!({
        "cniVersion": "1.1.0", "name": "kubewire", "type": "kubewire-cni",
        "podCIDRs": [V4], "dataDir": "/proc/kubewire-cni-cannot-write-here",
    });
    assert_eq!(code(&status(&node, &unwritable.to_string())), 50);
}

#[test]
fn works_in_a_chain_and_speaks_older_versions() {
    if !testutil::root_or_skip("works_in_a_chain_and_speaks_older_versions") {
        return;
    }
    let node = Node::new("chain");
    let a = testutil::netns("chain-a");
    let prev = json!({
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "lo", "sandbox": a.path()}],
        "ips": [{"version": "4", "address": "127.0.0.1/8", "interface": 0}],
        "dns": {"nameservers": ["1.1.1.1"]},
    });
    let conf = node.conf_with(
        "0.4.0",
        &[V4, V6],
        json!({"prevResult": prev, "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}}),
    );
    let out = node.cmd("ADD", "pod-chain", Some(&a), &conf);
    assert!(out.status.success(), "{}", show(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(r["ips"][1]["interface"], 2);
    assert_eq!(r["ips"][1]["version"], "4");
    assert_eq!(r["ips"][2]["version"], "6");
    assert!(
        r["interfaces"][2].get("mtu").is_none(),
        "no interface mtu before 1.1.0"
    );
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
    // CHECK against the chain's final result.
    let check = node.conf_with("0.4.0", &[V4, V6], json!({"prevResult": r}));
    let out = node.cmd("CHECK", "pod-chain", Some(&a), &check);
    assert!(out.status.success(), "{}", show(&out));
    let out = node.cmd("DEL", "pod-chain", Some(&a), &check);
    assert!(out.status.success(), "{}", show(&out));
    assert!(node.allocated().is_empty());
}

#[test]
fn mtu_and_single_stack_v6() {
    if !testutil::root_or_skip("mtu_and_single_stack_v6") {
        return;
    }
    let node = Node::new("v6");
    let a = testutil::netns("v6-a");
    let b = testutil::netns("v6-b");
    let conf = node.conf_with("1.1.0", &[V6], json!({"mtu": 1400}));
    let mut ips = Vec::new();
    for (id, ns) in [("v6a", &a), ("v6b", &b)] {
        let out = node.cmd("ADD", id, Some(ns), &conf);
        assert!(out.status.success(), "{}", show(&out));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["interfaces"][1]["mtu"], 1400);
        ips.push(ips_of(&r));
    }
    assert_eq!(ips[0].len(), 1);
    assert!(ips[0][0].is_ipv6());
    let eth0 = Netlink::open_in(&a).unwrap().link("eth0").unwrap().unwrap();
    assert_eq!(eth0.mtu, Some(1400));
    tcp_echo(&b, &a, ips[1][0]);
    udp_echo(&a, &b, ips[0][0]);
    tcp_echo(&a, &node.ns, ips[0][0]);
}

/// `cargo test -p kubewire-cni --release -- --ignored --nocapture bench` prints the figures.
#[test]
#[ignore = "benchmark: run explicitly"]
fn bench_add_del_200_pods() {
    if !testutil::root_or_skip("bench_add_del_200_pods") {
        return;
    }
    let bin = Path::new(BIN);
    for parallel in [1, 8] {
        let r = kubewire_cni::bench::bench_add_del_with(bin, 200, parallel).unwrap();
        println!("{r}");
    }
}
