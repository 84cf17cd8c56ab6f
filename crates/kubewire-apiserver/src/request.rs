//! Where a request goes: the REST path grammar of kube-apiserver, parsed into a [`Target`].

use crate::registry::ResourceId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Version,
    Health,
    /// `/api`: the legacy group's versions.
    CoreVersions,
    /// `/apis`: all named groups.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version.
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiV3Root,
    OpenApiV3 {
        group: String,
        version: String,
    },
    OpenApiV2,
    Resource(ResourceTarget),
}

/// A request on a kind: a collection (`name: None`) or one object, maybe a subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTarget {
    pub resource: ResourceId,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Some(Target::Version),
        ["healthz" | "livez" | "readyz", ..] => Some(Target::Health),
        ["api"] => Some(Target::CoreVersions),
        ["apis"] => Some(Target::Groups),
        ["apis", group] => Some(Target::Group(group.to_string())),
        ["api", "v1"] => Some(Target::ResourceList {
            group: String::new(),
            version: "v1".into(),
        }),
        ["apis", group, version] => Some(Target::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        }),
        ["openapi", "v2"] => Some(Target::OpenApiV2),
        ["openapi", "v3"] => Some(Target::OpenApiV3Root),
        ["openapi", "v3", "api", "v1"] => Some(Target::OpenApiV3 {
            group: String::new(),
            version: "v1".into(),
        }),
        ["openapi", "v3", "apis", group, version] => Some(Target::OpenApiV3 {
            group: group.to_string(),
            version: version.to_string(),
        }),
        ["api", "v1", rest @ ..] => parse_resource("", "v1", rest),
        ["apis", group, version, rest @ ..] => parse_resource(group, version, rest),
        _ => None,
    }
}

fn parse_resource(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let find = |plural: &str| ResourceId::find(group, version, plural);
    let target = |resource, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Some(Target::Resource(ResourceTarget {
            resource,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        }))
    };
    match rest {
        // /namespaces/{ns}/{resource}[/{name}[/{sub}]] for namespaced kinds …
        ["namespaces", ns, plural, tail @ ..]
            if find(plural).is_some_and(|r| r.info().namespaced) =>
        {
            let r = find(plural)?;
            match tail {
                [] => target(r, Some(ns), None, None),
                [name] => target(r, Some(ns), Some(name), None),
                [name, sub] => target(r, Some(ns), Some(name), Some(sub)),
                _ => None,
            }
        }
        // … otherwise /{resource}[/{name}[/{sub}]]: cluster-scoped kinds (Namespace itself
        // included) and lists of namespaced kinds across all namespaces.
        [plural, tail @ ..] => {
            let r = find(plural)?;
            match tail {
                [] => target(r, None, None, None),
                [name] if !r.info().namespaced => target(r, None, Some(name), None),
                [name, sub] if !r.info().namespaced => target(r, None, Some(name), Some(sub)),
                _ => None,
            }
        }
        [] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourceTarget {
        match parse_path(path) {
            Some(Target::Resource(t)) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn namespaced_paths() {
        let t = res("/api/v1/namespaces/default/pods/web-0/status");
        assert_eq!(t.resource.info().plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web-0"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let all = res("/apis/apps/v1/deployments");
        assert_eq!(all.namespace, None);
        assert_eq!(all.name, None);
    }

    #[test]
    fn namespace_objects_are_cluster_scoped() {
        let t = res("/api/v1/namespaces/kube-system");
        assert_eq!(t.resource.info().plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        let f = res("/api/v1/namespaces/x/finalize");
        assert_eq!(f.subresource.as_deref(), Some("finalize"));
    }

    #[test]
    fn discovery_and_unknown() {
        assert_eq!(parse_path("/apis/apps"), Some(Target::Group("apps".into())));
        assert_eq!(
            parse_path("/openapi/v3/apis/apps/v1"),
            Some(Target::OpenApiV3 {
                group: "apps".into(),
                version: "v1".into()
            })
        );
        assert_eq!(parse_path("/api/v1/widgets"), None);
        assert_eq!(parse_path("/api/v1/namespaces/default/pods/a/b/c"), None);
        assert_eq!(parse_path("/api/v1/pods/name"), None);
    }
}
