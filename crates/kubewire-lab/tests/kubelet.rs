//! The lab kubelet against the real kernel and the embedded API server (root).
//!
//! ```text
//!  test (host) namespace                 node namespace (the kubelet thread runs here)
//!  API server 198.18.77.1:PORT ── veth ── eth0 198.18.77.2, 2001:db8:77::2
//!                                        └─ pods: kwpod-<uid> namespaces wired by kubewire-cni
//! ```
//! The kubelet runs as a tokio task on a thread that entered the node namespace; "killing" it
//! drops its runtime (its container processes live on, as after `kill -9`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};

use kubewire_apiserver::testing::TestServer;
use kubewire_datapath::{NetNs, Netlink, OwnedNetNs, VethSpec, testutil};
use kubewire_lab::CniRuntime;
use kubewire_lab::kubelet::{self, KubeletArgs};
use serde_json::json;

// RFC 2544 benchmarking addresses: unlikely on any real LAN (this machine's own LAN may well
// be a documentation range) and only ever on the test's own veth pair.
const HOST_IP: &str = "198.18.77.1";
const NODE_IPS: [&str; 2] = ["198.18.77.2", "2001:db8:77::2"];
const NODE: &str = "node-1";

/// The directory holding the built `kubewire` and `kubewire-cni` (the target dir's profile dir).
fn binaries() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.to_path_buf();
    if dir.join("kubewire").is_file() && dir.join("kubewire-cni").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "kubewire and kubewire-cni are not built in {}",
        dir.display()
    );
    eprintln!(
        "skipping: kubewire / kubewire-cni not built in {} (cargo build -p kubewire -p kubewire-cni)",
        dir.display()
    );
    None
}

/// A kubelet on its own thread, in the node namespace.
struct KubeletThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeletThread {
    fn start(node: &NetNs, args: KubeletArgs) -> KubeletThread {
        let ns = node.try_clone().expect("node netns handle");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let _in_node = ns.enter().expect("enter the node namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("kubelet runtime");
            rt.block_on(async move {
                tokio::select! {
                    r = kubelet::run(args) => panic!("kubelet ended: {r:?}"),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels every task, as if the process were killed.
            drop(rt);
        });
        KubeletThread {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KubeletThread {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything the test made; torn down on drop, whatever happened.
struct Env {
    node: OwnedNetNs,
    host_link: String,
    scratch: tempfile::TempDir,
    bin_dir: PathBuf,
    kubelet: Option<KubeletThread>,
}

impl Env {
    fn pods_dir(&self) -> PathBuf {
        self.scratch.path().join("pods")
    }

    fn conf_dir(&self) -> PathBuf {
        self.scratch.path().join("net.d")
    }

    fn args(&self, kubeconfig: &Path) -> KubeletArgs {
        KubeletArgs {
            kubeconfig: kubeconfig.to_path_buf(),
            node_name: NODE.into(),
            node_ips: NODE_IPS.iter().map(|ip| ip.parse().unwrap()).collect(),
            zone: Some("zone-a".into()),
            cni_conf_dir: self.conf_dir(),
            cni_bin_dirs: vec![self.bin_dir.clone()],
            pods_dir: self.pods_dir(),
            kubewire_bin: Some(self.bin_dir.join("kubewire")),
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            max_pods: 110,
        }
    }

    fn start_kubelet(&mut self, kubeconfig: &Path) {
        let args = self.args(kubeconfig);
        self.kubelet = Some(KubeletThread::start(&self.node, args));
    }

    fn kill_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.kill();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_kubelet();
        // What the kubelet left: container processes (by its records) and sandboxes.
        let cni = CniRuntime::new(self.conf_dir(), vec![self.bin_dir.clone()]);
        let pods_dir = self.pods_dir();
        match self.node.run(|| kubelet::teardown_pods(&pods_dir, &cni)) {
            Ok(Ok(())) => {}
            other => eprintln!("cleaning up pods: {other:?}"),
        }
        if let Ok(nl) = Netlink::open() {
            let _ = nl.delete_link_by_name(&self.host_link);
        }
    }
}

fn setup(bin_dir: PathBuf) -> Env {
    let node = testutil::netns("kubelet-node");
    let host_link = format!("kwk{}", std::process::id() % 1_000_000);
    let scratch = tempfile::tempdir().unwrap();
    let env = Env {
        node,
        host_link,
        scratch,
        bin_dir,
        kubelet: None,
    };
    let host = Netlink::open().unwrap();
    host.add_veth(&VethSpec {
        name: &env.host_link,
        mac: None,
        peer_name: "eth0",
        peer_mac: None,
        peer_netns: Some(&env.node),
        mtu: None,
        up: true,
    })
    .unwrap();
    let idx = host.link(&env.host_link).unwrap().unwrap().index;
    host.add_address(idx, format!("{HOST_IP}/24").parse().unwrap(), true)
        .unwrap();
    host.add_address(idx, "2001:db8:77::1/64".parse().unwrap(), true)
        .unwrap();
    let nl = Netlink::open_in(&env.node).unwrap();
    let eth0 = nl.link("eth0").unwrap().unwrap().index;
    nl.set_link_up(eth0, true).unwrap();
    nl.add_address(eth0, format!("{}/24", NODE_IPS[0]).parse().unwrap(), true)
        .unwrap();
    nl.add_address(eth0, format!("{}/64", NODE_IPS[1]).parse().unwrap(), true)
        .unwrap();
    std::fs::create_dir_all(env.conf_dir()).unwrap();
    let conflist = json!({
        "cniVersion": "1.1.0",
        "name": "kubewire",
        "plugins": [{"type": "kubewire-cni", "podCIDRs": ["10.244.7.0/24", "fd00:10:244:7::/64"], "dataDir": env.scratch.path().join("ipam")}],
    });
    std::fs::write(
        env.conf_dir().join("10-kubewire.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    env
}

/// The API server on the host end of the node's link, so the kubelet reaches it from the node.
async fn api_server() -> (kube::Client, TestServer) {
    let server =
        TestServer::start_with(|c| c.listen = format!("{HOST_IP}:0").parse().unwrap()).await;
    let client = kubewire_api::client::from_kubeconfig(&server.kubeconfig)
        .await
        .unwrap();
    (client, server)
}

/// Polls `f` until it returns `Some`, or panics after `secs` with `what`.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One HTTP request from the node namespace; the body of the answer.
async fn http(node: &NetNs, method: &str, addr: SocketAddr, path: &str) -> Option<String> {
    let ns = node.try_clone().ok()?;
    let (method, path) = (method.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        ns.run(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(
                s,
                "{method} {path} HTTP/1.1\r\nHost: pod\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
        })
        .ok()?
        .ok()
    })
    .await
    .ok()?
}

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["nodeName"] = json!(NODE);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

fn condition(p: &Pod, t: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

fn container_id(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .clone()
}

fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect()
}

async fn wait_ready(pods: &Api<Pod>, name: &str, ready: bool) -> Pod {
    let want = if ready { "True" } else { "False" };
    eventually(&format!("{name} Ready={want}"), 30, || async {
        let p = pods.get_opt(name).await.ok()??;
        (phase(&p) == Some("Running") && condition(&p, "Ready").as_deref() == Some(want))
            .then_some(p)
    })
    .await
}

/// One node with its kubelet and an API server, for one test. The tests take turns (they share
/// the host-side address and the machine's two cores).
struct Harness {
    env: Env,
    client: kube::Client,
    kubeconfig: PathBuf,
    pods: Api<Pod>,
    node_ns: NetNs,
    // Dropped after `env` (which stops the kubelet): the API server runs on it.
    rt: tokio::runtime::Runtime,
    _server: TestServer,
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Harness {
    fn start(test: &str) -> Option<Harness> {
        if !testutil::root_or_skip(test) {
            return None;
        }
        let bin_dir = binaries()?;
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut env = setup(bin_dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (client, server) = rt.block_on(api_server());
        let kubeconfig = server.kubeconfig.clone();
        env.start_kubelet(&kubeconfig);
        let node_ns = env.node.try_clone().unwrap();
        Some(Harness {
            pods: Api::namespaced(client.clone(), "default"),
            env,
            client,
            kubeconfig,
            node_ns,
            rt,
            _server: server,
            _turn: turn,
        })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn create(&self, p: &Pod) -> Pod {
        self.block_on(self.pods.create(&PostParams::default(), p))
            .unwrap()
    }

    fn wait_ready(&self, name: &str, ready: bool) -> Pod {
        self.block_on(wait_ready(&self.pods, name, ready))
    }

    fn http(&self, method: &str, addr: SocketAddr, path: &str) -> Option<String> {
        self.block_on(http(&self.node_ns, method, addr, path))
    }

    /// Waits until `name` is in `phase` and returns it.
    fn wait_phase(&self, name: &str, want: &str) -> Pod {
        self.block_on(eventually(&format!("{name} {want}"), 30, || async {
            let p = self.pods.get_opt(name).await.ok()??;
            (phase(&p) == Some(want)).then_some(p)
        }))
    }

    fn wait_gone(&self, name: &str) {
        self.block_on(eventually(&format!("{name} gone"), 30, || async {
            self.pods.get_opt(name).await.ok()?.is_none().then_some(())
        }))
    }
}

/// A pod of the built-in image serving HTTP on 8080 (named `http`), with `extra` merged into
/// its container.
fn server(name: &str, extra: serde_json::Value) -> Pod {
    let mut c = json!({"name": "app", "image": "kubewire/serve", "ports": [{"name": "http", "containerPort": 8080}]});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    pod(
        name,
        json!({"containers": [c], "terminationGracePeriodSeconds": 5}),
    )
}

fn first_status(p: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .cloned()
        .expect("a container status")
}

#[test]
fn node_registers_ready_with_addresses_and_labels() {
    let Some(h) = Harness::start("node registration") else {
        return;
    };
    let node = h.block_on(eventually("node Ready", 20, || async {
        let n = Api::<Node>::all(h.client.clone())
            .get_opt(NODE)
            .await
            .ok()??;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(n)
    }));
    let status = node.status.clone().unwrap();
    let addrs: Vec<(String, String)> = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        [
            ("InternalIP".to_string(), NODE_IPS[0].to_string()),
            ("InternalIP".into(), NODE_IPS[1].into()),
            ("Hostname".into(), NODE.into()),
        ],
        "both families' InternalIPs and the hostname"
    );
    let labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
    let capacity = status.capacity.unwrap();
    assert_eq!(capacity["pods"].0, "110");
    assert!(capacity.contains_key("cpu") && capacity.contains_key("memory"));
    let storage: u64 = capacity["ephemeral-storage"].0.parse().expect("bytes");
    assert!(
        storage > 0 && storage != 107_374_182_400,
        "measured, not a constant: {storage}"
    );
    assert!(
        status
            .node_info
            .unwrap()
            .kubelet_version
            .ends_with("-kubewire")
    );
}

#[test]
fn pods_run_in_their_own_network_with_the_kubelets_environment() {
    let Some(h) = Harness::start("pod start") else {
        return;
    };
    // The built-in image: Running and Ready with an address per family, serving its name. A
    // startup probe gates the readiness probe.
    h.create(&server(
        "web",
        json!({"startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 30},
               "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1}}),
    ));
    let running = h.wait_ready("web", true);
    let ips = pod_ips(&running);
    assert_eq!(ips.len(), 2, "one address per family: {ips:?}");
    assert!(ips[0].is_ipv4() != ips[1].is_ipv4(), "{ips:?}");
    let st = running.status.clone().unwrap();
    assert_eq!(st.host_ip.as_deref(), Some(NODE_IPS[0]));
    assert_eq!(st.pod_ip, Some(ips[0].to_string()));
    assert!(st.start_time.is_some());
    let cs = first_status(&running);
    assert!(cs.ready && cs.started == Some(true));
    assert!(cs.container_id.unwrap().starts_with("kubewire://"));
    assert!(cs.state.unwrap().running.is_some());
    for ip in &ips {
        let addr = SocketAddr::new(*ip, 8080);
        let name = h.http("GET", addr, "/hostname");
        assert_eq!(
            name.as_deref(),
            Some("web"),
            "served from the pod at {addr}"
        );
    }

    // The environment: fieldRefs, $(VAR) expansion, service links, HOSTNAME; the pod's own
    // resolv.conf and service-account files. An exec readiness probe runs inside the pod.
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "my-db", "namespace": "default"},
        "spec": {"selector": {"app": "db"}, "ports": [{"name": "sql", "port": 5432}]},
    }))
    .unwrap();
    let svc = h
        .block_on(
            Api::<Service>::namespaced(h.client.clone(), "default")
                .create(&PostParams::default(), &svc),
        )
        .unwrap();
    let db_ip = svc.spec.unwrap().cluster_ip.expect("a cluster IP");
    let created = h.create(&pod(
        "envpod",
        json!({"containers": [{
            "name": "app", "image": "busybox",
            "command": ["sh", "-c", "env; echo NS=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); grep ^search /etc/resolv.conf; sleep 60"],
            "env": [
                {"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "GREETING", "value": "hello $(MY_POD_NAME)"},
            ],
            "readinessProbe": {"exec": {"command": ["test", "-s", "/etc/hosts"]}, "periodSeconds": 1},
        }], "terminationGracePeriodSeconds": 1}),
    ));
    let uid = created.metadata.uid.clone().unwrap();
    let envpod = h.wait_ready("envpod", true);
    let log_path = h.env.pods_dir().join(&uid).join("logs/app.log");
    let log = h.block_on(eventually("envpod output", 10, || async {
        let text = std::fs::read_to_string(&log_path).ok()?;
        text.contains("search ").then_some(text)
    }));
    let pod_ip = pod_ips(&envpod)[0].to_string();
    for want in [
        "MY_POD_NAME=envpod".to_string(),
        format!("MY_POD_IP={pod_ip}"),
        format!("MY_NODE={NODE}"),
        "GREETING=hello envpod".into(),
        "HOSTNAME=envpod".into(),
        "KUBERNETES_SERVICE_HOST=".into(),
        "KUBERNETES_SERVICE_PORT=".into(),
        "KUBERNETES_PORT=tcp://".into(),
        format!("MY_DB_SERVICE_HOST={db_ip}"),
        "MY_DB_SERVICE_PORT=5432".into(),
        "MY_DB_SERVICE_PORT_SQL=5432".into(),
        format!("MY_DB_PORT_5432_TCP_ADDR={db_ip}"),
        "NS=default".into(),
        "search default.svc.cluster.local svc.cluster.local cluster.local".into(),
    ] {
        assert!(log.contains(&want), "{want:?} not in:\n{log}");
    }

    // hostNetwork: the pod runs in the node's namespace, with the node's addresses and name.
    h.create(&pod(
        "hostnet",
        json!({"hostNetwork": true, "containers": [{
            "name": "app", "image": "kubewire/serve", "ports": [{"containerPort": 18080}],
        }]}),
    ));
    let hostnet = h.wait_ready("hostnet", true);
    let node_ips: Vec<IpAddr> = NODE_IPS.iter().map(|ip| ip.parse().unwrap()).collect();
    assert_eq!(pod_ips(&hostnet), node_ips);
    let node_addr = SocketAddr::new(node_ips[0], 18080);
    let answer = h.block_on(eventually("hostnet serving", 10, || {
        http(&h.node_ns, "GET", node_addr, "/hostname")
    }));
    assert_eq!(answer, NODE, "a host-network pod has the node's hostname");
}

#[test]
fn containers_complete_fail_and_restart_per_restart_policy() {
    let Some(h) = Harness::start("restart policy") else {
        return;
    };
    let sh = |script: &str| json!([{"name": "app", "image": "busybox", "command": ["sh", "-c", script]}]);
    // Init containers first, then the container; restartPolicy Never.
    h.create(&pod(
        "job",
        json!({"restartPolicy": "Never",
            "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "exit 0"]}],
            "containers": sh("exit 0")}),
    ));
    h.create(&pod(
        "failing",
        json!({"restartPolicy": "Never", "containers": sh("exit 3")}),
    ));
    // OnFailure: restarted at once, then after a CrashLoopBackOff delay.
    h.create(&pod(
        "crashing",
        json!({"restartPolicy": "OnFailure", "containers": sh("exit 1")}),
    ));
    for (name, want, code) in [("job", "Succeeded", 0), ("failing", "Failed", 3)] {
        let p = h.wait_phase(name, want);
        let term = first_status(&p)
            .state
            .and_then(|s| s.terminated)
            .expect("terminated");
        assert_eq!(term.exit_code, code);
        let uid = p.metadata.uid.clone().unwrap();
        h.block_on(eventually(
            &format!("{name}'s sandbox released"),
            10,
            || async {
                let netns = Path::new("/run/netns").join(kubelet::netns_name(&uid));
                (!netns.exists() && !h.env.pods_dir().join(&uid).exists()).then_some(())
            },
        ));
        if name == "job" {
            let status = p.status.clone().unwrap();
            let init = &status.init_container_statuses.expect("init statuses")[0];
            let t = init.state.clone().and_then(|s| s.terminated).unwrap();
            assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
            assert_eq!(condition(&p, "Initialized").as_deref(), Some("True"));
        }
    }
    // A finished pod is deleted at once: nothing of it runs any more.
    h.block_on(h.pods.delete("job", &DeleteParams::default()))
        .unwrap();
    h.wait_gone("job");
    let looping = h.block_on(eventually("crashing in CrashLoopBackOff", 30, || async {
        let p = h.pods.get_opt("crashing").await.ok()??;
        let cs = first_status(&p);
        (cs.state?.waiting?.reason? == "CrashLoopBackOff").then_some(p)
    }));
    let cs = first_status(&looping);
    assert!(cs.restart_count >= 1, "restarted once before backing off");
    assert_eq!(phase(&looping), Some("Running"), "restarting, not failed");
    let last = cs.last_state.and_then(|s| s.terminated).expect("lastState");
    assert_eq!(last.exit_code, 1);
    assert_eq!(condition(&looping, "Ready").as_deref(), Some("False"));
}

#[test]
fn readiness_flips_ready_and_liveness_restarts() {
    let Some(h) = Harness::start("probes") else {
        return;
    };
    h.create(&server(
        "web",
        json!({"readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}}),
    ));
    h.create(&server(
        "live",
        json!({"livenessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 2}}),
    ));
    // Readiness failure flips Ready only; healing flips it back.
    let web = h.wait_ready("web", true);
    let web_addr = SocketAddr::new(pod_ips(&web)[0], 8080);
    h.http("POST", web_addr, "/readyz?fail=true")
        .expect("POST /readyz?fail=true");
    let not_ready = h.wait_ready("web", false);
    assert_eq!(restarts(&not_ready), 0, "readiness never restarts");
    assert!(!first_status(&not_ready).ready);
    assert_eq!(
        condition(&not_ready, "ContainersReady").as_deref(),
        Some("False")
    );
    h.http("POST", web_addr, "/readyz?fail=false")
        .expect("POST /readyz?fail=false");
    h.wait_ready("web", true);

    // A liveness failure kills the container and starts a new one.
    let live = h.wait_ready("live", true);
    let live_addr = SocketAddr::new(pod_ips(&live)[0], 8080);
    h.http("POST", live_addr, "/readyz?fail=true")
        .expect("POST /readyz?fail=true");
    let restarted = h.block_on(eventually("live restarted", 30, || async {
        let p = h.pods.get_opt("live").await.ok()??;
        (restarts(&p) >= 1 && condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
    }));
    assert_ne!(
        container_id(&restarted),
        container_id(&live),
        "a new process"
    );
    assert!(
        first_status(&restarted)
            .last_state
            .and_then(|l| l.terminated)
            .is_some(),
        "lastState records the killed container"
    );
    assert_eq!(
        h.http("GET", live_addr, "/readyz").as_deref(),
        Some("ok"),
        "the new container is healthy"
    );
}

#[test]
fn a_restarted_kubelet_adopts_running_pods_and_reaps_deleted_ones() {
    let Some(mut h) = Harness::start("kubelet restart") else {
        return;
    };
    h.create(&server("web", json!({})));
    let kept = h.create(&pod(
        "sleeper",
        json!({"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "600"]}]}),
    ));
    let before = h.wait_ready("web", true);
    h.wait_ready("sleeper", true);
    let web_addr = SocketAddr::new(pod_ips(&before)[0], 8080);

    // kill -9 of the kubelet: the pods keep running and serving.
    h.env.kill_kubelet();
    let name = h.http("GET", web_addr, "/hostname");
    assert_eq!(name.as_deref(), Some("web"), "serving with no kubelet");
    // Deleted while the kubelet is down: torn down when it comes back.
    let uid = kept.metadata.uid.clone().unwrap();
    let netns = Path::new("/run/netns").join(kubelet::netns_name(&uid));
    assert!(netns.exists());
    h.block_on(
        h.pods
            .delete("sleeper", &DeleteParams::default().grace_period(0)),
    )
    .unwrap();

    let kubeconfig = h.kubeconfig.clone();
    h.env.start_kubelet(&kubeconfig);
    let after = h.wait_ready("web", true);
    assert_eq!(
        container_id(&after),
        container_id(&before),
        "the same process, adopted"
    );
    assert_eq!(restarts(&after), 0);
    assert_eq!(pod_ips(&after), pod_ips(&before), "the same network");
    assert_eq!(h.http("GET", web_addr, "/hostname").as_deref(), Some("web"));
    h.block_on(eventually(
        "the deleted pod's sandbox torn down",
        20,
        || async { (!netns.exists() && !h.env.pods_dir().join(&uid).exists()).then_some(()) },
    ));

    // The adopted pod is still the kubelet's to stop.
    h.block_on(h.pods.delete("web", &DeleteParams::default()))
        .unwrap();
    h.wait_gone("web");
    assert_eq!(h.http("GET", web_addr, "/hostname"), None, "stopped");
}

#[test]
fn graceful_deletion_honours_the_grace_period_then_removes_the_sandbox() {
    let Some(h) = Harness::start("graceful deletion") else {
        return;
    };
    // A pod that ignores SIGTERM stays visible as terminating for its grace period.
    let created = h.create(&pod(
        "stubborn",
        json!({"containers": [{
            "name": "app", "image": "busybox",
            "command": ["sh", "-c", "trap '' TERM; sleep 600"],
        }], "terminationGracePeriodSeconds": 3}),
    ));
    let uid = created.metadata.uid.clone().unwrap();
    h.wait_ready("stubborn", true);
    let netns = Path::new("/run/netns").join(kubelet::netns_name(&uid));
    assert!(netns.exists());
    let deleted_at = Instant::now();
    h.block_on(h.pods.delete("stubborn", &DeleteParams::default()))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let terminating = h.block_on(h.pods.get_opt("stubborn")).unwrap();
    assert!(
        terminating.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "visible while terminating"
    );
    h.wait_gone("stubborn");
    assert!(
        deleted_at.elapsed() >= Duration::from_secs(3),
        "the grace period was honoured"
    );
    assert!(!netns.exists(), "pod network namespace removed");
    assert!(
        !h.env.pods_dir().join(&uid).exists(),
        "pod directory removed"
    );

    // A second delete with grace period 0 cuts the first one's grace period short.
    let created = h.create(&pod(
        "forced",
        json!({"containers": [{
            "name": "app", "image": "busybox",
            "command": ["sh", "-c", "trap '' TERM; sleep 600"],
        }], "terminationGracePeriodSeconds": 60}),
    ));
    let uid = created.metadata.uid.clone().unwrap();
    h.wait_ready("forced", true);
    h.block_on(h.pods.delete("forced", &DeleteParams::default()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let deleted_at = Instant::now();
    h.block_on(
        h.pods
            .delete("forced", &DeleteParams::default().grace_period(0)),
    )
    .unwrap();
    let netns = Path::new("/run/netns").join(kubelet::netns_name(&uid));
    h.block_on(eventually("forced pod's sandbox torn down", 10, || async {
        (!netns.exists() && !h.env.pods_dir().join(&uid).exists()).then_some(())
    }));
    assert!(deleted_at.elapsed() < Duration::from_secs(10));

    // One that exits on SIGTERM goes at once.
    h.create(&server("web", json!({})));
    h.wait_ready("web", true);
    let deleted_at = Instant::now();
    h.block_on(h.pods.delete("web", &DeleteParams::default()))
        .unwrap();
    h.wait_gone("web");
    assert!(
        deleted_at.elapsed() < Duration::from_secs(5),
        "no need to wait for the grace period"
    );
}
