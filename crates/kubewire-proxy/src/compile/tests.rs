use std::net::SocketAddr;

use serde_json::{Value, json};

use super::*;

fn svc(v: Value) -> Service {
    serde_json::from_value(v).expect("valid Service")
}

fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).expect("valid EndpointSlice")
}

fn node() -> NodeContext {
    NodeContext {
        name: "n1".into(),
        zone: Some("a".into()),
        node_ips: vec!["198.51.100.10".parse().expect("ip")],
        node_port_addresses: NodePortAddresses::All,
        pod_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
    }
}

/// A ClusterIP Service `default/web` with port 80 (`http`) → endpoints on 8080.
fn web(spec_extra: Value) -> Service {
    let mut spec = json!({
        "type": "ClusterIP",
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    svc(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}))
}

/// An endpoint: (ip, node, ready, serving, terminating).
fn ep(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({
        "addresses": [ip], "nodeName": node,
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
    })
}

fn web_slice(address_type: &str, endpoints: Vec<Value>) -> EndpointSlice {
    slice(json!({
        "metadata": {"name": format!("web-{address_type}"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
}

fn key(class: Class, ip: Option<&str>, port: u16) -> Key {
    let ip = ip.map(|s| s.parse().expect("ip"));
    Key {
        family: ip.map_or(Family::V4, Family::of),
        class,
        ip,
        protocol: Protocol::Tcp,
        port,
    }
}

fn backends(d: &Desired, k: &Key) -> Vec<String> {
    d.entries
        .get(k)
        .unwrap_or_else(|| panic!("no entry {k:?} in {:#?}", d.entries.keys()))
        .backends
        .iter()
        .map(SocketAddr::to_string)
        .collect()
}

#[test]
fn cluster_ip_goes_to_ready_endpoints_on_their_target_port() {
    let s = web_slice(
        "IPv4",
        vec![
            ep("10.244.1.5", "n1", true, true, false),
            ep("10.244.2.5", "n2", true, true, false),
            ep("10.244.2.6", "n2", false, false, false),
        ],
    );
    let (d, w) = compile(&[web(json!({}))], &[s], &node());
    assert!(w.is_empty(), "{w:?}");
    let cip = key(Class::ClusterIp, Some("10.96.0.10"), 80);
    assert_eq!(backends(&d, &cip), ["10.244.1.5:8080", "10.244.2.5:8080"]);
    assert_eq!(d.entries.len(), 1, "no NodePort for a ClusterIP Service");
}

#[test]
fn no_endpoints_rejects_and_local_policy_without_local_endpoints_drops() {
    let (d, _) = compile(&[web(json!({}))], &[] as &[EndpointSlice], &node());
    let cip = key(Class::ClusterIp, Some("10.96.0.10"), 80);
    assert_eq!(d.entries[&cip].when_empty, WhenEmpty::Reject);
    assert!(d.entries[&cip].backends.is_empty());

    let s = web_slice("IPv4", vec![ep("10.244.2.5", "n2", true, true, false)]);
    let (d, _) = compile(
        &[web(json!({"internalTrafficPolicy": "Local"}))],
        &[s],
        &node(),
    );
    assert!(d.entries[&cip].backends.is_empty());
    assert_eq!(d.entries[&cip].when_empty, WhenEmpty::Drop);
}

#[test]
fn terminating_fallback_uses_serving_terminating_only_when_nothing_is_ready() {
    let eps = vec![
        ep("10.244.1.5", "n1", false, true, true),
        ep("10.244.1.6", "n1", false, false, true),
        ep("10.244.2.5", "n2", true, true, false),
    ];
    let cip = key(Class::ClusterIp, Some("10.96.0.10"), 80);
    let (d, _) = compile(&[web(json!({}))], &[web_slice("IPv4", eps)], &node());
    assert_eq!(backends(&d, &cip), ["10.244.2.5:8080"], "ready wins");

    // Local policy: the local set falls back on its own (n2's ready endpoint is not local).
    let eps = vec![
        ep("10.244.1.5", "n1", false, true, true),
        ep("10.244.1.6", "n1", false, false, true),
        ep("10.244.2.5", "n2", true, true, false),
    ];
    let (d, _) = compile(
        &[web(json!({"internalTrafficPolicy": "Local"}))],
        &[web_slice("IPv4", eps)],
        &node(),
    );
    assert_eq!(
        backends(&d, &cip),
        ["10.244.1.5:8080"],
        "serving+terminating, never not-serving"
    );
}

#[test]
fn node_port_and_external_policy_local() {
    let s = web_slice(
        "IPv4",
        vec![
            ep("10.244.1.5", "n1", true, true, false),
            ep("10.244.2.5", "n2", true, true, false),
        ],
    );
    let svc = web(json!({
        "type": "LoadBalancer",
        "externalTrafficPolicy": "Local",
        "externalIPs": ["203.0.113.7"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}],
    }));
    let mut svc = svc;
    svc.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [
            {"ip": "203.0.113.8"}, {"ip": "203.0.113.9", "ipMode": "Proxy"}]}}))
        .expect("status"),
    );
    let (d, _) = compile(&[svc], &[s], &node());
    let all = ["10.244.1.5:8080", "10.244.2.5:8080"];
    let local = ["10.244.1.5:8080"];
    assert_eq!(
        backends(&d, &key(Class::ClusterIp, Some("10.96.0.10"), 80)),
        all
    );
    for ip in ["203.0.113.7", "203.0.113.8"] {
        let ext = key(Class::ExternalIp, Some(ip), 80);
        assert_eq!(backends(&d, &ext), local);
        assert!(
            !d.entries[&ext].masquerade,
            "Local keeps the client address"
        );
        assert_eq!(
            backends(&d, &key(Class::ExternalIpFromInside, Some(ip), 80)),
            all
        );
    }
    assert!(
        !d.entries
            .contains_key(&key(Class::ExternalIp, Some("203.0.113.9"), 80)),
        "ipMode Proxy is not short-circuited"
    );
    assert_eq!(backends(&d, &key(Class::NodePort, None, 30080)), local);
    assert_eq!(
        backends(&d, &key(Class::NodePortFromInside, None, 30080)),
        all
    );
}

#[test]
fn cluster_policy_node_port_masquerades_and_has_no_inside_twin() {
    let s = web_slice("IPv4", vec![ep("10.244.2.5", "n2", true, true, false)]);
    let svc = web(json!({
        "type": "NodePort",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}],
    }));
    let (d, _) = compile(&[svc], &[s], &node());
    let np = key(Class::NodePort, None, 30080);
    assert!(d.entries[&np].masquerade);
    assert!(
        !d.entries
            .contains_key(&key(Class::NodePortFromInside, None, 30080))
    );
}

#[test]
fn topology_hints_narrow_cluster_endpoints_only_when_all_ready_have_them() {
    let hinted = |ip: &str, node: &str, zone: &str| {
        let mut e = ep(ip, node, true, true, false);
        e["hints"] = json!({"forZones": [{"name": zone}]});
        e
    };
    let cip = key(Class::ClusterIp, Some("10.96.0.10"), 80);
    let eps = vec![
        hinted("10.244.1.5", "n1", "a"),
        hinted("10.244.2.5", "n2", "b"),
    ];
    let (d, _) = compile(&[web(json!({}))], &[web_slice("IPv4", eps)], &node());
    assert_eq!(backends(&d, &cip), ["10.244.1.5:8080"]);

    let eps = vec![
        hinted("10.244.1.5", "n1", "a"),
        ep("10.244.2.5", "n2", true, true, false),
    ];
    let (d, _) = compile(&[web(json!({}))], &[web_slice("IPv4", eps)], &node());
    assert_eq!(backends(&d, &cip).len(), 2, "one endpoint without hints");

    let eps = vec![
        hinted("10.244.1.5", "n1", "c"),
        hinted("10.244.2.5", "n2", "b"),
    ];
    let (d, _) = compile(&[web(json!({}))], &[web_slice("IPv4", eps)], &node());
    assert_eq!(backends(&d, &cip).len(), 2, "no hint for our zone");

    let mut by_node = ep("10.244.2.5", "n2", true, true, false);
    by_node["hints"] = json!({"forNodes": [{"name": "n1"}], "forZones": [{"name": "b"}]});
    let mut other = hinted("10.244.1.5", "n1", "a");
    other["hints"]["forNodes"] = json!([{"name": "n9"}]);
    let (d, _) = compile(
        &[web(json!({}))],
        &[web_slice("IPv4", vec![by_node, other])],
        &node(),
    );
    assert_eq!(
        backends(&d, &cip),
        ["10.244.2.5:8080"],
        "node hints win over zones"
    );
}

#[test]
fn dual_stack_families_are_independent() {
    let svc = web(json!({
        "clusterIPs": ["10.96.0.10", "fd00:10:96::10"],
        "ipFamilies": ["IPv4", "IPv6"],
    }));
    let v4 = web_slice("IPv4", vec![ep("10.244.1.5", "n1", true, true, false)]);
    let (d, _) = compile(&[svc], &[v4], &node());
    assert_eq!(
        backends(&d, &key(Class::ClusterIp, Some("10.96.0.10"), 80)),
        ["10.244.1.5:8080"]
    );
    let v6 = key(Class::ClusterIp, Some("fd00:10:96::10"), 80);
    assert!(d.entries[&v6].backends.is_empty());
    assert_eq!(d.entries[&v6].when_empty, WhenEmpty::Reject);
}

#[test]
fn ignored_services_and_slices() {
    let headless = web(json!({"clusterIP": "None", "clusterIPs": ["None"]}));
    let external_name = svc(json!({"metadata": {"name": "x", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "example.org"}}));
    let mut other_proxy = web(json!({}));
    other_proxy.metadata.labels = Some(
        [(labels::SERVICE_PROXY_NAME.to_string(), "other".to_string())]
            .into_iter()
            .collect(),
    );
    let (d, _) = compile(
        &[headless, external_name, other_proxy],
        &[] as &[EndpointSlice],
        &node(),
    );
    assert!(d.entries.is_empty(), "{:?}", d.entries);

    let mut s = web_slice("IPv4", vec![ep("10.244.1.5", "n1", true, true, false)]);
    if let Some(l) = s.metadata.labels.as_mut() {
        l.insert(labels::HEADLESS.into(), String::new());
    }
    let (d, _) = compile(&[web(json!({}))], &[s], &node());
    assert!(
        d.entries[&key(Class::ClusterIp, Some("10.96.0.10"), 80)]
            .backends
            .is_empty()
    );
}

#[test]
fn named_ports_match_by_name_and_protocol_and_overlaps_count_once() {
    let svc = web(json!({"ports": [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
    ]}));
    let a = slice(json!({
        "metadata": {"name": "a", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [ep("10.244.1.5", "n1", true, true, false)],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
    }));
    let b = slice(json!({
        "metadata": {"name": "b", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [ep("10.244.1.5", "n1", true, true, false), ep("10.244.1.6", "n1", true, true, false)],
        "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}],
    }));
    let (d, _) = compile(&[svc], &[a, b], &node());
    assert_eq!(
        backends(&d, &key(Class::ClusterIp, Some("10.96.0.10"), 80)),
        ["10.244.1.5:8080", "10.244.1.5:9090", "10.244.1.6:9090"]
    );
    let dns = Key {
        protocol: Protocol::Udp,
        ..key(Class::ClusterIp, Some("10.96.0.10"), 53)
    };
    assert_eq!(backends(&d, &dns), ["10.244.1.5:5353"]);
}

#[test]
fn a_key_claimed_twice_keeps_the_first_and_warns() {
    let a = web(json!({"externalIPs": ["203.0.113.7"]}));
    let mut b = web(
        json!({"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"], "externalIPs": ["203.0.113.7"]}),
    );
    b.metadata.name = Some("web2".into());
    let (d, w) = compile(&[a, b], &[] as &[EndpointSlice], &node());
    assert_eq!(
        d.entries[&key(Class::ExternalIp, Some("203.0.113.7"), 80)].service,
        "default/web:http"
    );
    assert_eq!(w.len(), 1, "{w:?}");
}

#[test]
fn local_load_balancers_get_a_health_check_counting_ready_local_endpoints() {
    let mut eps = vec![
        ep("10.244.1.5", "n1", true, true, false),
        ep("10.244.1.6", "n1", false, true, true),
        ep("10.244.2.5", "n2", true, true, false),
    ];
    let svc = |etp: &str| {
        web(json!({
            "type": "LoadBalancer",
            "externalTrafficPolicy": etp,
            "healthCheckNodePort": 30500,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}],
        }))
    };
    let (d, _) = compile(&[svc("Local")], &[web_slice("IPv4", eps.clone())], &node());
    let h = &d.health_checks[&30500];
    assert_eq!((h.namespace.as_str(), h.name.as_str()), ("default", "web"));
    assert_eq!(h.local_endpoints, 1, "terminating endpoints do not count");
    let (d, _) = compile(
        &[svc("Cluster")],
        &[web_slice("IPv4", eps.clone())],
        &node(),
    );
    assert!(d.health_checks.is_empty());
    eps.remove(0);
    let (d, _) = compile(&[svc("Local")], &[web_slice("IPv4", eps)], &node());
    assert_eq!(d.health_checks[&30500].local_endpoints, 0);
}

#[test]
fn source_ranges_guard_load_balancer_ips_only() {
    let mut svc = web(json!({
        "type": "LoadBalancer",
        "externalIPs": ["203.0.113.7"],
        "loadBalancerSourceRanges": ["192.0.2.0/24", "not-a-cidr"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}],
    }));
    svc.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.8"}]}}))
            .expect("status"),
    );
    let (d, w) = compile(&[svc.clone()], &[] as &[EndpointSlice], &node());
    assert_eq!(w.len(), 1, "the bad range is reported: {w:?}");
    let ranges = |d: &Desired, class, ip: Option<&str>, port| {
        d.entries[&key(class, ip, port)]
            .source_ranges
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ranges(&d, Class::ExternalIp, Some("203.0.113.8"), 80),
        ["192.0.2.0/24"]
    );
    assert!(ranges(&d, Class::ExternalIp, Some("203.0.113.7"), 80).is_empty());
    assert!(ranges(&d, Class::NodePort, None, 30080).is_empty());

    // This node's address (198.51.100.10) inside the ranges: the LB IP may be a source too.
    if let Some(spec) = svc.spec.as_mut() {
        spec.load_balancer_source_ranges = Some(vec!["198.51.100.0/24".into()]);
    }
    let (d, _) = compile(&[svc.clone()], &[] as &[EndpointSlice], &node());
    assert_eq!(
        ranges(&d, Class::ExternalIp, Some("203.0.113.8"), 80),
        ["198.51.100.0/24", "203.0.113.8/32"]
    );

    // The legacy annotation when the field is not set.
    if let Some(spec) = svc.spec.as_mut() {
        spec.load_balancer_source_ranges = None;
    }
    svc.metadata.annotations = Some(
        [(
            "service.beta.kubernetes.io/load-balancer-source-ranges".to_string(),
            "10.0.0.0/8, 172.16.0.0/12".to_string(),
        )]
        .into(),
    );
    let (d, _) = compile(&[svc], &[] as &[EndpointSlice], &node());
    assert_eq!(
        ranges(&d, Class::ExternalIp, Some("203.0.113.8"), 80),
        ["10.0.0.0/8", "172.16.0.0/12"]
    );
}

#[test]
fn primary_node_port_addresses_are_the_first_of_each_family() {
    let mut ctx = node();
    ctx.node_ips = vec![
        "198.51.100.10".parse().expect("ip"),
        "2001:db8::10".parse().expect("ip"),
        "203.0.113.10".parse().expect("ip"),
    ];
    ctx.node_port_addresses = NodePortAddresses::Primary;
    let (d, _) = compile(&[] as &[Service], &[] as &[EndpointSlice], &ctx);
    let ips: Vec<String> = d
        .node_port_ips
        .expect("limited")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ips, ["198.51.100.10", "2001:db8::10"]);
    ctx.node_port_addresses = NodePortAddresses::All;
    assert_eq!(
        compile(&[] as &[Service], &[] as &[EndpointSlice], &ctx)
            .0
            .node_port_ips,
        None
    );
}
