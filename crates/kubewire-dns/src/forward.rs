//! Names outside the cluster: asked of one upstream server (UDP, then TCP when the answer was
//! truncated), with a small cache that keeps answers no longer than their TTLs allow.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::message::UDP_PAYLOAD;

/// How long one try waits for the upstream. Stub resolvers give up after 5 s (glibc's default
/// `timeout:5`), so two tries must fit in that.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
const UDP_TRIES: usize = 2;
/// Entries the cache holds at most (CoreDNS's `cache` default is 9984 per kind).
pub const CACHE_CAPACITY: usize = 10_000;
/// The longest an answer is kept, whatever its TTL (CoreDNS's `cache` default max TTL).
const MAX_CACHE_TTL: u32 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("asking upstream {upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("encoding the upstream query: {0}")]
    Encode(#[from] hickory_proto::ProtoError),
    #[error("upstream {upstream} sent an undecodable answer: {source}")]
    Decode {
        upstream: SocketAddr,
        source: hickory_proto::serialize::binary::DecodeError,
    },
    #[error("upstream {0}'s answer is for another question")]
    Mismatch(SocketAddr),
}

type Key = (Name, RecordType, DNSClass);

/// The upstream and the cache of its answers.
pub struct Forwarder {
    upstream: SocketAddr,
    cache: Mutex<Cache>,
}

impl Forwarder {
    pub fn new(upstream: SocketAddr) -> Forwarder {
        Forwarder {
            upstream,
            cache: Mutex::new(Cache::new(CACHE_CAPACITY)),
        }
    }

    /// The upstream's answer to `query` (recursion desired), from the cache while it is fresh.
    /// The message's id is meaningless: the caller copies sections into its own response.
    pub async fn resolve(&self, query: &Query) -> Result<Message, ForwardError> {
        let key = (
            query.name().to_lowercase(),
            query.query_type(),
            query.query_class(),
        );
        let now = Instant::now();
        if let Some(hit) = self.lock().get(&key, now) {
            return Ok(hit);
        }
        let answer = self.ask(query).await?;
        self.lock().put(key, &answer, Instant::now());
        Ok(answer)
    }

    /// The cache, also after a panic elsewhere poisoned its lock: it holds only whole entries.
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn ask(&self, query: &Query) -> Result<Message, ForwardError> {
        let mut request = Message::query();
        request.metadata.recursion_desired = true;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        request.set_edns(edns);
        let bytes = request.to_vec()?;
        let upstream = self.upstream;
        let io = |source| ForwardError::Io { upstream, source };
        let local: SocketAddr = match upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(upstream).await.map_err(io)?;
        let mut buf = vec![0u8; 65535];
        for _ in 0..UDP_TRIES {
            socket.send(&bytes).await.map_err(io)?;
            let deadline = tokio::time::Instant::now() + TRY_TIMEOUT;
            // Datagrams with another id are late answers to an earlier try, or forgeries.
            while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await
            {
                let len = received.map_err(io)?;
                let Ok(response) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                if response.id != request.id {
                    continue;
                }
                check_question(&response, query, upstream)?;
                if response.truncation {
                    return self.ask_tcp(&bytes, query).await;
                }
                return Ok(response);
            }
        }
        Err(ForwardError::Timeout(upstream))
    }

    async fn ask_tcp(&self, request: &[u8], query: &Query) -> Result<Message, ForwardError> {
        let upstream = self.upstream;
        let io = |source| ForwardError::Io { upstream, source };
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await?;
            let len = u16::try_from(request.len()).map_err(std::io::Error::other)?;
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(request);
            stream.write_all(&framed).await?;
            let len = stream.read_u16().await?;
            let mut body = vec![0u8; usize::from(len)];
            stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(TRY_TIMEOUT, exchange)
            .await
            .map_err(|_| ForwardError::Timeout(upstream))?
            .map_err(io)?;
        let response =
            Message::from_vec(&body).map_err(|source| ForwardError::Decode { upstream, source })?;
        check_question(&response, query, upstream)?;
        Ok(response)
    }
}

fn check_question(
    response: &Message,
    query: &Query,
    upstream: SocketAddr,
) -> Result<(), ForwardError> {
    match response.queries.as_slice() {
        [q] if q.name() == query.name() && q.query_type() == query.query_type() => Ok(()),
        _ => Err(ForwardError::Mismatch(upstream)),
    }
}

/// Upstream answers by question, each kept for the smallest TTL in it.
struct Cache {
    capacity: usize,
    entries: HashMap<Key, (Message, Instant, Duration)>,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            entries: HashMap::new(),
        }
    }

    /// A fresh entry, with every TTL lowered by the time it has been cached, as a cache must
    /// (RFC 1035 §6.1.2 / RFC 2181 §8).
    fn get(&self, key: &Key, now: Instant) -> Option<Message> {
        let (message, stored, ttl) = self.entries.get(key)?;
        let age = now.saturating_duration_since(*stored);
        if age >= *ttl {
            return None;
        }
        let elapsed = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
        let mut message = message.clone();
        for record in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
            .chain(message.additionals.iter_mut())
        {
            record.decrement_ttl(elapsed);
        }
        Some(message)
    }

    fn put(&mut self, key: Key, message: &Message, now: Instant) {
        let Some(ttl) = cache_ttl(message) else {
            return;
        };
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, (_, stored, ttl)| now.saturating_duration_since(*stored) < *ttl);
            // Still full of live entries: drop a tenth of them (arbitrary ones, as the map
            // iterates) so that the sweep above is paid once per many inserts, not every time.
            if self.entries.len() >= self.capacity {
                let drop: Vec<Key> = self
                    .entries
                    .keys()
                    .take(self.capacity / 10 + 1)
                    .cloned()
                    .collect();
                for key in drop {
                    self.entries.remove(&key);
                }
            }
        }
        self.entries
            .insert(key, (message.clone(), now, Duration::from_secs(ttl.into())));
    }
}

/// How long an upstream answer may be kept: the smallest TTL among its answer and authority
/// records, and for a negative answer the SOA's MINIMUM when lower (RFC 2308 §5). Failures,
/// truncated answers and answers without any TTL are not cached.
fn cache_ttl(message: &Message) -> Option<u32> {
    if !matches!(
        message.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) || message.truncation
    {
        return None;
    }
    message
        .answers
        .iter()
        .chain(message.authorities.iter())
        .map(|r| match &r.data {
            RData::SOA(soa) => r.ttl.min(soa.minimum),
            _ => r.ttl,
        })
        .min()
        .map(|ttl| ttl.min(MAX_CACHE_TTL))
        .filter(|&ttl| ttl > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, SOA};

    fn key(name: &str) -> Key {
        (
            Name::from_ascii(name).expect("a name"),
            RecordType::A,
            DNSClass::IN,
        )
    }

    fn answer(ttl: u32) -> Message {
        let mut m = Message::query();
        m.add_answer(Record::from_rdata(
            Name::from_ascii("example.com.").expect("a name"),
            ttl,
            RData::A(A([192, 0, 2, 1].into())),
        ));
        m
    }

    #[test]
    fn cached_answers_age_and_expire() {
        let mut cache = Cache::new(10);
        let t0 = Instant::now();
        cache.put(key("example.com."), &answer(60), t0);
        let hit = cache
            .get(&key("example.com."), t0 + Duration::from_secs(20))
            .expect("fresh");
        assert_eq!(hit.answers[0].ttl, 40);
        assert!(
            cache
                .get(&key("example.com."), t0 + Duration::from_secs(60))
                .is_none()
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut cache = Cache::new(10);
        let t0 = Instant::now();
        for i in 0..100 {
            cache.put(key(&format!("n{i}.example.com.")), &answer(60), t0);
            assert!(cache.entries.len() <= 10);
        }
        // The newest is always kept.
        assert!(cache.get(&key("n99.example.com."), t0).is_some());
    }

    #[test]
    fn what_is_cached_for_how_long() {
        assert_eq!(cache_ttl(&answer(60)), Some(60));
        assert_eq!(cache_ttl(&answer(86400)), Some(MAX_CACHE_TTL));
        assert_eq!(cache_ttl(&answer(0)), None);
        let mut failed = answer(60);
        failed.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&failed), None);
        let mut negative = Message::query();
        negative.metadata.response_code = ResponseCode::NXDomain;
        negative.add_authority(Record::from_rdata(
            Name::from_ascii("example.com.").expect("a name"),
            900,
            RData::SOA(SOA::new(Name::root(), Name::root(), 1, 1, 1, 1, 120)),
        ));
        assert_eq!(cache_ttl(&negative), Some(120));
        // NODATA without an SOA says nothing about how long it holds.
        assert_eq!(cache_ttl(&Message::query()), None);
    }
}
