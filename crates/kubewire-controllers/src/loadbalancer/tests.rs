use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(name: &str) -> ServiceKey {
    ServiceKey {
        namespace: "ns".into(),
        name: name.into(),
    }
}

/// 203.0.113.0/29 (addresses .1 to .6) and fd00:1b::/125 (::1 to ::7).
fn dual() -> Config {
    Config::new(vec![net("203.0.113.0/29"), net("fd00:1b::/125")]).unwrap()
}

fn v4_only(range: &str) -> Config {
    Config::new(vec![net(range)]).unwrap()
}

/// A Service created `age` seconds after the epoch (smaller is older), with `spec` over a
/// single-stack IPv4 LoadBalancer, and `ips` in its status.
fn svc(name: &str, age: i64, spec: Value, ips: &[&str]) -> Service {
    let mut base = json!({"type": "LoadBalancer", "ipFamilies": ["IPv4"]});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    let ingress: Vec<Value> = ips
        .iter()
        .map(|i| json!({"ip": i, "ipMode": "VIP"}))
        .collect();
    let mut service: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
        "spec": base,
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
    .unwrap();
    service.metadata.creation_timestamp = Some(Time(
        jiff::Timestamp::from_second(age).expect("a timestamp"),
    ));
    service
}

/// The addresses the plan writes for `name`.
fn ips(plan: &Plan, name: &str) -> Option<Vec<String>> {
    plan.status.get(&key(name)).map(|ingress| {
        ingress
            .iter()
            .map(|i| {
                assert_eq!(i.ip_mode.as_deref(), Some(IP_MODE_VIP));
                i.ip.clone().unwrap_or_default()
            })
            .collect()
    })
}

/// The Services with the plan's statuses written, as the API would hold them after.
fn apply(services: &[Service], plan: &Plan) -> Vec<Service> {
    services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Some(ingress) = ServiceKey::of(&s).and_then(|k| plan.status.get(&k)) {
                let status = s.status.get_or_insert_with(Default::default);
                status
                    .load_balancer
                    .get_or_insert_with(Default::default)
                    .ingress = Some(ingress.clone());
            }
            s
        })
        .collect()
}

#[test]
fn config_is_checked() {
    let c = |ranges: &[&str]| Config::new(ranges.iter().map(|s| net(s)).collect());
    assert!(c(&["203.0.113.0/29"]).is_ok());
    assert!(c(&["fd00:1b::/64", "203.0.113.0/29"]).is_ok());
    assert_eq!(c(&[]), Err(ConfigError::Empty));
    assert_eq!(
        c(&["203.0.113.0/29", "198.51.100.0/24"]),
        Err(ConfigError::SameFamily(
            net("203.0.113.0/29"),
            net("198.51.100.0/24")
        ))
    );
    assert!(matches!(
        c(&["203.0.113.0/29", "fd00::/64", "fd01::/64"]),
        Err(ConfigError::SameFamily(..))
    ));
    assert_eq!(
        c(&["203.0.113.1/29"]),
        Err(ConfigError::HostBits(
            net("203.0.113.1/29"),
            net("203.0.113.0/29")
        ))
    );
    assert_eq!(
        c(&["203.0.113.0/31"]),
        Err(ConfigError::NoAddresses(net("203.0.113.0/31")))
    );
    assert!(matches!(
        c(&["fd00::1/128"]),
        Err(ConfigError::NoAddresses(_))
    ));
    let message = c(&["10.0.0.0/24", "10.1.0.0/24"]).unwrap_err().to_string();
    assert!(message.contains("--load-balancer-ip-range"), "{message}");
}

#[test]
fn allocates_lowest_free_oldest_first_skipping_the_network_address() {
    // Names in the opposite order of age: age decides.
    let services = [
        svc("a", 30, json!({}), &[]),
        svc("b", 20, json!({}), &[]),
        svc("c", 10, json!({}), &[]),
    ];
    let plan = reconcile(&services, &dual());
    assert_eq!(ips(&plan, "c"), Some(vec!["203.0.113.1".into()]));
    assert_eq!(ips(&plan, "b"), Some(vec!["203.0.113.2".into()]));
    assert_eq!(ips(&plan, "a"), Some(vec!["203.0.113.3".into()]));
    assert!(plan.problems.is_empty());
    // Same age: namespace/name decides. Input order never matters.
    let same = [svc("y", 5, json!({}), &[]), svc("x", 5, json!({}), &[])];
    let plan = reconcile(&same, &dual());
    assert_eq!(ips(&plan, "x"), Some(vec!["203.0.113.1".into()]));
    let reversed: Vec<Service> = same.iter().rev().cloned().collect();
    assert_eq!(reconcile(&reversed, &dual()), plan);
}

#[test]
fn a_restart_changes_nothing() {
    let services = [
        svc("a", 1, json!({}), &[]),
        svc("b", 2, json!({"ipFamilies": ["IPv6", "IPv4"]}), &[]),
        svc("c", 3, json!({"loadBalancerIP": "203.0.113.6"}), &[]),
        svc("d", 4, json!({}), &[]),
    ];
    let plan = reconcile(&services, &dual());
    assert_eq!(plan.status.len(), 4);
    let written = apply(&services, &plan);
    // A new controller sees only the statuses, in any order: nothing to write.
    assert_eq!(reconcile(&written, &dual()), Plan::default());
    let reversed: Vec<Service> = written.iter().rev().cloned().collect();
    assert_eq!(reconcile(&reversed, &dual()), Plan::default());
    // Addresses that are not the lowest are kept as they are.
    let scattered = [
        svc("a", 1, json!({}), &["203.0.113.5"]),
        svc("b", 2, json!({}), &["203.0.113.3"]),
    ];
    assert_eq!(reconcile(&scattered, &dual()), Plan::default());
}

#[test]
fn on_a_conflict_the_oldest_keeps_the_address() {
    let services = [
        svc("new", 20, json!({}), &["203.0.113.1"]),
        svc("old", 10, json!({}), &["203.0.113.1"]),
    ];
    let plan = reconcile(&services, &dual());
    assert!(!plan.status.contains_key(&key("old")));
    assert_eq!(ips(&plan, "new"), Some(vec!["203.0.113.2".into()]));
}

#[test]
fn load_balancer_ip_is_honoured_when_free_and_in_range() {
    // Asked for before anything is handed out: the older, unasking Service does not take it.
    let services = [
        svc("plain", 1, json!({}), &[]),
        svc("asks", 2, json!({"loadBalancerIP": "203.0.113.1"}), &[]),
    ];
    let plan = reconcile(&services, &dual());
    assert_eq!(ips(&plan, "asks"), Some(vec!["203.0.113.1".into()]));
    assert_eq!(ips(&plan, "plain"), Some(vec!["203.0.113.2".into()]));
    assert!(plan.problems.is_empty());

    // Changing it moves the Service to the new address.
    let moved = [svc(
        "asks",
        2,
        json!({"loadBalancerIP": "203.0.113.4"}),
        &["203.0.113.1"],
    )];
    let plan = reconcile(&moved, &dual());
    assert_eq!(ips(&plan, "asks"), Some(vec!["203.0.113.4".into()]));
}

#[test]
fn load_balancer_ip_is_refused_outside_the_range_or_in_use() {
    let services = [
        svc("holder", 1, json!({}), &["203.0.113.1"]),
        svc("taken", 2, json!({"loadBalancerIP": "203.0.113.1"}), &[]),
        svc("outside", 3, json!({"loadBalancerIP": "198.51.100.1"}), &[]),
        svc(
            "broadcast",
            4,
            json!({"loadBalancerIP": "203.0.113.7"}),
            &[],
        ),
        // IPv6 asked for by an IPv4-only Service.
        svc("family", 5, json!({"loadBalancerIP": "fd00:1b::2"}), &[]),
        svc("garbage", 6, json!({"loadBalancerIP": "not-an-ip"}), &[]),
    ];
    let plan = reconcile(&services, &dual());
    assert_eq!(
        plan.problems[&key("taken")],
        vec![Problem::RequestInUse {
            ip: ip("203.0.113.1"),
            holder: key("holder"),
        }]
    );
    assert_eq!(
        plan.problems[&key("outside")],
        vec![Problem::RequestOutside(ip("198.51.100.1"))]
    );
    assert_eq!(
        plan.problems[&key("broadcast")],
        vec![Problem::RequestOutside(ip("203.0.113.7"))]
    );
    assert_eq!(
        plan.problems[&key("garbage")],
        vec![Problem::RequestUnparsable("not-an-ip".into())]
    );
    // Refused: nothing in that family, rather than some other address.
    for name in ["taken", "outside", "broadcast", "garbage"] {
        assert_eq!(ips(&plan, name), None, "{name}");
    }
    // The request's family is not the Service's: its own family is served as usual.
    assert_eq!(
        plan.problems[&key("family")],
        vec![Problem::RequestOutside(ip("fd00:1b::2"))]
    );
    assert_eq!(ips(&plan, "family"), Some(vec!["203.0.113.2".into()]));
    // A garbage request loses even what the Service held.
    let held = [svc(
        "garbage",
        6,
        json!({"loadBalancerIP": "not-an-ip"}),
        &["203.0.113.3"],
    )];
    assert_eq!(ips(&reconcile(&held, &dual()), "garbage"), Some(vec![]));
}

#[test]
fn a_refused_request_blocks_only_its_family() {
    let dual_stack = json!({"ipFamilies": ["IPv4", "IPv6"], "loadBalancerIP": "198.51.100.1"});
    let plan = reconcile(&[svc("d", 1, dual_stack, &[])], &dual());
    assert_eq!(ips(&plan, "d"), Some(vec!["fd00:1b::1".into()]));
    assert_eq!(
        plan.problems[&key("d")],
        vec![Problem::RequestOutside(ip("198.51.100.1"))]
    );
}

#[test]
fn services_with_a_class_are_left_alone() {
    let classed = json!({"loadBalancerClass": "example.com/other"});
    let services = [
        svc("classed", 1, classed.clone(), &["198.51.100.9"]),
        svc("classed-empty", 2, classed, &[]),
    ];
    assert_eq!(reconcile(&services, &dual()), Plan::default());
}

#[test]
fn deleted_services_free_their_addresses_for_reuse() {
    let services = [
        svc("a", 1, json!({}), &[]),
        svc("b", 2, json!({}), &[]),
        svc("c", 3, json!({}), &[]),
    ];
    let written = apply(&services, &reconcile(&services, &dual()));
    let mut after: Vec<Service> = written
        .into_iter()
        .filter(|s| s.metadata.name.as_deref() != Some("b"))
        .collect();
    after.push(svc("new", 4, json!({}), &[]));
    let plan = reconcile(&after, &dual());
    assert_eq!(plan.status.len(), 1);
    assert_eq!(ips(&plan, "new"), Some(vec!["203.0.113.2".into()]));
}

#[test]
fn a_service_that_stops_being_a_load_balancer_loses_its_addresses() {
    let mut cluster_ip = svc(
        "was-lb",
        1,
        json!({"type": "ClusterIP"}),
        &["203.0.113.1", "fd00:1b::1"],
    );
    // An ingress point of someone else's (not in our ranges) stays.
    let status = cluster_ip.status.as_mut().unwrap();
    let ingress = status
        .load_balancer
        .as_mut()
        .unwrap()
        .ingress
        .as_mut()
        .unwrap();
    ingress.push(LoadBalancerIngress {
        hostname: Some("lb.example.com".into()),
        ..LoadBalancerIngress::default()
    });
    let services = [cluster_ip, svc("next", 2, json!({}), &[])];
    let plan = reconcile(&services, &dual());
    let left = &plan.status[&key("was-lb")];
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].hostname.as_deref(), Some("lb.example.com"));
    // Released in the same round.
    assert_eq!(ips(&plan, "next"), Some(vec!["203.0.113.1".into()]));
    // Nothing of ours: nothing to write.
    let plain = [svc("plain", 1, json!({"type": "ClusterIP"}), &[])];
    assert_eq!(reconcile(&plain, &dual()), Plan::default());
}

#[test]
fn dual_stack_gets_one_address_per_family_in_ip_families_order() {
    let services = [
        svc("v6-first", 1, json!({"ipFamilies": ["IPv6", "IPv4"]}), &[]),
        svc("v4-first", 2, json!({"ipFamilies": ["IPv4", "IPv6"]}), &[]),
    ];
    let plan = reconcile(&services, &dual());
    assert_eq!(
        ips(&plan, "v6-first"),
        Some(vec!["fd00:1b::1".into(), "203.0.113.1".into()])
    );
    assert_eq!(
        ips(&plan, "v4-first"),
        Some(vec!["203.0.113.2".into(), "fd00:1b::2".into()])
    );
    // A family without a range is skipped; with none, no ingress and no problem.
    let config = v4_only("203.0.113.0/29");
    let services = [
        svc("dual", 1, json!({"ipFamilies": ["IPv6", "IPv4"]}), &[]),
        svc("v6", 2, json!({"ipFamilies": ["IPv6"]}), &[]),
    ];
    let plan = reconcile(&services, &config);
    assert_eq!(ips(&plan, "dual"), Some(vec!["203.0.113.1".into()]));
    assert_eq!(ips(&plan, "v6"), None);
    assert!(plan.problems.is_empty());
}

#[test]
fn dropping_a_family_releases_its_address() {
    let services = [svc(
        "was-dual",
        1,
        json!({"ipFamilies": ["IPv4"]}),
        &["203.0.113.1", "fd00:1b::1"],
    )];
    let plan = reconcile(&services, &dual());
    assert_eq!(ips(&plan, "was-dual"), Some(vec!["203.0.113.1".into()]));
}

#[test]
fn exhaustion_is_reported_per_family_and_deletion_unblocks() {
    let config = Config::new(vec![net("203.0.113.0/30"), net("fd00:1b::/64")]).unwrap();
    let dual_stack = json!({"ipFamilies": ["IPv4", "IPv6"]});
    let services = [
        svc("a", 1, json!({}), &[]),
        svc("b", 2, json!({}), &[]),
        svc("c", 3, dual_stack, &[]),
    ];
    let plan = reconcile(&services, &config);
    assert_eq!(ips(&plan, "a"), Some(vec!["203.0.113.1".into()]));
    assert_eq!(ips(&plan, "b"), Some(vec!["203.0.113.2".into()]));
    // The broadcast address (.3) is not given; the IPv6 family is still served.
    assert_eq!(ips(&plan, "c"), Some(vec!["fd00:1b::1".into()]));
    assert_eq!(
        plan.problems[&key("c")],
        vec![Problem::Exhausted(net("203.0.113.0/30"))]
    );
    let written = apply(&services, &plan);
    let after: Vec<Service> = written
        .into_iter()
        .filter(|s| s.metadata.name.as_deref() != Some("a"))
        .collect();
    let plan = reconcile(&after, &config);
    assert_eq!(
        ips(&plan, "c"),
        Some(vec!["203.0.113.1".into(), "fd00:1b::1".into()])
    );
    assert!(plan.problems.is_empty());
}

#[test]
fn unusable_held_addresses_are_replaced() {
    let services = [
        svc("network", 1, json!({}), &["203.0.113.0"]),
        svc("broadcast", 2, json!({}), &["203.0.113.7"]),
        svc("elsewhere", 3, json!({}), &["198.51.100.1"]),
    ];
    let plan = reconcile(&services, &dual());
    assert_eq!(ips(&plan, "network"), Some(vec!["203.0.113.1".into()]));
    assert_eq!(ips(&plan, "broadcast"), Some(vec!["203.0.113.2".into()]));
    assert_eq!(ips(&plan, "elsewhere"), Some(vec!["203.0.113.3".into()]));
}

#[test]
fn ipv6_ranges_allocate_from_the_first_address_after_the_network() {
    let config = Config::new(vec![net("fd00:1b::/64")]).unwrap();
    let v6 = json!({"ipFamilies": ["IPv6"]});
    let services = [
        svc("a", 1, v6.clone(), &["fd00:1b::ffff"]),
        svc("b", 2, v6.clone(), &[]),
        svc("c", 3, v6, &["fd00:1b::"]),
    ];
    let plan = reconcile(&services, &config);
    assert!(!plan.status.contains_key(&key("a")));
    assert_eq!(ips(&plan, "b"), Some(vec!["fd00:1b::1".into()]));
    assert_eq!(ips(&plan, "c"), Some(vec!["fd00:1b::2".into()]));
}

#[test]
fn services_being_deleted_keep_what_they_hold_and_get_nothing_new() {
    let mut holding = svc("holding", 1, json!({}), &["203.0.113.1"]);
    let mut waiting = svc("waiting", 2, json!({}), &[]);
    for s in [&mut holding, &mut waiting] {
        s.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    }
    let services = [holding, waiting, svc("other", 3, json!({}), &[])];
    let plan = reconcile(&services, &dual());
    assert_eq!(plan.status.len(), 1);
    assert_eq!(ips(&plan, "other"), Some(vec!["203.0.113.2".into()]));
}
