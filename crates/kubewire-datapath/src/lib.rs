//! The kernel side of kubewire's node pieces: network namespaces, veth pairs, links, addresses,
//! routes, neighbours and sysctls, driven over rtnetlink.
//!
//! It is deliberately thin: every function does one kernel operation (or one small, named group
//! of them) and reports the kernel's answer; deciding *what* the node should look like is the job
//! of the callers (the CNI plugin, the agent, the lab). Its nftables part only runs transactions
//! that callers render ([`nft`]); it holds no policy or Kubernetes knowledge. Everything here is
//! tested against the real kernel inside throw-away network namespaces.
//!
//! Threading: a network namespace belongs to an OS thread, and a netlink socket stays bound to the
//! namespace it was opened in. [`Netlink`] is a blocking client (it owns a `current_thread` tokio
//! runtime) meant for plain threads; [`NetNs::enter`] switches the calling thread and switches back
//! on drop, and [`NetNs::run`] runs a closure on a dedicated thread inside a namespace.

pub mod bridge;
mod error;
mod netlink;
mod netns;
pub mod nft;
pub mod overlay;
pub mod sysctl;
pub mod testutil;

pub use error::Error;
pub use netlink::{Link, Mac, Neighbour, Netlink, Route, VethSpec};
pub use netns::{NETNS_RUN_DIR, NetNs, NetNsGuard, OwnedNetNs};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
