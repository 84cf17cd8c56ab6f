//! The errors kube-apiserver produces for custom resources: OpenAPI schema violations
//! (`spec.priority in body should be less than or equal to 1000`) and CEL rule failures
//! (`Invalid value: "object": <rule message>`). Used by the Gateway API and policy kinds.

use crate::{FieldError, FieldErrors, Path};

pub fn min_error(path: &Path, value: i64, min: i64) -> Option<FieldError> {
    (value < min).then(|| {
        FieldError::invalid(
            path,
            value,
            format!("{path} in body should be greater than or equal to {min}"),
        )
    })
}

pub fn max_error(path: &Path, value: i64, max: i64) -> Option<FieldError> {
    (value > max).then(|| {
        FieldError::invalid(
            path,
            value,
            format!("{path} in body should be less than or equal to {max}"),
        )
    })
}

pub fn range_errors(path: &Path, value: i64, min: i64, max: i64) -> FieldErrors {
    min_error(path, value, min)
        .into_iter()
        .chain(max_error(path, value, max))
        .collect()
}

pub fn max_items(path: &Path, len: usize, max: usize) -> FieldErrors {
    if len > max {
        vec![FieldError::too_many(path, len, max)]
    } else {
        Vec::new()
    }
}

pub fn min_items(path: &Path, len: usize, min: usize) -> FieldErrors {
    if len < min {
        vec![FieldError::invalid(
            path,
            len,
            format!("{path} in body should have at least {min} items"),
        )]
    } else {
        Vec::new()
    }
}

pub fn pattern_error(path: &Path, value: &str, pattern: &str) -> FieldError {
    FieldError::invalid(
        path,
        value,
        format!("{path} in body should match '{pattern}'"),
    )
}

/// A CEL `x-kubernetes-validations` failure on an object or list.
pub fn rule_error(path: &Path, on: &str, message: &str) -> FieldError {
    FieldError::invalid(path, on, message)
}

pub fn required_string(path: &Path, value: &str) -> FieldErrors {
    if value.is_empty() {
        vec![FieldError::required(path, "")]
    } else {
        Vec::new()
    }
}

/// `minProperties: 1` + `maxProperties: 1`: a union with exactly one member set.
pub fn exactly_one_property(path: &Path, set: usize) -> FieldErrors {
    match set {
        0 => vec![FieldError::invalid(
            path,
            set,
            format!("{path} in body should have at least 1 properties"),
        )],
        1 => Vec::new(),
        n => vec![FieldError::invalid(
            path,
            n,
            format!("{path} in body should have at most 1 properties"),
        )],
    }
}

/// `maxLength`.
pub fn max_length(path: &Path, value: &str, max: usize) -> FieldErrors {
    if value.chars().count() > max {
        vec![FieldError::too_long(path, max)]
    } else {
        Vec::new()
    }
}
