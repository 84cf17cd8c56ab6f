//! Network namespaces: open, enter (per thread), run on a dedicated thread, create and delete
//! named namespaces the way `ip netns` does (a bind mount under `/run/netns`).
//!
//! We never fork to create a namespace (rtnetlink's `NetworkNamespace::add` does): a throw-away
//! thread calls `unshare(CLONE_NEWNET)` and bind-mounts its `/proc/thread-self/ns/net`.

use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::{Error, Result};

/// Where named namespaces live, as with `ip netns`.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace (a file descriptor on its nsfs inode).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`, ...).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        let file =
            File::open(path).map_err(|e| Error::io(format!("open netns {}", path.display()), e))?;
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Opens the named namespace `/run/netns/NAME`.
    pub fn open_named(name: &str) -> Result<NetNs> {
        check_name(name)?;
        NetNs::open(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (device, inode) of the namespace: equal for two handles on the same namespace.
    pub fn id(&self) -> Result<(u64, u64)> {
        let md = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("stat netns {}", self.path.display()), e))?;
        Ok((md.dev(), md.ino()))
    }

    /// True when `self` and `other` are the same namespace.
    pub fn same_as(&self, other: &NetNs) -> Result<bool> {
        Ok(self.id()? == other.id()?)
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> Result<NetNs> {
        Ok(NetNs {
            file: self
                .file
                .try_clone()
                .map_err(|e| Error::io("dup netns fd", e))?,
            path: self.path.clone(),
        })
    }

    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Moves the calling thread into this namespace until the guard is dropped (on this same
    /// thread: the guard is not `Send`). Sockets opened meanwhile stay in this namespace.
    pub fn enter(&self) -> Result<NetNsGuard> {
        let original = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::sys(format!("setns {}", self.path.display()), e))?;
        Ok(NetNsGuard {
            original,
            _not_send: PhantomData,
        })
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace, and returns its result.
    /// The calling thread is untouched.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::sys(format!("setns {}", self.path.display()), e))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Creates the named namespace `/run/netns/NAME` (like `ip netns add NAME`). Fails with
    /// EEXIST if it already exists.
    pub fn create_named(name: &str) -> Result<NetNs> {
        check_name(name)?;
        prepare_run_dir()?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let target = path.clone();
        let made = std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys("unshare(CLONE_NEWNET)", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::sys(format!("bind-mount netns on {}", target.display()), e))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        NetNs::open(&path)
    }

    /// Deletes the named namespace (like `ip netns delete NAME`). Missing is not an error.
    /// The namespace itself lives on while a process or open handle still holds it.
    pub fn delete_named(name: &str) -> Result<()> {
        check_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(e) => return Err(Error::sys(format!("umount {}", path.display()), e)),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }
}

/// Restores the thread's original namespace when dropped.
#[must_use = "dropping the guard immediately switches back"]
#[derive(Debug)]
pub struct NetNsGuard {
    original: NetNs,
    // Raw pointers are neither Send nor Sync: the guard must be dropped on the thread that
    // entered.
    _not_send: PhantomData<*const ()>,
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Carrying on in the wrong namespace would silently configure the wrong network.
            eprintln!("kubewire-datapath: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// A named namespace that is deleted when dropped: for tests, benchmarks and the lab.
#[derive(Debug)]
pub struct OwnedNetNs {
    name: String,
    ns: NetNs,
}

impl OwnedNetNs {
    /// Creates `/run/netns/NAME`; a stale namespace of the same name is replaced.
    pub fn create(name: &str) -> Result<OwnedNetNs> {
        let ns = match NetNs::create_named(name) {
            Err(e) if e.is_exists() => {
                NetNs::delete_named(name)?;
                NetNs::create_named(name)?
            }
            other => other?,
        };
        Ok(OwnedNetNs {
            name: name.to_string(),
            ns,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::ops::Deref for OwnedNetNs {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.ns
    }
}

impl Drop for OwnedNetNs {
    fn drop(&mut self) {
        if let Err(e) = NetNs::delete_named(&self.name) {
            eprintln!("kubewire-datapath: cannot delete netns {}: {e}", self.name);
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.len() > 255 {
        return Err(Error::Invalid(format!("bad namespace name {name:?}")));
    }
    Ok(())
}

/// Makes `/run/netns` a shared mount point so that namespace mounts propagate to other mount
/// namespaces (what `ip netns add` does).
fn prepare_run_dir() -> Result<()> {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    prepare_run_dir_once()?;
    *done = true;
    Ok(())
}

fn prepare_run_dir_once() -> Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR)
        .map_err(|e| Error::io(format!("mkdir {NETNS_RUN_DIR}"), e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then make it shared.
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::sys(format!("bind {NETNS_RUN_DIR}"), e))?;
            mount(
                None::<&str>,
                NETNS_RUN_DIR,
                None::<&str>,
                shared,
                None::<&str>,
            )
            .map_err(|e| Error::sys(format!("make {NETNS_RUN_DIR} shared"), e))
        }
        Err(e) => Err(Error::sys(format!("make {NETNS_RUN_DIR} shared"), e)),
    }
}
