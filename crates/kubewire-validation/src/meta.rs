//! Metadata, names, label selectors, ports, IPs and CIDRs: the building blocks every kind uses.
//!
//! The `is_*` functions return kube's messages (empty when valid), like
//! `k8s.io/apimachinery/pkg/util/validation`; the `validate_*` functions return field errors.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::{FieldError, FieldErrors, IpFamily, Path};

pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// `TotalAnnotationSizeLimitB`: keys plus values of all annotations.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// The IANA service-name limit of port names.
pub const PORT_NAME_MAX_LENGTH: usize = 15;
/// The sorted list kube prints for an unsupported protocol.
pub const SUPPORTED_PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
pub const IMMUTABLE: &str = "field is immutable";
pub const NEGATIVE: &str = "must be greater than or equal to 0";

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const WILDCARD_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

// ---------------------------------------------------------------------------------------------
// Message builders shared with apimachinery.

/// `validation.RegexError`: the message, examples and the pattern users can test against.
pub fn regex_error(msg: &str, pattern: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{pattern}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{example}', "));
    }
    s.push_str(&format!("regex used for validation is '{pattern}')"));
    s
}

pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

// ---------------------------------------------------------------------------------------------
// Character-class matchers standing in for apimachinery's regular expressions.

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns_label(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    is_lower_alnum(first)
        && is_lower_alnum(last)
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1035_label(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && matches_dns_label(s)
}

fn matches_dns_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

// ---------------------------------------------------------------------------------------------
// String validators (messages, empty when valid).

/// RFC 1123 label: namespaces, port names of services, hostnames.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns_label(value) {
        errs.push(regex_error(
            DNS1123_LABEL_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// RFC 1123 subdomain: most object names, hostnames of Ingress rules.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// RFC 1035 label (starts with a letter): Service names.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1035_label(value) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `*.` followed by an RFC 1123 subdomain: wildcard hosts of Ingress rules and TLS.
pub fn is_wildcard_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let ok = value.strip_prefix("*.").is_some_and(matches_dns_subdomain);
    if !ok {
        errs.push(regex_error(
            WILDCARD_MSG,
            &format!(r"\*\.{DNS1123_SUBDOMAIN_FMT}"),
            &["*.example.com"],
        ));
    }
    errs
}

/// An optionally prefixed name (`example.com/MyName`): label keys, annotation keys, condition types.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// A label value: empty, or up to 63 characters of the qualified-name alphabet.
pub fn is_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// A key of a ConfigMap or Secret (also a file name when mounted).
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let charset_ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !charset_ok {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errs.push("must not be '.'".to_owned());
    } else if value == ".." {
        errs.push("must not be '..'".to_owned());
    } else if value.starts_with("..") {
        errs.push("must not start with '..'".to_owned());
    }
    errs
}

/// An IANA service name (RFC 6335): named ports of containers, NetworkPolicies and probes.
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > PORT_NAME_MAX_LENGTH {
        errs.push(max_len_error(PORT_NAME_MAX_LENGTH));
    }
    if port.is_empty()
        || !port
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if !port.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_owned());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_owned());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_owned());
    }
    errs
}

/// `lo..=hi`, with kube's message.
pub fn is_in_range(value: i64, lo: i64, hi: i64) -> Vec<String> {
    if (lo..=hi).contains(&value) {
        Vec::new()
    } else {
        vec![inclusive_range_error(lo, hi)]
    }
}

/// A TCP/UDP/SCTP port number, 1..=65535.
pub fn is_valid_port_num(port: i32) -> Vec<String> {
    is_in_range(i64::from(port), 1, 65535)
}

/// A domain name with at least two labels, an optional trailing dot (FQDN endpoints).
pub fn is_fully_qualified_domain_name(path: &Path, name: &str) -> FieldErrors {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let mut errs: FieldErrors = is_dns1123_subdomain(name)
        .into_iter()
        .map(|m| FieldError::invalid(path, name, m))
        .collect();
    if name.split('.').count() < 2 {
        errs.push(FieldError::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        ));
    }
    for label in name.split('.') {
        for msg in is_dns1123_label(label) {
            errs.push(FieldError::invalid(path, label, msg));
        }
    }
    errs
}

/// `validation.IsDomainPrefixedPath`: `example.com/path` (IngressClass and GatewayClass controllers).
pub fn validate_domain_prefixed_path(path: &Path, value: &str) -> FieldErrors {
    if value.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let Some((host, rest)) = value.split_once('/') else {
        return vec![FieldError::invalid(
            path,
            value,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )];
    };
    let mut errs: FieldErrors = is_dns1123_subdomain(host)
        .into_iter()
        .map(|m| FieldError::invalid(path, host, m))
        .collect();
    let path_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c));
    if !path_ok {
        errs.push(FieldError::invalid(path, rest, "Invalid path"));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// IPs and CIDRs.

/// Parses an IP address the strict way (no leading zeros, no zone).
pub fn parse_ip(value: &str) -> Option<IpAddr> {
    value.parse().ok()
}

/// Parses a CIDR. Like kube's legacy fields, bits set beyond the prefix length are tolerated.
pub fn parse_cidr(value: &str) -> Option<IpNet> {
    if !value.contains('/') {
        return None;
    }
    value.parse().ok()
}

pub fn is_valid_ip(value: &str) -> Vec<String> {
    match parse_ip(value) {
        Some(_) => Vec::new(),
        None => vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_owned()],
    }
}

pub fn is_valid_cidr(value: &str) -> Vec<String> {
    match parse_cidr(value) {
        Some(_) => Vec::new(),
        None => vec!["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_owned()],
    }
}

/// `Invalid` errors for each message of `check(value)` at `path`.
pub fn each_invalid(path: &Path, value: &str, msgs: Vec<String>) -> FieldErrors {
    msgs.into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

pub fn validate_ip(path: &Path, value: &str) -> FieldErrors {
    each_invalid(path, value, is_valid_ip(value))
}

pub fn validate_cidr(path: &Path, value: &str) -> FieldErrors {
    each_invalid(path, value, is_valid_cidr(value))
}

/// An address of one family (`IsValidIPv4Address` / `IsValidIPv6Address`).
pub fn validate_ip_of_family(path: &Path, value: &str, family: IpFamily) -> FieldErrors {
    match parse_ip(value) {
        Some(ip) if IpFamily::of(&ip) == family => Vec::new(),
        _ => {
            let msg = match family {
                IpFamily::V4 => "must be a valid IPv4 address",
                IpFamily::V6 => "must be a valid IPv6 address",
            };
            vec![FieldError::invalid(path, value, msg)]
        }
    }
}

/// Endpoint IPs may not be special addresses (`ValidateNonSpecialIP`).
pub fn validate_non_special_ip(path: &Path, value: &str) -> FieldErrors {
    let Some(ip) = parse_ip(value) else {
        return validate_ip(path, value);
    };
    let msg = if ip.is_unspecified() {
        Some("may not be unspecified (0.0.0.0)")
    } else if ip.is_loopback() {
        Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
    } else if is_link_local(&ip) {
        Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    } else if is_link_local_multicast(&ip) {
        Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
    } else {
        None
    };
    msg.map(|m| vec![FieldError::invalid(path, value, m)])
        .unwrap_or_default()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_link_local_multicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff02,
    }
}

// ---------------------------------------------------------------------------------------------
// Small field checks used everywhere.

/// `ValidateNonnegativeField`.
pub fn validate_nonnegative(path: &Path, value: i64) -> FieldErrors {
    if value < 0 {
        vec![FieldError::invalid(path, value, NEGATIVE)]
    } else {
        Vec::new()
    }
}

/// `ValidateImmutableField`: `new` must equal `old`.
pub fn validate_immutable<T: PartialEq + serde::Serialize>(
    path: &Path,
    new: &T,
    old: &T,
) -> FieldErrors {
    if new == old {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            serde_json::to_value(new).unwrap_or(Value::Null),
            IMMUTABLE,
        )]
    }
}

/// A port number 1..=65535 at `path`.
pub fn validate_port_num(path: &Path, port: i32) -> FieldErrors {
    is_valid_port_num(port)
        .into_iter()
        .map(|m| FieldError::invalid(path, port, m))
        .collect()
}

/// `ValidatePortNumOrName`: a number 1..=65535 or an IANA service name.
pub fn validate_port_num_or_name(path: &Path, port: &IntOrString) -> FieldErrors {
    match port {
        IntOrString::Int(n) => validate_port_num(path, *n),
        IntOrString::String(name) => each_invalid(path, name, is_valid_port_name(name)),
    }
}

/// A protocol of TCP, UDP or SCTP; `Required` when missing and `required`.
pub fn validate_protocol(path: &Path, protocol: Option<&str>, required: bool) -> FieldErrors {
    match protocol {
        None | Some("") if required => vec![FieldError::required(path, "")],
        None => Vec::new(),
        Some(p) if SUPPORTED_PROTOCOLS.contains(&p) => Vec::new(),
        Some(p) => vec![FieldError::not_supported(path, p, &SUPPORTED_PROTOCOLS)],
    }
}

/// One of `supported` (already sorted the way kube prints them).
pub fn validate_enum(path: &Path, value: &str, supported: &[&str]) -> FieldErrors {
    if supported.contains(&value) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(path, value, supported)]
    }
}

/// Required and one of `supported`.
pub fn validate_required_enum(path: &Path, value: Option<&str>, supported: &[&str]) -> FieldErrors {
    match value {
        None | Some("") => vec![FieldError::required(path, "")],
        Some(v) => validate_enum(path, v, supported),
    }
}

/// `ValidateQualifiedName` at `path`.
pub fn validate_qualified_name(path: &Path, value: &str) -> FieldErrors {
    each_invalid(path, value, is_qualified_name(value))
}

/// `ValidateDNS1123Label` at `path`.
pub fn validate_dns1123_label(path: &Path, value: &str) -> FieldErrors {
    each_invalid(path, value, is_dns1123_label(value))
}

/// `ValidateDNS1123Subdomain` at `path`.
pub fn validate_dns1123_subdomain(path: &Path, value: &str) -> FieldErrors {
    each_invalid(path, value, is_dns1123_subdomain(value))
}

/// An int-or-percent that must be non-negative (`ValidatePositiveIntOrPercent`).
pub fn validate_positive_int_or_percent(path: &Path, value: &IntOrString) -> FieldErrors {
    match value {
        IntOrString::Int(n) => validate_nonnegative(path, i64::from(*n)),
        IntOrString::String(s) => {
            if parse_percent(s).is_some() {
                Vec::new()
            } else {
                vec![FieldError::invalid(
                    path,
                    s.as_str(),
                    "must be an integer or percentage (e.g '5%')",
                )]
            }
        }
    }
}

/// `IsNotMoreThan100Percent`.
pub fn validate_not_more_than_100_percent(path: &Path, value: &IntOrString) -> FieldErrors {
    match value {
        IntOrString::String(s) if parse_percent(s).is_some_and(|p| p > 100) => {
            vec![FieldError::invalid(
                path,
                s.as_str(),
                "must not be greater than 100%",
            )]
        }
        _ => Vec::new(),
    }
}

/// `"25%"` → 25. Only non-negative integers followed by `%` are percentages.
pub fn parse_percent(s: &str) -> Option<u32> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The value an int-or-percent stands for when it is zero-checked (`getIntOrPercentValue`).
pub fn int_or_percent_value(value: &IntOrString) -> i64 {
    match value {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(s) => parse_percent(s).map(i64::from).unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------------
// Names, labels, annotations, object metadata.

/// How the names of a kind are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// `NameIsDNSSubdomain`: most kinds.
    Dns1123Subdomain,
    /// `NameIsDNSLabel`: Namespaces.
    Dns1123Label,
    /// `NameIsDNS1035Label`: Services (their names become DNS labels and env var prefixes).
    Dns1035Label,
}

impl NameRule {
    /// Messages for `name`; with `prefix` (a `generateName`), a trailing dash is allowed.
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && name.len() > 1 && name.ends_with('-') {
            masked = format!("{}a", &name[..name.len() - 1]);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
            NameRule::Dns1123Label => is_dns1123_label(name),
            NameRule::Dns1035Label => is_dns1035_label(name),
        }
    }
}

/// `ValidateLabelName`: a qualified name.
pub fn validate_label_name(path: &Path, key: &str) -> FieldErrors {
    each_invalid(path, key, is_qualified_name(key))
}

/// `ValidateLabels`: keys are qualified names, values label values; all errors at `path`.
pub fn validate_labels(path: &Path, labels: &BTreeMap<String, String>) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (k, v) in labels {
        errs.extend(validate_label_name(path, k));
        errs.extend(each_invalid(path, v, is_label_value(v)));
    }
    errs
}

/// `ValidateAnnotations`: qualified-name keys (case-insensitive) and at most 256 KiB in total.
pub fn validate_annotations(path: &Path, annotations: &BTreeMap<String, String>) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        errs.extend(each_invalid(path, k, is_qualified_name(&k.to_lowercase())));
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// `ValidateObjectMeta` at `metadata`. The API server fills `namespace` of namespaced kinds, so it
/// is checked only when set; cluster-scoped kinds may not have one.
pub fn validate_object_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule) -> FieldErrors {
    let path = Path::new("metadata");
    let mut errs = FieldErrors::new();
    let name = meta.name.as_deref().unwrap_or("");
    let generate_name = meta.generate_name.as_deref().unwrap_or("");
    if !generate_name.is_empty() {
        errs.extend(each_invalid(
            &path.child("generateName"),
            generate_name,
            rule.check(generate_name, true),
        ));
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                &path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        errs.extend(each_invalid(
            &path.child("name"),
            name,
            rule.check(name, false),
        ));
    }
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => {
            if namespaced {
                errs.extend(each_invalid(
                    &path.child("namespace"),
                    ns,
                    NameRule::Dns1123Label.check(ns, false),
                ));
            } else {
                errs.push(FieldError::forbidden(
                    &path.child("namespace"),
                    "not allowed on this type",
                ));
            }
        }
        _ => {}
    }
    if let Some(generation) = meta.generation {
        errs.extend(validate_nonnegative(&path.child("generation"), generation));
    }
    if let Some(labels) = &meta.labels {
        errs.extend(validate_labels(&path.child("labels"), labels));
    }
    if let Some(annotations) = &meta.annotations {
        errs.extend(validate_annotations(
            &path.child("annotations"),
            annotations,
        ));
    }
    for (i, finalizer) in meta.finalizers.iter().flatten().enumerate() {
        errs.extend(validate_qualified_name(
            &path.child("finalizers").index(i),
            finalizer,
        ));
    }
    for (i, owner) in meta.owner_references.iter().flatten().enumerate() {
        let p = path.child("ownerReferences").index(i);
        if owner.api_version.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("apiVersion"),
                owner.api_version.as_str(),
                "version must not be empty",
            ));
        }
        if owner.kind.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("kind"),
                owner.kind.as_str(),
                "kind must not be empty",
            ));
        }
        if owner.name.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("name"),
                owner.name.as_str(),
                "name must not be empty",
            ));
        }
        if owner.uid.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("uid"),
                owner.uid.as_str(),
                "uid must not be empty",
            ));
        }
    }
    errs
}

/// `ValidateObjectMetaUpdate`: name, namespace and uid cannot change.
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta) -> FieldErrors {
    let path = Path::new("metadata");
    let mut errs = FieldErrors::new();
    let changed = |a: &Option<String>, b: &Option<String>| {
        a.as_deref().unwrap_or("") != b.as_deref().unwrap_or("")
    };
    if changed(&new.name, &old.name) {
        errs.extend(validate_immutable(
            &path.child("name"),
            &new.name,
            &old.name,
        ));
    }
    if changed(&new.namespace, &old.namespace)
        && new.namespace.as_deref().is_some_and(|n| !n.is_empty())
    {
        errs.extend(validate_immutable(
            &path.child("namespace"),
            &new.namespace,
            &old.namespace,
        ));
    }
    if let (Some(a), Some(b)) = (&new.uid, &old.uid)
        && a != b
        && !a.is_empty()
    {
        errs.extend(validate_immutable(&path.child("uid"), &new.uid, &old.uid));
    }
    errs
}

/// Metadata on create, or on update when `old` is given.
pub fn validate_meta(
    meta: &ObjectMeta,
    old: Option<&ObjectMeta>,
    namespaced: bool,
    rule: NameRule,
) -> FieldErrors {
    let mut errs = validate_object_meta(meta, namespaced, rule);
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(meta, old));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Label selectors.

/// `ValidateLabelSelector` (metav1): valid keys and values, and operators with the right values.
pub fn validate_label_selector(path: &Path, selector: &LabelSelector) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = expr.values.as_deref().unwrap_or(&[]);
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        &p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(FieldError::invalid(
                &p.child("operator"),
                op,
                "not a valid selector operator",
            )),
        }
        errs.extend(validate_label_name(&p.child("key"), &expr.key));
        for (j, value) in values.iter().enumerate() {
            errs.extend(each_invalid(
                &p.child("values").index(j),
                value,
                is_label_value(value),
            ));
        }
    }
    if let Some(labels) = &selector.match_labels {
        errs.extend(validate_labels(&path.child("matchLabels"), labels));
    }
    errs
}

/// Whether a selector has no requirements (it then selects everything).
pub fn label_selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Whether `labels` satisfy `selector` (invalid operators match nothing).
pub fn label_selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.as_deref().unwrap_or(&[]);
        let actual = labels.get(&expr.key);
        match expr.operator.as_str() {
            "In" => actual.is_some_and(|v| values.contains(v)),
            "NotIn" => actual.is_none_or(|v| !values.contains(v)),
            "Exists" => actual.is_some(),
            "DoesNotExist" => actual.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("my-name").is_empty());
        assert!(is_dns1123_label("123-abc").is_empty());
        assert_eq!(
            is_dns1123_label("My-Name"),
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(is_dns1123_label(&"a".repeat(64)), vec![max_len_error(63)]);
        assert!(!is_dns1123_label("").is_empty());
        assert!(!is_dns1123_label("-a").is_empty());
        assert!(!is_dns1123_label("a.b").is_empty());
        assert!(is_dns1035_label("abc-123").is_empty());
        assert!(!is_dns1035_label("1abc").is_empty());
    }

    #[test]
    fn dns_subdomains() {
        assert!(is_dns1123_subdomain("example.com").is_empty());
        assert!(is_dns1123_subdomain("a").is_empty());
        assert!(!is_dns1123_subdomain("a..b").is_empty());
        assert!(!is_dns1123_subdomain("a.").is_empty());
        assert!(!is_dns1123_subdomain("A.com").is_empty());
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254)),
            vec![max_len_error(253)]
        );
        assert!(is_wildcard_dns1123_subdomain("*.example.com").is_empty());
        assert!(!is_wildcard_dns1123_subdomain("foo.*.com").is_empty());
        assert!(!is_wildcard_dns1123_subdomain("*").is_empty());
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(is_qualified_name("app").is_empty());
        assert!(is_qualified_name("example.com/My_Name.1").is_empty());
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert!(
            is_qualified_name("a/")
                .iter()
                .any(|m| m == "name part must be non-empty")
        );
        assert!(!is_qualified_name("Example.com/a").is_empty());
        assert!(is_label_value("").is_empty());
        assert!(is_label_value("my_value.1").is_empty());
        assert!(!is_label_value("-x").is_empty());
        assert_eq!(is_label_value(&"a".repeat(64)), vec![max_len_error(63)]);
    }

    #[test]
    fn port_names() {
        assert!(is_valid_port_name("http").is_empty());
        assert!(is_valid_port_name("h2c-8080").is_empty());
        assert_eq!(
            is_valid_port_name("8080"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            is_valid_port_name("a--b"),
            vec!["must not contain consecutive hyphens"]
        );
        assert_eq!(
            is_valid_port_name("-ab"),
            vec!["must not begin or end with a hyphen"]
        );
        assert_eq!(
            is_valid_port_name("abcdefghijklmnop"),
            vec![max_len_error(15)]
        );
        assert_eq!(is_valid_port_name("HTTP").len(), 2);
    }

    #[test]
    fn config_keys() {
        assert!(is_config_map_key("key.name").is_empty());
        assert!(is_config_map_key("KEY_NAME").is_empty());
        assert_eq!(is_config_map_key(".."), vec!["must not be '..'"]);
        assert_eq!(is_config_map_key("..a"), vec!["must not start with '..'"]);
        assert_eq!(is_config_map_key("a/b").len(), 1);
    }

    #[test]
    fn ips_and_cidrs() {
        assert!(is_valid_ip("10.0.0.1").is_empty());
        assert!(is_valid_ip("2001:db8::1").is_empty());
        assert!(!is_valid_ip("10.0.0.01").is_empty());
        assert!(!is_valid_ip("10.0.0.0/8").is_empty());
        assert!(is_valid_cidr("10.0.0.0/8").is_empty());
        assert!(is_valid_cidr("10.0.0.1/8").is_empty());
        assert!(!is_valid_cidr("10.0.0.0/33").is_empty());
        assert!(!is_valid_cidr("10.0.0.0").is_empty());
        let p = Path::new("ip");
        assert_eq!(
            validate_non_special_ip(&p, "127.0.0.1")[0].detail,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)"
        );
        assert_eq!(
            validate_non_special_ip(&p, "fe80::1")[0].detail,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        );
        assert!(validate_non_special_ip(&p, "10.1.2.3").is_empty());
        assert!(validate_ip_of_family(&p, "10.1.2.3", IpFamily::V6).len() == 1);
    }

    #[test]
    fn domain_prefixed_paths() {
        let p = Path::new("spec").child("controller");
        assert!(validate_domain_prefixed_path(&p, "example.com/ingress").is_empty());
        assert_eq!(
            validate_domain_prefixed_path(&p, "ingress")[0].detail,
            "must be a domain-prefixed path (such as \"acme.io/foo\")"
        );
        assert_eq!(
            validate_domain_prefixed_path(&p, "")[0].kind,
            crate::ErrorKind::Required
        );
        assert_eq!(
            validate_domain_prefixed_path(&p, "example.com/a b")[0].detail,
            "Invalid path"
        );
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|s| s.to_string()).collect())
            },
        }
    }

    #[test]
    fn label_selectors() {
        let p = Path::new("spec").child("podSelector");
        let ok = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                req("tier", "In", &["a", "b"]),
                req("x", "Exists", &[]),
            ]),
        };
        assert!(validate_label_selector(&p, &ok).is_empty());
        let bad = LabelSelector {
            match_labels: Some([("app".to_string(), "-bad".to_string())].into()),
            match_expressions: Some(vec![
                req("tier", "In", &[]),
                req("x", "Exists", &["v"]),
                req("y", "Foo", &[]),
            ]),
        };
        let errs = validate_label_selector(&p, &bad);
        let fields: Vec<(&str, crate::ErrorKind)> =
            errs.iter().map(|e| (e.field.as_str(), e.kind)).collect();
        assert_eq!(
            fields,
            vec![
                (
                    "spec.podSelector.matchExpressions[0].values",
                    crate::ErrorKind::Required
                ),
                (
                    "spec.podSelector.matchExpressions[1].values",
                    crate::ErrorKind::Forbidden
                ),
                (
                    "spec.podSelector.matchExpressions[2].operator",
                    crate::ErrorKind::Invalid
                ),
                ("spec.podSelector.matchLabels", crate::ErrorKind::Invalid),
            ]
        );
        let labels: BTreeMap<String, String> = [
            ("app".into(), "web".into()),
            ("tier".into(), "a".into()),
            ("x".into(), "".into()),
        ]
        .into();
        assert!(label_selector_matches(&ok, &labels));
        assert!(!label_selector_matches(&ok, &BTreeMap::new()));
        assert!(label_selector_is_empty(&LabelSelector::default()));
    }

    #[test]
    fn object_meta() {
        let meta = ObjectMeta::default();
        let errs = validate_object_meta(&meta, true, NameRule::Dns1123Subdomain);
        assert_eq!(
            errs[0].to_string_with_field(),
            "metadata.name: Required value: name or generateName is required"
        );
        let meta = ObjectMeta {
            generate_name: Some("web-".into()),
            ..Default::default()
        };
        assert!(validate_object_meta(&meta, true, NameRule::Dns1123Subdomain).is_empty());
        let meta = ObjectMeta {
            name: Some("a.b".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_object_meta(&meta, false, NameRule::Dns1123Label)[0].field,
            "metadata.name"
        );
        let meta = ObjectMeta {
            name: Some("a".into()),
            namespace: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_object_meta(&meta, false, NameRule::Dns1123Subdomain)[0].kind,
            crate::ErrorKind::Forbidden
        );
        let big = "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let meta = ObjectMeta {
            name: Some("a".into()),
            annotations: Some([("k".to_string(), big)].into()),
            ..Default::default()
        };
        assert_eq!(
            validate_object_meta(&meta, true, NameRule::Dns1123Subdomain)[0].to_string_with_field(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        let meta = ObjectMeta {
            name: Some("a".into()),
            labels: Some([("a b".to_string(), "v".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(
            validate_object_meta(&meta, true, NameRule::Dns1123Subdomain)[0].field,
            "metadata.labels"
        );
        let old = ObjectMeta {
            name: Some("a".into()),
            ..Default::default()
        };
        let new = ObjectMeta {
            name: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(validate_object_meta_update(&new, &old)[0].detail, IMMUTABLE);
    }

    /// A reference implementation of `[a-z0-9]([-a-z0-9]*[a-z0-9])?` written as a tiny automaton.
    fn reference_label(s: &str) -> bool {
        let b = s.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && b.len() <= 63
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&c| alnum(c) || c == b'-')
    }

    proptest! {
        #[test]
        fn dns1123_label_agrees_with_reference(s in "[a-z0-9.A-Z_-]{0,70}") {
            prop_assert_eq!(is_dns1123_label(&s).is_empty(), reference_label(&s));
        }

        #[test]
        fn dns1123_subdomain_agrees_with_reference(s in "[a-z0-9.-]{0,40}|([a-z0-9]{1,70}\\.){0,5}[a-z0-9]{1,70}") {
            let reference = !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| {
                let b = l.as_bytes();
                let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
                !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]) && b.iter().all(|&c| alnum(c) || c == b'-')
            });
            prop_assert_eq!(is_dns1123_subdomain(&s).is_empty(), reference);
        }

        #[test]
        fn generated_valid_labels_pass(s in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?") {
            prop_assert!(is_dns1123_label(&s).is_empty());
        }

        #[test]
        fn dns1035_implies_dns1123(s in "[a-z0-9-]{0,64}") {
            if is_dns1035_label(&s).is_empty() {
                prop_assert!(is_dns1123_label(&s).is_empty());
                prop_assert!(s.as_bytes()[0].is_ascii_lowercase());
            }
        }
    }
}
