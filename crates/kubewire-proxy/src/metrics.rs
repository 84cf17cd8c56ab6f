//! The proxy's Prometheus metrics, under kube-proxy's names (`kubeproxy_…`, from
//! `pkg/proxy/metrics`), so that dashboards and alerts made for kube-proxy read kubewire too.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficPolicy {
    /// `internal` or `external`, as kube-proxy labels it.
    pub traffic_policy: &'static str,
}

/// Every metric the proxy keeps.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub sync_duration: Histogram,
    pub full_sync_duration: Histogram,
    pub partial_sync_duration: Histogram,
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    pub sync_failures: Counter,
    pub no_local_endpoints: Family<TrafficPolicy, Gauge>,
}

impl Metrics {
    /// The metrics, registered in `registry`. Buckets are kube-proxy's: 1 ms doubling to ~16 s.
    pub fn register(registry: &mut Registry) -> Metrics {
        let buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let m = Metrics {
            sync_duration: buckets(),
            full_sync_duration: buckets(),
            partial_sync_duration: buckets(),
            last_sync_timestamp: Gauge::default(),
            sync_failures: Counter::default(),
            no_local_endpoints: Family::default(),
        };
        let prefix = registry.sub_registry_with_prefix("kubeproxy");
        prefix.register(
            "sync_proxy_rules_duration_seconds",
            "How long programming the rules took, whole or partial",
            m.sync_duration.clone(),
        );
        prefix.register(
            "sync_full_proxy_rules_duration_seconds",
            "How long re-declaring the whole table took",
            m.full_sync_duration.clone(),
        );
        prefix.register(
            "sync_partial_proxy_rules_duration_seconds",
            "How long an element-level update took",
            m.partial_sync_duration.clone(),
        );
        prefix.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "When the rules were last programmed successfully (Unix time)",
            m.last_sync_timestamp.clone(),
        );
        prefix.register(
            "sync_proxy_rules_nftables_sync_failures",
            "Failed nftables transactions",
            m.sync_failures.clone(),
        );
        prefix.register(
            "sync_proxy_rules_no_local_endpoints",
            "Service destinations with a Local traffic policy and no endpoint on this node",
            m.no_local_endpoints.clone(),
        );
        m
    }
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_names_in_text_format() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.sync_duration.observe(0.003);
        m.sync_failures.inc();
        m.no_local_endpoints
            .get_or_create(&TrafficPolicy {
                traffic_policy: "external",
            })
            .set(2);
        let text = encode(&registry);
        for expected in [
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1",
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total 1",
            "kubeproxy_sync_proxy_rules_no_local_endpoints{traffic_policy=\"external\"} 2",
            "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
