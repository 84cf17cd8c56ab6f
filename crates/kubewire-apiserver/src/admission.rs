//! Admission of a written object: decode it into its typed form, default it and validate it.
//!
//! Decoding through the typed structs (k8s-openapi, gateway-api, ours) is what makes the stored
//! JSON well-formed: a field of the wrong type is a `400 BadRequest`, like kube's decoder, and
//! fields the type does not know are pruned (or, under `fieldValidation=Strict`, rejected).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use kubewire_validation::{Admit, Context, FieldError, FieldErrors, IpFamily};

#[derive(Debug)]
pub enum AdmitError {
    /// The body does not decode into the kind's type.
    Decode(String),
    /// The object decodes but is invalid: one entry per offending field.
    Invalid(FieldErrors),
}

pub fn admit_typed<K>(
    value: &mut Value,
    old: Option<&Value>,
    ctx: &Context,
) -> Result<(), AdmitError>
where
    K: DeserializeOwned + Serialize + Admit,
{
    let mut typed: K =
        serde_json::from_value(value.clone()).map_err(|e| AdmitError::Decode(e.to_string()))?;
    let old_typed: Option<K> = match old {
        Some(o) => {
            Some(serde_json::from_value(o.clone()).map_err(|e| AdmitError::Decode(e.to_string()))?)
        }
        None => None,
    };
    let errors = kubewire_validation::admit(&mut typed, old_typed.as_ref(), ctx);
    if !errors.is_empty() {
        return Err(AdmitError::Invalid(errors));
    }
    *value = serde_json::to_value(&typed).map_err(|e| AdmitError::Decode(e.to_string()))?;
    Ok(())
}

/// Paths of fields in `input` that did not survive decoding into `decoded` (unknown fields).
pub fn unknown_fields(input: &Value, decoded: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, decoded, String::new(), &mut out);
    out
}

fn walk_unknown(input: &Value, decoded: &Value, path: String, out: &mut Vec<String>) {
    match (input, decoded) {
        (Value::Object(i), Value::Object(d)) => {
            for (k, v) in i {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match d.get(k) {
                    Some(dv) => walk_unknown(v, dv, child, out),
                    None if v.is_null() => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(i), Value::Array(d)) => {
            for (n, (iv, dv)) in i.iter().zip(d).enumerate() {
                walk_unknown(iv, dv, format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields() {
        let input = json!({"spec": {"ports": [{"port": 80, "bogus": 1}], "typo": true, "n": null}});
        let decoded = json!({"spec": {"ports": [{"port": 80}]}});
        assert_eq!(
            unknown_fields(&input, &decoded),
            vec!["spec.ports[0].bogus", "spec.typo"]
        );
    }
}
