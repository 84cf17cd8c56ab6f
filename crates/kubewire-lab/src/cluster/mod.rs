//! `kubewire lab up/down/status/kubeconfig/apply`: bringing a whole cluster up on this machine
//! and taking it down again without leaving anything behind.

mod addons;
pub mod network;
pub mod plan;
mod services;
pub mod supervise;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use plan::{IpFamily, Plan, free_index};

const DEFAULT_NAME: &str = "kubewire";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Subcommand, Debug)]
pub enum LabCommand {
    /// Start a lab in the background: API server, controller, and per node a network namespace
    /// with an agent and a kubelet. A second `up` of a running lab says so and does nothing.
    Up(UpArgs),
    /// Stop a lab and remove everything it made: processes, namespaces, links, state.
    Down(NameArg),
    /// Nodes and pods of a lab, as tables.
    Status(NameArg),
    /// Print the path of the lab's kubeconfig (for KUBECONFIG=… kubectl).
    Kubeconfig(NameArg),
    /// Create or update the objects in a manifest file or a directory of them.
    Apply(ApplyArgs),
    /// Run a command inside a pod's network namespace, with the pod's /etc/resolv.conf and
    /// /etc/hosts: `kubewire lab exec NAMESPACE/POD -- COMMAND...`.
    Exec(ExecPodArgs),
    /// Wait until every pod (of one namespace, with -n) is Ready.
    Wait(WaitArgs),
    /// Every pod to every pod over TCP, from inside each pod's network namespace, as a table.
    Matrix(MatrixArgs),
    /// Runs a lab's components (started by `up`).
    #[command(hide = true)]
    Supervise(NameArg),
    /// The lab kubelet of one node (started by the supervisor inside the node's namespace).
    #[command(hide = true)]
    Kubelet(crate::kubelet::KubeletArgs),
}

#[derive(clap::Args, Debug)]
pub struct NameArg {
    /// Which lab.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=50))]
    pub nodes: u8,
    /// Spread the nodes over this many zones (topology.kubernetes.io/zone).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=26))]
    pub zones: u8,
    /// IP families of the cluster.
    #[arg(long, value_enum, default_value = "dual")]
    pub ip_family: IpFamily,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// A manifest file (YAML, several documents allowed) or a directory of them.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ExecPodArgs {
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// The pod, as NAMESPACE/POD (or POD in the default namespace).
    pub pod: String,
    /// The container whose environment the command gets (default: the pod's first).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// The command and its arguments. It runs with the container's environment (as
    /// `kubectl exec` does), so in-cluster clients find the API server.
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// Only the pods of this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// Only the pods of this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// The directory the kubelet of `node` keeps pod `uid` in.
pub fn pod_dir(plan: &Plan, node: &str, uid: &str) -> PathBuf {
    plan.dir.join(node).join("pods").join(uid)
}

/// Where labs keep their state (`KUBEWIRE_LAB_ROOT` overrides it, e.g. for tests).
pub fn root() -> PathBuf {
    std::env::var_os("KUBEWIRE_LAB_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kubewire/lab"))
}

pub fn load(name: &str) -> Option<Plan> {
    let path = root().join(name).join("lab.json");
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn all_labs() -> Vec<Plan> {
    std::fs::read_dir(root())
        .map(|d| {
            d.filter_map(|e| load(&e.ok()?.file_name().into_string().ok()?))
                .collect()
        })
        .unwrap_or_default()
}

fn supervisor_pid(plan: &Plan) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(supervise::pid_file(plan))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // Only ours: a reused pid of another program is not the supervisor.
    String::from_utf8_lossy(&cmdline)
        .contains("supervise")
        .then(|| Pid::from_raw(pid))
}

fn require_root() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("kubewire lab needs root to create network namespaces: run it with sudo");
    }
    Ok(())
}

pub fn run(cmd: LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Up(args) => up(args),
        LabCommand::Down(a) => down(&a.name),
        LabCommand::Status(a) => runtime()?.block_on(status(&a.name)),
        LabCommand::Kubeconfig(a) => {
            let plan = load(&a.name).with_context(|| {
                format!(
                    "no lab named {:?} (start one with `kubewire lab up`)",
                    a.name
                )
            })?;
            println!("{}", plan.kubeconfig().display());
            Ok(())
        }
        LabCommand::Apply(a) => runtime()?.block_on(apply(&a.name, &a.file)),
        LabCommand::Exec(a) => exec(&a),
        LabCommand::Matrix(a) => matrix(&a),
        LabCommand::Wait(a) => runtime()?.block_on(wait_pods(&a)),
        LabCommand::Kubelet(a) => tokio::runtime::Runtime::new()
            .context("starting the async runtime")?
            .block_on(crate::kubelet::run(a)),
        LabCommand::Supervise(a) => {
            let plan = load(&a.name).with_context(|| format!("no lab named {:?}", a.name))?;
            let exe = std::env::current_exe().context("finding the kubewire binary")?;
            runtime()?
                .block_on(supervise::supervise(&plan, &exe))
                .map_err(Into::into)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn up(args: UpArgs) -> Result<()> {
    require_root()?;
    if let Some(plan) = load(&args.name) {
        if supervisor_pid(&plan).is_some() {
            println!(
                "lab {:?} is already running; kubeconfig: {}",
                args.name,
                plan.kubeconfig().display()
            );
            return Ok(());
        }
        // Left over from a crash: clear it before starting again.
        down(&args.name)?;
    }
    // Taken: labs under this root, and any lab network in the kernel (another root's lab, or
    // what a crash left behind).
    let mut used: Vec<u8> = all_labs().iter().map(|p| p.index).collect();
    used.extend((0..plan::MAX_LABS).filter(|i| {
        Path::new("/sys/class/net")
            .join(format!("kwlab{i}"))
            .exists()
    }));
    let index = free_index(&used).context("too many labs are running")?;
    let plan = Plan::new(
        &args.name,
        index,
        args.nodes,
        args.zones,
        args.ip_family,
        &root(),
    );
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("creating the lab network ({} nodes)", plan.nodes));
    std::fs::create_dir_all(plan.logs())
        .with_context(|| format!("creating {}", plan.dir.display()))?;
    std::fs::write(plan.state_file(), serde_json::to_vec_pretty(&plan)?)?;
    let token = random_token()?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // The lab's admin token: readable by root only.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(supervise::token_file(&plan))?;
        f.write_all(format!("{token},admin,admin,\"system:masters\"\n").as_bytes())?;
    }
    if let Err(e) = network::create(&plan) {
        bar.finish_and_clear();
        let _ = down(&args.name);
        return Err(e).context("creating the lab network");
    }
    bar.set_message("starting components");
    let exe = std::env::current_exe().context("finding the kubewire binary")?;
    let log = std::fs::File::create(plan.logs().join("supervisor.log"))?;
    Command::new(&exe)
        .args(["lab", "supervise", "--name", &plan.name])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal must not reach the lab.
        .process_group(0)
        .spawn()
        .context("starting the lab supervisor")?;
    let ready = runtime()?.block_on(wait_ready(&plan, &bar));
    bar.finish_and_clear();
    ready.with_context(|| {
        format!(
            "the lab did not come up; logs are in {}",
            plan.logs().display()
        )
    })?;
    println!(
        "lab {:?} is up: {} nodes, API server https://{}",
        plan.name,
        plan.nodes,
        std::net::SocketAddr::new(plan.api_address(), plan::API_PORT)
    );
    runtime()?.block_on(status(&plan.name))?;
    println!(
        "\nkubectl: export KUBECONFIG={}",
        plan.kubeconfig().display()
    );
    Ok(())
}

pub async fn client(plan: &Plan) -> Result<kube::Client> {
    Ok(kubewire_api::client::from_kubeconfig(&plan.kubeconfig()).await?)
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(plan: &Plan, bar: &indicatif::ProgressBar) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    bar.set_message("starting the API server");
    while !plan.kubeconfig().exists() {
        if Instant::now() > deadline {
            bail!("the API server did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = client(plan).await?;
    bar.set_message("installing cluster DNS");
    let deadline_api = Instant::now() + READY_TIMEOUT;
    // The API server may still be opening its store: retry until it takes the addons.
    while let Err(e) = addons::install(plan, &c).await {
        if Instant::now() > deadline_api {
            return Err(e).context("installing the kube-dns Service");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let nodes: Api<Node> = Api::all(c);
    loop {
        let ready = match nodes.list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .iter()
                .filter(|n| node_ready(n) && n.spec.as_ref().is_some_and(|s| s.pod_cidrs.is_some()))
                .count(),
            Err(_) => 0,
        };
        bar.set_message(format!("waiting for nodes: {ready}/{} ready", plan.nodes));
        if ready == usize::from(plan.nodes) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{ready} of {} nodes became ready", plan.nodes);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every live process of the lab, with its command line: those in its network namespaces
/// (pods, agents, kubelets) and those whose command line names its directory (API server,
/// controller, supervisor).
pub fn lab_processes(plan: &Plan) -> Vec<(i32, String)> {
    let netns_inodes: Vec<u64> = network::lab_namespaces(plan)
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new(kubewire_datapath::NETNS_RUN_DIR).join(n)).ok())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .collect();
    let dir = plan.dir.display().to_string();
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        // Zombies have an empty command line: they are gone, only not yet reaped.
        if pid == me || raw.is_empty() {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        let in_lab_netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| netns_inodes.contains(&std::os::unix::fs::MetadataExt::ino(&m)));
        if in_lab_netns || cmdline.contains(&dir) {
            out.push((pid, cmdline));
        }
    }
    out
}

fn kill_processes(plan: &Plan) -> usize {
    lab_processes(plan)
        .into_iter()
        .filter(|(pid, _)| kill(Pid::from_raw(*pid), Signal::SIGKILL).is_ok())
        .count()
}

fn down(name: &str) -> Result<()> {
    require_root()?;
    let Some(plan) = load(name) else {
        println!("no lab named {name:?}: nothing to do");
        return Ok(());
    };
    if let Some(pid) = supervisor_pid(&plan) {
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while supervisor_pid(&plan).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Whatever survived (or was orphaned by a crash) goes now, before its namespace does.
    for _ in 0..3 {
        if kill_processes(&plan) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let problems = network::destroy(&plan);
    std::fs::remove_dir_all(&plan.dir)
        .with_context(|| format!("removing {}", plan.dir.display()))?;
    if !problems.is_empty() {
        bail!(
            "lab {name:?} is down, but some pieces could not be removed: {}",
            problems.join("; ")
        );
    }
    println!("lab {name:?} is down");
    Ok(())
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_pods(args: &WaitArgs) -> Result<()> {
    let plan = load(&args.name).with_context(|| {
        format!(
            "no lab named {:?} (start one with `kubewire lab up`)",
            args.name
        )
    })?;
    let c = client(&plan).await?;
    let api: Api<Pod> = match &args.namespace {
        Some(ns) => Api::namespaced(c, ns),
        None => Api::all(c),
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    loop {
        let pods = api
            .list(&ListParams::default())
            .await
            .context("listing pods")?
            .items;
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        bar.set_message(format!("{ready}/{} pods ready", pods.len()));
        if !pods.is_empty() && ready == pods.len() {
            bar.finish_and_clear();
            println!("{ready} pods ready");
            return Ok(());
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            let waiting: Vec<String> = pods
                .iter()
                .filter(|p| !pod_ready(p))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            bail!(
                "{ready} of {} pods became ready; still waiting for: {}",
                pods.len(),
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A running pod as the matrix sees it: where it listens and which namespace to dial from.
struct Endpoint {
    label: String,
    ips: Vec<std::net::IpAddr>,
    port: u16,
    netns: PathBuf,
}

fn pod_netns(plan: &Plan, pod: &Pod) -> Option<PathBuf> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.as_deref()?;
    if spec.host_network == Some(true) {
        let node = plan.nodes().into_iter().find(|n| n.name == node)?;
        return Some(Path::new(kubewire_datapath::NETNS_RUN_DIR).join(node.netns));
    }
    Some(crate::Sandbox::load(&pod_dir(plan, node, pod.metadata.uid.as_deref()?))?.netns_path())
}

/// The first declared TCP port, else the built-in server's default, 8080.
fn first_tcp_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(8080)
}

fn matrix(args: &MatrixArgs) -> Result<()> {
    let plan = load(&args.name).with_context(|| {
        format!(
            "no lab named {:?} (start one with `kubewire lab up`)",
            args.name
        )
    })?;
    let pods = runtime()?.block_on(async {
        let c = client(&plan).await?;
        let api: Api<Pod> = match &args.namespace {
            Some(ns) => Api::namespaced(c, ns),
            None => Api::all(c),
        };
        api.list(&ListParams::default())
            .await
            .map_err(anyhow::Error::from)
    })?;
    let endpoints: Vec<Endpoint> = pods
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| {
            let ips = p
                .status
                .as_ref()?
                .pod_ips
                .as_ref()?
                .iter()
                .filter_map(|i| i.ip.parse().ok())
                .collect();
            let label = match &args.namespace {
                Some(_) => p.metadata.name.clone()?,
                None => format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref()?,
                    p.metadata.name.as_deref()?
                ),
            };
            Some(Endpoint {
                label,
                ips,
                port: first_tcp_port(p),
                netns: pod_netns(&plan, p)?,
            })
        })
        .collect();
    if endpoints.is_empty() {
        println!("no running pods");
        return Ok(());
    }
    let mut rows = vec![
        std::iter::once("FROM \\ TO".to_string())
            .chain(endpoints.iter().map(|e| e.label.clone()))
            .collect::<Vec<_>>(),
    ];
    let mut failures = 0;
    for from in &endpoints {
        let ns = kubewire_datapath::NetNs::open(&from.netns)?;
        let targets: Vec<(Vec<std::net::SocketAddr>, String)> = endpoints
            .iter()
            .map(|to| {
                (
                    to.ips
                        .iter()
                        .map(|ip| std::net::SocketAddr::new(*ip, to.port))
                        .collect(),
                    to.label.clone(),
                )
            })
            .collect();
        let results: Vec<Vec<bool>> = ns.run(move || {
            targets
                .iter()
                .map(|(addrs, _)| {
                    addrs
                        .iter()
                        .map(|a| {
                            std::net::TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok()
                        })
                        .collect()
                })
                .collect()
        })?;
        let mut row = vec![from.label.clone()];
        for r in results {
            failures += r.iter().filter(|ok| !**ok).count();
            row.push(if r.iter().all(|ok| *ok) {
                "✓".to_string()
            } else if r.iter().any(|ok| *ok) {
                "½".to_string()
            } else {
                "✗".to_string()
            });
        }
        rows.push(row);
    }
    println!("{}", table(rows));
    println!("\n✓ every address answered · ½ one family failed · ✗ unreachable");
    if failures > 0 {
        bail!("{failures} pod-to-pod connections failed");
    }
    Ok(())
}

fn exec(args: &ExecPodArgs) -> Result<()> {
    let plan = load(&args.name).with_context(|| {
        format!(
            "no lab named {:?} (start one with `kubewire lab up`)",
            args.name
        )
    })?;
    let (namespace, name) = args
        .pod
        .split_once('/')
        .unwrap_or(("default", args.pod.as_str()));
    let pod = runtime()?
        .block_on(async {
            Api::<Pod>::namespaced(client(&plan).await?, namespace)
                .get(name)
                .await
                .map_err(anyhow::Error::from)
        })
        .with_context(|| format!("finding pod {namespace}/{name}"))?;
    let spec = pod.spec.clone().unwrap_or_default();
    let node = spec
        .node_name
        .clone()
        .with_context(|| format!("pod {namespace}/{name} is not scheduled yet"))?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = pod_dir(&plan, &node, &uid);
    let netns = if spec.host_network == Some(true) {
        let node_plan = plan
            .nodes()
            .into_iter()
            .find(|n| n.name == node)
            .with_context(|| format!("{node} is not a node of this lab"))?;
        Path::new(kubewire_datapath::NETNS_RUN_DIR).join(node_plan.netns)
    } else {
        crate::Sandbox::load(&dir)
            .with_context(|| format!("pod {namespace}/{name} has no sandbox on {node} yet"))?
            .netns_path()
    };
    let exe = std::env::current_exe().context("finding the kubewire binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["internal", "exec-in-pod", "--netns"])
        .arg(netns)
        .arg("--hostname")
        .arg(spec.hostname.as_deref().unwrap_or(name));
    for file in ["resolv.conf", "hosts"] {
        let src = dir.join(file);
        if src.exists() {
            cmd.arg("--bind")
                .arg(format!("{}:/etc/{file}", src.display()));
        }
    }
    if dir.join("serviceaccount").is_dir() {
        cmd.arg("--service-account").arg(dir.join("serviceaccount"));
    }
    let container = match &args.container {
        Some(c) => c.clone(),
        None => spec
            .containers
            .first()
            .map(|c| c.name.clone())
            .with_context(|| format!("pod {namespace}/{name} has no containers"))?,
    };
    if !spec.containers.iter().any(|c| c.name == container) {
        bail!("pod {namespace}/{name} has no container {container:?}");
    }
    if let Some(env) = crate::kubelet::started_env(&dir, &container) {
        // The container's environment replaces ours, but a terminal stays usable.
        let term = std::env::var_os("TERM");
        cmd.env_clear().envs(env);
        if let Some(term) = term {
            cmd.env("TERM", term);
        }
    }
    let err = cmd.arg("--").args(&args.command).exec();
    Err(err).context("running the command in the pod")
}

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn status(name: &str) -> Result<()> {
    let plan = load(name)
        .with_context(|| format!("no lab named {name:?} (start one with `kubewire lab up`)"))?;
    let c = client(&plan).await?;
    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    let mut rows = vec![
        ["NAME", "STATUS", "ZONE", "INTERNAL-IP", "POD-CIDRS"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &nodes.items {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let ips: Vec<String> = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .collect();
        rows.push(vec![
            n.metadata.name.clone().unwrap_or_default(),
            if node_ready(n) { "Ready" } else { "NotReady" }.to_string(),
            labels
                .get(kubewire_api::labels::TOPOLOGY_ZONE)
                .cloned()
                .unwrap_or_else(|| "<none>".into()),
            ips.join(","),
            n.spec
                .as_ref()
                .and_then(|s| s.pod_cidrs.clone())
                .unwrap_or_default()
                .join(","),
        ]);
    }
    println!("{}", table(rows));
    let pods = Api::<Pod>::all(c.clone())
        .list(&ListParams::default())
        .await
        .context("listing pods")?;
    if pods.items.is_empty() {
        println!("\nno pods");
    } else {
        let mut rows = vec![
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "IP",
                "NODE",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for p in &pods.items {
            let status = p.status.clone().unwrap_or_default();
            let containers = status.container_statuses.clone().unwrap_or_default();
            let total = p.spec.as_ref().map_or(0, |s| s.containers.len());
            let ready = containers.iter().filter(|c| c.ready).count();
            let phase = if p.metadata.deletion_timestamp.is_some() {
                "Terminating".to_string()
            } else {
                status.phase.clone().unwrap_or_default()
            };
            rows.push(vec![
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
                format!("{ready}/{total}"),
                phase,
                containers
                    .iter()
                    .map(|c| c.restart_count)
                    .sum::<i32>()
                    .to_string(),
                status
                    .pod_ips
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.ip)
                    .collect::<Vec<_>>()
                    .join(","),
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
            ]);
        }
        println!("\n{}", table(rows));
    }
    let services = Api::<Service>::all(c.clone())
        .list(&ListParams::default())
        .await
        .context("listing services")?;
    let slices = Api::<EndpointSlice>::all(c)
        .list(&ListParams::default())
        .await
        .context("listing endpoint slices")?;
    println!(
        "\n{}",
        table(services::rows(&services.items, &slices.items))
    );
    Ok(())
}

/// Manifests in `path`: the file itself, or the `.yaml`/`.yml`/`.json` files of a directory in
/// name order; each may hold several documents.
fn manifests(path: &Path) -> Result<Vec<serde_json::Value>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        f.sort();
        f
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("parsing {}", file.display()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    Ok(docs)
}

async fn apply(name: &str, path: &Path) -> Result<()> {
    let plan = load(name)
        .with_context(|| format!("no lab named {name:?} (start one with `kubewire lab up`)"))?;
    let client = client(&plan).await?;
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .context("discovering the API")?;
    for doc in manifests(path)? {
        let obj: kube::api::DynamicObject =
            serde_json::from_value(doc.clone()).context("not a Kubernetes object")?;
        let types = obj
            .types
            .clone()
            .context("object without apiVersion/kind")?;
        let gvk = kube::api::GroupVersionKind::try_from(&types)?;
        let (resource, caps) = discovery.resolve_gvk(&gvk).with_context(|| {
            format!(
                "the lab does not serve {}/{}",
                types.api_version, types.kind
            )
        })?;
        let object_name = obj
            .metadata
            .name
            .clone()
            .context("object without metadata.name")?;
        let api: Api<kube::api::DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced
        {
            Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or("default"),
                &resource,
            )
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let what = format!("{}/{}", resource.plural, object_name);
        let verb = if api.get_opt(&object_name).await?.is_some() {
            api.patch(
                &object_name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&doc),
            )
            .await
            .with_context(|| format!("updating {what}"))?;
            "configured"
        } else {
            api.create(&kube::api::PostParams::default(), &obj)
                .await
                .with_context(|| format!("creating {what}"))?;
            "created"
        };
        println!("{what} {verb}");
    }
    Ok(())
}
