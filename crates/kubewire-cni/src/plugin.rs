//! The six CNI commands over the routed point-to-point layout (see `LAYOUT.md`).
//!
//! Per attachment `(containerID, ifname)`:
//! - a veth pair: `kw<11 hex>` in the node's namespace (MAC `ee:ee:ee:ee:ee:ee`), `CNI_IFNAME`
//!   in the pod's (a MAC derived from the attachment);
//! - in the pod: one /32 and/or /128, default routes via the link-local gateways 169.254.1.1 and
//!   fe80::1, and permanent neighbour entries mapping both gateways to the host end's MAC;
//! - on the node: a /32 and/or /128 route to the pod via the host end, permanent neighbour
//!   entries for the pod's addresses, proxy ARP and `fe80::1` on the host end as a fallback,
//!   and IP forwarding on.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use kubewire_datapath::{Link, Mac, NetNs, Netlink, Route, VethSpec, sysctl};

use crate::config::{Command, Env, NetConf};
use crate::error::{CniError, code};
use crate::ipam::{Owner, Store};
use crate::result::{CniResult, Interface, IpConfig, RouteConfig};
use crate::version::{Version, version_info};

/// The pod's IPv4 gateway: link-local, answered by the host end of the veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's IPv6 gateway.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The MAC of every host-side veth (each is its own L2 segment, so one MAC does for all).
pub const HOST_MAC: Mac = Mac([0xee; 6]);
/// How long to wait for the IPAM store lock before answering "try again later".
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// Test hook: milliseconds to sleep right after the address is recorded and before the kernel
/// is touched, so a test can `kill -9` the plugin mid-ADD. Never set it in production.
pub const TEST_PAUSE_ENV: &str = "KUBEWIRE_CNI_TEST_PAUSE_AFTER_RECORD";

/// FNV-1a, 64 bit: stable across builds and Rust versions (unlike `DefaultHasher`), which
/// matters because DEL and GC recompute the names ADD chose.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // A separator byte that never occurs in ids or interface names.
            h ^= 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The host-side interface name of an attachment: `kw` + 11 hex digits (13 bytes, under the
/// kernel's 15). It hashes the interface name too, so one pod may have several attachments.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("kw{:011x}", fnv1a(&[container_id, ifname]) >> 20)
}

/// The pod-side MAC of an attachment: locally administered, unicast, stable.
pub fn pod_mac(container_id: &str, ifname: &str) -> Mac {
    let h = fnv1a(&["mac", container_id, ifname]).to_be_bytes();
    Mac([(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]])
}

fn gateway_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(GATEWAY_V4),
        IpAddr::V6(_) => IpAddr::V6(GATEWAY_V6),
    }
}

fn default_dst(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
    .unwrap_or_else(|_| IpNet::from(ip))
}

fn datapath(what: &str) -> impl FnOnce(kubewire_datapath::Error) -> CniError + '_ {
    move |e| CniError::new(code::DATAPATH, format!("{what}: {e}"))
}

/// Runs one request. `get_env` reads the environment; `stdin` is the configuration. Returns
/// what goes to stdout on success (nothing for DEL, GC, STATUS).
pub fn run(
    get_env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<String>, CniError> {
    let env = Env::parse(&get_env)?;
    if env.command == Command::Version {
        // SPEC: VERSION gets `{"cniVersion": ...}` on stdin; the answer does not depend on it.
        return Ok(Some(version_info().to_string()));
    }
    let conf = NetConf::parse(stdin)?;
    let err_version = conf.version.as_str();
    let out = match env.command {
        Command::Add => cmd_add(&env, &conf, &get_env).map(Some),
        Command::Del => cmd_del(&env, &conf).map(|()| None),
        Command::Check => cmd_check(&env, &conf).map(|()| None),
        Command::Gc | Command::Status if !conf.version.has_gc_and_status() => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "configuration version {} does not allow {:?} (it needs 1.1.0)",
                conf.version.as_str(),
                env.command
            ),
        )),
        Command::Gc => cmd_gc(&conf).map(|()| None),
        Command::Status => cmd_status(&conf).map(|()| None),
        Command::Version => Ok(None),
    };
    out.map_err(|e| e.for_version(err_version))
}

fn owner_of(env: &Env) -> Owner {
    Owner {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    }
}

fn open_pod_netns(env: &Env) -> Result<NetNs, CniError> {
    let path = env.netns.as_deref().unwrap_or(std::path::Path::new(""));
    let ns = NetNs::open(path).map_err(|e| {
        CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_NETNS {}: cannot open the network namespace: {e}",
                path.display()
            ),
        )
    })?;
    let own = NetNs::current().map_err(datapath("open own namespace"))?;
    if ns.same_as(&own).map_err(datapath("compare namespaces"))? {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_NETNS {} is the plugin's own network namespace",
                path.display()
            ),
        ));
    }
    Ok(ns)
}

fn cmd_add(
    env: &Env,
    conf: &NetConf,
    get_env: &impl Fn(&str) -> Option<String>,
) -> Result<String, CniError> {
    let pod_ns = open_pod_netns(env)?;
    let pod_nl = Netlink::open_in(&pod_ns).map_err(datapath("netlink in the pod namespace"))?;
    if pod_nl
        .link(&env.ifname)
        .map_err(datapath("look up CNI_IFNAME"))?
        .is_some()
    {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            format!(
                "interface {} already exists in {}",
                env.ifname,
                pod_ns.path().display()
            ),
        ));
    }
    let owner = owner_of(env);
    let store = Store::new(&conf.data_dir, &conf.name);
    let alloc = {
        let mut locked = store.lock(LOCK_TIMEOUT)?;
        let alloc = locked.state.allocate(&owner, &conf.pod_cidrs)?;
        if alloc.fresh {
            locked.commit()?;
        }
        alloc
    };
    if let Some(ms) = get_env(TEST_PAUSE_ENV).and_then(|v| v.parse::<u64>().ok()) {
        eprintln!(
            "kubewire-cni: {TEST_PAUSE_ENV}: recorded {:?}, pausing {ms} ms",
            alloc.ips
        );
        std::thread::sleep(Duration::from_millis(ms));
    }
    let host_nl = Netlink::open().map_err(datapath("netlink in the node namespace"))?;
    let host_if = host_veth_name(&env.container_id, &env.ifname);
    match setup(env, conf, &pod_ns, &pod_nl, &host_nl, &host_if, &alloc.ips) {
        Ok(ours) => {
            let mut result = conf.prev_result.clone().unwrap_or_default();
            result.append(ours);
            Ok(result.to_json(conf.version).to_string())
        }
        Err(e) => {
            // Undo: the link (which takes routes and neighbours with it), and the addresses if
            // this call reserved them. The runtime still sends DEL, which then finds nothing.
            let _ = host_nl.delete_link_by_name(&host_if);
            if alloc.fresh
                && let Ok(mut locked) = store.lock(LOCK_TIMEOUT)
            {
                locked.state.release(&owner);
                let _ = locked.commit();
            }
            Err(e)
        }
    }
}

fn setup(
    env: &Env,
    conf: &NetConf,
    pod_ns: &NetNs,
    pod_nl: &Netlink,
    host_nl: &Netlink,
    host_if: &str,
    ips: &[IpAddr],
) -> Result<CniResult, CniError> {
    let mac = pod_mac(&env.container_id, &env.ifname);
    // A host end of this very attachment can only be left over from an ADD that died.
    host_nl
        .delete_link_by_name(host_if)
        .map_err(datapath("remove a stale host interface"))?;
    host_nl
        .add_veth(&VethSpec {
            name: host_if,
            mac: Some(HOST_MAC),
            peer_name: &env.ifname,
            peer_mac: Some(mac),
            peer_netns: Some(pod_ns),
            mtu: conf.mtu,
            up: true,
        })
        .map_err(datapath("create the veth pair"))?;
    let missing =
        |what: &str| CniError::new(code::DATAPATH, format!("{what} vanished after creation"));
    let host_link = host_nl
        .link(host_if)
        .map_err(datapath("look up the host interface"))?
        .ok_or_else(|| missing(host_if))?;
    let pod_link = pod_nl
        .link(&env.ifname)
        .map_err(datapath("look up the pod interface"))?
        .ok_or_else(|| missing(&env.ifname))?;
    pod_nl
        .set_link_up(pod_link.index, true)
        .map_err(datapath("bring the pod interface up"))?;

    let has_v4 = ips.iter().any(IpAddr::is_ipv4);
    let has_v6 = ips.iter().any(IpAddr::is_ipv6);
    if has_v4 {
        sysctl::enable_ipv4_forwarding().map_err(datapath("IPv4 forwarding"))?;
        sysctl::set_proxy_arp(host_if, true).map_err(datapath("proxy ARP"))?;
        sysctl::set_proxy_delay(host_if, 0).map_err(datapath("proxy ARP delay"))?;
    }
    if has_v6 {
        sysctl::enable_ipv6_forwarding().map_err(datapath("IPv6 forwarding"))?;
        let gw = IpNet::new(IpAddr::V6(GATEWAY_V6), 64)
            .map_err(|e| CniError::new(999, e.to_string()))?;
        host_nl
            .add_address(host_link.index, gw, true)
            .map_err(datapath("add fe80::1 to the host interface"))?;
    }

    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: host_if.to_string(),
                mac: HOST_MAC.to_string(),
                mtu: host_link.mtu,
                ..Default::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: mac.to_string(),
                mtu: pod_link.mtu,
                sandbox: pod_ns.path().display().to_string(),
                ..Default::default()
            },
        ],
        dns: conf.dns.clone().unwrap_or_default(),
        ..Default::default()
    };
    for &ip in ips {
        let gw = gateway_of(ip);
        let host = IpNet::from(ip);
        host_nl
            .add_route(&Route::direct(host, host_link.index))
            .map_err(datapath("add the node's route to the pod"))?;
        host_nl
            .set_neighbour(host_link.index, ip, mac)
            .map_err(datapath("add the node's neighbour entry"))?;
        pod_nl
            .add_address(pod_link.index, host, true)
            .map_err(datapath("add the pod address"))?;
        pod_nl
            .set_neighbour(pod_link.index, gw, HOST_MAC)
            .map_err(datapath("add the pod's gateway neighbour entry"))?;
        let mut default = Route::via(default_dst(ip), gw, pod_link.index);
        if ip.is_ipv4() {
            // 169.254.1.1 is in no prefix of the pod's: tell the kernel it is on the link.
            default = default.onlink();
        }
        pod_nl
            .add_route(&default)
            .map_err(datapath("add the pod's default route"))?;
        result.ips.push(IpConfig {
            address: host,
            gateway: Some(gw),
            interface: Some(1),
            version: None,
            extra: Default::default(),
        });
        result.routes.push(RouteConfig {
            dst: default_dst(ip),
            gw: Some(gw),
            extra: Default::default(),
        });
    }
    Ok(result)
}

fn cmd_del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    // Deleting the host end removes the pair (so the pod end too, wherever its namespace is or
    // whether it still exists), and with it the node's routes and neighbour entries. Only then
    // is the address released, so it is never handed out while still configured.
    let host_nl = Netlink::open().map_err(datapath("netlink in the node namespace"))?;
    host_nl
        .delete_link_by_name(&host_veth_name(&env.container_id, &env.ifname))
        .map_err(datapath("delete the host interface"))?;
    let store = Store::new(&conf.data_dir, &conf.name);
    let mut locked = store.lock(LOCK_TIMEOUT)?;
    if !locked.state.release(&owner_of(env)).is_empty() {
        locked.commit()?;
    }
    Ok(())
}

fn check_failed(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

fn cmd_check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let owner = owner_of(env);
    let store = Store::new(&conf.data_dir, &conf.name);
    let ips = {
        let locked = store.lock(LOCK_TIMEOUT)?;
        let mut ips = Vec::new();
        for cidr in &conf.pod_cidrs {
            let ip = locked.state.lookup(&owner, cidr).ok_or_else(|| {
                check_failed(format!(
                    "no IPAM reservation in {cidr} for container {} interface {}",
                    env.container_id, env.ifname
                ))
            })?;
            ips.push(ip);
        }
        ips
    };
    let netns_path = env.netns.as_deref().map(|p| p.display().to_string());
    // The expected state is prevResult (SPEC CHECK); our reservation must agree with it.
    if let Some(prev) = &conf.prev_result {
        let ours: BTreeSet<usize> = prev
            .interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name == env.ifname && Some(&i.sandbox) == netns_path.as_ref())
            .map(|(n, _)| n)
            .collect();
        if ours.is_empty() {
            return Err(check_failed(format!(
                "prevResult has no interface {} in {}",
                env.ifname,
                netns_path.unwrap_or_default()
            )));
        }
        let expected: BTreeSet<IpAddr> = prev
            .ips
            .iter()
            .filter(|ip| ip.interface.is_some_and(|i| ours.contains(&i)))
            .map(|ip| ip.address.addr())
            .collect();
        let reserved: BTreeSet<IpAddr> = ips.iter().copied().collect();
        if expected != reserved {
            return Err(check_failed(format!(
                "prevResult addresses {expected:?} differ from the IPAM reservation {reserved:?}"
            )));
        }
    }
    let pod_ns = open_pod_netns(env)?;
    let pod_nl = Netlink::open_in(&pod_ns).map_err(datapath("netlink in the pod namespace"))?;
    let host_nl = Netlink::open().map_err(datapath("netlink in the node namespace"))?;
    let host_if = host_veth_name(&env.container_id, &env.ifname);
    let want_link = |l: Option<Link>, what: String| -> Result<Link, CniError> {
        let l = l.ok_or_else(|| check_failed(format!("{what} is missing")))?;
        if l.kind.as_deref() != Some("veth") {
            return Err(check_failed(format!("{what} is not a veth")));
        }
        if !l.up {
            return Err(check_failed(format!("{what} is down")));
        }
        if let (Some(want), Some(have)) = (conf.mtu, l.mtu)
            && want != have
        {
            return Err(check_failed(format!("{what} has MTU {have}, want {want}")));
        }
        Ok(l)
    };
    let pod_link = want_link(
        pod_nl
            .link(&env.ifname)
            .map_err(datapath("look up CNI_IFNAME"))?,
        format!("interface {} in {}", env.ifname, pod_ns.path().display()),
    )?;
    let host_link = want_link(
        host_nl
            .link(&host_if)
            .map_err(datapath("look up the host interface"))?,
        format!("host interface {host_if}"),
    )?;
    let addrs = pod_nl
        .addresses(Some(pod_link.index))
        .map_err(datapath("list pod addresses"))?;
    for &ip in &ips {
        let net = IpNet::from(ip);
        if !addrs.iter().any(|(_, a)| *a == net) {
            return Err(check_failed(format!(
                "address {net} is missing on {} in {}",
                env.ifname,
                pod_ns.path().display()
            )));
        }
        let gw = gateway_of(ip);
        let pod_routes = pod_nl
            .routes(ip.is_ipv6(), 254)
            .map_err(datapath("list pod routes"))?;
        if !pod_routes.iter().any(|r| {
            r.dst == default_dst(ip) && r.gateway == Some(gw) && r.oif == Some(pod_link.index)
        }) {
            return Err(check_failed(format!(
                "default route via {gw} dev {} is missing in {}",
                env.ifname,
                pod_ns.path().display()
            )));
        }
        let host_routes = host_nl
            .routes(ip.is_ipv6(), 254)
            .map_err(datapath("list node routes"))?;
        if !host_routes
            .iter()
            .any(|r| r.dst == net && r.oif == Some(host_link.index) && r.gateway.is_none())
        {
            return Err(check_failed(format!(
                "the node's route {net} dev {host_if} is missing"
            )));
        }
    }
    Ok(())
}

fn cmd_gc(conf: &NetConf) -> Result<(), CniError> {
    let valid: BTreeSet<Owner> = conf
        .valid_attachments
        .clone()
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "GC needs cni.dev/valid-attachments (an empty list frees everything)",
            )
        })?
        .into_iter()
        .collect();
    let store = Store::new(&conf.data_dir, &conf.name);
    let gone = {
        let mut locked = store.lock(LOCK_TIMEOUT)?;
        let gone = locked.state.retain_valid(&valid);
        if !gone.is_empty() {
            locked.commit()?;
        }
        gone
    };
    // Also remove host ends left by attachments that were never DELeted (e.g. an ADD killed
    // half-way while its namespace lives on). SPEC GC: carry on past errors, report them all.
    let owners: BTreeSet<Owner> = gone.into_iter().map(|(_, o)| o).collect();
    let mut errors = Vec::new();
    if !owners.is_empty() {
        let host_nl = Netlink::open().map_err(datapath("netlink in the node namespace"))?;
        for o in owners {
            let name = host_veth_name(&o.container_id, &o.ifname);
            if let Err(e) = host_nl.delete_link_by_name(&name) {
                errors.push(format!("delete {name}: {e}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(
            CniError::new(code::DATAPATH, "GC could not remove every stale interface")
                .with_details(errors.join("; ")),
        )
    }
}

fn cmd_status(conf: &NetConf) -> Result<(), CniError> {
    let store = Store::new(&conf.data_dir, &conf.name);
    let not_available = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let locked = store
        .lock(Duration::from_secs(5))
        .map_err(|e| not_available(format!("IPAM store is not usable: {}", e.msg)))?;
    // Writable: the probe is created and removed beside the state file.
    let probe = store.dir().join(".status-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            not_available(format!(
                "IPAM store directory {} is not writable: {e}",
                store.dir().display()
            ))
        })?;
    for cidr in &conf.pod_cidrs {
        if locked.state.free(cidr) == 0 {
            return Err(not_available(format!(
                "pod CIDR {cidr} is exhausted: all {} addresses are in use",
                crate::ipam::capacity(cidr)
            )));
        }
    }
    // Pods exist but the node does not forward their traffic: they are cut off from everything
    // beyond the node (SPEC: 51, existing containers may have limited connectivity). Before the
    // first pod, forwarding off is fine: ADD turns it on.
    if !locked.state.allocations.is_empty() {
        for (v6, key) in [
            (false, "net/ipv4/ip_forward"),
            (true, "net/ipv6/conf/all/forwarding"),
        ] {
            let used = locked.state.allocations.keys().any(|ip| ip.is_ipv6() == v6);
            if used && sysctl::read(key).is_ok_and(|v| v == "0") {
                return Err(CniError::new(
                    code::LIMITED_CONNECTIVITY,
                    format!("{key} is 0 while pods hold addresses: their traffic is not forwarded"),
                ));
            }
        }
    }
    Ok(())
}

/// The version a request would be answered in (for errors raised before the config parsed).
pub fn request_version(stdin: &[u8]) -> Option<Version> {
    crate::config::peek_version(stdin).and_then(|v| Version::parse(&v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_short() {
        let a = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("kw"));
        assert!(a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, host_veth_name("0123456789abcdef", "eth0"));
        assert_ne!(a, host_veth_name("0123456789abcdef", "net1"));
        assert_ne!(a, host_veth_name("0123456789abcdeg", "eth0"));
        // Pinned: DEL of a pod added by an older build must find the same name.
        assert_eq!(host_veth_name("abc", "eth0"), "kw348a293a697");
        let m = pod_mac("abc", "eth0");
        assert_eq!(m.0[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(m, HOST_MAC);
    }

    #[test]
    fn version_command_needs_no_config() {
        let out = run(
            |k| (k == "CNI_COMMAND").then(|| "VERSION".to_string()),
            b"{\"cniVersion\":\"1.0.0\"}",
        )
        .unwrap()
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["supportedVersions"][2], "1.1.0");
    }

    #[test]
    fn gc_and_status_need_1_1_0() {
        for cmd in ["GC", "STATUS"] {
            let e = run(
                |k| (k == "CNI_COMMAND").then(|| cmd.to_string()),
                br#"{"cniVersion":"1.0.0","name":"n","podCIDRs":["10.0.0.0/24"],"dataDir":"/nonexistent-kw"}"#,
            )
            .unwrap_err();
            assert_eq!(e.code, 1, "{cmd}");
            assert_eq!(e.cni_version, "1.0.0");
        }
    }
}
