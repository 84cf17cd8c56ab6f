//! `--shutdown-delay`: after SIGTERM the server keeps answering for the delay, then returns `Ok`.
//! Its own test binary, since it sends SIGTERM to its own process.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use kubewire_serve::{BoundServer, ServeArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

async fn hostname(port: u16) -> Option<String> {
    let mut conn = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
    conn.write_all(b"GET /hostname HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut raw = String::new();
    timeout(Duration::from_secs(5), conn.read_to_string(&mut raw))
        .await
        .ok()?
        .ok()?;
    raw.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

#[tokio::test]
async fn sigterm_keeps_serving_for_the_delay_then_exits_ok() {
    let server = BoundServer::bind(&ServeArgs {
        http_ports: vec![0],
        name: Some("graceful".into()),
        ..ServeArgs::default()
    })
    .await
    .expect("bind");
    let port = server.http_addrs()[0].port();
    let task = tokio::spawn(server.serve_until_terminated(Some(Duration::from_secs(1))));
    // Once it answers, the signal handlers are installed (they come before any listener).
    assert_eq!(hostname(port).await.as_deref(), Some("graceful"));

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let terminated = Instant::now();

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "stopped before the delay was over");
    assert_eq!(
        hostname(port).await.as_deref(),
        Some("graceful"),
        "not serving during the delay"
    );

    let result = timeout(Duration::from_secs(5), task)
        .await
        .expect("stops after the delay")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    assert!(terminated.elapsed() >= Duration::from_millis(900));
    assert!(
        hostname(port).await.is_none(),
        "still serving after the delay"
    );
}
