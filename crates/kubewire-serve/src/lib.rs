//! `kubewire serve`: the built-in image the lab kubelet runs for a container with no command, a
//! small test server in the spirit of the upstream e2e image `agnhost netexec`.
//!
//! What it is: HTTP/1.1 (and h2c) on every `--http-port` (8080 when none is given) with
//! `/hostname`, `/clientip`, `/echo?msg=`, `/healthz` and `/readyz` (which `POST /readyz?fail=true`
//! makes fail, shared by every port of the process); an echo on every `--udp-port` and
//! `--sctp-port` that also answers agnhost's `hostname`, `clientip` and `echo MSG` commands. Every
//! listener is dual-stack unless `--address` says otherwise.
//!
//! What it is not: agnhost. There is no `/shell`, `/dial`, `/upload`, `/exit` or TLS, and it is
//! made for test traffic, not for the open internet. Malformed input is answered or dropped, never
//! fatal.

mod command;
mod http;
mod listen;
mod stream;
mod udp;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;

use crate::listen::BindAddr;

/// The port HTTP is served on when no `--http-port` is given (agnhost's default, too).
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// Arguments of `kubewire serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Serve HTTP on this TCP port (repeatable; 0 picks a free port). With no --http-port, HTTP
    /// is served on 8080.
    #[arg(long = "http-port", value_name = "PORT")]
    pub http_ports: Vec<u16>,
    /// Echo datagrams on this UDP port (repeatable). The datagrams `hostname` and `clientip` are
    /// answered with the name and the sender's IP:PORT, `echo MSG` with MSG, anything else with
    /// itself.
    #[arg(long = "udp-port", value_name = "PORT")]
    pub udp_ports: Vec<u16>,
    /// Echo messages on this SCTP port (repeatable), answering the same commands as UDP. Needs
    /// SCTP in the kernel (the `sctp` module).
    #[arg(long = "sctp-port", value_name = "PORT")]
    pub sctp_ports: Vec<u16>,
    /// The name /hostname answers with [default: the system hostname].
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub name: Option<String>,
    /// On SIGTERM keep serving this many seconds, then exit 0 (SIGINT still exits at once).
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_delay: Option<u64>,
    /// Listen on this address only (repeatable) instead of every address of both families.
    #[arg(long = "address", value_name = "IP")]
    pub addresses: Vec<IpAddr>,
}

/// Why the server could not start. The `Display` text is one line without the cause; the cause
/// is the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be created or bound.
    #[error("cannot listen on {protocol} {addr}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The kernel has no SCTP (no `sctp` module, or it is not built in).
    #[error(
        "cannot listen on SCTP port {port}: this kernel has no SCTP support (load the sctp module \
         with `modprobe sctp`, or drop the SCTP port)"
    )]
    SctpUnavailable {
        port: u16,
        #[source]
        source: io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signal(#[source] io::Error),
}

/// What every listener of one process shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What `/hostname` and the `hostname` datagram answer.
    pub(crate) name: String,
    /// What `/readyz` answers; `POST /readyz?fail=` flips it.
    pub(crate) ready: AtomicBool,
}

/// A server whose sockets are bound (so their ports are known) but not yet served.
pub struct BoundServer {
    shared: Arc<Shared>,
    http: Vec<(SocketAddr, TcpListener)>,
    udp: Vec<(SocketAddr, UdpSocket)>,
    sctp: Vec<(SocketAddr, TcpListener)>,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("name", &self.shared.name)
            .field("http", &self.http_addrs())
            .field("udp", &self.udp_addrs())
            .field("sctp", &self.sctp_addrs())
            .finish()
    }
}

impl BoundServer {
    /// Binds every listener `args` asks for. Must be called inside a tokio runtime.
    pub async fn bind(args: &ServeArgs) -> Result<Self, ServeError> {
        let name = args
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map_or_else(system_hostname, str::to_owned);
        let shared = Arc::new(Shared {
            name,
            ready: AtomicBool::new(true),
        });
        let binds = |port: u16| -> Vec<BindAddr> {
            if args.addresses.is_empty() {
                vec![BindAddr::AnyDualStack(port)]
            } else {
                args.addresses
                    .iter()
                    .map(|ip| BindAddr::Exact(SocketAddr::new(*ip, port)))
                    .collect()
            }
        };

        let mut server = BoundServer {
            shared,
            http: Vec::new(),
            udp: Vec::new(),
            sctp: Vec::new(),
        };
        for port in http_ports(args) {
            for bind in binds(port) {
                let listener = listen::tcp(bind).map_err(|source| ServeError::Bind {
                    protocol: "TCP",
                    addr: bind.addr(),
                    source,
                })?;
                let addr = listener.local_addr().unwrap_or(bind.addr());
                server.http.push((addr, listener));
            }
        }
        for &port in &args.udp_ports {
            for bind in binds(port) {
                let socket = listen::udp(bind).map_err(|source| ServeError::Bind {
                    protocol: "UDP",
                    addr: bind.addr(),
                    source,
                })?;
                let addr = socket.local_addr().unwrap_or(bind.addr());
                server.udp.push((addr, socket));
            }
        }
        for &port in &args.sctp_ports {
            for bind in binds(port) {
                let socket = listen::sctp(bind).map_err(|source| {
                    if listen::is_protocol_unsupported(&source) {
                        ServeError::SctpUnavailable { port, source }
                    } else {
                        ServeError::Bind {
                            protocol: "SCTP",
                            addr: bind.addr(),
                            source,
                        }
                    }
                })?;
                let addr = socket.local_addr().unwrap_or(bind.addr());
                server.sctp.push((addr, socket));
            }
        }
        Ok(server)
    }

    /// The name `/hostname` answers with.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The bound HTTP addresses (a dual-stack listener shows as `[::]:PORT`).
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http.iter().map(|(a, _)| *a).collect()
    }

    /// The bound UDP addresses.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|(a, _)| *a).collect()
    }

    /// The bound SCTP addresses.
    pub fn sctp_addrs(&self) -> Vec<SocketAddr> {
        self.sctp.iter().map(|(a, _)| *a).collect()
    }

    /// Serves every listener until `shutdown` completes, then stops them all (open connections
    /// included) and returns `Ok`. Returns early only if a listener fails for good.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let mut tasks: JoinSet<Result<(), ServeError>> = JoinSet::new();
        for (addr, listener) in self.http {
            tracing::info!(%addr, name = %self.shared.name, "serving HTTP");
            tasks.spawn(http::serve(listener, addr, Arc::clone(&self.shared)));
        }
        for (addr, socket) in self.udp {
            tracing::info!(%addr, "serving UDP echo");
            tasks.spawn(udp::serve(socket, Arc::clone(&self.shared)));
        }
        for (addr, socket) in self.sctp {
            tracing::info!(%addr, "serving SCTP echo");
            tasks.spawn(stream::serve(
                socket,
                addr,
                "SCTP",
                Arc::clone(&self.shared),
            ));
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                Some(done) = tasks.join_next() => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => tracing::error!("a listener task ended: {e}"),
                },
            }
        }
    }

    /// Serves until SIGTERM or SIGINT. After SIGTERM it keeps serving for `shutdown_delay` (if
    /// any), so a graceful-termination test sees a terminating pod that still answers; SIGINT
    /// ends that wait early.
    pub async fn serve_until_terminated(
        self,
        shutdown_delay: Option<Duration>,
    ) -> Result<(), ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {
                    if let Some(delay) = shutdown_delay {
                        tracing::info!("SIGTERM: serving {} s more before exiting", delay.as_secs());
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            _ = int.recv() => {}
                        }
                    }
                }
                _ = int.recv() => {}
            }
        };
        self.serve(shutdown).await
    }
}

/// `kubewire serve`: binds every listener, serves until SIGTERM (plus `--shutdown-delay`) or
/// SIGINT, and returns `Ok` then.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let server = BoundServer::bind(&args).await?;
    let delay = args.shutdown_delay.map(Duration::from_secs);
    server.serve_until_terminated(delay).await?;
    Ok(())
}

/// The HTTP ports to serve: the ones asked for, or 8080 (the issue's "8080 when no TCP
/// containerPort is declared", whatever UDP or SCTP ports there are).
fn http_ports(args: &ServeArgs) -> Vec<u16> {
    if args.http_ports.is_empty() {
        vec![DEFAULT_HTTP_PORT]
    } else {
        args.http_ports.clone()
    }
}

/// The kernel's hostname (the UTS namespace's), as agnhost's `os.Hostname()` reads it.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_parse_and_http_defaults_to_8080() {
        let cli = Cli::try_parse_from([
            "serve",
            "--http-port",
            "80",
            "--http-port",
            "8443",
            "--udp-port",
            "53",
            "--sctp-port",
            "9999",
            "--name",
            "web-1",
            "--shutdown-delay",
            "5",
        ])
        .expect("parse");
        assert_eq!(cli.serve.http_ports, [80, 8443]);
        assert_eq!(http_ports(&cli.serve), [80, 8443]);
        assert_eq!(cli.serve.udp_ports, [53]);
        assert_eq!(cli.serve.sctp_ports, [9999]);
        assert_eq!(cli.serve.name.as_deref(), Some("web-1"));
        assert_eq!(cli.serve.shutdown_delay, Some(5));

        let udp_only = Cli::try_parse_from(["serve", "--udp-port", "53"]).expect("parse");
        assert_eq!(http_ports(&udp_only.serve), [DEFAULT_HTTP_PORT]);
        assert!(Cli::try_parse_from(["serve", "--http-port", "70000"]).is_err());
    }

    #[test]
    fn hostname_is_never_empty() {
        assert!(!system_hostname().is_empty());
    }
}
