//! The cluster zone as data: a pure [`Index::build`] from Services and EndpointSlices into every
//! name the Kubernetes DNS spec (schema 1.1.0, kubernetes/dns `docs/specification.md`) defines,
//! and [`Index::lookup`], which says what a (name, type) question gets.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubewire_api::labels;

/// TTL of every record in the cluster zone. The spec prescribes none (§2.1); CoreDNS defaults to
/// 5 s, but kubeadm's Corefile — what most clusters run — sets `ttl 30`, so we answer as they do.
pub const TTL: u32 = 30;
/// `dns-version` TXT TTL and value: the spec's own example (§2.2) and CoreDNS both use 28800.
const VERSION_TTL: u32 = 28800;
pub const SCHEMA_VERSION: &str = "1.1.0";
/// Negative answers are cached by clients for the SOA's TTL and MINIMUM (RFC 2308 §5); CoreDNS
/// gives the SOA `min(ttl, 300)` and MINIMUM `ttl`.
const SOA_TTL: u32 = if TTL < 300 { TTL } else { 300 };

/// What a question about one name gets from the index.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Records for the question, owned by the name as asked (its case kept), plus records that
    /// help the client (SRV targets' addresses).
    Answer {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name is an alias to a name outside the cluster zone: the CNAME, whose target the
    /// caller may resolve elsewhere (DNS spec §2.5: the answer carries the target's records).
    External { cname: Record, target: Name },
    /// The name exists but has no records of that type: NOERROR, empty, SOA in authority.
    NoData(Record),
    /// The name does not exist: NXDOMAIN, SOA in authority.
    NxDomain(Record),
    /// Not a name this index is authoritative for: forward it.
    NotOurs,
}

/// Every name of the cluster zone and every reverse name of its addresses.
#[derive(Debug, Clone)]
pub struct Index {
    zone: Name,
    serial: u32,
    /// Names in the cluster zone (case-insensitive: `Name`'s `Eq` and `Hash` ignore case) with
    /// their data. A name with no data is an empty non-terminal or a structural node such as
    /// `<ns>.svc.<zone>`, which exists: other types there are NODATA, not NXDOMAIN.
    names: HashMap<Name, Vec<RData>>,
    /// PTR records for ClusterIPs and headless endpoint addresses, by reverse name.
    reverse: HashMap<Name, BTreeSet<Name>>,
}

impl Index {
    /// The index of cluster domain `zone` (e.g. `cluster.local.`) for these objects. `serial` is
    /// the SOA serial, which must grow when the data changes (we use the build's unix time).
    pub fn build<'a>(
        zone: &Name,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        serial: u32,
    ) -> Index {
        let mut zone = zone.to_lowercase();
        zone.set_fqdn(true);
        let mut index = Index {
            zone: zone.clone(),
            serial,
            names: HashMap::new(),
            reverse: HashMap::new(),
        };
        index.insert(zone.clone(), RData::SOA(index.soa_data()));
        // DNS spec §2.2.
        if let Ok(version) = child(&zone, &["dns-version"]) {
            index.insert(
                version,
                RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
            );
        }
        // `svc.<zone>` and `pod.<zone>` exist even when empty (CoreDNS answers NODATA there).
        for node in ["svc", "pod"] {
            if let Ok(name) = child(&zone, &[node]) {
                index.touch(name);
            }
        }
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let meta = &slice.metadata;
            if let (Some(ns), Some(service)) = (
                meta.namespace.as_deref(),
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(labels::SERVICE_NAME)),
            ) {
                by_service
                    .entry((ns, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        for service in services {
            let (Some(ns), Some(name)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let Ok(owner) = child(&zone, &[name, ns, "svc"]) else {
                continue;
            };
            // The namespace node exists while it has a Service, so `<ns>.svc.<zone>` is NODATA
            // rather than NXDOMAIN (CoreDNS's namespace rule, from its objects rather than ours).
            index.touch(owner.base_name());
            let slices = by_service.get(&(ns, name)).map_or(&[][..], Vec::as_slice);
            index.add_service(service, &owner, slices);
        }
        index
    }

    fn soa_data(&self) -> SOA {
        let mname = child(&self.zone, &["ns", "dns"]).unwrap_or_else(|_| self.zone.clone());
        let rname = child(&self.zone, &["hostmaster"]).unwrap_or_else(|_| self.zone.clone());
        // CoreDNS's refresh/retry/expire; MINIMUM = the record TTL (RFC 2308 negative TTL).
        SOA::new(mname, rname, self.serial, 7200, 1800, 86400, TTL)
    }

    fn soa_record(&self) -> Record {
        Record::from_rdata(self.zone.clone(), SOA_TTL, RData::SOA(self.soa_data()))
    }

    /// Adds `data` at `name`, creating it and every ancestor up to the zone.
    fn insert(&mut self, name: Name, data: RData) {
        self.touch(name.clone());
        let records = self.names.entry(name).or_default();
        if !records.contains(&data) {
            records.push(data);
        }
    }

    /// Makes `name` and its ancestors up to the zone exist (empty non-terminals, RFC 8020).
    fn touch(&mut self, name: Name) {
        let mut name = name;
        while self.zone.zone_of(&name) && !self.names.contains_key(&name) {
            let parent = name.base_name();
            self.names.insert(name, Vec::new());
            if parent.is_root() {
                break;
            }
            name = parent;
        }
    }

    fn add_ptr(&mut self, ip: IpAddr, target: &Name) {
        let mut reverse = Name::from(ip);
        reverse.set_fqdn(true);
        self.reverse
            .entry(reverse)
            .or_default()
            .insert(target.clone());
    }

    fn add_service(&mut self, service: &Service, owner: &Name, slices: &[&EndpointSlice]) {
        let Some(spec) = &service.spec else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            // DNS spec §2.5. A value that parses as an IP address is not a DNS name and is not
            // resolved (Kubernetes Service docs; CoreDNS drops it): the name stays NXDOMAIN.
            if let Some(external) = &spec.external_name
                && external.parse::<IpAddr>().is_err()
                && let Ok(mut target) = Name::from_ascii(external)
            {
                target.set_fqdn(true);
                self.insert(owner.clone(), RData::CNAME(CNAME(target)));
            }
            return;
        }
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            if cluster_ips.is_empty() {
                return;
            }
            // DNS spec §2.3.1: the records exist whatever the endpoints (no readiness check).
            for ip in cluster_ips {
                self.insert(owner.clone(), address(ip));
                self.add_ptr(ip, owner);
            }
            // §2.3.2: one SRV per named port, target the service name; "unnamed ports do not
            // have an SRV record".
            for port in spec.ports.iter().flatten() {
                let (Some(name), Ok(number)) = (&port.name, u16::try_from(port.port)) else {
                    continue;
                };
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                if let Some(srv_name) = srv_owner(name, protocol, owner) {
                    let srv = SRV::new(0, 100, number, owner.clone());
                    self.insert(srv_name, RData::SRV(srv));
                }
            }
            return;
        }
        self.add_headless(
            spec.publish_not_ready_addresses == Some(true),
            owner,
            slices,
        );
    }

    /// DNS spec §2.4: records from the ready endpoints (all of them with
    /// `publishNotReadyAddresses`, the modern `tolerate-unready-endpoints`, §2.1). With none,
    /// the service name is NXDOMAIN (§2.4.1), so nothing is inserted for it at all.
    fn add_headless(&mut self, publish_not_ready: bool, owner: &Name, slices: &[&EndpointSlice]) {
        // (hostname label, address) de-duplicated across slices, which may overlap in a change.
        let mut endpoints: BTreeSet<(String, IpAddr)> = BTreeSet::new();
        let mut srvs: BTreeSet<(String, String, u16, String)> = BTreeSet::new();
        for slice in slices {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            for endpoint in slice.endpoints.iter().flatten() {
                // A missing `ready` is ready (EndpointSlice API: "nil should be interpreted as
                // true"); terminating endpoints are published not-ready.
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready && !publish_not_ready {
                    continue;
                }
                for ip in &endpoint.addresses {
                    let Ok(ip) = ip.parse::<IpAddr>() else {
                        continue;
                    };
                    // §2.1 "hostname": the endpoint's hostname, else a system-assigned one; we
                    // use CoreDNS's dashed address so that the name is stable and predictable.
                    let host = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed(ip))
                        .to_ascii_lowercase();
                    for port in slice.ports.iter().flatten() {
                        if let (Some(name), Some(number)) = (&port.name, port.port)
                            && !name.is_empty()
                            && let Ok(number) = u16::try_from(number)
                        {
                            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
                            srvs.insert((name.clone(), protocol, number, host.clone()));
                        }
                    }
                    endpoints.insert((host, ip));
                }
            }
        }
        for (host, ip) in endpoints {
            let Ok(host_name) = owner.prepend_label(host.as_str()) else {
                continue;
            };
            self.insert(owner.clone(), address(ip));
            self.insert(host_name.clone(), address(ip));
            self.add_ptr(ip, &host_name);
        }
        // §2.4.2: one SRV per (ready endpoint, named port), target the endpoint's name.
        for (port, protocol, number, host) in srvs {
            if let (Some(srv_name), Ok(target)) = (
                srv_owner(&port, &protocol, owner),
                owner.prepend_label(host.as_str()),
            ) {
                self.insert(srv_name, RData::SRV(SRV::new(0, 100, number, target)));
            }
        }
    }

    /// What a question for (`name`, `qtype`) gets.
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let mut key = name.clone();
        key.set_fqdn(true);
        if self.zone.zone_of(&key) {
            return self.lookup_zone(name, &key, qtype);
        }
        match self.reverse.get(&key) {
            Some(targets) if qtype == RecordType::PTR || qtype == RecordType::ANY => {
                let answers = targets
                    .iter()
                    .map(|t| Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(t.clone()))))
                    .collect();
                Lookup::Answer {
                    answers,
                    additionals: Vec::new(),
                }
            }
            // The reverse zones are shared with everything outside the cluster, so only the
            // names we hold are ours (CoreDNS's `fallthrough in-addr.arpa ip6.arpa`); a reverse
            // name we hold has no other type. Its SOA is ours, as CoreDNS's is.
            Some(_) => Lookup::NoData(self.soa_record()),
            None => Lookup::NotOurs,
        }
    }

    fn lookup_zone(&self, asked: &Name, key: &Name, qtype: RecordType) -> Lookup {
        let data = match self.names.get(key) {
            Some(data) => data.clone(),
            None => match pod_address(&self.zone, key) {
                Some(ip) => vec![address(ip)],
                None => return Lookup::NxDomain(self.soa_record()),
            },
        };
        let ttl = |data: &RData| match data {
            RData::TXT(_) => VERSION_TTL,
            RData::SOA(_) => SOA_TTL,
            _ => TTL,
        };
        // A CNAME answers every type but CNAME itself with the alias (RFC 1034 §3.6.2).
        if let Some(RData::CNAME(CNAME(target))) =
            data.iter().find(|d| matches!(d, RData::CNAME(_)))
            && qtype != RecordType::CNAME
        {
            let cname = Record::from_rdata(asked.clone(), TTL, RData::CNAME(CNAME(target.clone())));
            if self.zone.zone_of(target) {
                // An in-zone target is chased here, so the client gets it in one answer.
                return match self.lookup(target, qtype) {
                    Lookup::Answer {
                        mut answers,
                        additionals,
                    } => {
                        answers.insert(0, cname);
                        Lookup::Answer {
                            answers,
                            additionals,
                        }
                    }
                    _ => Lookup::Answer {
                        answers: vec![cname],
                        additionals: Vec::new(),
                    },
                };
            }
            return Lookup::External {
                cname,
                target: target.clone(),
            };
        }
        let answers: Vec<Record> = data
            .iter()
            .filter(|d| qtype == RecordType::ANY || d.record_type() == qtype)
            .map(|d| Record::from_rdata(asked.clone(), ttl(d), d.clone()))
            .collect();
        if answers.is_empty() {
            return Lookup::NoData(self.soa_record());
        }
        // SRV targets' addresses go in the additional section (DNS spec §2.3.2 "may include").
        let mut additionals = Vec::new();
        for answer in &answers {
            if let RData::SRV(srv) = &answer.data
                && let Some(data) = self.names.get(&srv.target)
            {
                additionals.extend(
                    data.iter()
                        .filter(|d| matches!(d, RData::A(_) | RData::AAAA(_)))
                        .map(|d| Record::from_rdata(srv.target.clone(), TTL, d.clone())),
                );
            }
        }
        Lookup::Answer {
            answers,
            additionals,
        }
    }
}

/// `labels` (leftmost first) below `zone`.
fn child(zone: &Name, labels: &[&str]) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()))?.append_domain(zone)
}

/// `_<port>._<proto>.<service name>` (DNS spec §2.3.2; protocol in lower case as in its
/// examples).
fn srv_owner(port: &str, protocol: &str, service: &Name) -> Option<Name> {
    let proto = format!("_{}", protocol.to_ascii_lowercase());
    let port = format!("_{}", port.to_ascii_lowercase());
    service
        .prepend_label(proto.as_str())
        .and_then(|n| n.prepend_label(port.as_str()))
        .ok()
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// CoreDNS's system-assigned endpoint label: the address with `.`/`:` as `-`, and a leading or
/// trailing `-` of a compressed IPv6 address completed with `0` so that it is a valid label.
fn dashed(ip: IpAddr) -> String {
    let mut label = ip.to_string().replace(['.', ':'], "-");
    if label.starts_with('-') {
        label.insert(0, '0');
    }
    if label.ends_with('-') {
        label.push('0');
    }
    label
}

/// `<a-b-c-d>.<ns>.pod.<zone>`: the address in the name itself. These were removed from the spec
/// in 2019; we answer them as CoreDNS's `pods insecure` does (no check that such a pod exists),
/// since workloads written against CoreDNS still ask for them and the name alone is the answer.
fn pod_address(zone: &Name, name: &Name) -> Option<IpAddr> {
    let extra = name.num_labels().checked_sub(zone.num_labels())?;
    let mut labels = name.iter();
    let (first, _ns, pod) = (labels.next()?, labels.next()?, labels.next()?);
    if extra != 3 || !pod.eq_ignore_ascii_case(b"pod") {
        return None;
    }
    let first = std::str::from_utf8(first).ok()?;
    if let Ok(v4) = first.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    first
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("a test name")
    }

    fn service(ns: &str, name: &str, spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn cluster_ip(ips: &[&str], ports: &[(Option<&str>, i32, &str)]) -> ServiceSpec {
        ServiceSpec {
            cluster_ip: Some(ips[0].into()),
            cluster_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port, proto)| ServicePort {
                        name: name.map(Into::into),
                        port: *port,
                        protocol: Some(proto.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn headless(publish_not_ready: bool) -> ServiceSpec {
        ServiceSpec {
            cluster_ip: Some("None".into()),
            cluster_ips: Some(vec!["None".into()]),
            publish_not_ready_addresses: Some(publish_not_ready),
            ..Default::default()
        }
    }

    /// Endpoints as (address, hostname, ready).
    fn slice(
        ns: &str,
        svc: &str,
        family: &str,
        endpoints: &[(&str, Option<&str>, Option<bool>)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{svc}-{family}")),
                labels: Some([(labels::SERVICE_NAME.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: family.into(),
            endpoints: Some(
                endpoints
                    .iter()
                    .map(|(ip, host, ready)| Endpoint {
                        addresses: vec![ip.to_string()],
                        hostname: host.map(Into::into),
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some(String::new()),
                    port: Some(9090),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
            ]),
        }
    }

    fn index(services: &[Service], slices: &[EndpointSlice]) -> Index {
        Index::build(&n("cluster.local."), services, slices, 7)
    }

    fn rdata(lookup: &Lookup) -> Vec<RData> {
        match lookup {
            Lookup::Answer { answers, .. } => answers.iter().map(|r| r.data.clone()).collect(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn fixture() -> Index {
        index(
            &[
                service(
                    "default",
                    "web",
                    cluster_ip(
                        &["10.96.0.10", "fd00::10"],
                        &[
                            (Some("http"), 80, "TCP"),
                            (None, 81, "TCP"),
                            (Some("dns"), 53, "UDP"),
                        ],
                    ),
                ),
                service("default", "v4only", cluster_ip(&["10.96.0.11"], &[])),
                service("db", "pg", headless(false)),
                service("db", "empty", headless(false)),
                service("db", "early", headless(true)),
                service(
                    "default",
                    "ext",
                    ServiceSpec {
                        type_: Some("ExternalName".into()),
                        external_name: Some("www.example.com".into()),
                        ..Default::default()
                    },
                ),
                service(
                    "default",
                    "alias",
                    ServiceSpec {
                        type_: Some("ExternalName".into()),
                        external_name: Some("web.default.svc.cluster.local".into()),
                        ..Default::default()
                    },
                ),
                service(
                    "default",
                    "ipext",
                    ServiceSpec {
                        type_: Some("ExternalName".into()),
                        external_name: Some("192.0.2.1".into()),
                        ..Default::default()
                    },
                ),
            ],
            &[
                slice(
                    "db",
                    "pg",
                    "IPv4",
                    &[
                        ("10.0.0.1", Some("pg-0"), Some(true)),
                        ("10.0.0.2", None, None),
                        ("10.0.0.3", Some("pg-2"), Some(false)),
                    ],
                ),
                slice("db", "pg", "IPv6", &[("fd00::1", Some("pg-0"), Some(true))]),
                slice("db", "empty", "IPv4", &[("10.0.0.9", None, Some(false))]),
                slice(
                    "db",
                    "early",
                    "IPv4",
                    &[("10.0.0.5", Some("e-0"), Some(false))],
                ),
                // The same name in another namespace is another Service's.
                slice("other", "pg", "IPv4", &[("10.9.9.9", None, Some(true))]),
            ],
        )
    }

    #[test]
    fn cluster_ip_service_answers_each_family_separately() {
        let idx = fixture();
        let name = n("web.default.svc.cluster.local.");
        assert_eq!(
            rdata(&idx.lookup(&name, RecordType::A)),
            vec![RData::A(A("10.96.0.10".parse().expect("ip")))]
        );
        assert_eq!(
            rdata(&idx.lookup(&name, RecordType::AAAA)),
            vec![RData::AAAA(AAAA("fd00::10".parse().expect("ip")))]
        );
        // An IPv4-only service has the name, so AAAA is NODATA, not NXDOMAIN.
        assert!(matches!(
            idx.lookup(&n("v4only.default.svc.cluster.local."), RecordType::AAAA),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn names_are_case_insensitive_and_keep_the_asked_case() {
        let idx = fixture();
        let asked = n("WEB.Default.SVC.cluster.LOCAL.");
        let Lookup::Answer { answers, .. } = idx.lookup(&asked, RecordType::A) else {
            panic!("no answer");
        };
        assert_eq!(answers[0].name.to_ascii(), "WEB.Default.SVC.cluster.LOCAL.");
        assert_eq!(answers[0].ttl, TTL);
    }

    #[test]
    fn srv_only_for_named_ports_with_protocol() {
        let idx = fixture();
        let srv = rdata(&idx.lookup(
            &n("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ));
        assert_eq!(
            srv,
            vec![RData::SRV(SRV::new(
                0,
                100,
                80,
                n("web.default.svc.cluster.local.")
            ))]
        );
        assert!(matches!(
            idx.lookup(
                &n("_dns._udp.web.default.svc.cluster.local."),
                RecordType::SRV
            ),
            Lookup::Answer { .. }
        ));
        // The protocol is part of the name: dns is UDP only.
        assert!(matches!(
            idx.lookup(
                &n("_dns._tcp.web.default.svc.cluster.local."),
                RecordType::SRV
            ),
            Lookup::NxDomain(_)
        ));
        // `_tcp.web...` is an empty non-terminal: it exists (RFC 8020), so NODATA.
        assert!(matches!(
            idx.lookup(&n("_tcp.web.default.svc.cluster.local."), RecordType::A),
            Lookup::NoData(_)
        ));
        // SRV answers carry the target's addresses.
        let Lookup::Answer { additionals, .. } = idx.lookup(
            &n("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ) else {
            panic!("no answer");
        };
        assert_eq!(additionals.len(), 2);
    }

    #[test]
    fn headless_answers_ready_endpoints_only() {
        let idx = fixture();
        let a = rdata(&idx.lookup(&n("pg.db.svc.cluster.local."), RecordType::A));
        assert_eq!(
            a,
            vec![
                RData::A(A("10.0.0.2".parse().expect("ip"))),
                RData::A(A("10.0.0.1".parse().expect("ip"))),
            ]
        );
        assert_eq!(
            rdata(&idx.lookup(&n("pg-0.pg.db.svc.cluster.local."), RecordType::AAAA)),
            vec![RData::AAAA(AAAA("fd00::1".parse().expect("ip")))]
        );
        // Not ready: no name of its own either.
        assert!(matches!(
            idx.lookup(&n("pg-2.pg.db.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        // Without a hostname, the dashed address names it.
        assert_eq!(
            rdata(&idx.lookup(&n("10-0-0-2.pg.db.svc.cluster.local."), RecordType::A)),
            vec![RData::A(A("10.0.0.2".parse().expect("ip")))]
        );
    }

    #[test]
    fn headless_without_ready_endpoints_is_nxdomain() {
        // DNS spec §2.4.1, although the Service exists.
        let idx = fixture();
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::SRV] {
            assert!(matches!(
                idx.lookup(&n("empty.db.svc.cluster.local."), qtype),
                Lookup::NxDomain(_)
            ));
        }
    }

    #[test]
    fn publish_not_ready_addresses_counts_every_endpoint() {
        let idx = fixture();
        assert_eq!(
            rdata(&idx.lookup(&n("e-0.early.db.svc.cluster.local."), RecordType::A)),
            vec![RData::A(A("10.0.0.5".parse().expect("ip")))]
        );
    }

    #[test]
    fn headless_srv_is_endpoints_times_named_ports() {
        let idx = fixture();
        let srv = rdata(&idx.lookup(&n("_http._tcp.pg.db.svc.cluster.local."), RecordType::SRV));
        // pg-0 (both families, one name) and 10-0-0-2; the unnamed port has none.
        assert_eq!(
            srv,
            vec![
                RData::SRV(SRV::new(
                    0,
                    100,
                    8080,
                    n("10-0-0-2.pg.db.svc.cluster.local.")
                )),
                RData::SRV(SRV::new(0, 100, 8080, n("pg-0.pg.db.svc.cluster.local."))),
            ]
        );
    }

    #[test]
    fn ptr_for_cluster_ips_and_headless_endpoints() {
        let idx = fixture();
        let ptr = |ip: &str| {
            let ip: IpAddr = ip.parse().expect("ip");
            idx.lookup(&Name::from(ip), RecordType::PTR)
        };
        assert_eq!(
            rdata(&ptr("10.96.0.10")),
            vec![RData::PTR(PTR(n("web.default.svc.cluster.local.")))]
        );
        assert_eq!(
            rdata(&ptr("fd00::10")),
            vec![RData::PTR(PTR(n("web.default.svc.cluster.local.")))]
        );
        assert_eq!(
            rdata(&ptr("10.0.0.1")),
            vec![RData::PTR(PTR(n("pg-0.pg.db.svc.cluster.local.")))]
        );
        // Not-ready endpoints have no PTR; unknown addresses are not ours to answer.
        assert_eq!(ptr("10.0.0.3"), Lookup::NotOurs);
        let ip: IpAddr = "10.96.0.10".parse().expect("ip");
        assert!(matches!(
            idx.lookup(&Name::from(ip), RecordType::A),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn external_name_is_a_cname() {
        let idx = fixture();
        let Lookup::External { cname, target } =
            idx.lookup(&n("ext.default.svc.cluster.local."), RecordType::A)
        else {
            panic!("not external");
        };
        assert_eq!(target, n("www.example.com."));
        assert_eq!(&cname.data, &RData::CNAME(CNAME(n("www.example.com."))));
        // Asked for the CNAME itself: just the record.
        assert!(matches!(
            idx.lookup(&n("ext.default.svc.cluster.local."), RecordType::CNAME),
            Lookup::Answer { .. }
        ));
        // An in-zone target is chased.
        assert_eq!(
            rdata(&idx.lookup(&n("alias.default.svc.cluster.local."), RecordType::A)),
            vec![
                RData::CNAME(CNAME(n("web.default.svc.cluster.local."))),
                RData::A(A("10.96.0.10".parse().expect("ip"))),
            ]
        );
        // An IP-looking externalName is not resolved.
        assert!(matches!(
            idx.lookup(&n("ipext.default.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain(_)
        ));
    }

    #[test]
    fn structural_names_are_nodata_and_unknown_names_nxdomain() {
        let idx = fixture();
        for name in [
            "cluster.local.",
            "svc.cluster.local.",
            "pod.cluster.local.",
            "default.svc.cluster.local.",
        ] {
            assert!(
                matches!(idx.lookup(&n(name), RecordType::A), Lookup::NoData(_)),
                "{name}"
            );
        }
        for name in [
            "missing.svc.cluster.local.",
            "nope.default.svc.cluster.local.",
            "foo.cluster.local.",
            "a.b.web.default.svc.cluster.local.",
        ] {
            assert!(
                matches!(idx.lookup(&n(name), RecordType::A), Lookup::NxDomain(_)),
                "{name}"
            );
        }
        assert_eq!(
            idx.lookup(&n("example.com."), RecordType::A),
            Lookup::NotOurs
        );
    }

    #[test]
    fn negative_answers_carry_the_zone_soa() {
        let idx = fixture();
        let Lookup::NxDomain(soa) = idx.lookup(&n("x.cluster.local."), RecordType::A) else {
            panic!("not NXDOMAIN");
        };
        assert_eq!(&soa.name, &n("cluster.local."));
        assert_eq!(soa.ttl, SOA_TTL);
        let RData::SOA(data) = &soa.data else {
            panic!("not an SOA");
        };
        assert_eq!((data.serial, data.minimum), (7, TTL));
        assert!(matches!(
            idx.lookup(&n("cluster.local."), RecordType::SOA),
            Lookup::Answer { .. }
        ));
    }

    #[test]
    fn schema_version_txt() {
        let idx = fixture();
        let Lookup::Answer { answers, .. } =
            idx.lookup(&n("dns-version.cluster.local."), RecordType::TXT)
        else {
            panic!("no answer");
        };
        assert_eq!(answers[0].ttl, VERSION_TTL);
        assert_eq!(
            &answers[0].data,
            &RData::TXT(TXT::new(vec!["1.1.0".into()]))
        );
        assert!(matches!(
            idx.lookup(&n("dns-version.cluster.local."), RecordType::A),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn pod_names_answer_from_the_name() {
        let idx = fixture();
        assert_eq!(
            rdata(&idx.lookup(&n("10-244-1-5.default.pod.cluster.local."), RecordType::A)),
            vec![RData::A(A("10.244.1.5".parse().expect("ip")))]
        );
        assert_eq!(
            rdata(&idx.lookup(&n("fd00--5.default.pod.cluster.local."), RecordType::AAAA)),
            vec![RData::AAAA(AAAA("fd00::5".parse().expect("ip")))]
        );
        assert!(matches!(
            idx.lookup(&n("bogus.default.pod.cluster.local."), RecordType::A),
            Lookup::NxDomain(_)
        ));
    }

    #[test]
    fn dashed_labels_are_valid() {
        assert_eq!(dashed("10.0.0.1".parse().expect("ip")), "10-0-0-1");
        assert_eq!(dashed("fd00::1".parse().expect("ip")), "fd00--1");
        assert_eq!(dashed("::1".parse().expect("ip")), "0--1");
        assert_eq!(dashed("fd00::".parse().expect("ip")), "fd00--0");
    }
}
