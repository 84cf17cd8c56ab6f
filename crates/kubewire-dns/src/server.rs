//! The running server: reflectors for Services and EndpointSlices feed an [`Index`] that is
//! rebuilt on change and swapped in whole; UDP and TCP listeners answer from whichever index is
//! current, each query on its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kubewire_controllers::watch::{WatchEnded, reflect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::forward::Forwarder;
use crate::message::{Outcome, answer, encode, error, formerr_for, response_to, udp_limit};
use crate::records::Index;

/// Changes often come in bursts (a Service, then its slices): wait this long before a rebuild.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A TCP client idle this long is dropped (RFC 7766 §6.2.3 suggests seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// DNS over TCP frames a message with a 16-bit length (RFC 1035 §4.2.2).
const TCP_LIMIT: usize = 65535;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0}")]
    Watch(#[from] WatchEnded),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cluster domain {domain:?} is not a DNS name: {source}")]
    Domain {
        domain: String,
        source: hickory_proto::ProtoError,
    },
    #[error("a listener task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What the server answers for besides the API objects.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster domain, e.g. `cluster.local.`.
    pub cluster_domain: Name,
    /// Where names outside the cluster go; without one they are REFUSED.
    pub upstream: Option<SocketAddr>,
}

impl Config {
    pub fn new(cluster_domain: &str, upstream: Option<SocketAddr>) -> Result<Config, DnsError> {
        let mut name = Name::from_ascii(cluster_domain).map_err(|source| DnsError::Domain {
            domain: cluster_domain.to_string(),
            source,
        })?;
        name.set_fqdn(true);
        Ok(Config {
            cluster_domain: name,
            upstream,
        })
    }
}

/// A UDP socket and a TCP listener on one port per listen address, bound before the server
/// starts so that a caller (a test) can bind port 0 and learn the port.
pub struct Sockets {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl Sockets {
    /// Binds UDP and TCP on each address. For port 0, TCP takes the port UDP was given (retried
    /// a few times, since that TCP port may be in use).
    pub async fn bind(addrs: &[SocketAddr]) -> Result<Sockets, DnsError> {
        let mut sockets = Sockets {
            udp: Vec::new(),
            tcp: Vec::new(),
        };
        for &addr in addrs {
            let bind = |source| DnsError::Bind { addr, source };
            let mut tries = if addr.port() == 0 { 10 } else { 1 };
            loop {
                tries -= 1;
                let udp = UdpSocket::bind(addr).await.map_err(bind)?;
                let bound = udp.local_addr().map_err(bind)?;
                match TcpListener::bind(bound).await {
                    Ok(tcp) => {
                        sockets.udp.push(udp);
                        sockets.tcp.push(tcp);
                        break;
                    }
                    Err(e) if tries == 0 => return Err(bind(e)),
                    Err(_) => continue,
                }
            }
        }
        Ok(sockets)
    }

    /// The addresses bound, one per listen address (UDP and TCP share it).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

/// Serves the cluster zone of the API behind `client` on `sockets` until an error.
pub async fn serve(client: kube::Client, config: Config, sockets: Sockets) -> Result<(), DnsError> {
    let services = reflect(Api::<Service>::all(client.clone()), "dns: Service").await?;
    let slices = reflect(Api::<EndpointSlice>::all(client), "dns: EndpointSlice").await?;
    let build = || {
        Arc::new(Index::build(
            &config.cluster_domain,
            services.store.state().iter().map(AsRef::as_ref),
            slices.store.state().iter().map(AsRef::as_ref),
            serial(),
        ))
    };
    let (current, index) = watch::channel(build());
    let handler = Arc::new(Handler {
        index,
        forwarder: config.upstream.map(Forwarder::new),
    });
    let mut tasks = JoinSet::new();
    for socket in sockets.udp {
        tasks.spawn(serve_udp(Arc::new(socket), handler.clone()));
    }
    for listener in sockets.tcp {
        tasks.spawn(serve_tcp(listener, handler.clone()));
    }
    tracing::info!(zone = %config.cluster_domain, "dns: serving");
    loop {
        tokio::select! {
            () = services.changed.notified() => {}
            () = slices.changed.notified() => {}
            Some(ended) = tasks.join_next() => {
                // Listener loops run forever; one ends only by panicking.
                ended?;
                return Ok(());
            }
        }
        tokio::time::sleep(DEBOUNCE).await;
        current.send_replace(build());
    }
}

/// The SOA serial: the build's unix time, which grows with every rebuild a second apart (as
/// CoreDNS's, the informers' last-modified time); truncated to 32 bits by RFC 1982 arithmetic.
fn serial() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs & u64::from(u32::MAX)) as u32
}

/// What every query needs: the current index and the upstream.
struct Handler {
    index: watch::Receiver<Arc<Index>>,
    forwarder: Option<Forwarder>,
}

impl Handler {
    /// The response to one packet, encoded within what the transport allows, or nothing when
    /// the packet deserves no answer.
    async fn handle(&self, packet: &[u8], limit_of: impl Fn(&Message) -> usize) -> Option<Vec<u8>> {
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!("dns: undecodable packet: {e}");
                return formerr_for(packet);
            }
        };
        if request.message_type != MessageType::Query {
            return None;
        }
        let index = self.index.borrow().clone();
        let mut response = match answer(&index, &request) {
            Outcome::Reply(response) => response,
            Outcome::Forward => self.forward(&request).await,
            Outcome::Chase {
                response,
                target,
                qtype,
            } => self.chase(response, target, qtype).await,
        };
        // We recurse (by forwarding) exactly when there is an upstream.
        response.metadata.recursion_available = self.forwarder.is_some();
        match encode(&response, limit_of(&request)) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!("dns: encoding a response: {e}");
                error(&request, ResponseCode::ServFail).to_vec().ok()
            }
        }
    }

    async fn forward(&self, request: &Message) -> Message {
        let Some(forwarder) = &self.forwarder else {
            return error(request, ResponseCode::Refused);
        };
        // `answer` forwards only single-question queries.
        let Some(query) = request.queries.first() else {
            return error(request, ResponseCode::FormErr);
        };
        match forwarder.resolve(query).await {
            Ok(upstream) => {
                let mut response = response_to(request);
                response.metadata.response_code = upstream.response_code;
                response.answers = upstream.answers;
                response.authorities = upstream.authorities;
                response.additionals = upstream.additionals;
                response
            }
            Err(e) => {
                tracing::debug!("dns: forwarding {}: {e}", query.name());
                error(request, ResponseCode::ServFail)
            }
        }
    }

    /// An ExternalName's CNAME completed with the upstream's records for its target; the CNAME
    /// alone when that fails, which a client can still follow itself.
    async fn chase(&self, mut response: Message, target: Name, qtype: RecordType) -> Message {
        let Some(forwarder) = &self.forwarder else {
            return response;
        };
        match forwarder
            .resolve(&Query::query(target.clone(), qtype))
            .await
        {
            Ok(upstream) => {
                // The code describes the end of the chain (RFC 6604 §3).
                response.metadata.response_code = upstream.response_code;
                response.answers.extend(upstream.answers);
            }
            Err(e) => tracing::debug!("dns: resolving ExternalName target {target}: {e}"),
        }
        response
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, handler: Arc<Handler>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors from earlier sends surface here on Linux; they concern one peer only.
            Err(e) => {
                tracing::debug!("dns: UDP receive: {e}");
                continue;
            }
        };
        let packet = buf[..len].to_vec();
        let (socket, handler) = (socket.clone(), handler.clone());
        tokio::spawn(async move {
            if let Some(bytes) = handler.handle(&packet, udp_limit).await
                && let Err(e) = socket.send_to(&bytes, peer).await
            {
                tracing::debug!("dns: UDP send to {peer}: {e}");
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(tcp_connection(stream, handler.clone()));
            }
            // Out of descriptors, or a connection reset before accept: others may still come.
            Err(e) => {
                tracing::warn!("dns: TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Queries on one connection, answered in order until the client goes quiet or away.
async fn tcp_connection(mut stream: TcpStream, handler: Arc<Handler>) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut packet = vec![0u8; usize::from(len)];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(bytes) = handler.handle(&packet, |_| TCP_LIMIT).await else {
            continue;
        };
        // `encode` keeps it within 16 bits.
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
