//! IPAM: one address per pod CIDR (so one per IP family) for each attachment
//! `(containerID, ifname)`.
//!
//! The allocator ([`State`]) is pure. The [`Store`] keeps it in one JSON file per network under
//! `dataDir/<network name>/`, behind an exclusive `flock` on `lock` in the same directory. A
//! change is durable before it is used: write `state.json.tmp`, fsync it, rename it over
//! `state.json`, fsync the directory. A crash therefore leaves either the old or the new state,
//! never a torn one, and an address handed to the kernel is always on disk first.
//!
//! Addresses never handed out: the network address and the first host address of each CIDR
//! (`.0` and `.1` of a v4 /24, `::` and `::1` of a v6 /64; the first host address is kept for
//! the node, e.g. a source address for node → pod traffic or a gateway if the layout ever needs
//! one), and the v4 broadcast address. Search order is host-local's: the address after the last
//! one handed out in that CIDR, wrapping around.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::Attachment;
use crate::error::{CniError, code};

/// Format version of `state.json`.
const STATE_VERSION: u32 = 1;

/// Who holds an address.
pub type Owner = Attachment;

/// Allocation state of one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub version: u32,
    /// Every reserved address and its holder.
    #[serde(default)]
    pub allocations: BTreeMap<IpAddr, Owner>,
    /// Per CIDR (as text), the last address handed out: the search starts after it.
    #[serde(default, rename = "lastReserved")]
    pub last_reserved: BTreeMap<String, IpAddr>,
}

/// The outcome of [`State::allocate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// One address per CIDR, in the order of the CIDRs.
    pub ips: Vec<IpAddr>,
    /// True when at least one address was newly reserved (false: a repeated ADD).
    pub fresh: bool,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        // Callers only pass numbers inside a v4 CIDR.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    }
}

/// The first and last address that may be handed out in `cidr` (inclusive), or `None` when the
/// CIDR is too small to hold any.
pub fn usable_range(cidr: &IpNet) -> Option<(u128, u128)> {
    let net = to_u128(cidr.network());
    let last = to_u128(cidr.broadcast());
    let first = net.checked_add(2)?; // network address and node address reserved
    let last = match cidr {
        IpNet::V4(_) => last.checked_sub(1)?, // broadcast
        IpNet::V6(_) => last,                 // no broadcast in IPv6
    };
    (first <= last).then_some((first, last))
}

/// How many addresses of `cidr` can be handed out in total.
pub fn capacity(cidr: &IpNet) -> u128 {
    usable_range(cidr).map_or(0, |(f, l)| l - f + 1)
}

impl State {
    fn in_use(&self, cidr: &IpNet) -> u128 {
        let Some((f, l)) = usable_range(cidr) else {
            return 0;
        };
        self.allocations
            .range(from_u128(cidr.addr().is_ipv6(), f)..=from_u128(cidr.addr().is_ipv6(), l))
            .count() as u128
    }

    /// How many addresses of `cidr` are still free.
    pub fn free(&self, cidr: &IpNet) -> u128 {
        capacity(cidr) - self.in_use(cidr)
    }

    /// The address `owner` holds in `cidr`, if any.
    pub fn lookup(&self, owner: &Owner, cidr: &IpNet) -> Option<IpAddr> {
        self.allocations
            .iter()
            .find(|(ip, o)| *o == owner && cidr.contains(*ip))
            .map(|(ip, _)| *ip)
    }

    /// Every address `owner` holds.
    pub fn addresses_of(&self, owner: &Owner) -> Vec<IpAddr> {
        self.allocations
            .iter()
            .filter(|(_, o)| *o == owner)
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Reserves one address per CIDR for `owner`. Idempotent: an owner that already holds an
    /// address in a CIDR keeps it. All or nothing: when a CIDR is exhausted nothing changes.
    pub fn allocate(&mut self, owner: &Owner, cidrs: &[IpNet]) -> Result<Allocation, CniError> {
        let mut ips = Vec::new();
        let mut fresh = Vec::new();
        for cidr in cidrs {
            if let Some(ip) = self.lookup(owner, cidr) {
                ips.push(ip);
                continue;
            }
            match self.next_free(cidr) {
                Some(ip) => {
                    self.allocations.insert(ip, owner.clone());
                    fresh.push((cidr, ip));
                    ips.push(ip);
                }
                None => {
                    for (_, ip) in &fresh {
                        self.allocations.remove(ip);
                    }
                    return Err(CniError::new(
                        code::POOL_EXHAUSTED,
                        format!(
                            "no free address left in pod CIDR {cidr} ({} addresses, all in use)",
                            capacity(cidr)
                        ),
                    ));
                }
            }
        }
        for (cidr, ip) in &fresh {
            self.last_reserved.insert(cidr.to_string(), *ip);
        }
        Ok(Allocation {
            ips,
            fresh: !fresh.is_empty(),
        })
    }

    fn next_free(&self, cidr: &IpNet) -> Option<IpAddr> {
        let (first, last) = usable_range(cidr)?;
        let v6 = cidr.addr().is_ipv6();
        let start = match self.last_reserved.get(&cidr.to_string()) {
            Some(ip) if cidr.contains(ip) => {
                let n = to_u128(*ip);
                if n >= first && n < last { n + 1 } else { first }
            }
            _ => first,
        };
        // At most in_use + 1 candidates are looked at before a free one turns up, so this is
        // short even in a /64; it walks the whole range only when the range is full.
        let total = last - first + 1;
        let mut candidate = start;
        let mut looked = 0u128;
        while looked < total {
            let ip = from_u128(v6, candidate);
            if !self.allocations.contains_key(&ip) {
                return Some(ip);
            }
            candidate = if candidate == last {
                first
            } else {
                candidate + 1
            };
            looked += 1;
        }
        None
    }

    /// Releases every address of `owner`; returns them.
    pub fn release(&mut self, owner: &Owner) -> Vec<IpAddr> {
        let ips = self.addresses_of(owner);
        for ip in &ips {
            self.allocations.remove(ip);
        }
        ips
    }

    /// Releases every address whose owner is not in `valid` (GC); returns what was released.
    pub fn retain_valid(&mut self, valid: &BTreeSet<Owner>) -> Vec<(IpAddr, Owner)> {
        let gone: Vec<(IpAddr, Owner)> = self
            .allocations
            .iter()
            .filter(|(_, o)| !valid.contains(*o))
            .map(|(ip, o)| (*ip, o.clone()))
            .collect();
        for (ip, _) in &gone {
            self.allocations.remove(ip);
        }
        gone
    }
}

/// The on-disk store of one network.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The store, locked, with its state loaded. The lock is released on drop.
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a Store,
    _lock: Flock<File>,
    pub state: State,
}

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::IO,
        format!("IPAM store: {what} {}: {e}", path.display()),
    )
}

impl Store {
    /// The store of network `network` under `data_dir`.
    pub fn new(data_dir: &Path, network: &str) -> Store {
        Store {
            dir: data_dir.join(network),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Takes the exclusive lock (waiting up to `timeout`: then error 11, try again later) and
    /// loads the state.
    pub fn lock(&self, timeout: Duration) -> Result<Locked<'_>, CniError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err("cannot create", &self.dir, e))?;
        let lock_path = self.dir.join("lock");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_err("cannot open", &lock_path, e))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(100);
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((f, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => {
                    if Instant::now() >= deadline {
                        return Err(CniError::new(
                            code::TRY_AGAIN,
                            format!(
                                "IPAM store {} is locked by another process for more than {:?}",
                                self.dir.display(),
                                timeout
                            ),
                        ));
                    }
                    file = f;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err((_, e)) => return Err(io_err("cannot lock", &lock_path, e)),
            }
        };
        let state = self.load()?;
        Ok(Locked {
            store: self,
            _lock: lock,
            state,
        })
    }

    fn load(&self) -> Result<State, CniError> {
        let path = self.state_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes)
                    .map_err(|e| io_err("cannot decode (corrupt?)", &path, e))?;
                if state.version > STATE_VERSION {
                    return Err(io_err(
                        &format!(
                            "format version {} is newer than this plugin's",
                            state.version
                        ),
                        &path,
                        "refusing to touch it",
                    ));
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_err("cannot read", &path, e)),
        }
    }
}

impl Locked<'_> {
    /// Writes the state durably (temp file, fsync, rename, fsync of the directory).
    pub fn commit(&mut self) -> Result<(), CniError> {
        self.state.version = STATE_VERSION;
        let dir = &self.store.dir;
        let tmp = dir.join("state.json.tmp");
        let data =
            serde_json::to_vec_pretty(&self.state).map_err(|e| io_err("cannot encode", &tmp, e))?;
        let mut f = File::create(&tmp).map_err(|e| io_err("cannot create", &tmp, e))?;
        f.write_all(&data)
            .map_err(|e| io_err("cannot write", &tmp, e))?;
        f.sync_all().map_err(|e| io_err("cannot fsync", &tmp, e))?;
        drop(f);
        let path = self.store.state_path();
        std::fs::rename(&tmp, &path).map_err(|e| io_err("cannot rename onto", &path, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("cannot fsync directory", dir, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owner(i: usize) -> Owner {
        Owner {
            container_id: format!("c{i}"),
            ifname: "eth0".into(),
        }
    }

    fn cidrs() -> Vec<IpNet> {
        vec![
            "10.0.0.0/29".parse().unwrap(),
            "fd00::/125".parse().unwrap(),
        ]
    }

    #[test]
    fn reserved_addresses_and_round_robin() {
        let c = cidrs();
        assert_eq!(capacity(&c[0]), 5); // .2 .. .6
        assert_eq!(capacity(&c[1]), 6); // ::2 .. ::7
        let mut s = State::default();
        let a = s.allocate(&owner(1), &c).unwrap();
        assert!(a.fresh);
        assert_eq!(
            a.ips,
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
        // Idempotent.
        let again = s.allocate(&owner(1), &c).unwrap();
        assert_eq!(again.ips, a.ips);
        assert!(!again.fresh);
        // Next after last, even after a release (host-local's order).
        s.allocate(&owner(2), &c).unwrap();
        s.release(&owner(1));
        let b = s.allocate(&owner(3), &c).unwrap();
        assert_eq!(b.ips[0], "10.0.0.4".parse::<IpAddr>().unwrap());
        // Fill up, then wrap around to the freed .2.
        s.allocate(&owner(4), &c).unwrap();
        s.allocate(&owner(5), &c).unwrap();
        let w = s.allocate(&owner(6), &c).unwrap();
        assert_eq!(w.ips[0], "10.0.0.2".parse::<IpAddr>().unwrap());
        // v4 full now (.2-.6): exhaustion is all-or-nothing.
        let before = s.clone();
        let e = s.allocate(&owner(7), &c).unwrap_err();
        assert_eq!(e.code, code::POOL_EXHAUSTED);
        assert!(e.msg.contains("10.0.0.0/29"), "{}", e.msg);
        assert_eq!(s, before);
        assert_eq!(s.free(&c[0]), 0);
        for ip in s.allocations.keys() {
            let s = ip.to_string();
            assert!(
                !["10.0.0.0", "10.0.0.1", "10.0.0.7", "fd00::", "fd00::1"].contains(&s.as_str())
            );
        }
    }

    #[test]
    fn gc_keeps_only_valid() {
        let c = cidrs();
        let mut s = State::default();
        for i in 0..4 {
            s.allocate(&owner(i), &c).unwrap();
        }
        let valid: BTreeSet<Owner> = [owner(1), owner(3)].into();
        let gone = s.retain_valid(&valid);
        assert_eq!(gone.len(), 4);
        assert_eq!(s.allocations.len(), 4);
        assert!(s.allocations.values().all(|o| valid.contains(o)));
    }

    #[test]
    fn store_round_trip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "net");
        {
            let mut l = store.lock(Duration::from_secs(1)).unwrap();
            l.state.allocate(&owner(1), &cidrs()).unwrap();
            l.commit().unwrap();
            // A second locker times out with "try again later".
            let e = Store::new(dir.path(), "net")
                .lock(Duration::from_millis(20))
                .unwrap_err();
            assert_eq!(e.code, code::TRY_AGAIN);
        }
        let l = store.lock(Duration::from_secs(1)).unwrap();
        assert_eq!(l.state.allocations.len(), 2);
        assert!(!dir.path().join("net/state.json.tmp").exists());
        drop(l);
        std::fs::write(dir.path().join("net/state.json"), b"{garbage").unwrap();
        assert_eq!(
            store.lock(Duration::from_secs(1)).unwrap_err().code,
            code::IO
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize),
        Free(usize),
        Reload,
        Gc(Vec<usize>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..12usize).prop_map(Op::Alloc),
            2 => (0..12usize).prop_map(Op::Free),
            1 => Just(Op::Reload),
            1 => proptest::collection::vec(0..12usize, 0..6).prop_map(Op::Gc),
        ]
    }

    proptest! {
        /// No address is ever held twice, addresses stay in the usable range, an owner keeps
        /// its address until freed, and a reload (serialize + parse) changes nothing.
        #[test]
        fn no_double_allocation(ops in proptest::collection::vec(op(), 1..80)) {
            let c: Vec<IpNet> = vec!["10.9.0.0/29".parse().unwrap(), "fd00:9::/126".parse().unwrap()];
            let mut s = State::default();
            let mut held: BTreeMap<usize, Vec<IpAddr>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Alloc(i) => match s.allocate(&owner(i), &c) {
                        Ok(a) => {
                            if let Some(prev) = held.get(&i) {
                                prop_assert_eq!(prev, &a.ips);
                            }
                            for (ip, cidr) in a.ips.iter().zip(&c) {
                                let (f, l) = usable_range(cidr).unwrap();
                                prop_assert!(cidr.contains(ip));
                                prop_assert!((f..=l).contains(&to_u128(*ip)));
                            }
                            held.insert(i, a.ips);
                        }
                        Err(e) => {
                            prop_assert_eq!(e.code, code::POOL_EXHAUSTED);
                            prop_assert!(!held.contains_key(&i));
                        }
                    },
                    Op::Free(i) => {
                        s.release(&owner(i));
                        held.remove(&i);
                    }
                    Op::Reload => {
                        let j = serde_json::to_vec(&s).unwrap();
                        let back: State = serde_json::from_slice(&j).unwrap();
                        prop_assert_eq!(&back, &s);
                        s = back;
                    }
                    Op::Gc(valid) => {
                        let valid: BTreeSet<Owner> = valid.into_iter().map(owner).collect();
                        s.retain_valid(&valid);
                        held.retain(|i, _| valid.contains(&owner(*i)));
                    }
                }
                // The model and the state agree, and no address has two holders.
                let mut seen = BTreeSet::new();
                for ips in held.values() {
                    for ip in ips {
                        prop_assert!(seen.insert(*ip), "address {} held twice", ip);
                    }
                }
                prop_assert_eq!(seen.len(), s.allocations.len());
            }
        }
    }
}
