//! Gateway API (gateway.networking.k8s.io): GatewayClass, Gateway, HTTPRoute, GRPCRoute,
//! ReferenceGrant.
//!
//! kube-apiserver validates these CRDs with their OpenAPI schema and CEL rules
//! (`config/crd/standard/*.yaml` of kubernetes-sigs/gateway-api), so the messages here are the
//! ones those produce: `spec.listeners[0].port in body should be greater than or equal to 1`,
//! `Too many: 33: must have at most 32 items`, and the CEL rule messages. Defaults are the CRD
//! schema defaults.

use std::collections::HashSet;

use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::{
    Gateway, GatewayListenersAllowedRoutes, GatewayListenersAllowedRoutesNamespaces,
    GatewayListenersAllowedRoutesNamespacesFrom, GatewayListenersTlsMode,
};
use gateway_api::grpcroutes::{GrpcRoute, GrpcRouteRulesMatchesMethodType};
use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesPath,
    HttpRouteRulesMatchesPathType,
};
use gateway_api::referencegrants::ReferenceGrant;

use crate::crd::{max_items, min_items, pattern_error, range_errors, required_string, rule_error};
use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, Path};

pub const GROUP: &str = "gateway.networking.k8s.io";
pub const MAX_PARENT_REFS: usize = 32;
pub const MAX_HOSTNAMES: usize = 16;
pub const MAX_RULES: usize = 16;
pub const MAX_HTTP_MATCHES: usize = 64;
/// CEL rule of HTTPRoute: matches summed over all rules.
pub const MAX_TOTAL_HTTP_MATCHES: usize = 128;
pub const MAX_GRPC_MATCHES: usize = 8;
pub const MAX_BACKEND_REFS: usize = 16;
pub const MAX_HEADER_MATCHES: usize = 16;
pub const MAX_LISTENERS: usize = 64;
pub const MAX_WEIGHT: i32 = 1_000_000;
pub const MAX_PATH_LENGTH: usize = 1024;
const HOSTNAME_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$";

/// `Hostname`: a DNS name, optionally prefixed by `*.`.
fn validate_hostname(path: &Path, host: &str) -> FieldErrors {
    let valid = match host.strip_prefix("*.") {
        Some(rest) => meta::is_dns1123_subdomain(rest).is_empty(),
        None => meta::is_dns1123_subdomain(host).is_empty(),
    };
    let mut errs = FieldErrors::new();
    if host.len() > meta::DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(FieldError::too_long(
            path,
            meta::DNS1123_SUBDOMAIN_MAX_LENGTH,
        ));
    }
    if !valid {
        errs.push(pattern_error(path, host, HOSTNAME_PATTERN));
    }
    errs
}

fn validate_hostnames(path: &Path, hostnames: &[String]) -> FieldErrors {
    let mut errs = max_items(path, hostnames.len(), MAX_HOSTNAMES);
    for (i, host) in hostnames.iter().enumerate() {
        errs.extend(validate_hostname(&path.index(i), host));
    }
    errs
}

/// An HTTP header (or gRPC metadata) name: an RFC 7230 token.
fn validate_header_name(path: &Path, name: &str) -> FieldErrors {
    let token = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if token {
        Vec::new()
    } else {
        vec![pattern_error(path, name, HEADER_NAME_PATTERN)]
    }
}

/// `SectionName` and other names of the Gateway API: DNS subdomains.
fn validate_section_name(path: &Path, name: &str) -> FieldErrors {
    if meta::is_dns1123_subdomain(name).is_empty() {
        Vec::new()
    } else {
        vec![pattern_error(
            path,
            name,
            r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        )]
    }
}

/// The fields every parentRef has, whatever route kind it belongs to.
struct ParentRef<'a> {
    name: &'a str,
    namespace: Option<&'a str>,
    section_name: Option<&'a str>,
    port: Option<i32>,
}

fn validate_parent_refs(path: &Path, refs: &[ParentRef<'_>]) -> FieldErrors {
    let mut errs = max_items(path, refs.len(), MAX_PARENT_REFS);
    let mut seen = HashSet::new();
    for (i, r) in refs.iter().enumerate() {
        let p = path.index(i);
        errs.extend(required_string(&p.child("name"), r.name));
        if let Some(ns) = r.namespace {
            errs.extend(meta::each_invalid(
                &p.child("namespace"),
                ns,
                NameRule::Dns1123Label.check(ns, false),
            ));
        }
        if let Some(section) = r.section_name {
            errs.extend(validate_section_name(&p.child("sectionName"), section));
        }
        if let Some(port) = r.port {
            errs.extend(range_errors(&p.child("port"), i64::from(port), 1, 65535));
        }
        if !seen.insert((r.name, r.namespace, r.section_name, r.port)) {
            errs.push(rule_error(path, "array", "sectionName or port must be specified when parentRefs includes 2 or more references to the same parent"));
        }
    }
    errs
}

/// The fields every backendRef has.
struct BackendRef<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    name: &'a str,
    namespace: Option<&'a str>,
    port: Option<i32>,
    weight: Option<i32>,
}

fn validate_backend_refs(path: &Path, refs: &[BackendRef<'_>]) -> FieldErrors {
    let mut errs = max_items(path, refs.len(), MAX_BACKEND_REFS);
    for (i, r) in refs.iter().enumerate() {
        let p = path.index(i);
        errs.extend(required_string(&p.child("name"), r.name));
        if let Some(ns) = r.namespace {
            errs.extend(meta::each_invalid(
                &p.child("namespace"),
                ns,
                NameRule::Dns1123Label.check(ns, false),
            ));
        }
        if let Some(port) = r.port {
            errs.extend(range_errors(&p.child("port"), i64::from(port), 1, 65535));
        }
        let is_service =
            r.group.unwrap_or("").is_empty() && r.kind.unwrap_or("Service") == "Service";
        if is_service && r.port.is_none() {
            errs.push(rule_error(
                &p,
                "object",
                "Must have port for Service reference",
            ));
        }
        if let Some(weight) = r.weight {
            errs.extend(range_errors(
                &p.child("weight"),
                i64::from(weight),
                0,
                i64::from(MAX_WEIGHT),
            ));
        }
    }
    errs
}

/// CRD defaults of a parentRef: the Gateway kind of this API group.
fn default_parent_ref(group: &mut Option<String>, kind: &mut Option<String>) {
    group.get_or_insert_with(|| GROUP.to_owned());
    kind.get_or_insert_with(|| "Gateway".to_owned());
}

/// CRD defaults of a backendRef: a core Service with weight 1.
fn default_backend_ref(
    group: &mut Option<String>,
    kind: &mut Option<String>,
    weight: &mut Option<i32>,
) {
    group.get_or_insert_with(String::new);
    kind.get_or_insert_with(|| "Service".to_owned());
    weight.get_or_insert(1);
}

// ---------------------------------------------------------------------------------------------
// GatewayClass

impl Admit for GatewayClass {
    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            false,
            NameRule::Dns1123Subdomain,
        );
        let path = Path::new("spec");
        let controller_path = path.child("controllerName");
        errs.extend(meta::validate_domain_prefixed_path(
            &controller_path,
            &self.spec.controller_name,
        ));
        if let Some(params) = &self.spec.parameters_ref {
            let p = path.child("parametersRef");
            errs.extend(required_string(&p.child("kind"), &params.kind));
            errs.extend(required_string(&p.child("name"), &params.name));
            if let Some(ns) = &params.namespace {
                errs.extend(meta::each_invalid(
                    &p.child("namespace"),
                    ns,
                    NameRule::Dns1123Label.check(ns, false),
                ));
            }
        }
        if let Some(old) = old
            && old.spec.controller_name != self.spec.controller_name
        {
            errs.push(FieldError::invalid(
                &controller_path,
                self.spec.controller_name.as_str(),
                "Value is immutable",
            ));
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway

impl Admit for Gateway {
    /// Listeners accept routes of their own namespace; TLS terminates.
    fn default(&mut self, _ctx: &Context) {
        for listener in &mut self.spec.listeners {
            let routes = listener
                .allowed_routes
                .get_or_insert_with(GatewayListenersAllowedRoutes::default);
            let namespaces = routes
                .namespaces
                .get_or_insert_with(GatewayListenersAllowedRoutesNamespaces::default);
            namespaces
                .from
                .get_or_insert(GatewayListenersAllowedRoutesNamespacesFrom::Same);
            if let Some(tls) = &mut listener.tls {
                tls.mode.get_or_insert(GatewayListenersTlsMode::Terminate);
            }
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let path = Path::new("spec");
        errs.extend(required_string(
            &path.child("gatewayClassName"),
            &self.spec.gateway_class_name,
        ));
        let listeners_path = path.child("listeners");
        let listeners = &self.spec.listeners;
        errs.extend(min_items(&listeners_path, listeners.len(), 1));
        errs.extend(max_items(&listeners_path, listeners.len(), MAX_LISTENERS));
        let mut names = HashSet::new();
        let mut combos = HashSet::new();
        let (mut duplicate_name, mut duplicate_combo) = (false, false);
        for (i, l) in listeners.iter().enumerate() {
            let p = listeners_path.index(i);
            if l.name.is_empty() {
                errs.push(FieldError::required(&p.child("name"), ""));
            } else {
                errs.extend(validate_section_name(&p.child("name"), &l.name));
            }
            errs.extend(range_errors(&p.child("port"), i64::from(l.port), 1, 65535));
            if l.protocol.is_empty() {
                errs.push(FieldError::required(&p.child("protocol"), ""));
            } else if !is_valid_protocol(&l.protocol) {
                errs.push(pattern_error(&p.child("protocol"), &l.protocol, "^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\/[A-Za-z0-9]+$"));
            }
            if let Some(host) = &l.hostname {
                errs.extend(validate_hostname(&p.child("hostname"), host));
            }
            duplicate_name |= !names.insert(l.name.as_str());
            duplicate_combo |= !combos.insert((
                l.port,
                l.protocol.as_str(),
                l.hostname.as_deref().unwrap_or(""),
            ));
        }
        // The CEL rules of `spec.listeners`.
        let any =
            |f: &dyn Fn(&gateway_api::gateways::GatewayListeners) -> bool| listeners.iter().any(f);
        if any(&|l| matches!(l.protocol.as_str(), "HTTP" | "TCP" | "UDP") && l.tls.is_some()) {
            errs.push(rule_error(
                &listeners_path,
                "array",
                "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
            ));
        }
        if any(&|l| matches!(l.protocol.as_str(), "HTTPS" | "TLS") && l.tls.is_none()) {
            errs.push(rule_error(
                &listeners_path,
                "array",
                "tls mode must be set for protocols ['HTTPS', 'TLS']",
            ));
        }
        if any(&|l| {
            matches!(l.protocol.as_str(), "TCP" | "UDP")
                && l.hostname.as_deref().is_some_and(|h| !h.is_empty())
        }) {
            errs.push(rule_error(
                &listeners_path,
                "array",
                "hostname must not be specified for protocols ['TCP', 'UDP']",
            ));
        }
        if duplicate_name {
            errs.push(rule_error(
                &listeners_path,
                "array",
                "Listener name must be unique within the Gateway",
            ));
        }
        if duplicate_combo {
            errs.push(rule_error(
                &listeners_path,
                "array",
                "Combination of port, protocol and hostname must be unique for each listener",
            ));
        }
        for (i, address) in self.spec.addresses.iter().flatten().enumerate() {
            let p = path.child("addresses").index(i);
            let value = address.value.as_deref().unwrap_or("");
            if address.r#type.as_deref().is_none_or(|t| t == "IPAddress") && !value.is_empty() {
                errs.extend(
                    meta::validate_ip(&p.child("value"), value)
                        .into_iter()
                        .map(|_| rule_error(&p, "object", "value must be an IP address")),
                );
            }
        }
        errs
    }
}

/// `ProtocolType`: a core protocol name, or a domain-prefixed implementation-specific one.
fn is_valid_protocol(protocol: &str) -> bool {
    let simple = {
        let (Some(first), Some(last)) = (protocol.chars().next(), protocol.chars().last()) else {
            return false;
        };
        first.is_ascii_alphanumeric()
            && last.is_ascii_alphanumeric()
            && protocol
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let prefixed = protocol.split_once('/').is_some_and(|(domain, name)| {
        meta::is_dns1123_subdomain(domain).is_empty()
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric())
    });
    simple || prefixed
}

// ---------------------------------------------------------------------------------------------
// HTTPRoute

fn default_http_match() -> HttpRouteRulesMatches {
    HttpRouteRulesMatches {
        path: Some(HttpRouteRulesMatchesPath {
            r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
            value: Some("/".to_owned()),
        }),
        ..Default::default()
    }
}

impl Admit for HttpRoute {
    /// CRD defaults: one rule matching every path, path matches of type PathPrefix on `/`,
    /// Gateway parents and Service backends of weight 1.
    fn default(&mut self, _ctx: &Context) {
        let spec = &mut self.spec;
        for r in spec.parent_refs.iter_mut().flatten() {
            default_parent_ref(&mut r.group, &mut r.kind);
        }
        let rules = spec
            .rules
            .get_or_insert_with(|| vec![HttpRouteRules::default()]);
        for rule in rules {
            let matches = rule
                .matches
                .get_or_insert_with(|| vec![default_http_match()]);
            for m in matches {
                let path = m
                    .path
                    .get_or_insert_with(HttpRouteRulesMatchesPath::default);
                path.r#type
                    .get_or_insert(HttpRouteRulesMatchesPathType::PathPrefix);
                path.value.get_or_insert_with(|| "/".to_owned());
            }
            for b in rule.backend_refs.iter_mut().flatten() {
                default_backend_ref(&mut b.group, &mut b.kind, &mut b.weight);
            }
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let spec = &self.spec;
        let path = Path::new("spec");
        let parents: Vec<ParentRef<'_>> = spec
            .parent_refs
            .iter()
            .flatten()
            .map(|r| ParentRef {
                name: &r.name,
                namespace: r.namespace.as_deref(),
                section_name: r.section_name.as_deref(),
                port: r.port,
            })
            .collect();
        errs.extend(validate_parent_refs(&path.child("parentRefs"), &parents));
        errs.extend(validate_hostnames(
            &path.child("hostnames"),
            spec.hostnames.as_deref().unwrap_or(&[]),
        ));
        let rules = spec.rules.as_deref().unwrap_or(&[]);
        let rules_path = path.child("rules");
        errs.extend(max_items(&rules_path, rules.len(), MAX_RULES));
        let total_matches: usize = rules
            .iter()
            .map(|r| r.matches.as_ref().map_or(0, Vec::len))
            .sum();
        if total_matches > MAX_TOTAL_HTTP_MATCHES {
            errs.push(rule_error(
                &rules_path,
                "array",
                "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128",
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            let p = rules_path.index(i);
            let matches = rule.matches.as_deref().unwrap_or(&[]);
            errs.extend(max_items(
                &p.child("matches"),
                matches.len(),
                MAX_HTTP_MATCHES,
            ));
            for (j, m) in matches.iter().enumerate() {
                errs.extend(validate_http_match(m, &p.child("matches").index(j)));
            }
            let backends: Vec<BackendRef<'_>> = rule
                .backend_refs
                .iter()
                .flatten()
                .map(|b| BackendRef {
                    group: b.group.as_deref(),
                    kind: b.kind.as_deref(),
                    name: &b.name,
                    namespace: b.namespace.as_deref(),
                    port: b.port,
                    weight: b.weight,
                })
                .collect();
            errs.extend(validate_backend_refs(&p.child("backendRefs"), &backends));
            if let Some(name) = &rule.name {
                errs.extend(validate_section_name(&p.child("name"), name));
            }
        }
        errs
    }
}

/// `HTTPPathMatch` CEL rules: absolute, normalized paths for Exact and PathPrefix.
fn validate_http_match(m: &HttpRouteRulesMatches, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Some(path_match) = &m.path {
        let p = path.child("path");
        let value = path_match.value.as_deref().unwrap_or("/");
        if value.len() > MAX_PATH_LENGTH {
            errs.push(FieldError::too_long(&p.child("value"), MAX_PATH_LENGTH));
        }
        if !matches!(
            path_match.r#type,
            Some(HttpRouteRulesMatchesPathType::RegularExpression)
        ) {
            let mut rule = |bad: bool, msg: &str| {
                if bad {
                    errs.push(rule_error(&p, "object", msg));
                }
            };
            rule(
                !value.starts_with('/'),
                "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
            );
            for seq in ["//", "/./", "/../", "%2f", "%2F", "#"] {
                rule(
                    value.contains(seq),
                    &format!("must not contain '{seq}' when type one of ['Exact', 'PathPrefix']"),
                );
            }
            for suffix in ["/..", "/."] {
                rule(
                    value.ends_with(suffix),
                    &format!(
                        "must not end with '{suffix}' when type one of ['Exact', 'PathPrefix']"
                    ),
                );
            }
        }
    }
    let headers = m.headers.as_deref().unwrap_or(&[]);
    errs.extend(max_items(
        &path.child("headers"),
        headers.len(),
        MAX_HEADER_MATCHES,
    ));
    let mut seen = HashSet::new();
    for (i, h) in headers.iter().enumerate() {
        errs.extend(validate_header_name(
            &path.child("headers").index(i).child("name"),
            &h.name,
        ));
        if !seen.insert(h.name.to_ascii_lowercase()) {
            errs.push(FieldError::duplicate(
                &path.child("headers").index(i).child("name"),
                h.name.as_str(),
            ));
        }
    }
    let params = m.query_params.as_deref().unwrap_or(&[]);
    errs.extend(max_items(
        &path.child("queryParams"),
        params.len(),
        MAX_HEADER_MATCHES,
    ));
    for (i, q) in params.iter().enumerate() {
        errs.extend(validate_header_name(
            &path.child("queryParams").index(i).child("name"),
            &q.name,
        ));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// GRPCRoute

impl Admit for GrpcRoute {
    fn default(&mut self, _ctx: &Context) {
        for r in self.spec.parent_refs.iter_mut().flatten() {
            default_parent_ref(&mut r.group, &mut r.kind);
        }
        for rule in self.spec.rules.iter_mut().flatten() {
            for m in rule.matches.iter_mut().flatten() {
                if let Some(method) = &mut m.method {
                    method
                        .r#type
                        .get_or_insert(GrpcRouteRulesMatchesMethodType::Exact);
                }
            }
            for b in rule.backend_refs.iter_mut().flatten() {
                default_backend_ref(&mut b.group, &mut b.kind, &mut b.weight);
            }
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let spec = &self.spec;
        let path = Path::new("spec");
        let parents: Vec<ParentRef<'_>> = spec
            .parent_refs
            .iter()
            .flatten()
            .map(|r| ParentRef {
                name: &r.name,
                namespace: r.namespace.as_deref(),
                section_name: r.section_name.as_deref(),
                port: r.port,
            })
            .collect();
        errs.extend(validate_parent_refs(&path.child("parentRefs"), &parents));
        errs.extend(validate_hostnames(
            &path.child("hostnames"),
            spec.hostnames.as_deref().unwrap_or(&[]),
        ));
        let rules = spec.rules.as_deref().unwrap_or(&[]);
        let rules_path = path.child("rules");
        errs.extend(max_items(&rules_path, rules.len(), MAX_RULES));
        for (i, rule) in rules.iter().enumerate() {
            let p = rules_path.index(i);
            let matches = rule.matches.as_deref().unwrap_or(&[]);
            errs.extend(max_items(
                &p.child("matches"),
                matches.len(),
                MAX_GRPC_MATCHES,
            ));
            for (j, m) in matches.iter().enumerate() {
                let mp = p.child("matches").index(j);
                if let Some(method) = &m.method {
                    let exact = !matches!(
                        method.r#type,
                        Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
                    );
                    let (service, name) = (
                        method.service.as_deref().unwrap_or(""),
                        method.method.as_deref().unwrap_or(""),
                    );
                    if exact && service.is_empty() && name.is_empty() {
                        errs.push(rule_error(
                            &mp.child("method"),
                            "object",
                            "One or both of 'service' or 'method' must be specified",
                        ));
                    }
                    if exact && name.contains('/') {
                        errs.push(rule_error(&mp.child("method"), "object", "method must only contain valid characters (matching ^[A-Za-z_][A-Za-z_0-9]*$)"));
                    }
                }
                let headers = m.headers.as_deref().unwrap_or(&[]);
                errs.extend(max_items(
                    &mp.child("headers"),
                    headers.len(),
                    MAX_HEADER_MATCHES,
                ));
                for (k, h) in headers.iter().enumerate() {
                    errs.extend(validate_header_name(
                        &mp.child("headers").index(k).child("name"),
                        &h.name,
                    ));
                }
            }
            let backends: Vec<BackendRef<'_>> = rule
                .backend_refs
                .iter()
                .flatten()
                .map(|b| BackendRef {
                    group: b.group.as_deref(),
                    kind: b.kind.as_deref(),
                    name: &b.name,
                    namespace: b.namespace.as_deref(),
                    port: b.port,
                    weight: b.weight,
                })
                .collect();
            errs.extend(validate_backend_refs(&p.child("backendRefs"), &backends));
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// ReferenceGrant

impl Admit for ReferenceGrant {
    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let path = Path::new("spec");
        let from_path = path.child("from");
        errs.extend(min_items(&from_path, self.spec.from.len(), 1));
        errs.extend(max_items(&from_path, self.spec.from.len(), 16));
        for (i, from) in self.spec.from.iter().enumerate() {
            let p = from_path.index(i);
            errs.extend(required_string(&p.child("kind"), &from.kind));
            if from.namespace.is_empty() {
                errs.push(FieldError::required(&p.child("namespace"), ""));
            } else {
                errs.extend(meta::each_invalid(
                    &p.child("namespace"),
                    &from.namespace,
                    NameRule::Dns1123Label.check(&from.namespace, false),
                ));
            }
        }
        let to_path = path.child("to");
        errs.extend(min_items(&to_path, self.spec.to.len(), 1));
        errs.extend(max_items(&to_path, self.spec.to.len(), 16));
        for (i, to) in self.spec.to.iter().enumerate() {
            let p = to_path.index(i);
            errs.extend(required_string(&p.child("kind"), &to.kind));
            if let Some(name) = to.name.as_deref().filter(|n| !n.is_empty()) {
                errs.extend(meta::validate_dns1123_subdomain(&p.child("name"), name));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::{self, *};
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    fn obj<T: DeserializeOwned>(spec: Value) -> T {
        serde_json::from_value(
            json!({"metadata": {"name": "x", "namespace": "default"}, "spec": spec}),
        )
        .expect("object")
    }

    fn errors_of<T: Admit>(mut o: T, old: Option<&T>) -> Vec<(String, ErrorKind)> {
        crate::admit(&mut o, old, &Context::default())
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    #[test]
    fn gateway_class() {
        let class = |c: &str| -> GatewayClass {
            serde_json::from_value(
                json!({"metadata": {"name": "kubewire"}, "spec": {"controllerName": c}}),
            )
            .expect("class")
        };
        let ok = class("kubewire.io/gateway");
        assert!(errors_of(ok.clone(), None).is_empty());
        assert_eq!(
            errors_of(class(""), None),
            vec![("spec.controllerName".into(), Required)]
        );
        assert_eq!(
            errors_of(class("gateway"), None),
            vec![("spec.controllerName".into(), Invalid)]
        );
        let errs = crate::admit(
            &mut class("other.io/gateway"),
            Some(&ok),
            &Context::default(),
        );
        assert_eq!(
            errs[0].to_string_with_field(),
            r#"spec.controllerName: Invalid value: "other.io/gateway": Value is immutable"#
        );
    }

    fn listener(name: &str, port: i32, protocol: &str) -> Value {
        json!({"name": name, "port": port, "protocol": protocol})
    }

    #[test]
    fn gateways() {
        let mut gw: Gateway = obj(
            json!({"gatewayClassName": "kubewire", "listeners": [listener("http", 80, "HTTP"), listener("dns", 53, "example.com/DNS")]}),
        );
        assert!(crate::admit(&mut gw, None, &Context::default()).is_empty());
        let from = gw.spec.listeners[0]
            .allowed_routes
            .as_ref()
            .and_then(|r| r.namespaces.as_ref())
            .and_then(|n| n.from.clone());
        assert_eq!(
            from,
            Some(GatewayListenersAllowedRoutesNamespacesFrom::Same)
        );
        let bad: Gateway = obj(
            json!({"gatewayClassName": "", "listeners": [listener("http", 0, "HTTP"), listener("http", 80, ""), listener("Web", 8080, "HTTP")]}),
        );
        let errs = crate::admit(&mut bad.clone(), None, &Context::default());
        assert_eq!(
            errs[1].to_string_with_field(),
            "spec.listeners[0].port: Invalid value: 0: spec.listeners[0].port in body should be greater than or equal to 1"
        );
        assert_eq!(
            errors_of(bad, None),
            vec![
                ("spec.gatewayClassName".into(), Required),
                ("spec.listeners[0].port".into(), Invalid),
                ("spec.listeners[1].protocol".into(), Required),
                ("spec.listeners[2].name".into(), Invalid),
                ("spec.listeners".into(), Invalid),
            ]
        );
        let tls: Gateway = obj(json!({"gatewayClassName": "c", "listeners": [
            {"name": "a", "port": 80, "protocol": "HTTP", "tls": {}},
            {"name": "b", "port": 443, "protocol": "HTTPS", "hostname": "*.example.com"},
            {"name": "c", "port": 5353, "protocol": "UDP", "hostname": "foo.*"}
        ]}));
        assert_eq!(
            errors_of(tls, None),
            vec![
                ("spec.listeners[2].hostname".into(), Invalid),
                ("spec.listeners".into(), Invalid),
                ("spec.listeners".into(), Invalid),
                ("spec.listeners".into(), Invalid),
            ]
        );
        let empty: Gateway = obj(json!({"gatewayClassName": "c", "listeners": []}));
        assert_eq!(
            errors_of(empty, None),
            vec![("spec.listeners".into(), Invalid)]
        );
    }

    fn route(rules: Value) -> HttpRoute {
        obj(
            json!({"parentRefs": [{"name": "gw"}], "hostnames": ["app.example.com"], "rules": rules}),
        )
    }

    #[test]
    fn http_route_defaults() {
        let mut r: HttpRoute = obj(
            json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
        );
        assert!(crate::admit(&mut r, None, &Context::default()).is_empty());
        let parent = &r.spec.parent_refs.as_ref().expect("parents")[0];
        assert_eq!(
            (parent.group.as_deref(), parent.kind.as_deref()),
            (Some(GROUP), Some("Gateway"))
        );
        let rule = &r.spec.rules.as_ref().expect("rules")[0];
        assert_eq!(
            rule.matches.as_ref().expect("matches")[0],
            default_http_match()
        );
        let backend = &rule.backend_refs.as_ref().expect("backends")[0];
        assert_eq!(
            (backend.kind.as_deref(), backend.weight),
            (Some("Service"), Some(1))
        );
        let mut bare: HttpRoute = obj(json!({}));
        bare.default(&Context::default());
        assert_eq!(bare.spec.rules.map(|r| r.len()), Some(1));
    }

    #[test]
    fn http_route_rules() {
        assert!(errors_of(route(json!([{"matches": [{"path": {"type": "Exact", "value": "/api"}, "headers": [{"name": "x-env", "value": "a"}]}],
            "backendRefs": [{"name": "web", "port": 80, "weight": 10}]}])), None).is_empty());
        assert_eq!(
            errors_of(route(json!([{"backendRefs": [{"name": "web"}]}])), None),
            vec![("spec.rules[0].backendRefs[0]".into(), Invalid)]
        );
        assert!(errors_of(route(json!([{"backendRefs": [{"group": "example.com", "kind": "Bucket", "name": "b"}]}])), None).is_empty());
        assert_eq!(
            errors_of(
                route(json!([{"backendRefs": [{"name": "web", "port": 80, "weight": 1000001}]}])),
                None
            ),
            vec![("spec.rules[0].backendRefs[0].weight".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                route(json!([{"matches": [{"path": {"type": "PathPrefix", "value": "api"}}]}])),
                None
            ),
            vec![("spec.rules[0].matches[0].path".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                route(json!([{"matches": [{"path": {"type": "Exact", "value": "/a//b"}}]}])),
                None
            ),
            vec![("spec.rules[0].matches[0].path".into(), Invalid)]
        );
        assert!(errors_of(route(json!([{"matches": [{"path": {"type": "RegularExpression", "value": "^/a.*"}}]}])), None).is_empty());
        assert_eq!(
            errors_of(
                route(json!([{"matches": [{"headers": [{"name": "bad header", "value": "a"}]}]}])),
                None
            ),
            vec![("spec.rules[0].matches[0].headers[0].name".into(), Invalid)]
        );
        let rules: Vec<Value> = (0..17).map(|_| json!({})).collect();
        assert_eq!(
            errors_of(route(json!(rules)), None),
            vec![("spec.rules".into(), TooMany)]
        );
        let matches: Vec<Value> = (0..65).map(|_| json!({"path": {"value": "/"}})).collect();
        assert_eq!(
            errors_of(route(json!([{"matches": matches}])), None),
            vec![("spec.rules[0].matches".into(), TooMany)]
        );
        let many: Vec<Value> = (0..3)
            .map(|_| json!({"matches": (0..50).map(|_| json!({})).collect::<Vec<_>>()}))
            .collect();
        assert_eq!(
            errors_of(route(json!(many)), None),
            vec![("spec.rules".into(), Invalid)]
        );
        let parents: Vec<Value> = (0..33)
            .map(|i| json!({"name": "gw", "sectionName": format!("s{i}")}))
            .collect();
        let r: HttpRoute = obj(json!({"parentRefs": parents}));
        assert_eq!(
            errors_of(r, None),
            vec![("spec.parentRefs".into(), TooMany)]
        );
        let r: HttpRoute = obj(
            json!({"parentRefs": [{"name": "gw", "port": 0}], "hostnames": ["*.ok.com", "Bad.com"]}),
        );
        assert_eq!(
            errors_of(r, None),
            vec![
                ("spec.parentRefs[0].port".into(), Invalid),
                ("spec.hostnames[1]".into(), Invalid)
            ]
        );
    }

    #[test]
    fn grpc_routes() {
        let ok: GrpcRoute = obj(
            json!({"parentRefs": [{"name": "gw"}], "rules": [{"matches": [{"method": {"service": "echo.Echo"}}], "backendRefs": [{"name": "echo", "port": 9000}]}]}),
        );
        assert!(errors_of(ok, None).is_empty());
        let bad: GrpcRoute = obj(
            json!({"rules": [{"matches": [{"method": {}}], "backendRefs": [{"name": "echo"}]}]}),
        );
        assert_eq!(
            errors_of(bad, None),
            vec![
                ("spec.rules[0].matches[0].method".into(), Invalid),
                ("spec.rules[0].backendRefs[0]".into(), Invalid)
            ]
        );
        let matches: Vec<Value> = (0..9)
            .map(|_| json!({"method": {"service": "s"}}))
            .collect();
        let many: GrpcRoute = obj(json!({"rules": [{"matches": matches}]}));
        assert_eq!(
            errors_of(many, None),
            vec![("spec.rules[0].matches".into(), TooMany)]
        );
    }

    #[test]
    fn reference_grants() {
        let ok: ReferenceGrant = obj(
            json!({"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "apps"}], "to": [{"group": "", "kind": "Service"}]}),
        );
        assert!(errors_of(ok, None).is_empty());
        let empty: ReferenceGrant = obj(json!({"from": [], "to": []}));
        assert_eq!(
            errors_of(empty, None),
            vec![("spec.from".into(), Invalid), ("spec.to".into(), Invalid)]
        );
        let bad: ReferenceGrant = obj(
            json!({"from": [{"group": "", "kind": "", "namespace": "Bad"}], "to": [{"group": "", "kind": "Service", "name": "A"}]}),
        );
        assert_eq!(
            errors_of(bad, None),
            vec![
                ("spec.from[0].kind".into(), Required),
                ("spec.from[0].namespace".into(), Invalid),
                ("spec.to[0].name".into(), Invalid),
            ]
        );
    }
}
