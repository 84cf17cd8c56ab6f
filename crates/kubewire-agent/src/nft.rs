//! Masquerade of pod traffic leaving the cluster, in nftables: the agent's own table
//! `inet kubewire-podnet` (other kubewire parts keep their own tables), written as one `nft -f -`
//! transaction so packets see either the old or the new ruleset, never a mix.
//!
//! The table is small (one chain, two interval sets, two rules), so a change re-declares all of
//! it inside the transaction (`delete table` + definitions; `flush table` would not do: nft 1.0
//! refuses to re-add interval elements that overlap the flushed ones in the same transaction,
//! "File exists"). Conntrack keeps the NAT bindings of established connections, so re-declaring
//! (e.g. when the agent restarts) drops nothing.

use ipnet::IpNet;

pub use kubewire_datapath::nft::{NftError, apply};

use crate::compile::Masquerade;

/// The agent's nftables table (family `inet`).
pub const TABLE: &str = "kubewire-podnet";

/// The transaction that makes the table hold exactly `masq` (or removes it when `None`).
pub fn render(masq: Option<&Masquerade>) -> String {
    // `add table` first makes the delete valid on a first run.
    let mut s = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    let Some(m) = masq else {
        return s;
    };
    s.push_str(&format!("table inet {TABLE} {{\n"));
    let family = |v4: bool| -> Vec<String> {
        m.cluster
            .iter()
            .filter(|c| c.addr().is_ipv4() == v4)
            .map(ToString::to_string)
            .collect()
    };
    for (set, ty, v4) in [
        ("cluster4", "ipv4_addr", true),
        ("cluster6", "ipv6_addr", false),
    ] {
        let elems = family(v4);
        s.push_str(&format!("  set {set} {{\n    type {ty}; flags interval;\n"));
        if !elems.is_empty() {
            s.push_str(&format!("    elements = {{ {} }}\n", elems.join(", ")));
        }
        s.push_str("  }\n");
    }
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for local in &m.local {
        let (proto, set) = match local {
            IpNet::V4(_) => ("ip", "cluster4"),
            IpNet::V6(_) => ("ip6", "cluster6"),
        };
        s.push_str(&format!(
            "    {proto} saddr {local} {proto} daddr != @{set} masquerade\n"
        ));
    }
    s.push_str("  }\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_families_and_removal() {
        let m = Masquerade {
            local: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
            ],
            cluster: vec!["10.244.0.0/16".parse().unwrap()],
        };
        let s = render(Some(&m));
        assert!(s.starts_with(
            "add table inet kubewire-podnet\ndelete table inet kubewire-podnet\ntable inet"
        ));
        assert!(s.contains("elements = { 10.244.0.0/16 }"));
        assert!(
            !s.contains("elements = {  }"),
            "an empty set has no elements line"
        );
        assert!(s.contains("ip saddr 10.244.1.0/24 ip daddr != @cluster4 masquerade"));
        assert!(s.contains("ip6 saddr fd00:1::/64 ip6 daddr != @cluster6 masquerade"));
        assert_eq!(
            render(None),
            "add table inet kubewire-podnet\ndelete table inet kubewire-podnet\n"
        );
    }
}
