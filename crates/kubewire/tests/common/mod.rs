//! Runs the real `kubewire apiserver` binary for tests, and stops it (even when a test fails).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct ApiServer {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl ApiServer {
    /// Starts the server on a free loopback port with `data_dir`, waiting until it serves.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts the server listening on `listen`.
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubewire"))
            .args(["apiserver", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubewire binary runs");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("stderr line");
            if let Some(rest) = line.strip_prefix("kubewire apiserver listening on ") {
                addr = Some(rest.trim().parse().expect("listen address"));
                break;
            }
            eprintln!("apiserver: {line}");
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = addr.unwrap_or_else(|| panic!("apiserver exited: {:?}", child.wait()));
        Self {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a required external tool is present; under `CI=true` its absence fails the test.
pub fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required under CI=true (install it in .ci/run)"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}
