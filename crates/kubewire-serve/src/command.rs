//! What the datagram and stream echoes answer, shared by UDP and SCTP.
//!
//! agnhost netexec answers the (trimmed, case-insensitive) messages `hostname`, `clientip` and
//! `echo MSG` and ignores anything else; the issue asks for an echo, so anything else comes back
//! unchanged. Unlike agnhost, `echo MSG` returns MSG as sent, not lower-cased.

use std::borrow::Cow;
use std::net::SocketAddr;

/// The peer as agnhost prints it: `IP:PORT`, `[IPv6]:PORT`, and an IPv4 client of a dual-stack
/// socket as plain IPv4 (not `[::ffff:a.b.c.d]`).
pub(crate) fn client_addr(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => peer,
        },
        SocketAddr::V4(_) => peer,
    }
}

/// The answer to one datagram or message.
pub(crate) fn reply<'a>(payload: &'a [u8], name: &'a str, peer: SocketAddr) -> Cow<'a, [u8]> {
    let text = payload.trim_ascii();
    if text.eq_ignore_ascii_case(b"hostname") {
        return Cow::Borrowed(name.as_bytes());
    }
    if text.eq_ignore_ascii_case(b"clientip") {
        return Cow::Owned(client_addr(peer).to_string().into_bytes());
    }
    if let Some(head) = text.get(..5)
        && head.eq_ignore_ascii_case(b"echo ")
    {
        return Cow::Borrowed(text.get(5..).unwrap_or_default());
    }
    Cow::Borrowed(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer4() -> SocketAddr {
        "[::ffff:10.0.0.7]:4242".parse().expect("addr")
    }

    #[test]
    fn commands_are_trimmed_and_case_insensitive() {
        assert_eq!(&*reply(b"hostname", "web-0", peer4()), b"web-0");
        assert_eq!(&*reply(b" HostName\n", "web-0", peer4()), b"web-0");
        assert_eq!(&*reply(b"clientip", "x", peer4()), b"10.0.0.7:4242");
        let v6: SocketAddr = "[fd00::1]:53".parse().expect("addr");
        assert_eq!(&*reply(b"clientip\r\n", "x", v6), b"[fd00::1]:53");
        assert_eq!(&*reply(b"echo Hello There\n", "x", v6), b"Hello There");
    }

    #[test]
    fn anything_else_is_echoed_unchanged() {
        for payload in [&b""[..], b"echo", b"ECHOhi", b"\xff\x00\xfe", b"hostnames"] {
            assert_eq!(&*reply(payload, "x", peer4()), payload);
        }
    }
}
