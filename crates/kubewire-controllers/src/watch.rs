//! A reflector that says when it changed: the input side of every loop here and in the agent.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// The watch ended before the first list completed (the task running it was stopped).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the watch ended before its first list")]
pub struct WatchEnded;

/// A cache of every object of one kind, kept current by a watch (with kube-rs's default
/// backoff on errors), and a signal raised after each change.
pub struct Reflected<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq,
{
    pub store: Store<K>,
    pub changed: Arc<Notify>,
    /// Dropped with this value, which stops the watch.
    _watch: tokio::task::JoinSet<()>,
}

/// Starts watching `api` and returns once the first list is in the cache.
pub async fn reflect<K>(api: Api<K>, what: &'static str) -> Result<Reflected<K>, WatchEnded>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Clone + Hash + Eq + Send + Sync,
{
    let (store, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let notify = changed.clone();
    let mut watch = tokio::task::JoinSet::new();
    watch.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!("{what} watch: {e}");
            }
            notify.notify_one();
        }
    });
    store.wait_until_ready().await.map_err(|_| WatchEnded)?;
    Ok(Reflected {
        store,
        changed,
        _watch: watch,
    })
}

/// Whether a cache holding version `seen` of an object shows the write that made `written`:
/// the check of every read-your-writes overlay here. resourceVersions are opaque to clients,
/// but ours and etcd's are increasing integers; anything else counts as shown once equal.
pub fn at_least(seen: Option<&str>, written: Option<&str>) -> bool {
    let number = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
    match (number(seen), number(written)) {
        (Some(seen), Some(written)) => seen >= written,
        _ => seen == written,
    }
}

/// Sleeps until `deadline`, or forever without one: the "next retry" arm of a controller loop.
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_versions_compare_as_numbers() {
        assert!(at_least(Some("10"), Some("9")));
        assert!(!at_least(Some("9"), Some("10")));
        assert!(at_least(Some("abc"), Some("abc")));
        assert!(!at_least(None, Some("1")));
    }
}
