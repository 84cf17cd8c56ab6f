//! The lab supervisor: a detached process that runs every component of one lab and restarts any
//! that exits, until it is told to stop (SIGTERM), when it stops them all.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::plan::Plan;
use crate::{LabError, io};

/// One process of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub argv: Vec<String>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A component that ran this long has its restart backoff reset.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn token_file(plan: &Plan) -> PathBuf {
    plan.dir.join("tokens.csv")
}

fn join(cidrs: &[ipnet::IpNet]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Every process of the lab, in start order: the API server first.
pub fn components(plan: &Plan, exe: &Path) -> Vec<Component> {
    // The CNI plugin is built beside the kubewire binary.
    let bin_dir = exe
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| ".".into());
    let exe = exe.display().to_string();
    let kubeconfig = plan.kubeconfig().display().to_string();
    let api = plan.api_address();
    let listen = std::net::SocketAddr::new(api, super::plan::API_PORT).to_string();
    let mut out = vec![
        Component {
            name: "apiserver".into(),
            argv: vec![
                exe.clone(),
                "apiserver".into(),
                "--listen".into(),
                listen,
                "--data-dir".into(),
                plan.dir.join("apiserver").display().to_string(),
                "--token-file".into(),
                token_file(plan).display().to_string(),
                "--tls".into(),
                "--service-cluster-ip-range".into(),
                join(&plan.service_cidrs()),
                "--advertise-address".into(),
                api.to_string(),
            ],
        },
        Component {
            name: "controller".into(),
            argv: vec![
                exe.clone(),
                "controller".into(),
                "--kubeconfig".into(),
                kubeconfig.clone(),
                "--cluster-cidr".into(),
                join(&plan.cluster_cidrs()),
                "--load-balancer-ip-range".into(),
                join(&plan.load_balancer_cidrs()),
            ],
        },
        Component {
            name: "dns".into(),
            argv: {
                let mut argv = vec![
                    exe.clone(),
                    "dns".into(),
                    "--kubeconfig".into(),
                    kubeconfig.clone(),
                ];
                for addr in plan.host_addresses() {
                    argv.push("--listen".into());
                    argv.push(
                        std::net::SocketAddr::new(addr.addr(), super::addons::DNS_PORT).to_string(),
                    );
                }
                argv
            },
        },
        Component {
            name: "workloads".into(),
            argv: vec![
                exe.clone(),
                "workloads".into(),
                "--kubeconfig".into(),
                kubeconfig.clone(),
            ],
        },
    ];
    for node in plan.nodes() {
        let in_node = |args: Vec<String>| -> Vec<String> {
            let mut argv = vec![
                exe.clone(),
                "internal".into(),
                "exec-in-netns".into(),
                "--netns".into(),
                format!("/run/netns/{}", node.netns),
                "--".into(),
                exe.clone(),
            ];
            argv.extend(args);
            argv
        };
        let node_dir = plan.dir.join(&node.name);
        let mut kubelet = vec![
            "lab".to_string(),
            "kubelet".into(),
            "--kubeconfig".into(),
            kubeconfig.clone(),
            "--node-name".into(),
            node.name.clone(),
            "--zone".into(),
            node.zone.clone(),
            "--cni-conf-dir".into(),
            node_dir.join("cni/net.d").display().to_string(),
            "--cni-bin-dir".into(),
            bin_dir.clone(),
            "--pods-dir".into(),
            node_dir.join("pods").display().to_string(),
            "--kubewire-bin".into(),
            exe.clone(),
        ];
        for addr in &node.addresses {
            kubelet.extend(["--node-ip".to_string(), addr.addr().to_string()]);
        }
        for dns in plan.cluster_dns() {
            kubelet.extend(["--cluster-dns".to_string(), dns.to_string()]);
        }
        out.push(Component {
            name: format!("{}-kubelet", node.name),
            argv: in_node(kubelet),
        });
        out.push(Component {
            name: format!("{}-agent", node.name),
            argv: in_node(vec![
                "agent".into(),
                "--kubeconfig".into(),
                kubeconfig.clone(),
                "--node-name".into(),
                node.name.clone(),
                "--cni-conf-dir".into(),
                node_dir.join("cni/net.d").display().to_string(),
                "--cni-data-dir".into(),
                node_dir.join("cni/data").display().to_string(),
                "--cluster-cidr".into(),
                join(&plan.cluster_cidrs()),
            ]),
        });
    }
    out
}

struct Running {
    component: Component,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    next_start: Instant,
}

fn spawn(c: &Component, logs: &Path) -> Result<Child, LabError> {
    let log_path = logs.join(format!("{}.log", c.name));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(format!("opening {}", log_path.display())))?;
    let err = log.try_clone().map_err(io("duplicating the log file"))?;
    Command::new(&c.argv[0])
        .args(&c.argv[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(io(format!("starting {}", c.name)))
}

pub fn pid_file(plan: &Plan) -> PathBuf {
    plan.dir.join("supervisor.pid")
}

/// Runs until SIGTERM or SIGINT.
pub async fn supervise(plan: &Plan, exe: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(plan.logs()).map_err(io("creating the log dir"))?;
    std::fs::write(pid_file(plan), std::process::id().to_string())
        .map_err(io("writing the supervisor pid file"))?;
    let mut stop = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("installing SIGTERM handler"))?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(io("installing SIGINT handler"))?;
    let now = Instant::now();
    let mut procs: Vec<Running> = components(plan, exe)
        .into_iter()
        .map(|component| Running {
            component,
            child: None,
            started: now,
            backoff: MIN_BACKOFF,
            next_start: now,
        })
        .collect();
    let kubeconfig = plan.kubeconfig();
    loop {
        for (i, p) in procs.iter_mut().enumerate() {
            // Clients need the API server's kubeconfig: start them once it exists.
            if i > 0 && !kubeconfig.exists() {
                break;
            }
            let exited = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                tracing::warn!(component = %p.component.name, %status, "exited; restarting");
                p.backoff = if p.started.elapsed() > HEALTHY_RUN {
                    MIN_BACKOFF
                } else {
                    (p.backoff * 2).min(MAX_BACKOFF)
                };
                p.next_start = Instant::now() + p.backoff;
                p.child = None;
            }
            if p.child.is_none() && Instant::now() >= p.next_start {
                match spawn(&p.component, &plan.logs()) {
                    Ok(child) => {
                        tracing::info!(component = %p.component.name, pid = child.id(), "started");
                        p.child = Some(child);
                        p.started = Instant::now();
                    }
                    Err(e) => {
                        tracing::error!(component = %p.component.name, error = %e, "cannot start");
                        p.next_start = Instant::now() + MAX_BACKOFF;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    // Stop in reverse order: node pieces first, the API server last.
    let children: Vec<Child> = procs.into_iter().rev().filter_map(|p| p.child).collect();
    for c in &children {
        if let Some(pid) = c.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for mut c in children {
        if tokio::time::timeout_at(deadline, c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
    let _ = std::fs::remove_file(pid_file(plan));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::plan::IpFamily;

    #[test]
    fn components_run_in_the_right_namespaces() {
        let plan = Plan::new(
            "t",
            1,
            2,
            1,
            IpFamily::Dual,
            Path::new("/var/lib/kubewire/lab"),
        );
        let c = components(&plan, Path::new("/usr/bin/kubewire"));
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "apiserver",
                "controller",
                "dns",
                "workloads",
                "t-node0-kubelet",
                "t-node0-agent",
                "t-node1-kubelet",
                "t-node1-agent"
            ]
        );
        assert!(c[0].argv.contains(&"198.18.1.1:6443".to_string()));
        assert!(
            c[0].argv
                .contains(&"10.96.0.0/16,fd00:10:96::/112".to_string())
        );
        assert!(
            c[1].argv
                .contains(&"198.19.1.0/24,fd6b:7769:7266:1::/112".to_string()),
            "the controller gets the load-balancer pools"
        );
        assert_eq!(
            c[2].argv[4..],
            [
                "--listen",
                "198.18.1.1:53",
                "--listen",
                "[fd6b:7769:7265:1::1]:53"
            ]
        );
        let agent = &c[7].argv;
        assert_eq!(
            agent[1..5],
            [
                "internal",
                "exec-in-netns",
                "--netns",
                "/run/netns/kwlab1-node1"
            ]
        );
        assert!(agent.contains(&"t-node1".to_string()));
        let kubelet = &c[6].argv;
        assert!(
            kubelet
                .windows(2)
                .any(|w| w[0] == "--node-ip" && w[1] == "fd6b:7769:7265:1::b")
        );
        assert!(
            kubelet
                .windows(2)
                .any(|w| w[0] == "--cni-bin-dir" && w[1] == "/usr/bin")
        );
    }
}
