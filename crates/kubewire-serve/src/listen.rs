//! Creating listeners: dual-stack by default, one exact address when asked.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

/// IANA protocol number of SCTP (`IPPROTO_SCTP`).
pub(crate) const IPPROTO_SCTP: i32 = 132;

// Linux errno values (asm-generic/errno.h), to tell "this family or protocol is missing" apart.
const EPROTONOSUPPORT: i32 = 93;
const ESOCKTNOSUPPORT: i32 = 94;
const EAFNOSUPPORT: i32 = 97;
const EADDRNOTAVAIL: i32 = 99;

const BACKLOG: i32 = 1024;

/// Where one listener binds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BindAddr {
    /// Every address of both families on this port: `[::]` with v4-mapped addresses, or
    /// `0.0.0.0` when the kernel has no IPv6.
    AnyDualStack(u16),
    /// Exactly this address (an IPv6 one without v4-mapped addresses).
    Exact(SocketAddr),
}

impl BindAddr {
    /// The address it names, for messages.
    pub(crate) fn addr(self) -> SocketAddr {
        match self {
            BindAddr::AnyDualStack(port) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            BindAddr::Exact(addr) => addr,
        }
    }
}

/// Whether `e` says the kernel lacks the protocol (e.g. no SCTP module).
pub(crate) fn is_protocol_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EPROTONOSUPPORT | ESOCKTNOSUPPORT))
}

fn ipv6_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EAFNOSUPPORT | EADDRNOTAVAIL))
}

/// A bound, non-blocking socket; `stream` sockets are listening too.
fn socket(bind: BindAddr, ty: Type, protocol: Protocol, stream: bool) -> io::Result<Socket> {
    match bind {
        BindAddr::Exact(addr) => socket_at(addr, ty, protocol, stream, false),
        BindAddr::AnyDualStack(port) => {
            let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
            match socket_at(any6, ty, protocol, stream, true) {
                Err(e) if ipv6_missing(&e) => {
                    let any4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
                    socket_at(any4, ty, protocol, stream, false)
                }
                other => other,
            }
        }
    }
}

fn socket_at(
    addr: SocketAddr,
    ty: Type,
    protocol: Protocol,
    stream: bool,
    dual_stack: bool,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    if stream {
        // A restarted container must be able to bind again while old connections linger.
        socket.set_reuse_address(true)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    if stream {
        socket.listen(BACKLOG)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A TCP listener.
pub(crate) fn tcp(bind: BindAddr) -> io::Result<TcpListener> {
    stream_listener(bind, Protocol::TCP)
}

/// A UDP socket.
pub(crate) fn udp(bind: BindAddr) -> io::Result<UdpSocket> {
    let socket = socket(bind, Type::DGRAM, Protocol::UDP, false)?;
    UdpSocket::from_std(socket.into())
}

/// A one-to-one style SCTP listener (`SOCK_STREAM`, `IPPROTO_SCTP`; RFC 6458 section 4).
///
/// It is driven through tokio's `TcpListener` and `TcpStream`, which only issue `accept4`,
/// `recv`, `send`, `getsockname` and `getpeername` on it; a one-to-one SCTP socket implements
/// those exactly like a TCP one, and nothing TCP-specific (`TCP_NODELAY`, keepalive) is ever set.
/// This keeps the code free of `unsafe` (tokio's `AsyncFd::register` is `unsafe`, and its safe
/// `AsyncFd::new` is deprecated as unsound).
pub(crate) fn sctp(bind: BindAddr) -> io::Result<TcpListener> {
    stream_listener(bind, Protocol::from(IPPROTO_SCTP))
}

/// A listening stream socket of `protocol`: SCTP in production; the tests drive the same code
/// with TCP, which every kernel has.
pub(crate) fn stream_listener(bind: BindAddr, protocol: Protocol) -> io::Result<TcpListener> {
    let socket = socket(bind, Type::STREAM, protocol, true)?;
    TcpListener::from_std(socket.into())
}
