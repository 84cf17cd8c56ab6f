//! The Pod status as the kubelet reports it (`kubelet_pods.go` `generateAPIPodStatus`,
//! `getPhase`; `status/generate.go`), computed from the runtime's view of the pod.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::container::{RestartPolicy, RunState};

/// One container as the runtime sees it.
#[derive(Debug, Clone)]
pub(crate) struct ContainerView<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub state: &'a RunState,
    pub last: Option<&'a RunState>,
    pub restart_count: u32,
    pub started: bool,
    pub ready: bool,
}

/// The pod as the runtime sees it.
#[derive(Debug, Clone)]
pub(crate) struct PodView<'a> {
    pub init: Vec<ContainerView<'a>>,
    pub containers: Vec<ContainerView<'a>>,
    pub policy: RestartPolicy,
    pub pod_ips: &'a [IpAddr],
    pub host_ips: &'a [IpAddr],
    pub start_time: jiff::Timestamp,
}

fn state_of(s: &RunState) -> ContainerState {
    match s {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        RunState::Running { started_at, .. } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        RunState::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
            pid,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(reason.clone()),
                started_at: started_at.map(Time),
                finished_at: Some(Time(*finished_at)),
                container_id: pid.map(container_id),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn container_id(pid: i32) -> String {
    format!("kubewire://{pid}")
}

fn container_status(c: &ContainerView<'_>) -> ContainerStatus {
    let id = match c.state {
        RunState::Running { pid, .. } => Some(*pid),
        RunState::Terminated { pid, .. } => *pid,
        RunState::Waiting { .. } => None,
    };
    ContainerStatus {
        name: c.name.to_string(),
        image: c.image.to_string(),
        image_id: format!("kubewire://{}", c.image),
        container_id: id.map(container_id),
        ready: c.ready,
        started: Some(c.started),
        restart_count: i32::try_from(c.restart_count).unwrap_or(i32::MAX),
        state: Some(state_of(c.state)),
        last_state: c.last.map(state_of),
        ..Default::default()
    }
}

/// `getPhase`: containers waiting for their first start keep the pod Pending; a running one
/// makes it Running; when all have stopped, the restart policy and exit codes decide.
pub(crate) fn phase(v: &PodView<'_>) -> &'static str {
    let init_failed = v
        .init
        .iter()
        .any(|c| matches!(c.state, RunState::Terminated { exit_code, .. } if *exit_code != 0));
    if init_failed && v.policy == RestartPolicy::Never {
        return "Failed";
    }
    let initializing = v
        .init
        .iter()
        .any(|c| !matches!(c.state, RunState::Terminated { exit_code: 0, .. }));
    if initializing {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &v.containers {
        match c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } if c.last.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match v.policy {
            RestartPolicy::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            RestartPolicy::Never => "Failed",
            RestartPolicy::OnFailure => "Running",
        }
    } else {
        "Pending"
    }
}

fn condition(
    prev: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    now: jiff::Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: if ok { None } else { reason.map(str::to_string) },
        last_transition_time: Some(since),
        ..Default::default()
    }
}

/// The value of a resource quantity ("500m", "1.5", "128Mi", "2G", "1e3"), or `None` if it does
/// not parse. Precise enough to compare requests with limits.
fn quantity(q: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let q = q.trim();
    for (suffix, factor) in SUFFIXES {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse().ok()
}

/// The pod's QoS class, by upstream's rules (`GetPodQOS`): BestEffort when no container asks
/// for or limits cpu or memory; Guaranteed when every container limits both and asks for
/// exactly its limits (an unset request defaults to the limit); Burstable otherwise.
pub(crate) fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let containers: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    let nonzero = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
                   r: &str| {
        m.and_then(|m| m.get(r))
            .and_then(|q| quantity(&q.0))
            .is_some_and(|v| v != 0.0)
    };
    let any = containers.iter().any(|c| {
        let res = c.resources.as_ref();
        ["cpu", "memory"].iter().any(|r| {
            nonzero(res.and_then(|r| r.requests.as_ref()), r)
                || nonzero(res.and_then(|r| r.limits.as_ref()), r)
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let res = c.resources.as_ref();
        let limits = res.and_then(|r| r.limits.as_ref());
        let requests = res.and_then(|r| r.requests.as_ref());
        ["cpu", "memory"].iter().all(|r| {
            let Some(limit) = limits.and_then(|l| l.get(*r)).and_then(|q| quantity(&q.0)) else {
                return false;
            };
            let request = requests
                .and_then(|m| m.get(*r))
                .and_then(|q| quantity(&q.0))
                .unwrap_or(limit);
            limit != 0.0 && (request - limit).abs() <= limit.abs() * 1e-9
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The status the kubelet reports for `pod`. `prev` are the conditions last reported (for
/// transition times); readiness gates are read from the pod's own status.
pub(crate) fn pod_status(
    pod: &Pod,
    prev: &[PodCondition],
    v: &PodView<'_>,
    now: jiff::Timestamp,
) -> PodStatus {
    let phase = phase(v);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let initialized = v
        .init
        .iter()
        .all(|c| matches!(c.state, RunState::Terminated { exit_code: 0, .. }));
    let containers_ready = !terminal && v.containers.iter().all(|c| c.ready);
    let gates_ready = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .all(|g| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        });
    let not_ready = if terminal {
        "PodCompleted"
    } else if !containers_ready {
        "ContainersNotReady"
    } else {
        "ReadinessGatesNotReady"
    };
    let conditions = vec![
        condition(prev, "PodScheduled", true, None, now),
        condition(
            prev,
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            now,
        ),
        condition(
            prev,
            "ContainersReady",
            containers_ready,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            now,
        ),
        condition(
            prev,
            "Ready",
            containers_ready && gates_ready,
            Some(not_ready),
            now,
        ),
    ];
    let first = |ips: &[IpAddr]| ips.first().map(IpAddr::to_string);
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        pod_ip: first(v.pod_ips),
        pod_ips: Some(
            v.pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.to_string() })
                .collect(),
        ),
        host_ip: first(v.host_ips),
        host_ips: Some(
            v.host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.to_string() })
                .collect(),
        ),
        start_time: Some(Time(v.start_time)),
        qos_class: Some(qos_class(pod).into()),
        init_container_statuses: (!v.init.is_empty())
            .then(|| v.init.iter().map(container_status).collect()),
        container_statuses: Some(v.containers.iter().map(container_status).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes_follow_upstream() {
        let with = |resources: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": resources}]}})).unwrap()
        };
        assert_eq!(qos_class(&with(serde_json::json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&with(serde_json::json!({"requests": {"cpu": "0"}}))),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&with(serde_json::json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&with(
                serde_json::json!({"limits": {"cpu": "1", "memory": "128Mi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&with(
                serde_json::json!({"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"cpu": "1000m", "memory": "134217728"}})
            )),
            "Guaranteed",
            "quantities compare by value"
        );
        assert_eq!(
            qos_class(&with(
                serde_json::json!({"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"cpu": "500m"}})
            )),
            "Burstable"
        );
        assert_eq!(
            qos_class(&with(serde_json::json!({"limits": {"cpu": "1"}}))),
            "Burstable",
            "memory unlimited"
        );
        assert_eq!(quantity("2Gi"), Some(2147483648.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("lots"), None);
    }

    const T: jiff::Timestamp = jiff::Timestamp::UNIX_EPOCH;

    fn running() -> RunState {
        RunState::Running {
            pid: 42,
            started_at: T,
        }
    }

    fn exited(code: i32) -> RunState {
        RunState::exited(code, 42, Some(T), T)
    }

    fn view<'a>(
        states: &'a [(RunState, Option<RunState>, bool)],
        policy: RestartPolicy,
    ) -> PodView<'a> {
        PodView {
            init: Vec::new(),
            containers: states
                .iter()
                .map(|(s, last, ready)| ContainerView {
                    name: "app",
                    image: "serve",
                    state: s,
                    last: last.as_ref(),
                    restart_count: 0,
                    started: true,
                    ready: *ready,
                })
                .collect(),
            policy,
            pod_ips: &[],
            host_ips: &[],
            start_time: T,
        }
    }

    #[test]
    fn phases() {
        use RestartPolicy::*;
        let w = RunState::waiting("ContainerCreating");
        let crash = RunState::waiting("CrashLoopBackOff");
        assert_eq!(phase(&view(&[(w.clone(), None, false)], Always)), "Pending");
        assert_eq!(
            phase(&view(&[(running(), None, true), (w, None, false)], Always)),
            "Pending"
        );
        assert_eq!(phase(&view(&[(running(), None, true)], Always)), "Running");
        assert_eq!(
            phase(&view(&[(crash, Some(exited(1)), false)], Always)),
            "Running",
            "restarting"
        );
        assert_eq!(
            phase(&view(&[(exited(0), None, false)], Never)),
            "Succeeded"
        );
        assert_eq!(
            phase(&view(&[(exited(0), None, false)], OnFailure)),
            "Succeeded"
        );
        assert_eq!(phase(&view(&[(exited(2), None, false)], Never)), "Failed");
        assert_eq!(
            phase(&view(
                &[(exited(0), None, false), (exited(1), None, false)],
                Never
            )),
            "Failed"
        );
    }

    #[test]
    fn init_containers_gate_and_fail() {
        let app = [(RunState::waiting("PodInitializing"), None, false)];
        let mut v = view(&app, RestartPolicy::Never);
        let init_running = running();
        v.init = vec![ContainerView {
            name: "init",
            image: "serve",
            state: &init_running,
            last: None,
            restart_count: 0,
            started: true,
            ready: false,
        }];
        assert_eq!(phase(&v), "Pending");
        let failed = exited(1);
        v.init[0].state = &failed;
        assert_eq!(phase(&v), "Failed");
    }

    fn pod(gates: &[&str], conditions: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "containers": [{"name": "app"}],
                "readinessGates": gates.iter().map(|g| serde_json::json!({"conditionType": g})).collect::<Vec<_>>(),
            },
            "status": {"conditions": conditions.iter().map(|(t, s)| serde_json::json!({"type": t, "status": s})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn cond(s: &PodStatus, t: &str) -> (String, Option<String>) {
        let c = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn ready_needs_containers_and_readiness_gates() {
        let ips = ["10.244.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let states = [(running(), None, true)];
        let mut v = view(&states, RestartPolicy::Always);
        v.pod_ips = &ips;
        let s = pod_status(&pod(&[], &[]), &[], &v, T);
        assert_eq!(cond(&s, "Ready").0, "True");
        assert_eq!(cond(&s, "ContainersReady").0, "True");
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.5"));
        assert_eq!(s.pod_ips.as_ref().unwrap().len(), 2);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.container_id.as_deref(), Some("kubewire://42"));
        assert!(cs.state.as_ref().unwrap().running.is_some());

        let s = pod_status(&pod(&["example.com/lb"], &[]), &[], &v, T);
        assert_eq!(
            cond(&s, "Ready"),
            ("False".into(), Some("ReadinessGatesNotReady".into()))
        );
        assert_eq!(cond(&s, "ContainersReady").0, "True");
        let s = pod_status(
            &pod(&["example.com/lb"], &[("example.com/lb", "True")]),
            &[],
            &v,
            T,
        );
        assert_eq!(cond(&s, "Ready").0, "True");

        let states = [(running(), None, false)];
        let s = pod_status(
            &pod(&[], &[]),
            &[],
            &view(&states, RestartPolicy::Always),
            T,
        );
        assert_eq!(
            cond(&s, "Ready"),
            ("False".into(), Some("ContainersNotReady".into()))
        );
    }

    #[test]
    fn transition_times_are_kept_while_unchanged() {
        let states = [(running(), None, true)];
        let v = view(&states, RestartPolicy::Always);
        let later = T + jiff::SignedDuration::from_secs(60);
        let first = pod_status(&pod(&[], &[]), &[], &v, T);
        let again = pod_status(
            &pod(&[], &[]),
            first.conditions.as_ref().unwrap(),
            &v,
            later,
        );
        assert_eq!(first.conditions, again.conditions);
        let states = [(running(), None, false)];
        let v = view(&states, RestartPolicy::Always);
        let flipped = pod_status(
            &pod(&[], &[]),
            first.conditions.as_ref().unwrap(),
            &v,
            later,
        );
        let ready = flipped
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.last_transition_time, Some(Time(later)));
    }
}
