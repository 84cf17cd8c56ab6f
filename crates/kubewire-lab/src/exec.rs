//! Becoming a container process: enter the pod's network namespace, take private mount and UTS
//! namespaces, put the pod's files in place, and exec the container's command.
//!
//! It runs in a freshly started, single-threaded process (`kubewire internal exec-in-pod`),
//! because a mount namespace can only be unshared by a process that shares its filesystem state
//! with no other thread.

use std::convert::Infallible;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::{LabError, io, sys};

/// Where in-cluster clients look for the service-account token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/run/secrets/kubernetes.io/serviceaccount";

#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// The pod's network namespace, e.g. /run/netns/NAME.
    #[arg(long)]
    pub netns: PathBuf,
    /// The pod's hostname (its own UTS namespace).
    #[arg(long)]
    pub hostname: String,
    /// Bind-mount SRC over DST (e.g. the pod's resolv.conf over /etc/resolv.conf). Repeatable.
    #[arg(long = "bind", value_name = "SRC:DST", value_parser = parse_bind)]
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Directory to mount at /var/run/secrets/kubernetes.io/serviceaccount. It must not be
    /// under /run, which the pod gets a fresh tmpfs for.
    #[arg(long)]
    pub service_account: Option<PathBuf>,
    /// Working directory of the command.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// The command and its arguments; the environment is passed through as given.
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

fn parse_bind(s: &str) -> Result<(PathBuf, PathBuf), String> {
    let (src, dst) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not SRC:DST"))?;
    Ok((PathBuf::from(src), PathBuf::from(dst)))
}

fn bind(src: &Path, dst: &Path) -> Result<(), LabError> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(sys(format!(
        "bind-mounting {} over {}",
        src.display(),
        dst.display()
    )))
}

/// Never returns on success: the process becomes the container's command.
pub fn exec_in_pod(args: &ExecArgs) -> Result<Infallible, LabError> {
    let ns = File::open(&args.netns).map_err(io(format!("opening {}", args.netns.display())))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(sys("entering the pod network namespace"))?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
        .map_err(sys("unsharing mount and UTS namespaces"))?;
    // Nothing mounted from here on may leak back to the node.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making mounts private"))?;
    nix::unistd::sethostname(&args.hostname).map_err(sys("setting the pod hostname"))?;
    // A sysfs of the pod's network namespace, as `ip netns exec` does, so /sys/class/net shows
    // the pod's interfaces. Best effort: a pod works without it.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    for (src, dst) in &args.binds {
        bind(src, dst)?;
    }
    if let Some(sa) = &args.service_account {
        mount(
            Some("tmpfs"),
            "/run",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=755"),
        )
        .map_err(sys("mounting the pod's /run"))?;
        std::fs::create_dir_all(SERVICE_ACCOUNT_DIR)
            .map_err(io(format!("creating {SERVICE_ACCOUNT_DIR}")))?;
        bind(sa, Path::new(SERVICE_ACCOUNT_DIR))?;
    }
    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    if let Some(dir) = &args.workdir {
        command.current_dir(dir);
    }
    let err = command.exec();
    Err(LabError::Io {
        context: format!("executing {:?}", args.command[0]),
        source: err,
    })
}

#[derive(clap::Args, Debug, Clone)]
pub struct NetnsExecArgs {
    /// The network namespace to run in, e.g. /run/netns/NAME.
    #[arg(long)]
    pub netns: PathBuf,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

/// Execs the command inside a network namespace only (a lab node's agent and kubelet).
pub fn exec_in_netns(args: &NetnsExecArgs) -> Result<Infallible, LabError> {
    let ns = File::open(&args.netns).map_err(io(format!("opening {}", args.netns.display())))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(sys("entering the network namespace"))?;
    let err = Command::new(&args.command[0])
        .args(&args.command[1..])
        .exec();
    Err(LabError::Io {
        context: format!("executing {:?}", args.command[0]),
        source: err,
    })
}
