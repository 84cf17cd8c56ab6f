//! The proxy's HTTP health endpoints, as kube-proxy serves them:
//!
//! - one server per `healthCheckNodePort` of a `LoadBalancer` Service with
//!   `externalTrafficPolicy: Local`, telling the load balancer whether this node has a ready
//!   endpoint of it (`pkg/proxy/healthcheck/service_health.go`): any path, `200` when it has
//!   one and the proxy is healthy, else `503`, with a JSON body;
//! - `/healthz` and `/livez` on the proxy's own address (`:10256`), `200` while the rules are
//!   current, `503` when programming has stalled; `/healthz` also fails while the node is being
//!   deleted (KEP-3836), so load balancers drain it first.
//!
//! The same servers serve the [`metrics`](crate::metrics) at `/metrics` (kube-proxy's `:10249`).
//!
//! The answers are pure functions of [`HealthState`]; the servers only read it.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kubewire_datapath::NetNs;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::model::ServiceHealth;

/// Programming that has failed for longer than this makes the proxy unhealthy (kube-proxy:
/// twice its sync period).
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// What the health answers are computed from.
#[derive(Debug, Clone, Default)]
pub struct HealthState {
    pub services: BTreeMap<u16, ServiceHealth>,
    /// When the rules were last applied successfully.
    pub last_updated: Option<SystemTime>,
    /// Since when applying has been failing (none while it succeeds).
    pub failing_since: Option<SystemTime>,
    /// False while this node's Node object is being deleted.
    pub node_eligible: bool,
}

impl HealthState {
    /// Healthy once the rules have been applied, and while failures have not lasted
    /// [`STALL_LIMIT`].
    pub fn proxy_healthy(&self, now: SystemTime) -> bool {
        self.last_updated.is_some()
            && self
                .failing_since
                .is_none_or(|t| now.duration_since(t).unwrap_or_default() < STALL_LIMIT)
    }

    /// The answer of the health-check server on `port`.
    pub fn service_answer(&self, port: u16, now: SystemTime) -> (StatusCode, String) {
        let healthy = self.proxy_healthy(now);
        let Some(svc) = self.services.get(&port) else {
            return (StatusCode::SERVICE_UNAVAILABLE, String::new());
        };
        let body = format!(
            r#"{{"service":{{"namespace":{},"name":{}}},"localEndpoints":{},"serviceProxyHealthy":{healthy}}}"#,
            json_string(&svc.namespace),
            json_string(&svc.name),
            svc.local_endpoints
        );
        let status = if svc.local_endpoints > 0 && healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body)
    }

    /// The answer of the proxy's own `/healthz` (`node_matters`) or `/livez`.
    pub fn proxy_answer(&self, node_matters: bool, now: SystemTime) -> (StatusCode, String) {
        let rfc3339 = |t: Option<SystemTime>| {
            t.and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map_or_else(String::new, |t| t.to_string())
        };
        let healthy = self.proxy_healthy(now) && (!node_matters || self.node_eligible);
        let body = format!(
            r#"{{"lastUpdated":"{}","currentTime":"{}","nodeEligible":{}}}"#,
            rfc3339(self.last_updated),
            rfc3339(Some(now)),
            self.node_eligible
        );
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body)
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Netns(#[from] kubewire_datapath::Error),
}

/// Which endpoint a server answers for.
#[derive(Debug, Clone, Copy)]
enum Answers {
    Service(u16),
    Proxy,
    Metrics,
}

/// The running servers, in one network namespace.
pub struct HealthServers {
    ns: NetNs,
    shared: Shared,
    services: HashMap<u16, JoinHandle<()>>,
    own: Vec<JoinHandle<()>>,
}

/// What every server reads.
#[derive(Clone)]
struct Shared {
    state: Arc<RwLock<HealthState>>,
    registry: Arc<Registry>,
}

impl HealthServers {
    pub fn new(
        ns: NetNs,
        state: Arc<RwLock<HealthState>>,
        registry: Arc<Registry>,
    ) -> HealthServers {
        HealthServers {
            ns,
            shared: Shared { state, registry },
            services: HashMap::new(),
            own: Vec::new(),
        }
    }

    /// Serves `/healthz` and `/livez` on `addr`.
    pub fn serve_proxy(&mut self, addr: SocketAddr) -> Result<(), HealthError> {
        let listener = self.listen(addr)?;
        self.own
            .push(spawn(listener, Answers::Proxy, self.shared.clone()));
        Ok(())
    }

    /// Serves `/metrics` on `addr`.
    pub fn serve_metrics(&mut self, addr: SocketAddr) -> Result<(), HealthError> {
        let listener = self.listen(addr)?;
        self.own
            .push(spawn(listener, Answers::Metrics, self.shared.clone()));
        Ok(())
    }

    /// Runs exactly one server per port in the state's services (on every address of the
    /// node). A port that cannot be opened is reported and retried on the next call.
    pub fn converge(&mut self) -> Vec<HealthError> {
        let wanted: Vec<u16> = match self.shared.state.read() {
            Ok(s) => s.services.keys().copied().collect(),
            Err(_) => return Vec::new(),
        };
        self.services.retain(|port, task| {
            let keep = wanted.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut errors = Vec::new();
        for port in wanted {
            if self.services.contains_key(&port) {
                continue;
            }
            match self.listen(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))) {
                Ok(l) => {
                    let server = spawn(l, Answers::Service(port), self.shared.clone());
                    self.services.insert(port, server);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// A listener created inside the namespace (a socket belongs to the namespace it was made
    /// in); `[::]` takes both families.
    fn listen(&self, addr: SocketAddr) -> Result<tokio::net::TcpListener, HealthError> {
        let listen_err = |source| HealthError::Listen { addr, source };
        let std_listener = self
            .ns
            .run(move || std::net::TcpListener::bind(addr))?
            .map_err(listen_err)?;
        std_listener.set_nonblocking(true).map_err(listen_err)?;
        tokio::net::TcpListener::from_std(std_listener).map_err(listen_err)
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for task in self.services.values().chain(&self.own) {
            task.abort();
        }
    }
}

fn spawn(listener: tokio::net::TcpListener, answers: Answers, shared: Shared) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let response = respond(&shared, answers, req.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn respond(shared: &Shared, answers: Answers, path: &str) -> Response<Full<Bytes>> {
    let now = SystemTime::now();
    if let Answers::Metrics = answers {
        let (status, body) = if path == "/metrics" {
            (StatusCode::OK, crate::metrics::encode(&shared.registry))
        } else {
            (StatusCode::NOT_FOUND, String::new())
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return response;
    }
    let (status, body) = match (shared.state.read(), answers) {
        (Err(_), _) | (_, Answers::Metrics) => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        (Ok(s), Answers::Service(port)) => s.service_answer(port, now),
        (Ok(s), Answers::Proxy) => match path {
            "/healthz" => s.proxy_answer(true, now),
            "/livez" => s.proxy_answer(false, now),
            _ => (StatusCode::NOT_FOUND, String::new()),
        },
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if matches!(answers, Answers::Service(_)) {
        headers.insert(
            "X-Load-Balancing-Endpoint-Weight",
            HeaderValue::from_static("1"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(local_endpoints: usize) -> HealthState {
        HealthState {
            services: [(
                30500,
                ServiceHealth {
                    namespace: "default".into(),
                    name: "web".into(),
                    local_endpoints,
                },
            )]
            .into(),
            last_updated: Some(SystemTime::UNIX_EPOCH),
            failing_since: None,
            node_eligible: true,
        }
    }

    #[test]
    fn service_health_needs_a_local_endpoint_and_a_healthy_proxy() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let (status, body) = state(2).service_answer(30500, now);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"service":{"namespace":"default","name":"web"},"localEndpoints":2,"serviceProxyHealthy":true}"#
        );
        assert_eq!(
            state(0).service_answer(30500, now).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let mut stalled = state(2);
        stalled.failing_since = Some(SystemTime::UNIX_EPOCH);
        let (status, body) = stalled.service_answer(30500, now);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.ends_with(r#""serviceProxyHealthy":false}"#));
        let mut briefly = state(2);
        briefly.failing_since = Some(now - Duration::from_secs(5));
        assert_eq!(briefly.service_answer(30500, now).0, StatusCode::OK);
    }

    #[test]
    fn healthz_fails_while_the_node_is_deleted_and_livez_does_not() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut s = state(1);
        assert_eq!(s.proxy_answer(true, now).0, StatusCode::OK);
        s.node_eligible = false;
        let (status, body) = s.proxy_answer(true, now);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains(r#""lastUpdated":"1970-01-01T00:00:00Z""#),
            "{body}"
        );
        assert!(body.ends_with(r#""nodeEligible":false}"#), "{body}");
        assert_eq!(s.proxy_answer(false, now).0, StatusCode::OK);
        let never = HealthState::default();
        assert_eq!(
            never.proxy_answer(false, now).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
