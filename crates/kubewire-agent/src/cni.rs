//! The CNI network configuration the agent writes for `kubewire-cni` once the node has pod
//! CIDRs: a `.conflist` in the runtime's CNI config dir, replaced atomically (temp file, fsync,
//! rename) so a runtime never reads half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{Value, json};

/// File name of the conflist (runtimes take the first file in lexical order).
pub const CONFLIST_NAME: &str = "10-kubewire.conflist";
/// Name of the network (keys the plugin's IPAM store).
pub const NETWORK_NAME: &str = "kubewire";

/// The conflist for these pod CIDRs, IPAM store dir and pod MTU, with the fields as
/// `kubewire_cni::config::NetConf` parses them.
pub fn render(pod_cidrs: &[IpNet], data_dir: &Path, mtu: Option<u32>) -> Value {
    let mut plugin = json!({
        "type": "kubewire-cni",
        "podCIDRs": pod_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "dataDir": data_dir,
    });
    if let (Some(mtu), Value::Object(p)) = (mtu, &mut plugin) {
        p.insert("mtu".into(), json!(mtu));
    }
    json!({
        "cniVersion": "1.1.0",
        "name": NETWORK_NAME,
        "plugins": [plugin],
    })
}

/// Writes `conf` as `dir/10-kubewire.conflist` unless the file already holds exactly it.
/// Returns the path.
pub fn write(dir: &Path, conf: &Value) -> std::io::Result<PathBuf> {
    let path = dir.join(CONFLIST_NAME);
    let mut text = serde_json::to_string_pretty(conf).map_err(std::io::Error::other)?;
    text.push('\n');
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{CONFLIST_NAME}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_accepts_what_is_written() {
        let cidrs: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
        ];
        let conf = render(&cidrs, Path::new("/var/lib/kubewire/cni"), Some(1450));
        // What a runtime hands the plugin: the entry, with cniVersion and name injected.
        let mut entry = conf["plugins"][0].clone();
        entry["cniVersion"] = conf["cniVersion"].clone();
        entry["name"] = conf["name"].clone();
        let parsed =
            kubewire_cni::config::NetConf::parse(entry.to_string().as_bytes()).expect("parses");
        assert_eq!(parsed.pod_cidrs, cidrs);
        assert_eq!(parsed.mtu, Some(1450));
        assert_eq!(parsed.data_dir, Path::new("/var/lib/kubewire/cni"));
    }

    #[test]
    fn writes_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let conf = render(&["10.0.0.0/24".parse().unwrap()], Path::new("/d"), None);
        let p = write(dir.path(), &conf).unwrap();
        let before = std::fs::metadata(&p).unwrap().modified().unwrap();
        write(dir.path(), &conf).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), before);
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back, conf);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
