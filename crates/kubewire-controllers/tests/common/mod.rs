//! What the controllers' integration tests share.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use kubewire_apiserver::testing::TestServer;

/// How long a test waits for the controller to act.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `probe` until it yields a value (or panics after [`TIMEOUT`]).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The in-process API server and a client of it.
pub struct Harness {
    pub client: kube::Client,
    _server: TestServer,
}

/// An API server with the default (IPv4) service range, or a dual-stack one.
pub async fn start(dual_stack: bool) -> Harness {
    let server = TestServer::start_with(|c| {
        if dual_stack {
            c.service_cidrs = vec![
                "10.96.0.0/16".parse().expect("a CIDR"),
                "fd00:10:96::/112".parse().expect("a CIDR"),
            ];
        }
    })
    .await;
    Harness {
        client: kubewire_api::client::from_kubeconfig(&server.kubeconfig)
            .await
            .expect("a client"),
        _server: server,
    }
}

/// A controller as a task, stopped on drop; it failing fails the test.
pub struct Running(tokio::task::JoinHandle<()>);

impl Running {
    pub fn spawn<E: Display>(
        what: &'static str,
        controller: impl Future<Output = Result<(), E>> + Send + 'static,
    ) -> Running {
        Running(tokio::spawn(async move {
            if let Err(e) = controller.await {
                panic!("{what}: {e}");
            }
        }))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}
