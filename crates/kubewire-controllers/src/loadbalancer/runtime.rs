//! The LoadBalancer IPAM loop: a Service reflector, [`reconcile`](super::reconcile) over its
//! snapshot after every change (debounced), merge patches of `status.loadBalancer`, Events, and
//! retries with backoff for writes that failed. A Service waiting for an address (exhausted
//! range, refused `spec.loadBalancerIP`) is retried on every Service change, as only a change
//! of some Service can free what it waits for.
//!
//! A patch sent is remembered ("in flight") and laid over the snapshot until the watch shows
//! it, so two reconciles close together never hand the same address to two Services. Each
//! patch carries the resourceVersion it was planned from: a Service changed meanwhile (say to
//! `type: ClusterIP`) is not written from a stale view; the conflict is retried from the
//! newer one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Config, ServiceKey, reconcile};
use crate::events::Recorder;
use crate::watch::{WatchEnded, at_least, reflect, sleep_until};

/// Event reason on a Service that cannot get an address (MetalLB's, the reason users of
/// in-cluster load balancers look for).
pub const REASON_ALLOCATION_FAILED: &str = "AllocationFailed";

const COMPONENT: &str = "load-balancer-ipam-controller";
const DEBOUNCE: Duration = Duration::from_millis(20);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Status patches sent at the same time.
const CONCURRENT_WRITES: usize = 8;

/// Runs LoadBalancer IPAM until the task is dropped. Fails only if the watch ends before its
/// first list.
pub async fn run(client: Client, config: Config) -> Result<(), WatchEnded> {
    let services = reflect(Api::all(client.clone()), "LoadBalancer IPAM: Service").await?;
    tracing::info!(
        ranges = ?config.ranges(),
        services = services.store.len(),
        "LoadBalancer IPAM: state rebuilt from existing Services"
    );
    let mut ctl = Controller {
        client: client.clone(),
        store: services.store.clone(),
        config,
        recorder: Recorder::new(client, COMPONENT),
        in_flight: BTreeMap::new(),
        retries: BTreeMap::new(),
        reported: BTreeSet::new(),
    };
    loop {
        let next_retry = ctl.sync().await;
        tokio::select! {
            () = services.changed.notified() => {}
            () = sleep_until(next_retry) => {}
        }
        // Let a burst of watch events land before the next snapshot.
        tokio::time::sleep(DEBOUNCE).await;
    }
}

struct Controller {
    client: Client,
    store: Store<Service>,
    config: Config,
    recorder: Recorder,
    /// Services as our patches returned them, until the watch shows those versions.
    in_flight: BTreeMap<ServiceKey, Arc<Service>>,
    /// Services whose last patch failed: when to try again, and how long the wait was.
    retries: BTreeMap<ServiceKey, Retry>,
    /// (service uid, problem) already reported: one Event per problem, not one per round.
    reported: BTreeSet<(String, String)>,
}

struct Retry {
    delay: Duration,
    at: Instant,
}

impl Controller {
    /// One reconcile and its writes. Returns when the next retry is due.
    async fn sync(&mut self) -> Option<Instant> {
        let services = overlay(&mut self.in_flight, &self.store.state());
        let plan = reconcile(services.values().map(Arc::as_ref), &self.config);

        // A Service that needs no write any more needs no retry either.
        self.retries.retain(|key, _| plan.status.contains_key(key));
        let now = Instant::now();
        let writes: Vec<(ServiceKey, Arc<Service>, Vec<LoadBalancerIngress>)> = plan
            .status
            .into_iter()
            .filter(|(key, _)| self.retries.get(key).is_none_or(|r| r.at <= now))
            .filter_map(|(key, ingress)| Some((key.clone(), services.get(&key)?.clone(), ingress)))
            .collect();
        let client = &self.client;
        let results: Vec<_> = stream::iter(writes)
            .map(|(key, service, ingress)| async move {
                let result = write(client, &key, &service, &ingress).await;
                (key, ingress, result)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        let now = Instant::now();
        for (key, ingress, result) in results {
            let ips: Vec<&str> = ingress.iter().filter_map(|i| i.ip.as_deref()).collect();
            match result {
                Ok(written) => {
                    tracing::info!(service = %key, ingress = ?ips, "LoadBalancer IPAM: status set");
                    self.retries.remove(&key);
                    self.in_flight.insert(key, Arc::new(written));
                }
                // Gone, changed meanwhile (a conflict), or the API is unreachable: the watch
                // brings the truth, and the write is planned again from it.
                Err(e) => {
                    let delay = self
                        .retries
                        .get(&key)
                        .map_or(RETRY_MIN, |r| (r.delay * 2).min(RETRY_MAX));
                    tracing::warn!(
                        service = %key,
                        retry_in = ?delay,
                        "LoadBalancer IPAM: cannot set ingress {ips:?}: {e}"
                    );
                    self.retries.insert(
                        key,
                        Retry {
                            delay,
                            at: now + delay,
                        },
                    );
                }
            }
        }

        let mut still = BTreeSet::new();
        for (key, problems) in &plan.problems {
            let Some(service) = services.get(key) else {
                continue;
            };
            let uid = service.metadata.uid.clone().unwrap_or_default();
            for problem in problems {
                let reported = (uid.clone(), format!("{problem}"));
                if !self.reported.contains(&reported) {
                    self.report(key, service, reported.clone()).await;
                }
                still.insert(reported);
            }
        }
        // Forget reports of problems that are over, so that a new episode is told.
        self.reported.retain(|r| still.contains(r));
        self.retries.values().map(|r| r.at).min()
    }

    async fn report(&mut self, key: &ServiceKey, service: &Service, reported: (String, String)) {
        let message = format!("cannot allocate a load balancer IP: {}", reported.1);
        tracing::warn!(service = %key, "LoadBalancer IPAM: {message}");
        match self
            .recorder
            .warning(service, REASON_ALLOCATION_FAILED, &message)
            .await
        {
            Ok(()) => {
                self.reported.insert(reported);
            }
            Err(e) => tracing::warn!(
                service = %key,
                "LoadBalancer IPAM: cannot record Event {REASON_ALLOCATION_FAILED}: {e}"
            ),
        }
    }
}

/// The cache with the in-flight writes it does not show yet laid over it; writes it shows, or
/// whose Service is gone (its addresses are free) or was replaced, are forgotten.
fn overlay(
    in_flight: &mut BTreeMap<ServiceKey, Arc<Service>>,
    cache: &[Arc<Service>],
) -> BTreeMap<ServiceKey, Arc<Service>> {
    let mut services: BTreeMap<ServiceKey, Arc<Service>> = cache
        .iter()
        .filter_map(|s| Some((ServiceKey::of(s)?, s.clone())))
        .collect();
    in_flight.retain(|key, written| {
        let Some(cached) = services.get_mut(key) else {
            return false;
        };
        if cached.metadata.uid != written.metadata.uid
            || at_least(
                cached.metadata.resource_version.as_deref(),
                written.metadata.resource_version.as_deref(),
            )
        {
            return false;
        }
        *cached = written.clone();
        true
    });
    services
}

/// Merge-patches `status.loadBalancer.ingress` (removed when empty), on the condition that the
/// Service is still the version the plan was made from.
async fn write(
    client: &Client,
    key: &ServiceKey,
    service: &Service,
    ingress: &[LoadBalancerIngress],
) -> kube::Result<Service> {
    let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
    let ingress = if ingress.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(ingress).map_err(kube::Error::SerdeError)?
    };
    let patch = json!({
        "metadata": {"resourceVersion": service.resource_version()},
        "status": {"loadBalancer": {"ingress": ingress}},
    });
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, uid: &str, rv: &str, ip: Option<&str>) -> Arc<Service> {
        let ingress: Vec<Value> = ip.into_iter().map(|ip| json!({"ip": ip})).collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv},
                "status": {"loadBalancer": {"ingress": ingress}},
            }))
            .expect("a Service"),
        )
    }

    fn key(name: &str) -> ServiceKey {
        ServiceKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn ip_of(services: &BTreeMap<ServiceKey, Arc<Service>>, name: &str) -> Option<String> {
        super::super::ingress_of(&services[&key(name)])
            .first()
            .and_then(|i| i.ip.clone())
    }

    #[test]
    fn writes_are_seen_until_the_cache_shows_them() {
        let mut in_flight = BTreeMap::new();
        in_flight.insert(key("a"), svc("a", "u1", "10", Some("203.0.113.1")));
        let view = overlay(&mut in_flight, &[svc("a", "u1", "9", None)]);
        assert_eq!(ip_of(&view, "a").as_deref(), Some("203.0.113.1"));
        assert_eq!(in_flight.len(), 1);
        // The watch caught up (or went past): the cache is the truth again.
        let view = overlay(&mut in_flight, &[svc("a", "u1", "11", None)]);
        assert_eq!(ip_of(&view, "a"), None);
        assert!(in_flight.is_empty());
    }

    #[test]
    fn writes_to_services_gone_or_replaced_are_forgotten() {
        let mut in_flight = BTreeMap::new();
        in_flight.insert(key("a"), svc("a", "u1", "10", Some("203.0.113.1")));
        in_flight.insert(key("b"), svc("b", "u2", "12", Some("203.0.113.2")));
        // a was deleted; b deleted and created again under the same name.
        let view = overlay(&mut in_flight, &[svc("b", "u3", "11", None)]);
        assert_eq!(view.len(), 1);
        assert_eq!(ip_of(&view, "b"), None);
        assert!(in_flight.is_empty());
    }
}
