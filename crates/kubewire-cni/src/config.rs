//! The plugin's inputs: environment variables (SPEC §2 "Parameters") and the network
//! configuration on stdin (SPEC §1, §3 "Deriving request configuration").

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CniError, code};
use crate::result::{CniResult, Dns};
use crate::version::Version;

/// Default directory of the IPAM store.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kubewire/cni";

/// The CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!(
                        "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, GC, STATUS"
                    ),
                ));
            }
        })
    }
}

/// The request's environment, validated for its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// Set for ADD, DEL, CHECK.
    pub container_id: String,
    /// Required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// Set for ADD, DEL, CHECK.
    pub ifname: String,
}

impl Env {
    /// Reads and validates the environment through `get` (so tests need not touch the process
    /// environment). Missing or malformed variables are error 4 naming the variable.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = nonempty("CNI_COMMAND")
            .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set"))?;
        let command = Command::parse(&command)?;
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname: String::new(),
        };
        // SPEC §2: ADD and CHECK need CONTAINERID, NETNS and IFNAME; DEL needs CONTAINERID and
        // IFNAME; VERSION, GC and STATUS need none of them. (CNI_PATH is only needed by plugins
        // that delegate; this one never does, so it is never required.)
        if matches!(command, Command::Add | Command::Del | Command::Check) {
            let missing = |k: &str| {
                CniError::new(
                    code::INVALID_ENV,
                    format!("{k} is required for {command:?}"),
                )
            };
            env.container_id =
                nonempty("CNI_CONTAINERID").ok_or_else(|| missing("CNI_CONTAINERID"))?;
            validate_container_id(&env.container_id)?;
            env.ifname = nonempty("CNI_IFNAME").ok_or_else(|| missing("CNI_IFNAME"))?;
            validate_ifname(&env.ifname)?;
            if command != Command::Del && env.netns.is_none() {
                return Err(missing("CNI_NETNS"));
            }
        }
        Ok(env)
    }
}

/// SPEC §2: a container ID starts with an alphanumeric, then alphanumerics, `_`, `.` or `-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_CONTAINERID {id:?} is invalid: it must start with a letter or digit and \
                 contain only letters, digits, '_', '.' and '-'"
            ),
        ))
    }
}

/// A name the kernel accepts for an interface: 1-15 bytes, no `/`, `:` or whitespace, not `.`
/// or `..` (the SPEC requires an error when the plugin cannot use `CNI_IFNAME`).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_IFNAME {name:?} is not a usable interface name (1-15 bytes, no '/', ':' or \
                 whitespace)"
            ),
        ))
    }
}

/// An attachment in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration of this plugin (one entry of a conflist, as the runtime hands it
/// over, with `cniVersion` and `name` injected).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub version: Version,
    /// The network name (keys the IPAM store).
    pub name: String,
    /// One CIDR per IP family, network-aligned.
    pub pod_cidrs: Vec<IpNet>,
    pub data_dir: PathBuf,
    pub mtu: Option<u32>,
    pub dns: Option<Dns>,
    pub prev_result: Option<CniResult>,
    /// GC only: `cni.dev/valid-attachments` (or its first name, `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// The `cniVersion` of a configuration, if stdin is JSON that has one (used to answer errors
/// in the caller's version).
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    /// Parses stdin. Not JSON (or not an object): 6. Missing or unsupported `cniVersion`: 1.
    /// Anything else wrong: 7, naming the field.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("cannot decode the network configuration on stdin as JSON: {e}"),
            )
        })?;
        let obj = v.as_object().ok_or_else(|| {
            CniError::new(
                code::DECODE,
                "the network configuration on stdin is not a JSON object",
            )
        })?;
        let version = match obj.get("cniVersion") {
            Some(Value::String(s)) => Version::parse(s)?,
            Some(_) => return Err(invalid("cniVersion must be a string")),
            None => {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    "the network configuration has no cniVersion (this plugin supports 0.4.0, \
                     1.0.0, 1.1.0)",
                ));
            }
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(invalid("name is required and must be a string")),
        };
        validate_network_name(&name)?;
        if let Some(ipam) = obj.get("ipam")
            && !(ipam.is_null() || ipam.as_object().is_some_and(serde_json::Map::is_empty))
        {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!(
                    "unsupported field ipam = {ipam}: kubewire-cni allocates from podCIDRs itself \
                     and delegates to no IPAM plugin"
                ),
            ));
        }

        let pod_cidrs = parse_pod_cidrs(obj.get("podCIDRs"))?;
        let data_dir = match obj.get("dataDir") {
            None | Some(Value::Null) => PathBuf::from(DEFAULT_DATA_DIR),
            Some(Value::String(s)) if s.starts_with('/') => PathBuf::from(s),
            Some(other) => {
                return Err(invalid(format!(
                    "dataDir must be an absolute path, got {other}"
                )));
            }
        };
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(m) => {
                let m = m
                    .as_u64()
                    .ok_or_else(|| invalid(format!("mtu must be a positive integer, got {m}")))?;
                let min = if pod_cidrs.iter().any(|c| matches!(c, IpNet::V6(_))) {
                    1280 // IPv6 minimum link MTU (RFC 8200 §5)
                } else {
                    576
                };
                if !(min..=65535).contains(&m) {
                    return Err(invalid(format!(
                        "mtu {m} is out of range {min}-65535 for these podCIDRs"
                    )));
                }
                Some(u32::try_from(m).unwrap_or(65535))
            }
        };
        let dns = match obj.get("dns") {
            None | Some(Value::Null) => None,
            Some(d) => Some(
                serde_json::from_value::<Dns>(d.clone())
                    .map_err(|e| invalid(format!("dns: {e}")))?,
            ),
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p) => Some(serde_json::from_value::<CniResult>(p.clone()).map_err(|e| {
                CniError::new(code::DECODE, format!("cannot decode prevResult: {e}"))
            })?),
        };
        // The key was renamed after the 1.1.0 tag; libcni sends both (#1101).
        let attachments = obj
            .get("cni.dev/valid-attachments")
            .or_else(|| obj.get("cni.dev/attachments"));
        let valid_attachments = match attachments {
            None => None,
            Some(Value::Null) => Some(Vec::new()),
            Some(a) => Some(
                serde_json::from_value::<Vec<Attachment>>(a.clone())
                    .map_err(|e| invalid(format!("cni.dev/valid-attachments: {e}")))?,
            ),
        };
        Ok(NetConf {
            version,
            name,
            pod_cidrs,
            data_dir,
            mtu,
            dns,
            prev_result,
            valid_attachments,
        })
    }
}

/// SPEC §1: the network name starts with an alphanumeric, then alphanumerics, `_`, `.`, `-`.
fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "network name {name:?} is invalid: it must start with a letter or digit and contain \
             only letters, digits, '_', '.' and '-'"
        )))
    }
}

fn parse_pod_cidrs(v: Option<&Value>) -> Result<Vec<IpNet>, CniError> {
    let list = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(invalid(
                "podCIDRs is required: a list of one or two CIDRs, one per IP family",
            ));
        }
    };
    if list.len() > 2 {
        return Err(invalid(format!(
            "podCIDRs has {} entries; at most two (one IPv4, one IPv6)",
            list.len()
        )));
    }
    let mut out = Vec::new();
    let mut families = BTreeSet::new();
    for (i, item) in list.iter().enumerate() {
        let s = item
            .as_str()
            .ok_or_else(|| invalid(format!("podCIDRs[{i}] must be a string, got {item}")))?;
        let net: IpNet = s
            .parse()
            .map_err(|_| invalid(format!("podCIDRs[{i}] {s:?} is not a CIDR")))?;
        if net.addr() != net.network() {
            return Err(invalid(format!(
                "podCIDRs[{i}] {s:?} has host bits set (did you mean {}?)",
                net.trunc()
            )));
        }
        let (family, max) = match net {
            IpNet::V4(_) => ("IPv4", 30),
            IpNet::V6(_) => ("IPv6", 126),
        };
        if net.prefix_len() > max {
            return Err(invalid(format!(
                "podCIDRs[{i}] {s:?} is too small: an {family} pod CIDR needs a prefix of /{max} \
                 or shorter"
            )));
        }
        if !families.insert(family) {
            return Err(invalid(format!(
                "podCIDRs has two {family} CIDRs; give one per IP family"
            )));
        }
        out.push(net);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn conf(extra: &str) -> Result<NetConf, CniError> {
        let s = format!(
            r#"{{"cniVersion":"1.1.0","name":"kubewire","type":"kubewire-cni",
                "podCIDRs":["10.244.1.0/24","fd00:10:244:1::/64"]{extra}}}"#
        );
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn parses_a_full_config() {
        let c = conf(
            r#","dataDir":"/tmp/x","mtu":1450,"dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]},
               "runtimeConfig":{"foo":1},"args":{"x":"y"}"#,
        )
        .unwrap();
        assert_eq!(c.version, Version::V1_1_0);
        assert_eq!(c.pod_cidrs.len(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.dns.unwrap().nameservers, vec!["10.96.0.10".to_string()]);
        assert!(c.valid_attachments.is_none());
        let d = conf("").unwrap();
        assert_eq!(d.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn error_codes() {
        let code_of = |s: &str| NetConf::parse(s.as_bytes()).unwrap_err().code;
        assert_eq!(code_of("not json"), 6);
        assert_eq!(code_of("[1,2]"), 6);
        assert_eq!(code_of(r#"{"name":"n","podCIDRs":["10.0.0.0/24"]}"#), 1);
        assert_eq!(
            code_of(r#"{"cniVersion":"0.3.1","name":"n","podCIDRs":["10.0.0.0/24"]}"#),
            1
        );
        assert_eq!(
            code_of(r#"{"cniVersion":"1.0.0","podCIDRs":["10.0.0.0/24"]}"#),
            7
        );
        assert_eq!(
            code_of(r#"{"cniVersion":"1.0.0","name":"-x","podCIDRs":["10.0.0.0/24"]}"#),
            7
        );
        assert_eq!(code_of(r#"{"cniVersion":"1.0.0","name":"n"}"#), 7);
        assert_eq!(
            code_of(r#"{"cniVersion":"1.0.0","name":"n","podCIDRs":[]}"#),
            7
        );
        for bad in [
            r#"["10.0.0.1/24"]"#,
            r#"["10.0.0.0/31"]"#,
            r#"["fd00::/127"]"#,
            r#"["10.0.0.0/24","10.1.0.0/24"]"#,
            r#"["nope"]"#,
            r#"[1]"#,
            r#"["10.0.0.0/24","fd00::/64","10.2.0.0/24"]"#,
        ] {
            let s = format!(r#"{{"cniVersion":"1.0.0","name":"n","podCIDRs":{bad}}}"#);
            assert_eq!(code_of(&s), 7, "{bad}");
        }
        assert_eq!(conf(r#","mtu":100"#).unwrap_err().code, 7);
        assert_eq!(conf(r#","mtu":1000"#).unwrap_err().code, 7, "v6 needs 1280");
        assert_eq!(conf(r#","mtu":"big""#).unwrap_err().code, 7);
        assert_eq!(conf(r#","dataDir":"relative/dir""#).unwrap_err().code, 7);
        assert_eq!(conf(r#","dns":{"nameservers":"x"}"#).unwrap_err().code, 7);
        assert_eq!(
            conf(r#","ipam":{"type":"host-local"}"#).unwrap_err().code,
            2
        );
        assert!(conf(r#","ipam":{}"#).is_ok());
        assert_eq!(conf(r#","prevResult":{"ips":"x"}"#).unwrap_err().code, 6);
    }

    #[test]
    fn gc_attachments_both_key_names() {
        let c =
            conf(r#","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]"#).unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "a");
        let c = conf(r#","cni.dev/attachments":[{"containerID":"b","ifname":"eth0"}]"#).unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "b");
        let c = conf(r#","cni.dev/valid-attachments":null"#).unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
    }

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Env::parse(|k| m.get(k).cloned())
    }

    #[test]
    fn env_validation() {
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1.2_3"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(ok.command, Command::Add);
        assert_eq!(env(&[]).unwrap_err().code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "ADD")]).unwrap_err().code, 4);
        let no_netns = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(env(&no_netns).unwrap_err().code, 4);
        let mut del = no_netns;
        del[0] = ("CNI_COMMAND", "DEL");
        assert!(env(&del).is_ok(), "DEL without CNI_NETNS is fine");
        for bad_id in ["-abc", "a b", "a/b", ""] {
            let e = env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", bad_id),
                ("CNI_IFNAME", "eth0"),
            ]);
            assert_eq!(e.unwrap_err().code, 4, "{bad_id:?}");
        }
        for bad_if in ["a/b", "0123456789abcdef", ".", "a b", "e:1"] {
            let e = env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", bad_if),
            ]);
            assert_eq!(e.unwrap_err().code, 4, "{bad_if:?}");
        }
        assert!(env(&[("CNI_COMMAND", "STATUS")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }
}
