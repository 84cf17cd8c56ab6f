//! The shared vocabulary of kubewire.
//!
//! Re-exports the Kubernetes (`k8s-openapi`) and Gateway API (`gateway-api`) types the components
//! use, and defines what no maintained crate has: the AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy types, label selectors in their string form, and CIDR helpers.
//! It holds types and pure helpers, and the one function that builds an API client from a
//! kubeconfig ([`client`]); no other I/O.

pub mod client;
pub mod ip;
pub mod labels;
pub mod policy;
pub mod selector;

pub use gateway_api;
pub use k8s_openapi;
