//! The API server against kube-rs, the client every kubewire component uses: each verb on each
//! kind, watches (resume, 410, bookmarks, selectors), allocation, finalizers, auth and TLS.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kubewire_apiserver::Config;
use kubewire_apiserver::testing::TestServer;
use serde_json::{Value, json};

struct Harness {
    client: kube::Client,
    server: TestServer,
}

async fn start_with(edit: impl FnOnce(&mut Config)) -> Harness {
    let server = TestServer::start_with(edit).await;
    let client = kubewire_api::client::from_kubeconfig(&server.kubeconfig)
        .await
        .unwrap();
    Harness { client, server }
}

async fn start() -> Harness {
    start_with(|_| {}).await
}

fn api_for(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn dynamic(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

/// A minimal valid object of every served kind: (group, version, kind, plural, namespaced, body).
fn samples() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    Value,
)> {
    let pod_spec = json!({"containers": [{"name": "app", "image": "kubewire/serve"}]});
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": pod_spec});
    vec![
        ("", "v1", "Namespace", "namespaces", false, json!({})),
        (
            "",
            "v1",
            "Node",
            "nodes",
            false,
            json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}}),
        ),
        ("", "v1", "Pod", "pods", true, json!({"spec": pod_spec})),
        (
            "",
            "v1",
            "Service",
            "services",
            true,
            json!({"spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}),
        ),
        (
            "",
            "v1",
            "Endpoints",
            "endpoints",
            true,
            json!({"subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 8080}]}]}),
        ),
        (
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            true,
            json!({"data": {"a": "b"}}),
        ),
        (
            "",
            "v1",
            "Secret",
            "secrets",
            true,
            json!({"stringData": {"a": "b"}, "type": "Opaque"}),
        ),
        (
            "",
            "v1",
            "Event",
            "events",
            true,
            json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "t"}, "reason": "Test", "message": "hello", "type": "Normal"}),
        ),
        (
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            json!({"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ),
        (
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            true,
            json!({"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ),
        (
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            json!({"spec": {"serviceName": "x", "selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ),
        (
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            true,
            json!({"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ),
        (
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"]}], "ports": [{"port": 8080, "protocol": "TCP"}]}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            json!({"spec": {"podSelector": {}}}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            true,
            json!({"spec": {"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            false,
            json!({"spec": {"controller": "kubewire.io/gateway"}}),
        ),
        (
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            json!({"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
        ),
        (
            "gateway.networking.k8s.io",
            "v1",
            "GatewayClass",
            "gatewayclasses",
            false,
            json!({"spec": {"controllerName": "kubewire.io/gateway"}}),
        ),
        (
            "gateway.networking.k8s.io",
            "v1",
            "Gateway",
            "gateways",
            true,
            json!({"spec": {"gatewayClassName": "kw", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
        ),
        (
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            "httproutes",
            true,
            json!({"spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "x", "port": 80}]}]}}),
        ),
        (
            "gateway.networking.k8s.io",
            "v1",
            "GRPCRoute",
            "grpcroutes",
            true,
            json!({"spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "x", "port": 50051}]}]}}),
        ),
        (
            "gateway.networking.k8s.io",
            "v1beta1",
            "ReferenceGrant",
            "referencegrants",
            true,
            json!({"spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "other"}], "to": [{"group": "", "kind": "Service"}]}}),
        ),
        (
            "policy.networking.k8s.io",
            "v1alpha1",
            "AdminNetworkPolicy",
            "adminnetworkpolicies",
            false,
            json!({"spec": {"priority": 10, "subject": {"namespaces": {}}, "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]}}),
        ),
        (
            "policy.networking.k8s.io",
            "v1alpha1",
            "BaselineAdminNetworkPolicy",
            "baselineadminnetworkpolicies",
            false,
            json!({"spec": {"subject": {"namespaces": {}}, "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]}}),
        ),
    ]
}

#[tokio::test]
async fn every_kind_supports_every_verb() {
    let h = start().await;
    let ns: Api<Namespace> = Api::all(h.client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap(),
    )
    .await
    .unwrap();
    for (group, version, kind, plural, namespaced, body) in samples() {
        let api = api_for(
            &h.client,
            group,
            version,
            kind,
            plural,
            namespaced.then_some("t"),
        );
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        // BaselineAdminNetworkPolicy must be named "default"; others get a kind-specific name.
        let name = if kind == "BaselineAdminNetworkPolicy" {
            "default".to_string()
        } else {
            format!("{}-a", kind.to_lowercase())
        };
        let mut obj = body.clone();
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        obj["metadata"] = json!({"name": name, "labels": {"sample": "yes"}});
        let created = api
            .create(&PostParams::default(), &dynamic(obj))
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
        let rv = created.metadata.resource_version.clone().unwrap();
        assert!(created.metadata.uid.is_some(), "{kind} has a uid");

        let got = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("get {kind}: {e}"));
        assert_eq!(got.metadata.resource_version.as_deref(), Some(rv.as_str()));
        let listed = api
            .list(&ListParams::default().labels("sample=yes"))
            .await
            .unwrap();
        assert!(
            listed
                .items
                .iter()
                .any(|o| o.metadata.name.as_deref() == Some(&name)),
            "{kind} listed"
        );

        // An update from a stale copy conflicts.
        let mut stale = got.clone();
        stale.metadata.resource_version = Some("1".into());
        stale
            .metadata
            .labels
            .get_or_insert_default()
            .insert("stale".into(), "true".into());
        let err = api
            .replace(&name, &PostParams::default(), &stale)
            .await
            .unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 409),
            "{kind}: stale update gives 409, got {err:?}"
        );
        let mut fresh = got.clone();
        fresh
            .metadata
            .labels
            .get_or_insert_default()
            .insert("updated".into(), "true".into());
        let updated = api
            .replace(&name, &PostParams::default(), &fresh)
            .await
            .unwrap_or_else(|e| panic!("update {kind}: {e}"));
        assert!(
            updated
                .metadata
                .resource_version
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > rv.parse::<u64>().unwrap()
        );

        let patched = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"patched": "merge"}}})),
            )
            .await
            .unwrap();
        assert_eq!(
            patched.metadata.labels.as_ref().unwrap()["patched"],
            "merge"
        );
        let strategic = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"metadata": {"labels": {"patched": "strategic"}}})),
            )
            .await;
        if group.ends_with("networking.k8s.io")
            && (group.starts_with("gateway") || group.starts_with("policy"))
        {
            // Like CRDs upstream: no Go struct metadata, so no strategic merge.
            assert!(
                matches!(strategic, Err(kube::Error::Api(ref s)) if s.code == 415),
                "{kind}: {strategic:?}"
            );
        } else {
            assert_eq!(
                strategic.unwrap().metadata.labels.unwrap()["patched"],
                "strategic",
                "{kind}"
            );
        }
        let patched = api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(json!([{"op": "add", "path": "/metadata/annotations", "value": {"j": "son"}}])).unwrap())).await.unwrap();
        assert_eq!(patched.metadata.annotations.as_ref().unwrap()["j"], "son");

        api.delete(&name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {kind}: {e}"));
        if kind != "Namespace" {
            let gone = api.get(&name).await.unwrap_err();
            assert!(
                matches!(gone, kube::Error::Api(ref s) if s.code == 404),
                "{kind} deleted"
            );
        }
    }
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_reports_410_once_compacted() {
    let h = start_with(|c| c.watch_history = 20).await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let mk = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    let first = cms.create(&PostParams::default(), &mk("w0")).await.unwrap();
    let from = first.metadata.resource_version.unwrap();
    for i in 1..=5 {
        cms.create(&PostParams::default(), &mk(&format!("w{i}")))
            .await
            .unwrap();
    }
    // Resumed from `from`: w1..w5 replayed in order, then live changes.
    let stream = cms
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    let mut names = Vec::new();
    while names.len() < 5 {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(cm)) => names.push(cm.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, ["w1", "w2", "w3", "w4", "w5"]);
    cms.delete("w1", &DeleteParams::default()).await.unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("w1")),
        other => panic!("unexpected {other:?}"),
    }
    // Push `from` out of the 20-event history: the old version now gets 410 Gone.
    for i in 10..40 {
        cms.create(&PostParams::default(), &mk(&format!("w{i}")))
            .await
            .unwrap();
    }
    let stream = cms
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_selectors_turn_leaving_objects_into_deletes_and_bookmarks_arrive() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let stream = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default().labels("team=a").timeout(20)
            },
            &rv,
        )
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "sel", "labels": {"team": "b"}}}))
            .unwrap(),
    )
    .await
    .unwrap();
    cms.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "c"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(_)) => seen.push("ADDED"),
            Some(WatchEvent::Deleted(_)) => seen.push("DELETED"),
            Some(WatchEvent::Bookmark(b)) => {
                assert!(!b.metadata.resource_version.is_empty());
                seen.push("BOOKMARK");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        &seen[..2],
        ["ADDED", "DELETED"],
        "entering then leaving the selection"
    );
    assert_eq!(seen[2], "BOOKMARK");
}

#[tokio::test]
async fn kube_runtime_reflector_follows_changes() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    for i in 0..30 {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("r{i}")}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let (reader, writer) = reflector::store();
    // Small pages exercise limit/continue.
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().page_size(7)),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        let mut s = Box::pin(stream);
        while s.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 30);
    cms.delete("r0", &DeleteParams::default()).await.unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap(),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        if names.len() == 30
            && names.contains(&"late".to_string())
            && !names.contains(&"r0".to_string())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector did not converge: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
}

#[tokio::test]
async fn streaming_list_watch_sends_initial_events_then_a_bookmark() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().streaming_lists()),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        let mut s = Box::pin(stream);
        while s.next().await.is_some() {}
    });
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready())
        .await
        .expect("initial-events-end bookmark arrives")
        .unwrap();
    assert_eq!(reader.state().len(), 5);
    task.abort();
}

/// Malformed bodies get a 4xx `Status` naming the problem, and the server keeps serving.
#[tokio::test]
async fn malformed_bodies_are_refused_not_fatal() {
    let h = start().await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "POST",
            "/api/v1/namespaces",
            r#"{"metadata": {"name": "x"}, "spec": "not an object"}"#,
        ),
        (
            "POST",
            "/api/v1/namespaces",
            r#"{"metadata": "not an object"}"#,
        ),
        ("POST", "/api/v1/namespaces", r#"[1, 2, 3]"#),
        (
            "POST",
            "/api/v1/namespaces",
            r#"{"metadata": {"name": "x"}, "status": 7}"#,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            r#"{"metadata": {"name": "p"}, "spec": {"containers": "nope"}}"#,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/services",
            r#"{"metadata": {"name": "s"}, "spec": {"ports": [{"port": "eighty"}]}}"#,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            r#"{"kind": "Pod", "metadata": {"name": "c"}}"#,
        ),
        ("POST", "/api/v1/namespaces/default/configmaps", "{not json"),
        (
            "PUT",
            "/api/v1/namespaces/default/configmaps/nope",
            r#"{"metadata": {"name": "other"}}"#,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/nope/binding",
            r#"{"target": 5}"#,
        ),
    ];
    for (method, path, body) in cases {
        let req = http::Request::builder()
            .method(*method)
            .uri(*path)
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())
            .unwrap();
        match h.client.request_text(req).await {
            Err(kube::Error::Api(status)) => assert!(
                (400..500).contains(&status.code),
                "{method} {path} {body}: {status:?}"
            ),
            other => panic!("{method} {path} {body}: expected a 4xx Status, got {other:?}"),
        }
    }
    let patch = http::Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default")
        .header("content-type", "application/merge-patch+json")
        .body(br#"{"spec": "x", "metadata": 3}"#.to_vec())
        .unwrap();
    assert!(
        matches!(h.client.request_text(patch).await, Err(kube::Error::Api(s)) if (400..500).contains(&s.code))
    );
    // Still serving.
    let ns: Api<Namespace> = Api::all(h.client.clone());
    assert!(ns.get("default").await.is_ok());
}

#[tokio::test]
async fn delete_collection_removes_what_the_selector_picks() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    for (name, team) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": team}}}))
                .unwrap(),
        )
        .await
        .unwrap();
    }
    let gone = cms
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("team=a"),
        )
        .await
        .unwrap();
    let list = gone
        .left()
        .expect("the deleted objects come back as a list");
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a1", "a2"]);
    let left: Vec<String> = cms
        .list(&ListParams::default().labels("team"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["b1"]);
}

#[tokio::test]
async fn pagination_and_field_selectors() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    for i in 0..10 {
        let node = if i % 2 == 0 { "even" } else { "odd" };
        pods.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": format!("p{i}")}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})).unwrap()).await.unwrap();
    }
    let page = pods.list(&ListParams::default().limit(4)).await.unwrap();
    assert_eq!(page.items.len(), 4);
    let token = page.metadata.continue_.clone().unwrap();
    let page2 = pods
        .list(&ListParams::default().limit(4).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(page2.items.len(), 4);
    assert_eq!(
        page2.metadata.resource_version, page.metadata.resource_version,
        "pages share one snapshot"
    );
    let on_even = pods
        .list(&ListParams::default().fields("spec.nodeName=even"))
        .await
        .unwrap();
    assert_eq!(on_even.items.len(), 5);
    let bad = pods
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
        .unwrap_err();
    assert!(matches!(bad, kube::Error::Api(ref s) if s.code == 400));
    let expired = pods
        .list(&ListParams::default().continue_token("not-a-token"))
        .await
        .unwrap_err();
    assert!(matches!(expired, kube::Error::Api(ref s) if s.code == 410));
}

#[tokio::test]
async fn finalizers_hold_deletion_and_namespaces_delete_their_contents() {
    let h = start().await;
    let ns: Api<Namespace> = Api::all(h.client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "doomed");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "held", "finalizers": ["kubewire.io/test"]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "free"}})).unwrap(),
    )
    .await
    .unwrap();

    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let held = cms.get("held").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "finalizer keeps it, marked for deletion"
    );

    ns.delete("doomed", &DeleteParams::default()).await.unwrap();
    let terminating = ns.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let err = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "new"}})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "no new content in a terminating namespace"
    );

    // Removing the finalizer lets both the object and then the namespace go.
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ns.get_opt("doomed").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace never went away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cms.get_opt("free").await.unwrap().is_none());
}

#[tokio::test]
async fn bound_pods_terminate_gracefully() {
    let h = start().await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "g"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 7, "containers": [{"name": "c", "image": "i"}]}})).unwrap()).await.unwrap();
    pods.delete("g", &DeleteParams::default()).await.unwrap();
    let p = pods.get("g").await.unwrap();
    assert_eq!(
        p.metadata.deletion_grace_period_seconds,
        Some(7),
        "still visible while terminating"
    );
    pods.delete(
        "g",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("g").await.unwrap().is_none());
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let h = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "child", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}})).unwrap()).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cms.get_opt("child").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dependent was not collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports() {
    let h = start_with(|c| {
        c.service_cidrs = vec![
            "10.96.0.0/24".parse().unwrap(),
            "fd00:10:96::/112".parse().unwrap(),
        ];
        c.node_port_range = (30000, 30100);
    })
    .await;
    let svcs: Api<Service> = Api::namespaced(h.client.clone(), "default");
    let kubernetes = svcs.get("kubernetes").await.unwrap();
    assert_eq!(
        kubernetes
            .spec
            .as_ref()
            .unwrap()
            .cluster_ips
            .as_ref()
            .unwrap(),
        &["10.96.0.1", "fd00:10:96::1"],
        "KEP-2438: dual-stack kubernetes Service"
    );

    let mk = |v: Value| -> Service { serde_json::from_value(v).unwrap() };
    let dual = svcs.create(&PostParams::default(), &mk(json!({"metadata": {"name": "dual"}, "spec": {"type": "NodePort", "ipFamilyPolicy": "PreferDualStack", "selector": {"a": "b"}, "ports": [{"port": 80}]}}))).await.unwrap();
    let spec = dual.spec.unwrap();
    let ips = spec.cluster_ips.unwrap();
    assert_eq!(ips.len(), 2, "two families: {ips:?}");
    assert!(ips[0].starts_with("10.96.0.") && ips[1].starts_with("fd00:10:96::"));
    let node_port = spec.ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=30100).contains(&node_port));

    let fixed = svcs.create(&PostParams::default(), &mk(json!({"metadata": {"name": "fixed"}, "spec": {"clusterIP": "10.96.0.10", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30050}]}}))).await.unwrap();
    assert_eq!(
        fixed.spec.unwrap().cluster_ip.as_deref(),
        Some("10.96.0.10")
    );
    for (body, field) in [
        (
            json!({"metadata": {"name": "taken-ip"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}),
            "spec.clusterIPs[0]",
        ),
        (
            json!({"metadata": {"name": "outside"}, "spec": {"clusterIP": "10.97.0.10", "ports": [{"port": 80}]}}),
            "spec.clusterIPs[0]",
        ),
        (
            json!({"metadata": {"name": "taken-port"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30050}]}}),
            "spec.ports[0].nodePort",
        ),
        (
            json!({"metadata": {"name": "port-range"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}}),
            "spec.ports[0].nodePort",
        ),
    ] {
        let err = svcs
            .create(&PostParams::default(), &mk(body.clone()))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{body}: {err:?}")
        };
        assert_eq!(status.code, 422, "{body}");
        assert!(status.message.contains(field), "{body}: {}", status.message);
    }
    // KEP-1865: no node ports when the LoadBalancer asks for none; Local gets a health port.
    let lb = svcs.create(&PostParams::default(), &mk(json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "externalTrafficPolicy": "Local", "ports": [{"port": 443}]}}))).await.unwrap();
    let lb_spec = lb.spec.unwrap();
    assert_eq!(lb_spec.ports.unwrap()[0].node_port, None);
    assert!(lb_spec.health_check_node_port.is_some());
    // Deleting frees the address and port for the next Service.
    svcs.delete("fixed", &DeleteParams::default())
        .await
        .unwrap();
    let again = svcs.create(&PostParams::default(), &mk(json!({"metadata": {"name": "again"}, "spec": {"clusterIP": "10.96.0.10", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30050}]}}))).await.unwrap();
    assert_eq!(
        again.spec.unwrap().cluster_ip.as_deref(),
        Some("10.96.0.10")
    );
}

#[tokio::test]
async fn the_kubernetes_service_points_at_the_advertised_address() {
    let h = start_with(|c| c.advertise_address = Some("192.0.2.10".parse().unwrap())).await;
    let eps = api_for(
        &h.client,
        "",
        "v1",
        "Endpoints",
        "endpoints",
        Some("default"),
    )
    .get("kubernetes")
    .await
    .unwrap();
    assert_eq!(eps.data["subsets"][0]["addresses"][0]["ip"], "192.0.2.10");
    let slice = api_for(
        &h.client,
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        Some("default"),
    )
    .get("kubernetes")
    .await
    .unwrap();
    assert_eq!(slice.data["endpoints"][0]["addresses"][0], "192.0.2.10");
    assert_eq!(
        slice.metadata.labels.unwrap()["kubernetes.io/service-name"],
        "kubernetes"
    );
    let svc: Service = Api::namespaced(h.client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap();
    let port = &svc.spec.unwrap().ports.unwrap()[0];
    assert_eq!((port.port, port.name.as_deref()), (443, Some("https")));
}

#[tokio::test]
async fn bearer_tokens_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens.csv");
    std::fs::write(
        &token_file,
        "# token,user,uid\ns3cret,admin,1,\"system:masters\"\n",
    )
    .unwrap();
    let h = start_with(|c| {
        c.token_file = Some(token_file.clone());
        c.tls = true;
    })
    .await;
    // The written kubeconfig carries the CA and the token: it just works.
    let ns: Api<Namespace> = Api::all(h.client.clone());
    assert!(ns.get("default").await.is_ok());
    // Without the token: 401.
    let kubeconfig = Kubeconfig::read_from(&h.server.kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    assert!(config.cluster_url.scheme_str() == Some("https"));
    config.auth_info.token = None;
    let anonymous = kube::Client::try_from(config).unwrap();
    let err = Api::<Namespace>::all(anonymous)
        .get("default")
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err:?}"
    );
}
