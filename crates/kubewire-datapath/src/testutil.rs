//! Helpers for tests that need root and the real kernel (shared by kubewire's crates).

use crate::OwnedNetNs;

/// True when the calling process may create namespaces. When it may not, prints why and returns
/// false (the test then skips), except under `CI=true`, where a skipped kernel test would hide a
/// broken CI machine: there it panics.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!ci, "{test}: needs root (CI=true, so not skipping)");
    eprintln!("{test}: skipped: needs root to create network namespaces");
    false
}

/// A unique namespace name for this process: `kwt-<pid>-<tag>` (kept short; the name is a path
/// component only, so length is not limited to an interface name's 15 bytes).
pub fn unique_name(tag: &str) -> String {
    format!("kwt-{}-{tag}", std::process::id())
}

/// Creates a uniquely named namespace that is deleted on drop, with `lo` up.
pub fn netns(tag: &str) -> OwnedNetNs {
    let ns = OwnedNetNs::create(&unique_name(tag)).expect("create test netns");
    let nl = crate::Netlink::open_in(&ns).expect("netlink in test netns");
    nl.set_link_up_by_name("lo").expect("lo up");
    ns
}
