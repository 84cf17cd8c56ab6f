//! Durable object storage with one global resourceVersion, as etcd gives kube-apiserver.
//!
//! - Every object is kept in redb (one ACID table) *and* in memory, pre-serialized, so that gets,
//!   lists and watches never touch the disk.
//! - All writes go through one writer thread that batches whatever is queued into one redb
//!   transaction (group commit): a write is acknowledged only after its transaction is durable,
//!   yet concurrent clients share one fsync.
//! - Each committed change becomes a [`Event`] in a bounded history (for watches that resume from
//!   an older resourceVersion) and is broadcast to live watchers. A watch older than the history
//!   gets [`StoreError::Expired`] (HTTP 410), and the client relists.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::registry::ResourceId;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_RV: &str = "resourceVersion";
/// redb page cache; its default (1 GiB) would only duplicate what memory already holds.
const REDB_CACHE: usize = 64 * 1024 * 1024;
/// How many writes one redb transaction takes at most.
const MAX_GROUP: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object already exists")]
    AlreadyExists,
    #[error("object not found")]
    NotFound,
    #[error(
        "the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict,
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
    #[error("storage: {0}")]
    Storage(String),
    #[error("the store is shutting down")]
    Closed,
}

fn storage_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// Where an object lives: its kind, namespace ("" when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub resource: ResourceId,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    fn db_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.resource.storage_prefix(),
            self.namespace,
            self.name
        )
    }

    fn parse_db_key(key: &str) -> Option<Self> {
        let mut parts = key.rsplitn(3, '/');
        let name = parts.next()?.to_string();
        let namespace = parts.next()?.to_string();
        let resource = ResourceId::from_storage_prefix(parts.next()?)?;
        Some(Self {
            resource,
            namespace,
            name,
        })
    }
}

/// A stored object: its JSON exactly as served, plus the fields lists and watches filter on.
#[derive(Debug)]
pub struct Object {
    pub key: ObjectKey,
    pub resource_version: u64,
    pub json: Bytes,
    pub labels: BTreeMap<String, String>,
    pub uid: String,
    /// Pod `spec.nodeName`, for the `spec.nodeName` field selector.
    pub node_name: Option<String>,
    pub owner_uids: Vec<String>,
}

impl Object {
    fn new(key: ObjectKey, resource_version: u64, value: &Value) -> Result<Self, StoreError> {
        let json = Bytes::from(serde_json::to_vec(value).map_err(storage_err)?);
        Ok(Self::with_json(key, resource_version, value, json))
    }

    fn with_json(key: ObjectKey, resource_version: u64, value: &Value, json: Bytes) -> Self {
        let meta = &value["metadata"];
        let labels = meta["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let owner_uids = meta["ownerReferences"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r["uid"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            key,
            resource_version,
            json,
            labels,
            uid: meta["uid"].as_str().unwrap_or_default().to_string(),
            node_name: value["spec"]["nodeName"].as_str().map(str::to_string),
            owner_uids,
        }
    }

    /// The object as a JSON value (parsed from the stored bytes, which we wrote ourselves).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change. `previous` lets a watch with a label selector turn a MODIFIED that
/// leaves (or enters) its selection into a DELETED (or ADDED), as kube-apiserver does.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub object: Arc<Object>,
    pub previous: Option<Arc<Object>>,
}

impl Event {
    pub fn resource_version(&self) -> u64 {
        self.object.resource_version
    }
}

/// What a write requires of the stored object before it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Create: no object may exist under the key.
    Absent,
    /// The stored object must have exactly this resourceVersion.
    ResourceVersion(u64),
}

#[derive(Debug)]
pub enum Write {
    Put {
        key: ObjectKey,
        value: Value,
        precondition: Precondition,
    },
    Delete {
        key: ObjectKey,
        precondition: Option<Precondition>,
    },
}

impl Write {
    fn key(&self) -> &ObjectKey {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } => key,
        }
    }
}

struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<Arc<Object>, StoreError>>,
}

/// The in-memory view: every object by kind, then by (namespace, name), plus the recent history.
pub struct State {
    objects: HashMap<ResourceId, BTreeMap<(String, String), Arc<Object>>>,
    resource_version: u64,
    history: VecDeque<Arc<Event>>,
    /// Events at or below this resourceVersion are no longer in `history`.
    compacted: u64,
    history_limit: usize,
    /// Objects by the uid of each of their owners, so garbage collection finds dependents
    /// without scanning the store.
    dependents: HashMap<String, BTreeSet<ObjectKey>>,
}

impl State {
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<Object>> {
        self.objects
            .get(&key.resource)?
            .get(&(key.namespace.clone(), key.name.clone()))
    }

    /// Objects of one kind, in (namespace, name) order; `namespace` narrows to one namespace.
    pub fn list<'a>(
        &'a self,
        resource: ResourceId,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<Object>> + 'a {
        let map = self.objects.get(&resource);
        let range: Box<dyn Iterator<Item = &'a Arc<Object>> + 'a> = match (map, namespace) {
            (None, _) => Box::new(std::iter::empty()),
            (Some(m), None) => Box::new(m.values()),
            (Some(m), Some(ns)) => Box::new(
                m.range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(_, o)| o),
            ),
        };
        range
    }

    pub fn count(&self, resource: ResourceId, namespace: Option<&str>) -> usize {
        self.list(resource, namespace).count()
    }

    /// Events after `since`, or `Expired` when some of them were compacted away.
    fn events_since(&self, since: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        if since < self.compacted {
            return Err(StoreError::Expired {
                requested: since,
                oldest: self.compacted + 1,
            });
        }
        let start = self
            .history
            .partition_point(|e| e.resource_version() <= since);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// The objects that name `uid` among their owners.
    pub fn dependents(&self, uid: &str) -> Vec<ObjectKey> {
        self.dependents
            .get(uid)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Moves an object's entries in the owner index from its old owners to its new ones.
    fn index_owners(&mut self, before: Option<&Object>, after: Option<&Object>) {
        if let Some(old) = before {
            for uid in &old.owner_uids {
                if let Some(keys) = self.dependents.get_mut(uid) {
                    keys.remove(&old.key);
                    if keys.is_empty() {
                        self.dependents.remove(uid);
                    }
                }
            }
        }
        if let Some(new) = after {
            for uid in &new.owner_uids {
                self.dependents
                    .entry(uid.clone())
                    .or_default()
                    .insert(new.key.clone());
            }
        }
    }

    fn apply(&mut self, event: Arc<Event>) {
        let after = (event.kind != EventType::Deleted).then_some(&*event.object);
        self.index_owners(event.previous.as_deref(), after);
        let key = &event.object.key;
        let map = self.objects.entry(key.resource).or_default();
        let slot = (key.namespace.clone(), key.name.clone());
        match event.kind {
            EventType::Deleted => {
                map.remove(&slot);
            }
            _ => {
                map.insert(slot, event.object.clone());
            }
        }
        self.resource_version = event.resource_version();
        self.history.push_back(event);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.resource_version();
            }
        }
    }
}

/// A started watch: the events already committed after the requested version, then a live feed.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The resourceVersion the subscription starts from (everything at or below it is excluded).
    pub start: u64,
}

pub struct Store {
    state: Arc<RwLock<State>>,
    /// `None` only while dropping: closing it lets the writer finish its queue and stop.
    writes: Option<mpsc::UnboundedSender<Pending>>,
    events: broadcast::Sender<Arc<Event>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Store {
    /// Closes the store: the writer commits what is queued, then releases the database, so the
    /// same directory can be opened again as soon as this returns.
    fn drop(&mut self) {
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` and loads every object into memory.
    pub fn open(dir: &Path, history_limit: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("creating {}: {e}", dir.display())))?;
        // Every object is also held in memory, so redb's page cache only has to serve writes.
        let db = Database::builder()
            .set_cache_size(REDB_CACHE)
            .create(dir.join("store.redb"))
            .map_err(|e| {
                StoreError::Storage(format!("opening {}: {e}", dir.join("store.redb").display()))
            })?;
        let mut state = State {
            objects: HashMap::new(),
            resource_version: 0,
            history: VecDeque::new(),
            compacted: 0,
            history_limit: history_limit.max(1),
            dependents: HashMap::new(),
        };
        {
            let txn = db.begin_read().map_err(storage_err)?;
            match txn.open_table(META) {
                Ok(meta) => {
                    state.resource_version = meta
                        .get(META_RV)
                        .map_err(storage_err)?
                        .map(|v| v.value())
                        .unwrap_or(0);
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(storage_err(e)),
            }
            match txn.open_table(OBJECTS) {
                Ok(table) => {
                    for entry in table.iter().map_err(storage_err)? {
                        let (k, v) = entry.map_err(storage_err)?;
                        let Some(key) = ObjectKey::parse_db_key(k.value()) else {
                            tracing::warn!(
                                key = k.value(),
                                "skipping stored object of unknown kind"
                            );
                            continue;
                        };
                        let json = Bytes::copy_from_slice(v.value());
                        let value: Value = serde_json::from_slice(&json).map_err(storage_err)?;
                        let rv = value["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        let object = Arc::new(Object::with_json(key.clone(), rv, &value, json));
                        state.index_owners(None, Some(&object));
                        state
                            .objects
                            .entry(key.resource)
                            .or_default()
                            .insert((key.namespace, key.name), object);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(storage_err(e)),
            }
        }
        // History does not survive a restart: watches from before it get 410 and relist.
        state.compacted = state.resource_version;
        let state = Arc::new(RwLock::new(state));
        let (events, _) = broadcast::channel(64 * 1024);
        let (writes, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db,
            state: state.clone(),
            events: events.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(storage_err)?;
        Ok(Self {
            state,
            writes: Some(writes),
            events,
            writer: Some(writer),
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        // A poisoned lock means the writer panicked mid-apply; the data on disk is still whole,
        // and readers may keep serving what memory holds.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Object>> {
        self.read().get(key).cloned()
    }

    /// Commits one write durably; returns the stored object (for a delete, the last state with
    /// the deletion's resourceVersion).
    pub async fn write(&self, write: Write) -> Result<Arc<Object>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(Pending { write, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Starts a watch after `since`. The history lookup and the subscription happen under one
    /// lock, so no event falls between the backlog and the live feed.
    pub fn subscribe(&self, since: u64) -> Result<Subscription, StoreError> {
        let state = self.read();
        let backlog = state.events_since(since)?;
        Ok(Subscription {
            backlog,
            live: self.events.subscribe(),
            start: since,
        })
    }

    /// A snapshot of one kind plus a subscription starting exactly after it.
    pub fn snapshot_and_subscribe(
        &self,
        resource: ResourceId,
        namespace: Option<&str>,
    ) -> (Vec<Arc<Object>>, Subscription) {
        let state = self.read();
        let objects = state.list(resource, namespace).cloned().collect();
        let sub = Subscription {
            backlog: Vec::new(),
            live: self.events.subscribe(),
            start: state.resource_version,
        };
        (objects, sub)
    }
}

struct Writer {
    db: Database,
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<Arc<Event>>,
}

impl Writer {
    fn run(self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&self, group: Vec<Pending>) {
        let mut rv = self.read_state().resource_version;
        // What this group has written so far, so later writes in it see earlier ones.
        let mut overlay: HashMap<ObjectKey, Option<Arc<Object>>> = HashMap::new();
        let mut outcomes: Vec<(oneshot::Sender<_>, Result<Arc<Event>, StoreError>)> =
            Vec::with_capacity(group.len());
        let txn = match self.db.begin_write() {
            Ok(t) => t,
            Err(e) => return fail_all(group, storage_err(e)),
        };
        let table_result = (|| -> Result<(), StoreError> {
            let mut table = txn.open_table(OBJECTS).map_err(storage_err)?;
            for Pending { write, reply } in group {
                let current = match overlay.get(write.key()) {
                    Some(o) => o.clone(),
                    None => self.read_state().get(write.key()).cloned(),
                };
                let result = prepare(write, current.as_ref(), rv + 1);
                if let Ok(event) = &result {
                    rv += 1;
                    let key = &event.object.key;
                    let db_key = key.db_key();
                    match event.kind {
                        EventType::Deleted => {
                            table.remove(db_key.as_str()).map_err(storage_err)?;
                            overlay.insert(key.clone(), None);
                        }
                        _ => {
                            table
                                .insert(db_key.as_str(), event.object.json.as_ref())
                                .map_err(storage_err)?;
                            overlay.insert(key.clone(), Some(event.object.clone()));
                        }
                    }
                }
                outcomes.push((reply, result));
            }
            let mut meta = txn.open_table(META).map_err(storage_err)?;
            meta.insert(META_RV, rv).map_err(storage_err)?;
            Ok(())
        })();
        let committed = table_result.and_then(|()| txn.commit().map_err(storage_err));
        if let Err(e) = committed {
            tracing::error!(error = %e, "store commit failed");
            for (reply, _) in outcomes {
                let _ = reply.send(Err(StoreError::Storage(e.to_string())));
            }
            return;
        }
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (_, result) in &outcomes {
                if let Ok(event) = result {
                    state.apply(event.clone());
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(event.clone());
                }
            }
        }
        for (reply, result) in outcomes {
            let _ = reply.send(result.map(|e| e.object.clone()));
        }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn fail_all(group: Vec<Pending>, error: StoreError) {
    let message = error.to_string();
    for p in group {
        let _ = p.reply.send(Err(StoreError::Storage(message.clone())));
    }
}

fn check(precondition: Precondition, current: Option<&Arc<Object>>) -> Result<(), StoreError> {
    match (precondition, current) {
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists),
        (Precondition::ResourceVersion(_), None) => Err(StoreError::NotFound),
        (Precondition::ResourceVersion(want), Some(cur)) if cur.resource_version == want => Ok(()),
        (Precondition::ResourceVersion(_), Some(_)) => Err(StoreError::Conflict),
    }
}

/// Turns a write into the event it will commit, with `rv` stamped into the object.
fn prepare(write: Write, current: Option<&Arc<Object>>, rv: u64) -> Result<Arc<Event>, StoreError> {
    match write {
        Write::Put {
            key,
            mut value,
            precondition,
        } => {
            check(precondition, current)?;
            value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
            let object = Arc::new(Object::new(key, rv, &value)?);
            Ok(Arc::new(Event {
                kind: if current.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                },
                object,
                previous: current.cloned(),
            }))
        }
        Write::Delete { key, precondition } => {
            let current = current.ok_or(StoreError::NotFound)?;
            if let Some(p) = precondition {
                check(p, Some(current))?;
            }
            let mut value = current.value();
            value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
            let object = Arc::new(Object::new(key, rv, &value)?);
            Ok(Arc::new(Event {
                kind: EventType::Deleted,
                object,
                previous: Some(current.clone()),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            resource: crate::registry::SERVICES,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn put(name: &str, owners: &[&str], precondition: Precondition) -> Write {
        let refs: Vec<Value> = owners.iter().map(|u| json!({"uid": u})).collect();
        Write::Put {
            key: key(name),
            value: json!({"metadata": {"name": name, "ownerReferences": refs}}),
            precondition,
        }
    }

    #[tokio::test]
    async fn owner_index_follows_writes_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        store
            .write(put("a", &["u1"], Precondition::Absent))
            .await
            .unwrap();
        let b = store
            .write(put("b", &["u1", "u2"], Precondition::Absent))
            .await
            .unwrap();
        assert_eq!(store.read().dependents("u1"), [key("a"), key("b")]);
        // b drops its owner u1.
        store
            .write(put(
                "b",
                &["u2"],
                Precondition::ResourceVersion(b.resource_version),
            ))
            .await
            .unwrap();
        assert_eq!(store.read().dependents("u1"), [key("a")]);
        store
            .write(Write::Delete {
                key: key("a"),
                precondition: None,
            })
            .await
            .unwrap();
        assert!(store.read().dependents("u1").is_empty());
        drop(store);
        let reopened = Store::open(dir.path(), 100).unwrap();
        assert_eq!(reopened.read().dependents("u2"), [key("b")]);
        assert!(reopened.read().dependents("u1").is_empty());
    }
}
