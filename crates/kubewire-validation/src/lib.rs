//! Validation and defaulting of Kubernetes objects, as kube-apiserver does them.
//!
//! Pure functions over typed objects: no I/O, no storage, no allocation of cluster resources
//! (ClusterIPs and NodePorts are allocated by the API server after defaulting). The API server
//! turns the [`FieldError`]s returned here into a `422 Invalid` `Status` with one cause per field.

use serde_json::Value;

/// What is wrong with a field, as `k8s.io/apimachinery/pkg/util/validation/field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Invalid,
    Required,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
}

/// One offending field: `spec.ports[0].port`, what is wrong with it and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: ErrorKind,
    pub bad_value: Option<Value>,
    pub detail: String,
}

pub type FieldErrors = Vec<FieldError>;

impl FieldError {
    /// The `reason` of a `StatusCause`, e.g. `FieldValueInvalid`.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany => "FieldValueTooMany",
        }
    }
}
