//! One worker task per pod: sets up (or adopts) the sandbox and the pod's files, starts, polls,
//! probes and restarts its containers, reports its status, and on deletion stops the
//! containers gracefully, tears the sandbox down and lets the pod go.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodCondition, Probe, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::container::{Backoff, RestartPolicy, RunState, restart_at};
use super::env::{self, PodFacts, Sources};
use super::probe::{self, ProbeAction, ProbeKind, ProbeMachine};
use super::process::{Process, ProcessRecord, signal_all};
use super::status::{ContainerView, PodView, pod_status};
use super::{Kubelet, KubeletError, io_err};
use crate::{
    CniRuntime, DnsPolicy, HostEntry, PodDns, Sandbox, SandboxSpec, hosts_file, resolv_conf,
};

/// How often a pod's containers are polled and its probes considered.
const TICK: Duration = Duration::from_millis(200);
/// How long to wait between attempts to set up a sandbox that failed.
const RETRY: Duration = Duration::from_secs(2);
/// The default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: i64 = 30;
/// The port `kubewire serve` listens on when a container declares none.
const DEFAULT_SERVE_PORT: i32 = 8080;
/// The exit code the kubelet reports for a container it lost track of.
const EXIT_UNKNOWN: i32 = 137;
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The argv of a container: `command` + `args`; with no command, the built-in image's
/// entrypoint `kubewire serve` (given `args`, or a server on each declared port).
pub(crate) fn container_argv(c: &Container, kubewire_bin: &Path) -> Vec<String> {
    let args = c.args.clone().unwrap_or_default();
    if let Some(command) = c.command.as_ref().filter(|c| !c.is_empty()) {
        return command.iter().cloned().chain(args).collect();
    }
    let mut argv = vec![kubewire_bin.display().to_string(), "serve".to_string()];
    if !args.is_empty() {
        argv.extend(args);
        return argv;
    }
    let ports = c.ports.as_deref().unwrap_or_default();
    let mut tcp = 0;
    for p in ports {
        let flag = match p.protocol.as_deref().unwrap_or("TCP") {
            "UDP" => "--udp-port",
            "SCTP" => "--sctp-port",
            _ => {
                tcp += 1;
                "--http-port"
            }
        };
        argv.extend([flag.to_string(), p.container_port.to_string()]);
    }
    if tcp == 0 {
        argv.extend(["--http-port".to_string(), DEFAULT_SERVE_PORT.to_string()]);
    }
    argv
}

/// A container of the pod, as this run of the kubelet tracks it.
struct Ctr {
    spec: Container,
    /// The pod directory, where the container's process record lives.
    dir: PathBuf,
    process: Option<Process>,
    state: RunState,
    last: Option<RunState>,
    restart_count: u32,
    backoff: Backoff,
    /// When the container is to be (re)started; `None` once it stays as it is.
    restart_at: Option<Instant>,
    /// When the current process started (probes count from it).
    since: Instant,
    probes: Vec<(ProbeMachine, Probe)>,
    started: bool,
    env: Vec<(String, String)>,
}

impl Ctr {
    fn new(spec: Container, dir: &Path, now: Instant) -> Ctr {
        Ctr {
            spec,
            dir: dir.to_path_buf(),
            process: None,
            state: RunState::waiting("ContainerCreating"),
            last: None,
            restart_count: 0,
            backoff: Backoff::default(),
            restart_at: Some(now),
            since: now,
            probes: Vec::new(),
            started: false,
            env: Vec::new(),
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }

    fn ready(&self) -> bool {
        self.running()
            && self.started
            && self
                .probes
                .iter()
                .filter(|(m, _)| m.kind == ProbeKind::Readiness)
                .all(|(m, _)| m.ok())
    }

    fn view(&self) -> ContainerView<'_> {
        ContainerView {
            name: &self.spec.name,
            image: self.spec.image.as_deref().unwrap_or_default(),
            state: &self.state,
            last: self.last.as_ref(),
            restart_count: self.restart_count,
            started: self.started,
            ready: self.ready(),
        }
    }

    /// Takes a process that runs (started now or adopted).
    fn run(&mut self, process: Process, since: Instant) {
        self.state = RunState::Running {
            pid: process.record.pid,
            started_at: process.record.started_at,
        };
        self.restart_count = process.record.restart_count;
        self.process = Some(process);
        self.since = since;
        self.restart_at = None;
        let probe =
            |kind, p: &Option<Probe>| p.as_ref().map(|p| (ProbeMachine::new(kind, p), p.clone()));
        self.probes = [
            probe(ProbeKind::Startup, &self.spec.startup_probe),
            probe(ProbeKind::Readiness, &self.spec.readiness_probe),
            probe(ProbeKind::Liveness, &self.spec.liveness_probe),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.started = self.spec.startup_probe.is_none();
    }

    /// Records an exit (also in the process record, for a restarted kubelet) and decides
    /// about the restart.
    fn exited(&mut self, code: i32, policy: RestartPolicy, now: Instant) {
        let Some(process) = self.process.take() else {
            return;
        };
        let finished = jiff::Timestamp::now();
        let mut record = process.record;
        let state = RunState::exited(code, record.pid, Some(record.started_at), finished);
        record.exit = Some((code, finished));
        if let Err(e) = record.save(&self.dir, &self.spec.name) {
            tracing::warn!(container = %self.spec.name, error = %e, "recording an exit");
        }
        self.started = false;
        self.restart_at = restart_at(policy, code, &mut self.backoff, now - self.since, now);
        match self.restart_at {
            Some(at) if at > now => {
                self.last = Some(state);
                self.state = RunState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {}s restarting failed container={}",
                        (at - now).as_secs(),
                        self.spec.name
                    )),
                };
            }
            _ => self.state = state,
        }
    }
}

/// Stops the running processes: SIGTERM, up to `grace` for them to exit, then SIGKILL.
async fn stop(ctrs: &mut [&mut Ctr], grace: Duration, policy: RestartPolicy) {
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let deadline = Instant::now()
            + match signal {
                Signal::SIGTERM => grace,
                _ => Duration::from_secs(5),
            };
        for c in ctrs.iter() {
            if let Some(p) = &c.process {
                p.record.signal(signal);
            }
        }
        loop {
            let now = Instant::now();
            for c in ctrs.iter_mut() {
                if let Some(exit) = c.process.as_mut().and_then(Process::poll) {
                    c.exited(exit.unwrap_or(EXIT_UNKNOWN), policy, now);
                }
            }
            if ctrs.iter().all(|c| c.process.is_none()) || now >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if ctrs.iter().all(|c| c.process.is_none()) {
            return;
        }
    }
}

struct Worker {
    k: Arc<Kubelet>,
    uid: String,
    dir: PathBuf,
    pod: Pod,
    policy: RestartPolicy,
    host_network: bool,
    hostname: String,
    pod_ips: Vec<IpAddr>,
    init: Vec<Ctr>,
    containers: Vec<Ctr>,
    start_time: jiff::Timestamp,
    conditions: Vec<PodCondition>,
    last_sent: Option<serde_json::Value>,
}

/// What a container whose process ended is: its recorded exit, or unknown when it ended while
/// no kubelet was watching.
fn ended_state(record: &ProcessRecord) -> RunState {
    match record.exit {
        Some((code, finished)) => {
            RunState::exited(code, record.pid, Some(record.started_at), finished)
        }
        None => RunState::Terminated {
            exit_code: EXIT_UNKNOWN,
            reason: "ContainerStatusUnknown".into(),
            started_at: Some(record.started_at),
            finished_at: jiff::Timestamp::now(),
            pid: Some(record.pid),
        },
    }
}

/// The network namespace (`/run/netns/NAME`) of the pod with this uid (`kubewire lab exec`
/// enters it).
pub fn netns_name(uid: &str) -> String {
    format!("kwpod-{uid}")
}

impl Worker {
    /// Sets up (or adopts) the sandbox, writes the pod's files and adopts running containers.
    async fn setup(k: Arc<Kubelet>, uid: String, pod: Pod) -> Result<Worker, KubeletError> {
        let dir = k.pods_dir.join(&uid);
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let pod_ips = if host_network {
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            k.node_ips.clone()
        } else {
            let adopted = Sandbox::load(&dir).filter(|s| s.netns_path().exists());
            let sandbox = match adopted {
                Some(s) => s,
                None => {
                    let k2 = k.clone();
                    let (uid2, dir2) = (uid.clone(), dir.clone());
                    tokio::task::spawn_blocking(move || {
                        let name = netns_name(&uid2);
                        Sandbox::create(
                            &k2.cni,
                            &SandboxSpec {
                                id: &uid2,
                                netns_name: &name,
                                dir: &dir2,
                            },
                        )
                    })
                    .await
                    .map_err(|e| KubeletError::Config(format!("sandbox task: {e}")))??
                }
            };
            sandbox.ips
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let hostname = if host_network {
            k.node_name.clone()
        } else {
            spec.hostname.clone().unwrap_or(name)
        };
        let now = Instant::now();
        // A container whose recorded process still runs is adopted; the record of one that
        // ended is returned.
        let adopt = |c: &Container| -> (Ctr, Option<ProcessRecord>) {
            let mut ctr = Ctr::new(c.clone(), &dir, now);
            let record = ProcessRecord::load(&dir, &c.name);
            match record.clone().and_then(Process::adopt) {
                Some(p) => {
                    ctr.run(p, now);
                    (ctr, None)
                }
                None => (ctr, record),
            }
        };
        let policy = RestartPolicy::from_spec(spec.restart_policy.as_deref());
        let containers: Vec<Ctr> = spec
            .containers
            .iter()
            .map(|c| {
                let (mut ctr, ended) = adopt(c);
                if let Some(record) = ended {
                    ctr.restart_count = record.restart_count;
                    ctr.state = ended_state(&record);
                    let code = record.exit.map_or(EXIT_UNKNOWN, |(code, _)| code);
                    ctr.restart_at =
                        restart_at(policy, code, &mut ctr.backoff, Duration::ZERO, now);
                }
                ctr
            })
            .collect();
        // Init containers all completed before any container was recorded; otherwise a
        // running one is adopted, a completed one stays so, and any other runs again.
        let initialized = containers
            .iter()
            .any(|c| ProcessRecord::load(&dir, &c.spec.name).is_some());
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let (mut ctr, ended) = adopt(c);
                let completed = ended
                    .as_ref()
                    .is_some_and(|r| matches!(r.exit, Some((0, _))));
                if initialized || completed {
                    ctr.state = ended.as_ref().filter(|_| completed).map_or_else(
                        || RunState::Terminated {
                            exit_code: 0,
                            reason: "Completed".into(),
                            started_at: None,
                            finished_at: jiff::Timestamp::now(),
                            pid: None,
                        },
                        ended_state,
                    );
                    ctr.restart_at = None;
                }
                ctr
            })
            .collect();
        let status = pod.status.clone().unwrap_or_default();
        let start_time = status
            .start_time
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now);
        let w = Worker {
            policy,
            k,
            uid,
            dir,
            pod,
            host_network,
            hostname,
            pod_ips,
            init,
            containers,
            start_time,
            conditions: status.conditions.unwrap_or_default(),
            last_sent: None,
        };
        w.write_files()?;
        Ok(w)
    }

    fn write_files(&self) -> Result<(), KubeletError> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let dns_config = spec.dns_config.clone().unwrap_or_default();
        let options: Vec<(String, Option<String>)> = dns_config
            .options
            .iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
            .collect();
        let resolv = resolv_conf(&PodDns {
            policy: DnsPolicy::from_spec(spec.dns_policy.as_deref()),
            host_network: self.host_network,
            cluster_dns: &self.k.cluster_dns,
            cluster_domain: &self.k.cluster_domain,
            namespace: ns,
            host_resolv_conf: &self.k.host_resolv_conf,
            nameservers: dns_config.nameservers.as_deref().unwrap_or_default(),
            searches: dns_config.searches.as_deref().unwrap_or_default(),
            options: &options,
        });
        let aliases: Vec<HostEntry> = spec
            .host_aliases
            .iter()
            .flatten()
            .map(|a| HostEntry {
                ip: a.ip.clone(),
                hostnames: a.hostnames.clone().unwrap_or_default(),
            })
            .collect();
        let hosts = hosts_file(
            &self.pod_ips,
            &self.hostname,
            spec.subdomain.as_deref(),
            ns,
            &self.k.cluster_domain,
            &aliases,
        );
        let sa = self.dir.join("serviceaccount");
        std::fs::create_dir_all(&sa).map_err(io_err(format!("creating {}", sa.display())))?;
        let files: [(PathBuf, &[u8]); 5] = [
            (self.dir.join("resolv.conf"), resolv.as_bytes()),
            (self.dir.join("hosts"), hosts.as_bytes()),
            (sa.join("token"), self.k.token.as_bytes()),
            (sa.join("ca.crt"), self.k.ca.as_deref().unwrap_or_default()),
            (sa.join("namespace"), ns.as_bytes()),
        ];
        for (path, body) in files {
            std::fs::write(&path, body).map_err(io_err(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    fn netns_path(&self) -> PathBuf {
        if self.host_network {
            PathBuf::from("/proc/self/ns/net")
        } else {
            Path::new("/run/netns").join(netns_name(&self.uid))
        }
    }

    /// `kubewire internal exec-in-pod ... --`: what enters the pod before a container's argv.
    fn exec_prefix(&self, c: &Container) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let mut argv = vec![
            self.k.kubewire_bin.display().to_string(),
            "internal".into(),
            "exec-in-pod".into(),
            "--netns".into(),
            self.netns_path().display().to_string(),
            "--hostname".into(),
            self.hostname.clone(),
            "--bind".into(),
            format!("{}:/etc/resolv.conf", d("resolv.conf")),
        ];
        if !self.host_network {
            argv.extend(["--bind".into(), format!("{}:/etc/hosts", d("hosts"))]);
        }
        argv.extend(["--service-account".into(), d("serviceaccount")]);
        if let Some(wd) = c.working_dir.as_deref().filter(|w| !w.is_empty()) {
            argv.extend(["--workdir".into(), wd.to_string()]);
        }
        argv.push("--".into());
        argv
    }

    /// The Services, ConfigMaps and Secrets a container's environment needs.
    async fn env_inputs(&self, c: &Container) -> Result<(Vec<Service>, Sources), KubeletError> {
        let client = &self.k.client;
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut services = Api::<Service>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await?
            .items;
        if ns != "default"
            && let Some(master) = Api::<Service>::namespaced(client.clone(), "default")
                .get_opt("kubernetes")
                .await?
        {
            services.push(master);
        }
        let (cms, secrets) = Sources::wanted(c);
        let mut sources = Sources::default();
        let cm_api = Api::<ConfigMap>::namespaced(client.clone(), ns);
        for name in cms {
            if let Some(cm) = cm_api.get_opt(&name).await? {
                sources.config_maps.insert(name, cm);
            }
        }
        let secret_api = Api::<Secret>::namespaced(client.clone(), ns);
        for name in secrets {
            if let Some(s) = secret_api.get_opt(&name).await? {
                sources.secrets.insert(name, s);
            }
        }
        Ok((services, sources))
    }

    /// Starts (or restarts) one container.
    async fn start(&self, c: &mut Ctr, now: Instant) -> Result<(), KubeletError> {
        let (services, sources) = self.env_inputs(&c.spec).await?;
        let facts = PodFacts {
            node_name: &self.k.node_name,
            pod_ips: &self.pod_ips,
            host_ips: &self.k.node_ips,
            hostname: &self.hostname,
        };
        // The image's PATH (there is no image: the node's), and a HOME of the pod's own (a
        // runtime sets the user's home from the image), unless the container sets them.
        let home = self.dir.join("home");
        std::fs::create_dir_all(&home).map_err(io_err(format!("creating {}", home.display())))?;
        let mut env = vec![
            ("PATH".to_string(), PATH.to_string()),
            ("HOME".to_string(), home.display().to_string()),
        ];
        env.extend(env::container_env(
            &self.pod, &c.spec, &services, &sources, &facts,
        )?);
        let vars = env.iter().cloned().collect();
        let argv: Vec<String> = container_argv(&c.spec, &self.k.kubewire_bin)
            .iter()
            .map(|a| env::expand(a, &vars))
            .collect();
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io_err(format!("creating {}", logs.display())))?;
        let log_path = logs.join(format!("{}.log", c.spec.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let err_log = log
            .try_clone()
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let prefix = self.exec_prefix(&c.spec);
        let mut command = Command::new(&prefix[0]);
        command
            .args(&prefix[1..])
            .args(&argv)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        let restarts = c.restart_count
            + u32::from(c.last.is_some() || !matches!(c.state, RunState::Waiting { .. }));
        let process = Process::spawn(command, restarts, jiff::Timestamp::now())?;
        process.record.save(&self.dir, &c.spec.name)?;
        tracing::info!(pod = %self.key(), container = %c.spec.name, pid = process.record.pid, "container started");
        if let RunState::Terminated { .. } = c.state {
            c.last = Some(c.state.clone());
        }
        c.env = env;
        c.run(process, now);
        Ok(())
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.name.as_deref().unwrap_or_default()
        )
    }

    /// Polls a container and (re)starts it when due.
    async fn advance(&self, c: &mut Ctr, policy: RestartPolicy, now: Instant) {
        if let Some(exit) = c.process.as_mut().and_then(Process::poll) {
            let code = exit.unwrap_or(EXIT_UNKNOWN);
            tracing::info!(pod = %self.key(), container = %c.spec.name, code, "container exited");
            c.exited(code, policy, now);
        }
        if c.process.is_none()
            && c.restart_at.is_some_and(|at| at <= now)
            && let Err(e) = self.start(c, now).await
        {
            tracing::warn!(pod = %self.key(), container = %c.spec.name, error = %e, "cannot start container");
            let reason = match e {
                KubeletError::Env(_) => "CreateContainerConfigError",
                _ => "CreateContainerError",
            };
            if let RunState::Terminated { .. } = c.state {
                c.last = Some(c.state.clone());
            }
            c.state = RunState::Waiting {
                reason: reason.into(),
                message: Some(e.to_string()),
            };
            c.restart_at = Some(now + RETRY);
        }
    }

    /// Runs the probes that are due for one container; returns whether it must be restarted.
    async fn probe(&self, c: &mut Ctr, now: Instant) -> bool {
        if !c.running() {
            return false;
        }
        let pod_ip = self.pod_ips.first().copied();
        let ports = c.spec.ports.clone().unwrap_or_default();
        let prefix = self.exec_prefix(&c.spec);
        let target = probe::Target {
            pod_ip,
            ports: &ports,
            exec_prefix: &prefix,
            env: &c.env,
        };
        let started = c.started;
        let since = c.since;
        let due: Vec<usize> = c
            .probes
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| (m.kind == ProbeKind::Startup) != started)
            .filter(|(_, (m, _))| m.due(since, now))
            .map(|(i, _)| i)
            .collect();
        let checks = due.iter().map(|&i| {
            let (m, p) = &c.probes[i];
            probe::check(p, m.timeout, &target)
        });
        let results = futures::future::join_all(checks).await;
        let mut restart = false;
        for (i, ok) in due.into_iter().zip(results) {
            match c.probes[i].0.record(now, ok) {
                Some(ProbeAction::Started) => c.started = true,
                Some(ProbeAction::Restart) => restart = true,
                Some(ProbeAction::Ready(r)) => {
                    tracing::info!(pod = %self.key(), container = %c.spec.name, ready = r, "readiness changed")
                }
                None => {}
            }
        }
        restart
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(DEFAULT_GRACE);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// One round: init containers in order, then the containers with their probes.
    async fn step(&mut self) {
        let now = Instant::now();
        let init_policy = match self.policy {
            RestartPolicy::Never => RestartPolicy::Never,
            _ => RestartPolicy::OnFailure,
        };
        let mut init = std::mem::take(&mut self.init);
        let pending = init
            .iter()
            .position(|c| !matches!(c.state, RunState::Terminated { exit_code: 0, .. }));
        if let Some(i) = pending {
            self.advance(&mut init[i], init_policy, now).await;
        }
        let initializing = init
            .iter()
            .any(|c| !matches!(c.state, RunState::Terminated { exit_code: 0, .. }));
        self.init = init;
        let mut containers = std::mem::take(&mut self.containers);
        if initializing {
            for c in containers
                .iter_mut()
                .filter(|c| c.process.is_none() && c.last.is_none())
            {
                c.state = RunState::waiting("PodInitializing");
            }
        } else {
            for c in &mut containers {
                self.advance(c, self.policy, now).await;
                if self.probe(c, now).await {
                    tracing::info!(pod = %self.key(), container = %c.spec.name, "liveness probe failed: restarting");
                    let grace = c
                        .spec
                        .liveness_probe
                        .as_ref()
                        .and_then(|p| p.termination_grace_period_seconds)
                        .map_or_else(
                            || self.grace(),
                            |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)),
                        );
                    stop(&mut [&mut *c], grace, self.policy).await;
                }
            }
        }
        self.containers = containers;
    }

    /// Patches the status when it changed since it was last sent.
    async fn report(&mut self) {
        let view = PodView {
            init: self.init.iter().map(Ctr::view).collect(),
            containers: self.containers.iter().map(Ctr::view).collect(),
            policy: self.policy,
            pod_ips: &self.pod_ips,
            host_ips: &self.k.node_ips,
            start_time: self.start_time,
        };
        let status = pod_status(&self.pod, &self.conditions, &view, jiff::Timestamp::now());
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.last_sent.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.k.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Strategic(serde_json::json!({ "status": value }));
        match api
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                self.conditions = status.conditions.unwrap_or_default();
                self.last_sent = Some(value);
            }
            Err(e) => tracing::warn!(pod = %self.key(), error = %e, "status update"),
        }
    }

    async fn stop_all(&mut self, grace: Duration) {
        let policy = RestartPolicy::Never;
        let mut all: Vec<&mut Ctr> = self
            .init
            .iter_mut()
            .chain(self.containers.iter_mut())
            .collect();
        for c in all.iter_mut() {
            c.restart_at = None;
        }
        stop(&mut all, grace, policy).await;
    }

    /// Graceful deletion: SIGTERM every container; while they stop, readiness is still probed
    /// and the status reported (a terminating pod may still serve); after the grace period
    /// (shortened by a later delete with a smaller one, cut short if the pod is removed),
    /// SIGKILL. Then the sandbox goes and the pod is deleted for good.
    async fn terminate(mut self, rx: &mut watch::Receiver<Option<Pod>>) {
        let since = Instant::now();
        tracing::info!(pod = %self.key(), grace = ?self.grace(), "terminating");
        for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
            c.restart_at = None;
            if let Some(p) = &c.process {
                p.record.signal(Signal::SIGTERM);
            }
        }
        let mut gone = false;
        loop {
            let now = Instant::now();
            match rx.borrow_and_update().clone() {
                Some(pod) => self.pod = pod,
                None => gone = true,
            }
            let mut init = std::mem::take(&mut self.init);
            let mut containers = std::mem::take(&mut self.containers);
            for c in init.iter_mut().chain(containers.iter_mut()) {
                if let Some(exit) = c.process.as_mut().and_then(Process::poll) {
                    c.exited(exit.unwrap_or(EXIT_UNKNOWN), RestartPolicy::Never, now);
                }
            }
            for c in &mut containers {
                // Nothing restarts any more: a liveness verdict is moot.
                let _restart = self.probe(c, now).await;
            }
            self.init = init;
            self.containers = containers;
            let running = self
                .init
                .iter()
                .chain(&self.containers)
                .any(|c| c.process.is_some());
            if !running {
                break;
            }
            if gone || now >= since + self.grace() {
                self.stop_all(Duration::ZERO).await;
                break;
            }
            self.report().await;
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                r = rx.changed() => if r.is_err() {
                    // The kubelet is shutting down; a restarted one finishes the deletion.
                    return;
                },
            }
        }
        teardown_dir(&self.k, &self.dir).await;
        if !gone {
            self.report().await;
            finish_deletion(&self.k, &self.pod).await;
        }
    }
}

/// Deletes a terminating pod for good once nothing of it runs: grace period 0, and only this
/// incarnation of it (uid precondition).
async fn finish_deletion(k: &Kubelet, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(
        k.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(pod = %name, "deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "final delete"),
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Kills whatever a pod directory records (SIGKILL to each container's process group, waiting
/// up to 5 s for them to go), tears down its sandbox (CNI DEL from the calling thread's network
/// namespace, which must be the node's) and removes the directory. Blocking.
pub fn teardown_pod_dir(dir: &Path, cni: &CniRuntime) -> Result<(), KubeletError> {
    signal_all(dir, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ProcessRecord::all(dir).iter().any(ProcessRecord::alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    match Sandbox::load(dir) {
        Some(sandbox) => sandbox.destroy(cni).map_err(KubeletError::from),
        None => match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(format!("removing {}", dir.display()))(e))
            }
            _ => Ok(()),
        },
    }
}

/// [`teardown_pod_dir`] for every pod directory under `pods_dir` (`kubewire lab down`: what a
/// node's kubelet left running). Every pod is tried; the first error is returned.
pub fn teardown_pods(pods_dir: &Path, cni: &CniRuntime) -> Result<(), KubeletError> {
    let mut first = Ok(());
    for entry in std::fs::read_dir(pods_dir).into_iter().flatten().flatten() {
        if entry.path().is_dir()
            && let Err(e) = teardown_pod_dir(&entry.path(), cni)
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

/// [`teardown_pod_dir`] off the async threads; failures are logged.
pub(crate) async fn teardown_dir(k: &Arc<Kubelet>, dir: &Path) {
    let (k, dir) = (k.clone(), dir.to_path_buf());
    match tokio::task::spawn_blocking(move || teardown_pod_dir(&dir, &k.cni)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "pod teardown"),
        Err(e) => tracing::warn!(error = %e, "pod teardown task"),
    }
}

/// The worker of one pod: runs until the pod is deleted (gracefully or not).
pub(crate) async fn run(k: Arc<Kubelet>, uid: String, mut rx: watch::Receiver<Option<Pod>>) {
    let dir = k.pods_dir.join(&uid);
    let mut worker: Option<Worker> = None;
    loop {
        let Some(pod) = rx.borrow_and_update().clone() else {
            // Deleted from the API without us (grace 0): stop at once.
            if let Some(w) = &mut worker {
                w.stop_all(Duration::ZERO).await;
            }
            teardown_dir(&k, &dir).await;
            return;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut wait = TICK;
        match worker.take() {
            Some(mut w) => {
                w.pod = pod;
                if deleting {
                    w.terminate(&mut rx).await;
                    return;
                }
                if is_terminal(&w.pod) {
                    // Finished and reported: nothing of it runs any more and its network is
                    // released, as the kubelet kills a finished pod's sandbox; the Pod stays
                    // until it is deleted.
                    w.stop_all(Duration::ZERO).await;
                    teardown_dir(&k, &dir).await;
                } else {
                    w.step().await;
                    w.report().await;
                    worker = Some(w);
                }
            }
            // Nothing of it runs here: deleted before it started, or finished.
            None if deleting && !dir.exists() => {
                finish_deletion(&k, &pod).await;
                return;
            }
            None if is_terminal(&pod) && !dir.exists() => wait = Duration::MAX,
            None => match Worker::setup(k.clone(), uid.clone(), pod).await {
                Ok(w) => {
                    worker = Some(w);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%uid, error = %e, "pod sandbox setup failed; retrying");
                    wait = RETRY;
                }
            },
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = rx.changed() => if r.is_err() {
                // The kubelet is shutting down: the containers keep running.
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn argv_from_command_and_args() {
        let bin = Path::new("/bin/kubewire");
        let c = container(
            serde_json::json!({"name": "a", "command": ["sh", "-c"], "args": ["echo hi"]}),
        );
        assert_eq!(container_argv(&c, bin), ["sh", "-c", "echo hi"]);
        let c = container(serde_json::json!({"name": "a", "args": ["--http-port", "9"]}));
        assert_eq!(
            container_argv(&c, bin),
            ["/bin/kubewire", "serve", "--http-port", "9"]
        );
    }

    #[test]
    fn argv_of_the_builtin_image_serves_declared_ports() {
        let bin = Path::new("/bin/kubewire");
        let c = container(serde_json::json!({"name": "a"}));
        assert_eq!(
            container_argv(&c, bin),
            ["/bin/kubewire", "serve", "--http-port", "8080"]
        );
        let c = container(serde_json::json!({"name": "a", "ports": [
            {"containerPort": 80},
            {"containerPort": 53, "protocol": "UDP"},
            {"containerPort": 9, "protocol": "SCTP"},
        ]}));
        assert_eq!(
            container_argv(&c, bin),
            [
                "/bin/kubewire",
                "serve",
                "--http-port",
                "80",
                "--udp-port",
                "53",
                "--sctp-port",
                "9"
            ]
        );
        let c = container(
            serde_json::json!({"name": "a", "ports": [{"containerPort": 53, "protocol": "UDP"}]}),
        );
        assert_eq!(
            container_argv(&c, bin),
            [
                "/bin/kubewire",
                "serve",
                "--udp-port",
                "53",
                "--http-port",
                "8080"
            ]
        );
    }

    #[test]
    fn exit_backoff_and_crash_loop_state() {
        let now = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let mut c = Ctr::new(container(serde_json::json!({"name": "a"})), dir.path(), now);
        let child = Process::spawn(Command::new("true"), 0, jiff::Timestamp::UNIX_EPOCH).unwrap();
        c.run(child, now);
        assert!(c.ready(), "no readiness probe: ready once running");
        c.exited(1, RestartPolicy::Always, now);
        assert_eq!(c.restart_at, Some(now), "first restart is immediate");
        assert!(matches!(c.state, RunState::Terminated { exit_code: 1, .. }));
        let child = Process::spawn(Command::new("true"), 1, jiff::Timestamp::UNIX_EPOCH).unwrap();
        c.run(child, now);
        c.exited(1, RestartPolicy::Always, now);
        assert_eq!(c.restart_at, Some(now + Duration::from_secs(10)));
        assert!(
            matches!(&c.state, RunState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        );
        assert!(matches!(c.last, Some(RunState::Terminated { .. })));
        let record = ProcessRecord::load(dir.path(), "a").expect("recorded");
        assert_eq!(
            record.exit.map(|(code, _)| code),
            Some(1),
            "the exit is recorded"
        );
        assert_eq!(record.restart_count, 1);
        assert!(
            matches!(
                ended_state(&record),
                RunState::Terminated { exit_code: 1, .. }
            ),
            "a restarted kubelet knows how it ended"
        );
    }
}
