//! Probes: a pure state machine per probe (when it is due, what a run of results means), and the
//! checker that runs one probe (`httpGet`, `tcpSocket`, `exec`) with its timeout.
//!
//! Rules (pkg/kubelet/prober): the first run is `initialDelaySeconds` after the container
//! started, then every `periodSeconds`; a result changes after `successThreshold` consecutive
//! successes or `failureThreshold` consecutive failures. Readiness starts as failure; liveness
//! and startup start as success/unknown. While a startup probe has not succeeded, liveness and
//! readiness do not run. A liveness failure, or a startup probe that never succeeds, restarts
//! the container; readiness only flips Ready.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

/// What the pod worker must do after a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeAction {
    /// Readiness changed.
    Ready(bool),
    /// The startup probe succeeded: the container counts as started.
    Started,
    /// Liveness (or startup) failed for good: kill and restart the container.
    Restart,
}

#[derive(Debug, Clone)]
pub(crate) struct ProbeMachine {
    pub kind: ProbeKind,
    initial_delay: Duration,
    period: Duration,
    pub timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    /// The current result.
    ok: bool,
    last_run: Option<Instant>,
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
}

fn count(v: Option<i32>, default: i32) -> u32 {
    u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1)
}

impl ProbeMachine {
    pub fn new(kind: ProbeKind, p: &Probe) -> Self {
        ProbeMachine {
            kind,
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            // Liveness and startup must have a success threshold of 1 (API validation).
            success_threshold: match kind {
                ProbeKind::Readiness => count(p.success_threshold, 1),
                _ => 1,
            },
            failure_threshold: count(p.failure_threshold, 3),
            successes: 0,
            failures: 0,
            ok: kind == ProbeKind::Liveness,
            last_run: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.ok
    }

    /// Whether the probe should run now, for a container that started at `started`.
    pub fn due(&self, started: Instant, now: Instant) -> bool {
        match self.last_run {
            None => now >= started + self.initial_delay,
            Some(last) => now >= last + self.period,
        }
    }

    /// Takes one result; returns what the worker must do, if anything.
    pub fn record(&mut self, now: Instant, success: bool) -> Option<ProbeAction> {
        self.last_run = Some(now);
        if success {
            self.failures = 0;
            self.successes += 1;
            if !self.ok && self.successes >= self.success_threshold {
                self.ok = true;
                return match self.kind {
                    ProbeKind::Readiness => Some(ProbeAction::Ready(true)),
                    ProbeKind::Startup => Some(ProbeAction::Started),
                    ProbeKind::Liveness => None,
                };
            }
            return None;
        }
        self.successes = 0;
        self.failures += 1;
        if self.failures < self.failure_threshold {
            return None;
        }
        match self.kind {
            ProbeKind::Readiness if self.ok => {
                self.ok = false;
                Some(ProbeAction::Ready(false))
            }
            ProbeKind::Readiness => None,
            // The container is killed; the next one starts with a fresh machine.
            ProbeKind::Liveness | ProbeKind::Startup => {
                self.failures = 0;
                Some(ProbeAction::Restart)
            }
        }
    }
}

/// Where and how to run a probe of one container.
pub(crate) struct Target<'a> {
    pub pod_ip: Option<IpAddr>,
    pub ports: &'a [ContainerPort],
    /// For exec probes: the argv prefix that enters the pod (`kubewire internal exec-in-pod ...
    /// --`) and the container's environment.
    pub exec_prefix: &'a [String],
    pub env: &'a [(String, String)],
}

fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(n) => Some(n),
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        },
    }
}

/// The probe's `host`, or the pod's IP when it has none.
fn target_ip(host: Option<&str>, pod_ip: Option<IpAddr>) -> std::io::Result<IpAddr> {
    match host.filter(|s| !s.is_empty()) {
        Some(host) => host
            .parse()
            .map_err(|_| std::io::Error::other(format!("probe host {host:?} is not an IP"))),
        None => pod_ip.ok_or_else(|| std::io::Error::other("the pod has no IP")),
    }
}

/// Runs the probe once; false on failure or timeout.
pub(crate) async fn check(probe: &Probe, timeout: Duration, t: &Target<'_>) -> bool {
    match tokio::time::timeout(timeout, run_once(probe, t)).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "probe failed");
            false
        }
        Err(_) => false,
    }
}

async fn run_once(probe: &Probe, t: &Target<'_>) -> std::io::Result<bool> {
    let bad = |m: &str| std::io::Error::other(m.to_string());
    if let Some(h) = &probe.http_get {
        let host = target_ip(h.host.as_deref(), t.pod_ip)?;
        let port = resolve_port(&h.port, t.ports).ok_or_else(|| bad("unknown probe port"))?;
        let path = h.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
        let addr = SocketAddr::new(host, port);
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for header in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", header.name, header.value));
        }
        req.push_str("\r\n");
        let stream = TcpStream::connect(addr).await?;
        let code = if h
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            let server_name = rustls::pki_types::ServerName::IpAddress(host.into());
            let tls = tokio_rustls::TlsConnector::from(probe_tls_config())
                .connect(server_name, stream)
                .await?;
            http_status(tls, &req).await?
        } else {
            http_status(stream, &req).await?
        };
        // 2xx and 3xx succeed (the kubelet does not follow redirects off the pod).
        return Ok((200..400).contains(&code));
    }
    if let Some(g) = &probe.grpc {
        let ip = t.pod_ip.ok_or_else(|| bad("the pod has no IP"))?;
        let port = u16::try_from(g.port).map_err(|_| bad("gRPC probe port out of range"))?;
        let status = grpc_health(
            SocketAddr::new(ip, port),
            g.service.as_deref().unwrap_or(""),
        )
        .await?;
        return Ok(status == GRPC_SERVING);
    }
    let tcp_port = probe
        .tcp_socket
        .as_ref()
        .map(|s| (&s.host, resolve_port(&s.port, t.ports)));
    if let Some((host, port)) = tcp_port {
        let host = target_ip(host.as_deref(), t.pod_ip)?;
        let port = port.ok_or_else(|| bad("unknown probe port"))?;
        TcpStream::connect(SocketAddr::new(host, port)).await?;
        return Ok(true);
    }
    if let Some(e) = &probe.exec {
        let command = e.command.as_deref().unwrap_or_default();
        let (program, args) = t.exec_prefix.split_first().ok_or_else(|| bad("no exec"))?;
        let status = tokio::process::Command::new(Path::new(program))
            .args(args)
            .args(command)
            .env_clear()
            .envs(t.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await?;
        return Ok(status.success());
    }
    Err(bad("probe has no handler"))
}

/// Sends `request` and reads the status code of the response's status line.
async fn http_status(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: &str,
) -> std::io::Result<u16> {
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io_error("no HTTP status line"))
}

/// TLS for HTTPS probes. Like the kubelet's, it does not verify the pod's certificate (pods
/// serve self-signed ones, and the probe targets an IP); it still checks that the server holds
/// the certificate's key.
fn probe_tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCertificate(rustls::crypto::WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let verifier = AnyCertificate(provider.signature_verification_algorithms);
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
                .with_no_client_auth();
            std::sync::Arc::new(config)
        })
        .clone()
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const GRPC_SERVING: u64 = 1;

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The gRPC Health Checking Protocol over plaintext HTTP/2, as the kubelet's gRPC probe: the
/// serving status the server reports for `service` (0, UNKNOWN, when it reports none).
async fn grpc_health(addr: SocketAddr, service: &str) -> std::io::Result<u64> {
    use http_body_util::BodyExt;
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(io_error)?;
    // Drives the connection; it ends when `sender` is dropped.
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(http_body_util::Full::new(bytes::Bytes::from(grpc_frame(
            &health_check_request(service),
        ))))
        .map_err(io_error)?;
    let response = sender.send_request(request).await.map_err(io_error)?;
    if response.status() != http::StatusCode::OK {
        return Err(io_error(format!(
            "gRPC health check answered HTTP {}",
            response.status()
        )));
    }
    let grpc_status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let in_headers = grpc_status(response.headers());
    let body = response.into_body().collect().await.map_err(io_error)?;
    match in_headers
        .or_else(|| body.trailers().and_then(grpc_status))
        .as_deref()
    {
        Some("0") | None => {}
        Some(code) => {
            return Err(io_error(format!(
                "gRPC health check failed with grpc-status {code}"
            )));
        }
    }
    health_check_status(&body.to_bytes())
        .ok_or_else(|| io_error("malformed gRPC health check response"))
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// `HealthCheckRequest { string service = 1; }` in protobuf wire format.
fn health_check_request(service: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !service.is_empty() {
        out.push(0x0a);
        push_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// A gRPC length-prefixed message: uncompressed flag, big-endian length, message.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The `status` (field 1) of a framed `HealthCheckResponse`; other fields are skipped.
fn health_check_status(frame: &[u8]) -> Option<u64> {
    let (&compressed, rest) = frame.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..4 + len)?;
    if compressed != 0 {
        return None;
    }
    let (mut at, mut status) = (0, 0);
    while at < message.len() {
        let tag = read_varint(message, &mut at)?;
        match tag & 7 {
            0 => {
                let v = read_varint(message, &mut at)?;
                if tag >> 3 == 1 {
                    status = v;
                }
            }
            1 => at += 8,
            2 => at += usize::try_from(read_varint(message, &mut at)?).ok()?,
            5 => at += 4,
            _ => return None,
        }
    }
    (at == message.len()).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: serde_json::Value) -> Probe {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn grpc_health_wire_format() {
        assert_eq!(health_check_request(""), Vec::<u8>::new());
        assert_eq!(health_check_request("db"), [0x0a, 2, b'd', b'b']);
        assert_eq!(grpc_frame(&[0x08, 1]), [0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(health_check_status(&grpc_frame(&[0x08, 1])), Some(1));
        assert_eq!(health_check_status(&grpc_frame(&[0x08, 2])), Some(2));
        assert_eq!(
            health_check_status(&grpc_frame(&[])),
            Some(0),
            "UNKNOWN when absent"
        );
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(
            health_check_status(&grpc_frame(&[0x12, 1, b'x', 0x08, 1])),
            Some(1)
        );
        assert_eq!(
            health_check_status(&[0, 0, 0, 0, 9, 0x08]),
            None,
            "truncated"
        );
        assert_eq!(
            health_check_status(&[0, 0, 0, 0, 1, 0x08]),
            None,
            "cut varint"
        );
    }

    /// A real HTTP/2 gRPC health server answering `status` (with grpc-status in the trailers).
    async fn health_server(status: u8) -> SocketAddr {
        use http_body_util::{BodyExt, StreamBody};
        use hyper::body::Frame;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let frames = vec![
                            Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from(
                                grpc_frame(&[0x08, status]),
                            ))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let body = StreamBody::new(futures::stream::iter(frames)).boxed();
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn grpc_probe_needs_serving_not_just_an_open_port() {
        assert_eq!(
            grpc_health(health_server(1).await, "").await.unwrap(),
            GRPC_SERVING
        );
        assert_eq!(
            grpc_health(health_server(2).await, "db").await.unwrap(),
            2,
            "NOT_SERVING"
        );
        // A port that speaks no gRPC is a failure, not a pass.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = plain.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        assert!(grpc_health(addr, "").await.is_err());
    }

    /// A TLS server with a self-signed certificate answering every request with `status`.
    async fn https_server(status: u16) -> SocketAddr {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["pod.local".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn https_probes_speak_tls_to_self_signed_servers() {
        let target = |addr: SocketAddr| (addr.ip(), addr.port());
        let run = |scheme: &'static str, (ip, port): (IpAddr, u16)| async move {
            let p = probe(
                serde_json::json!({"httpGet": {"scheme": scheme, "port": port, "path": "/healthz"}}),
            );
            run_once(
                &p,
                &Target {
                    pod_ip: Some(ip),
                    ports: &[],
                    exec_prefix: &[],
                    env: &[],
                },
            )
            .await
        };
        assert!(run("HTTPS", target(https_server(200).await)).await.unwrap());
        assert!(!run("HTTPS", target(https_server(500).await)).await.unwrap());
        // Plain HTTP to a TLS port gets no HTTP answer: a failure, not a pass.
        assert!(run("HTTP", target(https_server(200).await)).await.is_err());
    }

    #[test]
    fn due_after_initial_delay_then_every_period() {
        let m = ProbeMachine::new(
            ProbeKind::Readiness,
            &probe(serde_json::json!({"initialDelaySeconds": 5, "periodSeconds": 2})),
        );
        let t0 = Instant::now();
        assert!(!m.due(t0, t0 + Duration::from_secs(4)));
        assert!(m.due(t0, t0 + Duration::from_secs(5)));
        let mut m = m;
        m.record(t0 + Duration::from_secs(5), true);
        assert!(!m.due(t0, t0 + Duration::from_secs(6)));
        assert!(m.due(t0, t0 + Duration::from_secs(7)));
    }

    #[test]
    fn readiness_starts_false_and_flips_by_thresholds() {
        let mut m = ProbeMachine::new(
            ProbeKind::Readiness,
            &probe(serde_json::json!({"successThreshold": 2, "failureThreshold": 2})),
        );
        let t = Instant::now();
        assert!(!m.ok());
        assert_eq!(m.record(t, true), None);
        assert_eq!(m.record(t, true), Some(ProbeAction::Ready(true)));
        assert_eq!(m.record(t, true), None);
        assert_eq!(m.record(t, false), None);
        assert_eq!(
            m.record(t, true),
            None,
            "a success resets the failure count"
        );
        assert_eq!(m.record(t, false), None);
        assert_eq!(m.record(t, false), Some(ProbeAction::Ready(false)));
        assert_eq!(m.record(t, false), None, "already not ready");
        assert!(!m.ok());
    }

    #[test]
    fn liveness_restarts_after_failure_threshold() {
        let mut m = ProbeMachine::new(
            ProbeKind::Liveness,
            &probe(serde_json::json!({"failureThreshold": 3})),
        );
        let t = Instant::now();
        assert!(m.ok());
        assert_eq!(m.record(t, false), None);
        assert_eq!(m.record(t, false), None);
        assert_eq!(m.record(t, false), Some(ProbeAction::Restart));
        assert_eq!(m.record(t, true), None);
    }

    #[test]
    fn startup_gates_then_restarts_if_never_started() {
        let mut m = ProbeMachine::new(
            ProbeKind::Startup,
            &probe(serde_json::json!({"failureThreshold": 2, "successThreshold": 5})),
        );
        let t = Instant::now();
        assert!(!m.ok());
        assert_eq!(m.record(t, true), Some(ProbeAction::Started));
        let mut m = ProbeMachine::new(
            ProbeKind::Startup,
            &probe(serde_json::json!({"failureThreshold": 2})),
        );
        assert_eq!(m.record(t, false), None);
        assert_eq!(m.record(t, false), Some(ProbeAction::Restart));
    }

    #[test]
    fn named_ports_resolve_from_container_ports() {
        let ports: Vec<ContainerPort> =
            serde_json::from_value(serde_json::json!([{"name": "http", "containerPort": 8080}]))
                .unwrap();
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &ports),
            Some(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &ports), Some(81));
        assert_eq!(
            resolve_port(&IntOrString::String("nope".into()), &ports),
            None
        );
    }
}
