//! CNI spec versions this plugin speaks and what each allows.

use crate::error::{CniError, code};

/// The version of the spec this plugin implements.
pub const CURRENT: &str = "1.1.0";
/// Configuration versions accepted. 0.4.0 is the first with CHECK and `prevResult` on DEL;
/// 1.1.0 adds GC and STATUS (SPEC "Released versions").
pub const SUPPORTED: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// A supported spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Parses a configuration's `cniVersion`; unknown or older versions are error 1.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        match s {
            "0.4.0" => Ok(Version::V0_4_0),
            "1.0.0" => Ok(Version::V1_0_0),
            "1.1.0" => Ok(Version::V1_1_0),
            other => Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "incompatible CNI version: the configuration asks for {other:?}, this plugin \
                     supports {}",
                    SUPPORTED.join(", ")
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn has_gc_and_status(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Results before 1.0.0 carry `ips[].version`.
    pub fn result_has_ip_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// Interface `mtu` (and the other new result fields) exist from 1.1.0 on.
    pub fn result_has_interface_mtu(self) -> bool {
        self >= Version::V1_1_0
    }
}

/// The VERSION command's answer (SPEC §"VERSION").
pub fn version_info() -> serde_json::Value {
    serde_json::json!({ "cniVersion": CURRENT, "supportedVersions": SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        for s in SUPPORTED {
            assert_eq!(Version::parse(s).unwrap().as_str(), s);
        }
        for bad in ["0.3.1", "0.2.0", "2.0.0", "", "1.1"] {
            assert_eq!(Version::parse(bad).unwrap_err().code, 1, "{bad}");
        }
        assert!(Version::V1_1_0.has_gc_and_status());
        assert!(!Version::V1_0_0.has_gc_and_status());
        assert!(Version::V0_4_0.result_has_ip_version());
        assert!(!Version::V1_0_0.result_has_ip_version());
    }

    #[test]
    fn version_info_lists_supported() {
        let v = version_info();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 3);
    }
}
