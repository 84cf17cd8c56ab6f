//! Network sysctls under `/proc/sys/net`.
//!
//! Keys are paths relative to `/proc/sys` with `/` separators (`net/ipv4/ip_forward`), because
//! interface names may contain dots. The kernel resolves `/proc/sys/net` in the namespace of the
//! thread that opens the file, so these functions act on the calling thread's namespace.

use std::io::Write;
use std::path::PathBuf;

use crate::{Error, Result};

fn path(key: &str) -> Result<PathBuf> {
    if !key.starts_with("net/") || key.split('/').any(|c| c.is_empty() || c == "..") {
        return Err(Error::Invalid(format!("bad network sysctl key {key:?}")));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

/// Reads a sysctl, trimmed.
pub fn read(key: &str) -> Result<String> {
    let p = path(key)?;
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io(format!("read sysctl {key}"), e))
}

/// Writes a sysctl.
pub fn write(key: &str, value: &str) -> Result<()> {
    let p = path(key)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map_err(|e| Error::io(format!("open sysctl {key}"), e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::io(format!("write sysctl {key}={value}"), e))
}

/// Writes a sysctl only when its value differs (saves a write, and keeps the kernel from
/// re-running side effects such as the IPv6 forwarding switch resetting per-interface settings).
pub fn ensure(key: &str, value: &str) -> Result<()> {
    if read(key)? != value {
        write(key, value)?;
    }
    Ok(())
}

/// Turns on IPv4 forwarding (`net.ipv4.ip_forward`).
pub fn enable_ipv4_forwarding() -> Result<()> {
    ensure("net/ipv4/ip_forward", "1")
}

/// Turns on IPv6 forwarding (`net.ipv6.conf.all.forwarding`). Note: with forwarding on, an
/// interface with `accept_ra=1` stops accepting router advertisements; uplinks that rely on
/// SLAAC need `accept_ra=2` (see [`set_accept_ra`]).
pub fn enable_ipv6_forwarding() -> Result<()> {
    ensure("net/ipv6/conf/all/forwarding", "1")
}

/// Sets `net.ipv4.conf.IFNAME.proxy_arp`.
pub fn set_proxy_arp(ifname: &str, on: bool) -> Result<()> {
    write(
        &format!("net/ipv4/conf/{ifname}/proxy_arp"),
        if on { "1" } else { "0" },
    )
}

/// Sets `net.ipv4.neigh.IFNAME.proxy_delay` (in jiffies; 0 answers proxy ARP at once).
pub fn set_proxy_delay(ifname: &str, delay: u32) -> Result<()> {
    write(
        &format!("net/ipv4/neigh/{ifname}/proxy_delay"),
        &delay.to_string(),
    )
}

/// Sets `net.ipv6.conf.IFNAME.accept_ra` (0 never, 1 unless forwarding, 2 even when forwarding).
pub fn set_accept_ra(ifname: &str, value: u8) -> Result<()> {
    write(
        &format!("net/ipv6/conf/{ifname}/accept_ra"),
        &value.to_string(),
    )
}

/// True when IPv6 is available in the calling thread's namespace.
pub fn ipv6_available() -> bool {
    read("net/ipv6/conf/all/disable_ipv6").is_ok_and(|v| v == "0")
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_checked() {
        assert!(super::path("net/ipv4/ip_forward").is_ok());
        assert!(super::path("kernel/hostname").is_err());
        assert!(super::path("net/../kernel/x").is_err());
        assert!(super::path("net//x").is_err());
    }
}
