//! The stream echo behind `--sctp-port`. It works for any protocol the kernel offers as a
//! one-to-one `SOCK_STREAM` socket: SCTP in production, TCP in the unit test (SCTP may be missing
//! from the kernel that runs the tests).
//!
//! Every read is answered with [`reply`]. On a one-to-one SCTP socket a read returns at most one
//! message (RFC 6458 section 3.1.3), so each message gets its own answer, which is what agnhost's
//! SCTP clients expect; unlike agnhost, the association stays open for more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::command::reply;
use crate::{ServeError, Shared};

const READ_BUF: usize = 65_536;

/// Accepts on `listener` (see `listen::sctp` for why an SCTP socket sits in a `TcpListener`)
/// and echoes on every connection, forever.
pub(crate) async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    protocol: &'static str,
    shared: Arc<Shared>,
) -> Result<(), ServeError> {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, peer)) => {
                    conns.spawn(echo(conn, peer, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Out of descriptors or memory, or the peer gave up: wait a little.
                    tracing::warn!(%addr, "{protocol} accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn echo(mut conn: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let len = match conn.read(&mut buf).await {
            Ok(0) => return,
            Ok(len) => len,
            Err(e) => {
                tracing::debug!(%peer, "stream read: {e}");
                return;
            }
        };
        let payload = buf.get(..len).unwrap_or_default();
        let answer = reply(payload, &shared.name, peer);
        if answer.is_empty() {
            continue;
        }
        if let Err(e) = conn.write_all(&answer).await {
            tracing::debug!(%peer, "stream write: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use std::net::Ipv6Addr;

    use socket2::Protocol;
    use tokio::time::timeout;

    use super::*;
    use crate::listen::{BindAddr, stream_listener};

    const T: Duration = Duration::from_secs(5);

    /// The SCTP code path, run over TCP: accept, per-message replies, several clients, abrupt
    /// disconnects.
    #[tokio::test]
    async fn stream_echo_over_tcp() {
        let listener = stream_listener(BindAddr::AnyDualStack(0), Protocol::TCP).expect("listener");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            name: "stream-pod".into(),
            ready: AtomicBool::new(true),
        });
        let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
        let server = tokio::spawn(serve(listener, addr, "TCP", shared));

        // An abrupt disconnect first: connect and drop.
        drop(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );

        for (host, want_ip) in [("127.0.0.1", "127.0.0.1:"), ("::1", "[::1]:")] {
            let mut conn = timeout(T, TcpStream::connect((host, port)))
                .await
                .expect("connect in time")
                .expect("connect");
            let local = conn.local_addr().expect("local").port();
            for (send, want) in [
                (&b"hello sctp"[..], b"hello sctp".to_vec()),
                (b"hostname", b"stream-pod".to_vec()),
                (b"clientip", format!("{want_ip}{local}").into_bytes()),
                (b"echo hi", b"hi".to_vec()),
            ] {
                conn.write_all(send).await.expect("write");
                let mut got = vec![0u8; want.len()];
                timeout(T, conn.read_exact(&mut got))
                    .await
                    .expect("reply in time")
                    .expect("read");
                assert_eq!(got, want, "reply to {send:?} over {host}");
            }
        }
        assert!(!server.is_finished(), "the stream listener stopped");
        server.abort();
    }
}
