//! An API server for other crates' tests: loopback, a scratch data dir, serving in the
//! background of the caller's tokio runtime. Build a client with
//! `kubewire_api::client::from_kubeconfig(&server.kubeconfig)`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{Config, Server};

pub struct TestServer {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    /// Removed when the server is dropped.
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the default configuration on 127.0.0.1.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server whose configuration `edit` may change (listen address, ranges, …).
    /// Panics when it cannot start: this is for tests.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("a scratch data dir");
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
        edit(&mut config);
        let server = Server::start(config)
            .await
            .expect("the test API server starts");
        let addr = server.local_addr();
        let kubeconfig = server.kubeconfig_path().to_path_buf();
        tokio::spawn(server.run());
        TestServer {
            addr,
            kubeconfig,
            _dir: dir,
        }
    }
}
