//! The CNI error object (SPEC §"Error") and the codes this plugin uses.

use serde::Serialize;

/// Error codes. 1-99 are the spec's (SPEC "Error" table); 100+ are this plugin's own.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration (the message names it).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Invalid or missing environment variables (the message names them).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content (stdin is not the JSON we expect).
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (a transient condition, e.g. the IPAM store lock is held too long).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available, cannot ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// CHECK found the container's networking different from what ADD set up.
    pub const CHECK_FAILED: u32 = 100;
    /// No free address left in a pod CIDR.
    pub const POOL_EXHAUSTED: u32 = 101;
    /// ADD: `CNI_IFNAME` already exists in the container (SPEC: ADD "MUST" fail then).
    pub const INTERFACE_EXISTS: u32 = 102;
    /// A kernel (netlink, sysctl) operation failed.
    pub const DATAPATH: u32 = 103;
}

/// The spec's JSON error object, printed on stdout with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: crate::version::CURRENT.to_string(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// Reports the error in the version the request used (when it is one we speak).
    pub fn for_version(mut self, version: &str) -> CniError {
        if crate::version::SUPPORTED.contains(&version) {
            self.cni_version = version.to_string();
        }
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"1.1.0","code":{},"msg":"error"}}"#,
                self.code
            )
        })
    }
}

impl From<kubewire_datapath::Error> for CniError {
    fn from(e: kubewire_datapath::Error) -> CniError {
        CniError::new(code::DATAPATH, e.to_string())
    }
}
