//! kubewire's service proxy, the part of `kubewire agent` that replaces kube-proxy: Services and
//! EndpointSlices become DNAT in the node's nftables table `inet kubewire-proxy`.
//!
//! Shaped as the rest of kubewire: [`compile()`](compile::compile) is a pure function from
//! Services, EndpointSlices and the node's identity to the node-local service [`model`] (which
//! endpoints this node may use for which address, after traffic policies, topology and the
//! terminating fallback); [`nft`] renders that model as sets and maps, and a change as a
//! transaction of element updates; [`runtime`] watches the API and applies in a network namespace;
//! [`conntrack`] forgets UDP flows to endpoints that went away; [`health`] serves load balancers' health checks and the proxy's `/healthz`; [`bench`]
//! measures it against kube-proxy's nftables layout.
//!
//! It is not pod routing or masquerade of pod egress (`kubewire-agent`), not NetworkPolicy, and
//! writes nothing to the API.

pub mod bench;
pub mod compile;
pub mod conntrack;
pub mod health;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod runtime;
