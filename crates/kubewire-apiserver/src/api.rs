//! The REST semantics of kube-apiserver over the [`Store`]: get, list, watch, create, update,
//! patch, delete and deletecollection, the `status` subresource, and Pod `binding`.
//!
//! Independent of HTTP: a request arrives as an [`ApiRequest`] and leaves as a [`Reply`]; the
//! server module does the transport, TLS and authentication.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::admission::{self, AdmitError};
use crate::fields::FieldSelector;
use crate::patch::{self, PatchType};
use crate::registry::{ResourceId, ResourceType, StatusPolicy};
use crate::request::ResourceTarget;
use crate::service::ServiceAllocators;
use crate::status::ApiError;
use crate::store::{Event, EventType, Object, ObjectKey, Precondition, Store, StoreError, Write};
use crate::table;
use kubewire_api::selector::Selector;

/// How long a `continue` token stays valid, like etcd's default compaction interval.
const CONTINUE_TTL: Duration = Duration::from_secs(300);
const MAX_CONTINUES: usize = 1024;
/// How often an idle watch with `allowWatchBookmarks` gets a bookmark.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// Default watch lifetime when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Retries of a patch or unconditional update that lost a race with another writer.
const MAX_RETRIES: usize = 16;

/// A request, as the HTTP layer hands it over.
pub struct ApiRequest {
    pub method: Method,
    pub target: ResourceTarget,
    pub query: HashMap<String, String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub body: Bytes,
}

pub enum Reply {
    Json {
        code: u16,
        body: Bytes,
        warnings: Vec<String>,
    },
    /// A watch: newline-delimited JSON events until the channel closes.
    Stream(mpsc::Receiver<Bytes>),
}

impl Reply {
    fn json(code: u16, body: impl Into<Bytes>) -> Self {
        Reply::Json {
            code,
            body: body.into(),
            warnings: Vec::new(),
        }
    }
}

pub type ApiResult = Result<Reply, ApiError>;

struct ContinueState {
    created: Instant,
    resource_version: u64,
    rest: Vec<Arc<Object>>,
}

pub struct Api {
    pub(crate) store: Store,
    ctx: admission::Context,
    pub(crate) allocators: Mutex<ServiceAllocators>,
    continues: Mutex<HashMap<String, ContinueState>>,
    rng: Mutex<StdRng>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `fieldValidation`: what to do with fields the kind does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

struct WriteOptions {
    dry_run: bool,
    field_validation: FieldValidation,
}

impl WriteOptions {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let field_validation = match q.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be one of Ignore, Warn, Strict (got {other:?})"
                )));
            }
        };
        let dry_run = match q.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun must be All (got {other:?})"
                )));
            }
        };
        Ok(Self {
            dry_run,
            field_validation,
        })
    }
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid(rng: &mut StdRng) -> String {
    use rand::Rng;
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn generate_suffix(rng: &mut StdRng) -> String {
    use rand::Rng;
    // The alphabet of apimachinery's rand.String: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn store_error(e: StoreError, r: &ResourceType, name: &str) -> ApiError {
    match e {
        StoreError::AlreadyExists => ApiError::already_exists(r, name),
        StoreError::NotFound => ApiError::not_found(r, name),
        StoreError::Conflict => ApiError::conflict(r, name, &e.to_string()),
        StoreError::Expired { .. } => ApiError::gone(e.to_string()),
        StoreError::Storage(_) | StoreError::Closed => ApiError::internal(e.to_string()),
    }
}

fn admit_error(e: AdmitError, r: &ResourceType, name: &str) -> ApiError {
    match e {
        AdmitError::Decode(msg) => ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {msg}",
            r.kind, r.version, r.kind
        )),
        AdmitError::Invalid(errors) => ApiError::invalid(r, name, &errors),
    }
}

/// Decodes a request body: JSON, or YAML (which kubectl may send for some verbs).
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.unwrap_or("application/json");
    if ct.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))
    } else if ct.starts_with("application/vnd.kubernetes.protobuf") {
        Err(ApiError::unsupported_media_type(ct))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v["metadata"][field].as_str()
}

fn to_bytes(v: &Value) -> Result<Bytes, ApiError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn unknown_field_messages(input: &Value, decoded: &Value) -> Vec<String> {
    admission::unknown_fields(input, decoded)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect()
}

/// The part of an object that bumps `metadata.generation` when it changes.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl Api {
    pub fn new(store: Store, ctx: admission::Context, allocators: ServiceAllocators) -> Self {
        Self {
            store,
            ctx,
            allocators: Mutex::new(allocators),
            continues: Mutex::new(HashMap::new()),
            rng: Mutex::new(StdRng::from_os_rng()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn handle(&self, req: ApiRequest) -> ApiResult {
        let t = &req.target;
        let info = t.resource.info();
        match (&req.method, t.name.as_deref(), t.subresource.as_deref()) {
            (&Method::GET, None, None) => {
                if matches!(
                    req.query.get("watch").map(String::as_str),
                    Some("true" | "1")
                ) {
                    self.watch(&req)
                } else {
                    self.list(&req)
                }
            }
            (&Method::GET, Some(name), None | Some("status")) => self.get(&req, name),
            (&Method::GET, Some(name), Some("scale")) if info.has_scale() => {
                let obj = self.current(t, name)?;
                Ok(Reply::json(200, to_bytes(&scale_of(&obj.value()))?))
            }
            (&Method::PUT | &Method::PATCH, Some(name), Some("scale")) if info.has_scale() => {
                self.update_scale(&req, name).await
            }
            (&Method::POST, None, None) => self.create(&req).await,
            (&Method::POST, Some(name), Some("binding")) if info.plural == "pods" => {
                self.bind(&req, name).await
            }
            (&Method::PUT, Some(name), sub @ (None | Some("status") | Some("finalize"))) => {
                self.update(&req, name, sub).await
            }
            (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
                self.patch(&req, name, sub).await
            }
            (&Method::DELETE, Some(name), None) => self.delete(&req, name).await,
            (&Method::DELETE, None, None) => self.delete_collection(&req).await,
            (_, _, Some(sub)) if !matches!(sub, "status" | "binding" | "finalize" | "scale") => {
                Err(ApiError::path_not_found())
            }
            (m, _, _) => Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on this path"
            ))),
        }
    }

    fn key(&self, t: &ResourceTarget, name: &str) -> ObjectKey {
        ObjectKey {
            resource: t.resource,
            namespace: t.namespace.clone().unwrap_or_default(),
            name: name.to_string(),
        }
    }

    fn current(&self, t: &ResourceTarget, name: &str) -> Result<Arc<Object>, ApiError> {
        self.store
            .get(&self.key(t, name))
            .ok_or_else(|| ApiError::not_found(t.resource.info(), name))
    }

    fn get(&self, req: &ApiRequest, name: &str) -> ApiResult {
        let obj = self.current(&req.target, name)?;
        if table::wants_table(req.accept.as_deref()) {
            let t = table::render(
                req.target.resource,
                std::slice::from_ref(&obj),
                obj.resource_version,
                &req.query,
            )?;
            return Ok(Reply::json(200, to_bytes(&t)?));
        }
        Ok(Reply::json(200, obj.json.clone()))
    }

    fn selectors(
        q: &HashMap<String, String>,
        r: ResourceId,
    ) -> Result<(Selector, FieldSelector), ApiError> {
        let labels = Selector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields =
            FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""), r)
                .map_err(ApiError::bad_request)?;
        Ok((labels, fields))
    }

    fn list(&self, req: &ApiRequest) -> ApiResult {
        let t = &req.target;
        let (labels, fields) = Self::selectors(&req.query, t.resource)?;
        let limit: usize = match req.query.get("limit") {
            Some(l) => l
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        };
        let (rv, mut items) = match req.query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let mut cache = lock(&self.continues);
                let state = cache.remove(token).ok_or_else(|| {
                    ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
                })?;
                (state.resource_version, state.rest)
            }
            None => {
                let state = self.store.read();
                let items: Vec<Arc<Object>> = state
                    .list(t.resource, t.namespace.as_deref())
                    .filter(|o| labels.matches(&o.labels) && fields.matches(o))
                    .cloned()
                    .collect();
                (state.resource_version(), items)
            }
        };
        let mut continue_token = None;
        let mut remaining = None;
        if limit > 0 && items.len() > limit {
            let rest = items.split_off(limit);
            remaining = Some(rest.len());
            let token = {
                let mut rng = lock(&self.rng);
                new_uid(&mut rng)
            };
            let mut cache = lock(&self.continues);
            cache.retain(|_, s| s.created.elapsed() < CONTINUE_TTL);
            if cache.len() >= MAX_CONTINUES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
            cache.insert(
                token.clone(),
                ContinueState {
                    created: Instant::now(),
                    resource_version: rv,
                    rest,
                },
            );
            continue_token = Some(token);
        }
        if table::wants_table(req.accept.as_deref()) {
            let mut t = table::render(t.resource, &items, rv, &req.query)?;
            if let Some(c) = continue_token {
                t["metadata"]["continue"] = json!(c);
            }
            return Ok(Reply::json(200, to_bytes(&t)?));
        }
        Ok(Reply::json(
            200,
            list_body(
                t.resource.info(),
                rv,
                items.iter().map(|o| o.json.as_ref()),
                continue_token,
                remaining,
            ),
        ))
    }

    fn watch(&self, req: &ApiRequest) -> ApiResult {
        let t = req.target.clone();
        let (labels, fields) = Self::selectors(&req.query, t.resource)?;
        let q = &req.query;
        let bookmarks = q
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true" || v == "1");
        let rv_param = q.get("resourceVersion").map(String::as_str).unwrap_or("");
        let initial_events = match q.get("sendInitialEvents").map(String::as_str) {
            Some("true") => true,
            Some("false") => false,
            _ => rv_param.is_empty() || rv_param == "0",
        };
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_WATCH_TIMEOUT);
        let as_table = table::wants_table(req.accept.as_deref());
        let filter = WatchFilter {
            target: t.clone(),
            labels,
            fields,
        };
        let (tx, rx) = mpsc::channel::<Bytes>(1024);

        let (initial, mut sub) = if initial_events {
            let (objects, sub) = self
                .store
                .snapshot_and_subscribe(t.resource, t.namespace.as_deref());
            let objects: Vec<_> = objects
                .into_iter()
                .filter(|o| filter.object_matches(o))
                .collect();
            (objects, sub)
        } else {
            let since: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}"))
            })?;
            match self.store.subscribe(since) {
                Ok(sub) => (Vec::new(), sub),
                Err(StoreError::Expired { requested, oldest }) => {
                    // As kube-apiserver: the watch starts, then ends with an ERROR event 410.
                    let status =
                        ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
                            .to_status();
                    let line = watch_line("ERROR", &to_bytes(&status)?);
                    let _ = tx.try_send(line);
                    return Ok(Reply::Stream(rx));
                }
                Err(e) => return Err(store_error(e, t.resource.info(), "")),
            }
        };
        let info = t.resource.info();
        let mut last_rv = sub.start;
        let resource = t.resource;
        let query = req.query.clone();
        tokio::spawn(async move {
            let encode = |kind: &str, obj: &Arc<Object>| -> Option<Bytes> {
                if as_table {
                    let t = table::render(
                        resource,
                        std::slice::from_ref(obj),
                        obj.resource_version,
                        &query,
                    )
                    .ok()?;
                    Some(watch_line(kind, &serde_json::to_vec(&t).ok()?.into()))
                } else {
                    Some(watch_line(kind, &obj.json))
                }
            };
            for obj in &initial {
                let Some(line) = encode("ADDED", obj) else {
                    continue;
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if initial_events && q_bool_true(&query, "sendInitialEvents") && bookmarks {
                let b = bookmark(info, last_rv, true);
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            for event in std::mem::take(&mut sub.backlog) {
                last_rv = event.resource_version();
                if let Some((kind, obj)) = filter.event_view(&event) {
                    let Some(line) = encode(kind, obj) else {
                        continue;
                    };
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                    _ = ticker.tick(), if bookmarks => {
                        if tx.send(bookmark(info, last_rv, false)).await.is_err() { return; }
                    }
                    got = sub.live.recv() => {
                        let event = match got {
                            Ok(e) => e,
                            // Too slow to keep up: end the watch; the client resumes or relists.
                            Err(_) => return,
                        };
                        if event.resource_version() <= last_rv {
                            continue;
                        }
                        last_rv = event.resource_version();
                        if let Some((kind, obj)) = filter.event_view(&event) {
                            let Some(line) = encode(kind, obj) else { continue };
                            if tx.send(line).await.is_err() { return; }
                        }
                    }
                }
            }
        });
        Ok(Reply::Stream(rx))
    }

    fn check_namespace(&self, t: &ResourceTarget) -> Result<(), ApiError> {
        let info = t.resource.info();
        let Some(ns) = t.namespace.as_deref() else {
            return if info.namespaced {
                Err(ApiError::bad_request(
                    "the namespace of the request is required",
                ))
            } else {
                Ok(())
            };
        };
        let ns_key = ObjectKey {
            resource: crate::NAMESPACES,
            namespace: String::new(),
            name: ns.to_string(),
        };
        let Some(namespace) = self.store.get(&ns_key) else {
            return Err(ApiError::not_found(crate::NAMESPACES.info(), ns));
        };
        if namespace.value()["metadata"]["deletionTimestamp"].is_string() {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Checks that body `apiVersion`/`kind`/`namespace` agree with the URL, then fills them in.
    fn align_with_target(&self, t: &ResourceTarget, obj: &mut Value) -> Result<(), ApiError> {
        let info = t.resource.info();
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if let Some(kind) = obj["kind"].as_str().filter(|k| !k.is_empty())
            && kind != info.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the body ({kind}) does not match the request ({})",
                info.kind
            )));
        }
        if let Some(av) = obj["apiVersion"].as_str().filter(|k| !k.is_empty())
            && av != info.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version of the body ({av}) does not match the request ({})",
                info.api_version()
            )));
        }
        // The server writes into these before the typed decode sees the body: refuse any other
        // shape here, as kube's decoder would, rather than coerce it.
        for field in ["metadata", "spec", "status"] {
            if !matches!(obj[field], Value::Object(_) | Value::Null) {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {field} must be an object",
                    info.kind, info.version, info.kind
                )));
            }
        }
        obj["kind"] = json!(info.kind);
        obj["apiVersion"] = json!(info.api_version());
        if obj["metadata"].is_null() {
            obj["metadata"] = json!({});
        }
        match (
            &t.namespace,
            meta_str(obj, "namespace").filter(|n| !n.is_empty()),
        ) {
            (Some(url), Some(body)) if url != body => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(url), _) => obj["metadata"]["namespace"] = json!(url),
            (None, _) => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("namespace");
                }
            }
        }
        Ok(())
    }

    fn admit(
        &self,
        r: ResourceId,
        name: &str,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<Vec<String>, ApiError> {
        let info = r.info();
        let input = obj.clone();
        (info.admit)(obj, old, &self.ctx).map_err(|e| admit_error(e, info, name))?;
        // A typed struct may serialize another served version of its kind (gateway-api's
        // ReferenceGrant is v1; we serve v1beta1): the stored object keeps the requested one.
        obj["apiVersion"] = json!(info.api_version());
        let unknown = match opts.field_validation {
            FieldValidation::Ignore => Vec::new(),
            _ => unknown_field_messages(&input, obj),
        };
        if opts.field_validation == FieldValidation::Strict && !unknown.is_empty() {
            let info = r.info();
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                info.kind,
                info.version,
                info.kind,
                unknown.join(", ")
            )));
        }
        Ok(unknown)
    }

    async fn create(&self, req: &ApiRequest) -> ApiResult {
        let t = &req.target;
        let info = t.resource.info();
        let opts = WriteOptions::from_query(&req.query)?;
        let mut obj = decode_body(req.content_type.as_deref(), &req.body)?;
        self.align_with_target(t, &mut obj)?;
        self.check_namespace(t)?;
        {
            let mut rng = lock(&self.rng);
            let meta = &mut obj["metadata"];
            if meta["name"].as_str().is_none_or(str::is_empty)
                && let Some(prefix) = meta["generateName"].as_str().filter(|p| !p.is_empty())
            {
                meta["name"] = json!(format!("{prefix}{}", generate_suffix(&mut rng)));
            }
            meta["uid"] = json!(new_uid(&mut rng));
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            meta.remove(f);
        }
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        prepare_status_on_create(info, &mut obj);
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        let warnings = self.admit(t.resource, &name, &mut obj, None, &opts)?;
        let key = self.key(t, &name);
        // Answer 409 before reserving addresses for an object that cannot be stored anyway.
        if self.store.get(&key).is_some() {
            return Err(ApiError::already_exists(info, &name));
        }
        let allocation = crate::service::allocate(self, t.resource, &mut obj, None)?;
        if opts.dry_run {
            allocation.rollback(self);
            return Ok(Reply::Json {
                code: 201,
                body: to_bytes(&obj)?,
                warnings,
            });
        }
        match self
            .store
            .write(Write::Put {
                key,
                value: obj,
                precondition: Precondition::Absent,
            })
            .await
        {
            Ok(stored) => Ok(Reply::Json {
                code: 201,
                body: stored.json.clone(),
                warnings,
            }),
            Err(e) => {
                allocation.rollback(self);
                Err(store_error(e, info, &name))
            }
        }
    }

    async fn bind(&self, req: &ApiRequest, name: &str) -> ApiResult {
        let binding = decode_body(req.content_type.as_deref(), &req.body)?;
        let node = binding["target"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("binding target.name is required"))?
            .to_string();
        let t = &req.target;
        let obj = self.current(t, name)?;
        let mut value = obj.value();
        if value["metadata"]["deletionTimestamp"].is_string() {
            return Err(ApiError::conflict(
                t.resource.info(),
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if value["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                t.resource.info(),
                name,
                &format!(
                    "pod {name} is already assigned to node {:?}",
                    value["spec"]["nodeName"].as_str().unwrap_or_default()
                ),
            ));
        }
        value["spec"]["nodeName"] = json!(node);
        self.store
            .write(Write::Put {
                key: self.key(t, name),
                value,
                precondition: Precondition::ResourceVersion(obj.resource_version),
            })
            .await
            .map_err(|e| store_error(e, t.resource.info(), name))?;
        Ok(Reply::json(
            201,
            to_bytes(
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            )?,
        ))
    }

    async fn update(&self, req: &ApiRequest, name: &str, sub: Option<&str>) -> ApiResult {
        let mut body = decode_body(req.content_type.as_deref(), &req.body)?;
        self.align_with_target(&req.target, &mut body)?;
        match meta_str(&body, "name") {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => body["metadata"]["name"] = json!(name),
        }
        let requested_rv = match meta_str(&body, "resourceVersion").filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
            ),
            None => None,
        };
        self.guaranteed_update(req, name, sub, requested_rv, |_current| Ok(body.clone()))
            .await
    }

    async fn patch(&self, req: &ApiRequest, name: &str, sub: Option<&str>) -> ApiResult {
        let ct = req.content_type.as_deref().unwrap_or("");
        let kind =
            PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
        let info = req.target.resource.info();
        if kind == PatchType::Strategic && !info.group_is_builtin() {
            return Err(ApiError::unsupported_media_type(ct));
        }
        let patch_doc: Value = serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
        // A resourceVersion inside the patch is a precondition, as upstream.
        let requested_rv = patch_doc["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok());
        self.guaranteed_update(req, name, sub, requested_rv, |current| {
            let mut v = current.clone();
            patch::apply_patch(&mut v, &patch_doc, kind).map_err(|e| match e {
                patch::PatchError::JsonPatchFailed(m) => ApiError::invalid(
                    info,
                    name,
                    &[admission::FieldError {
                        field: "".into(),
                        kind: kubewire_validation::ErrorKind::Invalid,
                        bad_value: None,
                        detail: m,
                    }],
                ),
                other => ApiError::bad_request(other.to_string()),
            })?;
            Ok(v)
        })
        .await
    }

    /// `scale` subresource: reads and writes `spec.replicas` through an `autoscaling/v1 Scale`.
    async fn update_scale(&self, req: &ApiRequest, name: &str) -> ApiResult {
        let body = if req.method == Method::PATCH {
            let ct = req.content_type.as_deref().unwrap_or("");
            let kind = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let patch_doc: Value = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
            let mut scale = scale_of(&self.current(&req.target, name)?.value());
            patch::apply_patch(&mut scale, &patch_doc, kind)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            scale
        } else {
            decode_body(req.content_type.as_deref(), &req.body)?
        };
        let replicas = body["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.replicas must be a number"))?;
        let requested_rv = meta_str(&body, "resourceVersion").and_then(|s| s.parse().ok());
        let reply = self
            .guaranteed_update(req, name, None, requested_rv, |current| {
                let mut v = current.clone();
                v["spec"]["replicas"] = json!(replicas);
                Ok(v)
            })
            .await?;
        match reply {
            Reply::Json { body, warnings, .. } => {
                let v: Value =
                    serde_json::from_slice(&body).map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(Reply::Json {
                    code: 200,
                    body: to_bytes(&scale_of(&v))?,
                    warnings,
                })
            }
            stream => Ok(stream),
        }
    }

    /// Read the current object, compute the new one, write it if nobody wrote in between;
    /// retry on a lost race unless the client pinned a resourceVersion.
    async fn guaranteed_update(
        &self,
        req: &ApiRequest,
        name: &str,
        sub: Option<&str>,
        requested_rv: Option<u64>,
        mutate: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> ApiResult {
        let t = &req.target;
        let info = t.resource.info();
        let opts = WriteOptions::from_query(&req.query)?;
        for _ in 0..MAX_RETRIES {
            let current = self.current(t, name)?;
            if let Some(rv) = requested_rv
                && rv != current.resource_version
            {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &StoreError::Conflict.to_string(),
                ));
            }
            let old = current.value();
            let mut new = mutate(&old)?;
            self.align_with_target(t, &mut new)?;
            if meta_str(&new, "name") != Some(name) {
                return Err(ApiError::bad_request(
                    "the name of an object cannot be changed",
                ));
            }
            carry_system_fields(info, sub, &old, &mut new);
            let warnings = self.admit(t.resource, name, &mut new, Some(&old), &opts)?;
            if spec_part(&new) != spec_part(&old) {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                new["metadata"]["generation"] = json!(g + 1);
            }
            let allocation = crate::service::allocate(self, t.resource, &mut new, Some(&old))?;
            if opts.dry_run {
                allocation.rollback(self);
                return Ok(Reply::Json {
                    code: 200,
                    body: to_bytes(&new)?,
                    warnings,
                });
            }
            let finished = is_deletion_finished(&new);
            let write = Write::Put {
                key: self.key(t, name),
                value: new,
                precondition: Precondition::ResourceVersion(current.resource_version),
            };
            match self.store.write(write).await {
                Ok(stored) => {
                    allocation.commit(self);
                    if finished {
                        // The last finalizer is gone from an object being deleted: remove it.
                        return self.remove(t, name, &stored).await;
                    }
                    return Ok(Reply::Json {
                        code: 200,
                        body: stored.json.clone(),
                        warnings,
                    });
                }
                Err(StoreError::Conflict) if requested_rv.is_none() => {
                    allocation.rollback(self);
                    continue;
                }
                Err(e) => {
                    allocation.rollback(self);
                    return Err(store_error(e, info, name));
                }
            }
        }
        Err(ApiError::conflict(
            info,
            name,
            "too many concurrent writers, try again",
        ))
    }

    async fn remove(&self, t: &ResourceTarget, name: &str, current: &Arc<Object>) -> ApiResult {
        let info = t.resource.info();
        let deleted = self
            .store
            .write(Write::Delete {
                key: self.key(t, name),
                precondition: Some(Precondition::ResourceVersion(current.resource_version)),
            })
            .await
            .map_err(|e| store_error(e, info, name))?;
        crate::service::release_all(self, t.resource, &deleted.value());
        Ok(Reply::json(200, deleted.json.clone()))
    }

    async fn delete(&self, req: &ApiRequest, name: &str) -> ApiResult {
        let t = &req.target;
        let info = t.resource.info();
        let options = if req.body.is_empty() {
            json!({})
        } else {
            decode_body(req.content_type.as_deref(), &req.body)?
        };
        let grace: Option<i64> = req
            .query
            .get("gracePeriodSeconds")
            .and_then(|s| s.parse().ok())
            .or_else(|| options["gracePeriodSeconds"].as_i64());
        let dry_run = req.query.get("dryRun").is_some_and(|v| v == "All")
            || options["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        let orphan = req.query.get("propagationPolicy").map(String::as_str) == Some("Orphan")
            || options["propagationPolicy"] == "Orphan"
            || options["orphanDependents"] == true;
        for _ in 0..MAX_RETRIES {
            let current = self.current(t, name)?;
            let mut value = current.value();
            if let Some(uid) = options["preconditions"]["uid"].as_str()
                && meta_str(&value, "uid") != Some(uid)
            {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&value, "uid").unwrap_or("")
                    ),
                ));
            }
            if let Some(rv) = options["preconditions"]["resourceVersion"].as_str()
                && meta_str(&value, "resourceVersion") != Some(rv)
            {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta_str(&value, "resourceVersion").unwrap_or("")
                    ),
                ));
            }
            if dry_run {
                return Ok(Reply::json(200, current.json.clone()));
            }
            if orphan {
                crate::lifecycle::orphan_dependents(self, &current.uid).await;
            }
            let graceful = match graceful_period(info, &value, grace) {
                Some(g) => Some(g),
                None if has_finalizers(&value) => Some(0),
                None => None,
            };
            let Some(grace) = graceful else {
                return self.remove(t, name, &current).await;
            };
            let already = value["metadata"]["deletionTimestamp"].is_string();
            let prior_grace = value["metadata"]["deletionGracePeriodSeconds"].as_i64();
            if already && prior_grace.is_some_and(|p| p <= grace) {
                // Nothing to shorten: answer with the object as it is.
                return Ok(Reply::json(200, current.json.clone()));
            }
            if grace == 0 && !has_finalizers(&value) {
                return self.remove(t, name, &current).await;
            }
            let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
            value["metadata"]["deletionTimestamp"] =
                json!(deadline.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            value["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            if info.kind == "Namespace" {
                value["status"]["phase"] = json!("Terminating");
            }
            let write = Write::Put {
                key: self.key(t, name),
                value,
                precondition: Precondition::ResourceVersion(current.resource_version),
            };
            match self.store.write(write).await {
                Ok(stored) => return Ok(Reply::json(200, stored.json.clone())),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(store_error(e, info, name)),
            }
        }
        Err(ApiError::conflict(
            info,
            name,
            "too many concurrent writers, try again",
        ))
    }

    async fn delete_collection(&self, req: &ApiRequest) -> ApiResult {
        let t = &req.target;
        let (labels, fields) = Self::selectors(&req.query, t.resource)?;
        let names: Vec<(String, String)> = self
            .store
            .read()
            .list(t.resource, t.namespace.as_deref())
            .filter(|o| labels.matches(&o.labels) && fields.matches(o))
            .map(|o| (o.key.namespace.clone(), o.key.name.clone()))
            .collect();
        let mut deleted = Vec::new();
        for (ns, name) in names {
            let one = ApiRequest {
                method: Method::DELETE,
                target: ResourceTarget {
                    resource: t.resource,
                    namespace: (!ns.is_empty()).then_some(ns),
                    name: Some(name.clone()),
                    subresource: None,
                },
                query: req.query.clone(),
                content_type: req.content_type.clone(),
                accept: None,
                body: req.body.clone(),
            };
            match self.delete(&one, &name).await {
                Ok(Reply::Json { body, .. }) => deleted.push(body),
                Ok(Reply::Stream(_)) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let rv = self.store.read().resource_version();
        let body = list_body(
            t.resource.info(),
            rv,
            deleted.iter().map(|b| b.as_ref()),
            None,
            None,
        );
        Ok(Reply::json(200, body))
    }
}

fn q_bool_true(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true")
}

impl ResourceType {
    /// Built-in kinds are described by Go structs with strategic-merge metadata; CRD-style kinds
    /// (Gateway API, AdminNetworkPolicy) are not, so kube refuses strategic merge for them.
    pub fn has_scale(&self) -> bool {
        self.group == "apps" && matches!(self.kind, "Deployment" | "ReplicaSet" | "StatefulSet")
    }

    pub fn group_is_builtin(&self) -> bool {
        !self.group.ends_with(".x-k8s.io")
            && !matches!(
                self.group,
                "gateway.networking.k8s.io" | "policy.networking.k8s.io"
            )
    }
}

/// The `autoscaling/v1 Scale` view of a workload.
fn scale_of(v: &Value) -> Value {
    let selector = v["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &v["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": v["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": v["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

fn has_finalizers(v: &Value) -> bool {
    v["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
        || v["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
            && v["kind"] == "Namespace"
}

/// An object being deleted whose last finalizer is gone is removed; a Pod only once its grace
/// period is over (the kubelet deletes it with grace 0 after its containers stopped).
fn is_deletion_finished(v: &Value) -> bool {
    let meta = &v["metadata"];
    meta["deletionTimestamp"].is_string()
        && !has_finalizers(v)
        && (v["kind"] != "Pod" || meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0)
}

/// The grace period a delete gets: Pods bound to a node are deleted gracefully (the kubelet
/// finishes the deletion), Namespaces always go through termination. `None` means "remove now".
fn graceful_period(info: &ResourceType, v: &Value, requested: Option<i64>) -> Option<i64> {
    match info.kind {
        "Pod"
            if v["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty()) =>
        {
            let g = requested
                .or_else(|| v["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            if g <= 0 && !has_finalizers(v) {
                None
            } else {
                Some(g.max(0))
            }
        }
        "Namespace" => Some(0),
        _ => None,
    }
}

/// Status is reset on create for kinds with a status subresource, as each kind's strategy does.
fn prepare_status_on_create(info: &ResourceType, obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    match info.status {
        StatusPolicy::Subresource => {
            m.remove("status");
        }
        StatusPolicy::SubresourceKeepOnCreate | StatusPolicy::None => {}
    }
    match info.kind {
        "Pod" => obj["status"] = json!({"phase": "Pending"}),
        "Namespace" => {
            obj["status"] = json!({"phase": "Active"});
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
        }
        _ => {}
    }
}

/// Copies what a client may not set through this verb from the stored object.
fn carry_system_fields(info: &ResourceType, sub: Option<&str>, old: &Value, new: &mut Value) {
    for f in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old["metadata"].get(f) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    match (info.has_status(), sub) {
        (true, Some("status")) => {
            // Status writes change status only.
            let status = new.get("status").cloned();
            *new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        (_, Some("finalize")) => {
            // Namespace finalize writes spec.finalizers only.
            let fin = new["spec"]["finalizers"].clone();
            *new = old.clone();
            new["spec"]["finalizers"] = fin;
        }
        (true, _) => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        },
        (false, _) => {}
    }
}

struct WatchFilter {
    target: ResourceTarget,
    labels: Selector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn object_matches(&self, o: &Object) -> bool {
        o.key.resource == self.target.resource
            && self
                .target
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == o.key.namespace)
            && self.labels.matches(&o.labels)
            && self.fields.matches(o)
    }

    /// What this watcher sees of an event: moves into or out of the selection become
    /// ADDED/DELETED, other kinds' events nothing.
    fn event_view<'a>(&self, e: &'a Event) -> Option<(&'static str, &'a Arc<Object>)> {
        if e.object.key.resource != self.target.resource {
            return None;
        }
        let now = e.kind != EventType::Deleted && self.object_matches(&e.object);
        let before = e.previous.as_ref().is_some_and(|p| self.object_matches(p));
        match (e.kind, before, now) {
            (EventType::Deleted, true, _) => Some(("DELETED", &e.object)),
            (EventType::Deleted, false, _) => None,
            (_, false, true) => Some(("ADDED", &e.object)),
            (_, true, true) => Some(("MODIFIED", &e.object)),
            (_, true, false) => Some(("DELETED", &e.object)),
            (_, false, false) => None,
        }
    }
}

fn watch_line(kind: &str, object: &Bytes) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(info: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut obj = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
    if initial_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line("BOOKMARK", &Bytes::from(obj.to_string()))
}

/// A `…List` body, built by splicing the stored JSON of each item (no re-serialization).
pub fn list_body<'a>(
    info: &ResourceType,
    rv: u64,
    items: impl IntoIterator<Item = &'a [u8]>,
    continue_token: Option<String>,
    remaining: Option<usize>,
) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let head = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        info.list_kind(),
        info.api_version(),
        meta
    );
    let mut out = head.into_bytes();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}
