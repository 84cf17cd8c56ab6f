//! The UDP echo.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::command::reply;
use crate::{ServeError, Shared};

/// Larger than any UDP payload (65,527 bytes over IPv6), so no datagram is truncated.
const MAX_DATAGRAM: usize = 65_536;

/// Answers every datagram on `socket` with [`reply`], forever.
pub(crate) async fn serve(socket: UdpSocket, shared: Arc<Shared>) -> Result<(), ServeError> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // Transient (an ICMP error queued on the socket, memory pressure): keep going,
                // without spinning if it repeats.
                tracing::debug!("UDP receive: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let payload = buf.get(..len).unwrap_or_default();
        let answer = reply(payload, &shared.name, peer);
        if let Err(e) = socket.send_to(&answer, peer).await {
            tracing::debug!(%peer, "UDP reply: {e}");
        }
    }
}
