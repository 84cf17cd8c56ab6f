//! What kube-controller-manager would do for the objects this server keeps on its own: the
//! built-in namespaces and the `default/kubernetes` Service, namespace termination (delete the
//! contents, then the namespace), and garbage collection of objects whose owner is gone.
//!
//! Everything here writes through [`Api::handle`], so it is admitted and allocated like any
//! client's write.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::api::{Api, ApiRequest, ApiResult, Reply};
use crate::registry::ResourceId;
use crate::request::ResourceTarget;
use crate::store::EventType;

pub const BUILTIN_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

fn resource(plural: &str, group: &str, version: &str) -> ResourceId {
    // The registry is static; these names are in it.
    ResourceId::find(group, version, plural)
        .unwrap_or_else(|| panic!("{plural} is not a served resource"))
}

impl Api {
    /// Performs a request on behalf of the server itself. Boxed: deleting can garbage-collect
    /// dependents, which deletes again.
    pub fn internal<'a>(
        &'a self,
        method: Method,
        r: ResourceId,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
        sub: Option<&'a str>,
        body: Value,
    ) -> Pin<Box<dyn Future<Output = ApiResult> + Send + 'a>> {
        let ct = if method == Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        Box::pin(self.handle(ApiRequest {
            method,
            target: ResourceTarget {
                resource: r,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                subresource: sub.map(str::to_string),
            },
            query: Default::default(),
            content_type: Some(ct.to_string()),
            accept: None,
            body: if body.is_null() {
                Bytes::new()
            } else {
                Bytes::from(body.to_string())
            },
        }))
    }
}

/// Creates the built-in namespaces and the `default/kubernetes` Service (with its Endpoints and
/// EndpointSlice when the server has an address pods can reach) if they are missing.
pub async fn ensure_builtins(
    api: &Api,
    service_cidrs: &[IpNet],
    advertise: Option<SocketAddr>,
) -> Result<(), String> {
    let namespaces = resource("namespaces", "", "v1");
    for ns in BUILTIN_NAMESPACES {
        match api
            .internal(
                Method::POST,
                namespaces,
                None,
                None,
                None,
                json!({"metadata": {"name": ns}}),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(format!("creating namespace {ns}: {e}")),
        }
    }
    let services = resource("services", "", "v1");
    let port = advertise.map_or(6443, |a| a.port());
    // KEP-2438: the kubernetes Service is dual-stack when both families are configured, and
    // holds the first address of each service range.
    let ips: Vec<String> = service_cidrs
        .iter()
        .map(|c| crate::alloc::IpAllocator::new(*c).first().to_string())
        .collect();
    let families: Vec<&str> = service_cidrs
        .iter()
        .map(|c| if c.addr().is_ipv4() { "IPv4" } else { "IPv6" })
        .collect();
    let svc = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ips.first(),
            "clusterIPs": ips,
            "ipFamilies": families,
            "ipFamilyPolicy": if families.len() > 1 { "RequireDualStack" } else { "SingleStack" },
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        }
    });
    match api
        .internal(Method::POST, services, Some("default"), None, None, svc)
        .await
    {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(format!("creating service default/kubernetes: {e}")),
    }
    let Some(addr) = advertise.filter(|a| !a.ip().is_loopback() && !a.ip().is_unspecified()) else {
        return Ok(());
    };
    let ip = addr.ip().to_string();
    let endpoints = json!({
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}],
    });
    let slice = json!({
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "kubewire-apiserver"}},
        "addressType": if addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}],
    });
    for (r, body) in [
        (resource("endpoints", "", "v1"), endpoints),
        (resource("endpointslices", "discovery.k8s.io", "v1"), slice),
    ] {
        let existing = api
            .internal(
                Method::GET,
                r,
                Some("default"),
                Some("kubernetes"),
                None,
                Value::Null,
            )
            .await;
        let result = match existing {
            Ok(_) => {
                api.internal(
                    Method::PUT,
                    r,
                    Some("default"),
                    Some("kubernetes"),
                    None,
                    body,
                )
                .await
            }
            Err(_) => {
                api.internal(Method::POST, r, Some("default"), None, None, body)
                    .await
            }
        };
        result.map_err(|e| format!("writing default/kubernetes {}: {e}", r.info().plural))?;
    }
    Ok(())
}

/// Runs namespace termination and garbage collection until the process ends.
pub async fn run(api: Arc<Api>) {
    collect_orphans(&api).await;
    let mut sub = match api.store().subscribe(api.store().read().resource_version()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "lifecycle loop could not subscribe");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => finish_terminating_namespaces(&api).await,
            got = sub.live.recv() => match got {
                Ok(event) => {
                    if event.kind == EventType::Deleted && !event.object.uid.is_empty() {
                        delete_dependents(&api, &event.object.uid).await;
                    }
                    if event.object.key.resource.info().kind == "Namespace" && event.kind == EventType::Modified {
                        finish_terminating_namespaces(&api).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => collect_orphans(&api).await,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

fn dependents_of(api: &Api, uid: &str) -> Vec<(ResourceId, String, String)> {
    api.store()
        .read()
        .dependents(uid)
        .into_iter()
        .map(|k| (k.resource, k.namespace, k.name))
        .collect()
}

async fn delete_dependents(api: &Api, uid: &str) {
    for (r, ns, name) in dependents_of(api, uid) {
        let ns = (!ns.is_empty()).then_some(ns);
        if let Err(e) = api
            .internal(
                Method::DELETE,
                r,
                ns.as_deref(),
                Some(&name),
                None,
                Value::Null,
            )
            .await
            && e.code != 404
        {
            tracing::warn!(error = %e, kind = r.info().kind, %name, "garbage collection failed");
        }
    }
}

/// Drops the owner reference to `uid` from every dependent (`propagationPolicy: Orphan`).
pub async fn orphan_dependents(api: &Api, uid: &str) {
    for (r, ns, name) in dependents_of(api, uid) {
        let ns = (!ns.is_empty()).then_some(ns);
        let Ok(Reply::Json { body, .. }) = api
            .internal(
                Method::GET,
                r,
                ns.as_deref(),
                Some(&name),
                None,
                Value::Null,
            )
            .await
        else {
            continue;
        };
        let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        let refs: Vec<Value> = v["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["uid"] != uid)
            .collect();
        v["metadata"]["ownerReferences"] = json!(refs);
        if let Err(e) = api
            .internal(Method::PUT, r, ns.as_deref(), Some(&name), None, v)
            .await
        {
            tracing::warn!(error = %e, %name, "orphaning dependent failed");
        }
    }
}

/// Deletes objects all of whose owners are gone (e.g. deleted while the server was down).
async fn collect_orphans(api: &Api) {
    let orphans: Vec<String> = {
        let state = api.store().read();
        let uids: HashSet<&str> = ResourceId::all()
            .flat_map(|r| state.list(r, None).map(|o| o.uid.as_str()))
            .collect();
        ResourceId::all()
            .flat_map(|r| state.list(r, None))
            .flat_map(|o| o.owner_uids.iter())
            .filter(|u| !uids.contains(u.as_str()))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect()
    };
    for uid in orphans {
        delete_dependents(api, &uid).await;
    }
}

/// For each namespace being deleted: delete what is in it; once it is empty, finalize it.
async fn finish_terminating_namespaces(api: &Api) {
    let namespaces = resource("namespaces", "", "v1");
    let terminating: Vec<String> = api
        .store()
        .read()
        .list(namespaces, None)
        .filter(|o| o.value()["metadata"]["deletionTimestamp"].is_string())
        .map(|o| o.key.name.clone())
        .collect();
    for ns in terminating {
        let contents: Vec<(ResourceId, String, bool)> = {
            let state = api.store().read();
            ResourceId::all()
                .filter(|r| r.info().namespaced)
                .flat_map(|r| {
                    state
                        .list(r, Some(&ns))
                        .map(move |o| {
                            (
                                r,
                                o.key.name.clone(),
                                o.value()["metadata"]["deletionTimestamp"].is_string(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        if contents.is_empty() {
            let body = json!({"metadata": {"name": ns}, "spec": {"finalizers": []}});
            if let Err(e) = api
                .internal(
                    Method::PUT,
                    namespaces,
                    None,
                    Some(&ns),
                    Some("finalize"),
                    body,
                )
                .await
                && e.code != 404
            {
                tracing::warn!(error = %e, namespace = %ns, "finalizing namespace failed");
            }
            continue;
        }
        for (r, name, deleting) in contents {
            if deleting {
                continue;
            }
            if let Err(e) = api
                .internal(Method::DELETE, r, Some(&ns), Some(&name), None, Value::Null)
                .await
                && e.code != 404
            {
                tracing::warn!(error = %e, namespace = %ns, %name, "deleting namespace content failed");
            }
        }
    }
}
