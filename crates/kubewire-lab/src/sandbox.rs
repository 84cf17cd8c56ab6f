//! A pod sandbox: the pod's network namespace, its CNI attachment, and its directory of files
//! (resolv.conf, hosts, service account). Its record on disk lets a restarted kubelet find and
//! tear down sandboxes it did not create in this run.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use kubewire_datapath::NetNs;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::CniRuntime;
use crate::{LabError, io};

/// The interface name a pod gets, as container runtimes use.
pub const POD_IFNAME: &str = "eth0";
const RECORD: &str = "sandbox.json";

pub struct SandboxSpec<'a> {
    /// The CNI container id: stable for the pod (its uid).
    pub id: &'a str,
    pub netns_name: &'a str,
    /// The pod's directory; must not be under /run (see `exec`).
    pub dir: &'a Path,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub netns_name: String,
    pub dir: PathBuf,
    pub ips: Vec<IpAddr>,
    pub cni_result: Value,
}

impl Sandbox {
    /// Creates the namespace and attaches it with the node's CNI configuration. Call from a
    /// thread in the node's network namespace: the plugins put the host end of the pod's link
    /// in the caller's namespace. On failure nothing is left behind.
    pub fn create(cni: &CniRuntime, spec: &SandboxSpec<'_>) -> Result<Sandbox, LabError> {
        std::fs::create_dir_all(spec.dir)
            .map_err(io(format!("creating {}", spec.dir.display())))?;
        let ns = NetNs::create_named(spec.netns_name)?;
        let path = ns.path().to_path_buf();
        let up = ns
            .run(|| kubewire_datapath::Netlink::open().and_then(|nl| nl.set_link_up_by_name("lo")))
            .map_err(LabError::from)
            .and_then(|r| r.map_err(LabError::from));
        let attached = up.and_then(|()| cni.add(spec.id, &path, POD_IFNAME));
        let attachment = match attached {
            Ok(a) => a,
            Err(e) => {
                let _ = cni.del(spec.id, Some(&path), POD_IFNAME, None);
                let _ = NetNs::delete_named(spec.netns_name);
                let _ = std::fs::remove_dir_all(spec.dir);
                return Err(e);
            }
        };
        let sandbox = Sandbox {
            id: spec.id.to_string(),
            netns_name: spec.netns_name.to_string(),
            dir: spec.dir.to_path_buf(),
            ips: attachment.ips,
            cni_result: attachment.result,
        };
        let record = serde_json::to_vec_pretty(&sandbox).map_err(|e| LabError::Io {
            context: "encoding sandbox record".into(),
            source: e.into(),
        })?;
        std::fs::write(spec.dir.join(RECORD), record).map_err(io("writing the sandbox record"))?;
        Ok(sandbox)
    }

    /// The sandbox recorded in `dir` by an earlier run, if any.
    pub fn load(dir: &Path) -> Option<Sandbox> {
        serde_json::from_slice(&std::fs::read(dir.join(RECORD)).ok()?).ok()
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns_name)
    }

    /// Writes one of the pod's files into its directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf, LabError> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).map_err(io(format!("writing {}", path.display())))?;
        Ok(path)
    }

    /// CNI DEL (with the ADD result as `prevResult`), then the namespace and the directory go.
    /// Every step runs even if an earlier one failed; the first error is returned.
    pub fn destroy(self, cni: &CniRuntime) -> Result<(), LabError> {
        let netns = self.netns_path();
        let del = cni.del(
            &self.id,
            netns.exists().then_some(netns.as_path()),
            POD_IFNAME,
            Some(&self.cni_result),
        );
        let ns = match NetNs::delete_named(&self.netns_name) {
            Err(e) if netns.exists() => Err(LabError::from(e)),
            _ => Ok(()),
        };
        let dir = match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("removing {}", self.dir.display()))(e))
            }
            _ => Ok(()),
        };
        del.and(ns).and(dir)
    }
}
