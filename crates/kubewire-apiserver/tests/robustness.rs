//! Whatever JSON a client sends, the server answers it: a success or a 4xx `Status`, never a
//! dropped connection or a 5xx. Random documents built from Kubernetes-shaped keys and hostile
//! leaves are POSTed to every kind and merge-patched onto a live object.

use std::sync::OnceLock;

use kubewire_apiserver::RESOURCES;
use kubewire_apiserver::testing::TestServer;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

struct Shared {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    _server: TestServer,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (server, client) = runtime.block_on(async {
            let server = TestServer::start().await;
            let client = kubewire_api::client::from_kubeconfig(&server.kubeconfig)
                .await
                .unwrap();
            (server, client)
        });
        Shared {
            runtime,
            client,
            _server: server,
        }
    })
}

const KEYS: &[&str] = &[
    "metadata",
    "spec",
    "status",
    "name",
    "namespace",
    "generateName",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "kind",
    "apiVersion",
    "ports",
    "port",
    "targetPort",
    "nodePort",
    "protocol",
    "containers",
    "image",
    "selector",
    "matchLabels",
    "type",
    "clusterIP",
    "clusterIPs",
    "ipFamilies",
    "ipFamilyPolicy",
    "podSelector",
    "ingress",
    "rules",
    "endpoints",
    "addresses",
    "subsets",
    "$patch",
    "data",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-zA-Z0-9./:_-]{0,12}".prop_map(Value::String),
        Just(json!("x".repeat(300))),
        Just(json!("10.96.0.1")),
        Just(json!("None")),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kvs| {
                Value::Object(
                    kvs.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn answer(method: &str, uri: &str, content_type: &str, body: &Value) -> Result<(), String> {
    let s = shared();
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    match s.runtime.block_on(s.client.request_text(req)) {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => Ok(()),
        Err(other) => Err(format!("{method} {uri} {body}: {other:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_create_is_answered(which in 0..RESOURCES.len(), body in document()) {
        let r = &RESOURCES[which];
        let prefix = if r.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", r.group, r.version) };
        let uri = if r.namespaced { format!("{prefix}/namespaces/default/{}", r.plural) } else { format!("{prefix}/{}", r.plural) };
        prop_assert_eq!(answer("POST", &uri, "application/json", &body), Ok(()));
    }

    #[test]
    fn any_patch_is_answered(body in document(), strategic in any::<bool>()) {
        let ct = if strategic { "application/strategic-merge-patch+json" } else { "application/merge-patch+json" };
        prop_assert_eq!(answer("PATCH", "/api/v1/namespaces/default/services/kubernetes", ct, &body), Ok(()));
        prop_assert_eq!(answer("PATCH", "/api/v1/namespaces/default/services/kubernetes/status", ct, &body), Ok(()));
    }
}
