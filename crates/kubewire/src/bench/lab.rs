//! `kubewire bench lab`: how fast a lab comes up and runs a Deployment of 100 replicas, and how
//! much memory each component takes at that size. Runs the real `kubewire lab` commands.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kubewire_lab::cluster;

#[derive(clap::Args)]
pub struct Options {
    /// Nodes in the lab.
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 100)]
    replicas: i32,
}

const NAME: &str = "bench";

fn lab(args: &[&str]) -> Result<()> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("lab")
        .args(args)
        .args(["--name", NAME])
        .output()
        .context("running kubewire lab")?;
    if !out.status.success() {
        bail!(
            "kubewire lab {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Which component a lab process is, from its command line.
fn role(cmdline: &str) -> &'static str {
    let after_exec = cmdline.split(" -- ").last().unwrap_or(cmdline);
    for role in [
        "apiserver",
        "controller",
        "dns",
        "workloads",
        "agent",
        "kubelet",
        "supervise",
        "serve",
    ] {
        if after_exec.split_whitespace().any(|w| w == role) {
            return role;
        }
    }
    "other"
}

pub async fn run(opts: Options) -> Result<()> {
    let _ = lab(&["down"]);
    println!(
        "kubewire bench lab: {} nodes, a Deployment of {} replicas\n",
        opts.nodes, opts.replicas
    );
    let start = Instant::now();
    lab(&["up", "--nodes", &opts.nodes.to_string()])?;
    let up = start.elapsed();
    let result = measure(&opts, up).await;
    lab(&["down"])?;
    result
}

async fn measure(opts: &Options, up: Duration) -> Result<()> {
    let plan = cluster::load(NAME).context("the bench lab vanished")?;
    let client = cluster::client(&plan).await?;
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"containers": [{"name": "serve", "image": "kubewire/serve", "ports": [{"containerPort": 8080}], "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}},
        }
    }))?;
    let start = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let bar = indicatif::ProgressBar::new(opts.replicas as u64);
    let ready_in = loop {
        let ready = pods
            .list(&ListParams::default().labels("app=bench"))
            .await?
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        bar.set_position(ready as u64);
        if ready >= opts.replicas as usize {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {ready} of {} pods became ready in 5 minutes",
                opts.replicas
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    println!(
        "{:<48} {:>10.2}s {:>10}",
        format!("lab up --nodes {} to all nodes Ready", opts.nodes),
        up.as_secs_f64(),
        "≤ 10s"
    );
    println!(
        "{:<48} {:>10.2}s {:>10}",
        format!("Deployment of {} replicas to all Ready", opts.replicas),
        ready_in.as_secs_f64(),
        "≤ 30s"
    );
    let mut by_role: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
    for (pid, cmdline) in cluster::lab_processes(&plan) {
        let e = by_role.entry(role(&cmdline)).or_default();
        e.0 += 1;
        e.1 += rss_kib(pid);
    }
    println!(
        "\n{:<14} {:>9} {:>14} {:>14}",
        "component", "processes", "RSS total", "RSS each"
    );
    for (role, (n, kib)) in by_role {
        println!(
            "{:<14} {:>9} {:>11} MiB {:>11.1} MiB",
            role,
            n,
            kib >> 10,
            kib as f64 / 1024.0 / n as f64
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::role;

    #[test]
    fn roles_from_command_lines() {
        assert_eq!(
            role("/k/kubewire apiserver --listen 198.18.0.1:6443"),
            "apiserver"
        );
        assert_eq!(
            role(
                "/k/kubewire internal exec-in-netns --netns /run/netns/x -- /k/kubewire agent --node-name n"
            ),
            "agent"
        );
        assert_eq!(
            role(
                "/k/kubewire internal exec-in-pod --netns p -- /k/kubewire serve --http-port 8080"
            ),
            "serve"
        );
        assert_eq!(role("/k/kubewire lab supervise --name x"), "supervise");
        assert_eq!(
            role("/k/kubewire dns --kubeconfig /l/kubeconfig --listen 198.18.0.1:53"),
            "dns"
        );
    }
}
