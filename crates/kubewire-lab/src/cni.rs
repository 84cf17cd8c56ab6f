//! Calling CNI plugins as a container runtime does: the lexically first network configuration in
//! the conf dir, each plugin of the list in order on ADD (each gets the previous result as
//! `prevResult`), in reverse order on DEL.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{LabError, io};

pub struct CniRuntime {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
}

/// What ADD returned: the final result (kept for DEL's `prevResult`) and the pod's addresses.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub result: Value,
    pub ips: Vec<IpAddr>,
}

struct NetworkList {
    name: String,
    version: String,
    plugins: Vec<Value>,
}

impl CniRuntime {
    pub fn new(conf_dir: impl Into<PathBuf>, bin_dirs: Vec<PathBuf>) -> Self {
        Self {
            conf_dir: conf_dir.into(),
            bin_dirs,
        }
    }

    fn load(&self) -> Result<NetworkList, LabError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .map_err(io(format!(
                "reading CNI conf dir {}",
                self.conf_dir.display()
            )))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
            })
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .ok_or_else(|| LabError::NoCniConfig(self.conf_dir.clone()))?;
        let bad = |reason: String| LabError::BadCniConfig {
            path: path.clone(),
            reason,
        };
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let name = doc["name"]
            .as_str()
            .ok_or_else(|| bad("no \"name\"".into()))?
            .to_string();
        let version = doc["cniVersion"].as_str().unwrap_or("1.1.0").to_string();
        // A single-plugin `.conf` is a list of one.
        let plugins = match doc["plugins"].as_array() {
            Some(list) => list.clone(),
            None => vec![doc.clone()],
        };
        if plugins.is_empty() || plugins.iter().any(|p| p["type"].as_str().is_none()) {
            return Err(bad("every plugin needs a \"type\"".into()));
        }
        Ok(NetworkList {
            name,
            version,
            plugins,
        })
    }

    fn binary(&self, plugin: &str) -> Result<PathBuf, LabError> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| LabError::PluginNotFound(plugin.to_string()))
    }

    fn invoke(
        &self,
        command: &'static str,
        list: &NetworkList,
        plugin: &Value,
        env: &[(&str, &str)],
        prev: Option<&Value>,
    ) -> Result<Value, LabError> {
        let plugin_type = plugin["type"].as_str().unwrap_or_default();
        let mut conf = plugin.clone();
        conf["name"] = json!(list.name);
        conf["cniVersion"] = json!(list.version);
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let cni_path = std::env::join_paths(&self.bin_dirs).map_err(|e| LabError::Io {
            context: "CNI_PATH".into(),
            source: std::io::Error::other(e),
        })?;
        let mut child = Command::new(self.binary(plugin_type)?)
            .env_clear()
            .envs(env.iter().copied())
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", cni_path)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("running CNI plugin {plugin_type}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(conf.to_string().as_bytes())
                .map_err(io("writing the CNI configuration"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(io(format!("waiting for CNI plugin {plugin_type}")))?;
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            return Err(LabError::Plugin {
                plugin: plugin_type.to_string(),
                command,
                code: parsed["code"].as_u64().unwrap_or(999),
                msg: parsed["msg"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string()),
            });
        }
        Ok(parsed)
    }

    /// ADD from the calling thread (whose network namespace is the node's).
    pub fn add(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<Attachment, LabError> {
        let list = self.load()?;
        let netns = netns.to_string_lossy();
        let env = [
            ("CNI_CONTAINERID", container_id),
            ("CNI_NETNS", netns.as_ref()),
            ("CNI_IFNAME", ifname),
        ];
        let mut result: Option<Value> = None;
        for plugin in &list.plugins {
            result = Some(self.invoke("ADD", &list, plugin, &env, result.as_ref())?);
        }
        let result = result.unwrap_or(Value::Null);
        let ips = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
            .collect();
        Ok(Attachment { result, ips })
    }

    /// DEL, best effort per plugin: every plugin is called even if one fails; the first error is
    /// returned.
    pub fn del(
        &self,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
        prev: Option<&Value>,
    ) -> Result<(), LabError> {
        let list = self.load()?;
        let netns = netns
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let env = [
            ("CNI_CONTAINERID", container_id),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", ifname),
        ];
        let mut first_error = None;
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.invoke("DEL", &list, plugin, &env, prev) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
