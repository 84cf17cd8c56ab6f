//! The lab end to end, as a user drives it: `lab up --nodes 3`, the example application applied,
//! every pod Ready and reaching every other pod, readiness and liveness probes doing their work,
//! a rolling update that never drops below what maxUnavailable allows, components killed with
//! -9 and brought back while pods keep their network, and `lab down` leaving nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubewire_datapath::testutil;
use kubewire_lab::cluster::plan::Plan;

struct Lab {
    root: tempfile::TempDir,
    name: String,
}

impl Lab {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kubewire"))
            .arg("lab")
            .args(args)
            .args(["--name", &self.name])
            .env("KUBEWIRE_LAB_ROOT", self.root.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("kubewire runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "lab {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn plan(&self) -> Plan {
        serde_json::from_slice(
            &std::fs::read(self.root.path().join(&self.name).join("lab.json")).expect("lab state"),
        )
        .expect("lab state parses")
    }

    /// `lab exec` into a pod: Ok(stdout) or Err(stderr).
    fn exec(&self, pod: &str, command: &[&str]) -> Result<String, String> {
        let mut args = vec!["exec", pod, "--"];
        args.extend(command);
        let out = Command::new(env!("CARGO_BIN_EXE_kubewire"))
            .arg("lab")
            .args(["exec", "--name", &self.name])
            .args(&args[1..])
            .env("KUBEWIRE_LAB_ROOT", self.root.path())
            .output()
            .expect("kubewire runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every cell of a `lab matrix` table is ✓ (the legend line below it names the other marks).
fn all_reachable(matrix: &str) -> bool {
    matrix
        .lines()
        .take_while(|l| !l.is_empty())
        .all(|l| !l.contains('✗') && !l.contains('½'))
}

fn plugin_built() -> bool {
    let dir = Path::new(env!("CARGO_BIN_EXE_kubewire"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if dir.join("kubewire-cni").is_file() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "kubewire-cni is not built beside kubewire: build the workspace"
    );
    eprintln!("skipping: kubewire-cni is not built (cargo build -p kubewire-cni)");
    false
}

fn agent_or_kubelet_pid(plan: &Plan, role: &str, node: &str) -> Option<i32> {
    kubewire_lab::cluster::lab_processes(plan)
        .into_iter()
        .find(|(_, c)| {
            let tail = c.split(" -- ").last().unwrap_or_default();
            tail.split_whitespace().any(|w| w == role)
                && tail.contains(&format!("--node-name {node} "))
        })
        .map(|(pid, _)| pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_end_to_end() {
    if !testutil::root_or_skip("lab end to end") || !plugin_built() {
        return;
    }
    let lab = Lab {
        root: tempfile::tempdir().unwrap(),
        name: format!("e2e{}", std::process::id() % 100_000),
    };

    let up = lab.ok(&["up", "--nodes", "3", "--zones", "2"]);
    assert!(up.contains("is up") && up.contains("Ready"), "{up}");
    assert!(lab.ok(&["up"]).contains("already running"));
    let plan = lab.plan();
    let kubeconfig = kube::config::Kubeconfig::read_from(plan.kubeconfig()).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();

    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 3);
    let zones: std::collections::BTreeSet<String> = nodes
        .items
        .iter()
        .filter_map(|n| {
            n.metadata
                .labels
                .as_ref()?
                .get("topology.kubernetes.io/zone")
                .cloned()
        })
        .collect();
    assert_eq!(zones.len(), 2, "nodes spread over two zones: {zones:?}");

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab");
    lab.ok(&["apply", "-f", examples.to_str().unwrap()]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "demo");
    let all = eventually("6 Ready pods", Duration::from_secs(120), async || {
        let list = pods.list(&ListParams::default()).await.ok()?;
        (list.items.len() == 6 && list.items.iter().all(ready)).then_some(list.items)
    })
    .await;
    for p in &all {
        assert_eq!(
            p.status.as_ref().unwrap().pod_ips.as_ref().unwrap().len(),
            2,
            "dual-stack pod {:?}",
            p.metadata.name
        );
    }
    let matrix = lab.ok(&["matrix", "-n", "demo"]);
    assert!(all_reachable(&matrix), "{matrix}");

    // In-cluster clients: from inside a pod the `kubernetes` Service's ClusterIP reaches the API
    // server through the service proxy, with the pod's service-account token and CA, both by
    // kubectl's in-cluster configuration and by kube-rs's `Client::try_default()`.
    let listed = lab
        .exec(
            "demo/client",
            &["kubectl", "get", "pods", "-n", "demo", "-o", "name"],
        )
        .expect("kubectl in a pod");
    assert!(listed.contains("pod/client"), "{listed}");
    let me = std::env::current_exe().unwrap();
    let probe = lab
        .exec(
            "demo/client",
            &[
                "env",
                "KUBEWIRE_IN_CLUSTER_PROBE=1",
                me.to_str().unwrap(),
                "--exact",
                "in_cluster_probe",
                "--ignored",
                "--nocapture",
            ],
        )
        .expect("the in-cluster probe runs in a pod");
    assert!(
        probe.contains("in-cluster client listed 6 pods in demo"),
        "{probe}"
    );

    // Services: the EndpointSlice controller lists each Service's pods and the agents' proxies
    // send a ClusterIP (from a pod) and a NodePort (from the host, outside the cluster) to them.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "demo");
    let backend_ip = services
        .get("backend")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let backend_pods: Vec<String> = all
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .filter(|n| n.starts_with("backend-"))
        .collect();
    let url = format!("http://{backend_ip}:9090/hostname");
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let name = lab
            .exec("demo/client", &["curl", "-sf", "--max-time", "3", &url])
            .unwrap_or_else(|e| panic!("{url} from the client pod: {e}"));
        answered.insert(name.trim().to_string());
    }
    assert!(
        answered.iter().all(|n| backend_pods.contains(n)) && !answered.is_empty(),
        "{answered:?} are not all backend pods {backend_pods:?}"
    );
    let frontend_svc = services.get("frontend").await.unwrap().spec.unwrap();
    let node_port = frontend_svc.ports.unwrap()[0].node_port.unwrap();
    let node_ip = plan.nodes()[0].addresses[0].addr();
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "3"])
        .arg(format!("http://{node_ip}:{node_port}/hostname"))
        .output()
        .unwrap();
    let name = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && name.starts_with("frontend-"),
        "NodePort {node_ip}:{node_port} from the host: {name:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The frontend is a LoadBalancer: the controller gives it an address from the lab's pool,
    // and the host (the lab's load balancer, routing the pool to every node) reaches it.
    let lb_ip = eventually(
        "the frontend's load-balancer IP",
        Duration::from_secs(30),
        async || {
            services
                .get("frontend")
                .await
                .ok()?
                .status?
                .load_balancer?
                .ingress?
                .first()?
                .ip
                .clone()
        },
    )
    .await;
    let lb_ip: std::net::IpAddr = lb_ip.parse().unwrap();
    assert!(
        plan.load_balancer_cidrs()
            .iter()
            .any(|pool| pool.contains(&lb_ip)),
        "{lb_ip} is not from the lab's pools {:?}",
        plan.load_balancer_cidrs()
    );
    let url = format!("http://{}/hostname", std::net::SocketAddr::new(lb_ip, 80));
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "3", &url])
        .output()
        .unwrap();
    let name = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && name.starts_with("frontend-"),
        "{url} from the host: {name:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Cluster DNS: pods find Services by name through their resolv.conf (search path and the
    // kube-dns Service, answered by `kubewire dns`), and StatefulSet pods by hostname.
    let name = lab
        .exec(
            "demo/client",
            &[
                "curl",
                "-sf",
                "--max-time",
                "3",
                "http://backend:9090/hostname",
            ],
        )
        .unwrap_or_else(|e| panic!("backend by name from the client pod: {e}"));
    assert!(backend_pods.contains(&name.trim().to_string()), "{name:?}");
    let database = all
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("database-0"))
        .expect("the database pod");
    let database_ip = &database.status.as_ref().unwrap().pod_ips.as_ref().unwrap()[0].ip;
    let hosts = lab
        .exec("demo/client", &["getent", "hosts", "database-0.database"])
        .unwrap_or_else(|e| panic!("database-0.database from the client pod: {e}"));
    assert!(
        hosts.contains(database_ip.as_str())
            && hosts.contains("database-0.database.demo.svc.cluster.local"),
        "{hosts:?}"
    );
    let status = lab.ok(&["status"]);
    let backend_row = status
        .lines()
        .find(|l| l.starts_with("demo") && l.contains(" backend ") && l.contains("9090/TCP"))
        .unwrap_or_else(|| panic!("no Service row for backend in:\n{status}"));
    assert!(
        backend_row.contains(&backend_ip) && backend_row.trim_end().ends_with(" 2"),
        "backend: its ClusterIP and 2 ready endpoints: {backend_row:?}"
    );

    // Readiness failure flips Ready only.
    let frontend = all
        .iter()
        .find(|p| p.metadata.name.as_deref().unwrap().starts_with("frontend-"))
        .unwrap();
    let frontend_name = frontend.metadata.name.clone().unwrap();
    let ip = &frontend.status.as_ref().unwrap().pod_ips.as_ref().unwrap()[0].ip;
    lab.exec(
        "demo/client",
        &[
            "curl",
            "-sf",
            "-XPOST",
            &format!("http://{ip}:8080/readyz?fail=true"),
        ],
    )
    .expect("client reaches frontend");
    eventually("frontend not Ready", Duration::from_secs(30), async || {
        (!ready(&pods.get(&frontend_name).await.ok()?)).then_some(())
    })
    .await;
    lab.exec(
        "demo/client",
        &[
            "curl",
            "-sf",
            "-XPOST",
            &format!("http://{ip}:8080/readyz?fail=false"),
        ],
    )
    .expect("client reaches frontend");
    eventually(
        "frontend Ready again",
        Duration::from_secs(30),
        async || ready(&pods.get(&frontend_name).await.ok()?).then_some(()),
    )
    .await;
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |c| c.iter().map(|c| c.restart_count).sum::<i32>())
    };
    assert_eq!(
        restarts(&pods.get(&frontend_name).await.unwrap()),
        0,
        "readiness never restarts"
    );

    // Liveness failure restarts the container.
    let sick: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sick"},
        "spec": {"containers": [{"name": "c", "image": "kubewire/serve", "livenessProbe": {"httpGet": {"path": "/missing", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}}]},
    })).unwrap();
    pods.create(&PostParams::default(), &sick).await.unwrap();
    eventually("a liveness restart", Duration::from_secs(60), async || {
        (restarts(&pods.get("sick").await.ok()?) >= 1).then_some(())
    })
    .await;
    pods.delete("sick", &Default::default()).await.unwrap();
    eventually("the sick pod gone", Duration::from_secs(60), async || {
        pods.get_opt("sick").await.ok()?.is_none().then_some(())
    })
    .await;

    // A rolling update never has fewer Ready frontends than replicas - maxUnavailable (2 - 0).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "demo");
    deployments.patch("frontend", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"rollout": "2"}}}}}))).await.unwrap();
    let mut fewest = usize::MAX;
    eventually("the rollout", Duration::from_secs(120), async || {
        let list = pods
            .list(&ListParams::default().labels("app=frontend"))
            .await
            .ok()?;
        let ready_now = list
            .items
            .iter()
            .filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
            .count();
        fewest = fewest.min(ready_now);
        let d = deployments.get("frontend").await.ok()?;
        let s = d.status?;
        (s.updated_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.replicas == Some(2)
            && s.observed_generation == d.metadata.generation)
            .then_some(())
    })
    .await;
    assert!(
        fewest >= 2,
        "fewest Ready frontends during the rollout: {fewest}"
    );

    // kill -9 an agent and a kubelet: the lab restarts them, and pods keep their network.
    for (role, node) in [("agent", "node0"), ("kubelet", "node1")] {
        let node = format!("{}-{node}", lab.name);
        let pid = agent_or_kubelet_pid(&plan, role, &node)
            .unwrap_or_else(|| panic!("no {role} on {node}"));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        eventually(
            &format!("{role} restarted"),
            Duration::from_secs(30),
            async || agent_or_kubelet_pid(&plan, role, &node).filter(|p| *p != pid),
        )
        .await;
        let matrix = lab.ok(&["matrix", "-n", "demo"]);
        assert!(
            all_reachable(&matrix),
            "after killing the {role}:\n{matrix}"
        );
    }

    // A second lab runs beside the first on its own network, and goes without touching it.
    let second = Lab {
        root: tempfile::tempdir().unwrap(),
        name: format!("{}b", lab.name),
    };
    assert!(
        second
            .ok(&["up", "--nodes", "1", "--ip-family", "ipv4"])
            .contains("is up")
    );
    let other = second.plan();
    assert_ne!(other.bridge(), plan.bridge());
    assert_ne!(other.api_address(), plan.api_address());
    second.ok(&["down"]);
    let matrix = lab.ok(&["matrix", "-n", "demo"]);
    assert!(
        all_reachable(&matrix),
        "after a second lab came and went:\n{matrix}"
    );

    // Down leaves nothing: processes, namespaces, links, mounts, state.
    lab.ok(&["down"]);
    assert!(
        kubewire_lab::cluster::lab_processes(&plan).is_empty(),
        "processes remain: {:?}",
        kubewire_lab::cluster::lab_processes(&plan)
    );
    let prefix = plan.netns_prefix();
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces remain: {left:?}");
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&plan.bridge()),
        "the lab bridge remains"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&prefix), "mounts remain");
    assert!(!PathBuf::from(&plan.dir).exists(), "state remains");
    for pool in plan.load_balancer_cidrs() {
        let routes = Command::new("ip")
            .args(["route", "show", &pool.to_string()])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&routes.stdout).trim().is_empty(),
            "the route to {pool} remains"
        );
    }
}

/// Run inside a lab pod by `lab_end_to_end` (through `lab exec`, with the container's
/// environment): kube-rs finds the API server as an in-cluster client.
#[tokio::test]
#[ignore = "runs inside a lab pod, started by lab_end_to_end"]
async fn in_cluster_probe() {
    if std::env::var_os("KUBEWIRE_IN_CLUSTER_PROBE").is_none() {
        eprintln!("in_cluster_probe: only meaningful inside a lab pod");
        return;
    }
    let config = kube::Config::infer().await.expect("a client configuration");
    let host = std::env::var("KUBERNETES_SERVICE_HOST").expect("the pod's service env");
    assert_eq!(
        config.cluster_url.host(),
        Some(host.as_str()),
        "the in-cluster configuration, not a kubeconfig"
    );
    let client = kube::Client::try_default()
        .await
        .expect("an in-cluster client");
    let ns = std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .expect("the service-account namespace");
    let pods = Api::<Pod>::namespaced(client, ns.trim())
        .list(&ListParams::default())
        .await
        .expect("listing pods through the kubernetes Service");
    println!(
        "in-cluster client listed {} pods in {}",
        pods.items.len(),
        ns.trim()
    );
}
