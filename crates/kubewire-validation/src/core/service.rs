//! Service (core/v1): defaulting (`pkg/apis/core/v1/defaults.go`, the registry's
//! `normalizeClusterIPs`, `dropTypeDependentFields`, `patchAllocatedValues` and
//! `initIPFamilyFields`) and validation (`ValidateService`, `ValidateServiceUpdate`).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, IpFamily, Path};

pub const CLUSTER_IP: &str = "ClusterIP";
pub const NODE_PORT: &str = "NodePort";
pub const LOAD_BALANCER: &str = "LoadBalancer";
pub const EXTERNAL_NAME: &str = "ExternalName";
pub const CLUSTER_IP_NONE: &str = "None";
pub const SINGLE_STACK: &str = "SingleStack";
pub const PREFER_DUAL_STACK: &str = "PreferDualStack";
pub const REQUIRE_DUAL_STACK: &str = "RequireDualStack";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_CLIENT_IP_TIMEOUT: i32 = 10800;
/// Upper bound of `sessionAffinityConfig.clientIP.timeoutSeconds` (1 day).
pub const MAX_CLIENT_IP_TIMEOUT: i32 = 86400;

const SERVICE_TYPES: [&str; 4] = [CLUSTER_IP, EXTERNAL_NAME, LOAD_BALANCER, NODE_PORT];
const SESSION_AFFINITIES: [&str; 2] = ["ClientIP", "None"];
const TRAFFIC_POLICIES: [&str; 2] = ["Cluster", "Local"];
const IP_FAMILIES: [&str; 2] = ["IPv4", "IPv6"];
const IP_FAMILY_POLICIES: [&str; 3] = [PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK];
/// KEP-4444 / KEP-3015: `PreferClose` and its aliases/extensions.
const TRAFFIC_DISTRIBUTIONS: [&str; 3] = ["PreferClose", "PreferSameNode", "PreferSameZone"];

fn type_of(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("")
}

fn cluster_ips(spec: &ServiceSpec) -> &[String] {
    spec.cluster_ips.as_deref().unwrap_or(&[])
}

fn families(spec: &ServiceSpec) -> &[String] {
    spec.ip_families.as_deref().unwrap_or(&[])
}

/// `clusterIPs == ["None"]`.
pub fn is_headless(spec: &ServiceSpec) -> bool {
    matches!(cluster_ips(spec), [only] if only == CLUSTER_IP_NONE)
}

fn is_headless_selectorless(spec: &ServiceSpec) -> bool {
    spec.cluster_ip.as_deref() == Some(CLUSTER_IP_NONE)
        && spec.selector.as_ref().is_none_or(BTreeMap::is_empty)
}

/// `ExternallyAccessible`: NodePort, LoadBalancer, or ClusterIP with external IPs.
pub fn externally_accessible(spec: &ServiceSpec) -> bool {
    let t = type_of(spec);
    t == LOAD_BALANCER
        || t == NODE_PORT
        || (t == CLUSTER_IP
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()))
}

/// `NeedsHealthCheck`: LoadBalancer with `externalTrafficPolicy: Local`.
pub fn needs_health_check(spec: &ServiceSpec) -> bool {
    type_of(spec) == LOAD_BALANCER && spec.external_traffic_policy.as_deref() == Some("Local")
}

fn needs_cluster_ip(spec: &ServiceSpec) -> bool {
    type_of(spec) != EXTERNAL_NAME
}

fn needs_node_port(spec: &ServiceSpec) -> bool {
    match type_of(spec) {
        NODE_PORT => true,
        LOAD_BALANCER => spec.allocate_load_balancer_node_ports.unwrap_or(true),
        _ => false,
    }
}

fn target_port_unset(p: &Option<IntOrString>) -> bool {
    match p {
        None => true,
        Some(IntOrString::Int(n)) => *n == 0,
        Some(IntOrString::String(s)) => s.is_empty(),
    }
}

/// `SetDefaults_Service` plus the create half of `normalizeClusterIPs`.
fn default_fields(spec: &mut ServiceSpec) {
    if spec.type_.as_deref().is_none_or(str::is_empty) {
        spec.type_ = Some(CLUSTER_IP.to_owned());
    }
    if spec.session_affinity.as_deref().is_none_or(str::is_empty) {
        spec.session_affinity = Some("None".to_owned());
    }
    match spec.session_affinity.as_deref() {
        Some("None") => spec.session_affinity_config = None,
        Some("ClientIP") => {
            let config = spec
                .session_affinity_config
                .get_or_insert_with(SessionAffinityConfig::default);
            let client_ip = config.client_ip.get_or_insert_with(ClientIPConfig::default);
            client_ip
                .timeout_seconds
                .get_or_insert(DEFAULT_CLIENT_IP_TIMEOUT);
        }
        _ => {}
    }
    for port in spec.ports.iter_mut().flatten() {
        if port.protocol.as_deref().is_none_or(str::is_empty) {
            port.protocol = Some("TCP".to_owned());
        }
        if target_port_unset(&port.target_port) {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let t = type_of(spec).to_owned();
    if spec.internal_traffic_policy.is_none()
        && matches!(t.as_str(), CLUSTER_IP | NODE_PORT | LOAD_BALANCER)
    {
        spec.internal_traffic_policy = Some("Cluster".to_owned());
    }
    if externally_accessible(spec)
        && spec
            .external_traffic_policy
            .as_deref()
            .is_none_or(str::is_empty)
    {
        spec.external_traffic_policy = Some("Cluster".to_owned());
    }
    if t == LOAD_BALANCER && spec.allocate_load_balancer_node_ports.is_none() {
        spec.allocate_load_balancer_node_ports = Some(true);
    }
    // An old client sets only the singular field; the plural one follows it. (A new client must
    // set both: a lone `clusterIPs` is rejected by validation, as upstream.)
    if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty())
        && cluster_ips(spec).is_empty()
    {
        spec.cluster_ips = Some(vec![ip.to_owned()]);
    }
}

/// `initIPFamilyFields` (pkg/registry/core/service/storage/alloc.go): fill `ipFamilyPolicy` and
/// `ipFamilies` from the requested cluster IPs and the cluster's configured families.
fn init_ip_families(spec: &mut ServiceSpec, old: Option<&ServiceSpec>, ctx: &Context) {
    if type_of(spec) == EXTERNAL_NAME {
        return;
    }
    // A PreferDualStack service is never silently upgraded or downgraded after a change of the
    // cluster's dual-stackness: only an explicit policy or IP change does that.
    if let Some(old) = old {
        let policy = spec
            .ip_family_policy
            .as_deref()
            .or(old.ip_family_policy.as_deref());
        if old.ip_family_policy.as_deref() == Some(PREFER_DUAL_STACK)
            && policy == Some(PREFER_DUAL_STACK)
            && cluster_ips(old) == cluster_ips(spec)
            && (spec.ip_families.is_none() || families(old) == families(spec))
        {
            spec.ip_family_policy = old.ip_family_policy.clone();
            if spec.ip_families.is_none() {
                spec.ip_families = old.ip_families.clone();
            }
            return;
        }
    }
    if spec.ip_family_policy.is_none() {
        spec.ip_family_policy = Some(match old.and_then(|o| o.ip_family_policy.clone()) {
            Some(policy) => policy,
            // Headless without selector: its endpoints are user-managed, so allow both families.
            None if is_headless_selectorless(spec) => REQUIRE_DUAL_STACK.to_owned(),
            None => SINGLE_STACK.to_owned(),
        });
    }
    // From here on upstream bails out with an error whenever the request is inconsistent; we
    // leave the fields alone and let validation report the same errors.
    if !validate_cluster_ips_related_fields(spec).is_empty() {
        return;
    }
    let single = spec.ip_family_policy.as_deref() == Some(SINGLE_STACK);
    let ips = cluster_ips(spec).to_vec();
    let mut fams = families(spec).to_vec();
    if single && (ips.len() == 2 || fams.len() == 2) {
        return;
    }

    // Families follow the requested cluster IPs.
    for (i, ip) in ips.iter().enumerate() {
        if ip == CLUSTER_IP_NONE {
            break;
        }
        if i >= fams.len() {
            match meta::parse_ip(ip).map(|ip| IpFamily::of(&ip)) {
                Some(family) if ctx.has_family(family) => fams.push(family.as_str().to_owned()),
                _ => return,
            }
        }
    }

    let other = |f: &str| IpFamily::from_api(f).map(|f| f.other().as_str().to_owned());
    if is_headless_selectorless(spec) {
        if fams.is_empty() {
            fams.push(ctx.primary_family().as_str().to_owned());
        }
        if fams.len() < 2
            && !single
            && let Some(second) = other(&fams[0])
        {
            fams.push(second);
        }
        spec.ip_families = Some(fams);
        return;
    }
    let unconfigured = fams
        .iter()
        .any(|f| IpFamily::from_api(f).is_some_and(|f| !ctx.has_family(f)));
    if unconfigured
        || (spec.ip_family_policy.as_deref() == Some(REQUIRE_DUAL_STACK) && !ctx.is_dual_stack())
    {
        return;
    }
    if fams.is_empty() {
        fams.push(ctx.primary_family().as_str().to_owned());
    }
    if !single
        && fams.len() == 1
        && ctx.is_dual_stack()
        && let Some(second) = other(&fams[0])
    {
        fams.push(second);
    }
    spec.ip_families = Some(fams);
}

/// `dropTypeDependentFields`: on a type change, drop what the old type had and the user did not
/// change.
fn drop_type_dependent_fields(spec: &mut ServiceSpec, old: &ServiceSpec) {
    if needs_cluster_ip(old) && !needs_cluster_ip(spec) {
        if spec.cluster_ip == old.cluster_ip && spec.cluster_ips == old.cluster_ips {
            spec.cluster_ip = None;
            spec.cluster_ips = None;
        }
        if spec.ip_families == old.ip_families {
            spec.ip_families = None;
        }
        if spec.ip_family_policy == old.ip_family_policy {
            spec.ip_family_policy = None;
        }
    }
    let node_ports = |s: &ServiceSpec| {
        s.ports
            .iter()
            .flatten()
            .map(|p| p.node_port)
            .collect::<Vec<_>>()
    };
    if needs_node_port(old) && !needs_node_port(spec) && node_ports(spec) == node_ports(old) {
        for port in spec.ports.iter_mut().flatten() {
            port.node_port = None;
        }
    }
    if needs_health_check(old)
        && !needs_health_check(spec)
        && spec.health_check_node_port == old.health_check_node_port
    {
        spec.health_check_node_port = None;
    }
    if type_of(old) == LOAD_BALANCER && type_of(spec) != LOAD_BALANCER {
        if spec.allocate_load_balancer_node_ports.is_some()
            && spec.allocate_load_balancer_node_ports == old.allocate_load_balancer_node_ports
        {
            spec.allocate_load_balancer_node_ports = None;
        }
        if spec.load_balancer_class == old.load_balancer_class {
            spec.load_balancer_class = None;
        }
    }
    if externally_accessible(old)
        && !externally_accessible(spec)
        && spec.external_traffic_policy == old.external_traffic_policy
    {
        spec.external_traffic_policy = None;
    }
}

/// The update half of `normalizeClusterIPs`, then `patchAllocatedValues`: a PUT that omits the
/// allocated cluster IPs and node ports keeps them.
fn carry_over_allocations(spec: &mut ServiceSpec, old: &ServiceSpec) {
    let old_ip = old.cluster_ip.as_deref().unwrap_or("");
    let new_ip = spec.cluster_ip.as_deref().unwrap_or("").to_owned();
    if !cluster_ips(old).is_empty() && cluster_ips(spec).is_empty() && old_ip == new_ip {
        spec.cluster_ips = old.cluster_ips.clone();
    }
    if old_ip != new_ip {
        let same_ips = cluster_ips(old) == cluster_ips(spec);
        if !old_ip.is_empty() && new_ip.is_empty() && same_ips {
            spec.cluster_ips = None;
        } else if same_ips {
            spec.cluster_ips = Some(vec![new_ip]);
        }
    }
    if needs_cluster_ip(old) && needs_cluster_ip(spec) {
        if spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
            spec.cluster_ip = old.cluster_ip.clone();
        }
        if cluster_ips(spec).is_empty() && !cluster_ips(old).is_empty() {
            spec.cluster_ips = old.cluster_ips.clone();
        }
    }
    if needs_node_port(old) && needs_node_port(spec) {
        let used: HashMap<(i32, String), i32> = old
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    (p.port, p.protocol.clone().unwrap_or_default()),
                    p.node_port.filter(|n| *n != 0)?,
                ))
            })
            .collect();
        for port in spec.ports.iter_mut().flatten() {
            if port.node_port.unwrap_or(0) == 0
                && let Some(n) = used.get(&(port.port, port.protocol.clone().unwrap_or_default()))
            {
                port.node_port = Some(*n);
            }
        }
    }
    if needs_health_check(old)
        && needs_health_check(spec)
        && spec.health_check_node_port.unwrap_or(0) == 0
    {
        spec.health_check_node_port = old.health_check_node_port;
    }
}

impl Admit for Service {
    fn default(&mut self, ctx: &Context) {
        let spec = self.spec.get_or_insert_with(ServiceSpec::default);
        default_fields(spec);
        init_ip_families(spec, None, ctx);
    }

    fn default_on_update(&mut self, old: &Self, ctx: &Context) {
        let spec = self.spec.get_or_insert_with(ServiceSpec::default);
        default_fields(spec);
        match &old.spec {
            Some(old_spec) => {
                drop_type_dependent_fields(spec, old_spec);
                carry_over_allocations(spec, old_spec);
                init_ip_families(spec, Some(old_spec), ctx);
            }
            None => init_ip_families(spec, None, ctx),
        }
    }

    fn validate(&self, old: Option<&Self>, ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1035Label,
        );
        let empty = ServiceSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        errs.extend(validate_spec(spec));
        errs.extend(validate_against_cluster(spec, ctx));
        if let Some(old_spec) = old.map(|o| o.spec.as_ref().unwrap_or(&empty)) {
            errs.extend(validate_update(spec, old_spec));
        }
        errs
    }
}

/// `ValidateService` without metadata.
fn validate_spec(spec: &ServiceSpec) -> FieldErrors {
    let path = Path::new("spec");
    let mut errs = FieldErrors::new();
    let t = type_of(spec);
    let headless = is_headless(spec);
    let ports = spec.ports.as_deref().unwrap_or(&[]);

    if ports.is_empty() && !headless && t != EXTERNAL_NAME {
        errs.push(FieldError::required(&path.child("ports"), ""));
    }
    match t {
        LOAD_BALANCER | NODE_PORT if headless => {
            errs.push(FieldError::invalid(
                &path.child("clusterIPs").index(0),
                CLUSTER_IP_NONE,
                format!("may not be set to 'None' for {t} services"),
            ));
        }
        EXTERNAL_NAME => {
            for (field, set) in [
                ("clusterIPs", !cluster_ips(spec).is_empty()),
                ("ipFamilies", !families(spec).is_empty()),
                ("ipFamilyPolicy", spec.ip_family_policy.is_some()),
            ] {
                if set {
                    errs.push(FieldError::forbidden(
                        &path.child(field),
                        "may not be set for ExternalName services",
                    ));
                }
            }
            // The CNAME may carry a trailing dot to mark it fully qualified.
            let name = spec.external_name.as_deref().unwrap_or("");
            let cname = name.strip_suffix('.').unwrap_or(name);
            if cname.is_empty() {
                errs.push(FieldError::required(&path.child("externalName"), ""));
            } else {
                errs.extend(meta::validate_dns1123_subdomain(
                    &path.child("externalName"),
                    cname,
                ));
            }
        }
        _ => {}
    }

    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(validate_port(
            port,
            ports.len() > 1,
            &mut names,
            &path.child("ports").index(i),
        ));
    }
    if let Some(selector) = &spec.selector {
        errs.extend(meta::validate_labels(&path.child("selector"), selector));
    }

    match spec.session_affinity.as_deref() {
        None | Some("") => errs.push(FieldError::required(&path.child("sessionAffinity"), "")),
        Some(affinity) => errs.extend(meta::validate_enum(
            &path.child("sessionAffinity"),
            affinity,
            &SESSION_AFFINITIES,
        )),
    }
    match spec.session_affinity.as_deref() {
        Some("ClientIP") => errs.extend(validate_client_ip_config(
            spec.session_affinity_config.as_ref(),
            &path.child("sessionAffinityConfig"),
        )),
        Some("None") if spec.session_affinity_config.is_some() => {
            errs.push(FieldError::forbidden(
                &path.child("sessionAffinityConfig"),
                "must not be set when session affinity is None",
            ));
        }
        _ => {}
    }

    errs.extend(validate_cluster_ips_related_fields(spec));

    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        errs.extend(meta::validate_non_special_ip(
            &path.child("externalIPs").index(i),
            ip,
        ));
    }

    match t {
        "" => errs.push(FieldError::required(&path.child("type"), "")),
        t => errs.extend(meta::validate_enum(&path.child("type"), t, &SERVICE_TYPES)),
    }
    if t == CLUSTER_IP {
        for (i, port) in ports.iter().enumerate() {
            if port.node_port.unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    &path.child("ports").index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    // (protocol, nodePort) and (protocol, port) pairs are unique.
    let mut node_ports = HashSet::new();
    let mut port_keys = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let protocol = port.protocol.clone().unwrap_or_default();
        if let Some(node_port) = port.node_port.filter(|n| *n != 0)
            && !node_ports.insert((protocol.clone(), node_port))
        {
            errs.push(FieldError::duplicate(
                &path.child("ports").index(i).child("nodePort"),
                node_port,
            ));
        }
        if !port_keys.insert((protocol.clone(), port.port)) {
            errs.push(FieldError::duplicate(
                &path.child("ports").index(i),
                json!({"port": port.port, "protocol": protocol}),
            ));
        }
    }

    if let Some(ranges) = spec
        .load_balancer_source_ranges
        .as_ref()
        .filter(|r| !r.is_empty())
    {
        // Upstream reports this field with a capital L.
        let p = path.child("LoadBalancerSourceRanges");
        if t != LOAD_BALANCER {
            errs.push(FieldError::forbidden(
                &p,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, cidr) in ranges.iter().enumerate() {
            // Historically these may be space-padded.
            errs.extend(meta::validate_cidr(&p.index(i), cidr.trim()));
        }
    }
    if spec.allocate_load_balancer_node_ports.is_some() && t != LOAD_BALANCER {
        errs.push(FieldError::forbidden(
            &path.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if t == LOAD_BALANCER && spec.allocate_load_balancer_node_ports.is_none() {
        errs.push(FieldError::required(
            &path.child("allocateLoadBalancerNodePorts"),
            "",
        ));
    }
    if let Some(class) = &spec.load_balancer_class {
        if t == LOAD_BALANCER {
            errs.extend(meta::validate_qualified_name(
                &path.child("loadBalancerClass"),
                class,
            ));
        } else {
            errs.push(FieldError::forbidden(
                &path.child("loadBalancerClass"),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }
    errs.extend(validate_traffic_policies(spec));
    errs
}

fn validate_port(
    port: &ServicePort,
    require_name: bool,
    names: &mut HashSet<String>,
    path: &Path,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    match port.name.as_deref().unwrap_or("") {
        "" if require_name => errs.push(FieldError::required(&path.child("name"), "")),
        "" => {}
        name => {
            errs.extend(meta::validate_dns1123_label(&path.child("name"), name));
            if !names.insert(name.to_owned()) {
                errs.push(FieldError::duplicate(&path.child("name"), name));
            }
        }
    }
    errs.extend(meta::validate_port_num(&path.child("port"), port.port));
    errs.extend(meta::validate_protocol(
        &path.child("protocol"),
        port.protocol.as_deref(),
        true,
    ));
    if let Some(target) = &port.target_port {
        errs.extend(meta::validate_port_num_or_name(
            &path.child("targetPort"),
            target,
        ));
    }
    if let Some(app_protocol) = &port.app_protocol {
        errs.extend(meta::validate_qualified_name(
            &path.child("appProtocol"),
            app_protocol,
        ));
    }
    errs
}

fn validate_client_ip_config(config: Option<&SessionAffinityConfig>, path: &Path) -> FieldErrors {
    let detail = "when session affinity type is ClientIP";
    let Some(config) = config else {
        return vec![FieldError::required(path, detail)];
    };
    let path = path.child("clientIP");
    let Some(client_ip) = &config.client_ip else {
        return vec![FieldError::required(&path, detail)];
    };
    let path = path.child("timeoutSeconds");
    match client_ip.timeout_seconds {
        None => vec![FieldError::required(&path, detail)],
        Some(t) if t <= 0 || t > MAX_CLIENT_IP_TIMEOUT => {
            vec![FieldError::invalid(
                &path,
                t,
                format!("must be greater than 0 and less than {MAX_CLIENT_IP_TIMEOUT}"),
            )]
        }
        Some(_) => Vec::new(),
    }
}

fn validate_traffic_policies(spec: &ServiceSpec) -> FieldErrors {
    let path = Path::new("spec");
    let mut errs = FieldErrors::new();
    let etp = spec.external_traffic_policy.as_deref().unwrap_or("");
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(
            &path.child("externalTrafficPolicy"),
            "",
        ));
    } else {
        errs.extend(meta::validate_enum(
            &path.child("externalTrafficPolicy"),
            etp,
            &TRAFFIC_POLICIES,
        ));
    }
    let hc = spec.health_check_node_port.unwrap_or(0);
    if !needs_health_check(spec) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                &path.child("healthCheckNodePort"),
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc != 0 {
        // 0 means "allocate one": the API server's allocator fills it in.
        errs.extend(meta::validate_port_num(
            &path.child("healthCheckNodePort"),
            hc,
        ));
    }
    match &spec.internal_traffic_policy {
        None if matches!(type_of(spec), CLUSTER_IP | NODE_PORT | LOAD_BALANCER) => {
            errs.push(FieldError::required(
                &path.child("internalTrafficPolicy"),
                "",
            ));
        }
        None => {}
        Some(itp) => errs.extend(meta::validate_enum(
            &path.child("internalTrafficPolicy"),
            itp,
            &TRAFFIC_POLICIES,
        )),
    }
    if let Some(td) = &spec.traffic_distribution {
        errs.extend(meta::validate_enum(
            &path.child("trafficDistribution"),
            td,
            &TRAFFIC_DISTRIBUTIONS,
        ));
    }
    errs
}

fn ips_value(spec: &ServiceSpec) -> Value {
    json!(cluster_ips(spec))
}

/// `ValidateServiceClusterIPsRelatedFields`: clusterIP/clusterIPs/ipFamilies/ipFamilyPolicy agree.
fn validate_cluster_ips_related_fields(spec: &ServiceSpec) -> FieldErrors {
    if type_of(spec) == EXTERNAL_NAME {
        return Vec::new();
    }
    let path = Path::new("spec");
    let ips_path = path.child("clusterIPs");
    let mut errs = FieldErrors::new();
    let ips = cluster_ips(spec);
    match spec.cluster_ip.as_deref().unwrap_or("") {
        "" => {
            if !ips.is_empty() {
                errs.push(FieldError::invalid(
                    &ips_path,
                    ips_value(spec),
                    "must be empty when `clusterIP` is not specified",
                ));
            }
        }
        ip => {
            if ips.is_empty() {
                errs.push(FieldError::required(&ips_path, ""));
            } else if ips[0] != ip {
                errs.push(FieldError::invalid(
                    &ips_path,
                    ips_value(spec),
                    "first value must match `clusterIP`",
                ));
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, family) in families(spec).iter().enumerate() {
        let p = path.child("ipFamilies").index(i);
        errs.extend(meta::validate_enum(&p, family, &IP_FAMILIES));
        if !seen.insert(family.as_str()) {
            errs.push(FieldError::duplicate(&p, family.as_str()));
        }
    }
    if let Some(policy) = &spec.ip_family_policy {
        errs.extend(meta::validate_enum(
            &path.child("ipFamilyPolicy"),
            policy,
            &IP_FAMILY_POLICIES,
        ));
    }
    let mut invalid_ips = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == CLUSTER_IP_NONE {
            if ips.len() > 1 {
                invalid_ips = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    ips_value(spec),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let ip_errs = meta::validate_ip(&ips_path.index(i), ip);
        invalid_ips |= !ip_errs.is_empty();
        errs.extend(ip_errs);
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            ips_value(spec),
            "may only hold up to 2 values",
        ));
    }
    if invalid_ips {
        return errs;
    }
    if ips.len() > 1 {
        let parsed: Vec<_> = ips.iter().filter_map(|ip| meta::parse_ip(ip)).collect();
        let dual = parsed.len() == 2 && IpFamily::of(&parsed[0]) != IpFamily::of(&parsed[1]);
        if !dual {
            errs.push(FieldError::invalid(
                &ips_path,
                ips_value(spec),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(spec) {
        for (i, (ip, family)) in ips.iter().zip(families(spec)).enumerate() {
            let Some(actual) = meta::parse_ip(ip).map(|ip| IpFamily::of(&ip)) else {
                continue;
            };
            if let Some(expected) = IpFamily::from_api(family).filter(|f| *f != actual) {
                errs.push(FieldError::invalid(
                    &ips_path.index(i),
                    ip.as_str(),
                    format!(
                        "expected an {} value as indicated by `ipFamilies[{i}]`",
                        expected.as_str()
                    ),
                ));
            }
        }
    }
    errs
}

/// The checks of `initIPFamilyFields` that depend on the cluster's configured service families.
fn validate_against_cluster(spec: &ServiceSpec, ctx: &Context) -> FieldErrors {
    if type_of(spec) == EXTERNAL_NAME {
        return Vec::new();
    }
    let path = Path::new("spec");
    let policy_path = path.child("ipFamilyPolicy");
    let policy = spec.ip_family_policy.as_deref();
    let mut errs = FieldErrors::new();
    if policy == Some(SINGLE_STACK) {
        if cluster_ips(spec).len() == 2 {
            errs.push(FieldError::invalid(&policy_path, SINGLE_STACK, "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"));
        }
        if families(spec).len() == 2 {
            errs.push(FieldError::invalid(&policy_path, SINGLE_STACK, "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"));
        }
    }
    for (i, ip) in cluster_ips(spec).iter().enumerate() {
        if ip == CLUSTER_IP_NONE {
            break;
        }
        if let Some(family) = meta::parse_ip(ip).map(|ip| IpFamily::of(&ip))
            && i >= families(spec).len()
            && !ctx.has_family(family)
        {
            errs.push(FieldError::invalid(
                &path.child("clusterIPs").index(i),
                ips_value(spec),
                format!("{} is not configured on this cluster", family.as_str()),
            ));
        }
    }
    // Headless services without selector may carry any families: they get no cluster IP.
    if is_headless_selectorless(spec) || !errs.is_empty() {
        return errs;
    }
    if policy == Some(REQUIRE_DUAL_STACK) && !ctx.is_dual_stack() {
        errs.push(FieldError::invalid(
            &policy_path,
            REQUIRE_DUAL_STACK,
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, family) in families(spec).iter().enumerate() {
        if let Some(f) = IpFamily::from_api(family)
            && !ctx.has_family(f)
        {
            errs.push(FieldError::invalid(
                &path.child("ipFamilies").index(i),
                family.as_str(),
                "not configured on this cluster",
            ));
        }
    }
    errs
}

/// `ValidateServiceUpdate` without metadata: primary cluster IP and family are immutable (except
/// to and from ExternalName), releasing the secondary needs SingleStack.
fn validate_update(spec: &ServiceSpec, old: &ServiceSpec) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let path = Path::new("spec");
    let external = type_of(spec) == EXTERNAL_NAME || type_of(old) == EXTERNAL_NAME;
    let single = spec.ip_family_policy.as_deref() == Some(SINGLE_STACK);
    let policy_value = || {
        spec.ip_family_policy
            .clone()
            .map(Value::from)
            .unwrap_or(Value::Null)
    };

    let both_headless = is_headless(spec) && is_headless(old);
    if !external && !both_headless {
        let (new_ips, old_ips) = (cluster_ips(spec), cluster_ips(old));
        let p = path.child("clusterIPs");
        let changed =
            |i: usize| FieldError::invalid(&p.index(i), ips_value(spec), "may not change once set");
        if new_ips.len() == old_ips.len() {
            errs.extend(
                (0..old_ips.len())
                    .filter(|&i| new_ips[i] != old_ips[i])
                    .map(changed),
            );
        } else if new_ips.len() < old_ips.len() {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    &p.index(0),
                    ips_value(spec),
                    "primary clusterIP can not be unset",
                ));
            } else if new_ips[0] != old_ips[0] {
                errs.push(changed(0));
            }
            if new_ips.len() == 1 && !single {
                errs.push(FieldError::invalid(
                    &path.child("ipFamilyPolicy"),
                    policy_value(),
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
            errs.push(changed(0));
        }
    }

    if !external && is_headless(spec) == is_headless(old) && !is_headless(spec) {
        let (new_f, old_f) = (families(spec), families(old));
        let p = path.child("ipFamilies").index(0);
        let value = json!(new_f);
        if new_f.len() == old_f.len() {
            if new_f != old_f {
                errs.push(FieldError::invalid(&p, value, "may not change once set"));
            }
        } else if new_f.len() < old_f.len() {
            if new_f.is_empty() {
                errs.push(FieldError::invalid(
                    &p,
                    value,
                    "primary ipFamily can not be unset",
                ));
            } else if new_f[0] != old_f[0] {
                errs.push(FieldError::invalid(&p, value, "may not change once set"));
            }
            if new_f.len() == 1 && !single {
                errs.push(FieldError::invalid(
                    &path.child("ipFamilyPolicy"),
                    policy_value(),
                    "must be set to 'SingleStack' when releasing the secondary ipFamily",
                ));
            }
        } else if !old_f.is_empty() && !new_f.is_empty() && new_f[0] != old_f[0] {
            errs.push(FieldError::invalid(&p, value, "may not change once set"));
        }
    }

    if type_of(spec) == LOAD_BALANCER
        && type_of(old) == LOAD_BALANCER
        && spec.load_balancer_class != old.load_balancer_class
    {
        let value = spec
            .load_balancer_class
            .clone()
            .map(Value::from)
            .unwrap_or(Value::Null);
        errs.push(FieldError::invalid(
            &path.child("loadBalancerClass"),
            value,
            "may not change once set",
        ));
    }
    if needs_health_check(spec)
        && needs_health_check(old)
        && spec.health_check_node_port != old.health_check_node_port
    {
        errs.push(FieldError::forbidden(
            &path.child("healthCheckNodePort"),
            meta::IMMUTABLE,
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::{self, *};
    use proptest::prelude::*;
    use serde_json::json;

    fn v4() -> Context {
        Context {
            service_cluster_ip_families: vec![IpFamily::V4],
        }
    }

    fn dual() -> Context {
        Context {
            service_cluster_ip_families: vec![IpFamily::V4, IpFamily::V6],
        }
    }

    fn svc(spec: Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .expect("service")
    }

    fn simple() -> Service {
        svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}))
    }

    fn admit(mut s: Service, ctx: &Context) -> (Service, FieldErrors) {
        let errs = crate::admit(&mut s, None, ctx);
        (s, errs)
    }

    fn kinds(errs: &FieldErrors) -> Vec<(&str, ErrorKind)> {
        errs.iter().map(|e| (e.field.as_str(), e.kind)).collect()
    }

    fn errors_of(spec: Value, ctx: &Context) -> Vec<(String, ErrorKind)> {
        admit(svc(spec), ctx)
            .1
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    #[test]
    fn defaults_a_cluster_ip_service() {
        let (s, errs) = admit(simple(), &v4());
        assert!(errs.is_empty(), "{errs:?}");
        let spec = s.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.external_traffic_policy, None);
        assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
        assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
        let port = &spec.ports.expect("ports")[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.target_port, Some(IntOrString::Int(80)));
    }

    #[test]
    fn defaults_load_balancer_and_client_ip() {
        let (s, errs) = admit(
            svc(
                json!({"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 443, "targetPort": "https"}]}),
            ),
            &v4(),
        );
        assert!(errs.is_empty(), "{errs:?}");
        let spec = s.spec.expect("spec");
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.allocate_load_balancer_node_ports, Some(true));
        assert_eq!(
            spec.session_affinity_config
                .and_then(|c| c.client_ip)
                .and_then(|c| c.timeout_seconds),
            Some(10800)
        );
        assert_eq!(
            spec.ports.expect("ports")[0].target_port,
            Some(IntOrString::String("https".into()))
        );
    }

    #[test]
    fn ip_family_defaulting_follows_alloc_go() {
        let fams = |spec: Value, ctx: &Context| {
            let (s, _) = admit(svc(spec), ctx);
            let spec = s.spec.expect("spec");
            (spec.ip_family_policy, spec.ip_families)
        };
        let f = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let p = |s: &str| Some(s.to_string());
        // PreferDualStack: both families on a dual-stack cluster, primary only otherwise.
        assert_eq!(
            fams(
                json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 1}]}),
                &dual()
            ),
            (p("PreferDualStack"), f(&["IPv4", "IPv6"]))
        );
        assert_eq!(
            fams(
                json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 1}]}),
                &v4()
            ),
            (p("PreferDualStack"), f(&["IPv4"]))
        );
        // Families follow requested cluster IPs.
        assert_eq!(
            fams(
                json!({"clusterIP": "fd00::1", "ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 1}]}),
                &dual()
            ),
            (p("PreferDualStack"), f(&["IPv6", "IPv4"]))
        );
        // Headless without selector: RequireDualStack, both families even on a single-stack cluster.
        assert_eq!(
            fams(json!({"clusterIP": "None"}), &v4()),
            (p("RequireDualStack"), f(&["IPv4", "IPv6"]))
        );
        // Headless with selector: SingleStack.
        assert_eq!(
            fams(
                json!({"clusterIP": "None", "selector": {"a": "b"}}),
                &dual()
            ),
            (p("SingleStack"), f(&["IPv4"]))
        );
        // ExternalName: nothing.
        assert_eq!(
            fams(
                json!({"type": "ExternalName", "externalName": "example.com"}),
                &dual()
            ),
            (None, None)
        );
    }

    #[test]
    fn rejects_bad_ports() {
        // As upstream, the defaulted targetPort (= port) is reported too.
        let errs = errors_of(json!({"ports": [{"port": 0, "protocol": "FOO"}]}), &v4());
        assert_eq!(
            errs,
            vec![
                ("spec.ports[0].port".into(), Invalid),
                ("spec.ports[0].protocol".into(), NotSupported),
                ("spec.ports[0].targetPort".into(), Invalid),
            ]
        );
        let (_, errs) = admit(svc(json!({"ports": [{"port": 0}]})), &v4());
        assert_eq!(
            errs[0].to_string_with_field(),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        let (_, errs) = admit(
            svc(json!({"ports": [{"port": 1, "protocol": "FOO"}]})),
            &v4(),
        );
        assert_eq!(
            errs[0].message(),
            r#"Unsupported value: "FOO": supported values: "SCTP", "TCP", "UDP""#
        );
        assert_eq!(
            errors_of(json!({"ports": [{"port": 80}, {"port": 81}]}), &v4()),
            vec![
                ("spec.ports[0].name".into(), Required),
                ("spec.ports[1].name".into(), Required),
            ]
        );
        assert_eq!(
            errors_of(
                json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 80}]}),
                &v4()
            ),
            vec![
                ("spec.ports[1].name".into(), Duplicate),
                ("spec.ports[1]".into(), Duplicate),
            ]
        );
        assert_eq!(
            errors_of(
                json!({"ports": [{"name": "A", "port": 80, "targetPort": 70000}]}),
                &v4()
            ),
            vec![
                ("spec.ports[0].name".into(), Invalid),
                ("spec.ports[0].targetPort".into(), Invalid),
            ]
        );
        assert_eq!(
            errors_of(
                json!({"ports": [{"port": 80, "targetPort": "8080"}]}),
                &v4()
            ),
            vec![("spec.ports[0].targetPort".into(), Invalid)]
        );
        assert_eq!(
            errors_of(json!({"ports": [{"port": 80, "nodePort": 30000}]}), &v4()),
            vec![("spec.ports[0].nodePort".into(), Forbidden)]
        );
        assert_eq!(
            errors_of(json!({"ports": []}), &v4()),
            vec![("spec.ports".into(), Required)]
        );
    }

    #[test]
    fn rejects_bad_types_and_external_names() {
        assert_eq!(
            errors_of(json!({"type": "Foo", "ports": [{"port": 80}]}), &v4()),
            vec![("spec.type".into(), NotSupported)]
        );
        assert_eq!(
            errors_of(json!({"type": "ExternalName"}), &v4()),
            vec![("spec.externalName".into(), Required)]
        );
        assert_eq!(
            errors_of(
                json!({"type": "ExternalName", "externalName": "Foo_bar"}),
                &v4()
            ),
            vec![("spec.externalName".into(), Invalid)]
        );
        assert!(
            errors_of(
                json!({"type": "ExternalName", "externalName": "db.example.com."}),
                &v4()
            )
            .is_empty()
        );
        assert_eq!(
            errors_of(
                json!({"type": "ExternalName", "externalName": "a.b", "clusterIP": "10.0.0.1"}),
                &v4()
            ),
            vec![("spec.clusterIPs".into(), Forbidden)]
        );
        assert_eq!(
            errors_of(
                json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.clusterIPs[0]".into(), Invalid)]
        );
    }

    #[test]
    fn rejects_inconsistent_cluster_ips() {
        assert_eq!(
            errors_of(
                json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2"], "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.clusterIPs".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"clusterIPs": ["10.0.0.2"], "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.clusterIPs".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"clusterIP": "10.0.0.300", "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.clusterIPs[0]".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "10.0.0.2"], "ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 1}]}),
                &dual()
            ),
            vec![("spec.clusterIPs".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv6"], "ports": [{"port": 1}]}),
                &dual()
            ),
            vec![("spec.clusterIPs[0]".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1"], "ports": [{"port": 1}]}),
                &dual()
            ),
            vec![("spec.ipFamilyPolicy".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"ipFamilies": ["IPv5"], "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.ipFamilies[0]".into(), NotSupported)]
        );
        assert_eq!(
            errors_of(
                json!({"ipFamilyPolicy": "Both", "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.ipFamilyPolicy".into(), NotSupported)]
        );
    }

    #[test]
    fn rejects_what_the_cluster_cannot_do() {
        let (_, errs) = admit(
            svc(json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 1}]})),
            &v4(),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string_with_field(),
            r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#
        );
        assert_eq!(
            errors_of(
                json!({"ipFamilies": ["IPv6"], "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.ipFamilies[0]".into(), Invalid)]
        );
        let (_, errs) = admit(
            svc(json!({"clusterIP": "fd00::1", "ports": [{"port": 1}]})),
            &v4(),
        );
        assert_eq!(kinds(&errs), vec![("spec.clusterIPs[0]", Invalid)]);
        assert!(errs[0].detail.starts_with("IPv6 is not configured"));
        assert!(
            errors_of(
                json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 1}]}),
                &dual()
            )
            .is_empty()
        );
    }

    #[test]
    fn rejects_bad_affinity_and_traffic_fields() {
        assert_eq!(
            errors_of(
                json!({"sessionAffinity": "Sticky", "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.sessionAffinity".into(), NotSupported)]
        );
        assert_eq!(
            errors_of(
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}, "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                Invalid
            )]
        );
        assert_eq!(
            errors_of(
                json!({"externalTrafficPolicy": "Local", "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.externalTrafficPolicy".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"type": "NodePort", "externalTrafficPolicy": "Nearest", "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.externalTrafficPolicy".into(), NotSupported)]
        );
        assert_eq!(
            errors_of(
                json!({"type": "NodePort", "healthCheckNodePort": 31000, "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.healthCheckNodePort".into(), Invalid)]
        );
        assert!(errors_of(json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000, "ports": [{"port": 1}]}), &v4()).is_empty());
        assert_eq!(
            errors_of(
                json!({"internalTrafficPolicy": "Node", "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.internalTrafficPolicy".into(), NotSupported)]
        );
        assert_eq!(
            errors_of(
                json!({"trafficDistribution": "Anywhere", "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.trafficDistribution".into(), NotSupported)]
        );
        assert!(
            errors_of(
                json!({"trafficDistribution": "PreferSameNode", "ports": [{"port": 1}]}),
                &v4()
            )
            .is_empty()
        );
        assert_eq!(
            errors_of(
                json!({"loadBalancerSourceRanges": ["10.0.0.0/8"], "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.LoadBalancerSourceRanges".into(), Forbidden)]
        );
        assert_eq!(
            errors_of(
                json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0"], "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.LoadBalancerSourceRanges[0]".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"selector": {"app": "a b"}, "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.selector".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                json!({"externalIPs": ["127.0.0.1"], "ports": [{"port": 1}]}),
                &v4()
            ),
            vec![("spec.externalIPs[0]".into(), Invalid)]
        );
    }

    #[test]
    fn service_names_are_dns1035_labels() {
        let mut s = simple();
        s.metadata.name = Some("1web".into());
        let (_, errs) = admit(s, &v4());
        assert_eq!(kinds(&errs), vec![("metadata.name", Invalid)]);
    }

    fn allocated(mut s: Service, ip: &str) -> Service {
        let spec = s.spec.as_mut().expect("spec");
        spec.cluster_ip = Some(ip.into());
        spec.cluster_ips = Some(vec![ip.into()]);
        s
    }

    #[test]
    fn update_keeps_allocations_and_forbids_changing_the_cluster_ip() {
        let ctx = v4();
        let (old, _) = admit(simple(), &ctx);
        let old = allocated(old, "10.0.0.10");
        // A PUT without clusterIP keeps the allocated one.
        let mut new = simple();
        assert!(crate::admit(&mut new, Some(&old), &ctx).is_empty());
        assert_eq!(
            new.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
            Some("10.0.0.10")
        );
        // Changing it is rejected.
        let mut new = allocated(simple(), "10.0.0.11");
        let errs = crate::admit(&mut new, Some(&old), &ctx);
        assert_eq!(kinds(&errs), vec![("spec.clusterIPs[0]", Invalid)]);
        assert_eq!(errs[0].detail, "may not change once set");
        // To ExternalName is allowed: the unchanged cluster IP is dropped.
        let mut new = old.clone();
        let spec = new.spec.as_mut().expect("spec");
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("example.com".into());
        assert!(crate::admit(&mut new, Some(&old), &ctx).is_empty());
        assert_eq!(new.spec.as_ref().and_then(|s| s.cluster_ip.clone()), None);
    }

    #[test]
    fn update_keeps_node_ports() {
        let ctx = v4();
        let mut old = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        old.default(&ctx);
        let mut old = allocated(old, "10.0.0.10");
        old.spec
            .as_mut()
            .and_then(|s| s.ports.as_mut())
            .expect("ports")[0]
            .node_port = Some(30080);
        let mut new = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        assert!(crate::admit(&mut new, Some(&old), &ctx).is_empty());
        assert_eq!(
            new.spec.and_then(|s| s.ports).expect("ports")[0].node_port,
            Some(30080)
        );
    }

    #[test]
    fn downgrading_needs_single_stack() {
        let ctx = dual();
        let mut old = svc(json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}));
        old.default(&ctx);
        let spec = old.spec.as_mut().expect("spec");
        spec.cluster_ip = Some("10.0.0.10".into());
        spec.cluster_ips = Some(vec!["10.0.0.10".into(), "fd00::10".into()]);
        let mut new = old.clone();
        let spec = new.spec.as_mut().expect("spec");
        spec.cluster_ips = Some(vec!["10.0.0.10".into()]);
        spec.ip_families = Some(vec!["IPv4".into()]);
        let errs = new.validate(Some(&old), &ctx);
        assert_eq!(
            kinds(&errs),
            vec![
                ("spec.ipFamilyPolicy", Invalid),
                ("spec.ipFamilyPolicy", Invalid)
            ]
        );
    }

    fn arb_service() -> impl Strategy<Value = Service> {
        let types = prop_oneof![
            Just(None),
            Just(Some("ClusterIP")),
            Just(Some("NodePort")),
            Just(Some("LoadBalancer")),
            Just(Some("ExternalName"))
        ];
        let policies = prop_oneof![
            Just(None),
            Just(Some("SingleStack")),
            Just(Some("PreferDualStack")),
            Just(Some("RequireDualStack"))
        ];
        let ips = prop_oneof![
            Just(None),
            Just(Some("None")),
            Just(Some("10.0.0.1")),
            Just(Some("fd00::1"))
        ];
        let affinity = prop_oneof![Just(None), Just(Some("ClientIP")), Just(Some("None"))];
        (
            types,
            policies,
            ips,
            affinity,
            proptest::collection::vec((1i32..70000, any::<bool>()), 0..3),
            any::<bool>(),
        )
            .prop_map(|(t, policy, ip, affinity, ports, selector)| {
                let ports: Vec<Value> = ports
                    .into_iter()
                    .map(|(p, named)| {
                        if named {
                            json!({"port": p, "targetPort": "http"})
                        } else {
                            json!({"port": p})
                        }
                    })
                    .collect();
                let mut spec = json!({"ports": ports});
                if let Some(t) = t {
                    spec["type"] = json!(t)
                }
                if let Some(p) = policy {
                    spec["ipFamilyPolicy"] = json!(p)
                }
                if let Some(ip) = ip {
                    spec["clusterIP"] = json!(ip)
                }
                if let Some(a) = affinity {
                    spec["sessionAffinity"] = json!(a)
                }
                if selector {
                    spec["selector"] = json!({"app": "x"})
                }
                svc(spec)
            })
    }

    proptest! {
        #[test]
        fn defaulting_is_idempotent(s in arb_service(), dual_stack in any::<bool>()) {
            let ctx = if dual_stack { dual() } else { v4() };
            let mut once = s;
            once.default(&ctx);
            let mut twice = once.clone();
            twice.default(&ctx);
            prop_assert_eq!(once, twice);
        }
    }
}
