//! The lab kubelet's pod runtime against the real kernel: a node namespace, a pod sandbox wired
//! by the real `kubewire-cni` through a conflist (as a container runtime calls it), `kubewire
//! serve` started inside the pod by `kubewire internal exec-in-pod`, reached from the node over
//! the pod's IPv4 and IPv6 addresses; the pod sees its own hostname and resolv.conf; teardown
//! leaves nothing behind.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubewire_datapath::{NetNs, testutil};
use kubewire_lab::{CniRuntime, Sandbox, SandboxSpec};

fn kubewire() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubewire"))
}

/// The plugin binary cargo built beside `kubewire` (the workspace test build makes it).
fn plugin_dir() -> Option<PathBuf> {
    let dir = kubewire().parent()?.to_path_buf();
    if dir.join("kubewire-cni").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "kubewire-cni is not built beside kubewire: build the workspace"
    );
    eprintln!("skipping: kubewire-cni is not built (cargo build -p kubewire-cni)");
    None
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Teardown<'a> {
    sandbox: Option<Sandbox>,
    cni: &'a CniRuntime,
    node: &'a NetNs,
}

impl Teardown<'_> {
    fn finish(mut self) -> Result<(), kubewire_lab::LabError> {
        let sandbox = self.sandbox.take().expect("not yet torn down");
        self.node
            .run(|| sandbox.destroy(self.cni))
            .expect("node thread")
    }
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            let _ = self.node.run(|| sandbox.destroy(self.cni));
        }
    }
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

fn exec_in_pod(sandbox: &Sandbox, resolv: &Path, command: &[&str]) -> Command {
    let mut c = Command::new(kubewire());
    c.args(["internal", "exec-in-pod", "--netns"])
        .arg(sandbox.netns_path())
        .args(["--hostname", "web-0", "--bind"])
        .arg(format!("{}:/etc/resolv.conf", resolv.display()))
        .arg("--")
        .args(command);
    c
}

#[test]
fn a_pod_runs_as_a_process_in_its_own_network() {
    if !testutil::root_or_skip("pod sandbox") {
        return;
    }
    let Some(bin_dir) = plugin_dir() else { return };
    let node = testutil::netns("node");
    // The node's own addresses (a real node has its LAN address): the source it reaches pods from.
    let nl = kubewire_datapath::Netlink::open_in(&node).unwrap();
    let lo = nl.link("lo").unwrap().unwrap().index;
    for addr in ["198.18.250.1/32", "2001:db8::1/128"] {
        nl.add_address(lo, addr.parse().unwrap(), true).unwrap();
    }
    let scratch = tempfile::tempdir().unwrap();
    let conf_dir = scratch.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "kubewire",
        "plugins": [{"type": "kubewire-cni", "podCIDRs": ["10.244.7.0/24", "fd00:10:244:7::/64"], "dataDir": scratch.path().join("ipam")}],
    });
    std::fs::write(conf_dir.join("10-kubewire.conflist"), conflist.to_string()).unwrap();
    let cni = CniRuntime::new(&conf_dir, vec![bin_dir]);
    let pod_dir = scratch.path().join("pods/uid-1");
    let netns_name = testutil::unique_name("pod");
    let spec = SandboxSpec {
        id: "uid-1",
        netns_name: &netns_name,
        dir: &pod_dir,
    };

    let sandbox = node
        .run(|| Sandbox::create(&cni, &spec))
        .unwrap()
        .expect("sandbox");
    // Torn down even if an assertion below fails.
    let guard = Teardown {
        sandbox: Some(sandbox.clone()),
        cni: &cni,
        node: &node,
    };
    assert_eq!(
        sandbox.ips.len(),
        2,
        "one address per family: {:?}",
        sandbox.ips
    );
    assert_eq!(
        Sandbox::load(&pod_dir).unwrap().ips,
        sandbox.ips,
        "recorded for a restarted kubelet"
    );
    let resolv = sandbox
        .write_file(
            "resolv.conf",
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local\noptions ndots:5\n",
        )
        .unwrap();

    // The pod's view: its hostname and resolv.conf, not the node's.
    let out = exec_in_pod(
        &sandbox,
        &resolv,
        &["sh", "-c", "hostname; cat /etc/resolv.conf"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("web-0\nnameserver 10.96.0.10\n"), "{text}");
    assert_ne!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        "nameserver 10.96.0.10\nsearch shop.svc.cluster.local\noptions ndots:5\n",
        "nothing leaked to the host"
    );

    // A server in the pod, reached from the node over both families.
    let server = exec_in_pod(
        &sandbox,
        &resolv,
        &[kubewire().to_str().unwrap(), "serve", "--http-port", "8080"],
    )
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let server = KillOnDrop(server);
    for ip in &sandbox.ips {
        let addr = SocketAddr::new(*ip, 8080);
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            match node.run(move || get(addr, "/hostname")).unwrap() {
                Ok(body) => break body,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{addr} never answered: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert_eq!(answer, "web-0", "served from inside the pod at {addr}");
        let client = node.run(move || get(addr, "/clientip")).unwrap().unwrap();
        let client_ip: IpAddr = client
            .rsplit_once(':')
            .unwrap()
            .0
            .trim_matches(['[', ']'])
            .parse()
            .unwrap();
        assert_eq!(
            client_ip.is_ipv4(),
            ip.is_ipv4(),
            "the node reaches the pod without NAT: {client}"
        );
    }
    drop(server);

    let netns_path = sandbox.netns_path();
    guard.finish().expect("teardown");
    assert!(!netns_path.exists(), "pod namespace removed");
    assert!(!pod_dir.exists(), "pod directory removed");
    assert!(NetNs::open_named(&netns_name).is_err());
}
