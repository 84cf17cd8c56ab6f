//! An embedded, Kubernetes-compatible API server for one machine.
//!
//! It speaks kube-apiserver's REST and watch protocol for the kinds the network stack needs, so
//! kubectl and kube-rs work against it unchanged; it validates and defaults objects like
//! kube-apiserver, allocates ClusterIPs and NodePorts, and keeps every object durably in an
//! embedded ACID store. It is what the lab and the tests run; on a real cluster the real
//! kube-apiserver takes its place. It is not a general API server: no admission webhooks, no
//! RBAC beyond bearer tokens, no arbitrary CRDs, no aggregation.

mod admission;
mod alloc;
mod api;
mod discovery;
mod fields;
mod lifecycle;
mod patch;
mod registry;
mod request;
mod server;
mod service;
mod status;
mod store;
mod table;
pub mod testing;
mod tls;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::net::TcpListener;

pub use crate::alloc::{AllocError, IpAllocator, PortAllocator};
pub use crate::api::{Api, ApiRequest, Reply};
pub use crate::registry::{RESOURCES, ResourceId, ResourceType};
pub use crate::status::ApiError;
pub use crate::store::{Store, StoreError};

/// Namespaces are looked up on every namespaced create.
pub(crate) const NAMESPACES: ResourceId = registry::NAMESPACES;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub token_file: Option<PathBuf>,
    pub tls: bool,
    /// One CIDR, or two of different families (dual-stack); the first is the primary family.
    pub service_cidrs: Vec<IpNet>,
    pub node_port_range: (u16, u16),
    /// The address pods use to reach the server (endpoints of `default/kubernetes`).
    pub advertise_address: Option<IpAddr>,
    /// How many recent changes a watch can resume from before it gets `410 Gone`.
    pub watch_history: usize,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            token_file: None,
            tls: false,
            service_cidrs: vec!["10.96.0.0/12".parse().expect("literal CIDR")],
            node_port_range: (30000, 32767),
            advertise_address: None,
            watch_history: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("creating built-in objects: {0}")]
    Builtins(String),
}

/// A bound, initialized server; [`Server::run`] serves it.
pub struct Server {
    api: Arc<Api>,
    listener: TcpListener,
    http: Arc<server::Http>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    local_addr: SocketAddr,
    kubeconfig: PathBuf,
}

/// Reads a kube-apiserver static token file: CSV `token,user,uid[,"groups"]`, `#` comments.
fn read_tokens(path: &Path) -> Result<HashSet<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let tokens: HashSet<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(',').next())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return Err(Error::Config(format!(
            "token file {} holds no token",
            path.display()
        )));
    }
    Ok(tokens)
}

fn validate_cidrs(cidrs: &[IpNet]) -> Result<(), Error> {
    match cidrs {
        [_] => Ok(()),
        [a, b] if a.addr().is_ipv4() != b.addr().is_ipv4() => Ok(()),
        [_, _] => Err(Error::Config(
            "two service CIDRs must be of different IP families".into(),
        )),
        _ => Err(Error::Config(
            "give one service CIDR, or two (one per IP family)".into(),
        )),
    }
}

impl Server {
    /// Opens the store, rebuilds the allocators, creates the built-in objects, binds the port,
    /// and writes `<data-dir>/kubeconfig`.
    pub async fn start(config: Config) -> Result<Self, Error> {
        validate_cidrs(&config.service_cidrs)?;
        if config.node_port_range.0 > config.node_port_range.1 {
            return Err(Error::Config("service node port range is empty".into()));
        }
        let tokens = config.token_file.as_deref().map(read_tokens).transpose()?;
        let store = Store::open(&config.data_dir, config.watch_history)?;
        let mut allocators =
            service::ServiceAllocators::new(&config.service_cidrs, config.node_port_range);
        {
            let state = store.read();
            for svc in state.list(registry::SERVICES, None) {
                allocators.restore(&svc.value());
            }
        }
        let ctx = admission::Context {
            service_cluster_ip_families: config
                .service_cidrs
                .iter()
                .map(|c| {
                    if c.addr().is_ipv4() {
                        admission::IpFamily::V4
                    } else {
                        admission::IpFamily::V6
                    }
                })
                .collect(),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        let api = Arc::new(Api::new(store, ctx, allocators));
        let advertise = config
            .advertise_address
            .map(|ip| SocketAddr::new(ip, local_addr.port()))
            .or_else(|| {
                (!local_addr.ip().is_unspecified() && !local_addr.ip().is_loopback())
                    .then_some(local_addr)
            });
        lifecycle::ensure_builtins(&api, &config.service_cidrs, advertise)
            .await
            .map_err(Error::Builtins)?;

        let client_host = if local_addr.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            local_addr.ip()
        };
        let (tls, ca_pem) = if config.tls {
            let mut ips = vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                client_host,
            ];
            ips.extend(advertise.map(|a| a.ip()));
            ips.extend(
                config
                    .service_cidrs
                    .iter()
                    .map(|c| IpAllocator::new(*c).first()),
            );
            let names: Vec<String> = [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec();
            let id = tls::identity(&config.data_dir, &names, &ips)?;
            (Some(id.acceptor), Some(id.ca_pem))
        } else {
            (None, None)
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server_url = format!(
            "{scheme}://{}",
            SocketAddr::new(client_host, local_addr.port())
        );
        let first_token = config
            .token_file
            .as_deref()
            .map(read_first_token)
            .transpose()?
            .flatten();
        let kubeconfig = config.data_dir.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &server_url,
            ca_pem.as_deref(),
            first_token.as_deref(),
        )?;
        let http = Arc::new(server::Http {
            api: api.clone(),
            tokens,
            server_address: SocketAddr::new(client_host, local_addr.port()).to_string(),
        });
        Ok(Self {
            api,
            listener,
            http,
            tls,
            local_addr,
            kubeconfig,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn api(&self) -> Arc<Api> {
        self.api.clone()
    }

    /// Serves until the process ends.
    pub async fn run(self) {
        tokio::spawn(lifecycle::run(self.api.clone()));
        self.http.serve(self.listener, self.tls).await;
    }
}

fn read_first_token(path: &Path) -> Result<Option<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| l.split(',').next().map(|t| t.trim().to_string())))
}

/// Writes a kubeconfig that kubectl and kube-rs accept as it is.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> Result<(), Error> {
    use base64::Engine;
    let mut cluster = serde_json::json!({"server": server});
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] =
            serde_json::json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    let mut user = serde_json::json!({});
    if let Some(t) = token {
        user["token"] = serde_json::json!(t);
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubewire", "cluster": cluster}],
        "users": [{"name": "kubewire", "user": user}],
        "contexts": [{"name": "kubewire", "context": {"cluster": "kubewire", "user": "kubewire", "namespace": "default"}}],
        "current-context": "kubewire",
    });
    let text = serde_yaml::to_string(&doc).map_err(|e| Error::Config(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    // It may carry a bearer token: readable by its owner only, as kubeadm writes admin.conf.
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })
}
