//! coordination/v1 Lease (`pkg/apis/coordination/validation`).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};

use crate::meta::{self, NameRule};
use crate::{Admit, Context, FieldError, FieldErrors, Path};

/// KEP-4355 (coordinated leader election): the only strategy.
const STRATEGIES: [&str; 1] = ["OldestEmulationVersion"];

impl Admit for Lease {
    fn validate(&self, old: Option<&Self>, _ctx: &Context) -> FieldErrors {
        let mut errs = meta::validate_meta(
            &self.metadata,
            old.map(|o| &o.metadata),
            true,
            NameRule::Dns1123Subdomain,
        );
        let empty = LeaseSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let path = Path::new("spec");
        if let Some(duration) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
            errs.push(FieldError::invalid(
                &path.child("leaseDurationSeconds"),
                duration,
                "must be greater than 0",
            ));
        }
        if let Some(transitions) = spec.lease_transitions {
            errs.extend(meta::validate_nonnegative(
                &path.child("leaseTransitions"),
                i64::from(transitions),
            ));
        }
        let strategy = spec.strategy.as_deref().unwrap_or("");
        if !strategy.is_empty() {
            errs.extend(meta::validate_enum(
                &path.child("strategy"),
                strategy,
                &STRATEGIES,
            ));
        }
        if spec
            .preferred_holder
            .as_deref()
            .is_some_and(|h| !h.is_empty())
            && strategy.is_empty()
        {
            errs.push(FieldError::forbidden(
                &path.child("preferredHolder"),
                "may only be specified if `strategy` is defined",
            ));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::*;
    use serde_json::json;

    fn lease(spec: serde_json::Value) -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "kube-controller-manager", "namespace": "kube-system"}, "spec": spec})).expect("lease")
    }

    #[test]
    fn leases() {
        let ctx = Context::default();
        assert!(
            lease(
                json!({"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 2})
            )
            .validate(None, &ctx)
            .is_empty()
        );
        let errs = lease(
            json!({"leaseDurationSeconds": 0, "leaseTransitions": -1, "preferredHolder": "b"}),
        )
        .validate(None, &ctx);
        let got: Vec<_> = errs.iter().map(|e| (e.field.as_str(), e.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("spec.leaseDurationSeconds", Invalid),
                ("spec.leaseTransitions", Invalid),
                ("spec.preferredHolder", Forbidden)
            ]
        );
        let errs = lease(json!({"strategy": "Newest"})).validate(None, &ctx);
        assert_eq!(errs[0].field, "spec.strategy");
    }
}
