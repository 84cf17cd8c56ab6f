//! The kubewire CNI plugin: what a container runtime executes to give a pod its network.
//!
//! It implements CNI spec 1.1.0 (and accepts 0.4.0 and 1.0.0 configurations): ADD, DEL, CHECK,
//! VERSION, GC and STATUS, as a plugin of a `.conflist` chain. The layout is routed
//! point-to-point (`LAYOUT.md`): a veth per pod, /32 and /128 addresses, link-local gateways.
//! Addresses come from the node's pod CIDRs, written into the configuration by the agent, through
//! a crash-safe on-disk store ([`ipam`]): the ADD path makes no API call.
//!
//! It is not the agent: routes between nodes, masquerading and policy live elsewhere. The binary
//! (`src/main.rs`) only reads the environment and stdin and calls [`plugin::run`].

pub mod bench;
pub mod config;
pub mod error;
pub mod ipam;
pub mod plugin;
pub mod result;
pub mod version;

pub use bench::{BenchError, BenchReport, bench_add_del};
pub use error::CniError;
