//! A container's lifecycle rules: its state as the runtime knows it, whether an exited container
//! restarts (`restartPolicy`), and the CrashLoopBackOff delay before it does.

use std::time::{Duration, Instant};

/// Backoff starts at 10 s and doubles to 5 min (the kubelet's `backOffPeriod`/`MaxContainerBackOff`).
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before it exited restarts without delay again.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn from_spec(s: Option<&str>) -> Self {
        match s {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// What the runtime knows of a container right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        pid: i32,
        started_at: jiff::Timestamp,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: Option<jiff::Timestamp>,
        finished_at: jiff::Timestamp,
        pid: Option<i32>,
    },
}

impl RunState {
    pub fn waiting(reason: &str) -> Self {
        RunState::Waiting {
            reason: reason.into(),
            message: None,
        }
    }

    /// The terminated state of a process that exited with `exit_code` (128+N for signal N).
    pub fn exited(
        exit_code: i32,
        pid: i32,
        started_at: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
    ) -> Self {
        RunState::Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            started_at,
            finished_at: now,
            pid: Some(pid),
        }
    }
}

/// The CrashLoopBackOff delay of one container. The first restart is immediate (as the kubelet
/// does: a container has no backoff entry before its first crash); each later one waits 10 s,
/// doubling up to 5 min; a run of 10 min resets it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The delay before restarting a container that exited after running for `ran`.
    pub fn on_exit(&mut self, ran: Duration) -> Duration {
        if ran >= BACKOFF_RESET {
            self.next = None;
        }
        let delay = self.next.unwrap_or(Duration::ZERO);
        self.next = Some(if delay.is_zero() {
            BACKOFF_INITIAL
        } else {
            (delay * 2).min(BACKOFF_MAX)
        });
        delay
    }
}

/// When an exited container may start again, if it restarts at all.
pub(crate) fn restart_at(
    policy: RestartPolicy,
    exit_code: i32,
    backoff: &mut Backoff,
    ran: Duration,
    now: Instant,
) -> Option<Instant> {
    policy
        .restarts(exit_code)
        .then(|| now + backoff.on_exit(ran))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert!(RestartPolicy::Always.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(1));
        assert!(!RestartPolicy::OnFailure.restarts(0));
        assert!(!RestartPolicy::Never.restarts(137));
        assert_eq!(RestartPolicy::from_spec(None), RestartPolicy::Always);
        assert_eq!(
            RestartPolicy::from_spec(Some("Never")),
            RestartPolicy::Never
        );
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets_after_ten() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..8).map(|_| b.on_exit(short).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.on_exit(Duration::from_secs(600)), Duration::ZERO);
        assert_eq!(b.on_exit(short), Duration::from_secs(10));
    }

    #[test]
    fn restart_at_respects_policy() {
        let now = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(
            restart_at(RestartPolicy::Never, 1, &mut b, Duration::ZERO, now),
            None
        );
        assert_eq!(
            restart_at(RestartPolicy::OnFailure, 1, &mut b, Duration::ZERO, now),
            Some(now)
        );
        assert_eq!(
            restart_at(RestartPolicy::OnFailure, 1, &mut b, Duration::ZERO, now),
            Some(now + Duration::from_secs(10))
        );
    }
}
