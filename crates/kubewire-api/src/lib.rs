//! The shared vocabulary of kubewire.
//!
//! Re-exports the Kubernetes (`k8s-openapi`) and Gateway API (`gateway-api`) types the components
//! use, and defines what no maintained crate has: the AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy types, label selectors in their string form, and CIDR helpers.
//! It holds types and pure helpers only: no I/O, no client.

pub mod policy;
pub mod selector;

pub use gateway_api;
pub use k8s_openapi;
