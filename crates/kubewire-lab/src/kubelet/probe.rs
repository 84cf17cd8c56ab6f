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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return Err(bad("HTTPS probes are not supported"));
        }
        let port = resolve_port(&h.port, t.ports).ok_or_else(|| bad("unknown probe port"))?;
        let path = h.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
        let mut stream = TcpStream::connect(SocketAddr::new(host, port)).await?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n",
            SocketAddr::new(host, port)
        );
        for header in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", header.name, header.value));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let code: u16 = String::from_utf8_lossy(&head)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("no HTTP status line"))?;
        // 2xx and 3xx succeed (the kubelet does not follow redirects off the pod).
        return Ok((200..400).contains(&code));
    }
    let tcp_port = probe
        .tcp_socket
        .as_ref()
        .map(|s| (&s.host, resolve_port(&s.port, t.ports)))
        .or_else(|| {
            // gRPC probes are checked as a TCP connect (no gRPC health client in the lab).
            probe
                .grpc
                .as_ref()
                .map(|g| (&None, u16::try_from(g.port).ok()))
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: serde_json::Value) -> Probe {
        serde_json::from_value(json).unwrap()
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
