//! Field selectors (`?fieldSelector=metadata.name=web,spec.nodeName!=node-1`), limited per
//! kind to the fields kube-apiserver supports for it.

use serde_json::Value;

use crate::registry::ResourceId;
use crate::store::Object;

#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

/// The fields each kind may be selected on besides `metadata.name` and `metadata.namespace`.
fn supported(r: ResourceId) -> &'static [&'static str] {
    match r.info().kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Secret" => &["type"],
        "Namespace" => &["status.phase"],
        "Node" => &["spec.unschedulable"],
        "ReplicaSet" => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(input: &str, r: ResourceId) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for clause in input.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = clause.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = clause.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = clause.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{input}'; can't understand '{clause}'"
                ));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace")
                && !supported(r).contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            requirements.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self { requirements })
    }

    pub fn matches(&self, o: &Object) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        // Only fields outside the indexed ones need the object parsed.
        let mut parsed: Option<Value> = None;
        self.requirements.iter().all(|(field, equal, want)| {
            let actual: String = match field.as_str() {
                "metadata.name" => o.key.name.clone(),
                "metadata.namespace" => o.key.namespace.clone(),
                "spec.nodeName" => o.node_name.clone().unwrap_or_default(),
                path => {
                    let v = parsed.get_or_insert_with(|| o.value());
                    let leaf = path.split('.').fold(&*v, |acc, k| &acc[k]);
                    match leaf {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    }
                }
            };
            (actual == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unsupported_fields() {
        let pods = ResourceId::find("", "v1", "pods").unwrap();
        let svcs = ResourceId::find("", "v1", "services").unwrap();
        assert!(FieldSelector::parse("spec.nodeName=n1,metadata.name!=x", pods).is_ok());
        let err = FieldSelector::parse("spec.nodeName=n1", svcs).unwrap_err();
        assert_eq!(err, "field label not supported: spec.nodeName");
        assert!(FieldSelector::parse("garbage", pods).is_err());
    }
}
