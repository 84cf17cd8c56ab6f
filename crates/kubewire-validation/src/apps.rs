//! apps/v1: Deployment, ReplicaSet, StatefulSet, DaemonSet (`pkg/apis/apps/validation`,
//! `pkg/apis/apps/v1/defaults.go`).

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, ReplicaSet, ReplicaSetSpec, RollingUpdateDaemonSet,
    RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::core::{default_pod_template, validate_pod_template};
use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, Path};

pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;

fn spec_path() -> Path {
    Path::new("spec")
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// What every workload checks: replicas, selector (valid, non-empty, matching the template
/// labels), and a template whose pods always restart.
fn validate_workload(
    kind: &str,
    replicas: Option<i32>,
    min_ready_seconds: Option<i32>,
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
) -> FieldErrors {
    let path = spec_path();
    let mut errs = FieldErrors::new();
    if let Some(replicas) = replicas {
        errs.extend(meta::validate_nonnegative(
            &path.child("replicas"),
            i64::from(replicas),
        ));
    }
    if let Some(min_ready) = min_ready_seconds {
        errs.extend(meta::validate_nonnegative(
            &path.child("minReadySeconds"),
            i64::from(min_ready),
        ));
    }
    errs.extend(meta::validate_label_selector(
        &path.child("selector"),
        selector,
    ));
    if meta::label_selector_is_empty(selector) {
        errs.push(FieldError::invalid(
            &path.child("selector"),
            to_value(selector),
            format!("empty selector is invalid for {kind}"),
        ));
    }
    let template_path = path.child("template");
    let Some(template) = template else {
        errs.push(FieldError::required(&template_path, ""));
        return errs;
    };
    let empty = Default::default();
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    if !meta::label_selector_is_empty(selector) && !meta::label_selector_matches(selector, labels) {
        errs.push(FieldError::invalid(
            &template_path.children(&["metadata", "labels"]),
            to_value(labels),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(validate_pod_template(template, &template_path));
    if let Some(spec) = &template.spec {
        let restart = spec.restart_policy.as_deref().unwrap_or("");
        if restart != "Always" {
            errs.push(FieldError::not_supported(
                &template_path.children(&["spec", "restartPolicy"]),
                restart,
                &["Always"],
            ));
        }
        if spec.active_deadline_seconds.is_some() {
            // Upstream names ReplicaSet for Deployments too.
            let owner = match kind {
                "statefulset" => "StatefulSet",
                "daemonset" => "DaemonSet",
                _ => "ReplicaSet",
            };
            errs.push(FieldError::forbidden(
                &template_path.children(&["spec", "activeDeadlineSeconds"]),
                format!("activeDeadlineSeconds in {owner} is not Supported"),
            ));
        }
    }
    errs
}

fn validate_revision_history_limit(limit: Option<i32>) -> FieldErrors {
    limit
        .map(|l| {
            meta::validate_nonnegative(&spec_path().child("revisionHistoryLimit"), i64::from(l))
        })
        .unwrap_or_default()
}

fn validate_selector_immutable(new: &LabelSelector, old: Option<&LabelSelector>) -> FieldErrors {
    old.map(|old| meta::validate_immutable(&spec_path().child("selector"), new, old))
        .unwrap_or_default()
}

/// maxUnavailable/maxSurge: non-negative ints or percentages, maxUnavailable at most 100%, and
/// not both zero (the rollout could never progress).
fn validate_rolling_update(
    max_unavailable: Option<&IntOrString>,
    max_surge: Option<&IntOrString>,
    path: &Path,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let zero = IntOrString::Int(0);
    let unavailable = max_unavailable.unwrap_or(&zero);
    let surge = max_surge.unwrap_or(&zero);
    errs.extend(meta::validate_positive_int_or_percent(
        &path.child("maxUnavailable"),
        unavailable,
    ));
    errs.extend(meta::validate_not_more_than_100_percent(
        &path.child("maxUnavailable"),
        unavailable,
    ));
    errs.extend(meta::validate_positive_int_or_percent(
        &path.child("maxSurge"),
        surge,
    ));
    if meta::int_or_percent_value(unavailable) == 0 && meta::int_or_percent_value(surge) == 0 {
        errs.push(FieldError::invalid(
            &path.child("maxUnavailable"),
            to_value(unavailable),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Deployment

impl Admit for Deployment {
    fn default(&mut self, _ctx: &Context) {
        let spec = self.spec.get_or_insert_with(DeploymentSpec::default);
        spec.replicas.get_or_insert(1);
        let strategy = spec
            .strategy
            .get_or_insert_with(DeploymentStrategy::default);
        if strategy.type_.as_deref().is_none_or(str::is_empty) {
            strategy.type_ = Some("RollingUpdate".to_owned());
        }
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            let rolling = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            rolling
                .max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
            rolling
                .max_surge
                .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
        }
        spec.revision_history_limit
            .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
        spec.progress_deadline_seconds
            .get_or_insert(DEFAULT_PROGRESS_DEADLINE_SECONDS);
        default_pod_template(&mut spec.template);
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let empty = DeploymentSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let path = spec_path();
        errs.extend(validate_workload(
            "deployment",
            spec.replicas,
            spec.min_ready_seconds,
            &spec.selector,
            Some(&spec.template),
        ));
        let strategy_path = path.child("strategy");
        let strategy = spec.strategy.clone().unwrap_or_default();
        match strategy.type_.as_deref().unwrap_or("") {
            "Recreate" => {
                if strategy.rolling_update.is_some() {
                    errs.push(FieldError::forbidden(
                        &strategy_path.child("rollingUpdate"),
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            "RollingUpdate" => match &strategy.rolling_update {
                None => errs.push(FieldError::required(
                    &strategy_path.child("rollingUpdate"),
                    "this should be defaulted and never be nil",
                )),
                Some(r) => errs.extend(validate_rolling_update(
                    r.max_unavailable.as_ref(),
                    r.max_surge.as_ref(),
                    &strategy_path.child("rollingUpdate"),
                )),
            },
            other => errs.push(FieldError::not_supported(
                &strategy_path.child("type"),
                other,
                &["Recreate", "RollingUpdate"],
            )),
        }
        errs.extend(validate_revision_history_limit(spec.revision_history_limit));
        if let Some(deadline) = spec.progress_deadline_seconds {
            let p = path.child("progressDeadlineSeconds");
            errs.extend(meta::validate_nonnegative(&p, i64::from(deadline)));
            if deadline <= spec.min_ready_seconds.unwrap_or(0) {
                errs.push(FieldError::invalid(
                    &p,
                    deadline,
                    "must be greater than minReadySeconds",
                ));
            }
        }
        errs.extend(validate_selector_immutable(
            &spec.selector,
            old.and_then(|o| o.spec.as_ref()).map(|s| &s.selector),
        ));
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet

impl Admit for ReplicaSet {
    fn default(&mut self, _ctx: &Context) {
        let spec = self.spec.get_or_insert_with(ReplicaSetSpec::default);
        spec.replicas.get_or_insert(1);
        if let Some(template) = &mut spec.template {
            default_pod_template(template);
        }
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let empty = ReplicaSetSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        // Upstream's message names "deployment" for ReplicaSets too.
        errs.extend(validate_workload(
            "deployment",
            spec.replicas,
            spec.min_ready_seconds,
            &spec.selector,
            spec.template.as_ref(),
        ));
        errs.extend(validate_selector_immutable(
            &spec.selector,
            old.and_then(|o| o.spec.as_ref()).map(|s| &s.selector),
        ));
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// StatefulSet

impl Admit for StatefulSet {
    fn default(&mut self, _ctx: &Context) {
        let spec = self.spec.get_or_insert_with(StatefulSetSpec::default);
        spec.replicas.get_or_insert(1);
        if spec
            .pod_management_policy
            .as_deref()
            .is_none_or(str::is_empty)
        {
            spec.pod_management_policy = Some("OrderedReady".to_owned());
        }
        let strategy = spec
            .update_strategy
            .get_or_insert_with(StatefulSetUpdateStrategy::default);
        if strategy.type_.as_deref().is_none_or(str::is_empty) {
            strategy.type_ = Some("RollingUpdate".to_owned());
        }
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
                .partition
                .get_or_insert(0);
        }
        spec.revision_history_limit
            .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
        let retention = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
        retention
            .when_deleted
            .get_or_insert_with(|| "Retain".to_owned());
        retention
            .when_scaled
            .get_or_insert_with(|| "Retain".to_owned());
        default_pod_template(&mut spec.template);
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let old_meta = old.map(|o| &o.metadata);
        // On update the name is not revalidated: older versions allowed subdomains.
        let mut errs = match old_meta {
            Some(old_meta) => meta::validate_object_meta_update(&self.metadata, old_meta),
            None => meta::validate_object_meta(&self.metadata, true, NameRule::Dns1123Label),
        };
        let empty = StatefulSetSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let path = spec_path();
        match spec.pod_management_policy.as_deref().unwrap_or("") {
            "" => errs.push(FieldError::required(&path.child("podManagementPolicy"), "")),
            "OrderedReady" | "Parallel" => {}
            other => errs.push(FieldError::invalid(
                &path.child("podManagementPolicy"),
                other,
                "must be 'OrderedReady' or 'Parallel'",
            )),
        }
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let strategy_path = path.child("updateStrategy");
        match strategy.type_.as_deref().unwrap_or("") {
            "" => errs.push(FieldError::required(&strategy_path, "")),
            "OnDelete" => {
                if let Some(rolling) = &strategy.rolling_update {
                    errs.push(FieldError::invalid(
                        &strategy_path.child("rollingUpdate"),
                        to_value(rolling),
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
            }
            "RollingUpdate" => {
                if let Some(rolling) = &strategy.rolling_update {
                    let p = strategy_path.child("rollingUpdate");
                    errs.extend(meta::validate_nonnegative(
                        &p.child("partition"),
                        i64::from(rolling.partition.unwrap_or(0)),
                    ));
                    if let Some(max) = &rolling.max_unavailable {
                        errs.extend(meta::validate_positive_int_or_percent(
                            &p.child("maxUnavailable"),
                            max,
                        ));
                        if meta::int_or_percent_value(max) == 0 {
                            errs.push(FieldError::invalid(
                                &p.child("maxUnavailable"),
                                to_value(max),
                                "must be greater than 0",
                            ));
                        }
                        errs.extend(meta::validate_not_more_than_100_percent(
                            &p.child("maxUnavailable"),
                            max,
                        ));
                    }
                }
            }
            _ => errs.push(FieldError::invalid(
                &strategy_path,
                to_value(&strategy),
                "must be 'RollingUpdate' or 'OnDelete'",
            )),
        }
        if let Some(policy) = &spec.persistent_volume_claim_retention_policy {
            let p = path.child("persistentVolumeClaimRetentionPolicy");
            for (field, value) in [
                ("whenDeleted", &policy.when_deleted),
                ("whenScaled", &policy.when_scaled),
            ] {
                errs.extend(meta::validate_enum(
                    &p.child(field),
                    value.as_deref().unwrap_or(""),
                    &["Retain", "Delete"],
                ));
            }
        }
        if let Some(ordinals) = &spec.ordinals {
            errs.extend(meta::validate_nonnegative(
                &path.child("ordinals.start"),
                i64::from(ordinals.start.unwrap_or(0)),
            ));
        }
        // The governing Service must be nameable (a DNS-1035 label) to give pods DNS names.
        if let Some(service) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
            errs.extend(meta::each_invalid(
                &path.child("serviceName"),
                service,
                NameRule::Dns1035Label.check(service, false),
            ));
        }
        errs.extend(validate_workload(
            "statefulset",
            spec.replicas,
            spec.min_ready_seconds,
            &spec.selector,
            Some(&spec.template),
        ));
        errs.extend(validate_revision_history_limit(spec.revision_history_limit));

        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            let mut clone = spec.clone();
            clone.replicas = old_spec.replicas;
            clone.template.clone_from(&old_spec.template);
            clone.update_strategy.clone_from(&old_spec.update_strategy);
            clone.min_ready_seconds = old_spec.min_ready_seconds;
            clone.ordinals.clone_from(&old_spec.ordinals);
            clone.revision_history_limit = old_spec.revision_history_limit;
            clone
                .persistent_volume_claim_retention_policy
                .clone_from(&old_spec.persistent_volume_claim_retention_policy);
            if &clone != old_spec {
                errs.push(FieldError::forbidden(
                    &path,
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// DaemonSet

impl Admit for DaemonSet {
    fn default(&mut self, _ctx: &Context) {
        let spec = self.spec.get_or_insert_with(DaemonSetSpec::default);
        let strategy = spec
            .update_strategy
            .get_or_insert_with(DaemonSetUpdateStrategy::default);
        if strategy.type_.as_deref().is_none_or(str::is_empty) {
            strategy.type_ = Some("RollingUpdate".to_owned());
        }
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            let rolling = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDaemonSet::default);
            rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
            rolling.max_surge.get_or_insert(IntOrString::Int(0));
        }
        spec.revision_history_limit
            .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
        default_pod_template(&mut spec.template);
    }

    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let empty = DaemonSetSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let path = spec_path();
        errs.extend(validate_workload(
            "daemonset",
            None,
            spec.min_ready_seconds,
            &spec.selector,
            Some(&spec.template),
        ));
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let strategy_path = path.child("updateStrategy");
        match strategy.type_.as_deref().unwrap_or("") {
            "OnDelete" => {}
            "RollingUpdate" => match &strategy.rolling_update {
                None => errs.push(FieldError::required(
                    &strategy_path.child("rollingUpdate"),
                    "",
                )),
                Some(r) => errs.extend(validate_rolling_update(
                    r.max_unavailable.as_ref(),
                    r.max_surge.as_ref(),
                    &strategy_path.child("rollingUpdate"),
                )),
            },
            "" => errs.push(FieldError::required(&strategy_path.child("type"), "")),
            other => errs.push(FieldError::not_supported(
                &strategy_path.child("type"),
                other,
                &["OnDelete", "RollingUpdate"],
            )),
        }
        errs.extend(validate_revision_history_limit(spec.revision_history_limit));
        errs.extend(validate_selector_immutable(
            &spec.selector,
            old.and_then(|o| o.spec.as_ref()).map(|s| &s.selector),
        ));
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::{self, *};
    use serde::de::DeserializeOwned;
    use serde_json::json;

    fn obj<T: DeserializeOwned>(kind_spec: Value) -> T {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": kind_spec}),
        )
        .expect("object")
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    }

    fn spec(extra: Value) -> Value {
        let mut s = json!({"selector": {"matchLabels": {"app": "web"}}, "template": template()});
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        s
    }

    fn errors_of<T: Admit>(mut o: T, old: Option<&T>) -> Vec<(String, ErrorKind)> {
        crate::admit(&mut o, old, &Context::default())
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    #[test]
    fn deployment_defaults() {
        let mut d: Deployment = obj(spec(json!({})));
        assert!(crate::admit(&mut d, None, &Context::default()).is_empty());
        let s = d.spec.expect("spec");
        assert_eq!(s.replicas, Some(1));
        assert_eq!(s.revision_history_limit, Some(10));
        assert_eq!(s.progress_deadline_seconds, Some(600));
        let strategy = s.strategy.expect("strategy");
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let rolling = strategy.rolling_update.expect("rolling");
        assert_eq!(rolling.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(
            rolling.max_unavailable,
            Some(IntOrString::String("25%".into()))
        );
        assert_eq!(
            s.template.spec.expect("pod").restart_policy.as_deref(),
            Some("Always")
        );
    }

    #[test]
    fn deployment_rules() {
        let mismatch: Deployment =
            obj(json!({"selector": {"matchLabels": {"app": "other"}}, "template": template()}));
        let errs = crate::admit(&mut mismatch.clone(), None, &Context::default());
        assert_eq!(
            errs[0].to_string_with_field(),
            r#"spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` does not match template `labels`"#
        );
        let empty: Deployment = obj(json!({"selector": {}, "template": template()}));
        assert_eq!(
            errors_of(empty, None),
            vec![("spec.selector".into(), Invalid)]
        );
        let negative: Deployment = obj(spec(json!({"replicas": -1})));
        assert_eq!(
            errors_of(negative, None),
            vec![("spec.replicas".into(), Invalid)]
        );
        let zero: Deployment = obj(spec(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
        ));
        assert_eq!(
            errors_of(zero, None),
            vec![("spec.strategy.rollingUpdate.maxUnavailable".into(), Invalid)]
        );
        let over: Deployment = obj(spec(
            json!({"strategy": {"rollingUpdate": {"maxUnavailable": "110%", "maxSurge": "x"}}}),
        ));
        assert_eq!(
            errors_of(over, None),
            vec![
                ("spec.strategy.rollingUpdate.maxUnavailable".into(), Invalid),
                ("spec.strategy.rollingUpdate.maxSurge".into(), Invalid),
            ]
        );
        let recreate: Deployment = obj(spec(
            json!({"strategy": {"type": "Recreate", "rollingUpdate": {}}}),
        ));
        assert_eq!(
            errors_of(recreate, None),
            vec![("spec.strategy.rollingUpdate".into(), Forbidden)]
        );
        let never: Deployment = obj(json!({"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "web", "image": "nginx"}]}}}));
        assert_eq!(
            errors_of(never, None),
            vec![("spec.template.spec.restartPolicy".into(), NotSupported)]
        );
        let bad_pod: Deployment = obj(json!({"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "Web"}]}}}));
        assert_eq!(
            errors_of(bad_pod, None),
            vec![("spec.template.spec.containers[0].name".into(), Invalid)]
        );
        let deadline: Deployment = obj(spec(json!({"minReadySeconds": 600})));
        assert_eq!(
            errors_of(deadline, None),
            vec![("spec.progressDeadlineSeconds".into(), Invalid)]
        );
    }

    #[test]
    fn selectors_are_immutable() {
        let mut old: Deployment = obj(spec(json!({})));
        old.default(&Context::default());
        let changed: Deployment = obj(
            json!({"selector": {"matchLabels": {"app": "web", "v": "2"}},
            "template": {"metadata": {"labels": {"app": "web", "v": "2"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}),
        );
        assert_eq!(
            errors_of(changed, Some(&old)),
            vec![("spec.selector".into(), Invalid)]
        );
        let mut old_rs: ReplicaSet = obj(spec(json!({})));
        old_rs.default(&Context::default());
        let new_rs: ReplicaSet = obj(
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}),
        );
        assert_eq!(
            errors_of(new_rs, Some(&old_rs)),
            vec![("spec.selector".into(), Invalid)]
        );
    }

    #[test]
    fn replica_set() {
        let rs: ReplicaSet = obj(spec(json!({})));
        assert!(errors_of(rs, None).is_empty());
        let no_template: ReplicaSet = obj(json!({"selector": {"matchLabels": {"app": "web"}}}));
        assert_eq!(
            errors_of(no_template, None),
            vec![("spec.template".into(), Required)]
        );
    }

    #[test]
    fn stateful_set() {
        let mut s: StatefulSet = obj(spec(json!({"serviceName": "web"})));
        assert!(crate::admit(&mut s, None, &Context::default()).is_empty());
        let sp = s.spec.as_ref().expect("spec");
        assert_eq!(sp.pod_management_policy.as_deref(), Some("OrderedReady"));
        assert_eq!(
            sp.update_strategy.as_ref().and_then(|u| u.type_.as_deref()),
            Some("RollingUpdate")
        );
        let bad: StatefulSet = obj(spec(
            json!({"podManagementPolicy": "Random", "updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 1}}}),
        ));
        assert_eq!(
            errors_of(bad, None),
            vec![
                ("spec.podManagementPolicy".into(), Invalid),
                ("spec.updateStrategy.rollingUpdate".into(), Invalid)
            ]
        );
        let dotted: StatefulSet =
            serde_json::from_value(json!({"metadata": {"name": "a.b"}, "spec": spec(json!({}))}))
                .expect("sts");
        assert_eq!(
            errors_of(dotted, None),
            vec![("metadata.name".into(), Invalid)]
        );
        let mut changed = s.clone();
        changed.spec.as_mut().expect("spec").service_name = Some("other".into());
        assert_eq!(
            errors_of(changed, Some(&s)),
            vec![("spec".into(), Forbidden)]
        );
        let mut scaled = s.clone();
        scaled.spec.as_mut().expect("spec").replicas = Some(5);
        assert!(errors_of(scaled, Some(&s)).is_empty());
    }

    #[test]
    fn daemon_set() {
        let mut d: DaemonSet = obj(spec(json!({})));
        assert!(crate::admit(&mut d, None, &Context::default()).is_empty());
        let rolling = d
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.clone())
            .expect("rolling");
        assert_eq!(
            (rolling.max_unavailable, rolling.max_surge),
            (Some(IntOrString::Int(1)), Some(IntOrString::Int(0)))
        );
        let zero: DaemonSet = obj(spec(
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}}),
        ));
        assert_eq!(
            errors_of(zero, None),
            vec![(
                "spec.updateStrategy.rollingUpdate.maxUnavailable".into(),
                Invalid
            )]
        );
        let bad: DaemonSet = obj(spec(json!({"updateStrategy": {"type": "Sometimes"}})));
        assert_eq!(
            errors_of(bad, None),
            vec![("spec.updateStrategy.type".into(), NotSupported)]
        );
    }
}
