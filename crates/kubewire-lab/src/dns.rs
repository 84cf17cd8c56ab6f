//! A pod's `/etc/resolv.conf` and `/etc/hosts`, as the kubelet writes them
//! (`pkg/kubelet/network/dns`, `managedHostsFileContent`) for the Kubernetes DNS spec.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// KEP-2595 (expanded DNS config) limits; the kubelet truncates beyond them.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH_PATHS: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
/// Longer search entries are dropped (a DNS-1123 subdomain is at most 253 characters).
const MAX_SEARCH_ENTRY: usize = 253;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsPolicy {
    ClusterFirst,
    ClusterFirstWithHostNet,
    Default,
    None,
}

impl DnsPolicy {
    /// The pod's `spec.dnsPolicy`; unset means ClusterFirst ("Default" is not the default).
    pub fn from_spec(s: Option<&str>) -> Self {
        match s {
            Some("ClusterFirstWithHostNet") => Self::ClusterFirstWithHostNet,
            Some("Default") => Self::Default,
            Some("None") => Self::None,
            _ => Self::ClusterFirst,
        }
    }
}

/// What decides a pod's resolv.conf.
#[derive(Debug, Clone)]
pub struct PodDns<'a> {
    pub policy: DnsPolicy,
    pub host_network: bool,
    /// The kubelet's `--cluster-dns`.
    pub cluster_dns: &'a [IpAddr],
    pub cluster_domain: &'a str,
    pub namespace: &'a str,
    /// The node's resolv.conf, for the Default policy and the host search list.
    pub host_resolv_conf: &'a str,
    /// `spec.dnsConfig`: appended whatever the policy.
    pub nameservers: &'a [String],
    pub searches: &'a [String],
    pub options: &'a [(String, Option<String>)],
}

struct HostResolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

/// Nameservers accumulate; the last `search` and `options` lines win (as the kubelet parses).
fn parse_host(text: &str) -> HostResolv {
    let mut out = HostResolv {
        nameservers: Vec::new(),
        searches: Vec::new(),
        options: Vec::new(),
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => out.nameservers.extend(words.next().map(str::to_string)),
            Some("search") => {
                out.searches = words.map(|w| w.trim_end_matches('.').to_string()).collect()
            }
            Some("options") => out.options = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    out
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

pub fn resolv_conf(p: &PodDns<'_>) -> String {
    let host = parse_host(p.host_resolv_conf);
    let cluster = match p.policy {
        DnsPolicy::ClusterFirstWithHostNet => true,
        DnsPolicy::ClusterFirst => !p.host_network,
        DnsPolicy::Default | DnsPolicy::None => false,
    } && !p.cluster_dns.is_empty();
    let (mut nameservers, mut searches, base_options): (Vec<String>, Vec<String>, Vec<String>) =
        match p.policy {
            DnsPolicy::None => (Vec::new(), Vec::new(), Vec::new()),
            _ if cluster => {
                let d = p.cluster_domain;
                let mut s = vec![
                    format!("{}.svc.{d}", p.namespace),
                    format!("svc.{d}"),
                    d.to_string(),
                ];
                push_unique(&mut s, host.searches.clone());
                (
                    p.cluster_dns.iter().map(IpAddr::to_string).collect(),
                    s,
                    vec!["ndots:5".to_string()],
                )
            }
            _ => (
                host.nameservers.clone(),
                host.searches.clone(),
                host.options.clone(),
            ),
        };
    push_unique(&mut nameservers, p.nameservers.iter().cloned());
    push_unique(&mut searches, p.searches.iter().cloned());
    nameservers.truncate(MAX_NAMESERVERS);
    searches.retain(|s| s.len() <= MAX_SEARCH_ENTRY);
    searches.truncate(MAX_SEARCH_PATHS);
    while searches.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_SEARCH_CHARS {
        searches.pop();
    }
    // Options merge by name, the pod's value winning; sorted for a stable file.
    let mut options: BTreeMap<String, Option<String>> = base_options
        .iter()
        .map(|o| match o.split_once(':') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (o.clone(), None),
        })
        .collect();
    for (k, v) in p.options {
        options.insert(k.clone(), v.clone());
    }
    let mut out = String::new();
    for ns in &nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| v.as_ref().map_or(k.clone(), |v| format!("{k}:{v}")))
            .collect();
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// One `spec.hostAliases` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// The kubelet-managed hosts file: localhost lines, the pod's own addresses (with its FQDN when
/// it has a subdomain), then host aliases.
pub fn hosts_file(
    pod_ips: &[IpAddr],
    hostname: &str,
    subdomain: Option<&str>,
    namespace: &str,
    cluster_domain: &str,
    aliases: &[HostEntry],
) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        match subdomain.filter(|s| !s.is_empty()) {
            Some(sub) => out.push_str(&format!(
                "{ip}\t{hostname}.{sub}.{namespace}.svc.{cluster_domain}\t{hostname}\n"
            )),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.join("\t")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod<'a>(policy: DnsPolicy, host: &'a str, dns: &'a [IpAddr]) -> PodDns<'a> {
        PodDns {
            policy,
            host_network: false,
            cluster_dns: dns,
            cluster_domain: "cluster.local",
            namespace: "shop",
            host_resolv_conf: host,
            nameservers: &[],
            searches: &[],
            options: &[],
        }
    }

    const HOST: &str = "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch lab.example. corp.example\noptions rotate\n";

    #[test]
    fn cluster_first() {
        let dns = ["10.96.0.10".parse().unwrap()];
        assert_eq!(
            resolv_conf(&pod(DnsPolicy::ClusterFirst, HOST, &dns)),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local lab.example corp.example\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_falls_back_to_default_unless_with_host_net() {
        let dns = ["10.96.0.10".parse().unwrap()];
        let mut p = pod(DnsPolicy::ClusterFirst, HOST, &dns);
        p.host_network = true;
        assert!(resolv_conf(&p).starts_with("nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch lab.example corp.example\noptions rotate"));
        p.policy = DnsPolicy::ClusterFirstWithHostNet;
        assert!(resolv_conf(&p).starts_with("nameserver 10.96.0.10\n"));
    }

    #[test]
    fn none_uses_dns_config_only_and_options_merge() {
        let servers = ["1.2.3.4".to_string()];
        let searches = [
            "ns1.svc.cluster-domain.example".to_string(),
            "my.dns.search.suffix".to_string(),
        ];
        let options = [
            ("ndots".to_string(), Some("2".to_string())),
            ("edns0".to_string(), None),
        ];
        let mut p = pod(DnsPolicy::None, HOST, &[]);
        p.nameservers = &servers;
        p.searches = &searches;
        p.options = &options;
        assert_eq!(
            resolv_conf(&p),
            "nameserver 1.2.3.4\nsearch ns1.svc.cluster-domain.example my.dns.search.suffix\noptions edns0 ndots:2\n"
        );
        let dns = ["10.96.0.10".parse().unwrap()];
        let mut q = pod(DnsPolicy::ClusterFirst, "", &dns);
        q.options = &options;
        assert!(
            resolv_conf(&q).ends_with("options edns0 ndots:2\n"),
            "the pod's ndots wins"
        );
    }

    #[test]
    fn limits_truncate() {
        let dns = ["10.96.0.10".parse().unwrap()];
        let servers: Vec<String> = (1..=5).map(|i| format!("192.0.2.{i}")).collect();
        let searches: Vec<String> = (0..40).map(|i| format!("s{i}.example")).collect();
        let mut p = pod(DnsPolicy::ClusterFirst, "", &dns);
        p.nameservers = &servers;
        p.searches = &searches;
        let text = resolv_conf(&p);
        assert_eq!(text.matches("nameserver").count(), 3);
        assert_eq!(
            text.lines()
                .find(|l| l.starts_with("search"))
                .unwrap()
                .split(' ')
                .count()
                - 1,
            32
        );
    }

    #[test]
    fn hosts() {
        let ips: Vec<IpAddr> = vec!["10.244.1.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let text = hosts_file(
            &ips,
            "web-0",
            Some("web"),
            "shop",
            "cluster.local",
            &[HostEntry {
                ip: "192.0.2.1".into(),
                hostnames: vec!["a".into(), "b".into()],
            }],
        );
        assert!(text.contains("10.244.1.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n"));
        assert!(text.contains("fd00::5\tweb-0.web.shop.svc.cluster.local\tweb-0\n"));
        assert!(text.ends_with("# Entries added by HostAliases.\n192.0.2.1\ta\tb\n"));
        assert!(
            hosts_file(&ips[..1], "p", None, "d", "cluster.local", &[])
                .ends_with("10.244.1.5\tp\n")
        );
    }
}
