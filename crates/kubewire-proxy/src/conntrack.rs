//! UDP conntrack cleanup. A UDP "connection" lives in conntrack for as long as packets keep
//! coming, so after an endpoint goes away its clients keep being sent to it (kube-proxy issues
//! #19029, #59368, #139628) and, after a Service gains its first endpoint, entries made while it
//! had none keep black-holing (#48370). TCP needs none of this: a dead endpoint resets.
//!
//! [`stale_udp_flows`] is pure (old and new model → which entries to delete); [`delete`] runs
//! `conntrack -D` (the conntrack-tools CLI, as kube-proxy once did) in the calling thread's
//! network namespace, after the new rules are in, so a deleted flow is re-created by them.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use crate::model::{Desired, Family, Key, Protocol};

/// A conntrack filter: UDP flows of one family to `orig_dst:orig_port` (any local address for
/// NodePorts), optionally only those answered by `reply_src` (the endpoint they were sent to).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    pub family: Family,
    pub orig_dst: Option<IpAddr>,
    pub orig_port: u16,
    pub reply_src: Option<IpAddr>,
}

impl Flow {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-D".to_string(),
            "-f".into(),
            match self.family {
                Family::V4 => "ipv4".into(),
                Family::V6 => "ipv6".into(),
            },
            "-p".into(),
            "udp".into(),
            "--orig-port-dst".into(),
            self.orig_port.to_string(),
        ];
        if let Some(ip) = self.orig_dst {
            args.extend(["--orig-dst".into(), ip.to_string()]);
        }
        if let Some(ip) = self.reply_src {
            args.extend(["--reply-src".into(), ip.to_string()]);
        }
        args
    }
}

/// The flows to forget after going from `old` to `new`: for every UDP destination, those sent
/// to an endpoint it no longer has; and all of them when it has endpoints now and had none (or
/// was not known) before, since packets sent then made entries without our DNAT.
pub fn stale_udp_flows(old: &Desired, new: &Desired) -> Vec<Flow> {
    let flow = |key: &Key, reply_src| Flow {
        family: key.family,
        orig_dst: key.ip,
        orig_port: key.port,
        reply_src,
    };
    let mut flows = Vec::new();
    for key in new.entries.keys().filter(|k| k.protocol == Protocol::Udp) {
        if !backends_of(new, key).is_empty() && backends_of(old, key).is_empty() {
            flows.push(flow(key, None));
        }
    }
    for key in old.entries.keys().filter(|k| k.protocol == Protocol::Udp) {
        let (before, now) = (backends_of(old, key), backends_of(new, key));
        if before.is_empty() {
            continue; // all of its flows went above, if it has endpoints now
        }
        for gone in before.iter().filter(|b| !now.contains(b)) {
            flows.push(flow(key, Some(gone.ip())));
        }
    }
    flows.sort();
    flows.dedup();
    flows
}

fn backends_of<'a>(d: &'a Desired, key: &Key) -> &'a [SocketAddr] {
    d.entries
        .get(key)
        .map(|e| e.backends.as_slice())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("cannot run conntrack (install the conntrack package): {0}")]
    Spawn(std::io::Error),
    #[error("conntrack {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

/// Deletes `flows` from the calling thread's network namespace's conntrack table.
pub fn delete(flows: &[Flow]) -> Result<(), ConntrackError> {
    for flow in flows {
        let args = flow.args();
        let out = Command::new("conntrack")
            .args(&args)
            .output()
            .map_err(ConntrackError::Spawn)?;
        // Exit status 1 with "0 flow entries" means there was nothing to delete.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains("0 flow entries") {
            return Err(ConntrackError::Failed {
                args: args.join(" "),
                stderr: stderr.trim().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Class, Entry, WhenEmpty};

    fn key(protocol: Protocol, class: Class, ip: Option<&str>, port: u16) -> Key {
        Key {
            family: Family::V4,
            class,
            ip: ip.map(|s| s.parse().expect("ip")),
            protocol,
            port,
        }
    }

    fn desired(entries: &[(Key, &[&str])]) -> Desired {
        Desired {
            entries: entries
                .iter()
                .map(|(k, b)| {
                    let backends = b
                        .iter()
                        .map(|s| s.parse::<SocketAddr>().expect("addr"))
                        .collect();
                    let entry = Entry {
                        backends,
                        when_empty: WhenEmpty::Reject,
                        masquerade: true,
                        affinity_timeout: None,
                        source_ranges: Vec::new(),
                        service: "default/dns:dns".into(),
                    };
                    (*k, entry)
                })
                .collect(),
            ..Desired::default()
        }
    }

    #[test]
    fn removed_udp_endpoints_and_first_endpoints_are_flushed() {
        let dns = key(Protocol::Udp, Class::ClusterIp, Some("10.96.0.10"), 53);
        let np = key(Protocol::Udp, Class::NodePort, None, 30053);
        let tcp = key(Protocol::Tcp, Class::ClusterIp, Some("10.96.0.10"), 53);
        let old = desired(&[
            (dns, &["10.244.1.5:53", "10.244.2.5:53"]),
            (np, &[]),
            (tcp, &["10.244.1.5:53"]),
        ]);
        let new = desired(&[
            (dns, &["10.244.2.5:53", "10.244.3.5:53"]),
            (np, &["10.244.3.5:53"]),
        ]);
        let flows = stale_udp_flows(&old, &new);
        assert_eq!(
            flows,
            vec![
                Flow {
                    family: Family::V4,
                    orig_dst: None,
                    orig_port: 30053,
                    reply_src: None,
                },
                Flow {
                    family: Family::V4,
                    orig_dst: Some("10.96.0.10".parse().expect("ip")),
                    orig_port: 53,
                    reply_src: Some("10.244.1.5".parse().expect("ip")),
                },
            ],
            "TCP is left alone; the NodePort went from none to one"
        );
        assert_eq!(
            flows[1].args().join(" "),
            "-D -f ipv4 -p udp --orig-port-dst 53 --orig-dst 10.96.0.10 --reply-src 10.244.1.5"
        );
        assert!(stale_udp_flows(&new, &new).is_empty());
        // A Service seen for the first time with endpoints: entries made before are stale.
        let fresh = stale_udp_flows(&Desired::default(), &new);
        assert_eq!(fresh.len(), 2, "{fresh:?}");
        assert!(fresh.iter().all(|f| f.reply_src.is_none()));
        // A Service that goes away takes its flows with it.
        assert_eq!(stale_udp_flows(&new, &Desired::default()).len(), 3);
    }
}
