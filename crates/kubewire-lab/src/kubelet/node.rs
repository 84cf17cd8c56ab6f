//! The Node: registration (create or adopt) and the status heartbeat.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubewire_api::labels;

use super::{KubeletArgs, KubeletError};

/// How often the Ready condition's heartbeat is renewed.
const HEARTBEAT: Duration = Duration::from_secs(10);
pub(crate) const KUBELET_VERSION: &str = "v1.33.0-kubewire";

/// What the Node says about this machine, gathered once.
#[derive(Debug, Clone)]
pub(crate) struct NodeFacts {
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub zone: Option<String>,
    pub cpus: usize,
    pub memory_kib: u64,
    pub max_pods: u32,
    /// Size of the filesystem pods write to, in bytes.
    pub ephemeral_storage: u64,
    pub arch: &'static str,
    pub kernel: String,
    pub os_image: String,
    pub boot_id: String,
    pub machine_id: String,
    /// The node's network is ready once a CNI network configuration is here.
    pub cni_conf_dir: std::path::PathBuf,
}

/// Whether the node's Ready condition is True, and since when it has been what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub ready: bool,
    pub since: jiff::Timestamp,
}

impl Readiness {
    /// The readiness at `now`, keeping the transition time while nothing changed.
    fn next(self, ready: bool, now: jiff::Timestamp) -> Readiness {
        if ready == self.ready {
            self
        } else {
            Readiness { ready, since: now }
        }
    }
}

/// Like the kubelet with a CNI runtime: the node is not Ready while no network configuration
/// exists (the agent writes it once the node has pod CIDRs).
fn network_ready(conf_dir: &std::path::Path) -> bool {
    std::fs::read_dir(conf_dir).is_ok_and(|d| {
        d.flatten().any(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
        })
    })
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal` of /proc/meminfo, in KiB.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The Go architecture name, as `kubernetes.io/arch` has it.
fn go_arch(arch: &'static str) -> &'static str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl NodeFacts {
    pub fn gather(args: &KubeletArgs) -> NodeFacts {
        let os_image = read_trim("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        NodeFacts {
            name: args.node_name.clone(),
            ips: args.node_ips.clone(),
            zone: args.zone.clone(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib: mem_total_kib(&read_trim("/proc/meminfo")).unwrap_or(0),
            max_pods: args.max_pods,
            // The filesystem that holds the pods' directories, as the kubelet measures its root
            // dir; its parent when the pods dir does not exist yet.
            ephemeral_storage: [
                args.pods_dir.as_path(),
                args.pods_dir.parent().unwrap_or(std::path::Path::new("/")),
            ]
            .iter()
            .find_map(|p| nix::sys::statvfs::statvfs(*p).ok())
            .map_or(0, |s| s.blocks() * s.fragment_size()),
            arch: go_arch(std::env::consts::ARCH),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            os_image,
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            machine_id: read_trim("/etc/machine-id"),
            cni_conf_dir: args.cni_conf_dir.clone(),
        }
    }
}

pub(crate) fn node_labels(f: &NodeFacts) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (labels::HOSTNAME.to_string(), f.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), f.arch.to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), f.arch.to_string()),
    ]);
    if let Some(zone) = &f.zone {
        labels.insert(labels::TOPOLOGY_ZONE.into(), zone.clone());
    }
    labels
}

/// The Node's status at `now`.
pub(crate) fn node_status(f: &NodeFacts, now: jiff::Timestamp, readiness: Readiness) -> NodeStatus {
    let (status, reason, message) = if readiness.ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "False",
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized",
        )
    };
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(f.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", f.memory_kib)),
        ),
        ("pods".to_string(), Quantity(f.max_pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            Quantity(f.ephemeral_storage.to_string()),
        ),
    ]);
    let mut addresses: Vec<NodeAddress> = f
        .ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: f.name.clone(),
    });
    NodeStatus {
        addresses: Some(addresses),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(Time(readiness.since)),
        }]),
        node_info: Some(NodeSystemInfo {
            architecture: f.arch.to_string(),
            boot_id: f.boot_id.clone(),
            container_runtime_version: format!("kubewire://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: f.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: f.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: f.os_image.clone(),
            system_uuid: f.machine_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status as patches: a strategic merge for everything but the addresses (conditions merge
/// by type, so other writers' conditions stay), and a JSON merge patch for the addresses, whose
/// strategic merge key (`type`) would fold a dual-stack node's two InternalIPs into one.
fn status_patches(mut status: NodeStatus) -> [Patch<serde_json::Value>; 2] {
    let addresses = status.addresses.take();
    [
        Patch::Strategic(serde_json::json!({ "status": status })),
        Patch::Merge(serde_json::json!({ "status": { "addresses": addresses } })),
    ]
}

/// Creates the Node, or adopts an existing one (its labels are brought up to date), and posts
/// its status.
/// Creates the Node, or adopts an existing one (its labels are brought up to date), and posts
/// its status. Returns its readiness (an adopted Node that was Ready keeps its transition time).
pub(crate) async fn register(
    client: &kube::Client,
    f: &NodeFacts,
) -> Result<Readiness, KubeletError> {
    let api: Api<Node> = Api::all(client.clone());
    let labels = node_labels(f);
    let now = jiff::Timestamp::now();
    let mut ready_since = now;
    match api.get_opt(&f.name).await? {
        Some(existing) => {
            let was_ready = existing
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "Ready" && c.status == "True")
                .and_then(|c| c.last_transition_time);
            if let Some(since) = was_ready {
                ready_since = since.0;
            }
            let patch = serde_json::json!({"metadata": {"labels": labels}});
            api.patch(&f.name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(f.name.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                // Created meanwhile (a racing restart): adopt it.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let readiness = Readiness {
        ready: network_ready(&f.cni_conf_dir),
        since: now,
    };
    let readiness = if readiness.ready {
        Readiness {
            since: ready_since,
            ..readiness
        }
    } else {
        readiness
    };
    for patch in status_patches(node_status(f, now, readiness)) {
        api.patch_status(&f.name, &PatchParams::default(), &patch)
            .await?;
    }
    Ok(readiness)
}

/// Renews the Ready heartbeat every 10 s (every second while the network is not ready, so the
/// node turns Ready soon after its CNI configuration appears), forever; failures are logged and
/// retried.
pub(crate) async fn heartbeat(client: kube::Client, f: NodeFacts, mut readiness: Readiness) {
    let api: Api<Node> = Api::all(client);
    loop {
        let mut waited = std::time::Duration::ZERO;
        while waited < HEARTBEAT {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            waited += std::time::Duration::from_secs(1);
            if !readiness.ready && network_ready(&f.cni_conf_dir) {
                break;
            }
        }
        let now = jiff::Timestamp::now();
        readiness = readiness.next(network_ready(&f.cni_conf_dir), now);
        let status = node_status(&f, now, readiness);
        for patch in status_patches(status) {
            if let Err(e) = api
                .patch_status(&f.name, &PatchParams::default(), &patch)
                .await
            {
                tracing::warn!(error = %e, "node heartbeat");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "node-1".into(),
            ips: vec!["192.0.2.2".parse().unwrap(), "2001:db8::2".parse().unwrap()],
            zone: Some("zone-a".into()),
            cpus: 4,
            memory_kib: 8_000_000,
            max_pods: 110,
            ephemeral_storage: 107374182400,
            arch: "amd64",
            kernel: "6.1.0".into(),
            os_image: "Debian".into(),
            boot_id: "b".into(),
            machine_id: "m".into(),
            cni_conf_dir: "/nonexistent".into(),
        }
    }

    #[test]
    fn labels_carry_hostname_os_arch_and_zone() {
        let l = node_labels(&facts());
        assert_eq!(l["kubernetes.io/hostname"], "node-1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["kubernetes.io/arch"], "amd64");
        assert_eq!(l["topology.kubernetes.io/zone"], "zone-a");
    }

    #[test]
    fn status_is_ready_with_addresses_and_capacity() {
        let t = jiff::Timestamp::UNIX_EPOCH;
        let s = node_status(
            &facts(),
            t,
            Readiness {
                ready: true,
                since: t,
            },
        );
        let addrs: Vec<(String, String)> = s
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addrs,
            [
                ("InternalIP".into(), "192.0.2.2".into()),
                ("InternalIP".into(), "2001:db8::2".into()),
                ("Hostname".into(), "node-1".into())
            ]
        );
        let cap = s.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8000000Ki");
        assert_eq!(cap["pods"].0, "110");
        let ready = &s.conditions.unwrap()[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(s.node_info.unwrap().kubelet_version, KUBELET_VERSION);
    }

    #[test]
    fn not_ready_until_the_network_is_configured() {
        let t0 = jiff::Timestamp::UNIX_EPOCH;
        let waiting = Readiness {
            ready: false,
            since: t0,
        };
        let s = node_status(&facts(), t0, waiting);
        let ready = &s.conditions.unwrap()[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert!(
            ready
                .message
                .as_deref()
                .unwrap()
                .contains("cni plugin not initialized")
        );
        let t1 = t0 + jiff::SignedDuration::from_secs(5);
        let became = waiting.next(true, t1);
        assert_eq!(
            became,
            Readiness {
                ready: true,
                since: t1
            }
        );
        assert_eq!(
            became.next(true, t1 + jiff::SignedDuration::from_secs(5)),
            became,
            "transition time kept"
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(!network_ready(dir.path()));
        std::fs::write(dir.path().join("10-kubewire.conflist"), "{}").unwrap();
        assert!(network_ready(dir.path()));
    }

    #[test]
    fn meminfo_and_arch() {
        assert_eq!(
            mem_total_kib("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384)
        );
        assert_eq!(mem_total_kib("nothing"), None);
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }
}
