use std::net::SocketAddr;

use super::*;
use crate::model::{Entry, Protocol};

fn entry(backends: &[&str], when_empty: WhenEmpty, masquerade: bool) -> Entry {
    Entry {
        backends: backends
            .iter()
            .map(|b| b.parse::<SocketAddr>().expect("addr"))
            .collect(),
        when_empty,
        masquerade,
        affinity_timeout: None,
        source_ranges: Vec::new(),
        service: "default/web:http".into(),
    }
}

fn cip(ip: &str, port: u16) -> Key {
    let ip = ip.parse().expect("ip");
    Key {
        family: Family::of(ip),
        class: Class::ClusterIp,
        ip: Some(ip),
        protocol: Protocol::Tcp,
        port,
    }
}

fn desired(entries: Vec<(Key, Entry)>) -> Desired {
    Desired {
        entries: entries.into_iter().collect(),
        pod_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
        ..Desired::default()
    }
}

#[test]
fn entries_land_in_count_sets_and_backend_maps() {
    let d = desired(vec![
        (
            cip("10.96.0.10", 80),
            entry(
                &["10.244.1.5:8080", "10.244.2.5:8080"],
                WhenEmpty::Reject,
                true,
            ),
        ),
        (cip("10.96.0.11", 53), entry(&[], WhenEmpty::Reject, true)),
        (
            cip("fd00:10:96::10", 80),
            entry(&["[fd00:10:244:1::5]:8080"], WhenEmpty::Reject, true),
        ),
    ]);
    let t = Tables::from_desired(&d);
    let full = t.render_full();
    for expected in [
        "set cip4-n2 {",
        "elements = { 10.96.0.10 . tcp . 80 }",
        "10.96.0.10 . tcp . 80 . 0 : 10.244.1.5 . 8080, 10.96.0.10 . tcp . 80 . 1 : 10.244.2.5 . 8080",
        "set cip4-reject {",
        "elements = { 10.96.0.11 . tcp . 53 }",
        "fd00:10:96::10 . tcp . 80 . 0 : fd00:10:244:1::5 . 8080",
        "ip daddr . meta l4proto . th dport @cip4-n2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @cip4-be",
        "ip6 daddr . meta l4proto . th dport @cip6-n1 dnat ip6 to ip6 daddr . meta l4proto . th dport . numgen random mod 1 map @cip6-be",
        "ip daddr . meta l4proto . th dport @cip4-reject reject",
        "elements = { 10.244.1.5 . 10.244.1.5, 10.244.2.5 . 10.244.2.5 }",
        "elements = { 10.244.0.0/16 }",
    ] {
        assert!(full.contains(expected), "missing {expected:?} in:\n{full}");
    }
    assert!(
        !full.contains("-n0"),
        "no count set for empty entries:\n{full}"
    );
}

#[test]
fn node_ports_match_local_non_loopback_addresses_of_their_family() {
    let np = Key {
        family: Family::V4,
        class: Class::NodePort,
        ip: None,
        protocol: Protocol::Udp,
        port: 30053,
    };
    let d = desired(vec![(
        np,
        entry(&["10.244.1.5:53"], WhenEmpty::Reject, true),
    )]);
    let full = Tables::from_desired(&d).render_full();
    assert!(full.contains(
        "meta nfproto ipv4 fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport @np4-n1 dnat ip to meta l4proto . th dport . numgen random mod 1 map @np4-be"
    ), "{full}");
    assert!(full.contains("udp . 30053 . 0 : 10.244.1.5 . 53"));
    assert!(
        full.contains("set np4-masq {"),
        "Cluster policy masquerades"
    );
}

#[test]
fn an_endpoint_change_is_a_few_element_updates() {
    let k = cip("10.96.0.10", 80);
    let before = Tables::from_desired(&desired(vec![(
        k,
        entry(
            &["10.244.1.5:8080", "10.244.2.5:8080"],
            WhenEmpty::Reject,
            true,
        ),
    )]));
    // Same count, one endpoint replaced: one map element and the hairpin pair change.
    let after = Tables::from_desired(&desired(vec![(
        k,
        entry(
            &["10.244.1.5:8080", "10.244.3.5:8080"],
            WhenEmpty::Reject,
            true,
        ),
    )]));
    let delta = before.render_delta(&after).expect("no rule change");
    assert_eq!(
        delta,
        "delete element inet kubewire-proxy cip4-be { 10.96.0.10 . tcp . 80 . 1 }\n\
         delete element inet kubewire-proxy hairpin4 { 10.244.2.5 . 10.244.2.5 }\n\
         add element inet kubewire-proxy cip4-be { 10.96.0.10 . tcp . 80 . 1 : 10.244.3.5 . 8080 }\n\
         add element inet kubewire-proxy hairpin4 { 10.244.3.5 . 10.244.3.5 }\n"
    );
    assert_eq!(before.render_delta(&before).as_deref(), Some(""));

    // Down to one endpoint: a count set that does not exist yet needs a rule, so the table is
    // re-declared, keeping the emptied `n2` (see the runtime's Applier)...
    let one = Tables::from_desired(&desired(vec![(
        k,
        entry(&["10.244.1.5:8080"], WhenEmpty::Reject, true),
    )]));
    assert_eq!(before.render_delta(&one), None);
    let declared = before.after_delta(&one);
    assert!(
        declared.sets[&SetId::Count {
            class: Class::ClusterIp,
            family: Family::V4,
            n: 2
        }]
            .is_empty()
    );
    // ...so that going back to two endpoints is element updates only.
    let back = declared.render_delta(&before).expect("n2 is declared");
    assert!(back.contains("add element inet kubewire-proxy cip4-n2 { 10.96.0.10 . tcp . 80 }"));
    assert!(back.contains("delete element inet kubewire-proxy cip4-n1 { 10.96.0.10 . tcp . 80 }"));
}

#[test]
fn other_pod_cidrs_redeclare_the_table() {
    let a = Tables::from_desired(&desired(vec![]));
    let mut d = desired(vec![]);
    d.pod_cidrs = vec!["10.245.0.0/16".parse().expect("cidr")];
    assert_eq!(a.render_delta(&Tables::from_desired(&d)), None);
}

#[test]
fn local_policy_entries_do_not_masquerade_outside_traffic() {
    let ext = Key {
        family: Family::V4,
        class: Class::ExternalIp,
        ip: Some("203.0.113.7".parse().expect("ip")),
        protocol: Protocol::Tcp,
        port: 80,
    };
    let t = Tables::from_desired(&desired(vec![(ext, entry(&[], WhenEmpty::Drop, false))]));
    assert!(
        t.sets[&SetId::Masquerade {
            class: Class::ExternalIp,
            family: Family::V4
        }]
            .is_empty()
    );
    assert!(
        t.sets[&SetId::Drop {
            class: Class::ExternalIp,
            family: Family::V4
        }]
            .contains_key("203.0.113.7 . tcp . 80")
    );
}

#[test]
fn client_ip_affinity_takes_per_endpoint_chains_and_dynamic_sets() {
    let k = cip("10.96.0.13", 80);
    let mut sticky = entry(
        &["10.244.1.5:8080", "10.244.2.5:8080"],
        WhenEmpty::Reject,
        true,
    );
    sticky.affinity_timeout = Some(60);
    let t = Tables::from_desired(&desired(vec![(k, sticky.clone())]));
    let full = t.render_full();
    for expected in [
        "set aff0-c1 {\n    typeof ip saddr; flags dynamic,timeout; timeout 60s;",
        "chain aff0-ep1 {\n    update @aff0-c1 { ip saddr }\n    meta l4proto tcp dnat ip to 10.244.2.5:8080\n  }",
        "ip saddr @aff0-c0 goto aff0-ep0",
        "numgen random mod 2 vmap { 0 : goto aff0-ep0, 1 : goto aff0-ep1 }",
        "ip daddr . meta l4proto . th dport { 10.96.0.13 . tcp . 80 } goto aff0",
        "elements = { 10.244.1.5 . 10.244.1.5, 10.244.2.5 . 10.244.2.5 }",
    ] {
        assert!(full.contains(expected), "missing {expected:?} in:\n{full}");
    }
    assert!(
        !full.contains("cip4-n2"),
        "not in the random-pick sets:\n{full}"
    );
    // Its endpoints changing re-declares (its chains change); other entries' do not.
    sticky.backends.pop();
    let other = Tables::from_desired(&desired(vec![(k, sticky)]));
    assert_eq!(t.render_delta(&other), None);
}

#[test]
fn source_ranges_become_a_firewall_set() {
    let lb = Key {
        family: Family::V4,
        class: Class::ExternalIp,
        ip: Some("203.0.113.8".parse().expect("ip")),
        protocol: Protocol::Tcp,
        port: 80,
    };
    let mut guarded = entry(&["10.244.1.5:8080"], WhenEmpty::Reject, true);
    guarded.source_ranges = vec!["192.0.2.0/24".parse().expect("cidr")];
    let t = Tables::from_desired(&desired(vec![(lb, guarded.clone())]));
    let full = t.render_full();
    for expected in [
        "set fw4 {\n    typeof ip daddr . meta l4proto . th dport\n    elements = { 203.0.113.8 . tcp . 80 }",
        "elements = { 203.0.113.8 . tcp . 80 . 192.0.2.0/24 }",
        "ip daddr . meta l4proto . th dport @fw4 ip daddr . meta l4proto . th dport . ip saddr != @fwallow4 drop",
        "type filter hook prerouting priority -110; policy accept;\n    ct state new jump firewall-check",
    ] {
        assert!(full.contains(expected), "missing {expected:?} in:\n{full}");
    }
    guarded.source_ranges = vec!["192.0.2.0/25".parse().expect("cidr")];
    let narrower = Tables::from_desired(&desired(vec![(lb, guarded)]));
    assert_eq!(
        t.render_delta(&narrower),
        None,
        "interval sets are re-declared"
    );
}

#[test]
fn node_ports_can_be_limited_to_the_node_port_addresses() {
    let np = Key {
        family: Family::V4,
        class: Class::NodePort,
        ip: None,
        protocol: Protocol::Tcp,
        port: 30080,
    };
    let mut d = desired(vec![(
        np,
        entry(&["10.244.1.5:8080"], WhenEmpty::Reject, true),
    )]);
    d.node_port_ips = Some(vec!["198.51.100.10".parse().expect("ip")]);
    let primary = Tables::from_desired(&d);
    let full = primary.render_full();
    assert!(
        full.contains(
            "meta nfproto ipv4 ip daddr @nodeport-ips4 meta l4proto . th dport @np4-n1 dnat ip to"
        ),
        "{full}"
    );
    assert!(full.contains("elements = { 198.51.100.10 }"), "{full}");
    assert!(!full.contains("fib daddr type local"), "{full}");
    // Another primary address is an element update; switching to every address is new rules.
    d.node_port_ips = Some(vec!["198.51.100.11".parse().expect("ip")]);
    let moved = primary
        .render_delta(&Tables::from_desired(&d))
        .expect("elements only");
    assert!(moved.contains("add element inet kubewire-proxy nodeport-ips4 { 198.51.100.11 }"));
    d.node_port_ips = None;
    assert_eq!(primary.render_delta(&Tables::from_desired(&d)), None);
}
