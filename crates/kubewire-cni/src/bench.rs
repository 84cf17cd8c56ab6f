//! ADD/DEL latency of the real plugin binary, run exactly as a runtime runs it (a process per
//! call, environment + stdin), against fresh namespaces: a "node" namespace standing in for the
//! host and one namespace per pod. Needs root. Wired to `kubewire bench cni`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kubewire_datapath::{Netlink, OwnedNetNs};

/// Latency percentiles of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(samples: &[Duration]) -> Latency {
        let mut s = samples.to_vec();
        s.sort();
        let pick = |p: f64| -> Duration {
            if s.is_empty() {
                return Duration::ZERO;
            }
            // nearest rank: ceil(p * n), 1-based
            let n = s.len();
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            s[rank - 1]
        };
        let total: Duration = s.iter().sum();
        Latency {
            p50: pick(0.50),
            p99: pick(0.99),
            max: s.last().copied().unwrap_or_default(),
            mean: if s.is_empty() {
                Duration::ZERO
            } else {
                total / u32::try_from(s.len()).unwrap_or(u32::MAX)
            },
        }
    }
}

/// What [`bench_add_del`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchReport {
    pub pods: usize,
    pub parallel: usize,
    pub add: Latency,
    pub del: Latency,
    /// Wall time of all ADDs and of all DELs.
    pub add_wall: Duration,
    pub del_wall: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "{} pods, {} at a time: ADD p50 {:.2} ms p99 {:.2} ms (max {:.2}, {:.0} pods/s); \
             DEL p50 {:.2} ms p99 {:.2} ms (max {:.2}, {:.0} pods/s)",
            self.pods,
            self.parallel,
            ms(self.add.p50),
            ms(self.add.p99),
            ms(self.add.max),
            self.pods as f64 / self.add_wall.as_secs_f64().max(1e-9),
            ms(self.del.p50),
            ms(self.del.p99),
            ms(self.del.max),
            self.pods as f64 / self.del_wall.as_secs_f64().max(1e-9),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the CNI benchmark needs root (it creates network namespaces)")]
    NotRoot,
    #[error("cannot find the kubewire-cni binary: {0}")]
    NoBinary(String),
    #[error("{0}")]
    Datapath(#[from] kubewire_datapath::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{cmd} of pod {pod} failed: {output}")]
    Plugin {
        cmd: &'static str,
        pod: usize,
        output: String,
    },
    #[error("bad arguments: {0}")]
    Args(String),
}

/// Finds the plugin binary: `$KUBEWIRE_CNI_BIN`, else `kubewire-cni` beside the running
/// executable or one directory up (cargo puts test binaries in `target/*/deps`).
pub fn plugin_binary() -> Result<PathBuf, BenchError> {
    if let Some(p) = std::env::var_os("KUBEWIRE_CNI_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("kubewire-cni");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(BenchError::NoBinary(format!(
        "set KUBEWIRE_CNI_BIN, or put kubewire-cni beside {}",
        exe.display()
    )))
}

/// Runs the plugin once from the calling thread (so in the calling thread's namespace), with
/// exactly the given environment (plus `PATH`) and `stdin`.
pub fn exec_plugin(bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> std::io::Result<Output> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let mut child = cmd.spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin)?;
    }
    child.wait_with_output()
}

/// [`bench_add_del_with`] on the binary [`plugin_binary`] finds.
pub fn bench_add_del(pods: usize, parallel: usize) -> Result<BenchReport, BenchError> {
    bench_add_del_with(&plugin_binary()?, pods, parallel)
}

/// ADDs `pods` pods, `parallel` at a time, then DELs them, timing each plugin process (spawn to
/// exit, what a runtime waits for). Namespaces and the store are created before the clock starts
/// and removed afterwards, even on failure.
pub fn bench_add_del_with(
    bin: &Path,
    pods: usize,
    parallel: usize,
) -> Result<BenchReport, BenchError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(BenchError::NotRoot);
    }
    if pods == 0 || parallel == 0 || pods > 60_000 {
        return Err(BenchError::Args(format!(
            "pods must be 1-60000 and parallel at least 1 (got {pods}, {parallel})"
        )));
    }
    let tag = format!("kwbench-{}", std::process::id());
    let node = OwnedNetNs::create(&format!("{tag}-node"))?;
    Netlink::open_in(&node)?.set_link_up_by_name("lo")?;
    let mut pod_ns = Vec::with_capacity(pods);
    for i in 0..pods {
        pod_ns.push(OwnedNetNs::create(&format!("{tag}-p{i}"))?);
    }
    let data = TempDir(std::env::temp_dir().join(&tag));
    let conf = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "kwbench",
        "type": "kubewire-cni",
        "podCIDRs": ["10.254.0.0/16", "fd00:254::/64"],
        "dataDir": data.0,
    })
    .to_string();
    let pod_paths: Vec<String> = pod_ns
        .iter()
        .map(|ns| ns.path().display().to_string())
        .collect();

    let phase = |cmd: &'static str| -> Result<(Vec<Duration>, Duration), BenchError> {
        let start = Instant::now();
        let results: Vec<Result<Vec<Duration>, BenchError>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..parallel)
                .map(|w| {
                    let node = &node;
                    let conf = &conf;
                    let pod_paths = &pod_paths;
                    s.spawn(move || -> Result<Vec<Duration>, BenchError> {
                        let _in_node = node.enter()?;
                        let mut times = Vec::new();
                        for i in (w..pods).step_by(parallel) {
                            let id = format!("bench{i:06}");
                            let env = [
                                ("CNI_COMMAND", cmd),
                                ("CNI_CONTAINERID", id.as_str()),
                                ("CNI_NETNS", pod_paths[i].as_str()),
                                ("CNI_IFNAME", "eth0"),
                                ("CNI_PATH", "/opt/cni/bin"),
                            ];
                            let t = Instant::now();
                            let out = exec_plugin(bin, &env, conf.as_bytes())?;
                            times.push(t.elapsed());
                            if !out.status.success() {
                                return Err(BenchError::Plugin {
                                    cmd,
                                    pod: i,
                                    output: String::from_utf8_lossy(&out.stdout).into_owned(),
                                });
                            }
                        }
                        Ok(times)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let wall = start.elapsed();
        let mut all = Vec::new();
        for r in results {
            all.extend(r?);
        }
        Ok((all, wall))
    };
    let (add, add_wall) = phase("ADD")?;
    let (del, del_wall) = phase("DEL")?;
    Ok(BenchReport {
        pods,
        parallel,
        add: Latency::of(&add),
        del: Latency::of(&del),
        add_wall,
        del_wall,
    })
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let l = Latency::of(&samples);
        assert_eq!(l.p50, ms(50));
        assert_eq!(l.p99, ms(99));
        assert_eq!(l.max, ms(100));
        assert_eq!(Latency::of(&[]).p50, Duration::ZERO);
        assert_eq!(Latency::of(&[ms(7)]).p99, ms(7));
    }
}
