//! The three patch formats of `PATCH`: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! the strategic merge patch that `kubectl apply` sends for built-in kinds.
//!
//! Strategic merge differs from merge patch in lists: a list whose field declares a merge key
//! (`containers` by `name`, Service `ports` by `port`, …) is merged element by element, and the
//! patch may carry directives (`$patch`, `$setElementOrder/…`, `$deleteFromPrimitiveList/…`,
//! `$retainKeys`). The merge keys are those of the upstream Go types' `patchMergeKey` tags.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the JSON patch is not valid: {0}")]
    BadJsonPatch(String),
    #[error("the JSON patch could not be applied: {0}")]
    JsonPatchFailed(String),
    #[error("the patch must be a JSON object")]
    NotAnObject,
    #[error("unknown patch directive {0:?}")]
    UnknownDirective(String),
}

/// Applies `patch` of type `kind` to `target`. Strategic merge is only offered for built-in
/// kinds (their Go types carry the merge keys); for others the server answers 415 before this.
pub fn apply_patch(target: &mut Value, patch: &Value, kind: PatchType) -> Result<(), PatchError> {
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| PatchError::BadJsonPatch(e.to_string()))?;
            json_patch::patch(target, &p).map_err(|e| PatchError::JsonPatchFailed(e.to_string()))
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(PatchError::NotAnObject);
            }
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchType::Strategic => {
            let p = patch.as_object().ok_or(PatchError::NotAnObject)?;
            let t = ensure_object(target);
            merge_map(t, p, &mut Vec::new())
        }
    }
}

fn ensure_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// How a list field merges under strategic merge patch.
#[derive(Debug, PartialEq, Eq)]
enum ListStrategy {
    Replace,
    /// Merge elements that share the value of this key.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set (e.g. `metadata.finalizers`).
    MergeScalars,
}

/// The `patchMergeKey` of a list field, from its name and where it sits (`path` holds the
/// field names from the root, list indices left out).
fn list_strategy(path: &[String], field: &str) -> ListStrategy {
    let parent = path.last().map(String::as_str);
    let in_container = matches!(
        parent,
        Some("containers" | "initContainers" | "ephemeralContainers")
    );
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "ports" if in_container => ListStrategy::MergeByKey("containerPort"),
        // Service spec.ports merge by port.
        "ports" if path.len() == 1 && parent == Some("spec") => ListStrategy::MergeByKey("port"),
        "conditions" => ListStrategy::MergeByKey("type"),
        "addresses" if parent == Some("status") => ListStrategy::MergeByKey("type"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "finalizers" if parent == Some("metadata") => ListStrategy::MergeScalars,
        _ => ListStrategy::Replace,
    }
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

fn merge_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return Ok(());
        }
        Some("delete") => {
            target.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError::UnknownDirective(other.to_string())),
    }
    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix(SET_ORDER) {
            if let Some(order) = value.as_array() {
                orders.push((field, order));
            }
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM) {
            if let (Some(Value::Array(list)), Some(gone)) =
                (target.get_mut(field), value.as_array())
            {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(PatchError::UnknownDirective(key.clone()));
        }
        if value.is_null() {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), value) {
            (Some(Value::Object(t)), Value::Object(p)) => {
                path.push(key.clone());
                let r = merge_map(t, p, path);
                path.pop();
                r?;
            }
            (Some(Value::Array(t)), Value::Array(p)) => {
                let strategy = list_strategy(path, key);
                path.push(key.clone());
                let r = merge_list(t, p, &strategy, path);
                path.pop();
                r?;
            }
            (_, Value::Object(p)) => {
                let mut fresh = Map::new();
                path.push(key.clone());
                let r = merge_map(&mut fresh, p, path);
                path.pop();
                r?;
                target.insert(key.clone(), Value::Object(fresh));
            }
            (_, Value::Array(p)) => {
                let mut fresh = Vec::new();
                let strategy = list_strategy(path, key);
                path.push(key.clone());
                let r = merge_list(&mut fresh, p, &strategy, path);
                path.pop();
                r?;
                target.insert(key.clone(), Value::Array(fresh));
            }
            (_, v) => {
                target.insert(key.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (field, order) in orders {
        let strategy = list_strategy(path, field);
        if let Some(Value::Array(list)) = target.get_mut(field) {
            reorder(list, order, &strategy);
        }
    }
    Ok(())
}

fn merge_list(
    target: &mut Vec<Value>,
    patch: &[Value],
    strategy: &ListStrategy,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    match strategy {
        ListStrategy::Replace => *target = replacement(patch),
        ListStrategy::MergeScalars => {
            for v in patch {
                if !target.contains(v) {
                    target.push(v.clone());
                }
            }
        }
        ListStrategy::MergeByKey(merge_key) => {
            // `$patch: replace` makes the patch's elements the list, as given: merging them by
            // key would collapse elements that share a key (a dual-stack node's two InternalIPs).
            if patch
                .iter()
                .any(|v| v.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                *target = replacement(patch);
                return Ok(());
            }
            for element in patch {
                let Some(p) = element.as_object() else {
                    target.push(element.clone());
                    continue;
                };
                let directive = p.get("$patch").and_then(Value::as_str);
                let id = p.get(*merge_key);
                let existing =
                    id.and_then(|id| target.iter().position(|t| t.get(*merge_key) == Some(id)));
                match (directive, existing) {
                    (Some("delete"), Some(i)) => {
                        target.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => merge_map(ensure_object(&mut target[i]), p, path)?,
                    (_, None) => {
                        let mut fresh = Map::new();
                        merge_map(&mut fresh, p, path)?;
                        target.push(Value::Object(fresh));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A list given whole: the patch's elements without directive markers or directive keys.
fn replacement(patch: &[Value]) -> Vec<Value> {
    patch
        .iter()
        .filter(|v| v.get("$patch").is_none() || v.as_object().is_some_and(|m| m.len() > 1))
        .map(|v| {
            v.as_object()
                .map(|m| Value::Object(strip_directives(m)))
                .unwrap_or_else(|| v.clone())
        })
        .collect()
}

/// Orders `list` as `order` says (by merge key, or by value for scalars); elements the order
/// does not name keep their relative order after the named ones.
fn reorder(list: &mut [Value], order: &[Value], strategy: &ListStrategy) {
    let id = |v: &Value| -> Value {
        match strategy {
            ListStrategy::MergeByKey(k) => v.get(*k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let position = |v: &Value| {
        let want = id(v);
        order
            .iter()
            .position(|o| match strategy {
                ListStrategy::MergeByKey(k) => o.get(*k) == Some(&want),
                _ => *o == want,
            })
            .unwrap_or(usize::MAX)
    };
    // Stable sort keeps unnamed elements in place relative to each other.
    list.sort_by_key(position);
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| {
            let v = match v {
                Value::Object(inner) => Value::Object(strip_directives(inner)),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(mut target: Value, patch: Value) -> Value {
        apply_patch(&mut target, &patch, PatchType::Strategic).unwrap();
        target
    }

    #[test]
    fn merges_containers_by_name() {
        let target = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "a:2", "ports": [{"containerPort": 81}]}]
        }}}});
        let out = smp(target, patch);
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["name"], "b");
        assert_eq!(cs[1]["image"], "a:2");
        assert_eq!(
            cs[1]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 81}])
        );
    }

    #[test]
    fn deletes_by_key_and_nulls() {
        let target = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let patch = json!({"metadata": {"labels": {"a": null}}, "spec": {"ports": [{"port": 443, "$patch": "delete"}]}});
        let out = smp(target, patch);
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["spec"]["ports"], json!([{"port": 80, "name": "http"}]));
    }

    #[test]
    fn replaces_lists_without_merge_key_and_merges_finalizers() {
        let target = json!({"metadata": {"finalizers": ["a"]}, "spec": {"args": ["x", "y"]}});
        let patch = json!({"metadata": {"finalizers": ["b"]}, "spec": {"args": ["z"]}});
        let out = smp(target, patch);
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"]["args"], json!(["z"]));
        let out = smp(
            out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn replace_and_retain_directives() {
        let target = json!({"spec": {"selector": {"a": "1", "b": "2"}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"selector": {"$patch": "replace", "c": "3"}, "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = smp(target, patch);
        assert_eq!(out["spec"]["selector"], json!({"c": "3"}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn replace_directive_keeps_elements_that_share_a_key() {
        let target =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let patch = json!({"status": {"addresses": [
            {"$patch": "replace"},
            {"type": "InternalIP", "address": "198.18.0.10"},
            {"type": "InternalIP", "address": "fd6b::a"},
            {"type": "Hostname", "address": "node0"}
        ]}});
        let out = smp(target, patch);
        assert_eq!(
            out["status"]["addresses"],
            json!([
                {"type": "InternalIP", "address": "198.18.0.10"},
                {"type": "InternalIP", "address": "fd6b::a"},
                {"type": "Hostname", "address": "node0"}
            ])
        );
    }

    #[test]
    fn json_and_merge_patch() {
        let mut v = json!({"a": {"b": 1}, "l": [1, 2]});
        apply_patch(&mut v, &json!([{"op": "replace", "path": "/a/b", "value": 2}, {"op": "add", "path": "/l/-", "value": 3}]), PatchType::Json).unwrap();
        assert_eq!(v, json!({"a": {"b": 2}, "l": [1, 2, 3]}));
        apply_patch(&mut v, &json!({"a": null, "l": [9]}), PatchType::Merge).unwrap();
        assert_eq!(v, json!({"l": [9]}));
        let bad = apply_patch(
            &mut v,
            &json!([{"op": "test", "path": "/l/0", "value": 1}]),
            PatchType::Json,
        );
        assert!(matches!(bad, Err(PatchError::JsonPatchFailed(_))));
        assert!(matches!(
            apply_patch(&mut v, &json!({"$bogus": 1}), PatchType::Strategic),
            Err(PatchError::UnknownDirective(_))
        ));
    }
}
