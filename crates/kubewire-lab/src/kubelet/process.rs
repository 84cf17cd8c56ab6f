//! Container processes: started in their own process group (so they outlive the kubelet and
//! one signal reaches the whole container), recorded by pid and start time in the pod directory,
//! and adopted from that record by a restarted kubelet, which then polls them because they are
//! no longer its children.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{KubeletError, io_err};

/// A container process's record (`<pod dir>/containers/<name>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ProcessRecord {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: tells a recycled pid from ours.
    pub start_ticks: u64,
    pub started_at: jiff::Timestamp,
    pub restart_count: u32,
    /// Exit code and time, once the kubelet saw the process end.
    #[serde(default)]
    pub exit: Option<(i32, jiff::Timestamp)>,
    /// The environment the container was started with: `kubewire lab exec` gives it to the
    /// commands it runs in the container, as `kubectl exec` does.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// The directory of a pod's container records.
fn records_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("containers")
}

fn record_path(pod_dir: &Path, container: &str) -> PathBuf {
    records_dir(pod_dir).join(format!("{container}.json"))
}

impl ProcessRecord {
    pub fn load(pod_dir: &Path, container: &str) -> Option<ProcessRecord> {
        serde_json::from_slice(&std::fs::read(record_path(pod_dir, container)).ok()?).ok()
    }

    /// Every record of a pod (for teardown without the pod object).
    pub fn all(pod_dir: &Path) -> Vec<ProcessRecord> {
        std::fs::read_dir(records_dir(pod_dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    pub fn save(&self, pod_dir: &Path, container: &str) -> Result<(), KubeletError> {
        let path = record_path(pod_dir, container);
        std::fs::create_dir_all(records_dir(pod_dir)).map_err(io_err(format!(
            "creating {}",
            records_dir(pod_dir).display()
        )))?;
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(self).map_err(|e| KubeletError::Io {
            context: "encoding a process record".into(),
            source: e.into(),
        })?;
        // Owner-only: the environment may hold Secret values.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&body))
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    }

    /// True while the recorded process is alive (not a zombie) and is the one we started.
    pub fn alive(&self) -> bool {
        self.exit.is_none()
            && proc_stat(self.pid).is_some_and(|(state, ticks)| {
                ticks == self.start_ticks && state != 'Z' && state != 'X'
            })
    }

    /// Signals the process's whole group.
    pub fn signal(&self, signal: Signal) {
        if self.alive() {
            let _ = killpg(Pid::from_raw(self.pid), signal);
        }
    }
}

/// (state, start time in clock ticks) of /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields restart after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 3.. follow; start time is field 22, the 20th after the state.
    let ticks = fields.nth(18)?.parse().ok()?;
    Some((state, ticks))
}

/// A running container process.
pub(crate) struct Process {
    pub record: ProcessRecord,
    /// Our child, when this run of the kubelet started it (reaped through it); adopted
    /// processes are polled through /proc.
    child: Option<Child>,
}

/// How a process ended: its exit code (128+N for signal N), unknown for an adopted process.
pub(crate) type Exit = Option<i32>;

impl Process {
    /// Starts `command` in a process group of its own.
    pub fn spawn(
        mut command: Command,
        restart_count: u32,
        now: jiff::Timestamp,
    ) -> Result<Process, KubeletError> {
        let child = command
            .process_group(0)
            .spawn()
            .map_err(io_err("starting a container process"))?;
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let start_ticks = proc_stat(pid).map_or(0, |(_, t)| t);
        let env = command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        Ok(Process {
            record: ProcessRecord {
                pid,
                start_ticks,
                started_at: now,
                restart_count,
                exit: None,
                env,
            },
            child: Some(child),
        })
    }

    /// The process of a record, if it still runs.
    pub fn adopt(record: ProcessRecord) -> Option<Process> {
        record.alive().then_some(Process {
            record,
            child: None,
        })
    }

    /// `Some(exit)` once the process has ended.
    pub fn poll(&mut self) -> Option<Exit> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    Some(status.code().or_else(|| status.signal().map(|s| 128 + s)))
                }
                Ok(None) => None,
                Err(_) => Some(None),
            },
            None => (!self.record.alive()).then_some(None),
        }
    }
}

/// Sends `signal` to every recorded container process of a pod directory.
pub(crate) fn signal_all(pod_dir: &Path, signal: Signal) {
    for r in ProcessRecord::all(pod_dir) {
        r.signal(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_self_and_records() {
        let me = i32::try_from(std::process::id()).unwrap();
        let (state, ticks) = proc_stat(me).unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        let r = ProcessRecord {
            pid: me,
            start_ticks: ticks,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            restart_count: 0,
            exit: None,
            env: vec![("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into())],
        };
        assert!(r.alive());
        let recycled = ProcessRecord {
            start_ticks: ticks + 1,
            ..r.clone()
        };
        assert!(!recycled.alive(), "a different process behind the same pid");
        let dir = tempfile::tempdir().unwrap();
        r.save(dir.path(), "app").unwrap();
        assert_eq!(ProcessRecord::load(dir.path(), "app"), Some(r.clone()));
        assert_eq!(ProcessRecord::all(dir.path()), vec![r]);
    }

    #[test]
    fn exit_codes_of_children() {
        let mut p = Process::spawn(
            {
                let mut c = Command::new("sh");
                c.args(["-c", "exit 3"]);
                c
            },
            0,
            jiff::Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        let exit = loop {
            if let Some(e) = p.poll() {
                break e;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(exit, Some(3));
    }
}
