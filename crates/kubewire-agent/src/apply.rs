//! The thin kernel half: makes one node's network namespace hold a [`Desired`] state, touching
//! only what the agent owns and only where it differs, so that converging an unchanged node
//! (an agent restart) changes nothing and disrupts no traffic.
//!
//! What the agent owns: routes tagged with routing protocol [`RTPROT_KUBEWIRE`] in the main
//! table, the [`VXLAN_DEVICE`] with its addresses, FDB and neighbour entries, and the nftables
//! table [`nft::TABLE`]. An [`Applier`] lives on one thread that has entered the node's network
//! namespace (sysctls and `nft` act on the calling thread's namespace); [`Worker`] provides one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::mpsc;

use ipnet::IpNet;
use kubewire_datapath::overlay::{FdbEntry, RTPROT_KUBEWIRE, VxlanSpec};
use kubewire_datapath::{NetNs, Netlink, Route, sysctl};

use crate::compile::{Desired, NextHop, Settings, VXLAN_DEVICE, VxlanState};
use crate::nft;

/// The main routing table.
const MAIN_TABLE: u32 = 254;
/// VXLAN encapsulation overhead on an IPv4 / IPv6 underlay (outer IP + UDP + VXLAN + Ethernet).
const VXLAN_OVERHEAD_V4: u32 = 50;
const VXLAN_OVERHEAD_V6: u32 = 70;
const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Kernel(#[from] kubewire_datapath::Error),
    #[error("{0}")]
    Nft(#[from] nft::NftError),
    #[error("the apply thread is gone")]
    WorkerGone,
}

/// What applying found out that the rest of the agent needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// MTU for pod interfaces: the uplink's, less the VXLAN overhead in VXLAN mode.
    pub pod_mtu: u32,
}

/// Converges the calling thread's network namespace.
pub struct Applier {
    nl: Netlink,
    settings: Settings,
    /// The nftables transaction last applied (none yet: the first apply always runs it).
    nft_applied: Option<String>,
}

impl Applier {
    /// Opens netlink in the calling thread's namespace.
    pub fn new(settings: Settings) -> Result<Applier, ApplyError> {
        Ok(Applier {
            nl: Netlink::open()?,
            settings,
            nft_applied: None,
        })
    }

    pub fn apply(&mut self, desired: &Desired) -> Result<Applied, ApplyError> {
        sysctl::enable_ipv4_forwarding()?;
        if sysctl::ipv6_available() {
            sysctl::enable_ipv6_forwarding()?;
        }
        let uplink_mtu = self.uplink_mtu(desired.node_ip)?;
        let vxlan_index = match &desired.vxlan {
            Some(vx) => Some(self.converge_vxlan(vx, uplink_mtu)?),
            None => {
                self.nl.delete_link_by_name(VXLAN_DEVICE)?;
                None
            }
        };
        self.converge_routes(&desired.routes, vxlan_index)?;
        if let (Some(vx), Some(index)) = (&desired.vxlan, vxlan_index) {
            // Entries of nodes that are gone go after their routes.
            self.prune_vxlan_peers(vx, index)?;
        }
        let script = nft::render(desired.masquerade.as_ref());
        if self.nft_applied.as_deref() != Some(script.as_str()) {
            nft::apply(&script)?;
            self.nft_applied = Some(script);
        }
        let pod_mtu = match &desired.vxlan {
            Some(vx) => uplink_mtu.saturating_sub(overhead(vx.local)),
            None => uplink_mtu,
        };
        Ok(Applied { pod_mtu })
    }

    /// MTU of the link holding `node_ip` (1500 when there is none).
    fn uplink_mtu(&self, node_ip: Option<IpAddr>) -> Result<u32, ApplyError> {
        let Some(ip) = node_ip else {
            return Ok(DEFAULT_MTU);
        };
        let Some((index, _)) = self
            .nl
            .addresses(None)?
            .into_iter()
            .find(|(_, a)| a.addr() == ip)
        else {
            return Ok(DEFAULT_MTU);
        };
        Ok(self
            .nl
            .link_by_index(index)?
            .and_then(|l| l.mtu)
            .unwrap_or(DEFAULT_MTU))
    }

    /// Makes the VXLAN device match `vx` (recreated only when its identity changed: VNI, port,
    /// underlay address, MAC), with its addresses and every peer's FDB and neighbour entry.
    /// Returns its index.
    fn converge_vxlan(&self, vx: &VxlanState, uplink_mtu: u32) -> Result<u32, ApplyError> {
        let spec = VxlanSpec {
            name: VXLAN_DEVICE,
            vni: self.settings.vxlan_vni,
            port: self.settings.vxlan_port,
            local: vx.local,
            mac: vx.mac,
            mtu: Some(uplink_mtu.saturating_sub(overhead(vx.local))),
        };
        let link = match self.nl.vxlan(VXLAN_DEVICE)? {
            Some(info) if info.matches(&spec) => info.link,
            existing => {
                if existing.is_some() || self.nl.link(VXLAN_DEVICE)?.is_some() {
                    tracing::info!("agent: recreating {VXLAN_DEVICE} (its settings changed)");
                    self.nl.delete_link_by_name(VXLAN_DEVICE)?;
                }
                self.nl.add_vxlan(&spec)?;
                self.nl.link(VXLAN_DEVICE)?.ok_or_else(|| {
                    kubewire_datapath::Error::Invalid(format!("{VXLAN_DEVICE} vanished"))
                })?
            }
        };
        if link.mtu != spec.mtu
            && let Some(mtu) = spec.mtu
        {
            self.nl.set_link_mtu(link.index, mtu)?;
        }
        if !link.up {
            self.nl.set_link_up(link.index, true)?;
        }
        let have: BTreeSet<IpNet> = self
            .nl
            .addresses(Some(link.index))?
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| !is_link_local(a.addr()))
            .collect();
        let want: BTreeSet<IpNet> = vx.addresses.iter().copied().collect();
        for a in want.difference(&have) {
            self.nl.add_address(link.index, *a, true)?;
        }
        for a in have.difference(&want) {
            self.nl.delete_address(link.index, *a)?;
        }
        let fdb: BTreeSet<FdbEntry> = self.nl.fdb(link.index)?.into_iter().collect();
        for e in vx.fdb.difference(&fdb) {
            self.nl.set_fdb(link.index, *e)?;
        }
        let neigh: BTreeMap<IpAddr, _> = self
            .nl
            .neighbours(link.index)?
            .into_iter()
            .map(|n| (n.ip, n))
            .collect();
        for (ip, mac) in &vx.neighbours {
            let current = neigh.get(ip);
            if current.is_none_or(|n| !n.permanent || n.mac != Some(*mac)) {
                self.nl.set_neighbour(link.index, *ip, *mac)?;
            }
        }
        Ok(link.index)
    }

    /// Removes FDB and neighbour entries no peer needs any more.
    fn prune_vxlan_peers(&self, vx: &VxlanState, index: u32) -> Result<(), ApplyError> {
        for e in self.nl.fdb(index)? {
            if !vx.fdb.contains(&e) {
                ignore_missing(self.nl.delete_fdb(index, e))?;
            }
        }
        for n in self.nl.neighbours(index)? {
            if n.permanent && !vx.neighbours.contains_key(&n.ip) {
                ignore_missing(self.nl.delete_neighbour(index, n.ip))?;
            }
        }
        Ok(())
    }

    /// Replaces routes that are missing or differ, deletes owned routes nobody wants.
    fn converge_routes(
        &self,
        desired: &BTreeMap<IpNet, NextHop>,
        vxlan_index: Option<u32>,
    ) -> Result<(), ApplyError> {
        let mut have: BTreeMap<IpNet, Route> = BTreeMap::new();
        for v6 in [false, true] {
            for r in self
                .nl
                .routes_by_protocol(v6, MAIN_TABLE, RTPROT_KUBEWIRE)?
            {
                have.insert(r.dst, r);
            }
        }
        for (dst, hop) in desired {
            let want = match (hop.vxlan, vxlan_index) {
                (true, Some(index)) => Route::via(*dst, hop.gateway, index).onlink(),
                (true, None) => continue,
                (false, _) => Route {
                    oif: None,
                    ..Route::via(*dst, hop.gateway, 0)
                },
            };
            let same = have.get(dst).is_some_and(|r| {
                r.gateway == want.gateway
                    && r.onlink == want.onlink
                    && (want.oif.is_none() || r.oif == want.oif)
            });
            if !same {
                self.nl.replace_route_as(&want, RTPROT_KUBEWIRE)?;
            }
        }
        for (dst, r) in &have {
            if !desired.contains_key(dst) {
                ignore_missing(self.nl.delete_route_as(r, RTPROT_KUBEWIRE))?;
            }
        }
        Ok(())
    }
}

fn overhead(underlay: IpAddr) -> u32 {
    if underlay.is_ipv4() {
        VXLAN_OVERHEAD_V4
    } else {
        VXLAN_OVERHEAD_V6
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

fn ignore_missing(r: kubewire_datapath::Result<()>) -> kubewire_datapath::Result<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

type Job = (Desired, mpsc::Sender<Result<Applied, ApplyError>>);

/// An [`Applier`] on a dedicated OS thread inside a network namespace. The thread ends when the
/// worker is dropped (and the applier, which owns a netlink runtime, is dropped on it).
pub struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    pub async fn start(ns: NetNs, settings: Settings) -> Result<Worker, ApplyError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("kubewire-apply".into())
            .spawn(move || {
                let _inside = match ns.enter() {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ApplyError::from(e)));
                        return;
                    }
                };
                let mut applier = match Applier::new(settings) {
                    Ok(a) => {
                        let _ = ready_tx.send(Ok(()));
                        a
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for (desired, reply) in rx {
                    let _ = reply.send(applier.apply(&desired));
                }
            })
            .map_err(|e| kubewire_datapath::Error::Invalid(format!("spawn apply thread: {e}")))?;
        tokio::task::spawn_blocking(move || ready_rx.recv())
            .await
            .map_err(|_| ApplyError::WorkerGone)?
            .map_err(|_| ApplyError::WorkerGone)??;
        Ok(Worker { jobs })
    }

    /// Applies `desired` on the worker thread, waiting without blocking the async runtime.
    pub async fn apply(&self, desired: Desired) -> Result<Applied, ApplyError> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send((desired, tx))
            .map_err(|_| ApplyError::WorkerGone)?;
        tokio::task::spawn_blocking(move || rx.recv())
            .await
            .map_err(|_| ApplyError::WorkerGone)?
            .map_err(|_| ApplyError::WorkerGone)?
    }
}
