//! Validation and defaulting of Kubernetes objects, as kube-apiserver does them.
//!
//! Pure functions over typed objects: no I/O, no storage, no allocation of cluster resources
//! (ClusterIPs and NodePorts are allocated by the API server after defaulting). The API server
//! turns the [`FieldError`]s returned here into a `422 Invalid` `Status` with one cause per field.
//!
//! Every kind the API server serves implements [`Admit`]: call [`Admit::default`] (or
//! [`Admit::default_on_update`] with the stored object), then [`Admit::validate`]; [`admit`] does
//! both. Messages are kube-apiserver's own, so `kubectl` users see the errors they know:
//!
//! ```
//! use kubewire_validation::{Context, IpFamily};
//! use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
//!
//! let ctx = Context { service_cluster_ip_families: vec![IpFamily::V4] };
//! let mut svc = Service::default();
//! svc.metadata.name = Some("web".into());
//! svc.spec = Some(ServiceSpec { ports: Some(vec![ServicePort { port: 0, ..Default::default() }]), ..Default::default() });
//! let errors = kubewire_validation::admit(&mut svc, None, &ctx);
//! assert_eq!(errors[0].to_string_with_field(),
//!            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive");
//! ```

use serde_json::Value;

pub mod apps;
pub mod coordination;
pub mod core;
pub mod crd;
pub mod discovery;
pub mod gateway;
pub mod meta;
pub mod networking;
pub mod path;
pub mod policy;

pub use path::Path;

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

    /// The `field.Invalid` error: the value is syntactically or semantically wrong.
    pub fn invalid(path: &Path, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Invalid, Some(value.into()), detail.into())
    }

    /// The `field.Required` error: the field must be set.
    pub fn required(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Required, None, detail.into())
    }

    /// The `field.NotSupported` error: the value is not one of `supported`.
    pub fn not_supported(path: &Path, value: impl Into<Value>, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        let detail = if quoted.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(path, ErrorKind::NotSupported, Some(value.into()), detail)
    }

    /// The `field.Duplicate` error: the value must be unique in its list.
    pub fn duplicate(path: &Path, value: impl Into<Value>) -> Self {
        Self::new(
            path,
            ErrorKind::Duplicate,
            Some(value.into()),
            String::new(),
        )
    }

    /// The `field.Forbidden` error: the field may not be set (or changed) here.
    pub fn forbidden(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Forbidden, None, detail.into())
    }

    /// The `field.TooLong` error: the value is longer than `max` bytes.
    pub fn too_long(path: &Path, max: usize) -> Self {
        Self::new(
            path,
            ErrorKind::TooLong,
            None,
            format!("may not be more than {max} bytes"),
        )
    }

    /// The `field.TooMany` error: the list has `actual` items, more than `max`.
    pub fn too_many(path: &Path, actual: usize, max: usize) -> Self {
        Self::new(
            path,
            ErrorKind::TooMany,
            Some(Value::from(actual)),
            format!("must have at most {max} items"),
        )
    }

    fn new(path: &Path, kind: ErrorKind, bad_value: Option<Value>, detail: String) -> Self {
        FieldError {
            field: path.to_string(),
            kind,
            bad_value,
            detail,
        }
    }

    /// The text kube-apiserver puts in `StatusCause.message`, e.g.
    /// `Invalid value: 0: must be between 1 and 65535, inclusive`.
    pub fn message(&self) -> String {
        let mut s = self.kind_text().to_owned();
        // Like `field.Error.ErrorBody`: these kinds never print the value.
        let omit_value = matches!(
            self.kind,
            ErrorKind::Required | ErrorKind::Forbidden | ErrorKind::TooLong
        );
        if !omit_value && let Some(value) = &self.bad_value {
            s.push_str(": ");
            s.push_str(&format_value(value));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `field: message`, as in the body of a `422` (`spec.ports[0].port: Invalid value: ...`).
    pub fn to_string_with_field(&self) -> String {
        if self.field.is_empty() {
            self.message()
        } else {
            format!("{}: {}", self.field, self.message())
        }
    }

    fn kind_text(&self) -> &'static str {
        match self.kind {
            ErrorKind::Invalid => "Invalid value",
            ErrorKind::Required => "Required value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany => "Too many",
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string_with_field())
    }
}

/// Strings quoted as Go's `%q` does for the common (printable) case; everything else as JSON.
fn format_value(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// An IP family of the cluster's service ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The API spelling: `IPv4` or `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// Parses the API spelling.
    pub fn from_api(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(ip: &std::net::IpAddr) -> Self {
        if ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }

    /// The other family.
    pub fn other(self) -> Self {
        match self {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        }
    }
}

/// What validation and defaulting need to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The families of `--service-cluster-ip-range`, primary first (one or two).
    pub service_cluster_ip_families: Vec<IpFamily>,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            service_cluster_ip_families: vec![IpFamily::V4],
        }
    }
}

impl Context {
    /// The primary service IP family (`IPv4` when nothing is configured).
    pub fn primary_family(&self) -> IpFamily {
        self.service_cluster_ip_families
            .first()
            .copied()
            .unwrap_or(IpFamily::V4)
    }

    /// Whether the cluster has service ranges of both families.
    pub fn is_dual_stack(&self) -> bool {
        self.service_cluster_ip_families.contains(&IpFamily::V4)
            && self.service_cluster_ip_families.contains(&IpFamily::V6)
    }

    /// Whether `family` has a service range.
    pub fn has_family(&self, family: IpFamily) -> bool {
        self.service_cluster_ip_families.contains(&family)
    }
}

/// Defaulting and validation of one kind, as kube-apiserver's registry does it.
///
/// Note: with this trait in scope, `Service::default()` is ambiguous between `Default::default`
/// and [`Admit::default`]; write `<Service as Default>::default()` or `Service { ..Default::default() }`.
pub trait Admit {
    /// Fill in defaults like kube-apiserver's defaulting (on create and update).
    fn default(&mut self, _ctx: &Context) {}

    /// Defaulting on update, when the stored object is known. Most kinds default the same way as on
    /// create; Service also carries over what the user did not repeat (IP family policy,
    /// cluster IPs, node ports), as kube-apiserver does for a PUT.
    fn default_on_update(&mut self, _old: &Self, ctx: &Context) {
        self.default(ctx);
    }

    /// All field errors of `self`; `old` is the stored object on update (immutability checks).
    fn validate(&self, old: Option<&Self>, ctx: &Context) -> FieldErrors;
}

/// Defaults `obj` (as on create, or on update when `old` is given), then validates it.
pub fn admit<T: Admit>(obj: &mut T, old: Option<&T>, ctx: &Context) -> FieldErrors {
    match old {
        Some(old) => obj.default_on_update(old, ctx),
        None => obj.default(ctx),
    }
    obj.validate(old, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_kube_apiserver() {
        let port = Path::new("spec").child("ports").index(0);
        let e = FieldError::invalid(
            &port.child("port"),
            0,
            "must be between 1 and 65535, inclusive",
        );
        assert_eq!(
            e.message(),
            "Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            e.to_string_with_field(),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert_eq!(e.reason(), "FieldValueInvalid");
        assert_eq!(
            FieldError::required(&port, "must specify a port").message(),
            "Required value: must specify a port"
        );
        assert_eq!(FieldError::required(&port, "").message(), "Required value");
        assert_eq!(
            FieldError::not_supported(&port.child("protocol"), "FOO", &["SCTP", "TCP", "UDP"])
                .message(),
            r#"Unsupported value: "FOO": supported values: "SCTP", "TCP", "UDP""#
        );
        assert_eq!(
            FieldError::duplicate(&port, 80).message(),
            "Duplicate value: 80"
        );
        assert_eq!(
            FieldError::forbidden(&port, "may not be set").message(),
            "Forbidden: may not be set"
        );
        assert_eq!(
            FieldError::too_many(&port, 4, 3).message(),
            "Too many: 4: must have at most 3 items"
        );
        assert_eq!(
            FieldError::too_long(&port, 10).message(),
            "Too long: may not be more than 10 bytes"
        );
        assert_eq!(
            FieldError::invalid(&Path::root(), "x", "bad").to_string_with_field(),
            r#"Invalid value: "x": bad"#
        );
    }

    /// Every kind the API server serves is admitted through the one trait.
    #[test]
    fn every_served_kind_implements_admit() {
        fn admits<T: Admit>() {}
        use gateway_api::{
            gatewayclasses::GatewayClass, gateways::Gateway, grpcroutes::GrpcRoute,
            httproutes::HttpRoute, referencegrants::ReferenceGrant,
        };
        use k8s_openapi::api::{
            apps::v1 as apps, coordination::v1 as coordination, core::v1 as core,
            discovery::v1 as discovery, networking::v1 as networking,
        };
        use kubewire_api::policy::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
        admits::<core::Namespace>();
        admits::<core::Node>();
        admits::<core::Pod>();
        admits::<core::Service>();
        admits::<core::Endpoints>();
        admits::<core::ConfigMap>();
        admits::<core::Secret>();
        admits::<core::Event>();
        admits::<apps::Deployment>();
        admits::<apps::ReplicaSet>();
        admits::<apps::StatefulSet>();
        admits::<apps::DaemonSet>();
        admits::<discovery::EndpointSlice>();
        admits::<networking::NetworkPolicy>();
        admits::<networking::Ingress>();
        admits::<networking::IngressClass>();
        admits::<coordination::Lease>();
        admits::<GatewayClass>();
        admits::<Gateway>();
        admits::<HttpRoute>();
        admits::<GrpcRoute>();
        admits::<ReferenceGrant>();
        admits::<AdminNetworkPolicy>();
        admits::<BaselineAdminNetworkPolicy>();
    }

    #[test]
    fn ip_family_spelling() {
        assert_eq!(IpFamily::V4.as_str(), "IPv4");
        assert_eq!(IpFamily::V6.as_str(), "IPv6");
        assert_eq!(IpFamily::from_api("IPv6"), Some(IpFamily::V6));
        assert_eq!(IpFamily::from_api("ipv6"), None);
    }
}
