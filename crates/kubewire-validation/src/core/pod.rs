//! Pod (core/v1) and pod templates: `SetDefaults_Pod*`/`SetDefaults_Container`/probe defaults, and
//! `ValidatePodSpec` with its container, probe and DNS rules.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, Pod, PodDNSConfig, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, Toleration,
};
use serde_json::Value;

use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, Path};

/// KEP-2595 (expanded DNS config): limits of `dnsConfig`.
pub const MAX_DNS_NAMESERVERS: usize = 3;
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
pub const DEFAULT_TERMINATION_GRACE_PERIOD: i64 = 30;
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
const DNS_POLICIES: [&str; 4] = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const HTTP_SCHEMES: [&str; 2] = ["HTTP", "HTTPS"];
pub(crate) const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
const UPDATABLE_FIELDS: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

// ---------------------------------------------------------------------------------------------
// Defaulting.

/// The pull policy kube defaults from the image reference: `Always` for `:latest` (or no tag).
fn default_pull_policy(image: &str) -> &'static str {
    let (name, has_digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = match last.split_once(':') {
        Some((_, tag)) => tag,
        None if has_digest => "",
        None => "latest",
    };
    if tag == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn default_probe(probe: &mut Probe) {
    for (field, value) in [
        (&mut probe.timeout_seconds, 1),
        (&mut probe.period_seconds, 10),
        (&mut probe.success_threshold, 1),
        (&mut probe.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(value);
        }
    }
    if let Some(http) = &mut probe.http_get {
        default_http_get(http);
    }
}

fn default_http_get(http: &mut HTTPGetAction) {
    if http.path.as_deref().is_none_or(str::is_empty) {
        http.path = Some("/".to_owned());
    }
    if http.scheme.as_deref().is_none_or(str::is_empty) {
        http.scheme = Some("HTTP".to_owned());
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        c.image_pull_policy =
            Some(default_pull_policy(c.image.as_deref().unwrap_or("")).to_owned());
    }
    if c.termination_message_path
        .as_deref()
        .is_none_or(str::is_empty)
    {
        c.termination_message_path = Some(DEFAULT_TERMINATION_MESSAGE_PATH.to_owned());
    }
    if c.termination_message_policy
        .as_deref()
        .is_none_or(str::is_empty)
    {
        c.termination_message_policy = Some("File".to_owned());
    }
    for port in c.ports.iter_mut().flatten() {
        default_container_port(port, host_network);
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    for handler in c
        .lifecycle
        .iter_mut()
        .flat_map(|l| [&mut l.post_start, &mut l.pre_stop])
        .flatten()
    {
        if let Some(http) = &mut handler.http_get {
            default_http_get(http);
        }
    }
}

fn default_container_port(port: &mut ContainerPort, host_network: bool) {
    if port.protocol.as_deref().is_none_or(str::is_empty) {
        port.protocol = Some("TCP".to_owned());
    }
    // On the host network the host port is the container port.
    if host_network && port.host_port.unwrap_or(0) == 0 {
        port.host_port = Some(port.container_port);
    }
}

/// `SetDefaults_PodSpec` (+ the container defaults and `SetDefaults_Pod`'s host-network ports).
pub fn default_pod_spec(spec: &mut PodSpec) {
    let host_network = spec.host_network.unwrap_or(false);
    if spec.dns_policy.as_deref().is_none_or(str::is_empty) {
        spec.dns_policy = Some("ClusterFirst".to_owned());
    }
    if spec.restart_policy.as_deref().is_none_or(str::is_empty) {
        spec.restart_policy = Some("Always".to_owned());
    }
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext::default());
    }
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(DEFAULT_TERMINATION_GRACE_PERIOD);
    }
    if spec.scheduler_name.as_deref().is_none_or(str::is_empty) {
        spec.scheduler_name = Some(DEFAULT_SCHEDULER.to_owned());
    }
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(true);
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c, host_network);
    }
}

/// Defaults of a workload's pod template.
pub fn default_pod_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = &mut template.spec {
        default_pod_spec(spec);
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// `ValidatePodSpec` at `path`. `template` relaxes what only pods need (an image).
pub fn validate_pod_spec(spec: &PodSpec, path: &Path, template: bool) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut names = HashSet::new();
    let init = spec.init_containers.as_deref().unwrap_or(&[]);
    for (i, c) in init.iter().enumerate() {
        let p = path.child("initContainers").index(i);
        errs.extend(validate_container(c, &p, &mut names, template));
        if c.restart_policy.as_deref() != Some("Always") {
            // Only restartable init containers (sidecars, KEP-753) may have probes.
            for (field, probe) in [
                ("livenessProbe", &c.liveness_probe),
                ("readinessProbe", &c.readiness_probe),
                ("startupProbe", &c.startup_probe),
            ] {
                if probe.is_some() {
                    errs.push(FieldError::forbidden(
                        &p.child(field),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
        if let Some(policy) = &c.restart_policy {
            errs.extend(meta::validate_enum(
                &p.child("restartPolicy"),
                policy,
                &["Always"],
            ));
        }
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(&path.child("containers"), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let p = path.child("containers").index(i);
        errs.extend(validate_container(c, &p, &mut names, template));
        if let Some(policy) = &c.restart_policy {
            errs.extend(meta::validate_enum(
                &p.child("restartPolicy"),
                policy,
                &RESTART_POLICIES,
            ));
        }
    }
    if spec.host_network.unwrap_or(false) {
        for (i, c) in spec.containers.iter().enumerate() {
            for (j, port) in c.ports.iter().flatten().enumerate() {
                if port.host_port.unwrap_or(0) != port.container_port {
                    errs.push(FieldError::invalid(
                        &path
                            .child("containers")
                            .index(i)
                            .child("ports")
                            .index(j)
                            .child("hostPort"),
                        port.host_port.unwrap_or(0),
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    errs.extend(meta::validate_required_enum(
        &path.child("restartPolicy"),
        spec.restart_policy.as_deref(),
        &RESTART_POLICIES,
    ));
    errs.extend(meta::validate_required_enum(
        &path.child("dnsPolicy"),
        spec.dns_policy.as_deref(),
        &DNS_POLICIES,
    ));
    errs.extend(validate_dns_config(
        spec.dns_config.as_ref(),
        spec.dns_policy.as_deref(),
        &path.child("dnsConfig"),
    ));
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            errs.extend(meta::validate_dns1123_label(&path.child(field), v));
        }
    }
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        errs.extend(meta::each_invalid(
            &path.child("nodeName"),
            node,
            NameRule::Dns1123Subdomain.check(node, false),
        ));
    }
    if let Some(ads) = spec.active_deadline_seconds
        && (ads < 1 || ads > i64::from(i32::MAX))
    {
        errs.push(FieldError::invalid(
            &path.child("activeDeadlineSeconds"),
            ads,
            meta::inclusive_range_error(1, i64::from(i32::MAX)),
        ));
    }
    for (i, gate) in spec.readiness_gates.iter().flatten().enumerate() {
        errs.extend(meta::validate_qualified_name(
            &path.child("readinessGates").index(i).child("conditionType"),
            &gate.condition_type,
        ));
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        errs.extend(validate_toleration(t, &path.child("tolerations").index(i)));
    }
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        let p = path.child("hostAliases").index(i);
        errs.extend(meta::validate_ip(&p.child("ip"), &alias.ip));
        for (j, host) in alias.hostnames.iter().flatten().enumerate() {
            errs.extend(meta::validate_dns1123_subdomain(
                &p.child("hostnames").index(j),
                host,
            ));
        }
    }
    if let Some(selector) = &spec.node_selector {
        errs.extend(meta::validate_labels(&path.child("nodeSelector"), selector));
    }
    errs
}

fn validate_container(
    c: &Container,
    path: &Path,
    names: &mut HashSet<String>,
    template: bool,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if c.name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else {
        errs.extend(meta::validate_dns1123_label(&path.child("name"), &c.name));
        if !names.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(&path.child("name"), c.name.as_str()));
        }
    }
    let image = c.image.as_deref().unwrap_or("");
    if image.is_empty() {
        if !template {
            errs.push(FieldError::required(&path.child("image"), ""));
        }
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            &path.child("image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    errs.extend(meta::validate_required_enum(
        &path.child("imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &PULL_POLICIES,
    ));
    match c.termination_message_policy.as_deref().unwrap_or("") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(
            &path.child("terminationMessagePolicy"),
            "must be 'File' or 'FallbackToLogsOnError'",
        )),
        other => errs.push(FieldError::invalid(
            &path.child("terminationMessagePolicy"),
            other,
            "must be 'File' or 'FallbackToLogsOnError'",
        )),
    }
    errs.extend(validate_container_ports(
        c.ports.as_deref().unwrap_or(&[]),
        &path.child("ports"),
    ));
    if let Some(probe) = &c.liveness_probe {
        errs.extend(validate_probe(probe, &path.child("livenessProbe"), true));
    }
    if let Some(probe) = &c.readiness_probe {
        let p = path.child("readinessProbe");
        errs.extend(validate_probe(probe, &p, false));
        if let Some(grace) = probe.termination_grace_period_seconds {
            errs.push(FieldError::invalid(
                &p.child("terminationGracePeriodSeconds"),
                grace,
                "must not be set for readinessProbes",
            ));
        }
    }
    if let Some(probe) = &c.startup_probe {
        errs.extend(validate_probe(probe, &path.child("startupProbe"), true));
    }
    errs
}

fn validate_container_ports(ports: &[ContainerPort], path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = meta::is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(meta::each_invalid(&p.child("name"), name, msgs));
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(&p.child("containerPort"), ""));
        } else {
            errs.extend(meta::validate_port_num(
                &p.child("containerPort"),
                port.container_port,
            ));
        }
        if let Some(host_port) = port.host_port.filter(|h| *h != 0) {
            errs.extend(meta::validate_port_num(&p.child("hostPort"), host_port));
        }
        errs.extend(meta::validate_protocol(
            &p.child("protocol"),
            port.protocol.as_deref(),
            true,
        ));
    }
    errs
}

/// `validateProbe` plus the liveness/startup rule that success means one success.
fn validate_probe(probe: &Probe, path: &Path, single_success: bool) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut handlers = 0;
    let mut handler =
        |name: &str, set: bool, checks: &dyn Fn(&Path) -> FieldErrors, errs: &mut FieldErrors| {
            if !set {
                return;
            }
            if handlers > 0 {
                errs.push(FieldError::forbidden(
                    &path.child(name),
                    "may not specify more than 1 handler type",
                ));
            } else {
                handlers += 1;
                errs.extend(checks(&path.child(name)));
            }
        };
    handler(
        "exec",
        probe.exec.is_some(),
        &|p| match probe.exec.as_ref().and_then(|e| e.command.as_ref()) {
            Some(cmd) if !cmd.is_empty() => Vec::new(),
            _ => vec![FieldError::required(&p.child("command"), "")],
        },
        &mut errs,
    );
    handler(
        "httpGet",
        probe.http_get.is_some(),
        &|p| {
            probe
                .http_get
                .as_ref()
                .map(|h| validate_http_get(h, p))
                .unwrap_or_default()
        },
        &mut errs,
    );
    handler(
        "tcpSocket",
        probe.tcp_socket.is_some(),
        &|p| {
            probe
                .tcp_socket
                .as_ref()
                .map(|t| meta::validate_port_num_or_name(&p.child("port"), &t.port))
                .unwrap_or_default()
        },
        &mut errs,
    );
    handler(
        "grpc",
        probe.grpc.is_some(),
        &|p| {
            probe
                .grpc
                .as_ref()
                .map(|g| meta::validate_port_num(&p.child("port"), g.port))
                .unwrap_or_default()
        },
        &mut errs,
    );
    if handlers == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    for (field, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        errs.extend(meta::validate_nonnegative(
            &path.child(field),
            i64::from(value.unwrap_or(0)),
        ));
    }
    if let Some(grace) = probe.termination_grace_period_seconds.filter(|g| *g <= 0) {
        errs.push(FieldError::invalid(
            &path.child("terminationGracePeriodSeconds"),
            grace,
            "must be greater than 0",
        ));
    }
    if single_success && let Some(success) = probe.success_threshold.filter(|s| *s != 1) {
        errs.push(FieldError::invalid(
            &path.child("successThreshold"),
            success,
            "must be 1",
        ));
    }
    errs
}

fn validate_http_get(http: &HTTPGetAction, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if http.path.as_deref().is_none_or(str::is_empty) {
        errs.push(FieldError::required(&path.child("path"), ""));
    }
    errs.extend(meta::validate_port_num_or_name(
        &path.child("port"),
        &http.port,
    ));
    errs.extend(meta::validate_enum(
        &path.child("scheme"),
        http.scheme.as_deref().unwrap_or(""),
        &HTTP_SCHEMES,
    ));
    for (i, header) in http.http_headers.iter().flatten().enumerate() {
        let valid = !header.name.is_empty()
            && header
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            errs.push(FieldError::invalid(
                &path.child("httpHeaders").index(i).child("name"),
                header.name.as_str(),
                meta::regex_error(
                    "a valid HTTP header must consist of alphanumeric characters or '-'",
                    "[-A-Za-z0-9]+",
                    &["X-Header-Name"],
                ),
            ));
        }
    }
    errs
}

/// `validatePodDNSConfig` (KEP-2595: expanded DNS config).
fn validate_dns_config(
    config: Option<&PodDNSConfig>,
    policy: Option<&str>,
    path: &Path,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let none_policy = policy == Some("None");
    let Some(config) = config else {
        if none_policy {
            errs.push(FieldError::required(
                path,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
        }
        return errs;
    };
    let nameservers = config.nameservers.as_deref().unwrap_or(&[]);
    if none_policy && nameservers.is_empty() {
        errs.push(FieldError::required(
            &path.child("nameservers"),
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        ));
    }
    if nameservers.len() > MAX_DNS_NAMESERVERS {
        errs.push(FieldError::invalid(
            &path.child("nameservers"),
            serde_json::json!(nameservers),
            format!("must not have more than {MAX_DNS_NAMESERVERS} nameservers"),
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        errs.extend(meta::validate_ip(&path.child("nameservers").index(i), ns));
    }
    let searches = config.searches.as_deref().unwrap_or(&[]);
    if searches.len() > MAX_DNS_SEARCH_PATHS {
        errs.push(FieldError::invalid(
            &path.child("searches"),
            serde_json::json!(searches),
            format!("must not have more than {MAX_DNS_SEARCH_PATHS} search paths"),
        ));
    }
    if searches.join(" ").len() > MAX_DNS_SEARCH_LIST_CHARS {
        errs.push(FieldError::invalid(
            &path.child("searches"),
            serde_json::json!(searches),
            format!("must not have more than {MAX_DNS_SEARCH_LIST_CHARS} characters (including spaces) in the search list"),
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        // "." alone is allowed (KEP-2595), and a trailing dot marks a fully qualified name.
        if search == "." {
            continue;
        }
        let search = search.strip_suffix('.').unwrap_or(search);
        errs.extend(meta::validate_dns1123_subdomain(
            &path.child("searches").index(i),
            search,
        ));
    }
    for (i, option) in config.options.iter().flatten().enumerate() {
        if option.name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required(
                &path.child("options").index(i),
                "Option.Name must not be empty",
            ));
        }
    }
    errs
}

/// `validateTaintEffect`.
pub(crate) fn validate_taint_effect(path: &Path, effect: &str, allow_empty: bool) -> FieldErrors {
    if effect.is_empty() {
        return if allow_empty {
            Vec::new()
        } else {
            vec![FieldError::required(path, "")]
        };
    }
    meta::validate_enum(path, effect, &TAINT_EFFECTS)
}

fn validate_toleration(t: &Toleration, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let key = t.key.as_deref().unwrap_or("");
    let operator = t.operator.as_deref().unwrap_or("");
    let value = t.value.as_deref().unwrap_or("");
    let effect = t.effect.as_deref().unwrap_or("");
    if !key.is_empty() {
        errs.extend(meta::validate_label_name(&path.child("key"), key));
    }
    if key.is_empty() && operator != "Exists" {
        errs.push(FieldError::invalid(
            &path.child("operator"),
            operator,
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ));
    }
    if t.toleration_seconds.is_some() && effect != "NoExecute" {
        errs.push(FieldError::invalid(
            &path.child("effect"),
            effect,
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    match operator {
        "Equal" | "" => {
            let msgs = meta::is_label_value(value);
            if !msgs.is_empty() {
                errs.push(FieldError::invalid(
                    &path.child("operator"),
                    value,
                    msgs.join(";"),
                ));
            }
        }
        "Exists" => {
            if !value.is_empty() {
                errs.push(FieldError::invalid(
                    &path.child("operator"),
                    value,
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &path.child("operator"),
            other,
            &["Equal", "Exists"],
        )),
    }
    errs.extend(validate_taint_effect(&path.child("effect"), effect, true));
    errs
}

/// `ValidatePodTemplateSpec` at `path` (`spec.template`): labels, annotations and the pod spec.
pub fn validate_pod_template(template: &PodTemplateSpec, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Some(meta) = &template.metadata {
        // Upstream reports template labels at `spec.template.labels`.
        if let Some(labels) = &meta.labels {
            errs.extend(meta::validate_labels(&path.child("labels"), labels));
        }
        if let Some(annotations) = &meta.annotations {
            errs.extend(meta::validate_annotations(
                &path.child("annotations"),
                annotations,
            ));
        }
    }
    match &template.spec {
        Some(spec) => errs.extend(validate_pod_spec(spec, &path.child("spec"), true)),
        None => errs.push(FieldError::required(&path.child("spec"), "")),
    }
    errs
}

/// `ValidatePodUpdate`: only images, `activeDeadlineSeconds` (down), toleration additions and
/// `nodeName` (from unset; kube does that through `pods/binding`) may change.
fn validate_pod_update(new: &PodSpec, old: &PodSpec) -> FieldErrors {
    let path = Path::new("spec");
    let mut errs = FieldErrors::new();
    if new.containers.len() != old.containers.len()
        || new.init_containers.as_ref().map_or(0, Vec::len)
            != old.init_containers.as_ref().map_or(0, Vec::len)
    {
        errs.push(FieldError::forbidden(
            &path.child("containers"),
            "pod updates may not add or remove containers",
        ));
        return errs;
    }
    match (new.active_deadline_seconds, old.active_deadline_seconds) {
        (Some(n), Some(o)) if n > o => {
            errs.push(FieldError::invalid(
                &path.child("activeDeadlineSeconds"),
                n,
                "must be less than or equal to previous value",
            ));
        }
        (None, Some(_)) => {
            errs.push(FieldError::invalid(
                &path.child("activeDeadlineSeconds"),
                Value::Null,
                "must not update from a positive integer to nil value",
            ));
        }
        _ => {}
    }
    let old_tolerations = old.tolerations.as_deref().unwrap_or(&[]);
    let new_tolerations = new.tolerations.as_deref().unwrap_or(&[]);
    for t in old_tolerations {
        let kept = new_tolerations.iter().any(|n| {
            n.key == t.key && n.operator == t.operator && n.value == t.value && n.effect == t.effect
        });
        if !kept {
            errs.push(FieldError::forbidden(
                &path.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }

    // Everything else must be as it was: copy the mutable fields over and compare.
    let mut munged = new.clone();
    for (m, o) in munged.containers.iter_mut().zip(&old.containers) {
        m.image.clone_from(&o.image);
    }
    for (m, o) in munged
        .init_containers
        .iter_mut()
        .flatten()
        .zip(old.init_containers.iter().flatten())
    {
        m.image.clone_from(&o.image);
    }
    munged.active_deadline_seconds = old.active_deadline_seconds;
    munged.tolerations.clone_from(&old.tolerations);
    if old.termination_grace_period_seconds.is_some_and(|g| g < 0)
        && new.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = old.termination_grace_period_seconds;
    }
    if old.node_name.as_deref().is_none_or(str::is_empty) {
        munged.node_name.clone_from(&old.node_name);
    }
    if &munged != old {
        errs.push(FieldError::forbidden(&path, UPDATABLE_FIELDS));
    }
    errs
}

impl Admit for Pod {
    fn default(&mut self, _ctx: &Context) {
        default_pod_spec(self.spec.get_or_insert_with(PodSpec::default));
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let empty = PodSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        errs.extend(validate_pod_spec(spec, &Path::new("spec"), false));
        if let Some(old) = old {
            errs.extend(validate_pod_update(
                spec,
                old.spec.as_ref().unwrap_or(&empty),
            ));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::{self, *};
    use serde_json::json;

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec}),
        )
        .expect("pod")
    }

    fn errors_of(spec: Value) -> Vec<(String, ErrorKind)> {
        let mut p = pod(spec);
        crate::admit(&mut p, None, &Context::default())
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    fn one(c: Value) -> Value {
        json!({"containers": [c]})
    }

    #[test]
    fn defaults_like_kube() {
        let mut p = pod(json!({"containers": [{
            "name": "app", "image": "nginx",
            "ports": [{"containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": 80}}
        }, {"name": "b", "image": "nginx:1.27"}]}));
        p.default(&Context::default());
        let spec = p.spec.expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            spec.containers[1].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(
            c.ports.as_ref().expect("ports")[0].protocol.as_deref(),
            Some("TCP")
        );
        let probe = c.liveness_probe.as_ref().expect("probe");
        assert_eq!(
            (
                probe.timeout_seconds,
                probe.period_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        let http = probe.http_get.as_ref().expect("http");
        assert_eq!(
            (http.path.as_deref(), http.scheme.as_deref()),
            (Some("/"), Some("HTTP"))
        );
        assert_eq!(
            default_pull_policy("registry:5000/app@sha256:abc"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("registry:5000/app"), "Always");
    }

    #[test]
    fn valid_pod_passes() {
        assert!(errors_of(one(json!({"name": "app", "image": "nginx", "ports": [{"name": "http", "containerPort": 80}],
            "readinessProbe": {"tcpSocket": {"port": "http"}}}))).is_empty());
    }

    #[test]
    fn containers() {
        assert_eq!(
            errors_of(json!({"containers": []})),
            vec![("spec.containers".into(), Required)]
        );
        assert_eq!(
            errors_of(one(json!({"name": "App", "image": "x"}))),
            vec![("spec.containers[0].name".into(), Invalid)]
        );
        assert_eq!(
            errors_of(one(json!({"name": "app"}))),
            vec![("spec.containers[0].image".into(), Required)]
        );
        assert_eq!(
            errors_of(
                json!({"initContainers": [{"name": "a", "image": "x"}], "containers": [{"name": "a", "image": "x"}]})
            ),
            vec![("spec.containers[0].name".into(), Duplicate)]
        );
        assert_eq!(
            errors_of(one(
                json!({"name": "a", "image": "x", "imagePullPolicy": "Sometimes"})
            )),
            vec![("spec.containers[0].imagePullPolicy".into(), NotSupported)]
        );
    }

    #[test]
    fn container_ports() {
        let errs = errors_of(one(json!({"name": "a", "image": "x", "ports": [
            {"containerPort": 0},
            {"containerPort": 70000, "hostPort": -1, "protocol": "ICMP"},
            {"name": "http", "containerPort": 80}, {"name": "http", "containerPort": 81},
            {"name": "a-very-long-port-name", "containerPort": 82}
        ]})));
        assert_eq!(
            errs,
            vec![
                ("spec.containers[0].ports[0].containerPort".into(), Required),
                ("spec.containers[0].ports[1].containerPort".into(), Invalid),
                ("spec.containers[0].ports[1].hostPort".into(), Invalid),
                ("spec.containers[0].ports[1].protocol".into(), NotSupported),
                ("spec.containers[0].ports[3].name".into(), Duplicate),
                ("spec.containers[0].ports[4].name".into(), Invalid),
            ]
        );
        assert_eq!(
            errors_of(
                json!({"hostNetwork": true, "containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 81}]}]})
            ),
            vec![("spec.containers[0].ports[0].hostPort".into(), Invalid)]
        );
    }

    #[test]
    fn probes() {
        let c = |probe: Value| one(json!({"name": "a", "image": "x", "livenessProbe": probe}));
        assert_eq!(
            errors_of(c(json!({}))),
            vec![("spec.containers[0].livenessProbe".into(), Required)]
        );
        assert_eq!(
            errors_of(c(
                json!({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}})
            )),
            vec![(
                "spec.containers[0].livenessProbe.tcpSocket".into(),
                Forbidden
            )]
        );
        assert_eq!(
            errors_of(c(json!({"exec": {}}))),
            vec![(
                "spec.containers[0].livenessProbe.exec.command".into(),
                Required
            )]
        );
        assert_eq!(
            errors_of(c(json!({"tcpSocket": {"port": 80}, "successThreshold": 2}))),
            vec![(
                "spec.containers[0].livenessProbe.successThreshold".into(),
                Invalid
            )]
        );
        assert_eq!(
            errors_of(c(json!({"tcpSocket": {"port": 80}, "periodSeconds": -1}))),
            vec![(
                "spec.containers[0].livenessProbe.periodSeconds".into(),
                Invalid
            )]
        );
        assert_eq!(
            errors_of(c(json!({"httpGet": {"port": "HTTP", "scheme": "FTP"}}))),
            vec![
                (
                    "spec.containers[0].livenessProbe.httpGet.port".into(),
                    Invalid
                ),
                (
                    "spec.containers[0].livenessProbe.httpGet.port".into(),
                    Invalid
                ),
                (
                    "spec.containers[0].livenessProbe.httpGet.scheme".into(),
                    NotSupported
                ),
            ]
        );
        let readiness = one(
            json!({"name": "a", "image": "x", "readinessProbe": {"grpc": {"port": 0}, "successThreshold": 3}}),
        );
        assert_eq!(
            errors_of(readiness),
            vec![(
                "spec.containers[0].readinessProbe.grpc.port".into(),
                Invalid
            )]
        );
        let init = json!({"initContainers": [{"name": "i", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}}}],
                          "containers": [{"name": "a", "image": "x"}]});
        assert_eq!(
            errors_of(init),
            vec![("spec.initContainers[0].livenessProbe".into(), Forbidden)]
        );
    }

    #[test]
    fn dns_config() {
        let base = |extra: Value| {
            let mut spec = one(json!({"name": "a", "image": "x"}));
            if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            spec
        };
        assert_eq!(
            errors_of(base(json!({"dnsPolicy": "None"}))),
            vec![("spec.dnsConfig".into(), Required)]
        );
        assert_eq!(
            errors_of(base(json!({"dnsPolicy": "None", "dnsConfig": {}}))),
            vec![("spec.dnsConfig.nameservers".into(), Required)]
        );
        assert!(errors_of(base(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["."]}}))).is_empty());
        assert_eq!(
            errors_of(base(
                json!({"dnsConfig": {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]}})
            )),
            vec![("spec.dnsConfig.nameservers".into(), Invalid)]
        );
        assert_eq!(
            errors_of(base(json!({"dnsConfig": {"nameservers": ["1.1.1"]}}))),
            vec![("spec.dnsConfig.nameservers[0]".into(), Invalid)]
        );
        let many: Vec<String> = (0..33).map(|i| format!("s{i}.example.com")).collect();
        assert_eq!(
            errors_of(base(json!({"dnsConfig": {"searches": many}}))),
            vec![("spec.dnsConfig.searches".into(), Invalid)]
        );
        let long: Vec<String> = (0..9).map(|i| format!("{}.{i}", "a".repeat(250))).collect();
        // Each search path is a valid 252-character subdomain; together they exceed 2048.
        assert_eq!(
            errors_of(base(json!({"dnsConfig": {"searches": long}}))),
            vec![("spec.dnsConfig.searches".into(), Invalid)]
        );
        assert_eq!(
            errors_of(base(json!({"dnsConfig": {"searches": ["Bad_Domain"]}}))),
            vec![("spec.dnsConfig.searches[0]".into(), Invalid)]
        );
        assert_eq!(
            errors_of(base(json!({"dnsConfig": {"options": [{"value": "1"}]}}))),
            vec![("spec.dnsConfig.options[0]".into(), Required)]
        );
        assert_eq!(
            errors_of(base(json!({"dnsPolicy": "Custom"}))),
            vec![("spec.dnsPolicy".into(), NotSupported)]
        );
        assert_eq!(
            errors_of(base(json!({"restartPolicy": "Sometimes"}))),
            vec![("spec.restartPolicy".into(), NotSupported)]
        );
        assert_eq!(
            errors_of(base(json!({"hostname": "a.b"}))),
            vec![("spec.hostname".into(), Invalid)]
        );
        assert_eq!(
            errors_of(base(json!({"subdomain": "A"}))),
            vec![("spec.subdomain".into(), Invalid)]
        );
        assert_eq!(
            errors_of(base(json!({"readinessGates": [{"conditionType": "a b"}]}))),
            vec![("spec.readinessGates[0].conditionType".into(), Invalid)]
        );
        assert_eq!(
            errors_of(base(json!({"activeDeadlineSeconds": 0}))),
            vec![("spec.activeDeadlineSeconds".into(), Invalid)]
        );
        assert_eq!(
            errors_of(base(
                json!({"tolerations": [{"operator": "Equal", "value": "x"}]})
            )),
            vec![("spec.tolerations[0].operator".into(), Invalid)]
        );
        assert_eq!(
            errors_of(base(
                json!({"tolerations": [{"key": "k", "effect": "Never"}]})
            )),
            vec![("spec.tolerations[0].effect".into(), NotSupported)]
        );
    }

    #[test]
    fn updates_are_limited() {
        let ctx = Context::default();
        let mut old = pod(one(
            json!({"name": "a", "image": "x:1", "command": ["run"]}),
        ));
        old.default(&ctx);
        // The image may change.
        let mut new = old.clone();
        new.spec.as_mut().expect("spec").containers[0].image = Some("x:2".into());
        assert!(crate::admit(&mut new, Some(&old), &ctx).is_empty());
        // The command may not.
        let mut new = old.clone();
        new.spec.as_mut().expect("spec").containers[0].command = Some(vec!["other".into()]);
        let errs = crate::admit(&mut new, Some(&old), &ctx);
        assert_eq!(
            errs.iter()
                .map(|e| (e.field.as_str(), e.kind))
                .collect::<Vec<_>>(),
            vec![("spec", Forbidden)]
        );
        // nodeName may be set once, then never changed.
        let mut bound = old.clone();
        bound.spec.as_mut().expect("spec").node_name = Some("node-1".into());
        assert!(crate::admit(&mut bound.clone(), Some(&old), &ctx).is_empty());
        let mut moved = bound.clone();
        moved.spec.as_mut().expect("spec").node_name = Some("node-2".into());
        assert_eq!(crate::admit(&mut moved, Some(&bound), &ctx).len(), 1);
        // Containers cannot be added.
        let mut new = old.clone();
        let extra = new.spec.as_ref().expect("spec").containers[0].clone();
        new.spec.as_mut().expect("spec").containers.push(Container {
            name: "b".into(),
            ..extra
        });
        assert_eq!(
            crate::admit(&mut new, Some(&old), &ctx)[0].field,
            "spec.containers"
        );
    }
}
