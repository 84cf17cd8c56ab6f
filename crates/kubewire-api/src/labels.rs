//! Well-known label names that more than one component reads or writes.

/// The Service an EndpointSlice belongs to (`discovery.LabelServiceName`).
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Who manages an EndpointSlice (`discovery.LabelManagedBy`).
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// On the slices and Endpoints of Services without a cluster IP (`v1.IsHeadlessService`);
/// service proxies skip them.
pub const HEADLESS: &str = "service.kubernetes.io/headless";
/// On Endpoints that an EndpointSlice mirroring controller must leave alone
/// (`discovery.LabelSkipMirror`).
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// A Service with this label belongs to another service proxy (KEP-2447).
pub const SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// A Node's zone (`v1.LabelTopologyZone`).
pub const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
/// A Node's hostname (`v1.LabelHostname`).
pub const HOSTNAME: &str = "kubernetes.io/hostname";
