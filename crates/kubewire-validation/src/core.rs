//! The core/v1 kinds: Namespace, Node, Pod, Service, Endpoints, ConfigMap, Secret, Event.
//!
//! Rules of `pkg/apis/core/validation`, defaults of `pkg/apis/core/v1/defaults.go` and the
//! registry strategies (`PrepareForCreate`/`PrepareForUpdate`) where they change objects.

mod pod;
mod service;

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, EndpointAddress, EndpointPort, Endpoints, Event, Namespace, NamespaceSpec,
    NamespaceStatus, Node, NodeSpec, Secret,
};
use serde_json::json;

pub use pod::{
    MAX_DNS_NAMESERVERS, MAX_DNS_SEARCH_LIST_CHARS, MAX_DNS_SEARCH_PATHS, default_pod_spec,
    default_pod_template, validate_pod_spec, validate_pod_template,
};
pub use service::{externally_accessible, is_headless, needs_health_check};

use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, IpFamily, Path};

/// The label every Namespace carries with its own name (KEP-2161).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Total size of the data of a ConfigMap or Secret.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;
const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

// ---------------------------------------------------------------------------------------------
// Namespace

const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

impl Admit for Namespace {
    /// The name label, and on create (`PrepareForCreate`) the `kubernetes` finalizer and phase
    /// `Active`.
    fn default(&mut self, _ctx: &Context) {
        if let Some(name) = self.metadata.name.clone().filter(|n| !n.is_empty()) {
            self.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(NAMESPACE_NAME_LABEL.to_owned(), name);
        }
        let finalizers = self
            .spec
            .get_or_insert_with(NamespaceSpec::default)
            .finalizers
            .get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == "kubernetes") {
            finalizers.push("kubernetes".to_owned());
        }
        self.status = Some(NamespaceStatus {
            phase: Some("Active".to_owned()),
            ..Default::default()
        });
    }

    /// Only the name label. Which of spec (`namespaces/finalize`) and status (`/status`) a write
    /// may change is the API server's business: it knows the subresource being written.
    fn default_on_update(&mut self, _old: &Self, _ctx: &Context) {
        if let Some(name) = self.metadata.name.clone().filter(|n| !n.is_empty()) {
            self.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(NAMESPACE_NAME_LABEL.to_owned(), name);
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            false,
            NameRule::Dns1123Label,
        );
        let path = Path::new("spec").child("finalizers");
        for finalizer in self.spec.iter().flat_map(|s| s.finalizers.iter().flatten()) {
            errs.extend(meta::validate_qualified_name(&path, finalizer));
            if !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer.as_str()) {
                errs.push(FieldError::invalid(
                    &path,
                    finalizer.as_str(),
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// Node

impl Admit for Node {
    /// `podCIDR` and `podCIDRs` mirror each other, as the v1 conversion does.
    fn default(&mut self, _ctx: &Context) {
        let spec = self.spec.get_or_insert_with(NodeSpec::default);
        let cidrs = spec.pod_cidrs.as_deref().unwrap_or(&[]);
        match (
            spec.pod_cidr.as_deref().filter(|c| !c.is_empty()),
            cidrs.first(),
        ) {
            (Some(cidr), None) => spec.pod_cidrs = Some(vec![cidr.to_owned()]),
            (None, Some(first)) => spec.pod_cidr = Some(first.clone()),
            _ => {}
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            false,
            NameRule::Dns1123Subdomain,
        );
        let empty = NodeSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let path = Path::new("spec");
        // Upstream reports taints under `metadata.taints`; they live in `spec.taints`.
        errs.extend(validate_taints(spec, &path.child("taints")));

        let cidrs_path = path.child("podCIDRs");
        let cidrs = spec.pod_cidrs.as_deref().unwrap_or(&[]);
        for (i, cidr) in cidrs.iter().enumerate() {
            errs.extend(meta::validate_cidr(&cidrs_path.index(i), cidr));
        }
        if cidrs.len() > 1 {
            let families: Vec<IpFamily> = cidrs
                .iter()
                .filter_map(|c| meta::parse_cidr(c))
                .map(|n| IpFamily::of(&n.addr()))
                .collect();
            let dual = families.len() == 2 && families[0] != families[1];
            if !dual || cidrs.len() > 2 {
                errs.push(FieldError::invalid(
                    &cidrs_path,
                    json!(cidrs),
                    "may specify no more than one CIDR for each IP family",
                ));
            }
            let mut seen = HashSet::new();
            for (i, cidr) in cidrs.iter().enumerate() {
                if !seen.insert(cidr) {
                    errs.push(FieldError::duplicate(&cidrs_path.index(i), cidr.as_str()));
                }
            }
        }
        if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
            match cidrs.first() {
                None => errs.push(FieldError::required(&cidrs_path, "")),
                Some(first) if first != cidr => errs.push(FieldError::invalid(
                    &cidrs_path,
                    json!(cidrs),
                    "first value must match `podCIDR`",
                )),
                Some(_) => {}
            }
        }

        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            let old_cidrs = old_spec.pod_cidrs.as_deref().unwrap_or(&[]);
            if !old_cidrs.is_empty() && old_cidrs != cidrs {
                errs.push(FieldError::forbidden(
                    &cidrs_path,
                    "node updates may not change podCIDR except from \"\" to valid",
                ));
            }
            let old_provider = old_spec.provider_id.as_deref().unwrap_or("");
            if !old_provider.is_empty() && spec.provider_id.as_deref().unwrap_or("") != old_provider
            {
                errs.push(FieldError::forbidden(
                    &path.child("providerID"),
                    "node updates may not change providerID except from \"\" to valid",
                ));
            }
        }
        errs
    }
}

/// `validateNodeTaints`: valid keys, values and effects; unique by (key, effect).
fn validate_taints(spec: &NodeSpec, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut seen = HashSet::new();
    for (i, taint) in spec.taints.iter().flatten().enumerate() {
        let p = path.index(i);
        errs.extend(meta::validate_label_name(&p.child("key"), &taint.key));
        let value = taint.value.as_deref().unwrap_or("");
        let msgs = meta::is_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("value"),
                value,
                msgs.join(";"),
            ));
        }
        errs.extend(pod::validate_taint_effect(
            &p.child("effect"),
            &taint.effect,
            false,
        ));
        if !seen.insert((taint.key.clone(), taint.effect.clone())) {
            let mut e =
                FieldError::duplicate(&p, json!({"key": taint.key, "effect": taint.effect}));
            e.detail = "taints must be unique by key and effect pair".to_owned();
            errs.push(e);
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Endpoints

impl Admit for Endpoints {
    /// `SetDefaults_EndpointPort`: a port's protocol defaults to TCP.
    fn default(&mut self, _ctx: &Context) {
        for port in self
            .subsets
            .iter_mut()
            .flatten()
            .flat_map(|s| s.ports.iter_mut().flatten())
        {
            port.protocol.get_or_insert_with(|| "TCP".to_owned());
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let path = Path::new("subsets");
        for (i, subset) in self.subsets.iter().flatten().enumerate() {
            let p = path.index(i);
            let addresses = subset.addresses.as_deref().unwrap_or(&[]);
            let not_ready = subset.not_ready_addresses.as_deref().unwrap_or(&[]);
            if addresses.is_empty() && not_ready.is_empty() {
                errs.push(FieldError::required(
                    &p,
                    "must specify `addresses` or `notReadyAddresses`",
                ));
            }
            for (j, address) in addresses.iter().enumerate() {
                errs.extend(validate_endpoint_address(
                    address,
                    &p.child("addresses").index(j),
                ));
            }
            for (j, address) in not_ready.iter().enumerate() {
                errs.extend(validate_endpoint_address(
                    address,
                    &p.child("notReadyAddresses").index(j),
                ));
            }
            let ports = subset.ports.as_deref().unwrap_or(&[]);
            for (j, port) in ports.iter().enumerate() {
                errs.extend(validate_endpoint_port(
                    port,
                    ports.len() > 1,
                    &p.child("ports").index(j),
                ));
            }
        }
        errs
    }
}

fn validate_endpoint_address(address: &EndpointAddress, path: &Path) -> FieldErrors {
    let mut errs = meta::validate_non_special_ip(&path.child("ip"), &address.ip);
    if let Some(hostname) = address.hostname.as_deref().filter(|h| !h.is_empty()) {
        errs.extend(meta::validate_dns1123_label(
            &path.child("hostname"),
            hostname,
        ));
    }
    if let Some(node) = &address.node_name {
        errs.extend(meta::each_invalid(
            &path.child("nodeName"),
            node,
            NameRule::Dns1123Subdomain.check(node, false),
        ));
    }
    errs
}

fn validate_endpoint_port(port: &EndpointPort, require_name: bool, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::new();
    match port.name.as_deref().unwrap_or("") {
        "" if require_name => errs.push(FieldError::required(&path.child("name"), "")),
        "" => {}
        name => errs.extend(meta::validate_dns1123_label(&path.child("name"), name)),
    }
    errs.extend(meta::validate_port_num(&path.child("port"), port.port));
    errs.extend(meta::validate_protocol(
        &path.child("protocol"),
        port.protocol.as_deref(),
        true,
    ));
    if let Some(app_protocol) = &port.app_protocol {
        errs.extend(meta::validate_qualified_name(
            &path.child("appProtocol"),
            app_protocol,
        ));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// ConfigMap and Secret

/// Keys of a data map, their total size, and a cross-map duplicate check.
fn validate_data_keys<'a>(
    path: &Path,
    keys: impl Iterator<Item = (&'a String, usize)>,
    errs: &mut FieldErrors,
) -> usize {
    let mut total = 0;
    for (key, size) in keys {
        total += size;
        errs.extend(meta::each_invalid(
            &path.key(key),
            key,
            meta::is_config_map_key(key),
        ));
    }
    total
}

/// `immutable: true` freezes the data and itself.
fn validate_immutable_data(
    old_immutable: Option<bool>,
    new_immutable: Option<bool>,
    changed: &[(&str, bool)],
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if old_immutable != Some(true) {
        return errs;
    }
    if new_immutable != Some(true) {
        errs.push(FieldError::forbidden(
            &Path::new("immutable"),
            IMMUTABLE_SET,
        ));
    }
    for (name, changed) in changed {
        if *changed {
            errs.push(FieldError::forbidden(&Path::new(name), IMMUTABLE_SET));
        }
    }
    errs
}

impl Admit for ConfigMap {
    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let data = self.data.as_ref();
        let mut total = validate_data_keys(
            &Path::new("data"),
            data.into_iter().flatten().map(|(k, v)| (k, v.len())),
            &mut errs,
        );
        let binary = self.binary_data.as_ref();
        total += validate_data_keys(
            &Path::new("binaryData"),
            binary.into_iter().flatten().map(|(k, v)| (k, v.0.len())),
            &mut errs,
        );
        for key in binary.into_iter().flat_map(BTreeMap::keys) {
            if data.is_some_and(|d| d.contains_key(key)) {
                errs.push(FieldError::invalid(
                    &Path::new("binaryData").key(key),
                    key.as_str(),
                    "duplicate of key present in data",
                ));
            }
        }
        if total > MAX_DATA_SIZE {
            errs.push(FieldError::too_long(&Path::root(), MAX_DATA_SIZE));
        }
        if let Some(old) = old {
            let changed = [
                ("data", self.data != old.data),
                ("binaryData", self.binary_data != old.binary_data),
            ];
            errs.extend(validate_immutable_data(
                old.immutable,
                self.immutable,
                &changed,
            ));
        }
        errs
    }
}

/// Keys every Secret of a type must have (`ValidateSecret`).
fn required_secret_keys(secret_type: &str) -> &'static [&'static str] {
    match secret_type {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    }
}

impl Admit for Secret {
    /// `type` defaults to `Opaque`; `stringData` is merged into `data` (the v1 conversion), so it
    /// is never stored.
    fn default(&mut self, _ctx: &Context) {
        if self.type_.as_deref().is_none_or(str::is_empty) {
            self.type_ = Some("Opaque".to_owned());
        }
        if let Some(string_data) = self.string_data.take() {
            let data = self.data.get_or_insert_with(BTreeMap::new);
            for (k, v) in string_data {
                data.insert(k, ByteString(v.into_bytes()));
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
        let data_path = Path::new("data");
        let data = self.data.as_ref();
        let total = validate_data_keys(
            &data_path,
            data.into_iter().flatten().map(|(k, v)| (k, v.0.len())),
            &mut errs,
        );
        let has = |key: &str| {
            data.and_then(|d| d.get(key))
                .is_some_and(|v| !v.0.is_empty())
        };
        let secret_type = self.type_.as_deref().unwrap_or("Opaque");
        for key in required_secret_keys(secret_type) {
            if !has(key) {
                errs.push(FieldError::required(&data_path.key(key), ""));
            }
        }
        for (key, kind) in [
            (".dockercfg", "kubernetes.io/dockercfg"),
            (".dockerconfigjson", "kubernetes.io/dockerconfigjson"),
        ] {
            if secret_type == kind
                && let Some(value) = data.and_then(|d| d.get(key)).filter(|v| !v.0.is_empty())
                && let Err(e) = serde_json::from_slice::<serde_json::Value>(&value.0)
            {
                errs.push(FieldError::invalid(
                    &data_path.key(key),
                    "<secret contents redacted>",
                    e.to_string(),
                ));
            }
        }
        match secret_type {
            "kubernetes.io/service-account-token" => {
                let annotated = self
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("kubernetes.io/service-account.name"));
                if !annotated {
                    errs.push(FieldError::required(
                        &Path::new("metadata")
                            .child("annotations")
                            .key("kubernetes.io/service-account.name"),
                        "",
                    ));
                }
            }
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                errs.push(FieldError::required(&data_path.key("username"), ""));
                errs.push(FieldError::required(&data_path.key("password"), ""));
            }
            _ => {}
        }
        if total > MAX_DATA_SIZE {
            errs.push(FieldError::too_long(&data_path, MAX_DATA_SIZE));
        }
        if let Some(old) = old {
            let (new_type, old_type) = (
                self.type_.as_deref().unwrap_or("Opaque"),
                old.type_.as_deref().unwrap_or("Opaque"),
            );
            errs.extend(meta::validate_immutable(
                &Path::new("type"),
                &new_type,
                &old_type,
            ));
            errs.extend(validate_immutable_data(
                old.immutable,
                self.immutable,
                &[("data", self.data != old.data)],
            ));
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// Event

/// Limits of the fields of new-style events (`events.k8s.io` semantics through core/v1).
const EVENT_FIELD_LIMIT: usize = 128;
const EVENT_NOTE_LIMIT: usize = 1024;

impl Admit for Event {
    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let namespace = self.metadata.namespace.as_deref().unwrap_or("");
        let involved_ns = self.involved_object.namespace.as_deref().unwrap_or("");
        let ns_path = Path::new("involvedObject").child("namespace");
        let mismatch = FieldError::invalid(&ns_path, involved_ns, "does not match event.namespace");
        if self.event_time.is_none() {
            // A legacy event lives in its object's namespace ("default" for cluster-scoped ones).
            let ok = if involved_ns.is_empty() {
                namespace.is_empty() || namespace == "default"
            } else {
                namespace.is_empty() || namespace == involved_ns
            };
            if !ok {
                errs.push(mismatch);
            }
        } else {
            if involved_ns.is_empty() && !matches!(namespace, "" | "default" | "kube-system") {
                errs.push(mismatch);
            }
            let controller = self.reporting_component.as_deref().unwrap_or("");
            if controller.is_empty() {
                errs.push(FieldError::required(&Path::new("reportingComponent"), ""));
            }
            errs.extend(meta::validate_qualified_name(
                &Path::new("reportingComponent"),
                controller,
            ));
            for (field, value, limit) in [
                (
                    "reportingInstance",
                    self.reporting_instance.as_deref(),
                    EVENT_FIELD_LIMIT,
                ),
                ("action", self.action.as_deref(), EVENT_FIELD_LIMIT),
                ("reason", self.reason.as_deref(), EVENT_FIELD_LIMIT),
            ] {
                let value = value.unwrap_or("");
                if value.is_empty() {
                    errs.push(FieldError::required(&Path::new(field), ""));
                }
                if value.len() > limit {
                    errs.push(FieldError::invalid(
                        &Path::new(field),
                        "",
                        format!("can have at most {limit} characters"),
                    ));
                }
            }
            if self.message.as_deref().unwrap_or("").len() > EVENT_NOTE_LIMIT {
                errs.push(FieldError::invalid(
                    &Path::new("message"),
                    "",
                    format!("can have at most {EVENT_NOTE_LIMIT} characters"),
                ));
            }
        }
        if let Some(t) = self.type_.as_deref().filter(|t| !t.is_empty())
            && self.event_time.is_some()
        {
            errs.extend(meta::validate_enum(
                &Path::new("type"),
                t,
                &["Normal", "Warning"],
            ));
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

    fn obj<T: DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("object")
    }

    fn errors_of<T: Admit>(mut o: T, old: Option<&T>) -> Vec<(String, ErrorKind)> {
        crate::admit(&mut o, old, &Context::default())
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    #[test]
    fn namespace() {
        let mut ns: Namespace = obj(json!({"metadata": {"name": "team-a"}}));
        assert!(crate::admit(&mut ns, None, &Context::default()).is_empty());
        assert_eq!(
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NAMESPACE_NAME_LABEL))
                .map(String::as_str),
            Some("team-a")
        );
        assert_eq!(
            ns.spec.as_ref().and_then(|s| s.finalizers.clone()),
            Some(vec!["kubernetes".to_string()])
        );
        assert_eq!(
            ns.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Active")
        );
        assert_eq!(
            errors_of(obj::<Namespace>(json!({"metadata": {"name": "a.b"}})), None),
            vec![("metadata.name".into(), Invalid)]
        );
        assert_eq!(
            errors_of(
                obj::<Namespace>(json!({"metadata": {"name": "a", "namespace": "b"}})),
                None
            ),
            vec![("metadata.namespace".into(), Forbidden)]
        );
        let mut renamed: Namespace = obj(json!({"metadata": {"name": "team-b"}}));
        assert_eq!(
            crate::admit(&mut renamed, Some(&ns), &Context::default())[0].field,
            "metadata.name"
        );
    }

    #[test]
    fn node() {
        let mut node: Node =
            obj(json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24"}}));
        assert!(crate::admit(&mut node, None, &Context::default()).is_empty());
        assert_eq!(
            node.spec.as_ref().and_then(|s| s.pod_cidrs.clone()),
            Some(vec!["10.244.1.0/24".to_string()])
        );
        let dual: Node = obj(
            json!({"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]}}),
        );
        assert!(errors_of(dual, None).is_empty());
        let same: Node = obj(
            json!({"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]}}),
        );
        assert_eq!(
            errors_of(same, None),
            vec![("spec.podCIDRs".into(), Invalid)]
        );
        let bad: Node =
            obj(json!({"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.244.1.0"]}}));
        assert_eq!(
            errors_of(bad, None),
            vec![("spec.podCIDRs[0]".into(), Invalid)]
        );
        let mismatch: Node = obj(
            json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.2.0.0/24"]}}),
        );
        assert_eq!(
            errors_of(mismatch, None),
            vec![("spec.podCIDRs".into(), Invalid)]
        );
        let moved: Node =
            obj(json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.2.0/24"}}));
        assert_eq!(
            errors_of(moved, Some(&node)),
            vec![("spec.podCIDRs".into(), Forbidden)]
        );
        let taints: Node = obj(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "Sometimes"}, {"key": "c", "effect": ""}
        ]}}));
        assert_eq!(
            errors_of(taints, None),
            vec![
                ("spec.taints[1]".into(), Duplicate),
                ("spec.taints[2].effect".into(), NotSupported),
                ("spec.taints[3].effect".into(), Required),
            ]
        );
    }

    #[test]
    fn endpoints() {
        let ok: Endpoints = obj(
            json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.1.0.5", "hostname": "web-0", "nodeName": "node-1"}],
            "ports": [{"port": 80, "protocol": "TCP"}]}]}),
        );
        assert!(errors_of(ok, None).is_empty());
        let mut defaulted: Endpoints = obj(
            json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 80}]}]}),
        );
        defaulted.default(&Context::default());
        assert_eq!(
            defaulted.subsets.unwrap()[0].ports.as_ref().unwrap()[0]
                .protocol
                .as_deref(),
            Some("TCP")
        );
        let bad: Endpoints = obj(json!({"metadata": {"name": "web"}, "subsets": [
            {"ports": [{"port": 80}]},
            {"addresses": [{"ip": "127.0.0.1"}, {"ip": "x"}], "ports": [{"port": 0, "protocol": "TCP"}, {"name": "b", "port": 1, "protocol": "TCP"}]}
        ]}));
        assert_eq!(
            errors_of(bad, None),
            vec![
                ("subsets[0]".into(), Required),
                ("subsets[1].addresses[0].ip".into(), Invalid),
                ("subsets[1].addresses[1].ip".into(), Invalid),
                ("subsets[1].ports[0].name".into(), Required),
                ("subsets[1].ports[0].port".into(), Invalid),
            ]
        );
    }

    #[test]
    fn config_maps() {
        let ok: ConfigMap = obj(json!({"metadata": {"name": "cfg"}, "data": {"app.yaml": "x"}}));
        assert!(errors_of(ok.clone(), None).is_empty());
        let bad: ConfigMap = obj(
            json!({"metadata": {"name": "cfg"}, "data": {"a/b": "x", "k": "v"}, "binaryData": {"k": "AA=="}}),
        );
        assert_eq!(
            errors_of(bad, None),
            vec![
                ("data[a/b]".into(), Invalid),
                ("binaryData[k]".into(), Invalid)
            ]
        );
        let big: ConfigMap =
            obj(json!({"metadata": {"name": "cfg"}, "data": {"k": "x".repeat(MAX_DATA_SIZE + 1)}}));
        let errs = crate::admit(&mut big.clone(), None, &Context::default());
        assert_eq!(
            errs[0].to_string_with_field(),
            "Too long: may not be more than 1048576 bytes"
        );
        let frozen: ConfigMap =
            obj(json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}, "immutable": true}));
        let changed: ConfigMap =
            obj(json!({"metadata": {"name": "cfg"}, "data": {"k": "w"}, "immutable": true}));
        assert_eq!(
            errors_of(changed, Some(&frozen)),
            vec![("data".into(), Forbidden)]
        );
        let thawed: ConfigMap = obj(json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}}));
        assert_eq!(
            errors_of(thawed, Some(&frozen)),
            vec![("immutable".into(), Forbidden)]
        );
    }

    #[test]
    fn secrets() {
        let mut s: Secret =
            obj(json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}}));
        assert!(crate::admit(&mut s, None, &Context::default()).is_empty());
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert!(s.string_data.is_none());
        assert_eq!(
            s.data
                .as_ref()
                .and_then(|d| d.get("password"))
                .map(|v| v.0.clone()),
            Some(b"hunter2".to_vec())
        );
        let tls: Secret = obj(
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "AA=="}}),
        );
        assert_eq!(
            errors_of(tls, None),
            vec![("data[tls.key]".into(), Required)]
        );
        let retyped: Secret = obj(
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/basic-auth", "data": {"username": "AA=="}}),
        );
        assert_eq!(errors_of(retyped, Some(&s)), vec![("type".into(), Invalid)]);
        let sa: Secret =
            obj(json!({"metadata": {"name": "s"}, "type": "kubernetes.io/service-account-token"}));
        assert_eq!(
            errors_of(sa, None),
            vec![(
                "metadata.annotations[kubernetes.io/service-account.name]".into(),
                Required
            )]
        );
        let json_bad: Secret = obj(
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30K"}}),
        );
        assert!(errors_of(json_bad, None).is_empty());
    }

    #[test]
    fn events() {
        let ok: Event = obj(
            json!({"metadata": {"name": "web.1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web"},
            "reason": "Started", "message": "ok", "type": "Normal"}),
        );
        assert!(errors_of(ok, None).is_empty());
        let elsewhere: Event = obj(
            json!({"metadata": {"name": "web.1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "namespace": "other", "name": "web"}}),
        );
        assert_eq!(
            errors_of(elsewhere, None),
            vec![("involvedObject.namespace".into(), Invalid)]
        );
        let new_style: Event = obj(
            json!({"metadata": {"name": "web.1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web"},
            "eventTime": "2024-01-01T00:00:00.000000Z", "type": "Bad"}),
        );
        assert_eq!(
            errors_of(new_style, None),
            vec![
                ("reportingComponent".into(), Required),
                ("reportingComponent".into(), Invalid),
                ("reportingComponent".into(), Invalid),
                ("reportingInstance".into(), Required),
                ("action".into(), Required),
                ("reason".into(), Required),
                ("type".into(), NotSupported),
            ]
        );
    }
}
