//! The DNS server against the real (in-process) API server, asked over real UDP and TCP
//! sockets on loopback, with a fake upstream for names outside the cluster.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kubewire_api::labels;
use kubewire_apiserver::testing::TestServer;
use kubewire_dns::{Config, Sockets, serve};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TIMEOUT: Duration = Duration::from_secs(20);
/// What the fake upstream answers for every name.
const UPSTREAM_ADDRESS: [u8; 4] = [192, 0, 2, 99];

struct Harness {
    client: kube::Client,
    dns: SocketAddr,
    upstream_queries: Arc<AtomicUsize>,
    _server: TestServer,
    _tasks: tokio::task::JoinSet<()>,
}

/// An API server with dual-stack Service ranges, the objects `setup` creates, a fake upstream,
/// and the DNS server on 127.0.0.1:0.
async fn start(setup: impl AsyncFnOnce(&kube::Client)) -> Harness {
    let server = TestServer::start_with(|c| {
        c.service_cidrs = vec![
            "10.96.0.0/16".parse().expect("a CIDR"),
            "fd00:10:96::/112".parse().expect("a CIDR"),
        ];
    })
    .await;
    let client = kubewire_api::client::from_kubeconfig(&server.kubeconfig)
        .await
        .expect("a client");
    setup(&client).await;
    let mut tasks = tokio::task::JoinSet::new();
    let upstream = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("upstream binds");
    let upstream_addr = upstream.local_addr().expect("an address");
    let upstream_queries = Arc::new(AtomicUsize::new(0));
    tasks.spawn(fake_upstream(upstream, upstream_queries.clone()));
    let sockets = Sockets::bind(&["127.0.0.1:0".parse().expect("an address")])
        .await
        .expect("binds");
    let dns = sockets.local_addrs()[0];
    let config = Config::new("cluster.local", Some(upstream_addr)).expect("a config");
    let dns_client = client.clone();
    tasks.spawn(async move {
        serve(dns_client, config, sockets)
            .await
            .expect("the DNS server runs");
    });
    Harness {
        client,
        dns,
        upstream_queries,
        _server: server,
        _tasks: tasks,
    }
}

/// Answers every query with one A record, counting them.
async fn fake_upstream(socket: UdpSocket, queries: Arc<AtomicUsize>) {
    let mut buf = vec![0u8; 65535];
    while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
        let Ok(request) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        queries.fetch_add(1, Ordering::SeqCst);
        let mut response = Message::response(request.id, request.op_code);
        response.metadata.recursion_available = true;
        response.queries = request.queries.clone();
        if let Some(q) = request.queries.first() {
            response.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(UPSTREAM_ADDRESS.into())),
            ));
        }
        let bytes = response.to_vec().expect("encodes");
        let _ = socket.send_to(&bytes, peer).await;
    }
}

async fn create<K>(client: &kube::Client, ns: &str, object: Value) -> K
where
    K: kube::Resource<Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).expect("a valid object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("created")
}

async fn cluster_objects(client: &kube::Client) {
    create::<Service>(
        client,
        "default",
        json!({
            "metadata": {"name": "web"},
            "spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
                     "ports": [{"name": "http", "port": 80}]}
        }),
    )
    .await;
    create::<Service>(
        client,
        "default",
        json!({
            "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "www.example.com"}
        }),
    )
    .await;
    create::<Service>(
        client,
        "default",
        json!({
            "metadata": {"name": "big"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}
        }),
    )
    .await;
    let endpoints: Vec<Value> = (0..100)
        .map(|i| {
            json!({"addresses": [format!("10.244.0.{}", i + 1)], "hostname": format!("big-{i}"),
                   "conditions": {"ready": true}})
        })
        .collect();
    create::<EndpointSlice>(
        client,
        "default",
        json!({
            "metadata": {"name": "big-abc", "labels": {
                labels::SERVICE_NAME: "big", labels::HEADLESS: ""}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }),
    )
    .await;
}

fn request(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

async fn udp_exchange(dns: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    socket.send_to(packet, dns).await.expect("sends");
    let mut buf = vec![0u8; 65535];
    let len = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .ok()?
        .expect("receives");
    Some(buf[..len].to_vec())
}

async fn udp(dns: SocketAddr, name: &str, qtype: RecordType, edns: bool) -> Message {
    let q = request(name, qtype, edns);
    let bytes = udp_exchange(dns, &q.to_vec().expect("encodes"))
        .await
        .expect("an answer over UDP");
    let response = Message::from_vec(&bytes).expect("decodes");
    assert_eq!(response.id, q.id);
    assert_eq!(response.message_type, MessageType::Response);
    response
}

async fn tcp(dns: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let q = request(name, qtype, false);
    let bytes = q.to_vec().expect("encodes");
    let mut stream = TcpStream::connect(dns).await.expect("connects");
    let mut framed = u16::try_from(bytes.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.expect("writes");
    let len = stream.read_u16().await.expect("a length");
    let mut body = vec![0u8; usize::from(len)];
    stream.read_exact(&mut body).await.expect("a body");
    let response = Message::from_vec(&body).expect("decodes");
    assert_eq!(response.id, q.id);
    response
}

/// Polls until the server gives `name` an answer of `qtype` over UDP.
async fn resolves(dns: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let response = udp(dns, name, qtype, true).await;
        if response.answers.iter().any(|r| r.record_type() == qtype) {
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} {qtype} never resolved: {response}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn addresses(response: &Message) -> Vec<IpAddr> {
    response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_the_cluster_zone_over_udp_and_tcp() {
    let h = start(async |c| cluster_objects(c).await).await;
    let web: Service = Api::namespaced(h.client.clone(), "default")
        .get("web")
        .await
        .expect("web");
    let cluster_ips: Vec<IpAddr> = web
        .spec
        .and_then(|s| s.cluster_ips)
        .expect("cluster IPs")
        .iter()
        .map(|ip| ip.parse().expect("an IP"))
        .collect();
    assert_eq!(cluster_ips.len(), 2);

    let a = udp(
        h.dns,
        "web.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .await;
    assert!(a.authoritative);
    assert_eq!(addresses(&a), vec![cluster_ips[0]]);
    let aaaa = tcp(h.dns, "WEB.default.svc.cluster.local.", RecordType::AAAA).await;
    assert!(aaaa.authoritative);
    assert_eq!(addresses(&aaaa), vec![cluster_ips[1]]);

    let srv = udp(
        h.dns,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        true,
    )
    .await;
    let RData::SRV(record) = &srv.answers[0].data else {
        panic!("not an SRV: {srv}");
    };
    assert_eq!(
        (record.port, record.target.to_ascii()),
        (80, "web.default.svc.cluster.local.".into())
    );

    let reverse = Name::from(cluster_ips[0]).to_ascii();
    let ptr = udp(h.dns, &reverse, RecordType::PTR, true).await;
    assert!(
        matches!(&ptr.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web.default.svc.cluster.local."),
        "{ptr}"
    );

    // ExternalName: the CNAME, completed with the upstream's answer for the target.
    let cname = udp(h.dns, "ext.default.svc.cluster.local.", RecordType::A, true).await;
    assert!(
        matches!(&cname.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "www.example.com."),
        "{cname}"
    );
    assert_eq!(addresses(&cname), vec![IpAddr::from(UPSTREAM_ADDRESS)]);

    let nx = udp(
        h.dns,
        "nope.default.svc.cluster.local.",
        RecordType::A,
        true,
    )
    .await;
    assert_eq!(nx.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);

    let nodata = tcp(h.dns, "web.default.svc.cluster.local.", RecordType::TXT).await;
    assert_eq!(nodata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);

    let version = udp(h.dns, "dns-version.cluster.local.", RecordType::TXT, false).await;
    assert!(
        matches!(&version.answers[0].data, RData::TXT(_)),
        "{version}"
    );
}

#[tokio::test]
async fn big_headless_answers_truncate_over_udp_and_are_whole_over_tcp() {
    let h = start(async |c| cluster_objects(c).await).await;
    let name = "big.default.svc.cluster.local.";
    let udp_plain = udp(h.dns, name, RecordType::A, false).await;
    assert!(udp_plain.truncation, "{udp_plain}");
    assert!(!udp_plain.answers.is_empty() && udp_plain.answers.len() < 100);
    assert!(udp_plain.to_vec().expect("encodes").len() <= 512);
    // A larger EDNS buffer gets more, still not all.
    let udp_edns = udp(h.dns, name, RecordType::A, true).await;
    assert!(udp_edns.truncation);
    assert!(udp_edns.answers.len() > udp_plain.answers.len());
    let whole = tcp(h.dns, name, RecordType::A).await;
    assert!(!whole.truncation);
    assert_eq!(whole.answers.len(), 100);
    let srv = tcp(
        h.dns,
        "_http._tcp.big.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(srv.answers.len(), 100);
    let one = udp(
        h.dns,
        "big-7.big.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(
        addresses(&one),
        vec!["10.244.0.8".parse::<IpAddr>().expect("an IP")]
    );
}

#[tokio::test]
async fn forwards_other_names_through_the_cache() {
    let h = start(async |_| {}).await;
    let first = udp(h.dns, "www.example.org.", RecordType::A, true).await;
    assert!(!first.authoritative);
    assert!(first.recursion_available);
    assert_eq!(addresses(&first), vec![IpAddr::from(UPSTREAM_ADDRESS)]);
    let second = tcp(h.dns, "WWW.example.org.", RecordType::A).await;
    assert_eq!(addresses(&second), vec![IpAddr::from(UPSTREAM_ADDRESS)]);
    assert_eq!(
        h.upstream_queries.load(Ordering::SeqCst),
        1,
        "the second came from the cache"
    );
    // Another type is another question.
    udp(h.dns, "www.example.org.", RecordType::MX, true).await;
    assert_eq!(h.upstream_queries.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_nothing_and_the_server_lives_on() {
    let h = start(async |_| {}).await;
    // A header claiming one question, then garbage.
    let garbage = [
        0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0x01,
    ];
    let bytes = udp_exchange(h.dns, &garbage).await.expect("a FORMERR");
    let formerr = Message::from_vec(&bytes).expect("decodes");
    assert_eq!(
        (formerr.id, formerr.response_code),
        (0xabcd, ResponseCode::FormErr)
    );
    // Too short to be a header, and a "response": no answer at all.
    assert!(udp_exchange(h.dns, &[1, 2, 3]).await.is_none());
    let mut response_bit = garbage;
    response_bit[2] |= 0x80;
    assert!(udp_exchange(h.dns, &response_bit).await.is_none());
    // Over TCP too, then a good query on the same server.
    let mut stream = TcpStream::connect(h.dns).await.expect("connects");
    stream.write_all(&[0, 3, 1, 2, 3]).await.expect("writes");
    drop(stream);
    let ok = udp(h.dns, "dns-version.cluster.local.", RecordType::TXT, false).await;
    assert_eq!(ok.response_code, ResponseCode::NoError);
    assert_eq!(ok.answers.len(), 1);
}

#[tokio::test]
async fn the_zone_follows_the_api() {
    let h = start(async |_| {}).await;
    let name = "late.default.svc.cluster.local.";
    assert_eq!(
        udp(h.dns, name, RecordType::A, false).await.response_code,
        ResponseCode::NXDomain
    );
    create::<Service>(
        &h.client,
        "default",
        json!({"metadata": {"name": "late"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    let answer = resolves(h.dns, name, RecordType::A).await;
    assert_eq!(addresses(&answer).len(), 1);
    Api::<Service>::namespaced(h.client.clone(), "default")
        .delete("late", &DeleteParams::default())
        .await
        .expect("deleted");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while udp(h.dns, name, RecordType::A, false).await.response_code != ResponseCode::NXDomain {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
