//! Discovery documents: `/version`, `/api`, `/apis`, the resource list of each group version,
//! and the OpenAPI v3 index that kubectl reads to learn which kinds the server validates
//! itself (the `fieldValidation` parameter on PATCH), so it skips client-side schema checks.

use serde_json::{Value, json};

use crate::registry::{self, ResourceId, ResourceType};

/// The Kubernetes API version whose behaviour this server follows.
pub const KUBE_MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0+kubewire-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs, "preferredVersion": vs[0]})
}

pub fn groups() -> Value {
    let groups: Vec<Value> = registry::groups()
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(name: &str) -> Option<Value> {
    registry::groups()
        .iter()
        .find(|(g, _)| *g == name)
        .map(|(g, vs)| group_doc(g, vs))
}

fn in_group_version(r: &ResourceType, group: &str, version: &str) -> bool {
    r.group == group && r.version == version
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for id in ResourceId::all() {
        let r = id.info();
        if !in_group_version(r, group, version) {
            continue;
        }
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        if r.has_status() {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if r.has_scale() {
            resources.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if r.kind == "Pod" {
            resources.push(json!({"name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
        }
        if r.kind == "Namespace" {
            resources.push(json!({"name": "namespaces/finalize", "singularName": "", "namespaced": false, "kind": "Namespace", "verbs": ["update"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group version's document is.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(&str, &str)> = ResourceId::all()
        .map(|r| (r.info().group, r.info().version))
        .collect();
    gvs.dedup();
    gvs.sort();
    gvs.dedup();
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", env!("CARGO_PKG_VERSION"))}));
    }
    json!({"paths": paths})
}

/// The OpenAPI v3 document of one group version: every object path with its verbs, each PATCH
/// marked with its group-version-kind and the `fieldValidation` parameter the server honours.
pub fn openapi_v3(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for id in ResourceId::all() {
        let r = id.info();
        if !in_group_version(r, group, version) {
            continue;
        }
        let prefix = format!("/{}", gv_path(group, version));
        let collection = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op = |action: &str, with_fv: bool| {
            let mut o = json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}});
            if with_fv {
                o["parameters"] = json!([field_validation]);
            }
            o
        };
        paths.insert(collection.clone(), json!({"get": op("list", false), "post": op("post", true), "delete": op("deletecollection", false)}));
        paths.insert(format!("{collection}/{{name}}"), json!({"get": op("get", false), "put": op("put", true), "patch": op("patch", true), "delete": op("delete", false)}));
        if r.has_status() {
            paths.insert(format!("{collection}/{{name}}/status"), json!({"get": op("get", false), "put": op("put", true), "patch": op("patch", true)}));
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_patch_path_with_field_validation() {
        for id in ResourceId::all() {
            let r = id.info();
            let doc = openapi_v3(r.group, r.version).unwrap();
            let found = doc["paths"].as_object().unwrap().values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"]["kind"] == r.kind
                    && p["patch"]["parameters"][0]["name"] == "fieldValidation"
            });
            assert!(found, "{} has no PATCH path", r.kind);
        }
        assert!(
            resource_list("apps", "v1").unwrap()["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "deployments/status")
        );
        assert!(resource_list("nope", "v1").is_none());
    }
}
