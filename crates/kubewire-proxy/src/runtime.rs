//! The proxy loop: reflectors for Services, EndpointSlices and Nodes; after a change (debounced)
//! compile, apply the difference to the table in the node's network namespace, and keep the
//! health-check servers in step.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kubewire_controllers::watch::{WatchEnded, reflect};
use kubewire_datapath::NetNs;
use kubewire_datapath::nft::NftError;
use prometheus_client::registry::Registry;

use crate::compile::{NodeContext, NodePortAddresses, compile};
use crate::conntrack;
use crate::health::{HealthError, HealthServers, HealthState};
use crate::metrics::{Metrics, TrafficPolicy};
use crate::model::{Class, Desired, WhenEmpty};
use crate::nft::Tables;

const DEBOUNCE: Duration = Duration::from_millis(20);
/// Re-declare the whole table now and then, to repair what someone else changed in it.
const RESYNC: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Watch(#[from] WatchEnded),
    #[error("{0}")]
    Nft(#[from] NftError),
    #[error("entering the node's network namespace: {0}")]
    Netns(#[from] kubewire_datapath::Error),
    #[error("the apply task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Health(#[from] HealthError),
    #[error("{0}")]
    Conntrack(#[from] conntrack::ConntrackError),
}

/// What the proxy needs besides the API.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The cluster's pod CIDRs; when empty, every Node's `spec.podCIDRs`.
    pub cluster_cidrs: Vec<IpNet>,
    /// Where to serve `/healthz` and `/livez` (kube-proxy's `:10256`), if anywhere.
    pub healthz_address: Option<SocketAddr>,
    /// Where to serve `/metrics` (kube-proxy's `127.0.0.1:10249`), if anywhere.
    pub metrics_address: Option<SocketAddr>,
    pub node_port_addresses: NodePortAddresses,
}

/// The table as last applied in one namespace.
pub struct Applier {
    ns: NetNs,
    applied: Option<Tables>,
    last_full: Option<Instant>,
}

impl Applier {
    pub fn new(ns: NetNs) -> Applier {
        Applier {
            ns,
            applied: None,
            last_full: None,
        }
    }

    /// Makes the table hold `desired`: element updates when the rules stay; otherwise the whole
    /// table at once. A re-declaration keeps the sets the old table had (emptied), so that an
    /// entry moving back to an endpoint count it had is again an element update; the periodic
    /// resync (and the first run, and a run after a failure) declares `desired` alone, which
    /// prunes them. Returns whether it re-declared the table.
    pub async fn apply(&mut self, desired: Tables) -> Result<bool, ProxyError> {
        let resync_due = self.last_full.is_none_or(|t| t.elapsed() >= RESYNC);
        // Until the transaction is known to be in, nothing is known to be applied.
        let (script, next, full) = match self.applied.take() {
            Some(old) if !resync_due => match old.render_delta(&desired) {
                Some(delta) => (delta, old.after_delta(&desired), false),
                None => {
                    let next = old.after_delta(&desired);
                    (next.render_full(), next, true)
                }
            },
            _ => (desired.render_full(), desired, true),
        };
        let ns = self.ns.try_clone()?;
        tokio::task::spawn_blocking(move || -> Result<(), ProxyError> {
            let _inside = ns.enter()?;
            if !script.is_empty() {
                kubewire_datapath::nft::apply(&script)?;
            }
            Ok(())
        })
        .await??;
        if full && resync_due {
            self.last_full = Some(Instant::now());
        }
        self.applied = Some(next);
        Ok(full)
    }
}

/// Runs the proxy for `config.node_name`, programming network namespace `ns`, until dropped.
pub async fn run(client: Client, config: Config, ns: NetNs) -> Result<(), ProxyError> {
    let services = reflect(Api::<Service>::all(client.clone()), "proxy: Service").await?;
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        "proxy: EndpointSlice",
    )
    .await?;
    let nodes = reflect(Api::<Node>::all(client), "proxy: Node").await?;
    let health = Arc::new(RwLock::new(HealthState::default()));
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let mut servers = HealthServers::new(ns.try_clone()?, health.clone(), Arc::new(registry));
    if let Some(addr) = config.healthz_address {
        servers.serve_proxy(addr)?;
    }
    if let Some(addr) = config.metrics_address {
        servers.serve_metrics(addr)?;
    }
    let mut applier = Applier::new(ns.try_clone()?);
    let mut programmed: Option<Desired> = None;
    let mut last_warnings = Vec::new();
    loop {
        let node = node_context(&config, &nodes.store.state());
        let (desired, warnings) = compile(&services.store.state(), &slices.store.state(), &node);
        if warnings != last_warnings {
            for w in &warnings {
                tracing::warn!(node = %config.node_name, "proxy: {w}");
            }
            last_warnings = warnings;
        }
        let entries = desired.entries.len();
        let mut wait = RESYNC;
        let started = Instant::now();
        let applied = applier.apply(Tables::from_desired(&desired)).await;
        record(&metrics, &desired, &applied, started.elapsed());
        match &applied {
            Ok(true) => tracing::info!(node = %config.node_name, entries, "proxy: table declared"),
            Ok(false) => tracing::debug!(node = %config.node_name, entries, "proxy: table updated"),
            Err(e) => {
                tracing::warn!(node = %config.node_name, "proxy: apply failed (retrying): {e}");
                wait = RETRY;
            }
        }
        if applied.is_ok() {
            if let Some(old) = &programmed {
                let flows = conntrack::stale_udp_flows(old, &desired);
                if !flows.is_empty()
                    && let Err(e) = forget_flows(&ns, flows).await
                {
                    tracing::warn!(node = %config.node_name, "proxy: UDP conntrack cleanup: {e}");
                }
            }
            programmed = Some(desired.clone());
        }
        if let Ok(mut h) = health.write() {
            let now = SystemTime::now();
            if applied.is_ok() {
                h.last_updated = Some(now);
                h.failing_since = None;
            } else {
                h.failing_since.get_or_insert(now);
            }
            h.services = desired.health_checks;
            h.node_eligible = !being_deleted(&config.node_name, &nodes.store.state());
        }
        for e in servers.converge() {
            tracing::warn!(node = %config.node_name, "proxy: health check server: {e}");
            wait = RETRY;
        }
        tokio::select! {
            () = services.changed.notified() => {}
            () = slices.changed.notified() => {}
            () = nodes.changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// The metrics of one sync.
fn record(
    metrics: &Metrics,
    desired: &Desired,
    applied: &Result<bool, ProxyError>,
    took: Duration,
) {
    let seconds = took.as_secs_f64();
    match applied {
        Ok(full) => {
            metrics.sync_duration.observe(seconds);
            if *full {
                metrics.full_sync_duration.observe(seconds);
            } else {
                metrics.partial_sync_duration.observe(seconds);
            }
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            metrics.last_sync_timestamp.set(now.as_secs_f64());
        }
        Err(_) => {
            metrics.sync_failures.inc();
        }
    }
    for (policy, classes) in [
        ("internal", &[Class::ClusterIp][..]),
        ("external", &[Class::ExternalIp, Class::NodePort][..]),
    ] {
        let count = desired
            .entries
            .iter()
            .filter(|(k, e)| {
                classes.contains(&k.class)
                    && e.backends.is_empty()
                    && e.when_empty == WhenEmpty::Drop
            })
            .count();
        metrics
            .no_local_endpoints
            .get_or_create(&TrafficPolicy {
                traffic_policy: policy,
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

/// Deletes conntrack entries in `ns`, off the async workers.
async fn forget_flows(ns: &NetNs, flows: Vec<conntrack::Flow>) -> Result<(), ProxyError> {
    let ns = ns.try_clone()?;
    tokio::task::spawn_blocking(move || -> Result<(), ProxyError> {
        let _inside = ns.enter()?;
        conntrack::delete(&flows)?;
        Ok(())
    })
    .await?
}

/// KEP-3836: a node whose Node object is being deleted fails `/healthz`, so that load balancers
/// drain it before it goes.
fn being_deleted(name: &str, nodes: &[Arc<Node>]) -> bool {
    nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
}

/// This node's identity, and the pod CIDRs: configured, or every Node's.
fn node_context(config: &Config, nodes: &[Arc<Node>]) -> NodeContext {
    let me = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(config.node_name.as_str()));
    let zone = me
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(kubewire_api::labels::TOPOLOGY_ZONE))
        .cloned();
    let addresses = me
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.addresses.as_ref());
    let node_ips = ["InternalIP", "ExternalIP"]
        .iter()
        .flat_map(|kind| {
            addresses
                .into_iter()
                .flatten()
                .filter(move |a| a.type_ == *kind)
                .filter_map(|a| a.address.parse().ok())
        })
        .collect();
    let pod_cidrs = if config.cluster_cidrs.is_empty() {
        let all: BTreeSet<IpNet> = nodes
            .iter()
            .filter_map(|n| n.spec.as_ref())
            .flat_map(|s| s.pod_cidrs.iter().flatten())
            .filter_map(|c| c.parse::<IpNet>().ok())
            .map(|c| c.trunc())
            .collect();
        all.into_iter().collect()
    } else {
        config.cluster_cidrs.clone()
    };
    NodeContext {
        name: config.node_name.clone(),
        zone,
        pod_cidrs,
        node_ips,
        node_port_addresses: config.node_port_addresses,
    }
}
