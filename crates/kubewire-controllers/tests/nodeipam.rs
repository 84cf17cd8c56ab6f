//! Node IPAM against the real (in-process) API server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubewire_controllers::nodeipam::runtime::REASON_CIDR_NOT_AVAILABLE;
use kubewire_controllers::nodeipam::{IpamConfig, pod_cidrs_of, runtime};
use serde_json::json;

mod common;
use common::{Running, eventually, start};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

async fn create_node(nodes: &Api<Node>, name: &str) {
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

/// Node name -> podCIDRs, of all Nodes.
async fn cidrs(nodes: &Api<Node>) -> BTreeMap<String, Vec<String>> {
    nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap(), pod_cidrs_of(n)))
        .collect()
}

/// Polls until `done` holds on the Nodes' CIDRs (or panics after 20 s).
async fn wait_for(
    nodes: &Api<Node>,
    what: &str,
    done: impl Fn(&BTreeMap<String, Vec<String>>) -> bool,
) -> BTreeMap<String, Vec<String>> {
    eventually(what, async || {
        Some(cidrs(nodes).await).filter(|now| done(now))
    })
    .await
}

#[tokio::test]
async fn fifty_dual_stack_nodes_restart_without_reassignment() {
    let h = start(false).await;
    let nodes: Api<Node> = Api::all(h.client.clone());
    let config =
        IpamConfig::new(vec![net("10.244.0.0/16"), net("fd00:10:244::/56")], 24, 64).unwrap();
    // Half the Nodes exist before the controller starts, half arrive while it runs.
    for i in 0..25 {
        create_node(&nodes, &format!("node-{i:02}")).await;
    }
    let controller = Running::spawn("node IPAM", runtime::run(h.client.clone(), config.clone()));
    for i in 25..50 {
        create_node(&nodes, &format!("node-{i:02}")).await;
    }
    let all_set =
        |m: &BTreeMap<String, Vec<String>>| m.len() == 50 && m.values().all(|c| c.len() == 2);
    let first = wait_for(&nodes, "50 dual-stack Nodes", all_set).await;
    let mut seen = BTreeSet::new();
    for (name, list) in &first {
        let (v4, v6) = (net(&list[0]), net(&list[1]));
        assert!(
            v4.addr().is_ipv4() && v4.prefix_len() == 24,
            "{name}: {list:?}"
        );
        assert!(
            v6.addr().is_ipv6() && v6.prefix_len() == 64,
            "{name}: {list:?}"
        );
        assert!(net("10.244.0.0/16").contains(&v4) && net("fd00:10:244::/56").contains(&v6));
        assert!(
            seen.insert(v4) && seen.insert(v6),
            "{name}: {list:?} given twice"
        );
        let node = nodes.get(name).await.unwrap();
        assert_eq!(
            node.spec.unwrap().pod_cidr.as_deref(),
            Some(list[0].as_str())
        );
    }

    // Restart: a new controller rebuilds its state from the Nodes and changes nothing; a new
    // Node gets a subnet nobody holds.
    drop(controller);
    let _controller = Running::spawn("node IPAM", runtime::run(h.client.clone(), config.clone()));
    create_node(&nodes, "node-new").await;
    let after = wait_for(&nodes, "the new Node", |m| {
        m.get("node-new").is_some_and(|c| c.len() == 2)
    })
    .await;
    for (name, list) in &first {
        assert_eq!(&after[name], list, "{name} was reassigned");
    }
    for c in &after["node-new"] {
        assert!(!seen.contains(&net(c)), "node-new got {c}, already held");
    }
}

#[tokio::test]
async fn exhaustion_records_an_event_and_deletion_unblocks() {
    let h = start(false).await;
    let nodes: Api<Node> = Api::all(h.client.clone());
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    // Four /24s for five Nodes.
    let config = IpamConfig::new(vec![net("10.0.0.0/22")], 24, 64).unwrap();
    let _controller = Running::spawn("node IPAM", runtime::run(h.client.clone(), config.clone()));
    for i in 0..5 {
        create_node(&nodes, &format!("n{i}")).await;
    }
    let state = wait_for(&nodes, "four Nodes with CIDRs", |m| {
        m.len() == 5 && m.values().filter(|c| !c.is_empty()).count() == 4
    })
    .await;
    let pending = state
        .iter()
        .find(|(_, c)| c.is_empty())
        .map(|(n, _)| n.clone())
        .unwrap();

    let mut event = None;
    for _ in 0..200 {
        let list = events.list(&ListParams::default()).await.unwrap();
        event = list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(REASON_CIDR_NOT_AVAILABLE)
                && e.involved_object.name.as_deref() == Some(pending.as_str())
        });
        if event.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = event.expect("a CIDRNotAvailable Event on the pending Node");
    assert_eq!(event.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // Deleting a Node frees its subnet; the pending Node gets exactly that one.
    let victim = state.keys().find(|n| **n != pending).unwrap().clone();
    let freed = state[&victim].clone();
    nodes
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let after = wait_for(&nodes, "the pending Node's CIDR", |m| {
        m.get(&pending).is_some_and(|c| !c.is_empty())
    })
    .await;
    assert_eq!(after[&pending], freed);
}
