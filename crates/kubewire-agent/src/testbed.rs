//! Nodes, pods and a LAN made of network namespaces on one machine, for the agent's kernel tests
//! and the cross-node benchmark (needs root). Everything is torn down on drop.
//!
//! ```text
//!   lan namespace: bridge br0 ── n0 ── eth0 (node 0: 198.51.100.10, 2001:db8:51::10)
//!                             ├─ n1 ── eth0 (node 1: .11, ::11) ...
//!                             └─ ext ─ eth0 (external host: 198.51.100.200, 2001:db8:51::200)
//! ```
//! Addresses are from documentation ranges (RFC 5737 TEST-NET-2, RFC 3849); the external host
//! stands for "outside the cluster". Pods are made by running the real `kubewire-cni` binary
//! with the conflist the agent wrote, exactly as a container runtime does.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use kubewire_datapath::{Netlink, OwnedNetNs, VethSpec};
use serde_json::Value;

/// Errors of building or using a testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{0}")]
    Kernel(#[from] kubewire_datapath::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Cni(String),
}

type Result<T> = std::result::Result<T, TestbedError>;

/// A node or the external host: a namespace with `eth0` on the LAN.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub ns: OwnedNetNs,
    pub ip4: IpAddr,
    pub ip6: IpAddr,
    /// A scratch directory (CNI conf dir and IPAM store live under it).
    pub dir: PathBuf,
}

impl Host {
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    pub fn cni_data_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// Adds a pod with the conflist in [`Host::cni_conf_dir`], by running `kubewire-cni` ADD
    /// inside this node's namespace.
    pub fn add_pod(&self, plugin: &Path, id: &str) -> Result<Pod> {
        let conflist = self.cni_conf_dir().join(crate::cni::CONFLIST_NAME);
        let list: Value = serde_json::from_slice(&std::fs::read(&conflist)?)
            .map_err(|e| TestbedError::Cni(format!("{}: {e}", conflist.display())))?;
        // What a runtime does with a conflist: each plugin gets cniVersion and name injected.
        let mut conf = list["plugins"][0].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        let ns = OwnedNetNs::create(&format!("{}-{id}", self.ns.name()))?;
        let netns = ns.path().display().to_string();
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        let stdin = conf.to_string();
        let out = self
            .ns
            .run(|| kubewire_cni::bench::exec_plugin(plugin, &env, stdin.as_bytes()))??;
        if !out.status.success() {
            return Err(TestbedError::Cni(format!(
                "ADD {id} on {}: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let result: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| TestbedError::Cni(format!("ADD {id} result: {e}")))?;
        let ips = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str()?.parse::<IpNet>().ok())
            .map(|n| n.addr())
            .collect();
        Ok(Pod { ns, ips })
    }
}

/// A pod made by the CNI plugin.
#[derive(Debug)]
pub struct Pod {
    pub ns: OwnedNetNs,
    pub ips: Vec<IpAddr>,
}

impl Pod {
    pub fn ip(&self, v4: bool) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| ip.is_ipv4() == v4)
    }
}

/// The LAN, its nodes and the external host.
#[derive(Debug)]
pub struct Testbed {
    // Field order is drop order: hosts (and their pods' node ends) before the LAN.
    pub nodes: Vec<Host>,
    pub external: Host,
    pub lan: OwnedNetNs,
    _scratch: ScratchDir,
}

/// The LAN's IPv4 and IPv6 prefixes.
pub const LAN4: &str = "198.51.100.0/24";
pub const LAN6: &str = "2001:db8:51::/64";

impl Testbed {
    /// `nodes` node namespaces and an external host on a fresh LAN. `tag` keeps names unique
    /// (the process id is added).
    pub fn new(tag: &str, nodes: usize) -> Result<Testbed> {
        let prefix = format!("kw{}-{tag}", std::process::id());
        let scratch = ScratchDir(std::env::temp_dir().join(&prefix));
        std::fs::create_dir_all(&scratch.0)?;
        let lan = OwnedNetNs::create(&format!("{prefix}-lan"))?;
        let lan_nl = Netlink::open_in(&lan)?;
        lan_nl.set_link_up_by_name("lo")?;
        lan_nl.add_bridge("br0")?;
        let br = lan_nl
            .link("br0")?
            .ok_or_else(|| TestbedError::Cni("br0 vanished".into()))?;
        let host = |name: &str, port: &str, last: u8| -> Result<Host> {
            let ns = OwnedNetNs::create(&format!("{prefix}-{name}"))?;
            lan_nl.add_veth(&VethSpec {
                name: port,
                mac: None,
                peer_name: "eth0",
                peer_mac: None,
                peer_netns: Some(&ns),
                mtu: None,
                up: true,
            })?;
            let p = lan_nl
                .link(port)?
                .ok_or_else(|| TestbedError::Cni(format!("{port} vanished")))?;
            lan_nl.set_link_master(p.index, br.index)?;
            let nl = Netlink::open_in(&ns)?;
            nl.set_link_up_by_name("lo")?;
            let eth0 = nl
                .link("eth0")?
                .ok_or_else(|| TestbedError::Cni("eth0 vanished".into()))?;
            let ip4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, last));
            let ip6 = IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0x51,
                0,
                0,
                0,
                0,
                u16::from(last),
            ));
            nl.add_address(eth0.index, IpNet::new(ip4, 24).map_err(io_other)?, true)?;
            nl.add_address(eth0.index, IpNet::new(ip6, 64).map_err(io_other)?, true)?;
            nl.set_link_up(eth0.index, true)?;
            let dir = scratch.0.join(name);
            std::fs::create_dir_all(&dir)?;
            Ok(Host {
                name: name.to_string(),
                ns,
                ip4,
                ip6,
                dir,
            })
        };
        let external = host("ext", "ext", 200)?;
        let mut hosts = Vec::new();
        for i in 0..nodes {
            let last = u8::try_from(10 + i).map_err(io_other)?;
            hosts.push(host(&format!("node{i}"), &format!("n{i}"), last)?);
        }
        Ok(Testbed {
            nodes: hosts,
            external,
            lan,
            _scratch: scratch,
        })
    }
}

fn io_other(e: impl std::fmt::Display) -> TestbedError {
    TestbedError::Io(std::io::Error::other(e.to_string()))
}

#[derive(Debug)]
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP server in a namespace: for each connection it writes one line, the peer address it
/// sees and its own address (`PEER LOCAL`), then echoes whatever it receives. Stops on drop.
#[derive(Debug)]
pub struct EchoServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    /// Listens on `[::]:0` (both families) inside `ns`.
    pub fn start(ns: &OwnedNetNs) -> Result<EchoServer> {
        Self::start_on(ns, 0)
    }

    /// Listens on `[::]:port` (both families) inside `ns`.
    pub fn start_on(ns: &OwnedNetNs, port: u16) -> Result<EchoServer> {
        let listener = ns.run(|| TcpListener::bind(("::", port)))??;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        std::thread::spawn(move || echo(conn, peer.ip().to_canonical()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(EchoServer { port, stop })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn echo(mut conn: TcpStream, peer: IpAddr) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_nodelay(true);
    let Ok(local) = conn.local_addr() else {
        return;
    };
    if writeln!(conn, "{peer} {}", local.ip().to_canonical()).is_err() {
        return;
    }
    let Ok(mut reader) = conn.try_clone() else {
        return;
    };
    let _ = std::io::copy(&mut reader, &mut conn);
}

/// A UDP server in a namespace, on `[::]:port`: answers every datagram with `answer`. Stops on
/// drop.
#[derive(Debug)]
pub struct UdpAnswerServer {
    stop: Arc<AtomicBool>,
}

impl UdpAnswerServer {
    pub fn start_on(ns: &OwnedNetNs, port: u16, answer: String) -> Result<UdpAnswerServer> {
        let socket = ns.run(|| UdpSocket::bind(("::", port)))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(answer.as_bytes(), peer);
                }
            }
        });
        Ok(UdpAnswerServer { stop })
    }
}

impl Drop for UdpAnswerServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Connects from inside `ns` (the socket stays there) to `to`, within `timeout`.
pub fn connect(ns: &OwnedNetNs, to: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = ns.run(|| TcpStream::connect_timeout(&to, timeout))??;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects from `ns` to an [`EchoServer`] and returns the source address the server saw.
pub fn seen_by_server(ns: &OwnedNetNs, to: SocketAddr) -> Result<IpAddr> {
    served(ns, to, Duration::from_secs(3)).map(|(peer, _)| peer)
}

/// Connects from `ns` to an [`EchoServer`] (directly or through a Service) and returns the
/// source address the server saw and the server's own address.
pub fn served(ns: &OwnedNetNs, to: SocketAddr, timeout: Duration) -> Result<(IpAddr, IpAddr)> {
    let stream = connect(ns, to, timeout)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let mut words = line.split_whitespace().map(str::parse::<IpAddr>);
    match (words.next(), words.next()) {
        (Some(Ok(peer)), Some(Ok(local))) => Ok((peer, local)),
        _ => Err(io_other(format!("unexpected greeting {line:?}"))),
    }
}
