//! The model as nftables: one table, `inet kubewire-proxy`, whose rules are fixed and whose
//! content lives in sets and maps, so that an endpoint change is a few element updates and
//! never a rebuild (DESIGN.md: "cost grows with the change").
//!
//! Every service destination is a key `daddr . l4proto . dport` (`l4proto . dport` for
//! NodePorts) in the set of its class with the same number of endpoints, `N`. One rule per
//! (class, family, N) picks an endpoint:
//!
//! ```text
//! ip daddr . meta l4proto . th dport @cip4-n3
//!     dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @cip4-be
//! ```
//!
//! where the map `cip4-be` holds `key . i : endpoint . port` for i < N. There are no per-service
//! or per-endpoint chains (kube-proxy's nftables mode has both; each chain costs ~1 ms of kernel
//! time to create). Hook points and priorities are kube-proxy's documented contract: DNAT in
//! `nat` prerouting/output at dstnat, masquerade in `nat` postrouting at srcnat, no-endpoint
//! verdicts in `filter` input/forward/output at dstnat - 10.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use crate::model::{Class, Desired, Family, Key, Protocol, WhenEmpty};

/// The proxy's nftables table (family `inet`).
pub const TABLE: &str = "kubewire-proxy";
/// The packet mark bit that asks postrouting to masquerade (kube-proxy uses the same bit; the
/// mark is not an API).
const MASQUERADE_MARK: &str = "0x00004000";

/// One named set or map of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetId {
    /// Keys of `class` whose entry has exactly `n` (> 0) endpoints.
    Count {
        class: Class,
        family: Family,
        n: usize,
    },
    /// Map `key . index : endpoint . port`.
    Backends {
        class: Class,
        family: Family,
    },
    /// Keys whose entry has no endpoint and rejects / drops.
    Reject {
        class: Class,
        family: Family,
    },
    Drop {
        class: Class,
        family: Family,
    },
    /// Keys marked for masquerade under the class's source condition: ClusterIPs from non-pod
    /// sources; external IPs and NodePorts of `Cluster`-policy Services always; the
    /// from-inside classes (every key of theirs is here) when the node itself is the source.
    Masquerade {
        class: Class,
        family: Family,
    },
    /// `endpoint . endpoint`: a pod reaching itself through a Service is masqueraded, or its
    /// reply would never pass back through the node's conntrack.
    Hairpin(Family),
    /// The cluster's pod CIDRs (interval set).
    PodCidrs(Family),
    /// The addresses NodePorts answer on.
    NodePortIps(Family),
    /// Load-balancer keys with source ranges, and `key . allowed source` (interval set).
    Firewall(Family),
    FirewallAllow(Family),
}

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SetId::Count { class, family, n } => {
                write!(f, "{}{}-n{n}", class.tag(), family.suffix())
            }
            SetId::Backends { class, family } => {
                write!(f, "{}{}-be", class.tag(), family.suffix())
            }
            SetId::Reject { class, family } => {
                write!(f, "{}{}-reject", class.tag(), family.suffix())
            }
            SetId::Drop { class, family } => write!(f, "{}{}-drop", class.tag(), family.suffix()),
            SetId::Masquerade { class, family } => {
                write!(f, "{}{}-masq", class.tag(), family.suffix())
            }
            SetId::Hairpin(family) => write!(f, "hairpin{}", family.suffix()),
            SetId::PodCidrs(family) => write!(f, "pods{}", family.suffix()),
            SetId::NodePortIps(family) => write!(f, "nodeport-ips{}", family.suffix()),
            SetId::Firewall(family) => write!(f, "fw{}", family.suffix()),
            SetId::FirewallAllow(family) => write!(f, "fwallow{}", family.suffix()),
        }
    }
}

/// Elements of a set (value `None`) or map, as nft text.
pub type Elements = BTreeMap<String, Option<String>>;

/// The table's whole content: every set and map with its elements, and the destinations with
/// session affinity. Rules follow from which sets exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    pub sets: BTreeMap<SetId, Elements>,
    pub sticky: Vec<Sticky>,
    /// NodePorts answer only on the addresses in `nodeport-ips<family>`, not on every local one.
    pub node_port_ips_only: bool,
}

/// A destination with `sessionAffinity: ClientIP` and endpoints. Stickiness needs state per
/// endpoint (which clients it had lately), so these take kube-proxy's layout: a chain per
/// destination that sends a client seen lately by an endpoint back to it, else picks one at
/// random, and a chain plus a dynamic set (client addresses, with the affinity timeout) per
/// endpoint. Affinity is the exception, so the chains stay few.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    pub class: Class,
    pub family: Family,
    /// The key as set element text.
    pub key: String,
    pub protocol: Protocol,
    pub backends: Vec<SocketAddr>,
    pub timeout: u32,
}

impl Tables {
    /// The sets and elements that program `desired`.
    pub fn from_desired(desired: &Desired) -> Tables {
        let mut sets: BTreeMap<SetId, Elements> = BTreeMap::new();
        for family in Family::ALL {
            for class in Class::ALL {
                for id in [
                    SetId::Backends { class, family },
                    SetId::Reject { class, family },
                    SetId::Drop { class, family },
                    SetId::Masquerade { class, family },
                ] {
                    sets.insert(id, Elements::new());
                }
            }
            sets.insert(SetId::Hairpin(family), Elements::new());
            sets.insert(SetId::Firewall(family), Elements::new());
            sets.insert(SetId::FirewallAllow(family), Elements::new());
            let pods = desired
                .pod_cidrs
                .iter()
                .filter(|c| Family::of(c.addr()) == family)
                .map(|c| (c.trunc().to_string(), None))
                .collect();
            sets.insert(SetId::PodCidrs(family), pods);
            let node_port_ips = desired
                .node_port_ips
                .iter()
                .flatten()
                .filter(|ip| Family::of(**ip) == family)
                .map(|ip| (ip.to_string(), None))
                .collect();
            sets.insert(SetId::NodePortIps(family), node_port_ips);
        }
        let mut put = |id: SetId, key: String, value: Option<String>| {
            sets.entry(id).or_default().insert(key, value);
        };
        let mut sticky = Vec::new();
        for (key, entry) in &desired.entries {
            let (class, family) = (key.class, key.family);
            let k = key_text(key);
            let n = entry.backends.len();
            if !entry.source_ranges.is_empty() {
                put(SetId::Firewall(family), k.clone(), None);
                for range in &entry.source_ranges {
                    put(SetId::FirewallAllow(family), format!("{k} . {range}"), None);
                }
            }
            if let (Some(timeout), true) = (entry.affinity_timeout, n > 0) {
                sticky.push(Sticky {
                    class,
                    family,
                    key: k.clone(),
                    protocol: key.protocol,
                    backends: entry.backends.clone(),
                    timeout,
                });
                for b in &entry.backends {
                    put(
                        SetId::Hairpin(family),
                        format!("{} . {}", b.ip(), b.ip()),
                        None,
                    );
                }
            } else if n == 0 {
                let id = match entry.when_empty {
                    WhenEmpty::Reject => SetId::Reject { class, family },
                    WhenEmpty::Drop => SetId::Drop { class, family },
                };
                put(id, k.clone(), None);
            } else {
                put(SetId::Count { class, family, n }, k.clone(), None);
                for (i, b) in entry.backends.iter().enumerate() {
                    put(
                        SetId::Backends { class, family },
                        format!("{k} . {i}"),
                        Some(format!("{} . {}", b.ip(), b.port())),
                    );
                    put(
                        SetId::Hairpin(family),
                        format!("{} . {}", b.ip(), b.ip()),
                        None,
                    );
                }
            }
            let masquerade = match class {
                Class::ExternalIp | Class::NodePort => entry.masquerade,
                Class::ClusterIp | Class::ExternalIpFromInside | Class::NodePortFromInside => true,
            };
            if masquerade {
                put(SetId::Masquerade { class, family }, k, None);
            }
        }
        Tables {
            sets,
            sticky,
            node_port_ips_only: desired.node_port_ips.is_some(),
        }
    }

    /// The transaction that replaces the whole table with this content.
    pub fn render_full(&self) -> String {
        // `add table` first makes the delete valid on a first run; the table is re-declared
        // rather than flushed because nft refuses to re-add interval elements in the same
        // transaction as a flush. Conntrack keeps the NAT of established connections.
        let mut s = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
        let _ = writeln!(s, "table inet {TABLE} {{");
        for (id, elements) in &self.sets {
            let _ = writeln!(s, "  {} {id} {{", if is_map(id) { "map" } else { "set" });
            let _ = writeln!(s, "    {}", declaration(id));
            if !elements.is_empty() {
                let list: Vec<String> = elements
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k} : {v}"),
                        None => k.clone(),
                    })
                    .collect();
                let _ = writeln!(s, "    elements = {{ {} }}", list.join(", "));
            }
            s.push_str("  }\n");
        }
        for (i, st) in self.sticky.iter().enumerate() {
            for k in 0..st.backends.len() {
                let _ = writeln!(
                    s,
                    "  set aff{i}-c{k} {{\n    typeof {} saddr; flags dynamic,timeout; timeout {}s;\n  }}",
                    st.family.nft_prefix(),
                    st.timeout
                );
            }
        }
        s.push_str(&self.sticky_chains());
        s.push_str(&self.chains());
        s.push_str("}\n");
        s
    }

    /// The chains of the [`Sticky`] destinations (before the chains that jump to them).
    fn sticky_chains(&self) -> String {
        let mut s = String::new();
        for (i, st) in self.sticky.iter().enumerate() {
            let p = st.family.nft_prefix();
            for (k, b) in st.backends.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  chain aff{i}-ep{k} {{\n    update @aff{i}-c{k} {{ {p} saddr }}\n    meta l4proto {} dnat {p} to {b}\n  }}",
                    st.protocol
                );
            }
            let _ = writeln!(s, "  chain aff{i} {{");
            for k in 0..st.backends.len() {
                let _ = writeln!(s, "    {p} saddr @aff{i}-c{k} goto aff{i}-ep{k}");
            }
            let targets: Vec<String> = (0..st.backends.len())
                .map(|k| format!("{k} : goto aff{i}-ep{k}"))
                .collect();
            let _ = writeln!(
                s,
                "    numgen random mod {} vmap {{ {} }}\n  }}",
                st.backends.len(),
                targets.join(", ")
            );
        }
        s
    }

    /// The element updates that turn `self` (what the kernel holds) into `desired`, as one
    /// transaction; `None` when the rules themselves must change (a set that does not exist yet,
    /// or different pod CIDRs), which takes [`Tables::render_full`]. Sets `desired` no longer
    /// uses are emptied, not removed, so their rules stay valid: see [`Tables::after_delta`].
    pub fn render_delta(&self, desired: &Tables) -> Option<String> {
        if desired.sets.keys().any(|id| !self.sets.contains_key(id))
            || self.sticky != desired.sticky
            || self.node_port_ips_only != desired.node_port_ips_only
        {
            return None;
        }
        let empty = Elements::new();
        let mut deletes = String::new();
        let mut adds = String::new();
        for (id, old) in &self.sets {
            let new = desired.sets.get(id).unwrap_or(&empty);
            // Interval sets are re-declared rather than edited (see `render_full`).
            if matches!(id, SetId::PodCidrs(_) | SetId::FirewallAllow(_)) {
                if old != new {
                    return None;
                }
                continue;
            }
            let gone: Vec<&str> = old
                .iter()
                .filter(|(k, v)| new.get(*k) != Some(*v))
                .map(|(k, _)| k.as_str())
                .collect();
            let added: Vec<String> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| match v {
                    Some(v) => format!("{k} : {v}"),
                    None => k.clone(),
                })
                .collect();
            if !gone.is_empty() {
                let _ = writeln!(
                    deletes,
                    "delete element inet {TABLE} {id} {{ {} }}",
                    gone.join(", ")
                );
            }
            if !added.is_empty() {
                let _ = writeln!(
                    adds,
                    "add element inet {TABLE} {id} {{ {} }}",
                    added.join(", ")
                );
            }
        }
        deletes.push_str(&adds);
        Some(deletes)
    }

    /// What the kernel holds after applying `render_delta(desired)`: `desired`'s elements, and
    /// every set `self` had (emptied when `desired` does not use it).
    pub fn after_delta(&self, desired: &Tables) -> Tables {
        let mut sets = desired.sets.clone();
        for id in self.sets.keys() {
            sets.entry(*id).or_default();
        }
        Tables {
            sets,
            sticky: desired.sticky.clone(),
            node_port_ips_only: desired.node_port_ips_only,
        }
    }

    fn counts(&self, class: Class, family: Family) -> impl Iterator<Item = usize> + '_ {
        self.sets.keys().filter_map(move |id| match *id {
            SetId::Count {
                class: c,
                family: f,
                n,
            } if c == class && f == family => Some(n),
            _ => None,
        })
    }

    fn chains(&self) -> String {
        let mut s = String::new();
        let mut chain = |name: &str, hook: Option<&str>, rules: Vec<String>| {
            let _ = writeln!(s, "  chain {name} {{");
            if let Some(hook) = hook {
                let _ = writeln!(s, "    {hook}; policy accept;");
            }
            for r in rules {
                let _ = writeln!(s, "    {r}");
            }
            s.push_str("  }\n");
        };
        // The numeric priorities are dstnat (-100), srcnat (100) and dstnat - 10: nft 1.0 does
        // not accept the names in every hook of an inet table.
        chain(
            "nat-prerouting",
            Some("type nat hook prerouting priority -100"),
            vec!["jump services".into()],
        );
        chain(
            "nat-output",
            Some("type nat hook output priority -100"),
            vec!["jump services".into()],
        );
        chain(
            "nat-postrouting",
            Some("type nat hook postrouting priority 100"),
            vec!["jump masquerading".into()],
        );
        for hook in ["prerouting", "input", "forward", "output"] {
            // Load-balancer source ranges are checked before DNAT, on traffic arriving and on
            // the node's own; missing endpoints once routing knows where a packet goes.
            let mut jumps = Vec::new();
            if matches!(hook, "input" | "forward" | "output") {
                jumps.push("ct state new jump endpoints-check".to_string());
            }
            if matches!(hook, "prerouting" | "output") {
                jumps.push("ct state new jump firewall-check".to_string());
            }
            chain(
                &format!("filter-{hook}"),
                Some(&format!("type filter hook {hook} priority -110")),
                jumps,
            );
        }
        let mark = format!("meta mark set meta mark or {MASQUERADE_MARK}");
        let to_inside = |target: &str| {
            let mut v = vec![format!("fib saddr type local goto {target}")];
            for family in Family::ALL {
                let p = family.nft_prefix();
                v.push(format!(
                    "{p} saddr @{} goto {target}",
                    SetId::PodCidrs(family)
                ));
            }
            v
        };

        let mut services = Vec::new();
        for family in Family::ALL {
            let p = family.nft_prefix();
            let masq = |class| SetId::Masquerade { class, family };
            services.push(format!(
                "{} @{} {p} saddr != @{} {mark}",
                self.match_key(Class::ClusterIp, family),
                masq(Class::ClusterIp),
                SetId::PodCidrs(family)
            ));
            for class in [Class::ExternalIp, Class::NodePort] {
                services.push(format!(
                    "{} @{} {mark}",
                    self.match_key(class, family),
                    masq(class)
                ));
            }
            for class in [Class::ExternalIpFromInside, Class::NodePortFromInside] {
                services.push(format!(
                    "fib saddr type local {} @{} {mark}",
                    self.match_key(class, family),
                    masq(class)
                ));
            }
        }
        services.extend(self.dnat_rules(Class::ClusterIp));
        services.extend(to_inside("services-inside"));
        services.push("goto services-outside".into());
        chain("services", None, services);

        let mut inside = self.dnat_rules(Class::ExternalIpFromInside);
        inside.extend(self.dnat_rules(Class::NodePortFromInside));
        inside.push("goto services-outside".into());
        chain("services-inside", None, inside);
        let mut outside = self.dnat_rules(Class::ExternalIp);
        outside.extend(self.dnat_rules(Class::NodePort));
        chain("services-outside", None, outside);

        let mut masquerading = vec![format!(
            "meta mark & {MASQUERADE_MARK} == {MASQUERADE_MARK} meta mark set meta mark xor {MASQUERADE_MARK} masquerade fully-random"
        )];
        for family in Family::ALL {
            let p = family.nft_prefix();
            masquerading.push(format!(
                "ct status dnat {p} saddr . {p} daddr @{} masquerade fully-random",
                SetId::Hairpin(family)
            ));
        }
        chain("masquerading", None, masquerading);

        let firewall = Family::ALL
            .iter()
            .map(|family| {
                let p = family.nft_prefix();
                format!(
                    "{p} daddr . meta l4proto . th dport @{} {p} daddr . meta l4proto . th dport . {p} saddr != @{} drop",
                    SetId::Firewall(*family),
                    SetId::FirewallAllow(*family)
                )
            })
            .collect();
        chain("firewall-check", None, firewall);

        let mut check = self.verdict_rules(Class::ClusterIp);
        check.extend(to_inside("endpoints-check-inside"));
        check.push("goto endpoints-check-outside".into());
        chain("endpoints-check", None, check);
        let mut inside = Vec::new();
        for class in [Class::ExternalIpFromInside, Class::NodePortFromInside] {
            inside.extend(self.verdict_rules(class));
            // Handled here: the outside verdicts (a Local policy's drop) are not for us.
            for family in Family::ALL {
                inside.push(format!(
                    "{} @{} return",
                    self.match_key(class, family),
                    SetId::Masquerade { class, family }
                ));
            }
        }
        inside.push("goto endpoints-check-outside".into());
        chain("endpoints-check-inside", None, inside);
        let mut outside = self.verdict_rules(Class::ExternalIp);
        outside.extend(self.verdict_rules(Class::NodePort));
        chain("endpoints-check-outside", None, outside);
        s
    }

    /// `reject` / `drop` for the class's keys without endpoints.
    fn verdict_rules(&self, class: Class) -> Vec<String> {
        let mut rules = Vec::new();
        for family in Family::ALL {
            let key = self.match_key(class, family);
            rules.push(format!("{key} @{} reject", SetId::Reject { class, family }));
            rules.push(format!("{key} @{} drop", SetId::Drop { class, family }));
        }
        rules
    }

    /// The key expression with what a packet must be to be looked up: NodePorts only on the
    /// node-port addresses (kube-proxy's nftables mode: the node's primary IPs by default), or
    /// on every local non-loopback address, in the family of the set.
    fn match_key(&self, class: Class, family: Family) -> String {
        let key = key_expr(class, family);
        if class.keyed_by_ip() {
            return key;
        }
        let on = if self.node_port_ips_only {
            format!(
                "{} daddr @{}",
                family.nft_prefix(),
                SetId::NodePortIps(family)
            )
        } else {
            match family {
                Family::V4 => "fib daddr type local ip daddr != 127.0.0.0/8".to_string(),
                Family::V6 => "fib daddr type local ip6 daddr != ::1".to_string(),
            }
        };
        format!("meta nfproto {} {on} {key}", family.nfproto())
    }

    fn dnat_rules(&self, class: Class) -> Vec<String> {
        let mut rules = Vec::new();
        for family in Family::ALL {
            let p = family.nft_prefix();
            let key = self.match_key(class, family);
            let lookup = key_expr(class, family);
            for n in self.counts(class, family) {
                rules.push(format!(
                    "{key} @{} dnat {p} to {lookup} . numgen random mod {n} map @{}",
                    SetId::Count { class, family, n },
                    SetId::Backends { class, family }
                ));
            }
            for (i, st) in self.sticky.iter().enumerate() {
                if st.class == class && st.family == family {
                    rules.push(format!("{key} {{ {} }} goto aff{i}", st.key));
                }
            }
        }
        rules
    }
}

/// The key expression of a class, without the packet filters it needs.
fn key_expr(class: Class, family: Family) -> String {
    if class.keyed_by_ip() {
        format!("{} daddr . meta l4proto . th dport", family.nft_prefix())
    } else {
        "meta l4proto . th dport".to_string()
    }
}

fn is_map(id: &SetId) -> bool {
    matches!(id, SetId::Backends { .. })
}

fn declaration(id: &SetId) -> String {
    match *id {
        SetId::Count { class, family, .. }
        | SetId::Reject { class, family }
        | SetId::Drop { class, family }
        | SetId::Masquerade { class, family } => format!("typeof {}", key_expr(class, family)),
        SetId::Backends { class, family } => format!(
            "typeof {} . numgen random mod 1 : {} daddr . th dport",
            key_expr(class, family),
            family.nft_prefix()
        ),
        SetId::Hairpin(family) => {
            let p = family.nft_prefix();
            format!("typeof {p} saddr . {p} daddr")
        }
        SetId::Firewall(family) => {
            format!(
                "typeof {} daddr . meta l4proto . th dport",
                family.nft_prefix()
            )
        }
        SetId::FirewallAllow(family) => {
            let p = family.nft_prefix();
            format!("typeof {p} daddr . meta l4proto . th dport . {p} saddr; flags interval;")
        }
        SetId::NodePortIps(Family::V4) => "type ipv4_addr;".to_string(),
        SetId::NodePortIps(Family::V6) => "type ipv6_addr;".to_string(),
        SetId::PodCidrs(Family::V4) => "type ipv4_addr; flags interval;".to_string(),
        SetId::PodCidrs(Family::V6) => "type ipv6_addr; flags interval;".to_string(),
    }
}

/// A key as set element text: `ip . proto . port` or `proto . port`.
fn key_text(key: &Key) -> String {
    match key.ip {
        Some(ip) => format!("{ip} . {} . {}", key.protocol, key.port),
        None => format!("{} . {}", key.protocol, key.port),
    }
}

#[cfg(test)]
mod tests;
