//! Durability: every acknowledged write survives `kill -9`, resourceVersions keep increasing,
//! and allocations made before the crash are never handed out again.

mod common;

use std::collections::BTreeSet;

use common::ApiServer;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

async fn client(server: &ApiServer) -> kube::Client {
    let kc = Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(dir.path(), &["--service-cluster-ip-range", "10.96.0.0/26"]);
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let mut before = BTreeSet::new();
    for i in 0..20 {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}})).unwrap();
        let s = svcs.create(&PostParams::default(), &svc).await.unwrap();
        let spec = s.spec.unwrap();
        before.insert(spec.cluster_ip.unwrap());
        before.insert(spec.ports.unwrap()[0].node_port.unwrap().to_string());
    }
    // Writes in flight when the process dies: every acknowledged one must be there after.
    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let cm: ConfigMap =
                    serde_json::from_value(json!({"metadata": {"name": format!("cm{i}")}}))
                        .unwrap();
                match cms.create(&PostParams::default(), &cm).await {
                    Ok(c) => acked.push((
                        c.metadata.name.unwrap(),
                        c.metadata.resource_version.unwrap(),
                    )),
                    Err(_) => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    server.kill9();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "the writer made progress before the crash"
    );
    let last_rv: u64 = acked
        .iter()
        .map(|(_, rv)| rv.parse::<u64>().unwrap())
        .max()
        .unwrap();

    let server = ApiServer::start(dir.path(), &["--service-cluster-ip-range", "10.96.0.0/26"]);
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for (name, rv) in &acked {
        let got = cms
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name} acknowledged but lost: {e}"));
        assert_eq!(got.metadata.resource_version.as_deref(), Some(rv.as_str()));
    }
    let after: ConfigMap = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "after"}})).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        after
            .metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > last_rv,
        "resourceVersions keep increasing"
    );
    // New Services never get an address or port held before the crash.
    let svcs: Api<Service> = Api::namespaced(c, "default");
    for i in 0..20 {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": format!("n{i}")}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}})).unwrap();
        let s = svcs.create(&PostParams::default(), &svc).await.unwrap();
        let spec = s.spec.unwrap();
        assert!(
            !before.contains(&spec.cluster_ip.clone().unwrap()),
            "ClusterIP reused"
        );
        assert!(
            !before.contains(&spec.ports.unwrap()[0].node_port.unwrap().to_string()),
            "NodePort reused"
        );
    }
}

/// A kube-rs reflector keeps following through a `kill -9` and restart of the server: its watch
/// breaks, it re-watches, gets 410 (history does not survive a restart) and relists.
#[tokio::test]
async fn reflector_recovers_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(dir.path(), &[]);
    let port = server.addr.port().to_string();
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mk = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    cms.create(&PostParams::default(), &mk("before"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default()).default_backoff(),
    )
    .applied_objects();
    let follow = tokio::spawn(async move {
        let mut s = Box::pin(stream);
        while s.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 1);

    server.kill9();
    let listen = format!("127.0.0.1:{port}");
    let server = ApiServer::start_on(dir.path(), &listen, &[]);
    let cms: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    cms.create(&PostParams::default(), &mk("after"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let names: BTreeSet<String> = reader
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        if names.contains("before") && names.contains("after") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector never caught up after the restart: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    follow.abort();
}
